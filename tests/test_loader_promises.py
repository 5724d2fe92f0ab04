"""The README's promises about corpus files, attacked: files that are empty in all but name, UTF-8 with a
damaged byte, a folder swapped for a symlink leading outside while the corpus is listed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tqa.loaders import SkipFile, Skipped, discover, extract

INVISIBLE = "\u200b\ufeff\u2060\u200d\u00ad\u200e\u2063\ufe0f"  # zero-width, BOM, joiners, soft hyphen, marks


@pytest.mark.parametrize(
    ("source", "data", "reason"),
    [
        pytest.param("a.txt", (INVISIBLE * 40).encode(), "empty file", id="txt-invisible"),
        pytest.param("a.md", ("\u200b \n\u3000\u00a0\ufeff\n" * 40).encode(), "empty file", id="md-invisible-spaces"),
        pytest.param(
            "a.html", b"<p>&#8203;&#xFEFF;&shy;</p><p>&nbsp;&zwj;</p>", "HTML has no readable text", id="html-invisible"
        ),
    ],
)
def test_files_of_invisible_characters_are_empty(source: str, data: bytes, reason: str) -> None:
    with pytest.raises(SkipFile) as info:
        extract(source, data)
    assert info.value.reason.startswith(reason)


def test_invisible_characters_around_text_are_not_empty() -> None:
    assert extract("a.txt", ("\u200bword\u200b").encode()).text == "\u200bword\u200b"


def test_utf8_with_one_damaged_byte_is_not_decoded_as_cp1252() -> None:
    good = "Grüße aus Zürich. Straße, Æble, 東京. " * 20
    data = good.encode() + b"\xff" + good.encode()
    doc = extract("a.txt", data)
    assert doc.text == good + "\ufffd" + good  # every accent intact; the bad byte is visible as U+FFFD
    assert doc.warnings == ("decoded as UTF-8 with 1 undecodable byte replaced (not valid UTF-8)",)


def test_utf8_cut_inside_a_character_keeps_the_rest() -> None:
    data = "Ende: groß".encode()[:-1]  # a file cut in the middle of its last character
    doc = extract("a.md", ("Grüße " * 10).encode() + data)
    assert doc.text == "Grüße " * 10 + "Ende: gro\ufffd"


@pytest.mark.parametrize(
    ("data", "text"),
    [
        pytest.param("café crème brûlée".encode("cp1252"), "café crème brûlée", id="cp1252"),
        pytest.param("naïve – “quoted”".encode("cp1252") + "é".encode(), None, id="mostly-cp1252"),
    ],
)
def test_real_cp1252_is_still_decoded_as_cp1252(data: bytes, text: str | None) -> None:
    doc = extract("a.txt", data)
    assert doc.warnings == ("decoded as cp1252 (not valid UTF-8)",)
    if text is not None:
        assert doc.text == text


@pytest.mark.skipif(os.name == "nt", reason="POSIX symlinks")
def test_folder_swapped_for_an_outside_symlink_while_listing_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outside = tmp_path / "corpus", tmp_path / "outside"
    (root / "sub" / "inner").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("inside\n")
    (root / "sub" / "inner" / "b.txt").write_text("inside too\n")
    (outside / "deeper").mkdir(parents=True)
    (outside / "secret.txt").write_text("SECRET\n")
    (outside / "deeper" / "more.txt").write_text("SECRET\n")
    real_scandir = os.scandir

    def swapping_scandir(path: object = ".") -> object:
        # The worst moment: "sub" was listed as a real folder, and is swapped just before it is read.
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == os.fspath(root / "sub"):
            os.rename(root / "sub", tmp_path / "moved-away")
            os.symlink(outside, root / "sub")
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", swapping_scandir)
    candidates, skipped = discover(root)
    assert candidates == []
    assert skipped == [
        Skipped("sub/deeper", "symlink points outside the corpus"),
        Skipped("sub/secret.txt", "symlink points outside the corpus"),
    ]


def test_pdf_expanding_past_the_text_cap_is_skipped() -> None:
    # A PDF's streams are compressed: a file far under the size cap can expand to gigabytes of text. The cap
    # is lowered here so that a small PDF stands for such a file.
    from tqa.loaders import Limits

    from .test_loaders import make_pdf

    data = make_pdf([["a line of forty characters of body text"] * 10] * 3)
    assert len(extract("a.pdf", data).text) > 1000
    with pytest.raises(SkipFile, match="PDF text longer than 600 characters once decompressed"):
        extract("a.pdf", data, limits=Limits(max_text_chars=600))


@pytest.mark.parametrize(
    "charset", ["rot13", "hex", "base64", "zlib", "bz2", "uu", "undefined", "unicode_escape", "raw_unicode_escape"]
)
def test_html_declaring_a_codec_that_is_not_a_text_encoding_falls_back(charset: str) -> None:
    # Python's codec registry also holds byte transforms and escape decoders: a page naming one in its
    # <meta charset> must not abort the build (LookupError, UnicodeError) nor have its backslashes decoded.
    data = f'<meta charset="{charset}"><p>caf'.encode() + b"\xe9 \\x41u lait</p>"
    doc = extract("a.html", data)
    assert doc.text == "café \\x41u lait"
    assert doc.warnings == ("decoded as cp1252 (not valid UTF-8)",)


@pytest.mark.skipif(os.name == "nt", reason="POSIX")
def test_file_and_folder_vanishing_while_listing_are_listed_as_vanished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keep.txt").write_text("kept\n")
    (tmp_path / "gone.txt").write_text("soon gone\n")
    (tmp_path / "gonedir").mkdir()
    (tmp_path / "gonedir" / "x.txt").write_text("x\n")
    real_lstat = os.lstat

    def lstat_after_deleting(path: object, *args: object, **kw: object) -> os.stat_result:
        # Each of the two is deleted just after it was listed, when it is first looked at.
        p = Path(os.fspath(path))  # type: ignore[call-overload]
        if p == tmp_path / "gone.txt" and p.exists():
            p.unlink()
        elif p == tmp_path / "gonedir" and p.exists():
            (p / "x.txt").unlink()
            p.rmdir()
        return real_lstat(path, *args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "lstat", lstat_after_deleting)
    candidates, skipped = discover(tmp_path)
    assert [rel for rel, _ in candidates] == ["keep.txt"]
    assert skipped == [Skipped("gone.txt", "vanished during indexing"), Skipped("gonedir", "vanished during indexing")]
