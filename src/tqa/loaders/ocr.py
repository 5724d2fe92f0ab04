"""Reading scanned PDF pages with Tesseract.

A page is read by OCR when its text layer is (almost) empty and it holds an image: a scan. Pages are rendered in
this process with pypdfium2 (pdfium is not thread-safe, and rendering is fast next to OCR) and handed to one
Tesseract process each, as many at a time as there are cores, each limited to one thread (Tesseract's own
threading gains less than running pages side by side). A page whose rendering shows no ink costs no OCR run.

Tesseract is a program, not a Python package: where it is missing, the pages that needed it are reported with the
command that installs it, and the rest of the document is read as usual.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .base import VISIBLE, nfc, short_error

INSTALL_TESSERACT = "apt-get install tesseract-ocr"
DEFAULT_LANGUAGES = ("eng", "nld")  # English, and Dutch where its data is installed (tesseract-ocr-nld)

# A page whose text layer shows fewer characters than this has "no text layer": a scan with at most a stamp or a
# page number on it. Pages with more keep their text layer and are never OCRed.
MIN_TEXT_LAYER_CHARS = 20
# Share of dark pixels (of 255 grey levels, below 160) under which a rendered page holds no ink worth reading.
INK_SHARE = 0.0001

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class OcrSettings:
    enabled: bool = True
    languages: str | None = None  # Tesseract's -l ("eng+nld"); None: those of DEFAULT_LANGUAGES installed
    workers: int | None = None  # Tesseract processes at a time; None: the cores this process may use
    dpi: int = 300  # Tesseract reads text of 8 points and more best at 300 dots per inch
    max_pages: int = 1000  # pages of one document read by OCR at most; the others are reported
    page_timeout: float = 300.0  # seconds one page may take


@dataclass
class OcrResult:
    texts: dict[int, str] = field(default_factory=dict)  # 0-based page index -> text read
    warnings: list[str] = field(default_factory=list)
    unread: list[int] = field(default_factory=list)  # 0-based pages that needed OCR and were not read
    pending: list[int] = field(default_factory=list)  # those of them not read because OCR was not available


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _installed_languages(exe: str) -> tuple[str, ...]:
    try:
        out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ()
    lines = (out.stdout + "\n" + out.stderr).splitlines()
    return tuple(s.strip() for s in lines if s.strip() and " " not in s.strip() and not s.strip().endswith(":"))


def tesseract() -> str | None:
    """Path of the tesseract program, or None."""
    return shutil.which("tesseract")


def ocr_ready(languages: str | None = None) -> bool:
    """Whether scanned pages can be read now: Tesseract is installed, with the language data asked for (None: the
    defaults). A build reads again the files whose scanned pages were left for want of it."""
    exe = tesseract()
    return exe is not None and resolve_languages(exe, languages)[0] is not None


def resolve_languages(exe: str, wanted: str | None) -> tuple[str | None, str | None]:
    """(the -l argument, None) or (None, why not) for the languages asked for (None: the defaults installed)."""
    installed = set(_installed_languages(exe))
    if wanted:
        missing = [lang for lang in wanted.split("+") if lang and lang not in installed]
        if missing:
            pkgs = " ".join(f"tesseract-ocr-{lang.lower().replace('_', '-')}" for lang in missing)
            return None, f"Tesseract has no data for {', '.join(missing)} (apt-get install {pkgs})"
        return wanted, None
    langs = [lang for lang in DEFAULT_LANGUAGES if lang in installed]
    if not langs:
        return None, "Tesseract has no English language data (apt-get install tesseract-ocr-eng)"
    return "+".join(langs), None


def pages_list(pages: list[int]) -> str:
    """1-based page numbers for a message: "3", "2, 5", "4-9", "1-3, 7 and 41 more"."""
    nums = sorted(p + 1 for p in pages)
    runs: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        runs.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    if len(runs) > 6:
        return ", ".join(runs[:5]) + f" and {len(runs) - 5} more runs"
    return ", ".join(runs)


def clean_ocr_text(raw: str) -> str:
    """Tesseract's output as a page's text: NFC, no form feed, no trailing spaces, at most one blank line."""
    lines = [line.rstrip() for line in raw.replace("\f", "\n").replace("\r", "\n").split("\n")]
    out: list[str] = []
    blank = False
    for line in lines:
        if not line.strip():
            blank = bool(out)
            continue
        if blank:
            out.append("")
            blank = False
        out.append(line)
    return nfc("\n".join(out))


def _has_image(page: object) -> bool:
    import pypdfium2.raw as pdfium_c

    try:
        for _ in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=4):  # type: ignore[attr-defined]
            return True
    except Exception:
        return True  # cannot tell: let the rendering decide
    return False


def _render_pgm(page: object, dpi: int) -> bytes | None:
    """The page as a greyscale PGM image, or None when it shows no ink."""
    import numpy as np

    bitmap = page.render(scale=dpi / 72, grayscale=True)  # type: ignore[attr-defined]
    try:
        arr = np.ascontiguousarray(bitmap.to_numpy())
    finally:
        bitmap.close()
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[:, :, 0])
    if arr.size == 0 or np.count_nonzero(arr < 160) < INK_SHARE * arr.size:
        return None
    h, w = arr.shape
    return f"P5\n{w} {h}\n255\n".encode("ascii") + arr.tobytes()


def run_tesseract(exe: str, image: bytes, languages: str, timeout: float) -> str:
    """Text of one page image (PGM/PNG bytes); raises RuntimeError with a short reason."""
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    try:
        done = subprocess.run(
            [exe, "stdin", "stdout", "-l", languages, "--psm", "3"],
            input=image, capture_output=True, timeout=timeout, env=env, check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"OCR took longer than {timeout:.0f} s") from e
    except OSError as e:
        raise RuntimeError(f"could not run Tesseract: {short_error(e)}") from e
    if done.returncode != 0:
        msg = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"Tesseract failed: {msg[-1][:120] if msg else done.returncode}")
    return clean_ocr_text(done.stdout.decode("utf-8", "replace"))


def ocr_pdf_pages(data: bytes, candidates: list[int], settings: OcrSettings,
                  progress: Progress | None = None) -> OcrResult:
    """Read the ``candidates`` (0-based pages whose text layer is empty) of the PDF in ``data`` by OCR."""
    result = OcrResult()
    try:
        import pypdfium2 as pdfium
    except ImportError:
        result.unread = list(candidates)
        result.warnings.append(f"pages {pages_list(candidates)} have no text layer and were not read: "
                               "OCR needs pypdfium2 (pip install pypdfium2)")
        return result
    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as e:
        result.unread = list(candidates)
        result.warnings.append(f"pages {pages_list(candidates)} have no text layer and could not be rendered "
                               f"for OCR ({short_error(e)})")
        return result
    try:
        scans = []
        for i in candidates:
            if i >= len(pdf):
                continue
            page = pdf[i]
            try:
                if _has_image(page):
                    scans.append(i)
            finally:
                page.close()
        if not scans:
            return result
        exe = tesseract()
        langs, why = resolve_languages(exe, settings.languages) if exe else (None, None)
        if exe is None or langs is None:
            reason = why or f"Tesseract is not installed ({INSTALL_TESSERACT})"
            result.unread = scans
            result.pending = list(scans)
            result.warnings.append(f"{_scanned(scans)} not read: {reason}")
            return result
        if len(scans) > settings.max_pages:
            over = scans[settings.max_pages:]
            scans = scans[:settings.max_pages]
            result.unread.extend(over)
            result.warnings.append(f"{_scanned(over)} not read: OCR reads at most {settings.max_pages:,} pages "
                                   "of a document")
        _run(pdf, scans, exe, langs, settings, progress, result)
    finally:
        pdf.close()
    return result


def _pages_word(pages: list[int]) -> str:
    return "page" if len(pages) == 1 else "pages"


def _scanned(pages: list[int]) -> str:
    if len(pages) == 1:
        return f"page {pages_list(pages)} is a scanned image and was"
    return f"pages {pages_list(pages)} are scanned images and were"


def _run(pdf: object, scans: list[int], exe: str, langs: str, settings: OcrSettings,
         progress: Progress | None, result: OcrResult) -> None:
    workers = max(1, settings.workers or available_cores())
    total, done = len(scans), 0
    failed: dict[str, list[int]] = {}
    if progress:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tqa-ocr") as pool:
        pending: dict[Future[str], int] = {}

        def collect(block: bool) -> None:
            nonlocal done
            if not pending:
                return
            finished, _ = wait(list(pending), timeout=None if block else 0, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = pending.pop(fut)
                try:
                    text = fut.result()
                    if VISIBLE.search(text):
                        result.texts[i] = text
                except RuntimeError as e:
                    failed.setdefault(str(e), []).append(i)
                done += 1
                if progress:
                    progress(done, total)

        for i in scans:
            while len(pending) > workers:  # rendered pages waiting: at most one more than the workers
                collect(block=True)
            page = pdf[i]  # type: ignore[index]
            try:
                image = _render_pgm(page, settings.dpi)
            except Exception as e:
                image = None
                failed.setdefault(f"could not render the page ({short_error(e)})", []).append(i)
            finally:
                page.close()
            if image is None:  # no ink: nothing to read
                done += 1
                if progress:
                    progress(done, total)
                continue
            pending[pool.submit(run_tesseract, exe, image, langs, settings.page_timeout)] = i
            collect(block=False)
        while pending:
            collect(block=True)
    for reason, pages in failed.items():
        result.unread.extend(pages)
        result.warnings.append(f"{_pages_word(pages)} {pages_list(pages)} could not be read by OCR: {reason}")
