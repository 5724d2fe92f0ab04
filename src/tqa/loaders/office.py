"""Word (.docx) and PowerPoint (.pptx) documents, read with python-docx and python-pptx.

Word: the body in reading order (paragraphs, tables, content controls, text boxes), headings from the paragraph's
heading style or outline level (its own, else its style's, through the styles it is based on), tables as one line
per row with cells joined by " | ". Footnotes, endnotes, comments, headers and footers are left out of the body,
as HTML page furniture is; deleted text of tracked changes is left out, inserted text kept.

PowerPoint: each slide is a page (``page_unit="slide"``); its title is its heading; the text of its other shapes
follows in the slide's order (groups opened, tables read as rows), then its speaker notes after a "Notes:" line.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from typing import Any

from .base import Document, Limits, SkipFile, TextBuilder, read_errors
from .zipped import check_kind, open_zip

CELL_SEPARATOR = " | "  # as HTML tables are read: a row reads as one line, "Spain | 340 | 88%"
NOTES_MARK = "Notes:"

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_HEADING_NAME = re.compile(r"heading\s*([1-9])$", re.IGNORECASE)


def _w(tag: str) -> str:
    return f"{{{_W}}}{tag}"


_P, _TBL, _TR, _TC, _SDT, _SDT_CONTENT, _CUSTOM_XML = (_w(t) for t in ("p", "tbl", "tr", "tc", "sdt", "sdtContent",
                                                                       "customXml"))
_TXBX = _w("txbxContent")
_INLINE_SKIP = frozenset({_w("del"), _w("moveFrom"), _w("delText"), _w("instrText"), _w("delInstrText"),
                          _w("footnoteReference"), _w("endnoteReference"), _w("commentReference"), _w("pPr"),
                          _w("rPr"), _TXBX, f"{{{_MC}}}Fallback"})


def _open(kind: str, data: bytes, limits: Limits) -> Any:
    zf = open_zip(data, kind, limits)  # bounds every member before the library reads them all
    check_kind(zf, kind, "a Word document (.docx)" if kind == ".docx" else "a PowerPoint presentation (.pptx)")
    # a zip that is not a Word/PowerPoint package, or one that is broken inside
    with read_errors(kind), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == ".docx":
            import docx

            return docx.Document(io.BytesIO(data))
        import pptx

        return pptx.Presentation(io.BytesIO(data))


# ----------------------------------------------------------------------------------------------------------
# Word
# ----------------------------------------------------------------------------------------------------------


class _WordStyles:
    """Heading level of a paragraph style: ``heading N`` by name, or the outline level set on the style or on
    one it is based on. Title counts as a level-1 heading."""

    def __init__(self, doc: Any) -> None:
        try:
            self._styles = doc.styles.element
        except Exception:
            self._styles = None
        self._levels: dict[str, int | None] = {}

    def level(self, style_id: str | None) -> int | None:
        if not style_id or self._styles is None:
            return None
        if style_id not in self._levels:
            self._levels[style_id] = None  # a cycle of basedOn ends here
            self._levels[style_id] = self._resolve(style_id)
        return self._levels[style_id]

    def _resolve(self, style_id: str) -> int | None:
        style = self._styles.get_by_id(style_id)
        if style is None:
            return None
        name = (style.name_val or "").strip()
        m = _HEADING_NAME.match(name)
        if m:
            return int(m.group(1))
        if name.lower() == "title":
            return 1
        lvl = _outline_level(style.find(_w("pPr")))
        if lvl is not None:
            return lvl
        return self.level(style.basedOn_val)


def _outline_level(ppr: Any) -> int | None:
    """1-based heading level from a w:pPr's outline level; 0 means "body text" (Word's level 10)."""
    if ppr is None:
        return None
    el = ppr.find(_w("outlineLvl"))
    if el is None:
        return None
    try:
        v = int(el.get(_w("val")))
    except (TypeError, ValueError):
        return None
    return v + 1 if 0 <= v <= 8 else 0


def _paragraph_level(p: Any, styles: _WordStyles) -> int | None:
    ppr = p.find(_w("pPr"))
    own = _outline_level(ppr)
    if own is not None:
        return own or None
    style = ppr.find(_w("pStyle")) if ppr is not None else None
    return styles.level(style.get(_w("val")) if style is not None else None) or None


def _run_text(el: Any, out: list[str], boxes: list[Any]) -> None:
    """The text of a paragraph's inline content, in document order."""
    for child in el:
        tag = child.tag
        if not isinstance(tag, str) or tag in _INLINE_SKIP:
            if tag == _TXBX:
                boxes.append(child)
            continue
        if tag == _w("t"):
            out.append(child.text or "")
        elif tag in (_w("tab"), _w("ptab")):
            out.append("\t")
        elif tag in (_w("br"), _w("cr")):
            out.append("\n")
        elif tag == _w("noBreakHyphen"):
            out.append("-")
        else:
            _run_text(child, out, boxes)


def _word_blocks(container: Any, styles: _WordStyles) -> Iterator[tuple[str, str, int | None]]:
    """("block" | "row", text, heading level) for the body-level content of ``container`` in reading order."""
    for child in container:
        tag = child.tag
        if tag == _P:
            parts: list[str] = []
            boxes: list[Any] = []
            _run_text(child, parts, boxes)
            yield "block", "".join(parts), _paragraph_level(child, styles)
            for box in boxes:
                yield from _word_blocks(box, styles)
        elif tag == _TBL:
            yield from _word_table(child, styles)
        elif tag in (_SDT, _CUSTOM_XML, _SDT_CONTENT, _w("ins"), _w("moveTo")):
            inner = child.find(_SDT_CONTENT) if tag == _SDT else child
            if inner is not None:
                yield from _word_blocks(inner, styles)


def _children(parent: Any, tag: str) -> Iterator[Any]:
    """The ``tag`` children of a table or row, including those wrapped in content controls or custom XML."""
    for child in parent:
        if child.tag == tag:
            yield child
        elif child.tag in (_SDT, _CUSTOM_XML):
            inner = child.find(_SDT_CONTENT) if child.tag == _SDT else child
            if inner is not None:
                yield from _children(inner, tag)


def _word_table(tbl: Any, styles: _WordStyles) -> Iterator[tuple[str, str, int | None]]:
    first = True
    for tr in _children(tbl, _TR):
        cells = []
        for tc in _children(tr, _TC):
            text = " ".join(" ".join(t.split()) for _, t, _ in _word_blocks(tc, styles) if t.strip())
            if text:
                cells.append(text)
        if cells:
            yield ("block" if first else "row"), CELL_SEPARATOR.join(cells), None
            first = False


def _core_metadata(package: Any) -> dict[str, str]:
    """Title, author, subject and date from the package's core properties; {} when they cannot be read (never a
    reason to skip the file)."""
    meta: dict[str, str] = {}
    try:
        props = package.core_properties
        for key, attr in (("title", "title"), ("author", "author"), ("subject", "subject")):
            value = getattr(props, attr, None)
            if isinstance(value, str) and value.strip():
                meta[key] = " ".join(value.split())
        for attr in ("modified", "created"):
            value = getattr(props, attr, None)
            if value is not None and hasattr(value, "isoformat"):
                meta["date"] = value.isoformat()
                break
    except Exception:
        return {}
    return meta


def extract_docx(source: str, data: bytes, digest: str, limits: Limits) -> Document:
    doc = _open(".docx", data, limits)
    b = TextBuilder(limits)
    with read_errors(".docx"):
        styles = _WordStyles(doc)
        for kind, text, level in _word_blocks(doc.element.body, styles):
            b.block(text, heading=level, sep="\n" if kind == "row" else "\n\n")
    meta = _core_metadata(doc)
    if not b.length:
        raise SkipFile(".docx has no readable text")
    return Document(source, b.text(), "docx", digest, headings=tuple(b.headings), metadata=meta)


# ----------------------------------------------------------------------------------------------------------
# PowerPoint
# ----------------------------------------------------------------------------------------------------------


def _shapes(shapes: Any) -> Iterator[Any]:
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP: its members, in order
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _frame_text(frame: Any) -> str:
    return "\n".join(p.text for p in frame.paragraphs)


def _table_rows(table: Any) -> Iterator[str]:
    for row in table.rows:
        cells = []
        for cell in row.cells:
            if getattr(cell, "is_spanned", False):  # covered by a merged cell: its text is the origin's
                continue
            text = " ".join(cell.text.split())
            if text:
                cells.append(text)
        if cells:
            yield CELL_SEPARATOR.join(cells)


def extract_pptx(source: str, data: bytes, digest: str, limits: Limits) -> Document:
    prs = _open(".pptx", data, limits)
    b = TextBuilder(limits)
    with read_errors(".pptx"):
        for slide in prs.slides:
            b.new_page()
            title = slide.shapes.title
            if title is not None and title.has_text_frame:
                b.block(" ".join(_frame_text(title.text_frame).split()), heading=1)
            for shape in _shapes(slide.shapes):
                if title is not None and shape.shape_id == title.shape_id:
                    continue
                if getattr(shape, "has_table", False) and shape.has_table:
                    for i, row in enumerate(_table_rows(shape.table)):
                        b.block(row, sep="\n" if i else "\n\n")
                elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                    b.block(_frame_text(shape.text_frame))
            if slide.has_notes_slide:
                frame = slide.notes_slide.notes_text_frame
                notes = _frame_text(frame).strip() if frame is not None else ""
                if notes:
                    b.block(f"{NOTES_MARK}\n{notes}")
    meta = _core_metadata(prs)
    if not b.length:
        raise SkipFile(".pptx has no readable text")
    return Document(source, b.text(), "pptx", digest, pages=b.page_starts(), headings=tuple(b.headings),
                    page_unit="slide", metadata=meta)
