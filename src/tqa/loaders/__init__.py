"""Find documents in a corpus folder and turn their bytes into text with stable character offsets.

Every offset the tool cites points into ``Document.text``, so the rules here are strict: plain text and
markdown are kept byte-for-byte (after decoding, BOM removal and NFC), HTML is reduced to readable text with
headings recorded as spans, and PDF text is joined page by page with each page's start offset recorded (pages
without a text layer read by OCR). Word, PowerPoint, OpenDocument, EPUB, RTF and e-mail files are read by the
format modules of this package into the same ``Document``; an e-mail's attachments become documents of their own.

Format libraries are imported inside the extractor that needs them, so importing this package stays cheap.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path, PurePosixPath

from .base import (
    ATTACHMENT_SEPARATOR,
    DEFAULT_MAX_BYTES,
    SUPPORTED,
    VISIBLE,
    Document,
    Heading,
    Limits,
    NotReadable,
    SkipFile,
    Skipped,
    shown,
    size_text,
)
from .files import _inside, _name_problem, _unsupported, discover, read_bounded
from .ocr import OcrSettings, Progress
from .text import decode_checked

__all__ = [
    "ATTACHMENT_SEPARATOR",
    "DEFAULT_MAX_BYTES",
    "SUPPORTED",
    "Document",
    "Heading",
    "Limits",
    "NotReadable",
    "OcrSettings",
    "SkipFile",
    "Skipped",
    "discover",
    "extract",
    "load_file",
    "load_source",
    "read_bounded",
    "shown",
    "size_text",
]


def extract(source: str, data: bytes, *, limits: Limits | None = None, ocr: OcrSettings | None = None,
            progress: Progress | None = None) -> Document:
    """Turn a file's raw bytes into a Document by the extension of ``source``; raises SkipFile(reason).

    ``limits`` bound what the file may cost (text length, zip expansion, attachments); ``ocr`` says whether and
    how pages without a text layer are read (default: on, with the languages installed); ``progress(done,
    total)`` is called as scanned pages are read. An e-mail's attachments are in ``Document.attachments`` (each
    with its own ``source``), the ones not read in ``Document.skipped``; ``Document.walk()`` yields them all.
    """
    from .mail import Budget

    lim = limits or Limits()
    budget = Budget(attachments=lim.max_attachments, chars=lim.max_text_chars)

    def child(child_source: str, child_data: bytes, child_limits: Limits, depth: int) -> Document:
        return _extract(child_source, child_data, child_limits, ocr or OcrSettings(), progress, depth, budget, child)

    return _extract(source, data, lim, ocr or OcrSettings(), progress, 0, budget, child)


def _extract(source: str, data: bytes, limits: Limits, ocr: OcrSettings, progress: Progress | None, depth: int,
             budget: object, child: object) -> Document:
    name = source.rsplit(ATTACHMENT_SEPARATOR, 1)[-1]
    ext = PurePosixPath(name).suffix.lower()
    fmt = SUPPORTED.get(ext)
    if fmt is None:
        raise SkipFile(_unsupported(name))
    if not data:
        raise SkipFile("empty file")
    digest = hashlib.sha256(data).hexdigest()

    if fmt == "pdf":
        from .pdf import extract_pdf

        return extract_pdf(source, data, digest, limits, ocr, progress)
    if fmt == "html":
        from .html import extract_html

        text, headings, notes = extract_html(data)
        if not VISIBLE.search(text):
            raise SkipFile("HTML has no readable text")
        return Document(source, text, fmt, digest, headings=headings, warnings=tuple(notes))
    if fmt == "docx":
        from .office import extract_docx

        return extract_docx(source, data, digest, limits)
    if fmt == "pptx":
        from .office import extract_pptx

        return extract_pptx(source, data, digest, limits)
    if fmt == "odt":
        from .odf import extract_odt

        return extract_odt(source, data, digest, limits)
    if fmt == "epub":
        from .epub import extract_epub

        return extract_epub(source, data, digest, limits)
    if fmt == "rtf":
        from .rtf import extract_rtf

        return extract_rtf(source, data, digest, limits)
    if fmt == "eml":
        from .mail import Budget, extract_eml

        assert isinstance(budget, Budget)
        return extract_eml(source, data, digest, limits, child, depth, budget)  # type: ignore[arg-type]
    text, notes = decode_checked(data)
    if len(text) > limits.max_text_chars:
        raise SkipFile(f"text longer than {limits.max_text_chars:,} characters")
    from .base import nfc

    return Document(source, nfc(text), fmt, digest, warnings=tuple(notes))
def load_file(path: str | Path, root: str | Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES,
              limits: Limits | None = None, ocr: OcrSettings | None = None) -> Document:
    """Read and extract one file under ``root``; raises SkipFile.

    A relative ``path`` is taken relative to ``root`` (a source as the index records it) when it names
    something there, else relative to the working folder. The file is read with ``read_bounded``: checked on
    the open file and never read past ``max_bytes``, so a file swapped for a FIFO, a device or a symlink, or
    grown past the cap after it was listed, is skipped rather than waited on or read whole. A path (or a
    symlink) leading outside ``root`` is refused, as ``discover`` refuses it.
    """
    root_abs = Path(root).absolute()
    p = Path(path)
    if not p.is_absolute():
        under_root = root_abs / p
        p = under_root if os.path.lexists(under_root) or not os.path.lexists(p) else p
    p = p.absolute()
    rel = os.path.relpath(p, root_abs)
    if rel == ".." or rel.startswith(".." + os.sep):
        raise SkipFile(f"not inside the corpus folder {shown(str(root))}")
    parts = Path(rel).parts
    for i, part in enumerate(parts):
        problem = _name_problem(part, "file" if i == len(parts) - 1 else "folder")
        if problem:
            raise SkipFile(problem)
    source = PurePosixPath(*parts).as_posix()
    try:
        real = p.resolve(strict=True)
        if not _inside(real, Path(root).resolve()):
            raise SkipFile("symlink points outside the corpus")
        # The resolved path is opened without following a symlink: one swapped in after resolve() is refused.
        data = read_bounded(real, sys.maxsize if max_bytes is None else max_bytes, follow_symlinks=False)
    except NotReadable as e:
        raise SkipFile(str(e)) from e
    except RuntimeError as e:  # a loop of symlinks
        raise SkipFile("broken symlink") from e
    except OSError as e:
        raise SkipFile(f"unreadable: {shown(e.strerror or str(e))}") from e
    return extract(source, data, limits=limits, ocr=ocr)


def load_source(source: str, root: str | Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES,
                limits: Limits | None = None, ocr: OcrSettings | None = None) -> Document:
    """The Document a source names, an attachment's included: ``"inbox/a.eml › report.pdf"`` loads
    ``inbox/a.eml`` under ``root`` and returns its attachment ``report.pdf``. Raises SkipFile."""
    top = source.split(ATTACHMENT_SEPARATOR, 1)[0]
    doc = load_file(top, root, max_bytes=max_bytes, limits=limits, ocr=ocr)
    for d in doc.walk():
        if d.source == source:
            return d
    raise SkipFile(f"{shown(source)}: no such attachment in {shown(top)}")
