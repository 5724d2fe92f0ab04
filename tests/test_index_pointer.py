"""A damaged ``CURRENT`` or manifest (empty, not text, a folder, a FIFO, a link to /dev/zero, huge) is one line at
once, never a wait or an unbounded read, and ``--rebuild`` repairs the pointer, moving aside what tqa did not
write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tqa import build_index
from tqa.errors import IndexCorrupt
from tqa.manifest import MANIFEST
from tqa.store import CURRENT, current_generation, load_index, read_manifest

from .index_helpers import cli, deadline, generations, tree

# ---------------------------------------------------------------- a damaged CURRENT: one line, and --rebuild repairs it


def damage_pointer(index: Path, how: str) -> None:
    cur = index / CURRENT
    cur.unlink()
    if how == "empty":
        cur.write_bytes(b"")
    elif how == "parent path":
        cur.write_text("../../etc\n")
    elif how == "directory":
        cur.mkdir()
        (cur / "keep.txt").write_text("something\n")
    elif how == "not utf-8":
        cur.write_bytes(b"g-\xff\xfe\n")
    elif how == "fifo":
        os.mkfifo(cur)
    elif how == "symlink to /dev/zero":
        cur.symlink_to("/dev/zero")
    elif how == "huge":
        cur.write_bytes(b"g" * 5_000_000)
    else:
        raise AssertionError(how)


POINTER_DAMAGE = ["empty", "parent path", "directory", "not utf-8", "fifo", "symlink to /dev/zero", "huge"]


@pytest.mark.parametrize("how", POINTER_DAMAGE)
def test_a_damaged_current_is_one_line_and_a_rebuild_repairs_it(small_corpus, tmp_path, fake_embedder, how):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    damage_pointer(index, how)
    moved = tree(index).get(CURRENT)
    with deadline():
        with pytest.raises(IndexCorrupt) as exc:
            load_index(index)
        assert "\n" not in str(exc.value) and "--rebuild" in str(exc.value)
        with pytest.raises(IndexCorrupt, match="--rebuild"):
            read_manifest(index)
        embedded = fake_embedder.embedded
        with pytest.raises(IndexCorrupt, match="--rebuild"):  # refused before anything is embedded
            build_index(small_corpus, index, embedder=fake_embedder)
        assert fake_embedder.embedded == embedded
        for _ in range(2):
            assert build_index(small_corpus, index, embedder=fake_embedder, rebuild=True).published
    data = load_index(index)
    assert data.path == current_generation(index) and data.document_text("sweden.md").startswith("# Sweden")
    data.close()
    names = os.listdir(index)
    assert not [n for n in names if n.startswith((".tmp-", ".retired-", f".{CURRENT}."))]
    assert len(generations(index)) == 2
    aside = [n for n in names if n.startswith(f"{CURRENT}.") and n != CURRENT]
    if how in ("directory", "fifo", "symlink to /dev/zero"):  # not a file tqa writes: moved aside, never deleted
        assert len(aside) == 1 and tree(index)[aside[0]] == moved
        if how == "directory":
            assert (index / aside[0] / "keep.txt").read_text() == "something\n"
    else:
        assert aside == []


def test_a_non_utf8_current_is_one_line_from_the_cli(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    damage_pointer(index, "not utf-8")
    r = cli("info", "--index", str(index))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "unexpected" not in r.stderr and "--rebuild" in r.stderr


@pytest.mark.parametrize("how", ["fifo", "symlink to /dev/zero", "directory"])
def test_a_manifest_that_is_not_a_file_is_refused_at_once(small_corpus, tmp_path, fake_embedder, how):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    manifest = current_generation(index) / MANIFEST
    manifest.unlink()
    if how == "fifo":
        os.mkfifo(manifest)
    elif how == "directory":
        manifest.mkdir()
    else:
        manifest.symlink_to("/dev/zero")
    with deadline():
        for read in (load_index, read_manifest):
            with pytest.raises(IndexCorrupt, match="--rebuild") as exc:
                read(index)
            assert "\n" not in str(exc.value)
        assert build_index(small_corpus, index, embedder=fake_embedder, rebuild=True).published
    load_index(index).close()
