"""EPUB (2 and 3): the zip read within budget, the package document's spine in order, each chapter through the same
HTML handling as .html files (its h1-h6 become the section trail). A chapter without a heading of its own is
headed by its entry in the book's table of contents, when it has one.

No EPUB library is used to read: the format is a zip of XHTML files listed in an XML package document, which the
standard library and tqa's HTML reader handle, and the libraries that exist read every member into memory
unchecked (or are AGPL-licensed).
"""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
import zipfile
from urllib.parse import unquote

from .base import Document, Heading, Limits, SkipFile, TextBuilder, clean_block, short_error
from .html import html_text
from .text import decode
from .zipped import check_kind, open_zip, read_member

_FONT_OBFUSCATION = ("http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC")
_CHAPTER_TYPES = ("application/xhtml+xml", "text/html", "application/xml")


def _xml(data: bytes | None, what: str) -> ET.Element:
    if data is None:
        raise SkipFile(f"not an EPUB: {what} is missing")
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise SkipFile(f"damaged .epub: {what} is not well-formed XML ({short_error(e)})") from e


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _join(base_dir: str, href: str) -> str:
    path = unquote(href.split("#", 1)[0])
    return posixpath.normpath(posixpath.join(base_dir, path)) if base_dir else posixpath.normpath(path)


def _toc_labels(zf: object, opf_dir: str, manifest: dict[str, tuple[str, str, str]], spine_toc: str | None,
                ) -> dict[str, str]:
    """Chapter path -> its first label in the table of contents (EPUB 3 nav, else EPUB 2 NCX)."""
    labels: dict[str, str] = {}
    nav = next((href for href, _, props in manifest.values() if "nav" in props.split()), None)
    ncx = manifest.get(spine_toc or "", (None, "", ""))[0] or next(
        (href for href, mt, _ in manifest.values() if mt == "application/x-dtbncx+xml"), None)
    try:
        if nav:
            path = _join(opf_dir, nav)
            root = ET.fromstring(read_member(zf, path) or b"")  # type: ignore[arg-type]
            for a in root.iter():
                if _local(a.tag) == "a" and a.get("href"):
                    label = " ".join("".join(a.itertext()).split())
                    if label:
                        labels.setdefault(_join(posixpath.dirname(path), a.get("href", "")), label)
        elif ncx:
            path = _join(opf_dir, ncx)
            root = ET.fromstring(read_member(zf, path) or b"")  # type: ignore[arg-type]
            for point in root.iter():
                if _local(point.tag) != "navPoint":
                    continue
                text = next((t for t in point.iter() if _local(t.tag) == "text"), None)
                content = next((c for c in point.iter() if _local(c.tag) == "content"), None)
                if text is not None and content is not None and content.get("src"):
                    label = " ".join("".join(text.itertext()).split())
                    if label:
                        labels.setdefault(_join(posixpath.dirname(path), content.get("src", "")), label)
    except (ET.ParseError, TypeError):
        pass  # a damaged table of contents costs the fallback headings only
    return labels


def extract_epub(source: str, data: bytes, digest: str, limits: Limits) -> Document:
    zf = open_zip(data, ".epub", limits)
    if read_member(zf, "META-INF/container.xml") is None:
        check_kind(zf, ".epub", "an EPUB book (.epub)")
    container = _xml(read_member(zf, "META-INF/container.xml"), "META-INF/container.xml")
    rootfile = next((el.get("full-path") for el in container.iter() if _local(el.tag) == "rootfile"), None)
    if not rootfile:
        raise SkipFile("not an EPUB: META-INF/container.xml names no package document")
    opf_path = posixpath.normpath(rootfile)
    opf = _xml(read_member(zf, opf_path), opf_path)
    opf_dir = posixpath.dirname(opf_path)

    manifest: dict[str, tuple[str, str, str]] = {}  # id -> (href, media type, properties)
    spine: list[str] = []
    spine_toc = None
    meta: dict[str, str] = {}
    for el in opf.iter():
        name = _local(el.tag)
        if name == "item" and el.get("id") and el.get("href"):
            manifest[el.get("id", "")] = (el.get("href", ""), el.get("media-type", ""), el.get("properties", ""))
        elif name == "spine":
            spine_toc = el.get("toc")
        elif name == "itemref" and el.get("idref"):
            spine.append(el.get("idref", ""))
        elif name in ("title", "creator", "date", "language") and el.text and el.text.strip():
            key = {"creator": "author"}.get(name, name)
            meta.setdefault(key, " ".join(el.text.split()))

    locked = _locked(zf)
    labels = _toc_labels(zf, opf_dir, manifest, spine_toc)
    b = TextBuilder(limits)
    chapters = 0
    for idref in spine:
        href, media_type, _ = manifest.get(idref, ("", "", ""))
        if not href or media_type not in _CHAPTER_TYPES:
            continue
        path = _join(opf_dir, href)
        if path in locked:
            raise SkipFile("encrypted .epub (DRM): its chapters cannot be read")
        raw = read_member(zf, path)
        if raw is None:
            continue
        try:
            html, _ = decode(raw, html=True)
        except SkipFile:
            continue
        text, headings = html_text(html)
        if not text.strip():
            continue
        chapters += 1
        label = labels.get(path)
        if label and not any(h.start == 0 for h in headings):
            b.block(clean_block(label), heading=1)
            b.add_text(text, headings, level_shift=1)
        else:
            b.add_text(text, headings)
    if not chapters:
        raise SkipFile(".epub has no readable text")
    return Document(source, b.text(), "epub", digest, headings=tuple(_sorted(b.headings)), metadata=meta)


def _locked(zf: zipfile.ZipFile) -> set[str]:
    """The members encrypted by DRM (font obfuscation, which only scrambles fonts, does not count)."""
    encrypted = read_member(zf, "META-INF/encryption.xml")
    locked: set[str] = set()
    if encrypted:
        enc = _xml(encrypted, "META-INF/encryption.xml")
        for data_el in enc.iter():
            if _local(data_el.tag) != "EncryptedData":
                continue
            method = next((m.get("Algorithm", "") for m in data_el.iter() if _local(m.tag) == "EncryptionMethod"), "")
            ref = next((r.get("URI", "") for r in data_el.iter() if _local(r.tag) == "CipherReference"), "")
            if ref and method not in _FONT_OBFUSCATION:
                locked.add(posixpath.normpath(unquote(ref)))
    return locked


def _sorted(headings: list[Heading]) -> list[Heading]:
    return sorted(headings, key=lambda h: h.start)
