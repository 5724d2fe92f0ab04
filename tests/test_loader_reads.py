"""load_file reads through read_bounded: whatever a listed file has become by the time it is read (a FIFO, a
device, a symlink, a file grown past the cap), it is skipped with a reason, never waited on or read whole."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tqa.loaders import Document, SkipFile, discover, load_file

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX FIFOs, devices and symlinks")

TEXT = b"Shelters give survivors a bed for the night.\n"


def load_guarded(path: Path, root: Path, **kw: object) -> Document | SkipFile:
    """load_file in a thread, so a read that would block forever fails the test instead of hanging it."""
    result: list[Document | SkipFile] = []

    def run() -> None:
        try:
            result.append(load_file(path, root, **kw))  # type: ignore[arg-type]
        except SkipFile as e:
            result.append(e)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():
        if path.is_fifo():  # give the blocked reader a writer and an end of file, so the thread can finish
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"load_file({path.name}) blocked")
    return result[0]


def listed(root: Path, name: str) -> Path:
    candidates = dict(discover(root)[0])
    return candidates[name]


def test_file_replaced_by_a_fifo_after_discover_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(TEXT)
    path = listed(tmp_path, "a.txt")
    path.unlink()
    os.mkfifo(path)  # opening it for reading the usual way waits for a writer forever
    outcome = load_guarded(path, tmp_path)
    assert isinstance(outcome, SkipFile) and outcome.reason == "not a regular file"


def test_file_replaced_by_a_folder_after_discover_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(TEXT)
    path = listed(tmp_path, "a.txt")
    path.unlink()
    path.mkdir()
    outcome = load_guarded(path, tmp_path)
    assert isinstance(outcome, SkipFile)
    assert outcome.reason in ("not a regular file", "unreadable: Is a directory")


def test_file_replaced_by_a_symlink_to_dev_zero_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(TEXT)
    path = listed(tmp_path, "a.txt")
    path.unlink()
    path.symlink_to("/dev/zero")  # endless: a read without a cap fills memory
    outcome = load_guarded(path, tmp_path, max_bytes=1024)
    assert isinstance(outcome, SkipFile)
    assert outcome.reason in ("symlink points outside the corpus", "not a regular file")


def test_file_replaced_by_a_symlink_to_a_fifo_inside_the_corpus_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(TEXT)
    path = listed(tmp_path, "a.txt")
    os.mkfifo(tmp_path / "pipe")
    path.unlink()
    path.symlink_to(tmp_path / "pipe")
    outcome = load_guarded(path, tmp_path)
    assert isinstance(outcome, SkipFile) and outcome.reason == "not a regular file"


def test_file_grown_past_the_cap_after_discover_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(TEXT)
    path = listed(tmp_path, "a.txt")
    with open(path, "ab") as f:
        f.write(b"x" * 1000)
    with pytest.raises(SkipFile, match="larger than 100 bytes"):
        load_file(path, tmp_path, max_bytes=100)


def test_file_growing_right_after_it_is_measured_is_never_read_past_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worst moment for a writer to append: just after the size was looked up by name. Any such look-up
    # (os.stat, which Path.stat and Path.exists call) triggers the growth here.
    path = tmp_path / "a.txt"
    path.write_bytes(TEXT)
    real_stat = os.stat

    def stat_then_grow(p: object, *args: object, **kw: object) -> os.stat_result:
        st = real_stat(p, *args, **kw)  # type: ignore[arg-type]
        if os.fspath(p) == os.fspath(path) and st.st_size < 1000:  # type: ignore[call-overload]
            with open(path, "ab") as f:
                f.write(b"grown " * 1000)
        return st

    monkeypatch.setattr(os, "stat", stat_then_grow)
    try:
        doc = load_file(path, tmp_path, max_bytes=100)
    except SkipFile as e:
        assert e.reason == "larger than 100 bytes"
    else:  # read before it grew: then only what was there
        assert doc.text.encode() == TEXT


def test_symlink_leading_outside_the_corpus_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("SECRET outside the corpus\n")
    (root / "a.txt").write_bytes(TEXT)
    path = listed(root, "a.txt")
    path.unlink()
    path.symlink_to(tmp_path / "secret.txt")
    with pytest.raises(SkipFile, match="symlink points outside the corpus"):
        load_file(path, root)
    with pytest.raises(SkipFile, match="symlink points outside the corpus"):
        load_file("a.txt", root)


def test_relative_source_is_read_from_the_corpus_not_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's recipe reads a passage's document back with load_file(p.source, corpus_root).
    root, elsewhere = tmp_path / "corpus", tmp_path / "cwd"
    (root / "docs").mkdir(parents=True)
    (elsewhere / "docs").mkdir(parents=True)
    (root / "docs" / "note.txt").write_bytes(TEXT)
    (elsewhere / "docs" / "note.txt").write_text("a different file in the working folder\n")
    monkeypatch.chdir(elsewhere)
    doc = load_file("docs/note.txt", root)
    assert doc.source == "docs/note.txt" and doc.text.encode() == TEXT
    monkeypatch.chdir(root / "docs")  # the working folder inside the corpus: still the corpus-relative file
    (root / "docs" / "docs").mkdir()
    (root / "docs" / "docs" / "note.txt").write_text("nested copy\n")
    assert load_file("docs/note.txt", root).text.encode() == TEXT


def test_path_relative_to_the_working_folder_still_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_bytes(TEXT)
    monkeypatch.chdir(tmp_path)
    assert load_file("corpus/a.txt", "corpus").source == "a.txt"


def test_load_file_without_a_cap_still_refuses_devices(tmp_path: Path) -> None:
    (tmp_path / "z.txt").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "p.txt")
    for name in ("z.txt", "p.txt"):
        outcome = load_guarded(tmp_path / name, tmp_path, max_bytes=None)
        assert isinstance(outcome, SkipFile), name
