"""Decoding text files: BOMs, UTF-8 (whole or slightly damaged), a page's declared charset, cp1252, latin-1."""

from __future__ import annotations

import codecs
import re

from .base import MAX_CONTROL_SHARE, VISIBLE, SkipFile

# UTF-32 BOMs first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CONTROL_CHARS = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)] if chr(c) not in "\t\n\r\f")
_DELETE_CONTROLS = str.maketrans("", "", _CONTROL_CHARS)
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


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


def decode(data: bytes, *, html: bool = False) -> tuple[str, list[str]]:
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


def decode_checked(data: bytes, *, html: bool = False) -> tuple[str, list[str]]:
    text, notes = decode(data, html=html)
    if not VISIBLE.search(text):
        raise SkipFile("empty file" if not text.strip() else "empty file (only invisible characters)")
    controls = len(text) - len(text.translate(_DELETE_CONTROLS))
    if controls > MAX_CONTROL_SHARE * len(text):
        raise SkipFile("binary content")
    return text, notes
