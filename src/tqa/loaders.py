"""Find documents in a corpus folder and turn their bytes into text with stable character offsets.

Every offset the tool cites points into ``Document.text``, so the rules here are strict: plain text and
markdown are kept byte-for-byte (after decoding, BOM removal and NFC), HTML is reduced to readable text with
headings recorded as spans, and PDF text is joined page by page with each page's start offset recorded.
"""

from __future__ import annotations

import bisect
import codecs
import errno
import hashlib
import io
import logging
import os
import re
import stat
import sys
import unicodedata
import warnings
from collections import deque
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any

from tqa.errors import CorpusError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED",
    "Document",
    "Heading",
    "NotReadable",
    "SkipFile",
    "Skipped",
    "discover",
    "extract",
    "load_file",
    "read_bounded",
]

SUPPORTED = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

# Text a PDF may expand to. Its streams are compressed, so a small file within the size cap can expand to
# gigabytes of text (pypdf caps each stream, not their number); as much text as the cap allows a .txt is plenty.
_MAX_PDF_TEXT_CHARS = DEFAULT_MAX_BYTES

# Share of control characters (other than \t \n \r \f) above which decoded text is treated as binary.
_MAX_CONTROL_SHARE = 0.10


# ----------------------------------------------------------------------------------------------------------
# Data types
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    start: int  # offsets into Document.text of the heading's own text (no markup)
    end: int
    level: int  # 1..6

    def to_dict(self) -> dict[str, int]:
        return {"start": self.start, "end": self.end, "level": self.level}


@dataclass(frozen=True)
class Document:
    source: str  # path relative to the corpus root, POSIX separators
    text: str  # extracted text, unicode NFC
    format: str  # "txt" | "md" | "html" | "pdf"
    sha256: str  # hex sha256 of the file's raw bytes
    pages: tuple[int, ...] = ()  # PDF only: pages[i] = offset in text where page i+1 starts
    headings: tuple[Heading, ...] = ()  # HTML only
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "text": self.text,
            "format": self.format,
            "sha256": self.sha256,
            "pages": list(self.pages),
            "headings": [h.to_dict() for h in self.headings],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Document:
        """Inverse of to_dict()."""
        return cls(
            source=d["source"],
            text=d["text"],
            format=d["format"],
            sha256=d["sha256"],
            pages=tuple(d.get("pages", ())),
            headings=tuple(Heading(h["start"], h["end"], h["level"]) for h in d.get("headings", ())),
            warnings=tuple(d.get("warnings", ())),
        )

    def page_at(self, offset: int) -> int | None:
        """1-based page containing ``offset`` (PDF only). The separator after a page belongs to that page.

        Returns None for non-PDF documents and for offsets outside ``0..len(text)``.
        """
        if not self.pages or offset < 0 or offset > len(self.text):
            return None
        return bisect.bisect_right(self.pages, offset)


@dataclass(frozen=True)
class Skipped:
    path: str  # relative POSIX path
    reason: str  # short human reason

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class SkipFile(Exception):
    """Raised by extract()/load_file() when a file yields no usable text; the message is the reason."""

    @property
    def reason(self) -> str:
        return str(self)


# ----------------------------------------------------------------------------------------------------------
# Discovery
# ----------------------------------------------------------------------------------------------------------


def size_text(n: int) -> str:
    """A byte count for people: 50 MB, 1.5 KB, 100 bytes."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    if n >= 1024:
        return f"{n / 1024:.1f}".removesuffix(".0") + " KB"
    return f"{n} bytes"


class NotReadable(Exception):
    """``read_bounded`` refused a path: the message is the reason, for a skip list or an error line."""


def read_bounded(path: str | Path, max_bytes: int, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, checked and read in one step.

    The file is opened first (non-blocking, so a FIFO never makes it wait for a writer) and every check is made
    on the open file, never on the name: a file replaced by a FIFO, a device or a link to /dev/zero after it was
    listed, or grown past the cap, is refused instead of hanging or read without limit. Raises ``NotReadable``
    (not a regular file, a symlink when ``follow_symlinks`` is false, too large) or ``OSError`` (missing,
    permission denied...).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise NotReadable("a symlink, not a regular file") from None
        raise
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotReadable("not a regular file")
        if st.st_size > max_bytes:
            raise NotReadable(f"larger than {size_text(max_bytes)}")
        chunks, total = [], 0
        while total <= max_bytes:  # the size may change after fstat: never read past the cap
            block = f.read(min(1 << 20, max_bytes + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > max_bytes:
            raise NotReadable(f"larger than {size_text(max_bytes)}")
        return b"".join(chunks)


def _unsupported(name: str) -> str:
    ext = PurePosixPath(name).suffix.lower()
    return f"unsupported file type {ext}" if ext else "unsupported file type (no extension)"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# Characters a name may not hold: a source is printed as one line of a terminal and must not break the line,
# move the cursor or recolour the screen (C0 and C1 controls other than tab, DEL, the Unicode line and
# paragraph separators), nor reorder what is shown around it (bidirectional embeddings, overrides, isolates).
_UNSAFE_NAME_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def shown(s: str) -> str:
    """``s`` made printable on one line and encodable as UTF-8, for skip lists and error messages.

    Bytes of a name that are not valid UTF-8 (which Python carries as lone surrogates) become ``\\xNN``; control
    characters become escapes such as ``\\n``, ``\\x1b`` or ``\\u202e``.
    """
    try:
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from a byte (a hand-made string)
        raw = s.encode("utf-8", "backslashreplace")
    return _UNSAFE_NAME_CHARS.sub(lambda m: ascii(m.group())[1:-1], raw.decode("utf-8", "backslashreplace"))


def _name_problem(name: str, kind: str) -> str | None:
    """Why ``name`` cannot be a part of a source, or None.

    A name that is not valid UTF-8 is skipped rather than indexed under a substitute: the source is the citation
    and the name a reader opens the file by (``load_file(source, root)``, the web page's file links), and any
    valid-UTF-8 stand-in either loses information (U+FFFD: two files would share one name) or can collide with a
    real file's name (an escape such as ``caf%E9.txt``). Skipping names the file so it can be renamed.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{kind} name is not valid UTF-8; rename it"
    if _UNSAFE_NAME_CHARS.search(name):
        return f"{kind} name contains control characters; rename it"
    return None


def _unreadable(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "vanished during indexing"
    return f"unreadable: {shown(e.strerror or str(e))}"


def discover(
    root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[list[tuple[str, Path]], list[Skipped]]:
    """Walk ``root`` recursively and sort its files into candidates and skipped ones.

    Returns ``(candidates, skipped)``: candidates are ``(relative posix path, absolute Path)`` for files
    with a supported extension (case-insensitive), sorted by relative path; ``skipped`` lists every other
    file with a reason, also sorted. Hidden files and folders (name starting with '.') are ignored silently.

    Every relative path returned (candidate or skipped) is valid UTF-8 on one line. A candidate's is the file's
    exact name, so it opens the file; a name that is not valid UTF-8 or holds control characters is skipped
    (folders too, with all they contain), and of two names in one folder that differ only in Unicode
    normalisation (NFC and NFD spellings look the same) the NFC one is kept and the other skipped.

    Symlinks are resolved: one pointing outside ``root`` is skipped; one pointing inside is followed, unless
    its target is already part of the corpus through another path (then it is listed as a duplicate, which
    also ends symlink cycles). Real paths are always preferred over paths through symlinks.
    Raises CorpusError if ``root`` is missing, not a folder, or unreadable.
    """
    root_path = Path(root)
    if not root_path.exists():
        raise CorpusError(
            f"Corpus folder '{shown(str(root))}' does not exist. Pass the folder of your documents: tqa index PATH"
        )
    if not root_path.is_dir():
        raise CorpusError(
            f"'{shown(str(root))}' is not a folder. Put your documents in a folder and pass that folder: "
            "tqa index PATH"
        )
    root_abs = root_path.absolute()
    root_real = root_path.resolve()
    try:
        with os.scandir(root_abs):
            pass
    except OSError as e:
        raise CorpusError(
            f"Cannot read corpus folder '{shown(str(root))}': {shown(e.strerror or str(e))}. "
            "Check its permissions and try again."
        ) from e

    candidates: list[tuple[str, Path]] = []
    skipped: list[Skipped] = []
    seen_files: dict[Path, str] = {}  # real path -> relative path it was included under
    seen_dirs: dict[Path, str] = {root_real: "."}
    links: deque[tuple[str, Path]] = deque()  # symlinks found, handled after the real tree

    def add_file(rel: str, path: Path, real: Path, st: os.stat_result) -> None:
        if not _inside(real, root_real):  # a folder on the way was swapped for a symlink while listing
            skipped.append(Skipped(rel, "symlink points outside the corpus"))
        elif real in seen_files:
            skipped.append(Skipped(rel, f"same file as {seen_files[real]} (via symlink)"))
        elif not stat.S_ISREG(st.st_mode):
            skipped.append(Skipped(rel, "not a regular file"))
        elif PurePosixPath(rel).suffix.lower() not in SUPPORTED:
            skipped.append(Skipped(rel, _unsupported(rel)))
        elif st.st_size > max_bytes:
            skipped.append(Skipped(rel, f"larger than {size_text(max_bytes)}"))
        else:
            seen_files[real] = rel
            candidates.append((rel, path))

    def usable(entries: list[os.DirEntry[str]], rel_here: str) -> list[os.DirEntry[str]]:
        """The entries whose names can be sources; the others are listed as skipped."""
        nfc_owner: dict[str, str] = {}  # NFC form -> the name kept for it (its NFC spelling if present)
        for entry in entries:
            key = _nfc(entry.name)
            if key not in nfc_owner or entry.name == key:
                nfc_owner[key] = entry.name
        kept = []
        for entry in entries:
            rel = entry.name if rel_here == "." else f"{rel_here}/{entry.name}"
            try:
                kind = "folder" if entry.is_dir(follow_symlinks=False) else "file"
            except OSError:
                kind = "file"
            problem = _name_problem(entry.name, kind)
            if problem is None and nfc_owner[_nfc(entry.name)] != entry.name:
                twin = nfc_owner[_nfc(entry.name)]
                problem = f"same name as {twin} in another Unicode form; rename one"
            if problem is None:
                kept.append(entry)
            else:
                skipped.append(Skipped(shown(rel), problem))
        return kept

    def walk(rel_dir: str, dir_path: Path) -> None:
        # Breadth-first over real subfolders; symlinks are queued so real paths win over linked ones.
        pending = deque([(rel_dir, dir_path)])
        while pending:
            rel_here, here = pending.popleft()
            try:
                with os.scandir(here) as it:
                    entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
            except OSError as e:
                skipped.append(Skipped(rel_here, _unreadable(e)))
                continue
            for entry in usable(entries, rel_here):
                rel = entry.name if rel_here == "." else f"{rel_here}/{entry.name}"
                path = here / entry.name
                try:
                    if entry.is_symlink():
                        links.append((rel, path))
                    elif entry.is_dir(follow_symlinks=False):
                        real = path.resolve()
                        if not _inside(real, root_real):  # as in add_file
                            skipped.append(Skipped(rel, "symlink points outside the corpus"))
                        elif real in seen_dirs:  # reachable only below a followed symlink
                            skipped.append(Skipped(rel, f"same folder as {seen_dirs[real]} (via symlink)"))
                        else:
                            seen_dirs[real] = rel
                            pending.append((rel, path))
                    else:
                        add_file(rel, path, path.resolve(), entry.stat(follow_symlinks=False))
                except OSError as e:
                    skipped.append(Skipped(rel, _unreadable(e)))

    walk(".", root_abs)
    while links:
        rel, path = links.popleft()
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # broken link, or a loop of links resolving to nothing
            skipped.append(Skipped(rel, "broken symlink"))
            continue
        if not _inside(real, root_real):
            skipped.append(Skipped(rel, "symlink points outside the corpus"))
            continue
        try:
            st = real.stat()
        except OSError as e:
            skipped.append(Skipped(rel, _unreadable(e)))
            continue
        if not stat.S_ISDIR(st.st_mode):
            add_file(rel, path, real, st)
        elif real in seen_dirs:  # also what ends symlink cycles
            skipped.append(Skipped(rel, f"same folder as {seen_dirs[real]} (via symlink)"))
        else:
            seen_dirs[real] = rel
            walk(rel, path)

    candidates.sort(key=lambda c: c[0])
    skipped.sort(key=lambda s: s.path)
    return candidates, skipped


# ----------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------

# UTF-32 BOMs first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CONTROL_CHARS = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\t\n\r\f")
_DELETE_CONTROLS = str.maketrans("", "", _CONTROL_CHARS)
# A character that shows: not whitespace, a control, a format character (zero-width space and joiners, BOM,
# word joiner, bidirectional marks, soft hyphen) or a variation selector. A file without one is empty.
_VISIBLE = re.compile(
    r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufe00-\ufe0f\ufeff]"
)
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def _nfc(text: str) -> str:
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


# Python codecs a page may name that are not character encodings of web pages: escape decoders would turn the
# page's backslashes into other characters. (Byte transforms such as rot13 or base64 are refused by decode().)
_NOT_PAGE_ENCODINGS = frozenset({"unicode-escape", "raw-unicode-escape", "undefined", "utf-7", "idna", "punycode"})


def _meta_charset(data: bytes) -> str | None:
    """Codec name declared by a <meta charset> / http-equiv tag near the top of an HTML file, if usable."""
    m = _META_CHARSET.search(data[:4096])
    if not m:
        return None
    try:
        name = codecs.lookup(m.group(1).decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return None
    if name in _NOT_PAGE_ENCODINGS:
        return None
    if name in ("utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32"):
        return None  # already tried / impossible without a BOM
    if name in ("latin-1", "iso8859-1", "ascii"):
        return "cp1252"  # as browsers do (WHATWG encoding standard)
    return name


_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of a byte that is not UTF-8
# A text with at least this many well-formed non-ASCII UTF-8 characters per undecodable byte is UTF-8 with
# damage (a stray byte, a cut at the end), not another encoding: text in cp1252 or latin-1 almost never forms a
# valid multi-byte UTF-8 sequence, while decoding damaged UTF-8 as cp1252 would garble every accent in it.
_UTF8_GOOD_PER_BAD = 4


def _damaged_utf8(data: bytes) -> tuple[str, int] | None:
    """``data`` decoded as UTF-8 with its few undecodable bytes replaced by U+FFFD, if it is mostly UTF-8."""
    text = data.decode("utf-8", "surrogateescape")
    without_bad = _UNDECODABLE.sub("", text)
    bad = len(text) - len(without_bad)
    good = len(without_bad) - len(without_bad.encode("ascii", "ignore"))  # well-formed non-ASCII characters
    if good < _UTF8_GOOD_PER_BAD * bad:
        return None
    return _UNDECODABLE.sub("\ufffd", text), bad


def _decode(data: bytes, *, html: bool = False) -> tuple[str, list[str]]:
    """Decode text bytes: BOM, then strict UTF-8, then <meta charset> (HTML), UTF-8 with a few damaged bytes,
    cp1252, latin-1."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec), []
            except UnicodeDecodeError as e:
                raise SkipFile(f"could not decode text (invalid {codec.upper()})") from e
    if b"\x00" in data:
        raise SkipFile("binary content")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    declared = _meta_charset(data) if html else None
    if declared and declared != "cp1252":
        try:
            note = f"decoded as {declared} (declared in <meta charset>; not valid UTF-8)"
            return data.decode(declared), [note]
        except (UnicodeError, LookupError):  # LookupError: a byte transform (base64, zlib), not a text codec
            pass
    damaged = _damaged_utf8(data)
    if damaged:
        text, bad = damaged
        s = "" if bad == 1 else "s"
        return text, [f"decoded as UTF-8 with {bad} undecodable byte{s} replaced (not valid UTF-8)"]
    try:
        return data.decode("cp1252"), ["decoded as cp1252 (not valid UTF-8)"]
    except UnicodeDecodeError:
        return data.decode("latin-1"), ["decoded as latin-1 (not valid UTF-8)"]


def _decode_checked(data: bytes, *, html: bool = False) -> tuple[str, list[str]]:
    text, notes = _decode(data, html=html)
    if not _VISIBLE.search(text):
        raise SkipFile("empty file" if not text.strip() else "empty file (only invisible characters)")
    controls = len(text) - len(text.translate(_DELETE_CONTROLS))
    if controls > _MAX_CONTROL_SHARE * len(text):
        raise SkipFile("binary content")
    return text, notes


# ----------------------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------------------

_HTML_WS = " \t\n\r\f"  # HTML whitespace; deliberately excludes U+00A0 (&nbsp;)
_HTML_WS_RUN = re.compile(r"[ \t\n\r\f]+")
# Elements whose content is not readable text. <title> is listed so it is dropped even without a <head>.
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "title"})
# Page furniture, left out like hidden content: navigation, sidebars, footers (the page's, and an article's
# tags-and-share line) and form controls, whose labels ("Go", "Copy link") and option lists are not text.
# A <form> is kept: some sites wrap the whole page in one.
_BOILERPLATE_TAGS = frozenset({"nav", "aside", "footer", "button", "select", "datalist", "textarea"})
# The same by ARIA role (any token of the role attribute).
_BOILERPLATE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
# A <header> inside these is the section's or article's own header (its heading, byline), not the page's
# banner, and is kept (HTML-AAM: header is a banner only when not scoped to one of these).
_SECTIONING_TAGS = frozenset({"article", "aside", "main", "nav", "section"})
_SECTIONING_ROLES = frozenset({"article", "main", "region", "complementary", "navigation"})
# Elements that may appear in <head>; any other start tag closes an unterminated <head>, as browsers do.
_HEAD_TAGS = frozenset({"title", "meta", "link", "base", "style", "script", "noscript", "template"})
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param", "source",
     "track", "wbr"}
)  # fmt: skip
_PARAGRAPH_TAGS = frozenset(
    {
        "p", "div", "section", "article", "blockquote", "pre", "table", "header", "footer", "nav", "hr",
        "main", "aside", "figure", "figcaption", "address", "dl", "form", "fieldset", "details", "summary",
        "caption", "body", "h1", "h2", "h3", "h4", "h5", "h6",
    }
)  # fmt: skip
_LINE_TAGS = frozenset({"li", "tr", "dt", "dd"})
_LIST_TAGS = frozenset({"ul", "ol"})
_CELL_TAGS = frozenset({"td", "th"})
_CELL_SEPARATOR = " | "  # between the cells of a table row, so a row reads as one line: "Spain | 340 | 88%"
_HEADING_LEVELS = {f"h{i}": i for i in range(1, 7)}
# A start tag closes these when one of them is the innermost open element (an unclosed <p>, <li>, <td>...),
# as browsers do; it keeps the open-element stack as shallow as the page's real nesting.
_CLOSED_BY = {
    "p": frozenset({"p"}),
    "li": frozenset({"li", "p"}),
    "dt": frozenset({"dt", "dd", "p"}),
    "dd": frozenset({"dt", "dd", "p"}),
    "tr": frozenset({"td", "th", "tr"}),
    "td": frozenset({"td", "th"}),
    "th": frozenset({"td", "th"}),
    "option": frozenset({"option"}),
    **{h: frozenset({"p", *_HEADING_LEVELS}) for h in _HEADING_LEVELS},
    **{t: frozenset({"p"}) for t in _PARAGRAPH_TAGS | _LIST_TAGS if t not in _HEADING_LEVELS},
}
# Open elements tracked at most; deeper ones (only in broken or hostile markup) are not pushed, so matching an
# end tag never searches more than this.
_MAX_OPEN = 512


class _HTMLText(HTMLParser):
    """Collects readable text. Breaks and spaces are kept pending and only written before the next text,
    so nothing ever has to be removed from the output and recorded offsets stay valid.

    Open elements are kept on a stack, so an element whose content is left out (script, navigation, a page
    footer...) ends where the browser would end it: at its own end tag, or at the end tag of an element that
    encloses it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.pending_break = 0  # newlines to write before the next text (0, 1 or 2)
        self.pending_ws = ""  # whitespace (or a cell separator) to write before the next text if no break
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, a header inside it is not a banner)
        self.open_count: dict[str, int] = {}  # open elements by tag, so an end tag matching none costs nothing
        self.drop_at: int | None = None  # stack index of the element whose content is being left out
        self.pre_depth = 0
        self.pre_fresh = False  # right after <pre>: a leading newline is dropped
        self.list_depth = 0
        self.row_has_text = False  # the current table row has text: the next cell starts with a separator
        self.open_headings: list[list[Any]] = []  # [stack index, level, start or None]
        self.headings: list[Heading] = []

    def _break(self, n: int) -> None:
        self.pending_break = max(self.pending_break, n)
        self.pending_ws = ""

    def _write(self, s: str) -> None:
        if self.length:
            sep = "\n" * self.pending_break if self.pending_break else self.pending_ws
            if sep:
                self.parts.append(sep)
                self.length += len(sep)
        for h in self.open_headings:
            if h[2] is None:
                h[2] = self.length
        self.parts.append(s)
        self.length += len(s)
        self.pending_break = 0
        self.pending_ws = ""
        self.row_has_text = True

    # -- the open-element stack

    def _left_out(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP_TAGS:
            return True
        names = {name for name, _ in attrs}
        if "hidden" in names:
            return True
        roles = set((dict(attrs).get("role") or "").lower().split())
        if roles & _BOILERPLATE_ROLES:
            return True
        if tag == "footer":  # a quotation's footer names its source
            return not any(t == "blockquote" for t, _ in self.stack)
        if tag == "header":
            return not any(scoping for _, scoping in self.stack)
        return tag in _BOILERPLATE_TAGS

    def _in_open_head(self) -> bool:
        """An unterminated <head> is the innermost open element (and so the one being left out)."""
        return self.drop_at is not None and self.drop_at == len(self.stack) - 1 and self.stack[-1][0] == "head"

    def _push(self, tag: str, scoping: bool) -> None:
        self.stack.append((tag, scoping))
        self.open_count[tag] = self.open_count.get(tag, 0) + 1

    def _pop_to(self, index: int) -> None:
        """Close the element at ``index`` and every element opened inside it."""
        while len(self.stack) > index:
            tag, _ = self.stack.pop()
            self.open_count[tag] -= 1
            depth = len(self.stack)
            if self.drop_at is not None:
                if depth == self.drop_at:
                    self.drop_at = None
                    if tag in _PARAGRAPH_TAGS:
                        self._break(2)  # what came before and after a left-out block stay apart
                continue
            self._end_effect(tag, depth)

    def _end_effect(self, tag: str, depth: int | None) -> None:
        if tag in _HEADING_LEVELS and depth is not None:
            for i in range(len(self.open_headings) - 1, -1, -1):
                if self.open_headings[i][0] == depth:
                    _, level, start = self.open_headings.pop(i)
                    if start is not None and self.length > start:
                        self.headings.append(Heading(start, self.length, level))
                    break
        if tag in _LIST_TAGS:
            if depth is not None:
                self.list_depth = max(self.list_depth - 1, 0)
            self._break(1 if self.list_depth else 2)
        elif tag in _CELL_TAGS:
            if not self.pending_ws:
                self.pending_ws = " "
        elif tag in _LINE_TAGS:
            self._break(1)
        elif tag in _PARAGRAPH_TAGS:
            if tag == "pre" and depth is not None:
                self.pre_depth = max(self.pre_depth - 1, 0)
            self._break(2)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.drop_at is not None:
            if self._in_open_head() and tag not in _HEAD_TAGS:
                self._pop_to(self.drop_at)  # implicit </head>
            else:
                if tag not in _VOID_TAGS and len(self.stack) < _MAX_OPEN:
                    self._push(tag, False)
                return
        closes = _CLOSED_BY.get(tag)
        if closes and self.stack and self.stack[-1][0] in closes:
            self._pop_to(len(self.stack) - 1)
            if tag == "tr" and self.stack and self.stack[-1][0] == "tr":  # <tr><td>a<tr>: the cell, then the row
                self._pop_to(len(self.stack) - 1)
        pushed = tag not in _VOID_TAGS and len(self.stack) < _MAX_OPEN
        if pushed:
            roles = set((dict(attrs).get("role") or "").lower().split())
            self._push(tag, tag in _SECTIONING_TAGS or bool(roles & _SECTIONING_ROLES))
        if self._left_out(tag, attrs):
            if tag in _PARAGRAPH_TAGS:
                self._break(2)
            if pushed:
                self.drop_at = len(self.stack) - 1
            return
        if tag == "br":
            self.pending_break = min(self.pending_break + 1, 2)
            self.pending_ws = ""
        elif tag in _LIST_TAGS:
            self._break(1 if self.list_depth else 2)
            self.list_depth += 1
        elif tag in _CELL_TAGS:
            if self.row_has_text and not self.pending_break:
                self.pending_ws = _CELL_SEPARATOR
        elif tag in _LINE_TAGS:
            self._break(1)
            if tag == "tr":
                self.row_has_text = False
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
            if tag == "pre":
                self.pre_depth += 1
                self.pre_fresh = True
            elif tag in _HEADING_LEVELS and pushed:
                self.open_headings.append([len(self.stack) - 1, _HEADING_LEVELS[tag], None])

    def handle_endtag(self, tag: str) -> None:
        # An end tag closes the innermost open element of its name (for a heading, of any level, as browsers
        # do), with everything opened inside it; one matching nothing open is ignored, but for its break.
        wanted = _HEADING_LEVELS if tag in _HEADING_LEVELS else (tag,)
        if any(self.open_count.get(t) for t in wanted):  # then the search below ends where the closing starts
            for i in range(len(self.stack) - 1, -1, -1):
                if self.stack[i][0] in wanted:
                    self._pop_to(i)
                    return
        if self.drop_at is None:
            self._end_effect(tag, None)

    def handle_data(self, data: str) -> None:
        if self.drop_at is not None and data.strip(_HTML_WS) and self._in_open_head():
            self._pop_to(self.drop_at)  # text in an unterminated <head> starts the body, as browsers do
        if self.drop_at is not None or not data:
            return
        data = _nfc(data)
        if self.pre_depth:
            data = data.replace("\r\n", "\n").replace("\r", "\n")
            if self.pre_fresh:
                data = data.removeprefix("\n")
                self.pre_fresh = False
            body = data.rstrip(_HTML_WS)  # leading indentation is kept, trailing whitespace held back
            if body:
                self._write(body)  # preceded by the pending break, or by held-back whitespace
                self.pending_ws = data[len(body) :]
            elif not self.pending_break:
                self.pending_ws += data
            return
        collapsed = _HTML_WS_RUN.sub(" ", data)
        core = collapsed.strip(" ")
        if collapsed.startswith(" ") and not self.pending_break and not self.pending_ws:
            self.pending_ws = " "
        if core:
            self._write(core)
            if collapsed.endswith(" "):
                self.pending_ws = " "


def _extract_html(data: bytes) -> tuple[str, tuple[Heading, ...], list[str]]:
    raw, notes = _decode_checked(data, html=True)
    parser = _HTMLText()
    try:
        parser.feed(raw)
        parser.close()
    except Exception as e:  # html.parser is lenient, but never let a parser bug abort indexing
        raise SkipFile(f"could not parse HTML: {e}") from e
    text = "".join(parser.parts)
    spans = [(h.start, h.end, h.level) for h in sorted(parser.headings, key=lambda h: h.start)]

    # Chunks are NFC already; composition across chunk boundaries is possible, so check the whole.
    if not unicodedata.is_normalized("NFC", text):
        spans = [(len(_nfc(text[:start])), len(_nfc(text[:end])), lv) for start, end, lv in spans]
        text = unicodedata.normalize("NFC", text)
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    headings = []
    for start, end, lv in spans:
        start, end = max(start - lead, 0), min(end - lead, len(stripped))
        if end > start:
            headings.append(Heading(start, end, lv))
    return stripped, tuple(headings), notes


# ----------------------------------------------------------------------------------------------------------
# PDF
# ----------------------------------------------------------------------------------------------------------


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return msg if len(msg) <= 120 else msg[:117] + "..."


def _extract_pdf(data: bytes) -> tuple[str, tuple[int, ...]]:
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
                        raise SkipFile(f"encrypted PDF could not be opened ({_short(e)})") from e
                    if not opened:
                        raise SkipFile("encrypted PDF (needs a password)")
                texts, total = [], 0
                for page in reader.pages:
                    texts.append(_nfc(page.extract_text() or "").rstrip())
                    total += len(texts[-1])
                    if total > _MAX_PDF_TEXT_CHARS:  # stop before the next page, not after the last
                        raise SkipFile(
                            f"PDF text longer than {_MAX_PDF_TEXT_CHARS:,} characters once decompressed"
                        )
            except SkipFile:
                raise
            except Exception as e:  # pypdf raises many types on damaged files; none may escape
                raise SkipFile(f"could not read PDF: {_short(e)}") from e
    finally:
        logger.setLevel(old_level)

    if not any(_VISIBLE.search(t) for t in texts):
        raise SkipFile("PDF has no extractable text (scanned? run OCR first)")
    pages: list[int] = []
    offset = 0
    for t in texts:
        pages.append(offset)
        offset += len(t) + 2  # "\n\n" separator
    return "\n\n".join(texts), tuple(pages)


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------


def extract(source: str, data: bytes) -> Document:
    """Turn a file's raw bytes into a Document by the extension of ``source``; raises SkipFile(reason)."""
    ext = PurePosixPath(source).suffix.lower()
    fmt = SUPPORTED.get(ext)
    if fmt is None:
        raise SkipFile(_unsupported(source))
    if not data:
        raise SkipFile("empty file")
    digest = hashlib.sha256(data).hexdigest()

    if fmt == "pdf":
        text, pages = _extract_pdf(data)
        return Document(source, text, fmt, digest, pages=pages)
    if fmt == "html":
        text, headings, notes = _extract_html(data)
        if not _VISIBLE.search(text):
            raise SkipFile("HTML has no readable text")
        return Document(source, text, fmt, digest, headings=headings, warnings=tuple(notes))
    text, notes = _decode_checked(data)
    return Document(source, _nfc(text), fmt, digest, warnings=tuple(notes))


def load_file(path: str | Path, root: str | Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES) -> Document:
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
    return extract(source, data)
