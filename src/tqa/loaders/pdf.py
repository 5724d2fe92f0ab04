"""PDF: the text layer page by page (pypdf), and pages without one read by OCR (ocr.py).

Pages are joined with a blank line and each page's start offset is recorded, so every offset has its page.
"""

from __future__ import annotations

import io
import logging
import warnings

from .base import VISIBLE, Document, Limits, SkipFile, Skipped, nfc, short_error
from .ocr import MIN_TEXT_LAYER_CHARS, OcrSettings, Progress, ocr_pdf_pages
from .zipped import not_this_format, sniff


def _visible_chars(text: str) -> int:
    return len(VISIBLE.findall(text)) if len(text) < 4 * MIN_TEXT_LAYER_CHARS else MIN_TEXT_LAYER_CHARS


def _text_layer(data: bytes, limit: int) -> list[str]:
    logger = logging.getLogger("pypdf")
    old_level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                from pypdf import PasswordType, PdfReader
            except ImportError as e:
                raise SkipFile("PDF support needs pypdf (pip install pypdf)") from e
            try:
                reader = PdfReader(io.BytesIO(data))
                if reader.is_encrypted:
                    try:
                        opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
                    except Exception as e:  # e.g. AES without the optional crypto dependency
                        raise SkipFile(f"encrypted PDF could not be opened ({short_error(e)})") from e
                    if not opened:
                        raise SkipFile("encrypted PDF (needs a password)")
                texts: list[str] = []
                total = 0
                for page in reader.pages:
                    texts.append(nfc(page.extract_text() or "").rstrip())
                    total += len(texts[-1])
                    if total > limit:  # stop before the next page, not after the last
                        raise SkipFile(f"PDF text longer than {limit:,} characters once decompressed")
                return texts
            except SkipFile:
                raise
            except Exception as e:  # pypdf raises many types on damaged files; none may escape
                raise SkipFile(f"could not read PDF: {short_error(e)}") from e
    finally:
        logger.setLevel(old_level)


def extract_pdf(source: str, data: bytes, digest: str, limits: Limits, ocr: OcrSettings,
                progress: Progress | None = None) -> Document:
    kind = sniff(data)
    if kind is not None and kind != "a PDF document" and b"%PDF-" not in data[:1024]:
        raise not_this_format(".pdf", data)
    texts = _text_layer(data, limits.max_text_chars)
    empty = [i for i, t in enumerate(texts) if _visible_chars(t) < MIN_TEXT_LAYER_CHARS]
    notes: list[str] = []
    ocr_pages: list[int] = []
    pending: tuple[int, ...] = ()
    if empty and ocr.enabled:
        result = ocr_pdf_pages(data, empty, ocr, progress)
        total = sum(len(t) for t in texts)
        for i, text in sorted(result.texts.items()):
            total += len(text) - len(texts[i])
            if total > limits.max_text_chars:
                raise SkipFile(f"PDF text longer than {limits.max_text_chars:,} characters once read by OCR")
            texts[i] = text
            ocr_pages.append(i + 1)
        notes = result.warnings
        pending = tuple(i + 1 for i in sorted(result.pending))
    if not any(VISIBLE.search(t) for t in texts):
        if notes:
            raise SkipFile("PDF has no extractable text: " + "; ".join(notes))
        raise SkipFile("PDF has no extractable text (no text layer, and no scanned page to read)")
    pages: list[int] = []
    offset = 0
    for t in texts:
        pages.append(offset)
        offset += len(t) + 2  # "\n\n" separator
    # Scanned pages that were not read are parts of the file passed over: listed as skipped, with the reason.
    return Document(source, "\n\n".join(texts), "pdf", digest, pages=tuple(pages), ocr_pages=tuple(ocr_pages),
                    ocr_pending=pending, skipped=tuple(Skipped(source, note) for note in notes))
