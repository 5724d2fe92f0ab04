"""Rich Text Format (.rtf), read with striprtf: the text in order, with its code page honoured; pictures, fonts,
styles and other destinations left out. RTF marks no headings reliably, so sections are inferred as in plain text.
"""

from __future__ import annotations

import re

from .base import VISIBLE, Document, Limits, SkipFile, nfc, short_error
from .zipped import not_this_format

_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_LINE_END_SPACE = re.compile(r"[ \t]+\n")


def extract_rtf(source: str, data: bytes, digest: str, limits: Limits) -> Document:
    if not data.lstrip(b"\r\n\t ").startswith(b"{\\rtf"):
        raise not_this_format(".rtf", data)
    try:
        from striprtf.striprtf import rtf_to_text
    except ImportError as e:
        raise SkipFile("RTF support needs striprtf (pip install striprtf)") from e
    try:
        # RTF is 7-bit text: other characters come as \'xx or \uN escapes, which striprtf decodes by the code page
        # the file declares. Stray 8-bit bytes are read as the Windows code page most RTF writers use.
        text = rtf_to_text(data.decode("cp1252", "replace"), errors="replace")
    except Exception as e:
        raise SkipFile(f"could not read .rtf: {short_error(e)}") from e
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _LINE_END_SPACE.sub("\n", text)
    text = nfc(_BLANK_RUN.sub("\n\n", text)).strip()
    if len(text) > limits.max_text_chars:
        raise SkipFile(f"text longer than {limits.max_text_chars:,} characters once extracted")
    if not VISIBLE.search(text):
        raise SkipFile(".rtf has no readable text")
    return Document(source, text, "rtf", digest)
