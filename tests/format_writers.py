"""Test fixtures in every format tqa reads, each written at test time by the format's own writer library (RTF by
hand) from the default document split into its sections, so that every format carries the same text under the
same headings and a test can check what the loader made of it."""

from __future__ import annotations

import io
from dataclasses import dataclass
from email.message import EmailMessage
from html import escape

from tqa.chunking import sections
from tqa.loaders import extract

from .support import CORPUS

INTRO = "Introduction"  # the heading given to the text before the first heading, where a format needs one
NOTE = "Remember to thank the partner organisations."  # speaker notes / a comment: never body text elsewhere


@dataclass(frozen=True)
class Section:
    title: str | None  # None: the text before the first heading
    paragraphs: tuple[str, ...]


def default_sections() -> list[Section]:
    path = next(CORPUS.glob("*.txt"))
    doc = extract(path.name, path.read_bytes())
    out = []
    for s in sections(doc):
        lines = tuple(line.strip() for line in doc.text[s.start:s.end].splitlines() if line.strip())
        out.append(Section(s.trail[-1] if s.trail else None, lines))
    return out


def write_docx(secs: list[Section], *, comment: bool = True) -> bytes:
    import docx

    d = docx.Document()
    for sec in secs:
        if sec.title:
            d.add_heading(sec.title, 1)
        for i, para in enumerate(sec.paragraphs):
            p = d.add_paragraph(para)
            if comment and i == 0 and sec.title and hasattr(d, "add_comment"):
                d.add_comment(p.runs, text=NOTE, author="Reviewer")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def write_pptx(secs: list[Section]) -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    for sec in secs:
        if sec.title:
            slide = prs.slides.add_slide(prs.slide_layouts[5])  # title only
            slide.shapes.title.text = sec.title
        else:
            slide = prs.slides.add_slide(prs.slide_layouts[6])  # blank: an untitled slide
        box = slide.shapes.add_textbox(Inches(0.5), Inches(1.5), Inches(9), Inches(5))
        frame = box.text_frame
        frame.text = sec.paragraphs[0]
        for para in sec.paragraphs[1:]:
            frame.add_paragraph().text = para
        slide.notes_slide.notes_text_frame.text = NOTE
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def write_odt(secs: list[Section]) -> bytes:
    from odfdo import Document, Header, Paragraph

    d = Document("text")
    d.body.clear()
    for sec in secs:
        if sec.title:
            d.body.append(Header(1, sec.title))
        for i, para in enumerate(sec.paragraphs):
            p = Paragraph(para)
            if i == 0 and sec.title:
                p.insert_note(after=para.split()[0], note_id=f"n{len(d.body.children)}", citation="1", body=NOTE)
            d.body.append(p)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def write_epub(secs: list[Section]) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("tqa-test-book")
    book.set_title("Global governance and human trafficking")
    book.set_language("en")
    book.add_author("tqa tests")
    chapters = []
    for i, sec in enumerate(secs):
        ch = epub.EpubHtml(title=sec.title or INTRO, file_name=f"chap_{i:02d}.xhtml", lang="en")
        heading = f"<h1>{escape(sec.title)}</h1>" if sec.title else ""  # the intro is headed by the TOC alone
        ch.content = heading + "".join(f"<p>{escape(p)}</p>" for p in sec.paragraphs)
        book.add_item(ch)
        chapters.append(ch)
    book.toc = chapters
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *chapters]
    buf = io.BytesIO()
    epub.write_epub(buf, book)
    return buf.getvalue()


def _rtf_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\\{}":
            out.append("\\" + ch)
        elif ord(ch) < 128:
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\u{code if code < 32768 else code - 65536}?")
    return "".join(out)


def write_rtf(secs: list[Section]) -> bytes:
    parts = [r"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\froman Times New Roman;}}\f0\fs24 "]
    for sec in secs:
        if sec.title:
            parts.append(r"{\b\fs32 " + _rtf_escape(sec.title) + r"}\par" + "\n")
        for para in sec.paragraphs:
            parts.append(_rtf_escape(para) + r"\par" + "\n")
    parts.append("}")
    return "".join(parts).encode("ascii")


SUBJECT = "Report: global governance and human trafficking"


def write_eml(secs: list[Section], *, attachments: list[tuple[str, bytes, str]] = ()) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Anna de Vries <anna@example.org>"
    msg["To"] = "team@example.org"
    msg["Date"] = "Tue, 05 Mar 2024 10:15:00 +0100"
    msg["Subject"] = SUBJECT
    plain = "\n\n".join("\n".join(((s.title,) if s.title else ()) + s.paragraphs) for s in secs)
    html = "".join((f"<h1>{escape(s.title)}</h1>" if s.title else "") + "".join(f"<p>{escape(p)}</p>"
                                                                                 for p in s.paragraphs) for s in secs)
    msg.set_content(plain)
    msg.add_alternative(f"<html><body>{html}</body></html>", subtype="html")
    for name, data, ctype in attachments:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return bytes(msg)


def write_html_eml(secs: list[Section]) -> bytes:
    """The same message with an HTML body only (its headings become sections under the subject)."""
    msg = EmailMessage()
    msg["From"] = "Anna de Vries <anna@example.org>"
    msg["Date"] = "Tue, 05 Mar 2024 10:15:00 +0100"
    msg["Subject"] = SUBJECT
    html = "".join((f"<h1>{escape(s.title)}</h1>" if s.title else "") + "".join(f"<p>{escape(p)}</p>"
                                                                                 for p in s.paragraphs) for s in secs)
    msg.set_content(f"<html><body>{html}</body></html>", subtype="html")
    return bytes(msg)


def write_pdf_text(secs: list[Section], *, font_size: float = 10) -> tuple[bytes, list[str]]:
    """A PDF with a text layer, laid out by reportlab, and the text of each page (for checking pages)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import simpleSplit
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    width, height = A4
    margin, leading = 60, font_size * 1.45
    pages: list[list[str]] = [[]]
    y = height - margin

    def line(text: str, font: str, size: float) -> None:
        nonlocal y
        if y < margin:
            c.showPage()
            pages.append([])
            y = height - margin
        c.setFont(font, size)
        c.drawString(margin, y, text)
        pages[-1].append(text)
        y -= leading

    for sec in secs:
        if sec.title:
            y -= leading / 2
            for chunk in simpleSplit(sec.title, "Helvetica-Bold", font_size + 2, width - 2 * margin):
                line(chunk, "Helvetica-Bold", font_size + 2)
        for para in sec.paragraphs:
            for chunk in simpleSplit(para, "Helvetica", font_size, width - 2 * margin):
                line(chunk, "Helvetica", font_size)
            y -= leading / 2
    c.showPage()
    c.save()
    return buf.getvalue(), ["\n".join(p) for p in pages]


def scan_pdf(pdf: bytes, *, dpi: int = 200, blank_pages: tuple[int, ...] = ()) -> bytes:
    """The pages of ``pdf`` as images in a new PDF with no text layer, as a scanner makes them; ``blank_pages``
    (0-based) are replaced by an image of a white sheet."""
    import pypdfium2 as pdfium
    from PIL import Image
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    src = pdfium.PdfDocument(pdf)
    out = io.BytesIO()
    c = canvas.Canvas(out)
    try:
        for i in range(len(src)):
            page = src[i]
            w, h = page.get_size()
            image = page.render(scale=dpi / 72, grayscale=True).to_pil()
            if i in blank_pages:
                image = Image.new("L", image.size, 255)
            page.close()
            c.setPageSize((w, h))
            c.drawImage(ImageReader(image), 0, 0, width=w, height=h)
            c.showPage()
    finally:
        src.close()
    c.save()
    return out.getvalue()
