"""A build that fails for any reason leaves no temporary folder, no orphan generation and no pointer file; odd
source names (newlines, lone surrogates from names that are not UTF-8, JSON syntax) round-trip through the chunk
table, the documents and the manifest."""

from __future__ import annotations

import errno

import pytest

from tqa import Assistant, build_index, indexing, store
from tqa.errors import TqaError
from tqa.keywords import KeywordIndex
from tqa.loaders import Skipped
from tqa.store import load_index, read_manifest

from .index_helpers import change, tree

# ---------------------------------------------------------------- a failed build leaves nothing behind


class Boom(Exception):
    pass


FAILURES = {
    "keyword index (a bug)": lambda mp: mp.setattr(KeywordIndex, "save", _raise(Boom("boom"))),
    "keyword index (interrupted)": lambda mp: mp.setattr(KeywordIndex, "save", _raise(KeyboardInterrupt())),
    "keyword index (I/O error)": lambda mp: mp.setattr(KeywordIndex, "save",
                                                       _raise(OSError(errno.EIO, "Input/output error"))),
    "syncing (an encoding bug)": lambda mp: mp.setattr(store, "_fsync_tree", _raise(UnicodeEncodeError(
        "utf-8", "\udcff", 0, 1, "surrogates not allowed"))),
    "after the rename (a bug)": lambda mp: mp.setattr(store.os, "replace", _raise(Boom("late"))),
    "after the rename (I/O error)": lambda mp: mp.setattr(store.os, "replace",
                                                          _raise(OSError(errno.EIO, "Input/output error"))),
}


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize("how", list(FAILURES))
def test_a_build_that_fails_for_any_reason_leaves_no_debris(small_corpus, tmp_path, fake_embedder, monkeypatch,
                                                            how):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    before = tree(index)
    change(small_corpus, 1)
    with monkeypatch.context() as mp:
        FAILURES[how](mp)
        with pytest.raises((Boom, KeyboardInterrupt, UnicodeEncodeError, TqaError)) as exc:
            build_index(small_corpus, index, embedder=fake_embedder)
    if isinstance(exc.value, TqaError):
        assert "\n" not in str(exc.value) and "previous index" in str(exc.value)
    assert tree(index) == before  # no temporary folder, no orphan generation, no pointer file
    assert "changing.txt" not in read_manifest(index).files
    assert build_index(small_corpus, index, embedder=fake_embedder).files_added == ["changing.txt"]


ODD_NAMES = ["new\nline.md", "cr\rreturn.txt", "line\u2028sep\u2029para.txt", "nel\x85.txt",
             "not-utf8-\udcff\udcfe.txt", 'quote"back\\slash.md', "tab\tname.txt", "emoji 🛟.md", '{"json": 1}.txt',
             "trailing space .txt"]


def test_odd_source_names_round_trip_through_the_chunk_table_documents_and_manifest(tmp_path, fake_embedder,
                                                                                   monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = {}
    for i, name in enumerate(ODD_NAMES):
        texts[name] = f"Report {i}\nShelters in region {i} report {i * 7} beds and hotline {i}.\n"
        (corpus / f"f{i:02d}.txt").write_text(texts[name])
    real = indexing.discover

    def odd(root, max_bytes):  # the names sources can carry, whatever discovery lets through
        found, skipped = real(root, max_bytes)
        return [(ODD_NAMES[int(p.stem[1:])], p) for _, p in found], skipped + [Skipped("odd-\udcff\n.txt", "odd")]

    monkeypatch.setattr(indexing, "discover", odd)
    index = tmp_path / "index"
    s = build_index(corpus, index, embedder=fake_embedder)
    assert sorted(s.files_added) == sorted(ODD_NAMES)
    assert s.skipped == [{"path": "odd-\udcff\n.txt", "reason": "odd"}]
    assert all(line.isprintable() for line in s.lines())  # one fact a line, printable whatever the names
    data = load_index(index)
    assert set(data.manifest.files) == set(ODD_NAMES) == {c.source for c in data.chunks}
    assert dict(data.documents()) == {n: t for n, t in texts.items()}
    for name, text in texts.items():
        assert data.document_text(name) == text
    data.close()
    again = build_index(corpus, index, embedder=fake_embedder)
    assert not again.published and sorted(again.files_unchanged) == sorted(ODD_NAMES)
    qa = Assistant.load(index, embedder=fake_embedder)
    for name in ODD_NAMES:
        assert [p.source for p in qa.ask("shelters beds hotline", k=3, sources=[name]).passages] == [name]
