"""Scanned PDF pages read by Tesseract: the default document laid out, rendered to images and put back in a PDF
with no text layer, is read back with its words and its pages; blank pages cost no OCR run; a missing Tesseract
is reported with the command that installs it, and the rest of the document is still read."""

from __future__ import annotations

import re
from collections import Counter

import pytest

import tqa.loaders.ocr as ocr
from tqa.chunking import Chunker
from tqa.loaders import SkipFile, extract
from tqa.loaders.ocr import OcrSettings

from .format_writers import default_sections, scan_pdf, write_pdf_text

needs_tesseract = pytest.mark.skipif(ocr.tesseract() is None, reason="needs tesseract-ocr (make test installs it)")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.fixture(scope="module")
def scanned() -> tuple[bytes, list[str]]:
    pdf, page_texts = write_pdf_text(default_sections())
    return scan_pdf(pdf), page_texts


@pytest.mark.slow
@needs_tesseract
def test_scanned_default_document_is_read_with_its_words_and_pages(scanned) -> None:
    data, page_texts = scanned
    seen: list[tuple[int, int]] = []
    doc = extract("scan.pdf", data, progress=lambda done, total: seen.append((done, total)))
    assert len(doc.pages) == len(page_texts) > 3
    assert doc.ocr_pages == tuple(range(1, len(page_texts) + 1))
    # at least 95% of the document's words are recovered
    want = Counter(w for t in page_texts for w in words(t))
    got = Counter(words(doc.text))
    recovered = sum((want & got).values()) / sum(want.values())
    assert recovered >= 0.95, recovered
    # progress: every page reported once, in order, ending at the total
    assert seen[0] == (0, len(page_texts)) and seen[-1] == (len(page_texts), len(page_texts))
    assert [d for d, _ in seen] == list(range(len(page_texts) + 1))
    # every chunk's page is the page its text was on, and is marked as read by OCR
    chunks = Chunker().chunk(doc)
    page_words = [set(words(t)) for t in page_texts]
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text
        assert c.ocr and c.page is not None
        cw = words(c.text)
        share = [sum(1 for w in cw if w in pw) / len(cw) for pw in page_words]
        assert share[c.page - 1] >= 0.9 and share[c.page - 1] == max(share), (c.page, share, c.text[:80])


def test_blank_pages_cost_no_ocr_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from reportlab.pdfgen import canvas

    calls: list[int] = []
    monkeypatch.setattr(ocr, "tesseract", lambda: "/usr/bin/tesseract")
    monkeypatch.setattr(ocr, "resolve_languages", lambda exe, wanted: ("eng", None))
    monkeypatch.setattr(ocr, "run_tesseract", lambda *a, **k: calls.append(1) or "Read by OCR.")
    pdf, _ = write_pdf_text(default_sections()[:1])
    import io

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 720, "A page with a text layer of more than twenty characters.")
    c.showPage()
    c.showPage()  # nothing on it
    c.save()
    # a text page, an empty page, then the scan of a white sheet and the scan of a page with text
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for part in (buf.getvalue(), scan_pdf(pdf, blank_pages=(0,)), scan_pdf(pdf)):
        for page in PdfReader(io.BytesIO(part)).pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    doc = extract("mixed.pdf", out.getvalue())
    assert len(calls) == 1  # only the scan with ink on it
    assert doc.ocr_pages == (4,)
    assert doc.text.startswith("A page with a text layer")
    assert doc.page_at(doc.text.index("Read by OCR.")) == 4


def test_missing_tesseract_is_reported_and_the_rest_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from pypdf import PdfReader, PdfWriter
    from reportlab.pdfgen import canvas

    monkeypatch.setattr(ocr, "tesseract", lambda: None)
    pdf, _ = write_pdf_text(default_sections()[:1])
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 720, "The first page has a text layer of its own.")
    c.showPage()
    c.save()
    writer = PdfWriter()
    for part in (buf.getvalue(), scan_pdf(pdf)):
        for page in PdfReader(io.BytesIO(part)).pages:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    doc = extract("mixed.pdf", out.getvalue())
    assert doc.text == "The first page has a text layer of its own.\n\n"
    assert doc.ocr_pages == ()
    # the unread page is a part of the file passed over: listed as skipped, with the command that fixes it
    assert doc.warnings == () and doc.ocr_pending == (2,)
    assert [(s.path, s.reason) for s in doc.skipped] == [(
        "mixed.pdf",
        "page 2 is a scanned image and was not read: Tesseract is not installed (apt-get install tesseract-ocr)")]
    with pytest.raises(SkipFile) as info:
        extract("scan.pdf", scan_pdf(pdf))
    assert str(info.value).startswith("PDF has no extractable text: page")
    assert str(info.value).endswith("Tesseract is not installed (apt-get install tesseract-ocr)")


def test_ocr_can_be_turned_off_and_languages_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    pdf, _ = write_pdf_text(default_sections()[:1])
    data = scan_pdf(pdf)
    with pytest.raises(SkipFile, match="PDF has no extractable text"):
        extract("scan.pdf", data, ocr=OcrSettings(enabled=False))
    monkeypatch.setattr(ocr, "tesseract", lambda: "/usr/bin/tesseract")
    monkeypatch.setattr(ocr, "_installed_languages", lambda exe: ("eng", "osd"))
    with pytest.raises(SkipFile) as info:
        extract("scan.pdf", data, ocr=OcrSettings(languages="eng+fra"))
    assert str(info.value).endswith("Tesseract has no data for fra (apt-get install tesseract-ocr-fra)")


def test_pages_list() -> None:
    assert ocr.pages_list([0]) == "1"
    assert ocr.pages_list([1, 4]) == "2, 5"
    assert ocr.pages_list([3, 4, 5, 6, 7, 8]) == "4-9"
    assert ocr.pages_list([0, 1, 2, 6]) == "1-3, 7"


@pytest.mark.slow
@needs_tesseract
def test_the_projects_questions_against_a_scan_cite_the_right_page(scanned, tmp_path) -> None:
    """The scanned default document, indexed: the project's questions are answered from it, and every passage
    cited is on the page it says, marked as read by OCR; the index's text keeps 95% of the words."""
    import json
    from pathlib import Path

    from tqa import Assistant, build_index

    from .support import FakeEmbedder

    data, page_texts = scanned
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "scan.pdf").write_bytes(data)
    summary = build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    assert summary.files_added == ["scan.pdf"] and summary.skipped == []
    qa = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    want = Counter(w for t in page_texts for w in words(t))
    got = Counter(words(dict(qa.documents())["scan.pdf"]))
    assert sum((want & got).values()) / sum(want.values()) >= 0.95
    questions = [json.loads(line) for line in
                 (Path(__file__).resolve().parent.parent / "eval" / "questions.jsonl").read_text().splitlines()]
    page_words = [set(words(t)) for t in page_texts]
    cited = 0
    for q in questions:
        if not q["answerable"]:
            continue
        for p in qa.ask(q["question"], k=3, mode="hybrid").passages:
            assert p.ocr and "read by OCR" in p.citation() and p.page is not None
            pw = words(p.text)
            share = [sum(1 for w in pw if w in page) / len(pw) for page in page_words]
            assert share[p.page - 1] >= 0.9 and share[p.page - 1] == max(share), (q["id"], p.page, share)
            cited += 1
    assert cited >= 3 * 50
