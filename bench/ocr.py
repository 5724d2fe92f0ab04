"""OCR throughput: pages per second reading a scanned PDF, by workers, languages and resolution.

The default document is laid out on A4 pages (reportlab), rendered to 200 dpi greyscale images and put back in a
PDF with no text layer, as a scanner makes it; tqa's loader then reads it by OCR. Each configuration is run in
rounds, interleaved (the order rotates every round), and reported as its median pages/s and as a ratio to the
baseline measured in the same run: one Tesseract process, English only, 300 dpi.

    python bench/ocr.py [--rounds 3] [--pages N] [--out bench/results-ocr.md]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def scanned_pdf(max_pages: int | None) -> tuple[bytes, int]:
    import pypdfium2 as pdfium
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader, simpleSplit
    from reportlab.pdfgen import canvas

    text = next((ROOT / "corpus").glob("*.txt")).read_text(encoding="utf-8")
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    width, height = A4
    y = height - 60
    for para in text.splitlines():
        for line in simpleSplit(para, "Helvetica", 10, width - 120) or [""]:
            if y < 60:
                c.showPage()
                y = height - 60
            c.setFont("Helvetica", 10)
            c.drawString(60, y, line)
            y -= 14.5
        y -= 7
    c.showPage()
    c.save()
    src = pdfium.PdfDocument(buf.getvalue())
    out = io.BytesIO()
    scan = canvas.Canvas(out, pagesize=A4)
    n = len(src) if max_pages is None else min(len(src), max_pages)
    for i in range(n):
        page = src[i]
        image = page.render(scale=200 / 72, grayscale=True).to_pil()
        page.close()
        scan.drawImage(ImageReader(image), 0, 0, width=width, height=height)
        scan.showPage()
    src.close()
    scan.save()
    return out.getvalue(), n


def measure(data: bytes, pages: int, configs: dict[str, object], rounds: int) -> list[dict[str, object]]:
    """Each configuration run ``rounds`` times, interleaved (the order rotates every round): its median pages/s and
    the ratio to the first configuration's (the baseline) in this same run, with the characters read."""
    from tqa.loaders import extract

    times: dict[str, list[float]] = {name: [] for name in configs}
    chars: dict[str, int] = {}
    names = list(configs)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            doc = extract("scan.pdf", data, ocr=configs[name])  # type: ignore[arg-type]
            times[name].append(time.perf_counter() - t0)
            chars[name] = len(doc.text)
    base = pages / statistics.median(times[names[0]])
    rows = []
    for name in names:
        rate = pages / statistics.median(times[name])
        workers = getattr(configs[name], "workers", None) or 1
        rows.append({"configuration": name, "pages_per_s": rate, "ratio": rate / base,
                     "ratio_per_worker": rate / workers / base, "chars": chars[name]})
    return rows


def table(rows: list[dict[str, object]], pages: int, cores: int, rounds: int) -> str:
    lines = [f"OCR of {pages} scanned A4 pages (the default document), {cores} cores, {rounds} rounds, median:", "",
             "| configuration | pages/s | ÷ baseline | pages/s per worker ÷ baseline | chars read |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['configuration']} | {r['pages_per_s']:.2f} | {r['ratio']:.2f} | "
                     f"{r['ratio_per_worker']:.2f} | {r['chars']:,} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", type=int, default=None, help="use only the first N pages")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results-ocr.md",
                    help="where to write the table (default bench/results-ocr.md)")
    args = ap.parse_args()

    from tqa.loaders.ocr import OcrSettings, available_cores, tesseract

    if tesseract() is None:
        raise SystemExit("Tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-nld)")
    data, pages = scanned_pdf(args.pages)
    cores = available_cores()
    configs: dict[str, object] = {
        "1 worker, eng, 300 dpi (baseline: one page at a time)": OcrSettings(workers=1, languages="eng"),
        f"{cores} workers, eng, 300 dpi": OcrSettings(workers=cores, languages="eng"),
        f"{cores} workers, eng+nld, 300 dpi (default)": OcrSettings(workers=cores, languages="eng+nld"),
        f"{cores} workers, eng+nld, 200 dpi": OcrSettings(workers=cores, languages="eng+nld", dpi=200),
    }
    out = table(measure(data, pages, configs, args.rounds), pages, cores, args.rounds)
    print(out, end="")
    args.out.write_text("# OCR throughput (`python bench/ocr.py`)\n\n" + out, encoding="utf-8")


if __name__ == "__main__":
    main()
