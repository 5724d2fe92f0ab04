"""File and folder names an attacker can put in a corpus: every name discover() returns must be usable as a
citation (valid UTF-8, one printable line, opening the file it names) or be skipped with a reason."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest

from tqa.errors import CorpusError
from tqa.loaders import SkipFile, Skipped, discover, load_file

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX file names (any bytes but / and NUL)")

NOT_UTF8 = "file name is not valid UTF-8; rename it"
CONTROL = "file name contains control characters; rename it"


def put(root: Path, name: str | bytes, data: bytes = b"Some readable text.\n") -> Path:
    """Write a file whose name may be raw bytes (not valid UTF-8)."""
    path = os.path.join(os.fsencode(root), name if isinstance(name, bytes) else os.fsencode(name))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return Path(os.fsdecode(path))


def assert_json_utf8(candidates: list[tuple[str, Path]], skipped: list[Skipped]) -> None:
    strings = [rel for rel, _ in candidates] + [s.path for s in skipped] + [s.reason for s in skipped]
    for s in strings:
        s.encode("utf-8")  # raises on a lone surrogate (an undecodable byte)
        assert "\n" not in s and "\r" not in s and "\x1b" not in s
    json.dumps([s.to_dict() for s in skipped], ensure_ascii=False).encode("utf-8")


def test_non_utf8_file_and_folder_names_are_skipped_with_a_reason(tmp_path: Path) -> None:
    put(tmp_path, "good.txt")
    put(tmp_path, b"caf\xe9.txt")
    put(tmp_path, b"d\xe9j\xe0/inside.txt")
    put(tmp_path, b"ok/r\xe9sum\xe9.md")
    candidates, skipped = discover(tmp_path)
    assert [rel for rel, _ in candidates] == ["good.txt"]
    assert skipped == [
        Skipped("caf\\xe9.txt", NOT_UTF8),
        Skipped("d\\xe9j\\xe0", "folder name is not valid UTF-8; rename it"),
        Skipped("ok/r\\xe9sum\\xe9.md", NOT_UTF8),
    ]
    assert_json_utf8(candidates, skipped)


def test_non_utf8_symlink_name_is_skipped(tmp_path: Path) -> None:
    put(tmp_path, "real.txt")
    os.symlink("real.txt", os.path.join(os.fsencode(tmp_path), b"l\xefnk.txt"))
    candidates, skipped = discover(tmp_path)
    assert [rel for rel, _ in candidates] == ["real.txt"]
    assert skipped == [Skipped("l\\xefnk.txt", NOT_UTF8)]


def test_non_utf8_name_does_not_abort_a_build(tmp_path: Path, fake_embedder) -> None:
    from tqa.indexing import build_index

    corpus = tmp_path / "corpus"
    put(corpus, "good.txt", b"Shelters give survivors a bed for the night.\n")
    put(corpus, b"caf\xe9.txt", b"Hotlines answer calls at night.\n")
    summary = build_index(corpus, tmp_path / "index", embedder=fake_embedder)
    assert summary.files_added == ["good.txt"]
    assert {"path": "caf\\xe9.txt", "reason": NOT_UTF8} in summary.skipped


def test_load_file_refuses_a_non_utf8_name(tmp_path: Path) -> None:
    path = put(tmp_path, b"caf\xe9.txt")
    with pytest.raises(SkipFile, match="not valid UTF-8"):
        load_file(path, tmp_path)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        pytest.param("new\nline.txt", "new\\nline.txt", id="newline"),
        pytest.param("carriage\rreturn.txt", "carriage\\rreturn.txt", id="carriage-return"),
        pytest.param("\x1b[31mred.txt", "\\x1b[31mred.txt", id="terminal-escape"),
        pytest.param("bell\x07.md", "bell\\x07.md", id="bell"),
        pytest.param("del\x7f.txt", "del\\x7f.txt", id="delete"),
        pytest.param("c1\x9b.txt", "c1\\x9b.txt", id="c1-control"),
        pytest.param("line\u2028sep.txt", "line\\u2028sep.txt", id="unicode-line-separator"),
        pytest.param("evil\u202etxt.md", "evil\\u202etxt.md", id="bidi-override"),
    ],
)
def test_names_with_control_characters_are_skipped(tmp_path: Path, name: str, shown: str) -> None:
    # A citation is printed on one line of a terminal: a name must not break the line, move the cursor,
    # recolour the screen or reorder what is shown.
    put(tmp_path, name)
    put(tmp_path, f"folder{name}/inside.txt")
    candidates, skipped = discover(tmp_path)
    assert candidates == []
    expected = [
        Skipped(f"folder{shown}", "folder name contains control characters; rename it"),
        Skipped(shown, CONTROL),
    ]
    assert skipped == sorted(expected, key=lambda s: s.path)
    assert_json_utf8(candidates, skipped)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("tab\there.txt", id="tab"),  # prints on one line; kept
        pytest.param("-rf.txt", id="leading-dash"),
        pytest.param("--help.md", id="double-dash"),
        pytest.param(" leading and trailing space .txt", id="spaces"),
        pytest.param("a" * 251 + ".txt", id="longest-name"),  # 255 bytes, the usual limit of a name
        pytest.param("é" * 125 + ".txt", id="longest-multibyte-name"),  # 254 bytes
        pytest.param("emoji 👩‍👩‍👧 zwj.txt", id="zero-width-joiner"),
        pytest.param("بحث\u200fتقرير.txt", id="right-to-left-mark"),
        pytest.param("back\\slash.txt", id="backslash"),
        pytest.param("\ufffd.txt", id="replacement-character"),
    ],
)
def test_odd_but_valid_names_are_indexed_under_their_exact_name(tmp_path: Path, name: str) -> None:
    put(tmp_path, name, b"Readable words in an oddly named file.\n")
    candidates, skipped = discover(tmp_path)
    assert skipped == []
    assert [rel for rel, _ in candidates] == [name]
    assert_json_utf8(candidates, skipped)
    assert load_file(name, tmp_path).text == "Readable words in an oddly named file.\n"  # the source opens it
    assert load_file(candidates[0][1], tmp_path).source == name


def test_nfc_and_nfd_twins_keep_the_nfc_name(tmp_path: Path) -> None:
    nfc, nfd = "café.txt", unicodedata.normalize("NFD", "café.txt")
    put(tmp_path, nfd, b"decomposed\n")
    put(tmp_path, nfc, b"composed\n")
    put(tmp_path, unicodedata.normalize("NFD", "élan") + "/x.txt", b"in the NFD folder\n")
    put(tmp_path, "élan/x.txt", b"in the NFC folder\n")
    candidates, skipped = discover(tmp_path)
    assert [rel for rel, _ in candidates] == [nfc, "élan/x.txt"]
    assert skipped == [
        Skipped(nfd, "same name as café.txt in another Unicode form; rename one"),
        Skipped(unicodedata.normalize("NFD", "élan"), "same name as élan in another Unicode form; rename one"),
    ]
    assert load_file(candidates[0][0], tmp_path).text == "composed\n"


def test_a_lone_nfd_name_is_kept_exactly_so_it_still_opens(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "résumé.md")
    put(tmp_path, nfd, b"# CV\n\ntext\n")
    candidates, skipped = discover(tmp_path)
    assert [rel for rel, _ in candidates] == [nfd] and skipped == []
    assert load_file(nfd, tmp_path).text == "# CV\n\ntext\n"


def _remove_deep(top: Path, name: str, levels: int) -> None:
    """Remove a chain of ``levels`` folders named ``name`` under ``top`` (too deep for path-based removal)."""
    fds = [os.open(top, os.O_RDONLY)]
    try:
        for _ in range(levels):
            try:
                fds.append(os.open(name, os.O_RDONLY, dir_fd=fds[-1]))
            except FileNotFoundError:
                break
        for i in range(len(fds) - 1, 0, -1):
            for entry in os.listdir(fds[i]):
                os.unlink(entry, dir_fd=fds[i])
            os.rmdir(name, dir_fd=fds[i - 1])
    finally:
        for fd in fds:
            os.close(fd)


def test_path_longer_than_the_system_allows_is_skipped_not_fatal(tmp_path: Path) -> None:
    # Build a tree deeper than PATH_MAX (4096) by creating each level relative to the previous one.
    put(tmp_path, "shallow.txt")
    name, levels = "d" * 250, 20
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        wfd = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(wfd, b"deep text\n")
        os.close(wfd)
    finally:
        os.close(fd)
    try:
        candidates, skipped = discover(tmp_path)
    finally:
        _remove_deep(tmp_path, name, levels)
    assert [rel for rel, _ in candidates][0] == "shallow.txt"
    assert all(len(str(p)) < 4096 for _, p in candidates)
    assert skipped and all("too long" in s.reason.lower() for s in skipped), skipped
    assert_json_utf8(candidates, skipped)


def test_corpus_errors_about_an_undecodable_root_are_printable(tmp_path: Path) -> None:
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"m\xe9moire"))
    with pytest.raises(CorpusError) as info:
        discover(missing)
    str(info.value).encode("utf-8")
    assert "m\\xe9moire" in str(info.value)
    a_file = put(tmp_path, b"fichier-\xe9.txt")
    with pytest.raises(CorpusError) as info:
        discover(a_file)
    str(info.value).encode("utf-8")
    # an undecodable root that exists is fine: sources are relative to it
    root = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"r\xe9pertoire")))
    put(root, "doc.txt")
    assert [rel for rel, _ in discover(root)[0]] == ["doc.txt"]
