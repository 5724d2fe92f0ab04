"""Structure-aware chunking: sections first, then size.

A document is cut into sections at its headings (Markdown ``#`` and setext headings, the headings a loader marked:
HTML ``h1``-``h6``, Word heading styles, slide titles, ODF and EPUB headings, an e-mail's subject; headings inferred
in plain text, RTF and PDF) and, for paged documents (PDF pages, slides), at page breaks. Each section's body is
then split to size with langchain-text-splitters, so a chunk never spans two sections. Every chunk keeps exact
character offsets into ``Document.text``: ``document.text[chunk.start:chunk.end] == chunk.text``.

The section trail (the headings above a chunk) is not part of ``Chunk.text`` (what a reader is shown) but it
is part of ``Chunk.search_text`` (what is embedded and keyword-indexed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .config import ChunkSettings
from .loaders import Document

SECTION_SEPARATOR = " > "

# ATX headings; the space after the hashes is optional because real documents write "####Title".
_ATX = re.compile(r"^[ ]{0,3}(#{1,6})[ \t]*(?P<title>[^\n#][^\n]*?)[ \t]*#*[ \t]*$", re.MULTILINE)
_SETEXT_UNDERLINE = re.compile(r"^[ ]{0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^[ ]{0,3}(```|~~~)", re.MULTILINE)
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•▪◦–—]|\(?[a-z]\)|\d+[.)]\s+\S+.*[.:;,]$)")
_CLOSING_PUNCT = tuple(".!?:;,…\"”’)]")
# Sentence boundaries: end punctuation (plus closing quotes/brackets) then whitespace, or a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?…])(?P<close>[\"”’)\]]*)[ \t]+|\n+")

MAX_INFERRED_HEADING_CHARS = 120
MAX_INFERRED_HEADING_WORDS = 16


@dataclass(frozen=True)
class Chunk:
    source: str
    start: int
    end: int
    text: str
    section: tuple[str, ...] = ()
    page: int | None = None
    sentences: tuple[tuple[int, int], ...] = ()  # sentence spans, offsets relative to ``text``
    # Smaller retrieval units inside the chunk (paragraphs, long ones cut at sentences), offsets relative to
    # ``text``; empty when the chunk is a single unit. Each is embedded too, so that a question matching one
    # paragraph of a long section is not diluted by the rest (and nothing is lost to the model's token limit).
    units: tuple[tuple[int, int], ...] = ()
    ocr: bool = False  # the text was read by OCR from a scanned page (it may hold misread words)
    page_unit: str = "page"  # what ``page`` counts: "page", or "slide" for presentations

    @property
    def section_label(self) -> str:
        return SECTION_SEPARATOR.join(self.section)

    @property
    def search_text(self) -> str:
        """The text that is embedded and keyword-indexed: the section trail, then the passage."""
        return f"{self.section_label}\n{self.text}" if self.section else self.text

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "section": list(self.section),
            "page": self.page,
            "sentences": [list(s) for s in self.sentences],
            "units": [list(u) for u in self.units],
            "ocr": self.ocr,
            "page_unit": self.page_unit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chunk:
        return cls(
            source=d["source"],
            start=int(d["start"]),
            end=int(d["end"]),
            text=d["text"],
            section=tuple(d.get("section") or ()),
            page=d.get("page"),
            sentences=tuple((int(a), int(b)) for a, b in d.get("sentences") or ()),
            units=tuple((int(a), int(b)) for a, b in d.get("units") or ()),
            ocr=bool(d.get("ocr", False)),  # chunk tables written before these fields load with the defaults
            page_unit=d.get("page_unit") or "page",
        )

    def unit_search_texts(self) -> list[str]:
        """What is embedded for each unit: the section trail, then the unit's text."""
        prefix = f"{self.section_label}\n" if self.section else ""
        return [prefix + self.text[a:b] for a, b in self.units]


@dataclass(frozen=True)
class _Heading:
    line_start: int  # where the heading's line (markup included) starts: the previous section ends here
    body_start: int  # where the section's body starts (after the heading line)
    level: int
    title: str


def _fenced_ranges(text: str) -> list[tuple[int, int]]:
    """Ranges of fenced code blocks in Markdown, where '#' lines are not headings."""
    ranges, opened = [], None
    for m in _FENCE.finditer(text):
        if opened is None:
            opened = m.start()
        else:
            ranges.append((opened, m.end()))
            opened = None
    if opened is not None:
        ranges.append((opened, len(text)))
    return ranges


def _lines(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each line, end excluding the line break."""
    pos = 0
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        yield pos, pos + len(stripped)
        pos += len(line)


def _markdown_headings(text: str) -> list[_Heading]:
    fenced = _fenced_ranges(text)

    def in_fence(pos: int) -> bool:
        return any(a <= pos < b for a, b in fenced)

    found = []
    for m in _ATX.finditer(text):
        if in_fence(m.start()):
            continue
        title = m.group("title").strip()
        if title:
            found.append(_Heading(m.start(), _next_line(text, m.end()), len(m.group(1)), title))
    # Setext: a paragraph line underlined with === (level 1) or --- (level 2).
    lines = list(_lines(text))
    for (a, b), (c, d) in zip(lines, lines[1:], strict=False):
        under = _SETEXT_UNDERLINE.match(text[c:d])
        title = text[a:b].strip()
        if not under or not title or in_fence(a) or _ATX.match(text[a:b]) or _LIST_MARKER.match(title):
            continue
        if a > 0 and text[max(0, a - 2):a].strip("\r\n") != "" and not text[:a].endswith(("\n\n", "\r\n\r\n")):
            continue  # the underlined line must open a paragraph
        found.append(_Heading(a, _next_line(text, d), 1 if under.group(1)[0] == "=" else 2, title))
    return sorted(found, key=lambda h: h.line_start)


def _next_line(text: str, pos: int) -> int:
    """Offset of the start of the line after ``pos`` (or the end of the text)."""
    nl = text.find("\n", pos)
    return len(text) if nl == -1 else nl + 1


def _looks_like_heading(line: str) -> bool:
    s = line.strip()
    if not s or len(s) > MAX_INFERRED_HEADING_CHARS or len(s.split()) > MAX_INFERRED_HEADING_WORDS:
        return False
    if s.endswith(_CLOSING_PUNCT) or _LIST_MARKER.match(s):
        return False
    return s[0].isalnum() and any(ch.isalpha() for ch in s)


def _inferred_headings(text: str, need_blank_before: bool = False) -> list[_Heading]:
    """Headings in plain text: a short line with no closing punctuation that opens a paragraph, followed by a
    longer line. Lines written as Markdown ATX headings count too (level from the number of hashes)."""
    found = []
    lines = list(_lines(text))
    for i, (a, b) in enumerate(lines):
        line = text[a:b]
        atx = _ATX.match(line)
        if atx:
            found.append(_Heading(a, _next_line(text, b), len(atx.group(1)), atx.group("title").strip()))
            continue
        if not _looks_like_heading(line) or i + 1 >= len(lines):
            continue
        prev_blank = i == 0 or not text[lines[i - 1][0]:lines[i - 1][1]].strip()
        if need_blank_before and not prev_blank:
            continue
        # The previous line must have ended a paragraph (closing punctuation) or be blank.
        if not prev_blank and not text[lines[i - 1][0]:lines[i - 1][1]].rstrip().endswith(_CLOSING_PUNCT):
            continue
        # The next non-blank line must be body text: longer than the heading and not itself a heading.
        j = i + 1
        while j < len(lines) and not text[lines[j][0]:lines[j][1]].strip():
            j += 1
        if j >= len(lines):
            continue
        nxt = text[lines[j][0]:lines[j][1]].strip()
        if len(nxt) <= len(line.strip()) or _looks_like_heading(nxt):
            continue
        found.append(_Heading(a, _next_line(text, b), 1, line.strip()))
    return found


# Formats whose headings are marked in the file (HTML h1-h6, Word heading styles, slide titles, ODF text:h, EPUB
# chapters, an e-mail's subject): the loader records them as spans and no heading is guessed from the text.
MARKED_HEADING_FORMATS = frozenset({"html", "docx", "pptx", "odt", "epub", "eml"})


def _document_headings(doc: Document) -> list[_Heading]:
    if doc.format == "md":
        return _markdown_headings(doc.text)
    if doc.format in MARKED_HEADING_FORMATS or doc.headings:
        return [
            # A heading may hold a line break: its title joins the lines, as a trail is shown on one line.
            _Heading(h.start, _next_line(doc.text, h.end), h.level, " ".join(doc.text[h.start:h.end].split()))
            for h in sorted(doc.headings, key=lambda h: h.start)
        ]
    if doc.format == "pdf":
        return _inferred_headings(doc.text, need_blank_before=True)
    return _inferred_headings(doc.text)


@dataclass(frozen=True)
class Section:
    start: int
    end: int
    trail: tuple[str, ...]
    page: int | None


def sections(doc: Document) -> list[Section]:
    """The document cut at its headings and page breaks; each body excludes its heading line.

    A slide's section is its own title: the trail starts afresh on every slide, so an untitled slide is not
    filed under the title of the slide before it."""
    headings = _document_headings(doc)
    if doc.page_unit == "slide" and doc.pages:
        out: list[Section] = []
        bounds = list(doc.pages) + [len(doc.text)]
        for i in range(len(doc.pages)):
            a, b = bounds[i], bounds[i + 1]
            out.extend(_cut(doc, a, b, [h for h in headings if a <= h.line_start < b]))
    else:
        out = _cut(doc, 0, len(doc.text), headings)
    return [s for s in out if doc.text[s.start:s.end].strip()]


def _cut(doc: Document, start: int, stop: int, headings: list[_Heading]) -> list[Section]:
    out: list[Section] = []
    trail: list[tuple[int, str]] = []  # (level, title)
    cursor = start
    current: tuple[str, ...] = ()
    for h in [*headings, None]:
        end = h.line_start if h else stop
        if end > cursor:
            out.extend(_split_pages(doc, cursor, end, current))
        if h is None:
            break
        while trail and trail[-1][0] >= h.level:
            trail.pop()
        trail.append((h.level, h.title))
        current = tuple(t for _, t in trail)
        cursor = max(cursor, min(h.body_start, stop))
    return out


def _split_pages(doc: Document, start: int, end: int, trail: tuple[str, ...]) -> list[Section]:
    if not doc.pages:
        return [Section(start, end, trail, None)]
    out = []
    bounds = list(doc.pages) + [len(doc.text)]
    for i in range(len(doc.pages)):
        a, b = max(start, bounds[i]), min(end, bounds[i + 1])
        if a < b:
            out.append(Section(a, b, trail, i + 1))
    return out


def sentence_spans(text: str) -> tuple[tuple[int, int], ...]:
    """Sentence spans of ``text`` (relative offsets), whitespace trimmed, never empty."""
    spans, pos = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((pos, m.start() + len(m.group("close") or "")))
        pos = m.end()
    spans.append((pos, len(text)))
    out = []
    for a, b in spans:
        seg = text[a:b]
        a2 = a + (len(seg) - len(seg.lstrip()))
        b2 = b - (len(seg) - len(seg.rstrip()))
        if b2 > a2:
            out.append((a2, b2))
    return tuple(out) or ((0, len(text)),)


MAX_UNIT_CHARS = 700


def unit_spans(text: str, sentences: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Paragraphs of ``text``; a paragraph longer than MAX_UNIT_CHARS is cut into runs of whole sentences.
    Returns () when that leaves a single unit (the chunk itself is the unit)."""
    units: list[tuple[int, int]] = []
    pos = 0
    for para in re.split(r"(\n[ \t]*)+", text):
        start = text.find(para, pos) if para.strip() else -1
        if start == -1 or para.startswith("\n"):
            continue
        end = start + len(para)
        pos = end
        a = start + (len(para) - len(para.lstrip()))
        b = end - (len(para) - len(para.rstrip()))
        if b <= a:
            continue
        if b - a <= MAX_UNIT_CHARS:
            units.append((a, b))
            continue
        run_start: int | None = None
        run_end = a
        for sa, sb in sentences:
            if sb <= a or sa >= b:
                continue
            if run_start is not None and sb - run_start > MAX_UNIT_CHARS:
                units.append((run_start, run_end))
                run_start = None
            if run_start is None:
                run_start = sa
            run_end = sb
        if run_start is not None:
            units.append((run_start, run_end))
    return tuple(units) if len(units) > 1 else ()


class Chunker:
    """Cuts documents into chunks according to ``ChunkSettings``."""

    def __init__(self, settings: ChunkSettings | None = None):
        self.settings = settings or ChunkSettings()
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=self.settings.chunk_size,
            chunk_overlap=self.settings.chunk_overlap,
            separators=["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""],
            keep_separator="end",
            strip_whitespace=True,
        )

    def chunk(self, doc: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        for sec in sections(doc):
            body = doc.text[sec.start:sec.end]
            search_from = 0
            for piece in self._splitter.split_text(body):
                rel = body.find(piece, search_from)
                if rel == -1:  # the splitter only returns verbatim substrings; be safe anyway
                    rel = body.find(piece)
                if rel == -1:
                    continue
                search_from = rel + 1
                start = sec.start + rel
                chunks.append(
                    Chunk(
                        source=doc.source,
                        start=start,
                        end=start + len(piece),
                        text=piece,
                        section=sec.trail,
                        page=sec.page,
                        sentences=(sents := sentence_spans(piece)),
                        units=unit_spans(piece, sents),
                        ocr=doc.is_ocr(sec.page),
                        page_unit=doc.page_unit,
                    )
                )
        return chunks
