"""The records every loader returns (Document, Heading, Skipped), the limits that bound extraction, and the small
helpers the format modules share (NFC, printable names, a text builder that records headings and pages)."""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..config import DEFAULT_MAX_FILE_BYTES as DEFAULT_MAX_BYTES  # defined once, as the setting's default

SUPPORTED = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".odt": "odt",
    ".epub": "epub",
    ".rtf": "rtf",
    ".eml": "eml",
}
MIB = 1024 * 1024

# Between a container's source and an attachment's name: "message.eml › report.pdf". A character no file name on
# the corpus side of the separator can hold with spaces around it by accident, and readable on one line.
ATTACHMENT_SEPARATOR = " \u203a "

# Share of control characters (other than \t \n \r \f) above which decoded text is treated as binary.
MAX_CONTROL_SHARE = 0.10


@dataclass(frozen=True)
class Limits:
    """What one file may cost to extract. Every bound is checked while reading, never only from what a file says
    about itself (zip headers, page counts and attachment lists can lie)."""

    # Text a document may expand to. Compressed formats (PDF streams, zip containers) can turn a small file into
    # gigabytes of text; as much as the size cap allows a .txt is plenty.
    max_text_chars: int = DEFAULT_MAX_BYTES
    # A zip container (.docx .pptx .odt .epub): all members together, and any one member, once uncompressed.
    # Real documents stay far below (a 500-page report's XML is a few tens of MB); images are stored, not inflated.
    max_unzipped_bytes: int = 256 * MIB
    max_member_bytes: int = 128 * MIB
    max_zip_members: int = 10_000
    # E-mail: attachments inside attachments (a forwarded message holding a forwarded message...), and how many
    # attachments one file may yield in all, at every depth together.
    max_attachment_depth: int = 3
    max_attachments: int = 100


@dataclass(frozen=True)
class Heading:
    start: int  # offsets into Document.text of the heading's own text (no markup)
    end: int
    level: int  # 1..9 (HTML 1..6; Word outline levels go to 9)

    def to_dict(self) -> dict[str, int]:
        return {"start": self.start, "end": self.end, "level": self.level}


@dataclass(frozen=True)
class Skipped:
    path: str  # relative POSIX path (an attachment's is "message.eml › name")
    reason: str  # short human reason

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class Document:
    source: str  # path relative to the corpus root, POSIX separators; an attachment's is "a.eml › b.pdf"
    text: str  # extracted text, unicode NFC
    format: str  # a value of SUPPORTED: "txt" "md" "html" "pdf" "docx" "pptx" "odt" "epub" "rtf" "eml"
    sha256: str  # hex sha256 of the file's raw bytes
    pages: tuple[int, ...] = ()  # paged formats (PDF, slides): pages[i] = offset in text where page i+1 starts
    headings: tuple[Heading, ...] = ()  # formats with marked headings (HTML, Word, slides, ODT, EPUB, e-mail)
    warnings: tuple[str, ...] = ()
    page_unit: str = "page"  # what a page is called in a citation: "page", or "slide" for presentations
    ocr_pages: tuple[int, ...] = ()  # 1-based pages whose text was read by OCR from an image
    # 1-based scanned pages not read because OCR was not available (Tesseract or its language data missing); they
    # are also in ``skipped``, with the reason and the command that installs what is missing
    ocr_pending: tuple[int, ...] = ()
    # What a source line can show besides the file name: "title", "author", "from", "to", "date", "subject"
    # (dates ISO 8601 when they could be parsed). Never part of ``text``.
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    attachments: tuple[Document, ...] = ()  # documents found inside this one (e-mail attachments), each complete
    skipped: tuple[Skipped, ...] = ()  # parts that were not read (attachments, scanned pages), with the reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "text": self.text,
            "format": self.format,
            "sha256": self.sha256,
            "pages": list(self.pages),
            "headings": [h.to_dict() for h in self.headings],
            "warnings": list(self.warnings),
            "page_unit": self.page_unit,
            "ocr_pages": list(self.ocr_pages),
            "ocr_pending": list(self.ocr_pending),
            "metadata": dict(self.metadata),
            "attachments": [a.to_dict() for a in self.attachments],
            "skipped": [s.to_dict() for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Document:
        """Inverse of to_dict(); the fields added after the first version may be missing."""
        return cls(
            source=d["source"],
            text=d["text"],
            format=d["format"],
            sha256=d["sha256"],
            pages=tuple(d.get("pages", ())),
            headings=tuple(Heading(h["start"], h["end"], h["level"]) for h in d.get("headings", ())),
            warnings=tuple(d.get("warnings", ())),
            page_unit=d.get("page_unit") or "page",
            ocr_pages=tuple(int(p) for p in d.get("ocr_pages") or ()),
            ocr_pending=tuple(int(p) for p in d.get("ocr_pending") or ()),
            metadata={str(k): str(v) for k, v in (d.get("metadata") or {}).items()},
            attachments=tuple(cls.from_dict(a) for a in d.get("attachments") or ()),
            skipped=tuple(Skipped(s["path"], s["reason"]) for s in d.get("skipped") or ()),
        )

    def page_at(self, offset: int) -> int | None:
        """1-based page containing ``offset`` (paged formats only). The separator after a page belongs to that page.

        Returns None for documents without pages and for offsets outside ``0..len(text)``.
        """
        if not self.pages or offset < 0 or offset > len(self.text):
            return None
        return bisect.bisect_right(self.pages, offset)

    def is_ocr(self, page: int | None) -> bool:
        """Whether the text of ``page`` (1-based) was read by OCR."""
        return page is not None and page in self.ocr_pages

    def walk(self) -> Iterator[Document]:
        """This document, then every attachment (depth first): each one is indexed as a document of its own."""
        yield self
        for a in self.attachments:
            yield from a.walk()

    def walk_skipped(self) -> Iterator[Skipped]:
        """Every part of this document and its attachments that was not read, with the reason."""
        for d in self.walk():
            yield from d.skipped


class SkipFile(Exception):
    """Raised by extract()/load_file() when a file yields no usable text; the message is the reason."""

    @property
    def reason(self) -> str:
        return str(self)


class NotReadable(Exception):
    """``read_bounded`` refused a path: the message is the reason, for a skip list or an error line."""


def size_text(n: int) -> str:
    """A byte count for people: 50 MB, 1.5 KB, 100 bytes."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    if n >= 1024:
        return f"{n / 1024:.1f}".removesuffix(".0") + " KB"
    return f"{n} bytes"


# A character that shows: not whitespace, a control, a format character (zero-width space and joiners, BOM,
# word joiner, bidirectional marks, soft hyphen) or a variation selector. A file without one is empty.
VISIBLE = re.compile(
    r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff]"
)


def nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return msg if len(msg) <= 120 else msg[:117] + "..."


@contextmanager
def read_errors(what: str) -> Iterator[None]:
    """Within it, any error of a format's library becomes SkipFile("could not read <what>: <error>") (those
    libraries raise many types on damaged files; none may escape); a SkipFile passes as it is."""
    try:
        yield
    except SkipFile:
        raise
    except Exception as e:
        raise SkipFile(f"could not read {what}: {short_error(e)}") from e


# Characters a name may not hold: a source is printed as one line of a terminal and must not break the line,
# move the cursor or recolour the screen (C0 and C1 controls other than tab, DEL, the Unicode line and
# paragraph separators), nor reorder what is shown around it (bidirectional embeddings, overrides, isolates).
UNSAFE_NAME_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def shown(s: str) -> str:
    """``s`` made printable on one line and encodable as UTF-8, for skip lists and error messages.

    Bytes of a name that are not valid UTF-8 (which Python carries as lone surrogates) become ``\\xNN``; control
    characters become escapes such as ``\\n``, ``\\x1b`` or ``\\u202e``.
    """
    try:
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a byte (a hand-made string)
        raw = s.encode("utf-8", "backslashreplace")
    return UNSAFE_NAME_CHARS.sub(lambda m: ascii(m.group())[1:-1], raw.decode("utf-8", "backslashreplace"))


_SPACE_RUN = re.compile(r"[ \t\u00a0]+")
_LINE_END_SPACE = re.compile(r"[ \t]+\n")


def clean_block(text: str) -> str:
    """A paragraph's text as it is shown: NFC, line breaks normalised to \\n, no trailing spaces on a line, no
    blank lines inside (a blank line separates blocks), trimmed."""
    text = nfc(text).replace("\r\n", "\n").replace("\r", "\n").replace("\x0b", "\n").replace("\f", "\n")
    text = _LINE_END_SPACE.sub("\n", text)
    text = re.sub(r"\n{2,}", "\n", text)
    return text.strip()


class TextBuilder:
    """Builds a Document's text from blocks, recording heading spans and page starts as it goes, so that offsets
    are exact by construction. Blocks are separated by a blank line, rows of a table by a line break."""

    def __init__(self, limits: Limits, what: str = "text") -> None:
        self.parts: list[str] = []
        self.length = 0
        self.headings: list[Heading] = []
        self.pages: list[int] = []
        self._page_pending = False  # a page was opened and has no text yet: it starts where the next text goes
        self._limit = limits.max_text_chars
        self._what = what

    def block(self, text: str, *, heading: int | None = None, sep: str = "\n\n") -> tuple[int, int] | None:
        """Append a block (paragraph, heading with its level, or with ``sep="\\n"`` a table row).
        Returns its span, or None when it holds nothing visible."""
        text = clean_block(text)
        if not VISIBLE.search(text):
            return None
        start = self._append(text, "\n\n" if self._page_pending else sep)
        if heading is not None:
            self.headings.append(Heading(start, self.length, heading))
        return start, self.length

    def add_text(self, text: str, headings: tuple[Heading, ...] = (), *, level_shift: int = 0) -> None:
        """Append text already made (an HTML chapter, a plain-text body) as it is, with its heading spans."""
        if not VISIBLE.search(text):
            return
        start = self._append(text, "\n\n")
        self.headings.extend(Heading(start + h.start, start + h.end, min(h.level + level_shift, 9)) for h in headings)

    def _append(self, text: str, sep: str) -> int:
        """Append ``text`` after ``sep`` (none at the start), opening a pending page there; returns where it
        starts. Raises SkipFile past the limit."""
        if self.length:
            self.parts.append(sep)
            self.length += len(sep)
        if self._page_pending:
            self.pages[-1] = self.length
            self._page_pending = False
        start = self.length
        self.parts.append(text)
        self.length += len(text)
        if self.length > self._limit:
            raise SkipFile(f"{self._what} longer than {self._limit:,} characters once extracted")
        return start

    def new_page(self) -> None:
        """The next block starts a new page (a slide); a page without text starts where the next one does."""
        self.pages.append(-1)
        self._page_pending = True

    def text(self) -> str:
        return "".join(self.parts)

    def page_starts(self) -> tuple[int, ...]:
        # Pages left empty start where the next page with text starts (or at the end of the text).
        out, nxt = [0] * len(self.pages), self.length
        for i in range(len(self.pages) - 1, -1, -1):
            if self.pages[i] >= 0:
                nxt = self.pages[i]
            out[i] = nxt
        return tuple(out)
