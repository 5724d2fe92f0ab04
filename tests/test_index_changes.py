"""Files that change after discovery: one replaced by a FIFO is skipped, never waited on; one grown past the cap is
skipped, never read whole."""

from __future__ import annotations

import os

import pytest

from tqa import build_index, indexing
from tqa.config import Settings
from tqa.store import read_manifest

from .index_helpers import deadline

# ---------------------------------------------------------------- files that change after discovery


def _after_discovery(monkeypatch, action):
    real = indexing.discover

    def discover(root, max_bytes):
        found = real(root, max_bytes)
        action()
        return found

    monkeypatch.setattr(indexing, "discover", discover)


def test_a_file_replaced_by_a_fifo_after_discovery_is_skipped_not_waited_on(small_corpus, tmp_path, fake_embedder,
                                                                           monkeypatch):
    def to_fifo():
        (small_corpus / "tech.txt").unlink()
        os.mkfifo(small_corpus / "tech.txt")

    _after_discovery(monkeypatch, to_fifo)
    with deadline():
        s = build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    reasons = {d["path"]: d["reason"] for d in s.skipped}
    assert "not a regular file" in reasons["tech.txt"]
    assert sorted(s.files_added) == ["page.html", "sweden.md"]


def test_a_file_grown_past_the_cap_after_discovery_is_skipped(small_corpus, tmp_path, fake_embedder, monkeypatch):
    def grow():
        with open(small_corpus / "tech.txt", "a") as f:
            f.write("Shelters and hotlines.\n" * 1000)

    _after_discovery(monkeypatch, grow)
    s = build_index(small_corpus, tmp_path / "index", embedder=fake_embedder,
                    settings=Settings(max_file_bytes=10_000))
    reasons = {d["path"]: d["reason"] for d in s.skipped}
    assert "larger than" in reasons["tech.txt"]
    assert "tech.txt" not in read_manifest(tmp_path / "index").files


def test_a_file_that_became_unreadable_after_discovery_is_skipped_with_the_reason(small_corpus, tmp_path,
                                                                                 fake_embedder, monkeypatch):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    _after_discovery(monkeypatch, lambda: os.chmod(small_corpus / "tech.txt", 0))
    s = build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    assert "Permission denied" in {d["path"]: d["reason"] for d in s.skipped}["tech.txt"]
