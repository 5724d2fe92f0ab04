"""Zip containers (.docx .pptx .odt .epub) opened within a budget, and what a file's first bytes say it is.

A zip's central directory declares each member's size, and it can lie: a small file may inflate to gigabytes (a
zip bomb). Before any library sees the archive, every member is inflated here once, in blocks, counting the bytes
it really yields against both its declared size and the limits; a member that yields more than it declares, more
than the limits, or fails its checksum stops the file with one line.
"""

from __future__ import annotations

import io
import struct
import zipfile

from .base import Limits, SkipFile, short_error, size_text

_EOCD = b"PK\x05\x06"
_BLOCK = 1 << 20
_XML_NAMES = (".xml", ".rels", ".opf", ".ncx", ".xhtml", ".html", ".htm", ".svg")


def sniff(data: bytes) -> str | None:
    """What the first bytes of ``data`` say it is, as a phrase for a message ("a PDF document"), or None."""
    head = data[:8]
    if head.startswith(b"%PDF-"):
        return "a PDF document"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a ZIP archive"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "an Office 97-2003 file (.doc .ppt .xls) or an encrypted Office document"
    if head.startswith(b"{\\rtf"):
        return "an RTF document"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")):
        return "an image"
    if head.startswith((b"\x1f\x8b", b"7z\xbc\xaf", b"Rar!")):
        return "a compressed archive"
    return None


def encrypted_office(data: bytes) -> bool:
    """An OLE compound file holding an ``EncryptedPackage`` stream: an Office document saved with a password."""
    return data.startswith(b"\xd0\xcf\x11\xe0") and "EncryptedPackage".encode("utf-16-le") in data[:1 << 20]


def not_this_format(ext: str, data: bytes) -> SkipFile:
    """The reason for a file whose bytes are not the container its extension promises."""
    if encrypted_office(data):
        return SkipFile(f"password-protected {ext} (remove the password in its program and save it again)")
    kind = sniff(data)
    if kind is None:
        return SkipFile(f"not a {ext} file (damaged, or another format under a {ext} name)")
    return SkipFile(f"not a {ext} file: it is {kind}")


def _central_directory(data: bytes) -> tuple[int, int] | None:
    """(entries, directory bytes) from the end-of-central-directory record, or None when there is none."""
    at = data.rfind(_EOCD, max(0, len(data) - 65_557))
    if at < 0 or at + 22 > len(data):
        return None
    entries, cd_size = struct.unpack_from("<HI", data, at + 10)
    return entries, cd_size


def open_zip(data: bytes, ext: str, limits: Limits) -> zipfile.ZipFile:
    """The archive in ``data``, after every member was inflated once within ``limits``; raises SkipFile."""
    if not data.startswith(b"PK\x03\x04"):
        raise not_this_format(ext, data)
    cd = _central_directory(data)
    if cd is None:
        raise SkipFile(f"damaged {ext}: the archive is cut short (no central directory)")
    entries, cd_size = cd
    if (entries != 0xFFFF and entries > limits.max_zip_members) or (
        cd_size != 0xFFFFFFFF and cd_size > limits.max_zip_members * 1024
    ):
        raise SkipFile(f"{ext} archive with more than {limits.max_zip_members:,} members (a zip bomb?)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, struct.error) as e:
        raise SkipFile(f"damaged {ext}: {short_error(e)}") from e
    if len(infos) > limits.max_zip_members:
        raise SkipFile(f"{ext} archive with more than {limits.max_zip_members:,} members (a zip bomb?)")
    declared = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise SkipFile(f"encrypted {ext} (needs a password)")
        declared += info.file_size
        if info.file_size > limits.max_member_bytes or declared > limits.max_unzipped_bytes:
            raise _bomb(ext, limits)
    actual = 0
    try:
        for info in infos:
            got = 0
            xml = info.filename.lower().endswith(_XML_NAMES)
            with zf.open(info) as f:
                while block := f.read(_BLOCK):
                    if xml and got == 0 and b"<!ENTITY" in block:
                        # Office and ODF parts never declare entities; one that does can expand (billion laughs)
                        # or name another file to read (XXE).
                        raise SkipFile(f"{ext} with XML entity declarations in {info.filename} (refused)")
                    got += len(block)
                    actual += len(block)
                    if got > info.file_size or got > limits.max_member_bytes or actual > limits.max_unzipped_bytes:
                        raise _bomb(ext, limits)
    except SkipFile:
        raise
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, OSError, RuntimeError) as e:
        # A member whose data does not match its header (checksum, size) or uses a method zipfile cannot read.
        raise SkipFile(f"damaged {ext}: {short_error(e)}") from e
    except Exception as e:  # zlib.error and friends: never let a broken member escape
        raise SkipFile(f"damaged {ext}: {short_error(e)}") from e
    return zf


def _bomb(ext: str, limits: Limits) -> SkipFile:
    return SkipFile(
        f"{ext} expands past {size_text(limits.max_member_bytes)} per part or "
        f"{size_text(limits.max_unzipped_bytes)} in all once uncompressed (a zip bomb?)"
    )


_ZIP_KINDS = (
    ("word/document.xml", None, "a Word document (.docx)"),
    ("ppt/presentation.xml", None, "a PowerPoint presentation (.pptx)"),
    ("xl/workbook.xml", None, "an Excel workbook (.xlsx)"),
    ("mimetype", b"application/epub+zip", "an EPUB book (.epub)"),
    ("mimetype", b"application/vnd.oasis.opendocument.text", "an OpenDocument text (.odt)"),
    ("mimetype", b"application/vnd.oasis.opendocument.spreadsheet", "an OpenDocument spreadsheet (.ods)"),
    ("mimetype", b"application/vnd.oasis.opendocument.presentation", "an OpenDocument presentation (.odp)"),
)


def check_kind(zf: zipfile.ZipFile, ext: str, expected: str) -> None:
    """Refuse an archive that is not the kind its extension says, naming what it is (a .docx saved as .pptx)."""
    names = set(zf.namelist())
    for member, content, kind in _ZIP_KINDS:
        if member in names and (content is None or (read_member(zf, member) or b"").strip() == content):
            if kind == expected:
                return
            raise SkipFile(f"not a {ext} file: it is {kind}")
    raise SkipFile(f"not a {ext} file: a ZIP archive without its parts")


def read_member(zf: zipfile.ZipFile, name: str) -> bytes | None:
    """A member's bytes (already checked by open_zip), or None when the archive has no such member."""
    try:
        return zf.read(name)
    except KeyError:
        return None
