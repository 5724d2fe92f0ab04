"""An update changes the previous index's trained vector indexes in place (rows removed, added by id, renumbered;
training kept), and answers exactly as a full rebuild of the same corpus does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tqa import vectors
from tqa.config import Settings
from tqa.indexing import build_index, compact_index
from tqa.keywords import KeywordIndex
from tqa.store import current_generation, load_index
from tqa.vectors import CompressedVectors, FaissVectors, update_vectors

from .support import ROOT, FakeEmbedder

WORDS = ("harbour treaty shelter region ferry cargo border police victim court river market grain salt copper "
         "wool ledger tariff customs pilot anchor lighthouse storm tide canal bridge mill forge quarry").split()


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def small_ivf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inverted files from a few hundred vectors on (16 lists), so tests build them in a moment."""
    monkeypatch.setattr(vectors, "EXACT_MAX", 40)
    monkeypatch.setattr(vectors, "IVF_MIN_VECTORS", 64)


# ---------------------------------------------------------------- the vector index alone


def layout(n_old: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A new row order: some old rows dropped (first and last among them), new ones inserted in places."""
    keep = np.ones(n_old, dtype=bool)
    keep[[0, n_old - 1]] = False
    keep[rng.choice(n_old, 10, replace=False)] = False
    rows = list(np.flatnonzero(keep))
    for at, count in ((0, 3), (len(rows) // 2, 7), (len(rows), 2)):
        rows[at:at] = [-1] * count
    old_rows = np.array(rows, dtype=np.int64)
    return old_rows, int((old_rows < 0).sum())


def expected_rows(old: np.ndarray, old_rows: np.ndarray, added: np.ndarray) -> np.ndarray:
    out = np.empty((len(old_rows), old.shape[1]), dtype=np.float32)
    out[old_rows >= 0] = old[old_rows[old_rows >= 0]]
    out[old_rows < 0] = added
    return out


def test_an_inverted_file_is_spliced_in_place_keeping_its_training(small_ivf):
    x = unit(400, 16, 0)
    index = FaissVectors.build(x, 16)
    assert index.kind == "ivf"
    centroids = index._ivf.quantizer.reconstruct_n(0, index.nlist)
    old_rows, n_new = layout(400, np.random.default_rng(1))
    added = unit(n_new, 16, 2)
    out = update_vectors(index, old_rows, added, 16)
    assert out is index  # changed in place, not trained again
    np.testing.assert_array_equal(out._ivf.quantizer.reconstruct_n(0, out.nlist), centroids)
    whole = expected_rows(x, old_rows, added)
    assert out.ntotal == len(old_rows)
    np.testing.assert_allclose(out.vectors(), whole, atol=1e-6)  # row i is what it should be
    assert out.changed == (400 - int((old_rows >= 0).sum())) + n_new
    assert out.describe().changed == out.changed
    # every list scanned, the search is exact: the same rows as an exact index of the same vectors
    out.nprobe = out.nlist
    exact = FaissVectors.build(whole, 16, "flat")
    for q in unit(20, 16, 3):
        s1, r1 = out.search(q, 10)
        s2, r2 = exact.search(q, 10)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_allclose(s1, s2, atol=1e-5)
    allowed = np.arange(0, len(whole), 3)
    np.testing.assert_array_equal(out.search(x[5], 5, allowed)[1], exact.search(x[5], 5, allowed)[1])


def test_a_compressed_index_is_spliced_in_place_keeping_its_codebooks():
    x = unit(vectors.PQ_MIN_VECTORS + 200, 16, 4)
    index = vectors.build_vectors(x, 16, compress_above=100)
    assert isinstance(index, CompressedVectors)
    before = vectors._faiss().vector_to_array(index._ivf.pq.centroids)
    old_rows, n_new = layout(len(x), np.random.default_rng(5))
    added = unit(n_new, 16, 6)
    out = update_vectors(index, old_rows, added, 16, compress_above=100)
    assert out is index
    np.testing.assert_array_equal(vectors._faiss().vector_to_array(out._ivf.pq.centroids), before)
    whole = expected_rows(x, old_rows, added)
    np.testing.assert_allclose(out.vectors(), whole, atol=2e-3)  # float16 rows
    out.nprobe = out.nlist
    out.depth = len(whole)  # every candidate re-ranked: exact over the stored rows
    exact = FaissVectors.build(out.vectors(), 16, "flat")
    for q in unit(10, 16, 7):
        np.testing.assert_array_equal(out.search(q, 5)[1], exact.search(q, 5)[1])


def test_past_the_share_of_changed_rows_the_index_is_trained_again(small_ivf):
    x = unit(400, 16, 8)
    index = FaissVectors.build(x, 16)
    old_rows = np.arange(400, dtype=np.int64)
    old_rows[:60] = -1  # 60 rows replaced: 120 changes, over a fifth of 400
    added = unit(60, 16, 9)
    out = update_vectors(index, old_rows, added, 16)
    assert out is not index and out.kind == "ivf" and out.changed == 0
    np.testing.assert_allclose(out.vectors(), expected_rows(x, old_rows, added), atol=1e-6)
    # changes add up across updates: 30 changes now, 30 next time (+ the 30 before) cross 80
    index = FaissVectors.build(x, 16)
    step = np.arange(400, dtype=np.int64)
    step[:15] = -1
    first = update_vectors(index, step, unit(15, 16, 10), 16)
    assert first is index and first.changed == 30
    second = update_vectors(first, step, unit(15, 16, 11), 16)
    assert second is first and second.changed == 60
    third = update_vectors(second, step, unit(15, 16, 12), 16)
    assert third is not second and third.changed == 0  # 90 > 80: trained again


def test_an_index_that_changes_kind_is_built_anew(small_ivf, monkeypatch):
    monkeypatch.setattr(vectors, "PQ_MIN_VECTORS", 64)
    x = unit(400, 16, 13)
    ivf = FaissVectors.build(x, 16)
    out = update_vectors(ivf, np.arange(400), np.zeros((0, 16), np.float32), 16, compress_above=300)
    assert isinstance(out, CompressedVectors) and out.changed == 0
    np.testing.assert_allclose(out.vectors(), x, atol=2e-3)
    small = update_vectors(ivf, np.arange(30), np.zeros((0, 16), np.float32), 16)
    assert small.kind == "flat"
    np.testing.assert_allclose(small.vectors(), x[:30], atol=1e-6)


def test_update_vectors_refuses_a_layout_that_does_not_match_the_new_rows():
    with pytest.raises(ValueError):
        update_vectors(None, np.array([-1, -1]), unit(3, 8, 0), 8)


# ---------------------------------------------------------------- the keyword index alone

TEXTS = [" ".join(np.random.default_rng(i).choice(WORDS, 5 + i % 40)) + f" item{i}" for i in range(300)] + [
    "", "salt salt salt salt", "the of and", "x"]  # (no terms: a placeholder; one term many times)


def test_keyword_counts_are_read_back_exactly():
    kw = KeywordIndex.build(TEXTS)
    counts = kw._counts()
    assert counts is not None
    terms, doc, term, tf = counts
    salt = terms.index("salt")
    assert tf[(doc == 301) & (term == salt)].tolist() == [4]


@pytest.mark.parametrize("case", ["middle", "first and last", "all new", "reordered"])
def test_keyword_update_scores_as_a_whole_rebuild(case):
    old = KeywordIndex.build(TEXTS)
    n = len(TEXTS)
    if case == "middle":
        old_rows = np.r_[np.arange(0, 100), [-1, -1], np.arange(110, n)]
        texts = TEXTS[:100] + ["copper salt ledger new", "harbour pilot anchor anchor"] + TEXTS[110:]
    elif case == "first and last":
        old_rows = np.r_[[-1], np.arange(1, n - 1), [-1]]
        texts = ["lighthouse storm"] + TEXTS[1:n - 1] + ["quarry forge mill"]
    elif case == "all new":
        old_rows = np.full(3, -1)
        texts = ["a harbour", "two harbours", "canal"]
    else:
        old_rows = np.r_[np.arange(150, n), np.arange(0, 150)]
        texts = TEXTS[150:] + TEXTS[:150]
    new = KeywordIndex.updated(old, old_rows, texts)
    full = KeywordIndex.build(texts)
    assert new.size == full.size == len(texts)
    assert {t for t in full._vocab} == {t for t in new._vocab}  # terms no row holds are gone
    for q in ["harbour", "copper salt", "item7 storm", "salt", "anchor pilot tide", "item105"]:
        s1, r1 = new.search(q, 400)
        s2, r2 = full.search(q, 400)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(s1, s2)  # bit for bit
        assert new.idf(q.split()[0]) == pytest.approx(full.idf(q.split()[0]))


def test_keyword_index_from_postings_grouped_by_term_scores_as_build(monkeypatch):
    from collections import Counter

    import tqa.keywords

    monkeypatch.setattr(tqa.keywords, "SCORED_BLOCK", 7)  # scored in many blocks, some splitting a term
    by_term: dict[str, list[tuple[int, int]]] = {}
    for row, text in enumerate(TEXTS):
        for term, count in Counter(KeywordIndex.analyze(text) or ["\u2205"]).items():
            by_term.setdefault(term, []).append((row, count))
    terms = sorted(by_term)
    indptr = np.cumsum([0] + [len(by_term[t]) for t in terms])
    rows = np.array([r for t in terms for r, _ in by_term[t]])
    counts = np.array([c for t in terms for _, c in by_term[t]])
    made = KeywordIndex.from_postings(terms, indptr, rows, counts, len(TEXTS))
    full = KeywordIndex.build(TEXTS)
    assert set(made._vocab) == set(full._vocab)
    for q in ["harbour", "copper salt", "item7 storm", "salt", "anchor pilot tide", "item105", "salt salt harbour"]:
        s1, r1 = made.search(q, 400)
        s2, r2 = full.search(q, 400)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(s1, s2)  # bit for bit
    assert made._counts() is not None  # an update can read its counts back


def test_keyword_update_falls_back_to_a_rebuild_when_counts_do_not_read_back(monkeypatch):
    old = KeywordIndex.build(TEXTS)
    old._bm25.scores["data"] = old._bm25.scores["data"] * np.float32(1.001)  # not scores bm25s would compute
    assert old._counts() is None
    texts = TEXTS[:-1]
    new = KeywordIndex.updated(old, np.arange(len(texts)), texts)
    np.testing.assert_array_equal(new.search("salt", 5)[0], KeywordIndex.build(texts).search("salt", 5)[0])


# ---------------------------------------------------------------- whole updates against full rebuilds


def write_file(corpus: Path, i: int, sections: int = 6, extra: str = "") -> None:
    rng = np.random.default_rng(i)
    body = "".join(f"## Part {i}.{s}\n\n" + " ".join(rng.choice(WORDS, 40)) + f" record {i} {s}.\n\n"
                   + ("" if s % 2 else " ".join(rng.choice(WORDS, 30)) + f" second paragraph {s}.\n\n")
                   for s in range(sections))  # (every other section has two paragraphs: units)
    (corpus / f"file-{i:03d}.md").write_text(f"# File {i}\n\n{body}{extra}", encoding="utf-8")


def make_corpus(folder: Path, n: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_file(folder, i)
    return folder


QUESTIONS = ["harbour treaty", "copper tariff customs", "storm at the lighthouse", "record 3 2", "grain mill river"]


def assert_same_as_rebuild(index: Path, corpus: Path, tmp_path: Path, settings: Settings | None = None) -> None:
    """The updated index answers as a full rebuild of the same corpus: the same chunk table, files, vectors row by
    row, exact vector search results and BM25 scores."""
    fresh = tmp_path / f"fresh-{len(list(tmp_path.iterdir()))}"
    build_index(corpus, fresh, embedder=FakeEmbedder(), settings=settings)
    with load_index(index) as a, load_index(fresh) as b:
        assert [c.to_dict() for c in a.chunks] == [c.to_dict() for c in b.chunks]
        assert a.manifest.files == b.manifest.files
        assert a.manifest.counts == b.manifest.counts
        np.testing.assert_allclose(a.vectors.vectors(), b.vectors.vectors(), atol=2e-3)
        np.testing.assert_allclose(a.units.vectors(), b.units.vectors(), atol=2e-3)
        emb = FakeEmbedder()
        for q in QUESTIONS:
            s1, r1 = a.keywords.search(q, 20)
            s2, r2 = b.keywords.search(q, 20)
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(s1, s2)
            qv = emb.encode([q])[0]
            for v in (a.vectors, b.vectors):
                if v.nlist is not None:
                    v.nprobe = v.nlist  # every list: exact over the rows
                if isinstance(v, CompressedVectors):
                    v.depth = v.ntotal
            s1, r1 = a.vectors.search(qv, 10)
            s2, r2 = b.vectors.search(qv, 10)
            np.testing.assert_allclose(np.sort(s1), np.sort(s2), atol=2e-3)
            assert len(set(r1.tolist()) ^ set(r2.tolist())) <= 2  # (ties at the border may fall either way)


def vector_info(index: Path):  # noqa: ANN201
    with load_index(index) as ix:
        return ix.manifest.vector_index


@pytest.mark.parametrize("change", ["add", "change", "remove first", "remove last", "change chunk count",
                                    "rename"])
def test_one_file_updated_answers_as_a_full_rebuild(tmp_path, small_ivf, change):
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    assert vector_info(index).nlist is not None and vector_info(index).changed == 0  # an inverted file
    if change == "add":
        write_file(corpus, 99)
    elif change == "change":
        write_file(corpus, 7, extra="## Revision\n\nA new closing paragraph about ferries.\n")
    elif change == "remove first":
        (corpus / "file-000.md").unlink()
    elif change == "remove last":
        (corpus / "file-015.md").unlink()
    elif change == "change chunk count":
        write_file(corpus, 8, sections=2)
    else:
        (corpus / "file-004.md").rename(corpus / "file-zz.md")
    s = build_index(corpus, index, embedder=FakeEmbedder())
    assert s.published
    info = vector_info(index)
    if change != "rename":
        assert info.changed and info.changed > 0  # the trained index was kept and changed in place
    assert_same_as_rebuild(index, corpus, tmp_path)


def test_all_files_changed_trains_again_and_answers_as_a_rebuild(tmp_path, small_ivf):
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    for i in range(16):
        write_file(corpus, i, extra=f"## Note\n\nAmended {i}.\n")
    build_index(corpus, index, embedder=FakeEmbedder())
    assert vector_info(index).changed == 0  # trained again
    assert_same_as_rebuild(index, corpus, tmp_path)


def test_updates_add_up_to_a_new_training(tmp_path, small_ivf):
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    seen = []
    for i in range(8):
        write_file(corpus, 100 + i)
        build_index(corpus, index, embedder=FakeEmbedder())
        seen.append(vector_info(index).changed)
    assert seen[0] > 0 and seen[1] > seen[0]  # counted across updates ...
    assert 0 in seen[2:]  # ... until past the share: trained again
    assert_same_as_rebuild(index, corpus, tmp_path)


def test_compact_trains_again_without_embedding(tmp_path, small_ivf):
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    write_file(corpus, 50)
    build_index(corpus, index, embedder=FakeEmbedder())
    assert vector_info(index).changed
    before = current_generation(index)
    emb = FakeEmbedder()
    compact_index(index, embedder=emb)
    assert emb.embedded <= 64  # the calibration probes at most: no chunk embedded again
    assert current_generation(index) != before
    assert vector_info(index).changed == 0
    assert_same_as_rebuild(index, corpus, tmp_path)


@pytest.mark.parametrize("threshold", [0, 100])
def test_an_update_at_the_compression_threshold(tmp_path, small_ivf, monkeypatch, threshold):
    monkeypatch.setattr(vectors, "PQ_MIN_VECTORS", 64)
    monkeypatch.setattr(vectors, "PQ_TRAIN_MIN", 64)
    monkeypatch.setenv("TQA_COMPRESS_ABOVE", str(threshold))
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    n = load_index(index).manifest.counts.chunks
    assert n < 100  # with threshold 100 the index crosses it when files are added (at 0 it stays compressed)
    for i in range(3):
        write_file(corpus, 200 + i)
    build_index(corpus, index, embedder=FakeEmbedder())
    with load_index(index) as ix:
        assert ix.manifest.counts.chunks > n
        assert isinstance(ix.vectors, CompressedVectors) == (ix.manifest.counts.chunks > threshold)
    (corpus / "file-003.md").unlink()
    build_index(corpus, index, embedder=FakeEmbedder())
    assert_same_as_rebuild(index, corpus, tmp_path)


KILLER = """
import os, signal, sys
from tqa import vectors
from tqa.indexing import build_index
from tests.support import FakeEmbedder
vectors.EXACT_MAX, vectors.IVF_MIN_VECTORS = 40, 64
owner = {"splice": vectors.FaissVectors, "save": vectors.FaissVectors}[sys.argv[3]]
name = {"splice": "splice", "save": "save"}[sys.argv[3]]
original = getattr(owner, name)
def boom(*a, **k):
    if sys.argv[3] == "save":
        original(*a, **k)  # half the generation written
    os.kill(os.getpid(), signal.SIGKILL)
setattr(owner, name, boom)
build_index(sys.argv[1], sys.argv[2], embedder=FakeEmbedder())
"""


@pytest.mark.parametrize("where", ["splice", "save"])
def test_a_kill_during_an_update_leaves_the_previous_generation_live(tmp_path, small_ivf, where):
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    live = current_generation(index)
    with load_index(index) as ix:
        before = [c.to_dict() for c in ix.chunks]
    write_file(corpus, 77)
    (corpus / "file-002.md").unlink()
    proc = subprocess.run([sys.executable, "-c", KILLER, str(corpus), str(index), where], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert current_generation(index) == live
    with load_index(index) as ix:
        assert [c.to_dict() for c in ix.chunks] == before
    build_index(corpus, index, embedder=FakeEmbedder())  # the next update goes through
    assert_same_as_rebuild(index, corpus, tmp_path)


# ---------------------------------------------------------------- tqa index --compact


def test_cli_compact(tmp_path, small_ivf, monkeypatch, capsys):
    import tqa.indexing
    from tqa.cli import main

    monkeypatch.setattr(tqa.indexing, "load_embedder", lambda *a: FakeEmbedder())
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    write_file(corpus, 60)
    build_index(corpus, index, embedder=FakeEmbedder())
    assert vector_info(index).changed
    assert main(["index", "--compact", "--index", str(index), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["published"] and summary["chunks_total"] == load_index(index).manifest.counts.chunks
    assert vector_info(index).changed == 0
    assert_same_as_rebuild(index, corpus, tmp_path)


@pytest.mark.parametrize("args", [["--rebuild"], ["--model", "other"], ["--force"]])
def test_cli_compact_refuses_what_would_change_the_index(tmp_path, capsys, args):
    from tqa.cli import main

    assert main(["index", "--compact", "--index", str(tmp_path / "index"), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --compact") and err.count("\n") == 1


def test_cli_compact_of_no_index_is_one_line(tmp_path, capsys):
    from tqa.cli import main

    assert main(["index", "--compact", "--index", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "nothing").exists()  # nothing created


def test_compact_with_another_model_is_refused_in_one_line_and_changes_nothing(tmp_path):
    from tqa.errors import IndexMismatch

    from .tune_fakes import NamedFake

    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    before = current_generation(index)
    with pytest.raises(IndexMismatch) as err:
        compact_index(index, embedder=NamedFake("another-model"))
    message = str(err.value)
    assert "built with model" in message and "another-model" in message and "tqa index --rebuild" in message
    assert "\n" not in message and current_generation(index) == before
