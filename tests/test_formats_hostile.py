"""Hostile files in the new formats: zip bombs (honest and lying), password-protected and DRM-locked documents,
truncated files, extensions that lie, a PDF of 5,000 blank pages, e-mails with a deep or a wide tree of
attachments. Each is skipped or bounded with a one-line reason, within a memory budget measured in a fresh
process against the same process reading a small valid file."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from tqa.loaders import ATTACHMENT_SEPARATOR, SkipFile, extract

from .format_writers import default_sections, write_docx, write_eml, write_epub, write_odt, write_pptx

SECTIONS = default_sections()[:3]
VALID = {".docx": write_docx, ".pptx": write_pptx, ".odt": write_odt, ".epub": write_epub}
MAIN_PART = {".docx": "word/document.xml", ".pptx": "ppt/presentation.xml", ".odt": "content.xml",
             ".epub": "EPUB/chap_00.xhtml"}
MIB = 1024 * 1024


def reason(source: str, data: bytes) -> str:
    with pytest.raises(SkipFile) as info:
        extract(source, data)
    assert "\n" not in str(info.value)
    return str(info.value)


def bomb(ext: str, size: int) -> bytes:
    """A valid document of ``ext`` whose main part is replaced by ``size`` bytes of spaces (deflates ~1000:1)."""
    src = zipfile.ZipFile(io.BytesIO(VALID[ext](SECTIONS)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            if info.filename == MAIN_PART[ext]:
                with z.open(info.filename, "w") as f:
                    block = b" " * MIB
                    for _ in range(size // MIB):
                        f.write(block)
            else:
                z.writestr(info, src.read(info.filename))
    return out.getvalue()


def rezip(data: bytes, edit) -> bytes:
    """The zip ``data`` written again, each member's bytes passed through ``edit(name, body)``."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info, edit(info.filename, src.read(info.filename)))
    return out.getvalue()


def lying(data: bytes, member: str, declared: int) -> bytes:
    """``data`` with the central directory's uncompressed size of ``member`` changed to ``declared``."""
    buf = bytearray(data)
    name = member.encode()
    at = buf.rfind(b"PK\x01\x02")
    while at >= 0:
        n = int.from_bytes(buf[at + 28:at + 30], "little")
        if bytes(buf[at + 46:at + 46 + n]) == name:
            buf[at + 24:at + 28] = declared.to_bytes(4, "little")
            return bytes(buf)
        at = buf.rfind(b"PK\x01\x02", 0, at)
    raise AssertionError(f"{member} not in the central directory")


PEAK_SCRIPT = """
import json, resource, sys
from tqa.loaders import SkipFile, extract
source, path = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    doc = extract(source, data)
    outcome = "read: %d chars, %d attachments" % (len(doc.text), sum(1 for _ in doc.walk()) - 1)
except SkipFile as e:
    outcome = "skipped: " + str(e)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "before_kib": before, "peak_kib": peak}))
"""


def peak(tmp_path: Path, source: str, data: bytes) -> dict:
    path = tmp_path / f"input-{len(data)}"
    path.write_bytes(data)
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, source, str(path)], capture_output=True, text=True,
                          timeout=600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("ext", sorted(VALID))
def test_zip_bomb_is_refused_within_a_memory_budget(ext: str, tmp_path: Path) -> None:
    data = bomb(ext, 300 * MIB)  # 300 MB of XML in a file of a few hundred KB
    assert len(data) < 2 * MIB
    got = peak(tmp_path, f"bomb{ext}", data)
    assert got["outcome"].startswith(f"skipped: {ext} expands past 128 MB per part or 256 MB in all"), got
    base = peak(tmp_path, f"fine{ext}", VALID[ext](SECTIONS))
    assert base["outcome"].startswith("read: ")
    # The bomb costs less extra memory than a small share of what it would expand to: it is never inflated whole.
    assert got["peak_kib"] - base["peak_kib"] < 64 * 1024, (got, base)


@pytest.mark.parametrize("ext", sorted(VALID))
def test_zip_whose_headers_lie_about_sizes_is_refused(ext: str) -> None:
    data = bomb(ext, 8 * MIB)
    lie = lying(data, MAIN_PART[ext], 1000)  # declares 1000 bytes, inflates to 8 MB
    assert reason(f"lie{ext}", lie).startswith(f"damaged {ext}: ")


@pytest.mark.parametrize("ext", sorted(VALID))
def test_truncated_documents_are_skipped(ext: str) -> None:
    data = VALID[ext](SECTIONS)
    for cut in (len(data) // 2, len(data) - 10, 30):
        assert reason(f"cut{ext}", data[:cut]).startswith(f"damaged {ext}: ")


@pytest.mark.parametrize("ext", [".docx", ".pptx"])
def test_password_protected_office_documents(ext: str) -> None:
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(VALID[ext](SECTIONS))).encrypt("secret", out)
    assert reason(f"locked{ext}", out.getvalue()) == (
        f"password-protected {ext} (remove the password in its program and save it again)")


def test_encrypted_odt_and_drm_epub() -> None:
    def encrypt(name: str, body: bytes) -> bytes:
        if name == "META-INF/manifest.xml":  # what an ODF writer records for an encrypted part
            return body.replace(b'manifest:full-path="content.xml"',
                                b'manifest:full-path="content.xml"><manifest:encryption-data '
                                b'manifest:checksum-type="SHA1/1K" manifest:checksum="x"/></manifest:file-entry'
                                b'><manifest:file-entry manifest:media-type="" manifest:full-path="x"', 1)
        return bytes(range(256)) * 8 if name == "content.xml" else body

    assert reason("locked.odt", rezip(write_odt(SECTIONS), encrypt)) == "encrypted .odt (needs a password)"

    src = zipfile.ZipFile(io.BytesIO(write_epub(SECTIONS)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info, src.read(info.filename))
        z.writestr("META-INF/encryption.xml", (
            '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
            'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
            '<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
            '<enc:CipherData><enc:CipherReference URI="EPUB/chap_00.xhtml"/></enc:CipherData>'
            "</enc:EncryptedData></encryption>"))
    names = zipfile.ZipFile(io.BytesIO(out.getvalue())).namelist()
    chapter = next(n for n in names if n.endswith("chap_00.xhtml"))
    data = out.getvalue().replace(b'URI="EPUB/chap_00.xhtml"', f'URI="{chapter}"'.encode())
    assert reason("locked.epub", data) == "encrypted .epub (DRM): its chapters cannot be read"


def test_xml_entity_declarations_are_refused() -> None:
    def declare(name: str, body: bytes) -> bytes:
        if name != "word/document.xml":
            return body
        return body.replace(b"?>", b'?><!DOCTYPE w [<!ENTITY x SYSTEM "file:///etc/passwd">]>', 1)

    assert reason("xxe.docx", rezip(write_docx(SECTIONS), declare)) == (
        ".docx with XML entity declarations in word/document.xml (refused)")


@pytest.mark.parametrize(
    ("source", "make", "expected"),
    [
        ("a.docx", lambda: b"%PDF-1.4\n%stuff", "not a .docx file: it is a PDF document"),
        ("a.pptx", lambda: write_docx(SECTIONS), "not a .pptx file: it is a Word document (.docx)"),
        ("a.docx", lambda: write_pptx(SECTIONS), "not a .docx file: it is a PowerPoint presentation (.pptx)"),
        ("a.odt", lambda: write_epub(SECTIONS), "not a .odt file: it is an EPUB book (.epub)"),
        ("a.epub", lambda: write_odt(SECTIONS), "not a .epub file: it is an OpenDocument text (.odt)"),
        ("a.pdf", lambda: write_docx(SECTIONS), "not a .pdf file: it is a ZIP archive"),
        ("a.rtf", lambda: b"Just some plain text.", "not a .rtf file (damaged, or another format under a .rtf name)"),
        ("a.eml", lambda: b"%PDF-1.4\n" + b"x" * 100, "not an e-mail message (no From, To, Subject or Date header)"),
        ("a.docx", lambda: b"Plain text", "not a .docx file (damaged, or another format under a .docx name)"),
    ],
)
def test_extensions_that_lie(source: str, make, expected: str) -> None:
    assert reason(source, make()) == expected


def test_pdf_of_5000_blank_pages_costs_no_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    from reportlab.pdfgen import canvas

    import tqa.loaders.ocr as ocr

    calls: list[int] = []
    monkeypatch.setattr(ocr, "run_tesseract", lambda *a, **k: calls.append(1) or "")
    rendered: list[int] = []
    real_render = ocr._render_pgm
    monkeypatch.setattr(ocr, "_render_pgm", lambda *a, **k: rendered.append(1) or real_render(*a, **k))
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    for _ in range(5000):
        c.showPage()
    c.save()
    assert reason("blank.pdf", buf.getvalue()) == (
        "PDF has no extractable text (no text layer, and no scanned page to read)")
    assert calls == [] and rendered == []  # a page with nothing on it is neither rendered nor read


def nested_chain(levels: int) -> bytes:
    """A message forwarding a message forwarding... ``levels`` deep, each with a text attachment of its own."""
    inner = EmailMessage()
    inner["From"] = "a@example.org"
    inner["Subject"] = f"Level {levels}"
    inner.set_content(f"Body at level {levels}.")
    for level in range(levels - 1, -1, -1):
        outer = EmailMessage()
        outer["From"] = "a@example.org"
        outer["Subject"] = f"Level {level}"
        outer.set_content(f"Body at level {level}.")
        outer.add_attachment(f"Notes at level {level}.".encode(), maintype="text", subtype="plain",
                             filename=f"notes-{level}.txt")
        outer.add_attachment(inner, filename=f"forward-{level + 1}.eml")
        inner = outer
    return bytes(inner)


def test_e_mail_with_a_10_level_chain_of_attachments_is_read_3_levels_deep() -> None:
    doc = extract("chain.eml", nested_chain(10))
    depth = {d.source: d.source.count(ATTACHMENT_SEPARATOR) for d in doc.walk()}
    assert max(depth.values()) == 3
    assert [d.metadata["subject"] for d in doc.walk() if d.format == "eml"] == ["Level 0", "Level 1", "Level 2",
                                                                                "Level 3"]
    deepest = [s for s in doc.walk_skipped()]
    assert [(s.path.count(ATTACHMENT_SEPARATOR), s.reason) for s in deepest] == [
        (4, "attachment nested more than 3 levels deep, not read"),
        (4, "attachment nested more than 3 levels deep, not read"),
    ]


def test_e_mail_with_1000_attachments_reads_100(tmp_path: Path) -> None:
    files = [(f"note-{i:04d}.txt", f"Note number {i} about shelters.".encode(), "text/plain") for i in range(1000)]
    data = write_eml(SECTIONS, attachments=files)
    doc = extract("wide.eml", data)
    assert len(doc.attachments) == 100
    assert doc.attachments[-1].text == "Note number 99 about shelters."
    assert [s.reason for s in doc.skipped] == ["900 more attachments not read (at most 100 per file)"]
    got = peak(tmp_path, "wide.eml", data)
    base = peak(tmp_path, "narrow.eml", write_eml(SECTIONS, attachments=files[:1]))
    assert got["outcome"].startswith("read: ") and got["outcome"].endswith(", 100 attachments"), got
    assert got["peak_kib"] - base["peak_kib"] < 64 * 1024, (got, base)


def test_attachments_share_one_text_budget() -> None:
    from tqa.loaders import Limits

    files = [(f"n{i}.txt", b"x" * 400, "text/plain") for i in range(5)]
    body = len(extract("m.eml", write_eml(SECTIONS[:1])).text)
    cap = body + 1000
    doc = extract("m.eml", write_eml(SECTIONS[:1], attachments=files), limits=Limits(max_text_chars=cap))
    assert len(doc.attachments) == 2  # the message, then 400 + 400 fit; the third would pass the cap
    assert [s.reason for s in doc.skipped] == ["text longer than 200 characters"] * 3


def test_a_broken_attachment_does_not_stop_the_message() -> None:
    from .test_loaders import make_pdf

    locked = make_pdf([["secret words"]], encrypt="pw")
    doc = extract("m.eml", write_eml(SECTIONS[:1], attachments=[
        ("locked.pdf", locked, "application/pdf"),
        ("cut.docx", write_docx(SECTIONS)[:500], "application/octet-stream"),
        ("fine.txt", b"Readable attachment.", "text/plain"),
    ]))
    assert [a.text for a in doc.attachments] == ["Readable attachment."]
    reasons = {s.path.rsplit(ATTACHMENT_SEPARATOR, 1)[1]: s.reason for s in doc.skipped}
    assert reasons["locked.pdf"] == "encrypted PDF (needs a password)"
    assert reasons["cut.docx"].startswith("damaged .docx: ")
