"""The vector index (exact below a size, an inverted file above), the keyword index's scoring, the embedding
precision recorded in the manifest, and a hot path that does no file I/O. No timing assertions."""

from __future__ import annotations

import builtins
import io
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tqa.keywords as keywords
import tqa.vectors as vectors
from tqa import Assistant, build_index
from tqa.config import Settings
from tqa.errors import IndexMismatch, ModelError, SettingsError
from tqa.index import unit_rows
from tqa.keywords import KeywordIndex
from tqa.retrieval import dense_scores
from tqa.store import read_manifest
from tqa.vectors import FaissVectors, choose_index_type, ivf_settings

from .support import FakeEmbedder


def clustered(n: int, dim: int = 48, centers: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised vectors around a few hundred centres (the shape of real embeddings: clusters, not uniform
    noise), and held-out queries drawn the same way."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        v = c[rng.integers(0, centers, m)] + 0.35 * rng.standard_normal((m, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return draw(n), draw(60)


def exact_top(x: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> set[int]:
    rows = np.arange(len(x)) if rows is None else rows
    s = x[rows] @ q
    return set(rows[np.argsort(-s)[:k]].tolist())


@pytest.fixture
def small_limits(monkeypatch):
    """Approximate search from 2,000 vectors on (the default limit is 20,000), so that tests stay small."""
    monkeypatch.setattr(vectors, "EXACT_MAX", 2000)
    monkeypatch.setattr(vectors, "FILTER_EXACT_MAX", 500)


def test_index_type_is_chosen_by_size(small_limits, tmp_path):
    assert choose_index_type(2000) == "flat" and choose_index_type(2001) == "ivf"
    x, _ = clustered(1500)
    assert FaissVectors.build(x, x.shape[1]).kind == "flat"
    x, _ = clustered(6000)
    v = FaissVectors.build(x, x.shape[1])
    assert v.kind == "ivf"
    d = v.describe()
    assert d.type == "faiss.IndexIVFFlat" and not d.exact and (d.nlist, d.nprobe) == ivf_settings(6000)
    # nprobe is a search-time setting: an index saved with another one searches with the current one
    v.nprobe = 1
    path = tmp_path / "v.faiss"
    v.save(path)
    assert FaissVectors.load(path).describe().nprobe == ivf_settings(6000)[1]
    # too few vectors to train an inverted file: exact, whatever was asked
    assert FaissVectors.build(x[:100], x.shape[1], "ivf").kind == "flat"


def test_ivf_settings_grow_with_size():
    assert ivf_settings(1_000_000) == (4000, 125)
    nlist, nprobe = ivf_settings(100_000)
    assert nlist == 1265 and nprobe == 96
    for n in (700, 20_001, 300_000):
        nlist, nprobe = ivf_settings(n)
        assert 16 <= nlist <= n // 39 or nlist == 16
        assert 1 <= nprobe <= nlist


def test_approximate_recall_on_clustered_vectors(small_limits):
    x, queries = clustered(8000)
    v = FaissVectors.build(x, x.shape[1])
    assert v.kind == "ivf"
    recall = np.mean([len(set(v.search(q, 10)[1].tolist()) & exact_top(x, q, 10)) / 10 for q in queries])
    assert recall >= 0.95


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_take_returns_the_stored_vectors_also_after_save_and_load(kind, small_limits, tmp_path: Path):
    x, _ = clustered(3000)
    v = FaissVectors.build(x, x.shape[1], kind)
    assert v.kind == kind
    rows = np.array([0, 17, 2999, 17, 1500])
    assert np.array_equal(v.take(rows), x[rows])
    v.save(tmp_path / "v.faiss")
    w = FaissVectors.load(tmp_path / "v.faiss")
    assert w.kind == kind and w.ntotal == 3000 and w.describe() == v.describe()
    assert np.array_equal(w.take(rows), x[rows])
    assert np.array_equal(w.vectors(), x)
    assert w.take(np.zeros(0, dtype=np.int64)).shape == (0, x.shape[1])


@pytest.mark.parametrize("kind", ["flat", "ivf"])
@pytest.mark.parametrize("share", [0.005, 0.3])  # the exact path for few rows, the selector path for many
def test_filtered_search_returns_only_allowed_rows(kind, share, small_limits):
    x, queries = clustered(6000, seed=1)
    v = FaissVectors.build(x, x.shape[1], kind)
    rng = np.random.default_rng(2)
    allowed = np.sort(rng.choice(len(x), int(len(x) * share), replace=False))
    recalls = []
    for q in queries[:20]:
        scores, rows = v.search(q, 10, allowed)
        assert len(rows) == 10 and set(rows.tolist()) <= set(allowed.tolist())
        assert np.all(np.diff(scores) <= 1e-6)  # best first
        assert np.allclose(scores, x[rows] @ q, atol=1e-5)  # scores are exact
        recalls.append(len(set(rows.tolist()) & exact_top(x, q, 10, allowed)) / 10)
    assert np.mean(recalls) >= (1.0 if kind == "flat" else 0.95)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_search_never_pads_with_minus_one(kind, small_limits):
    x, queries = clustered(3000, seed=3)
    v = FaissVectors.build(x, x.shape[1], kind)
    allowed = np.array([5, 9, 2000])
    scores, rows = v.search(queries[0], 10, allowed)
    assert sorted(rows.tolist()) == [5, 9, 2000] and len(scores) == 3
    assert len(v.search(queries[0], 5000)[1]) == 3000
    rows = v.search(queries[0], 2000)[1]  # more than the lists scanned by default hold: every list is scanned
    assert len(rows) == 2000 == len(set(rows.tolist()))
    assert len(v.search(queries[0], 10, np.zeros(0, dtype=np.int64))[1]) == 0


# ---------------------------------------------------------------- the keyword index scores as bm25s does


def bm25s_of(texts: list[str]):
    """bm25s's own index of the same analysed texts, as KeywordIndex.build makes it."""
    import bm25s

    reference = bm25s.BM25()
    reference.index([KeywordIndex.analyze(t) or ["\u2205"] for t in texts], show_progress=False)
    return reference


def reference_bm25(reference, query: str, n: int, allowed: np.ndarray | None = None):
    """tqa's keyword search before the change: bm25s's get_scores over every row."""
    terms = [t for t in KeywordIndex.analyze(query) if t in reference.vocab_dict]
    if not terms:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    scores = reference.get_scores(terms)
    if allowed is not None:
        mask = np.zeros(len(scores), dtype=bool)
        mask[allowed] = True
        scores = np.where(mask, scores, 0.0)
    n = min(n, len(scores))
    top = np.argpartition(-scores, n - 1)[:n]
    top = top[np.argsort(-scores[top], kind="stable")]
    top = top[scores[top] > 0]
    return scores[top].astype(np.float32), top


WORDS = ("trafficking victims police shelters funding law sweden purchase sex labour migrants border data "
         "analytics social media recruit payments protocol countries responsibilities protection").split()


class Adds:
    """Which adds a keyword search runs (keywords._compiled_add): numpy's ``add.at``, or the compiled loop (the fast
    extra, which ``make test`` installs), with the compiled calls made counted."""

    def __init__(self, compiled: bool):
        self.compiled, self.calls = compiled, 0

    def check_used(self, ranges: bool) -> None:
        """The compiled adds ran exactly when they were to: compiled, and the index scored in ranges."""
        assert (self.calls > 0) == (self.compiled and ranges)


@pytest.fixture(params=["numpy", "compiled"])
def adds(request, monkeypatch) -> Adds:
    chosen = Adds(request.param == "compiled")
    if chosen.compiled:
        kernel = keywords._compiled_add()
        assert kernel is not None, "numba is not installed: `make test` installs the fast extra"

        def counted(*args):
            chosen.calls += 1
            return kernel(*args)

        monkeypatch.setattr(keywords, "_compiled_add", lambda: counted)
    else:
        monkeypatch.setattr(keywords, "_compiled_add", lambda: None)
    return chosen


def test_the_compiled_adds_are_numpys_add_at_to_the_last_bit():
    """keywords._add_at compiled does numpy's float32 adds in numpy's order (rows named again and again, values of
    every magnitude, rows of each type a postings file may hold), and refuses a row outside the sums, before
    or after, where numpy raises or wraps round."""
    kernel = keywords._compiled_add()
    assert kernel is not None, "numba is not installed: `make test` installs the fast extra"
    rng = np.random.default_rng(4)
    for dtype in (np.int32, np.uint32, np.int64):
        for n, m in ((1, 5), (17, 1000), (4096, 50_000)):
            rows = rng.integers(0, n, m).astype(dtype)
            values = (rng.standard_normal(m) * 10.0 ** rng.integers(-8, 8, m)).astype(np.float32)
            want = rng.standard_normal(n).astype(np.float32)
            got = want.copy()
            np.add.at(want, rows, values)
            assert kernel(got, rows, values) is True
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    sums = np.zeros(8, dtype=np.float32)
    assert kernel(sums, np.array([0, 8], dtype=np.int32), np.ones(2, dtype=np.float32)) is False
    assert kernel(sums, np.array([-1], dtype=np.int64), np.ones(1, dtype=np.float32)) is False
    assert kernel(sums[:4], np.array([5], dtype=np.int32), np.ones(1, dtype=np.float32)) is False  # (a view's end)
    assert kernel(sums, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)) is True


def test_a_search_within_one_range_never_imports_numba():
    """numba takes 0.15 s to import and a third of a second to compile: an index of up to a million chunks (one
    range of ``SCORE_ROWS``) never asks for it, so a cold question on it costs what it did without the extra."""
    code = ("import sys; from tqa.keywords import KeywordIndex; "
            "k = KeywordIndex.build(['police shelters', 'police law', 'data'] * 100); "
            "assert len(k.search('police', 5)[1]) == 5; print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
    assert keywords._compiled_add() is not None  # (it is installed here: the check above could not pass without it)
    # numba told not to compile (NUMBA_DISABLE_JIT=1, for debugging) would run the loop as Python: numpy adds instead
    code = "import tqa.keywords as k; print(k._compiled_add())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    assert out.stdout.strip() == "None"


def test_the_adds_are_compiled_where_numba_can_keep_no_cache(monkeypatch):
    """numba refuses ``cache=True`` (RuntimeError) where it finds no writable folder for its cache (a read-only
    install and home): the adds are then compiled in each process, not dropped, nor the search failed."""
    import numba

    real = numba.njit

    def no_cache(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function '_add_at': no locator available for file")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", no_cache)
    keywords._compiled_add.cache_clear()
    try:
        kernel = keywords._compiled_add()
        sums = np.zeros(4, dtype=np.float32)
        assert kernel is not None and kernel(sums, np.array([1, 1, 3], dtype=np.int32), np.ones(3, dtype=np.float32))
        assert sums.tolist() == [0.0, 2.0, 0.0, 1.0]
    finally:
        keywords._compiled_add.cache_clear()


def test_a_keyword_index_saved_where_numba_is_installed_loads_where_it_is_not(tmp_path: Path):
    """bm25s names its retrieval backend in the index it saves, and would name numba's where numba is installed;
    a tqa without numba then could not load the index. tqa's indexes name numpy's."""
    k = KeywordIndex.build(["police shelters", "police law", "data", "shelters funding"] * 10)
    k.save(tmp_path / "bm25")
    assert json.loads((tmp_path / "bm25" / "params.index.json").read_text())["backend"] == "numpy"
    code = ("import sys; sys.modules['numba'] = None; from pathlib import Path; from tqa.keywords import KeywordIndex; "
            "print(KeywordIndex.load(Path(sys.argv[1])).search('police shelters', 5)[1].tolist())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bm25")], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == str(k.search("police shelters", 5)[1].tolist())


@pytest.mark.parametrize("span", [None, 7, 1024])  # rows scored at a time: all at once, many ranges, some
@pytest.mark.parametrize("docs", [300, 5000])  # few postings, and postings longer than an eighth of the rows
def test_keyword_scores_match_bm25s(docs, span, monkeypatch, adds):
    if span is not None:
        monkeypatch.setattr(keywords, "SCORE_ROWS", span)
    rng = np.random.default_rng(docs)
    texts = [" ".join(rng.choice(WORDS, rng.integers(3, 25))) for _ in range(docs)]
    k = KeywordIndex.build(texts)
    reference = bm25s_of(texts)
    queries = ["trafficking victims", "law law sweden", "How do police find victims of labour trafficking?",
               "unknownword", "data", "protocol countries responsibilities protection border"]
    for allowed in (None, np.sort(rng.choice(docs, docs // 3, replace=False)), np.array([3, 4, 5])):
        for q in queries:
            for n in (1, 10, 50):
                s1, r1 = reference_bm25(reference, q, n, allowed)
                s2, r2 = k.search(q, n, allowed)
                assert np.array_equal(s1, s2), q  # the same float32 sums
                if len(s1):  # the same rows above the k-th score (ties at the cut may be either)
                    assert set(r1[s1 > s1[-1]].tolist()) == set(r2[s2 > s2[-1]].tolist())
                if allowed is not None:
                    assert set(r2.tolist()) <= set(allowed.tolist())
    adds.check_used(ranges=span is not None and docs > span)


@pytest.mark.parametrize("span", [None, 64])
def test_keyword_searches_in_threads_at_once_each_get_their_own_sums(span, monkeypatch, adds):
    """Each thread adds postings into a buffer of its own, zeroed for every range (keywords._sums): searches
    running at once, and one after another in a thread, give what each gives alone."""
    if span is not None:
        monkeypatch.setattr(keywords, "SCORE_ROWS", span)
    rng = np.random.default_rng(11)
    texts = [" ".join(rng.choice(WORDS, rng.integers(3, 25))) for _ in range(3000)]
    k = KeywordIndex.build(texts)
    queries = ["trafficking victims", "law sweden", "police shelters funding", "data analytics social media",
               "border migrants"] * 8
    alone = [[a.tolist() for a in k.search(q, 20)] for q in queries]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda q: [a.tolist() for a in k.search(q, 20)], queries))
    assert together == alone
    adds.check_used(ranges=span is not None)


def test_positions_at_or_above_a_floor_are_those_numpy_finds():
    """keywords._at_or_above reads the comparison eight bytes at a time: every position is found, at the start
    and end of a word, in adjacent words, ties with the floor included, whatever the length."""
    rng = np.random.default_rng(5)
    for n in (0, 1, 7, 8, 9, 16, 64, 1000, 4096, 1 << 16):
        scores = np.zeros(n, dtype=np.float32)
        hit = rng.random(n) < rng.choice([0.0, 0.001, 0.05, 0.5, 1.0])
        scores[hit] = rng.choice(np.array([1.0, 2.0, 2.5], dtype=np.float32), int(hit.sum()))
        for at in (0, 7, 8, n - 1):
            if 0 <= at < n:
                scores[at] = 2.0
        for floor in (np.float32(0.5), np.float32(2.0), np.float32(3.0)):
            found = keywords._at_or_above(scores, floor)
            assert found.tolist() == np.flatnonzero(scores >= floor).tolist(), (n, floor)


def test_a_rows_similarity_is_the_same_whatever_rows_are_scored_beside_it():
    """vectors.similarities scores each row alone: the same bits for a row in a batch of any size and at any place
    (a BLAS matrix-vector product changes the last bit of rows at the edge of its blocks)."""
    rng = np.random.default_rng(2)
    m = rng.standard_normal((600, 384)).astype(np.float32)
    q = rng.standard_normal(384).astype(np.float32)
    whole = vectors.similarities(m, q)
    assert whole.shape == (600,) and np.allclose(whole, m.astype(np.float64) @ q.astype(np.float64), atol=1e-4)
    for cut in range(1, 33):
        assert np.array_equal(vectors.similarities(m[cut:], q), whole[cut:])
        assert np.array_equal(vectors.similarities(m[:-cut], q), whole[:-cut])
    order = rng.permutation(600)
    assert np.array_equal(vectors.similarities(m[order], q), whole[order])


def test_a_candidates_dense_score_does_not_depend_on_the_other_candidates():
    """retrieval.dense_scores gives a chunk the same score whichever other candidates a search has (a filter or
    another signal changes them): two passages are never swapped by the company they keep."""
    from types import SimpleNamespace

    from tqa.retrieval import dense_scores

    rng = np.random.default_rng(4)
    chunks = rng.standard_normal((700, 384)).astype(np.float32)
    counts = rng.integers(0, 4, 700)
    ptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    units = rng.standard_normal((int(ptr[-1]), 384)).astype(np.float32)
    index = SimpleNamespace(vectors=vectors.StoredVectors.of(chunks), units=vectors.StoredVectors.of(units),
                            unit_ptr=ptr)
    q = rng.standard_normal(384).astype(np.float32)
    rows = np.arange(700)
    whole = dense_scores(index, q, rows)
    for _ in range(40):
        some = np.sort(rng.choice(700, int(rng.integers(1, 700)), replace=False))
        assert np.array_equal(dense_scores(index, q, some), whole[some])


def test_top_k_breaks_ties_by_row_whatever_the_order_of_its_input():
    rng = np.random.default_rng(7)
    scores = rng.choice(np.array([0.1, 0.5, 0.9], dtype=np.float32), 400)  # many ties at every cut
    rows = rng.permutation(10_000)[:400].astype(np.int64)
    expected = sorted(zip((-scores).tolist(), rows.tolist(), strict=True))
    for k in (1, 7, 50, 399, 400, 500):
        for perm in (np.arange(400), rng.permutation(400), rng.permutation(400)):
            s, r = vectors.top_k(scores[perm], rows[perm], k)
            assert list(zip((-s).tolist(), r.tolist(), strict=True)) == expected[:k]


def test_postings_counts_what_a_search_reads():
    k = KeywordIndex.build(["police shelters", "police", "shelters funding", "law"])
    assert k.postings("police shelters") == 4 and k.postings("police police") == 4  # (a repeated term twice)
    assert k.postings("nothing known") == 0 and KeywordIndex.build([]).postings("police") == 0


@pytest.mark.parametrize("span", [None, 3, 16])
def test_keyword_ties_at_the_cut_go_to_the_first_rows(span, monkeypatch, adds):
    if span is not None:
        monkeypatch.setattr(keywords, "SCORE_ROWS", span)
    texts = ["police shelters"] * 40 + ["police"] * 40  # 40 rows of each score
    k = KeywordIndex.build(texts)
    for n in (1, 10, 40, 45):
        s, r = k.search("police shelters", n)
        assert r.tolist() == (list(range(40)) + list(range(40, 80)))[:n]
        s, r = k.search("police", n, allowed=np.arange(30, 80))  # the shorter rows first
        assert r.tolist() == (list(range(40, 80)) + list(range(30, 40)))[:n]
    adds.check_used(ranges=span is not None)


def test_idf_and_span_terms():
    k = KeywordIndex.build(["Police train officers.", "Shelters need funding. Police help.", "Funding funding."])
    assert k.idf("polic") > 0 and k.idf("nosuchterm") == 0.0
    assert k.idf("shelter") > k.idf("polic")  # rarer, more informative
    text = "Shelters need funding. Police help."
    spans = ((0, 22), (23, 35))
    assert k.span_terms(text, spans) == (frozenset(k.analyze(text[0:22])), frozenset(k.analyze(text[23:35])))


# ---------------------------------------------------------------- retrieval helpers computed once per index


def test_unit_rows_and_dense_scores_match_the_plain_loops():
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 4, 200)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.sort(rng.choice(200, 60, replace=False)).astype(np.int64)
    naive = np.concatenate([np.arange(ptr[r], ptr[r + 1]) for r in rows]).astype(np.int64)
    assert np.array_equal(unit_rows(ptr, rows), naive)
    assert len(unit_rows(ptr, np.zeros(0, dtype=np.int64))) == 0

    class Data:
        def __init__(self) -> None:
            self.vectors = FaissVectors.build(clustered(200, 16)[0], 16)
            self.units = FaissVectors.build(clustered(int(ptr[-1]), 16, seed=9)[0], 16)
            self.unit_ptr = ptr

    data = Data()
    q = clustered(1, 16, seed=5)[1][0]
    chunk = vectors.similarities(data.vectors.take(rows), q)  # (each row alone, as tqa scores candidates)
    best = chunk.copy()
    sims, pos = vectors.similarities(data.units.take(naive), q), 0  # tqa's loop before it was vectorised
    for i, r in enumerate(rows):
        if counts[r]:
            best[i] = sims[pos:pos + counts[r]].max()
            pos += counts[r]
    assert np.array_equal(dense_scores(data, q, rows), 0.5 * chunk + 0.5 * best)  # type: ignore[arg-type]


# ---------------------------------------------------------------- a whole index above the exact limit


def many_files(root: Path, n: int) -> Path:
    root.mkdir()
    for i in range(n):
        topic = WORDS[i % len(WORDS)]
        (root / f"note-{i:04d}.txt").write_text(
            f"Note {i} about {topic}: {topic} and {WORDS[(i * 7) % len(WORDS)]} in region {i % 13}.\n",
            encoding="utf-8")
    return root


def test_build_records_the_vector_index_and_answers_from_an_approximate_one(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "EXACT_MAX", 600)
    corpus = many_files(tmp_path / "corpus", 700)
    index = tmp_path / "index"
    emb = FakeEmbedder()
    build_index(corpus, index, embedder=emb)
    m = read_manifest(index)
    vi = m.vector_index
    assert vi.type == "faiss.IndexIVFFlat" and vi.vectors == 700 and not vi.exact
    assert (vi.nlist, vi.nprobe) == ivf_settings(700)
    assert vi.units is not None and vi.units.type == "faiss.IndexFlatIP" and vi.units.vectors == 0
    qa = Assistant.load(index, embedder=emb)
    assert qa.index.vectors.kind == "ivf"
    ans = qa.ask("shelters and funding in region 3", k=5)
    assert len(ans.passages) == 5
    only = qa.ask("shelters", k=3, sources=["note-0042.txt"])
    assert [p.source for p in only.passages] == ["note-0042.txt"]
    # an incremental update re-uses stored vectors (``take`` on the inverted file) and rebuilds
    (corpus / "note-0001.txt").write_text("Note 1, rewritten: border data.\n", encoding="utf-8")
    s = build_index(corpus, index, embedder=emb)
    assert s.chunks_embedded == 1 and s.chunks_total == 700
    qa = Assistant.load(index, embedder=emb)
    assert qa.ask("rewritten border data", k=1).passages[0].source == "note-0001.txt"


def allowed_rows(chunks, sources):
    """The plain definition of a source filter: the chunk rows whose source is one of ``sources``."""
    if not sources:
        return None
    return np.array([i for i, c in enumerate(chunks) if c.source in set(sources)], dtype=np.int64)


def test_a_scope_holds_the_rows_of_its_sources(small_corpus, tmp_path, fake_embedder):
    build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    qa = Assistant.load(tmp_path / "index", embedder=fake_embedder)
    for sources in (None, ["tech.txt"], ["tech.txt", "sweden.md"], ["nothing.txt"]):
        scope = qa.index.scope(sources)
        expected = allowed_rows(qa.index.chunks, sources)
        if expected is None:
            assert scope is None
        else:
            assert np.array_equal(scope.rows, expected)
            assert np.array_equal(scope.unit_rows, unit_rows(qa.index.unit_ptr, expected))
    assert qa.index.scope(["tech.txt"]) is qa.index.scope(("tech.txt",))  # computed once
    assert np.array_equal(qa.index.rows_of("tech.txt"), allowed_rows(qa.index.chunks, ["tech.txt"]))


# ---------------------------------------------------------------- the hot path does no file I/O


def test_asking_does_no_file_io(small_corpus, tmp_path, fake_embedder, monkeypatch):
    build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    qa = Assistant.load(tmp_path / "index", embedder=fake_embedder)
    qa.ask("warm up: what do traffickers use?")  # first use imports the stemmer, as a load would

    def refuse(*args, **kwargs):
        raise AssertionError(f"file I/O while answering: {args[:1]}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    monkeypatch.setattr(os, "open", refuse)
    for mode in ("hybrid", "dense", "bm25"):
        for sources in (None, ["tech.txt"]):
            ans = qa.ask("How do traffickers recruit victims?", k=3, mode=mode, sources=sources)
            assert ans.passages
    assert qa.ask("Who painted the Mona Lisa?").abstained


# ---------------------------------------------------------------- embedding precision


class PreciseFake(FakeEmbedder):
    def __init__(self, precision: str) -> None:
        super().__init__()
        self.precision = precision


def test_precision_is_recorded_and_mixing_is_refused(small_corpus, tmp_path, monkeypatch):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=PreciseFake("bf16"))
    assert read_manifest(index).precision == "bf16"
    (small_corpus / "new.txt").write_text("Shelters\nShelters offer beds.\n", encoding="utf-8")
    with pytest.raises(IndexMismatch, match="bf16 vectors"):
        build_index(small_corpus, index, embedder=PreciseFake("fp32"))
    with pytest.raises(IndexMismatch, match="bf16 vectors"):
        Assistant.load(index, embedder=PreciseFake("fp32"))
    monkeypatch.setenv("TQA_PRECISION", "fp32")
    with pytest.raises(IndexMismatch, match="--rebuild"):  # refused before any model is loaded
        build_index(small_corpus, index)
    monkeypatch.delenv("TQA_PRECISION")
    s = build_index(small_corpus, index, embedder=PreciseFake("bf16"))  # the same precision updates
    assert s.files_added == ["new.txt"]
    s = build_index(small_corpus, index, embedder=PreciseFake("fp32"), rebuild=True)  # a rebuild may change it
    assert read_manifest(index).precision == "fp32"


def test_an_index_is_queried_at_its_own_precision(small_corpus, tmp_path, monkeypatch):
    import tqa.assistant

    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=PreciseFake("fp32"))
    calls = []

    def load(name, precision=None):
        calls.append((name, precision))
        return PreciseFake(precision or "bf16")

    monkeypatch.setattr(tqa.assistant, "load_embedder", load)
    monkeypatch.setenv("TQA_PRECISION", "bf16")  # the process default differs from the index's
    qa = Assistant.load(index)
    assert calls == [("fake-hash-64", "fp32")] and qa.embedder.precision == "fp32"


def test_precision_settings(monkeypatch, small_corpus, tmp_path, fake_embedder):
    import tqa.embedding as E
    from tqa.manifest import Manifest

    build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    recorded = read_manifest(tmp_path / "index").to_dict()
    before = {k: v for k, v in recorded.items() if k != "precision"}
    assert Manifest.from_dict(before).precision == "fp32"  # written before precision was recorded: full precision
    assert Manifest.from_dict({**recorded, "precision": None}).precision is None
    assert Manifest.from_dict({**recorded, "precision": "bf16"}).precision == "bf16"
    monkeypatch.setattr(E, "native_bf16", lambda: False)
    assert E.resolve_precision("auto") == "fp32"
    monkeypatch.setattr(E, "native_bf16", lambda: True)
    assert E.resolve_precision("auto") == "bf16" and E.resolve_precision("FP32") == "fp32"
    assert E.resolve_precision(None) == "bf16"  # not asked for: auto
    monkeypatch.setenv("TQA_PRECISION", "FP32")  # read by the settings, as every TQA_* variable
    assert Settings.from_env().precision == "fp32" and E.resolve_precision(Settings.from_env().precision) == "fp32"
    monkeypatch.setenv("TQA_PRECISION", "fp8")
    with pytest.raises(SettingsError, match="TQA_PRECISION must be one of auto, fp32, bf16"):
        Settings.from_env()
    with pytest.raises(ModelError, match="fp8"):
        E.resolve_precision("fp8")
    monkeypatch.delenv("TQA_PRECISION")
    assert Settings.from_env().precision is None
    assert E.precision_of(FakeEmbedder()) is None and E.precision_of(PreciseFake("bf16")) == "bf16"

    class Wrapper:
        inner = PreciseFake("bf16")

    assert E.precision_of(Wrapper()) == "bf16"


@pytest.mark.model
def test_bf16_vectors_stay_close_to_full_precision(real_embedder):
    from tqa.embedding import load_embedder

    texts = ["How does Sweden's law treat people who buy sex?",
             "Traffickers use social media to recruit victims and cryptocurrencies to move payments. " * 3]
    fp32 = load_embedder(precision="fp32").encode(texts)
    bf16 = load_embedder(precision="bf16").encode(texts)
    assert fp32.dtype == bf16.dtype == np.float32
    assert np.allclose(np.linalg.norm(bf16, axis=1), 1, atol=1e-5)
    assert float((fp32 * bf16).sum(1).min()) > 0.999


@pytest.mark.parametrize("kind", ["flat", "ivf", "compressed"])
def test_saving_a_vector_index_holds_one_serialised_copy_of_it(kind, small_limits, tmp_path):
    import tracemalloc

    rng = np.random.default_rng(5)
    data = rng.standard_normal((20_000, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = (vectors.CompressedVectors.build(data, 32) if kind == "compressed" else
             FaissVectors.build(data, 32, kind))
    size = len(index.to_bytes())
    tracemalloc.start()
    try:
        index.save(tmp_path / "v.faiss")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "v.faiss").read_bytes() == index.to_bytes()
    assert peak < 0.5 * size  # written a piece at a time: not a serialised copy of it, nor a bytes copy of that


@pytest.mark.parametrize("span", [None, 4])
def test_postings_naming_rows_the_index_does_not_have_are_refused_in_one_line(span, monkeypatch, adds):
    from tqa.errors import IndexCorrupt

    if span is not None:
        monkeypatch.setattr(keywords, "SCORE_ROWS", span)
    k = KeywordIndex.build(["police shelters", "police", "shelters funding", "law", "police law", "data"])
    indices = k._bm25.scores["indices"]
    at = k._vocab["polic"]
    a, b = int(k._bm25.scores["indptr"][at]), int(k._bm25.scores["indptr"][at + 1])
    indices[b - 1] = 99  # a row beyond the last
    with pytest.raises(IndexCorrupt, match="rebuild"):
        k.search("police", 3)
    indices[b - 1] = 5
    indices[a] = -1  # before the first
    with pytest.raises(IndexCorrupt, match="rebuild"):
        k.search("police", 3)
    if span is not None:  # a list out of order: the slice of its first range ([0, 4)) holds a row of the next
        indices[a:b] = [4, 1, 0]
        with pytest.raises(IndexCorrupt, match="rebuild"):
            k.search("police", 3)
    adds.check_used(ranges=span is not None)


@pytest.mark.parametrize("array, dtype", [("data", np.float64), ("indices", np.float32), ("indptr", np.float64),
                                           ("indices", np.dtype(np.int32).newbyteorder()), ("indices", np.int64)])
def test_postings_of_another_type_are_refused_when_the_index_loads(array, dtype, tmp_path: Path, monkeypatch, adds):
    """tqa writes float32 scores and integer rows. Other arrays (a file swapped by hand, another tool's index) are
    refused in one line when the index loads, whichever adds would run (float rows, or rows in the other byte order,
    made numba's compiler fail with a page of its own; scores of another type would be added as no build adds
    them); rows of another integer type are read as they are."""
    from tqa.errors import IndexCorrupt

    monkeypatch.setattr(keywords, "SCORE_ROWS", 8)
    k = KeywordIndex.build(["police shelters", "police law", "data", "shelters funding"] * 10)
    k.save(tmp_path / "bm25")
    f = tmp_path / "bm25" / f"{array}.csc.index.npy"
    np.save(f, np.load(f).astype(dtype))
    if np.dtype(dtype).kind in "iu" and np.dtype(dtype).isnative:
        assert [a.tolist() for a in KeywordIndex.load(tmp_path / "bm25").search("police shelters", 5)] == \
            [a.tolist() for a in k.search("police shelters", 5)]
        return
    with pytest.raises(IndexCorrupt, match=f"{array}.*rebuild") as caught:
        KeywordIndex.load(tmp_path / "bm25")
    assert "\n" not in str(caught.value)


def test_the_allowed_rows_bitmap_is_the_one_faiss_reads():
    from tqa.vectors import allowed_bitmap

    bits = allowed_bitmap(np.array([0, 7, 8, 17, 19, -1, 20, 99]), 20)  # -1 and rows past the end never allowed
    assert len(bits) == 3 and bits.dtype == np.uint8
    members = [i for i in range(24) if bits[i >> 3] >> (i & 7) & 1]
    assert members == [0, 7, 8, 17, 19]

