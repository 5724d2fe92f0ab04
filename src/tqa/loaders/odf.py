"""OpenDocument text (.odt), read with odfdo.

The body in reading order: headings (``text:h`` with their outline level) become the section trail, paragraphs
and list items are blocks, tables are read one line per row with cells joined by " | ", text boxes follow the
paragraph they are anchored in. Footnotes and endnotes (``text:note``), comments (``office:annotation``), the
deleted text of tracked changes, and generated indexes (tables of contents) are left out of the body.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from typing import Any

from .base import Document, Limits, SkipFile, TextBuilder, read_errors
from .office import CELL_SEPARATOR
from .zipped import check_kind, open_zip, read_member

_SKIP_INLINE = frozenset({"text:note", "office:annotation", "office:annotation-end", "text:tracked-changes",
                          "text:bookmark-ref", "draw:image", "svg:title", "svg:desc", "text:soft-page-break"})
_SKIP_BLOCK = frozenset({"text:tracked-changes", "text:sequence-decls", "text:variable-decls", "office:forms",
                         "text:table-of-content", "text:alphabetical-index", "text:illustration-index",
                         "text:table-index", "text:object-index", "text:user-index", "text:bibliography",
                         "table:table-header-columns", "table:table-columns", "table:table-column",
                         "text:soft-page-break"})
_ROW_GROUPS = frozenset({"table:table-header-rows", "table:table-rows", "table:table-row-group"})
_MAX_REPEAT = 1000  # a run of repeated spaces ("text:s c=...") counted at most this long


def _inline(el: Any, out: list[str], frames: list[Any]) -> None:
    if el.text:
        out.append(el.text)
    for child in el.children:
        tag = child.tag
        if tag == "text:s":
            try:
                n = int(child.get_attribute("text:c") or 1)
            except (TypeError, ValueError):
                n = 1
            out.append(" " * max(1, min(n, _MAX_REPEAT)))
        elif tag == "text:tab":
            out.append("\t")
        elif tag == "text:line-break":
            out.append("\n")
        elif tag == "draw:frame":
            frames.append(child)
        elif tag not in _SKIP_INLINE:
            _inline(child, out, frames)
        if child.tail:
            out.append(child.tail)


def _blocks(container: Any) -> Iterator[tuple[str, str, int | None]]:
    for child in container.children:
        tag = child.tag
        if tag in ("text:p", "text:h"):
            parts: list[str] = []
            frames: list[Any] = []
            _inline(child, parts, frames)
            level = None
            if tag == "text:h":
                try:
                    level = max(1, min(int(child.get_attribute("text:outline-level") or 1), 10))
                except (TypeError, ValueError):
                    level = 1
            yield "block", "".join(parts), level
            for frame in frames:
                yield from _frame_blocks(frame)
        elif tag == "table:table":
            yield from _table(child)
        elif tag == "draw:frame":
            yield from _frame_blocks(child)
        elif tag not in _SKIP_BLOCK:  # text:list, text:list-item, text:section, text:index-body...
            yield from _blocks(child)


def _frame_blocks(frame: Any) -> Iterator[tuple[str, str, int | None]]:
    for child in frame.children:
        if child.tag == "draw:text-box":
            yield from _blocks(child)


def _table_rows(el: Any) -> Iterator[Any]:
    for child in el.children:
        if child.tag == "table:table-row":
            yield child
        elif child.tag in _ROW_GROUPS:
            yield from _table_rows(child)


def _table(tbl: Any) -> Iterator[tuple[str, str, int | None]]:
    first = True
    for row in _table_rows(tbl):
        cells = []
        for cell in row.children:
            if cell.tag != "table:table-cell":  # covered cells repeat nothing: their text is the origin's
                continue
            text = " ".join(" ".join(t.split()) for _, t, _ in _blocks(cell) if t.strip())
            if text:
                cells.append(text)
        if cells:
            yield ("block" if first else "row"), CELL_SEPARATOR.join(cells), None
            first = False


def _metadata(doc: Any) -> dict[str, str]:
    meta: dict[str, str] = {}
    m = doc.meta
    for key, getter in (("title", "get_title"), ("author", "get_initial_creator"), ("subject", "get_subject")):
        try:
            value = getattr(m, getter)()
        except Exception:
            value = None
        if isinstance(value, str) and value.strip():
            meta[key] = " ".join(value.split())
    for getter in ("get_modification_date", "get_creation_date"):
        try:
            value = getattr(m, getter)()
        except Exception:
            value = None
        if value is not None and hasattr(value, "isoformat"):
            meta["date"] = value.isoformat()
            break
    return meta


def extract_odt(source: str, data: bytes, digest: str, limits: Limits) -> Document:
    zf = open_zip(data, ".odt", limits)
    manifest = read_member(zf, "META-INF/manifest.xml") or b""
    if b"encryption-data" in manifest:
        raise SkipFile("encrypted .odt (needs a password)")
    check_kind(zf, ".odt", "an OpenDocument text (.odt)")
    with read_errors(".odt"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from odfdo import Document as OdfDocument

        doc = OdfDocument(io.BytesIO(data))
        body = doc.body
    b = TextBuilder(limits)
    with read_errors(".odt"):
        for kind, text, level in _blocks(body):
            b.block(text, heading=level, sep="\n" if kind == "row" else "\n\n")
    if not b.length:
        raise SkipFile(".odt has no readable text")
    return Document(source, b.text(), "odt", digest, headings=tuple(b.headings), metadata=_metadata(doc))
