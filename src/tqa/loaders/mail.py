"""E-mail messages (.eml, RFC 5322 / MIME), read with the standard library's ``email`` package.

The subject is the document's heading (so its section), the body follows: the plain-text part, or the HTML part
through tqa's HTML reader (its headings nested under the subject). Sender, recipients, date and subject are kept as
metadata for the source line, never mixed into the text. Attachments of a supported type are extracted as
documents of their own, with a source such as ``message.eml › report.pdf``; a forwarded message is an attachment
like any other. Attachments inside attachments are read to ``Limits.max_attachment_depth`` levels, and at most
``Limits.max_attachments`` of them per file at every depth together; the others are listed as skipped, with why.
"""

from __future__ import annotations

import binascii
import mimetypes
import quopri
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import PurePosixPath

from .base import (
    ATTACHMENT_SEPARATOR,
    SUPPORTED,
    VISIBLE,
    Document,
    Limits,
    SkipFile,
    Skipped,
    TextBuilder,
    nfc,
    short_error,
    shown,
)
from .html import html_text
from .text import decode

_HEADERS = ("from", "to", "cc", "date", "subject", "message-id", "mime-version", "received", "return-path")
_MAX_MULTIPART_NESTING = 64  # multipart inside multipart: real mail nests 3 or 4 deep
_LINE_END_SPACE = re.compile(r"[ \t]+\n")
_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_NAME_UNSAFE = re.compile(r"[/\\\u203a]")

ExtractChild = Callable[[str, bytes, Limits, int], Document]


@dataclass
class Budget:
    """What one file's attachments may still use, at every depth together."""

    attachments: int
    chars: int
    over: int = 0  # attachments found past the count


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a header the parser could not make sense of
        return ""
    return " ".join(shown(str(value)).split()) if value is not None else ""


def _metadata(msg: Message) -> dict[str, str]:
    meta = {}
    for key in ("from", "to", "cc", "subject"):
        value = _header(msg, key)
        if value:
            meta[key] = value
    date = _header(msg, "date")
    if date:
        try:
            meta["date"] = parsedate_to_datetime(date).isoformat()
        except (TypeError, ValueError, IndexError, OverflowError):
            meta["date"] = date
    return meta


def _part_text(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    except Exception:  # an unknown charset, a damaged transfer encoding
        pass
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes) or not raw:
        return ""
    try:
        return decode(raw, html=part.get_content_subtype() == "html")[0]
    except SkipFile:
        return ""


def _plain(text: str) -> str:
    text = nfc(text).replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_RUN.sub("\n\n", _LINE_END_SPACE.sub("\n", text)).strip()


def _attachments(part: Message, body: Message | None, depth: int = 0) -> Iterator[Message]:
    """The parts of a message that are attachments, in order; a forwarded message is one part."""
    if part is body:
        return
    if part.get_content_maintype() == "multipart":
        if depth >= _MAX_MULTIPART_NESTING:
            return
        payload = part.get_payload()
        for sub in payload if isinstance(payload, list) else ():
            if isinstance(sub, Message):
                yield from _attachments(sub, body, depth + 1)
        return
    if depth == 0:
        return  # a single-part message: its only part is the body
    if part.get_content_type() == "message/rfc822":
        yield part
        return
    try:
        disposition = part.get_content_disposition()
        filename = part.get_filename()
    except Exception:
        disposition, filename = None, None
    if disposition == "attachment" or (filename and not (disposition == "inline" and part.get_content_maintype()
                                                          == "image")):
        yield part


def _name(part: Message, n: int, taken: set[str]) -> str:
    try:
        filename = part.get_filename() or ""
    except Exception:
        filename = ""
    name = " ".join(_NAME_UNSAFE.sub("_", shown(filename)).split()).lstrip(".")
    if not name:
        ctype = part.get_content_type()
        ext = ".eml" if ctype == "message/rfc822" else (mimetypes.guess_extension(ctype) or "")
        name = f"attachment-{n}{ext}"
    stem, suffix, i = PurePosixPath(name).stem, PurePosixPath(name).suffix, 2
    unique = name
    while unique in taken:
        unique = f"{stem} ({i}){suffix}"
        i += 1
    taken.add(unique)
    return unique


def _payload(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        msg = inner[0] if isinstance(inner, list) and inner else None
        if not isinstance(msg, Message):
            return b""
        encoding = str(part.get("content-transfer-encoding") or "").strip().lower()
        if encoding in ("base64", "quoted-printable") and not msg.keys():
            # A forwarded message sent encoded (the standard says not to, some mailers do): the parser read the
            # encoded text as a message without headers. Decode it, and read that.
            return _decoded(str(msg.get_payload()), encoding)
        return msg.as_bytes(policy=policy.compat32.clone(linesep="\n"))
    raw = part.get_payload(decode=True)
    return raw if isinstance(raw, bytes) else b""


def _decoded(text: str, encoding: str) -> bytes:
    try:
        raw = text.encode("ascii", "replace")
        return binascii.a2b_base64(raw) if encoding == "base64" else quopri.decodestring(raw)
    except (binascii.Error, ValueError):
        return b""


def extract_eml(source: str, data: bytes, digest: str, limits: Limits, child: ExtractChild, depth: int,
                budget: Budget) -> Document:
    try:
        msg = BytesParser(policy=policy.default).parsebytes(data)
    except Exception as e:
        raise SkipFile(f"could not read e-mail: {short_error(e)}") from e
    keys = {k.lower() for k in msg.keys()}
    if not keys & set(_HEADERS):
        raise SkipFile("not an e-mail message (no From, To, Subject or Date header)")
    meta = _metadata(msg)

    b = TextBuilder(limits)
    if meta.get("subject"):
        b.block(meta["subject"], heading=1)
    body = _body(msg)
    if body is not None:
        text = _part_text(body)
        if body.get_content_subtype() == "html":
            html, headings = html_text(text)
            b.add_text(html, headings, level_shift=1)
        else:
            b.add_text(_plain(text))

    budget.chars -= b.length  # the message's own text and its attachments' share one cap
    attachments: list[Document] = []
    skipped: list[Skipped] = []
    taken: set[str] = set()
    for n, part in enumerate(_attachments(msg, body), 1):
        if budget.attachments <= 0:
            budget.over += 1
            continue
        budget.attachments -= 1
        name = _name(part, n, taken)
        found = _attachment(f"{source}{ATTACHMENT_SEPARATOR}{name}", PurePosixPath(name).suffix.lower(), part,
                            limits, child, depth, budget)
        if isinstance(found, Skipped):
            skipped.append(found)
        else:
            budget.chars -= sum(len(d.text) for d in found.walk())
            attachments.append(found)
    if depth == 0 and budget.over:
        s = "" if budget.over == 1 else "s"
        skipped.append(Skipped(f"{source}{ATTACHMENT_SEPARATOR}…", f"{budget.over:,} more attachment{s} not read "
                               f"(at most {limits.max_attachments:,} per file)"))

    if not VISIBLE.search(b.text()) and not attachments:
        raise SkipFile("e-mail has no readable text" + (f" ({len(skipped)} attachment(s) skipped)" if skipped
                                                        else ""))
    return Document(source, b.text(), "eml", digest, headings=tuple(b.headings), metadata=meta,
                    attachments=tuple(attachments), skipped=tuple(skipped))


def _body(msg: Message) -> Message | None:
    """The message's text part (plain preferred over HTML), or None."""
    body: Message | None = None
    try:
        body = msg.get_body(preferencelist=("plain", "html")) if isinstance(msg, EmailMessage) else None
    except Exception:
        body = None
    if body is None and msg.get_content_maintype() == "text":
        body = msg
    return body


def _attachment(child_source: str, ext: str, part: Message, limits: Limits, child: ExtractChild, depth: int,
                budget: Budget) -> Document | Skipped:
    """One attachment (its extension ``ext``) read as a document of its own, or why it was not."""
    if ext not in SUPPORTED:
        return Skipped(child_source, f"unsupported file type {ext}" if ext else "unsupported file type (no extension)")
    if depth + 1 > limits.max_attachment_depth:
        return Skipped(child_source, f"attachment nested more than {limits.max_attachment_depth} levels deep, "
                                     "not read")
    if budget.chars <= 0:
        return Skipped(child_source, f"the file's text passed {limits.max_text_chars:,} characters")
    try:
        payload = _payload(part)
        return child(child_source, payload, replace(limits, max_text_chars=budget.chars), depth + 1)
    except SkipFile as e:
        return Skipped(child_source, e.reason)
    except Exception as e:  # never let one attachment stop the message
        return Skipped(child_source, f"could not read attachment: {short_error(e)}")
