"""The new formats through the whole tool: a built index, the Python API, `tqa ask` (text and JSON) and the web
page. Passages read by OCR are marked where a reader sees them; an e-mail's attachments are documents of their own
(cited as ``message.eml › attachment.pdf``, with the message's sender and date), reused or read again with their
message; scanned pages left unread for want of Tesseract are listed as skipped, with the command that fixes it,
and read once it is installed.

Tesseract is replaced here by a small script on PATH (or hidden from PATH), so these tests are fast and exact;
tests/test_ocr.py reads scans with the real one."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tqa import build_index
from tqa.assistant import Assistant
from tqa.cli import main
from tqa.loaders import ATTACHMENT_SEPARATOR as SEP
from tqa.loaders import discover
from tqa.store import load_index
from tqa.web.render import render_answer, render_context

from .format_writers import default_sections, scan_pdf, write_eml, write_pdf_text
from .support import FakeEmbedder

OCR_TEXT = "Shelters read from a scanned page give survivors a warm bed."
ORIGIN = "from Anna de Vries <anna@example.org>, 2024-03-05 10:15"
INSTALL = "Tesseract is not installed (apt-get install tesseract-ocr)"


def fake_tesseract(folder: Path, text: str = OCR_TEXT) -> Path:
    """A `tesseract` program on ``folder`` that knows English and reads every page as ``text``."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "tesseract"
    exe.write_text("#!/bin/sh\n"
                   "if [ \"$1\" = \"--list-langs\" ]; then printf 'List of available languages (2):\\neng\\nosd\\n';"
                   " exit 0; fi\n"
                   f"cat >/dev/null\nprintf '%s\\n' '{text}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return folder


def only_on_path(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """PATH holds ``folder`` and nothing else: no other tesseract can be found."""
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("PATH", str(folder))


def text_page_then_scan() -> bytes:
    """A PDF whose page 1 has a text layer and page 2 is a scanned image (no text layer)."""
    import io

    from pypdf import PdfReader, PdfWriter
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 720, "Hotlines answer calls from survivors at night.")
    c.showPage()
    c.save()
    pdf, _ = write_pdf_text(default_sections()[:1])
    writer = PdfWriter()
    for part in (buf.getvalue(), scan_pdf(pdf)):
        for page in PdfReader(io.BytesIO(part)).pages[:1]:
            writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture
def scan_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    only_on_path(monkeypatch, fake_tesseract(tmp_path / "bin"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "mixed.pdf").write_bytes(text_page_then_scan())
    (corpus / "notes.md").write_text("# Beds\n\nShelters give survivors a bed for the night.\n")
    summary = build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    assert summary.skipped == []
    return tmp_path / "index"


# ---------------------------------------------------------------- OCR marked where the reader sees it


def test_a_passage_read_by_ocr_is_marked_in_the_python_api(scan_index: Path) -> None:
    a = Assistant.load(scan_index, embedder=FakeEmbedder())
    answer = a.ask("Which shelters give survivors a warm bed?", k=5)
    scanned = next(p for p in answer.passages if p.source == "mixed.pdf" and p.page == 2)
    typed = next(p for p in answer.passages if p.source == "notes.md")
    assert scanned.text == OCR_TEXT and scanned.page == 2 and scanned.ocr
    assert scanned.citation() == "mixed.pdf, p. 2, read by OCR, chars 48-108"
    assert not typed.ocr and "OCR" not in typed.citation()
    # the page with a text layer is not marked
    hotline = a.ask("hotlines answer calls at night", k=5, sources=["mixed.pdf"]).passages
    assert [(p.page, p.ocr) for p in hotline] == [(1, False), (2, True)]
    assert a.context("mixed.pdf", scanned.start, scanned.end)["ocr"] is True
    assert a.context("mixed.pdf", 0, 10)["ocr"] is False


def test_the_json_answer_says_which_passages_were_read_by_ocr(scan_index, fake_model, capsys) -> None:
    assert main(["ask", "hotlines answer calls at night", "--json", "--index", str(scan_index),
                 "--source", "mixed.pdf"]) == 0
    passages = json.loads(capsys.readouterr().out)["passages"]
    assert [(p["page"], p["ocr"], p["page_unit"]) for p in passages] == [(1, False, "page"), (2, True, "page")]
    assert "read by OCR" in passages[1]["citation"] and "OCR" not in passages[0]["citation"]


def test_the_text_answer_marks_the_ocr_passage_on_its_citation_line(scan_index, fake_model, capsys) -> None:
    assert main(["ask", "hotlines answer calls at night", "--index", str(scan_index), "--source", "mixed.pdf"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 2
    assert lines[0].startswith("[1] mixed.pdf, p. 1, chars") and "OCR" not in lines[0]
    assert lines[1].startswith("[2] mixed.pdf, p. 2, read by OCR, chars")


def test_the_web_page_shows_an_ocr_mark_on_the_citation(scan_index: Path) -> None:
    a = Assistant.load(scan_index, embedder=FakeEmbedder())
    answer = a.ask("hotlines answer calls at night", k=5, sources=["mixed.pdf"])
    html = render_answer(answer, 1)
    # one mark: on the OCR passage's trail, none on the page with a text layer
    assert html.count('class="tqa-ocr"') == 1
    ocr_article = html.split('id="tqa-p-1-2"')[1]
    assert 'class="tqa-ocr"' in ocr_article.split("</header>")[0]
    assert "read by OCR" in ocr_article  # and in the quote a reader copies
    scanned = answer.passages[1]
    viewer = render_context(a.context("mixed.pdf", scanned.start, scanned.end), scanned, 2)
    assert 'class="tqa-ocr"' in viewer
    plain = answer.passages[0]
    assert 'class="tqa-ocr"' not in render_context(a.context("mixed.pdf", plain.start, plain.end), plain, 1)
    best_first = a.ask(OCR_TEXT, k=1, sources=["mixed.pdf"])
    assert best_first.passages[0].ocr and 'class="tqa-ocr"' in render_answer(best_first, 2).split("</blockquote>")[0]


def test_slides_are_cited_as_slides(tmp_path: Path) -> None:
    from .format_writers import write_pptx

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "deck.pptx").write_bytes(write_pptx(default_sections()))
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    answer = Assistant.load(tmp_path / "index", embedder=FakeEmbedder()).ask("awareness campaigns advocacy", k=3)
    p = answer.passages[0]
    assert p.page_unit == "slide" and f"slide {p.page}" in p.citation() and "p. " not in p.citation()
    assert f"slide {p.page}</span>" in render_answer(answer, 1)


# ---------------------------------------------------------------- e-mail attachments as documents


def nested(levels: int) -> bytes:
    """A message carrying a message carrying ... ``levels`` deep, the innermost with a text attachment."""
    from email.message import EmailMessage

    inner = None
    for level in range(levels, 0, -1):
        msg = EmailMessage()
        msg["From"] = f"level{level}@example.org"
        msg["Subject"] = f"Level {level}"
        msg.set_content(f"Body of level {level}.")
        if inner is None:
            msg.add_attachment(b"Deepest notes.", maintype="text", subtype="plain", filename="deep.txt")
        else:
            msg.add_attachment(inner, maintype="message", subtype="rfc822", filename=f"level{level + 1}.eml")
        inner = bytes(msg)
    assert inner is not None
    return inner


def zip_bomb_docx() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", b"<" + b"a" * (300 << 20) + b">")
    return buf.getvalue()


def message(figures: bytes, *, body_sections: int = 2, extra: list[tuple[str, bytes, str]] | None = None) -> bytes:
    attachments = [
        ("figures.pdf", figures, "application/pdf"),
        ("notes.txt", b"Plain notes about funding from donors.", "text/plain"),
        ("notes.txt", b"Second notes file about volunteers.", "text/plain"),  # the same name again
        ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image/png"),
        ("../../etc/passwd.txt", b"A name that climbs out of the folder.", "text/plain"),
        ("bell\x07\x1b[2Jname.txt", b"A name with control characters.", "text/plain"),
        ("report.docx", zip_bomb_docx(), "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("chain.eml", nested(6), "message/rfc822"),
        ("lies.pdf", b"PK\x03\x04 not a pdf at all", "application/pdf"),
        *(extra or []),
    ]
    return write_eml(default_sections()[:body_sections], attachments=attachments)


def figures_pdf(words: str = "Shelter beds in Spain") -> bytes:
    from .test_loaders import make_pdf

    return make_pdf([[words], ["Hotline calls are answered at night by volunteers"]])


@pytest.fixture
def mail_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    (corpus / "inbox").mkdir(parents=True)
    (corpus / "inbox" / "message.eml").write_bytes(message(figures_pdf()))
    (corpus / "other.md").write_text("# Other\n\nA separate note on shelters.\n")
    return corpus


def test_attachments_are_indexed_as_documents_of_their_own(mail_corpus: Path, tmp_path: Path) -> None:
    summary = build_index(mail_corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    assert summary.files_added == ["inbox/message.eml", "other.md"]
    m = "inbox/message.eml"
    with load_index(tmp_path / "index") as index:
        files = index.manifest.files
        sources = list(files)
        texts = dict(index.documents())
        chunks = list(index.chunks)
    assert sources == [m, f"{m}{SEP}figures.pdf", f"{m}{SEP}notes.txt", f"{m}{SEP}notes (2).txt",
                       f"{m}{SEP}_.._etc_passwd.txt", f"{m}{SEP}bell_x07_x1b[2Jname.txt",
                       f"{m}{SEP}chain.eml", f"{m}{SEP}chain.eml{SEP}level2.eml",
                       f"{m}{SEP}chain.eml{SEP}level2.eml{SEP}level3.eml", "other.md"]
    # the citation invariant, for every chunk of every document (the attachments' included)
    assert {c.source for c in chunks} == set(sources)
    for c in chunks:
        assert texts[c.source][c.start:c.end] == c.text
    assert texts[f"{m}{SEP}notes.txt"] == "Plain notes about funding from donors."
    assert texts[f"{m}{SEP}notes (2).txt"] == "Second notes file about volunteers."
    assert "Shelter beds" not in texts[m]  # an attachment's text is its own
    # what was not read, each with its one-line reason, in the summary and in the manifest
    reasons = {s["path"]: s["reason"] for s in summary.skipped}
    assert reasons[f"{m}{SEP}photo.png"] == "unsupported file type .png"
    assert reasons[f"{m}{SEP}report.docx"].endswith("once uncompressed (a zip bomb?)")
    assert reasons[f"{m}{SEP}lies.pdf"] == "not a .pdf file: it is a ZIP archive"
    deep = f"{m}{SEP}chain.eml{SEP}level2.eml{SEP}level3.eml{SEP}level4.eml"
    assert reasons[deep] == "attachment nested more than 3 levels deep, not read"
    assert all("\n" not in r and "\x1b" not in p for p, r in reasons.items())
    assert [line for line in summary.lines() if line.startswith("skipped: ")] == [
        f"skipped: {s['path']}: {s['reason']}" for s in summary.skipped]
    # sender and date of the message, on its attachments' entries too (an attached message has its own)
    assert files[f"{m}{SEP}figures.pdf"].metadata == {"from": "Anna de Vries <anna@example.org>",
                                                      "date": "2024-03-05T10:15:00+01:00"}
    assert files[f"{m}{SEP}chain.eml"].metadata == {"from": "level1@example.org"}
    assert files["other.md"].metadata == {}


def test_an_attachment_is_cited_with_its_page_section_and_the_messages_sender(mail_corpus, tmp_path,
                                                                              fake_model, capsys) -> None:
    build_index(mail_corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    a = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    p = a.ask("hotline calls answered at night by volunteers", k=1).passages[0]
    assert p.source == f"inbox/message.eml{SEP}figures.pdf" and p.page == 2
    assert p.origin() == ORIGIN
    assert p.citation().startswith("inbox/message.eml › figures.pdf, p. 2, chars")
    body = a.ask("Level 3 body", k=1).passages[0]
    assert body.source.endswith(f"level2.eml{SEP}level3.eml") and body.section == "Level 3"
    assert body.origin() == "from level3@example.org"
    html = render_answer(a.ask("hotline calls answered at night by volunteers", k=1), 1)
    assert f'<span class="tqa-origin" title="sender and date">{ORIGIN.replace("<", "&lt;").replace(">", "&gt;")}' \
           in html
    assert main(["ask", "hotline calls answered at night by volunteers", "-k", "1", "--index",
                 str(tmp_path / "index")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("[1]"))
    assert line.startswith("[1] inbox/message.eml › figures.pdf, p. 2, chars") and f"· {ORIGIN}" in line
    assert main(["ask", "hotline calls answered at night by volunteers", "-k", "1", "--json", "--index",
                 str(tmp_path / "index")]) == 0
    got = json.loads(capsys.readouterr().out)["passages"][0]
    assert got["origin"] == ORIGIN and got["metadata"]["from"] == "Anna de Vries <anna@example.org>"


def test_attachments_follow_their_message_when_the_index_is_updated(mail_corpus: Path, tmp_path: Path) -> None:
    m = "inbox/message.eml"
    index = tmp_path / "index"
    first = build_index(mail_corpus, index, embedder=FakeEmbedder(), progress=False)
    # unchanged: nothing read or embedded again, and the same parts listed as skipped
    again = build_index(mail_corpus, index, embedder=FakeEmbedder(), progress=False)
    assert not again.published and again.chunks_embedded == 0
    assert again.skipped == first.skipped
    # renamed: the message and its attachments carried over under the new name, nothing embedded
    (mail_corpus / "inbox" / "message.eml").rename(mail_corpus / "inbox" / "renamed.eml")
    renamed = build_index(mail_corpus, index, embedder=FakeEmbedder(), progress=False)
    assert renamed.files_renamed == [{"from": m, "to": "inbox/renamed.eml"}] and renamed.files_removed == []
    assert renamed.chunks_embedded == 0 and renamed.published
    with load_index(index) as idx:
        assert f"inbox/renamed.eml{SEP}figures.pdf" in idx.manifest.files
        assert not any(s.startswith(m) for s in idx.manifest.files)
        assert {c.source for c in idx.chunks} == set(idx.manifest.files)
        assert all(s.path.startswith("inbox/renamed.eml") for s in idx.manifest.skipped)
    assert build_index(mail_corpus, index, embedder=FakeEmbedder(), progress=False).published is False
    # the message changed: its attachments are read again (one of them now says something else, one is gone)
    (mail_corpus / "inbox" / "renamed.eml").write_bytes(message(figures_pdf("Shelter beds in Chile"),
                                                                 body_sections=1))
    changed = build_index(mail_corpus, index, embedder=FakeEmbedder(), progress=False)
    assert changed.files_changed == ["inbox/renamed.eml"] and changed.files_unchanged == ["other.md"]
    with load_index(index) as idx:
        texts = dict(idx.documents())
        assert "Chile" in texts[f"inbox/renamed.eml{SEP}figures.pdf"]
        for c in idx.chunks:
            assert texts[c.source][c.start:c.end] == c.text
    # an attachment dropped from the message leaves the index
    (mail_corpus / "inbox" / "renamed.eml").write_bytes(write_eml(default_sections()[:1]))
    dropped = build_index(mail_corpus, index, embedder=FakeEmbedder(), progress=False)
    assert f"inbox/renamed.eml{SEP}figures.pdf" in dropped.files_removed
    with load_index(index) as idx:
        assert list(idx.manifest.files) == ["inbox/renamed.eml", "other.md"]
        assert idx.manifest.skipped == ()


def test_a_message_whose_only_text_is_in_an_attachment(tmp_path: Path) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "b@example.org"
    msg["Date"] = "Wed, 06 Mar 2024 09:00:00 +0000"
    msg.set_content("")
    msg.add_attachment(b"Shelters in the attachment only.", maintype="text", subtype="plain", filename="a.txt")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "m.eml").write_bytes(bytes(msg))
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    assert not build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False).published
    a = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    p = a.ask("shelters in the attachment", k=1).passages[0]
    assert p.source == f"m.eml{SEP}a.txt" and p.origin() == "from b@example.org, 2024-03-06 09:00"


def test_a_corpus_file_may_not_take_an_attachments_name(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / f"m.eml{SEP}a.txt").write_text("A file posing as an attachment.")
    (corpus / "real.txt").write_text("A real file.")
    found, skipped = discover(corpus)
    assert [s for s, _ in found] == ["real.txt"]
    assert [(s.path, s.reason) for s in skipped] == [
        (f"m.eml{SEP}a.txt", "file name contains ' › ', which tqa keeps for e-mail attachments; rename it")]


# ---------------------------------------------------------------- Tesseract missing


def test_without_tesseract_scanned_pages_are_listed_as_skipped_and_read_once_it_is_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    only_on_path(monkeypatch, tmp_path / "empty-bin")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pdf, _ = write_pdf_text(default_sections()[:1])
    (corpus / "mixed.pdf").write_bytes(text_page_then_scan())
    (corpus / "scan.pdf").write_bytes(scan_pdf(pdf))
    (corpus / "notes.md").write_text("# Beds\n\nShelters give survivors a bed for the night.\n")
    index = tmp_path / "index"
    first = build_index(corpus, index, embedder=FakeEmbedder(), progress=False)
    assert first.files_added == ["mixed.pdf", "notes.md"]
    assert first.skipped == [
        {"path": "mixed.pdf", "reason": f"page 2 is a scanned image and was not read: {INSTALL}"},
        {"path": "scan.pdf", "reason": f"PDF has no extractable text: page 1 is a scanned image and was not read: "
                                       f"{INSTALL}"},
    ]
    assert first.warnings == []
    lines = first.lines()
    assert f"skipped: mixed.pdf: page 2 is a scanned image and was not read: {INSTALL}" in lines
    with load_index(index) as idx:
        assert idx.manifest.files["mixed.pdf"].ocr_pending == 1
        assert idx.manifest.files["notes.md"].ocr_pending is None
    # still missing: nothing to do, and the same list
    again = build_index(corpus, index, embedder=FakeEmbedder(), progress=False)
    assert not again.published and again.skipped == first.skipped
    # installed: the scanned pages are read (the files did not change)
    only_on_path(monkeypatch, fake_tesseract(tmp_path / "bin"))
    fixed = build_index(corpus, index, embedder=FakeEmbedder(), progress=False)
    assert fixed.files_changed == ["mixed.pdf"] and fixed.files_added == ["scan.pdf"]
    assert fixed.files_unchanged == ["notes.md"] and fixed.skipped == []
    with load_index(index) as idx:
        assert idx.manifest.files["mixed.pdf"].ocr_pending is None
        assert [c.ocr for c in idx.chunks if c.source == "mixed.pdf"] == [False, True]
    assert not build_index(corpus, index, embedder=FakeEmbedder(), progress=False).published


def test_without_tesseract_a_scanned_attachment_is_listed_too(tmp_path: Path, monkeypatch) -> None:
    only_on_path(monkeypatch, tmp_path / "empty-bin")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "m.eml").write_bytes(write_eml(default_sections()[:1], attachments=[
        ("scan.pdf", text_page_then_scan(), "application/pdf")]))
    summary = build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    assert summary.skipped == [{"path": f"m.eml{SEP}scan.pdf",
                                "reason": f"page 2 is a scanned image and was not read: {INSTALL}"}]
    only_on_path(monkeypatch, fake_tesseract(tmp_path / "bin"))
    fixed = build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    assert fixed.files_changed == ["m.eml"] and fixed.skipped == []


def test_the_build_shows_a_progress_bar_for_ocr(tmp_path: Path, monkeypatch, capsys) -> None:
    only_on_path(monkeypatch, fake_tesseract(tmp_path / "bin"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pdf, pages = write_pdf_text(default_sections())
    (corpus / "scan.pdf").write_bytes(scan_pdf(pdf, dpi=50))
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=True)
    err = capsys.readouterr().err
    assert "OCR scan.pdf" in err and f"{len(pages)}/{len(pages)}" in err
    capsys.readouterr()
    build_index(corpus, tmp_path / "index2", embedder=FakeEmbedder(), progress=False)
    assert "OCR" not in capsys.readouterr().err


def test_progress_reaches_every_page_with_several_workers(monkeypatch) -> None:
    import threading

    import tqa.loaders.ocr as ocr
    from tqa.loaders import extract
    from tqa.loaders.ocr import OcrSettings

    threads: set[str] = set()

    def read(exe, image, langs, timeout):
        threads.add(threading.current_thread().name)
        return f"Page text {len(image)}."

    monkeypatch.setattr(ocr, "tesseract", lambda: "/usr/bin/tesseract")
    monkeypatch.setattr(ocr, "resolve_languages", lambda exe, wanted: ("eng", None))
    monkeypatch.setattr(ocr, "run_tesseract", read)
    pdf, pages = write_pdf_text(default_sections())
    seen: list[tuple[int, int]] = []
    doc = extract("scan.pdf", scan_pdf(pdf, dpi=50), ocr=OcrSettings(workers=3, dpi=50),
                  progress=lambda d, t: seen.append((d, t)))
    assert doc.ocr_pages == tuple(range(1, len(pages) + 1))
    assert seen == [(i, len(pages)) for i in range(len(pages) + 1)]
    assert threads and all(t.startswith("tqa-ocr") for t in threads)
