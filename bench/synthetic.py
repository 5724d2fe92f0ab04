"""Large tqa indexes with the structure of real ones, without embedding a million texts.

Every synthetic chunk is made from real MS MARCO passages and their real embeddings (``base_texts``,
``base_vectors``): chunk j copies passage a's text and its vector is ``normalize(E[a] + t * E[b] + sigma * g)``,
a real embedding mixed with a little of another real one (t uniform in [0, MIX]) plus isotropic noise of norm
about SIGMA. So vectors keep the anisotropy and cluster structure of real embeddings (on which approximate
search quality means something), and no two are identical. Every fourth chunk holds two passages as two
paragraphs, and so has two units, each with its own perturbed vector, as multi-paragraph sections do in tqa.

The keyword index is built from the passages' analysed tokens, computed once per passage and reused (the same
tokens ``KeywordIndex.build`` would compute from the same text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, overload

import numpy as np

from tqa.abstention import detect_language
from tqa.chunking import Chunk, sentence_spans
from tqa.config import ChunkSettings
from tqa.index import Index
from tqa.keywords import KeywordIndex, analyzer_settings
from tqa.manifest import THRESHOLD_FLOOR, Calibration, Counts, FileEntry, Manifest, ModelInfo
from tqa.retrieval import calibrate, name_prefixes
from tqa.vectors import FaissVectors

SIGMA = 0.5
MIX = 1.0
UNIT_EVERY = 4
PER_DOC = 50
BLOCK = 100_000


def perturb(base: np.ndarray, a: np.ndarray, b: np.ndarray, rng: np.random.Generator, mix: float | None = None,
            sigma: float | None = None) -> np.ndarray:
    """normalize(E[a] + t E[b] + sigma g), row by row, float32."""
    mix = MIX if mix is None else mix
    sigma = SIGMA if sigma is None else sigma
    d = base.shape[1]
    t = rng.uniform(0, mix, size=(len(a), 1)).astype(np.float32)
    g = rng.standard_normal((len(a), d), dtype=np.float32) * np.float32(sigma / np.sqrt(d))
    v = base[a] + t * base[b] + g
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def held_out_queries(base: np.ndarray, n: int, seed: int = 99) -> np.ndarray:
    """Query vectors drawn like the data but not in it (in-distribution queries for recall)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
    return perturb(base, a, b, rng)


def synthetic_draws(n: int, nb: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, two) of ``n`` chunks over ``nb`` passages: chunk j copies passage a[j], and b[j] after it where
    two[j] (every UNIT_EVERY-th chunk); its vector mixes in b[j] either way."""
    a = rng.integers(0, nb, n)
    b = rng.integers(0, nb, n)
    return a, b, (np.arange(n) % UNIT_EVERY) == 0


def unit_passages(a: np.ndarray, b: np.ndarray, two: np.ndarray) -> np.ndarray:
    """The passage of each unit row: (a, b) of each two-paragraph chunk, in chunk order."""
    return np.stack([a[two], b[two]], axis=1).reshape(-1)


def vector_blocks(base: np.ndarray, a: np.ndarray, b: np.ndarray, rng: np.random.Generator, *,
                  mix: float | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 vectors) of rows ``perturb(base, a, b)``, BLOCK rows at a time, drawn from ``rng`` in
    order: the same rows whether they are gathered in memory or written to disk a block at a time."""
    for s in range(0, len(a), BLOCK):
        e = min(len(a), s + BLOCK)
        yield s, perturb(base, a[s:e], b[s:e], rng, mix=mix)


class SyntheticChunks(Sequence[Chunk]):
    """The chunks of the draws (a, b, two), made when read: a list of ten million Chunk objects would not fit.
    Chunk j is of document ``doc-{j // PER_DOC}``; chunks of a document are separated by a blank line."""

    def __init__(self, a: np.ndarray, b: np.ndarray, two: np.ndarray, base_texts: list[str]):
        self._a, self._b, self._two, self._texts = a, b, two, base_texts
        self._sentences = [sentence_spans(t) for t in base_texts]
        lengths = np.array([len(t) for t in base_texts], dtype=np.int64)
        step = lengths[a] + np.where(two, lengths[b] + 2, 0) + 2  # the chunk and the blank line after it
        before = np.cumsum(step) - step
        first = (np.arange(len(a)) // PER_DOC) * PER_DOC
        self._offsets = before - before[first]

    def __len__(self) -> int:
        return len(self._a)

    @overload
    def __getitem__(self, j: int) -> Chunk: ...

    @overload
    def __getitem__(self, j: slice) -> list[Chunk]: ...

    def __getitem__(self, j: int | slice) -> Chunk | list[Chunk]:
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(len(self)))]
        if not -len(self) <= j < len(self):
            raise IndexError(j)
        j = j % len(self)
        ta = self._texts[self._a[j]]
        unit_spans: tuple[tuple[int, int], ...] = ()
        text, sent = ta, self._sentences[self._a[j]]
        if self._two[j]:
            tb = self._texts[self._b[j]]
            text = f"{ta}\n\n{tb}"
            shift = len(ta) + 2
            sent = sent + tuple((x + shift, y + shift) for x, y in self._sentences[self._b[j]])
            unit_spans = ((0, len(ta)), (shift, len(text)))
        offset = int(self._offsets[j])
        return Chunk(source_of(j // PER_DOC), offset, offset + len(text), text, (), None, sent, unit_spans)

    def __iter__(self) -> Iterator[Chunk]:
        return (self[j] for j in range(len(self)))


def source_of(doc: int) -> str:
    return f"doc-{doc:06d}.txt"


def synthetic_manifest(n: int, units: int, base_texts: list[str], vectors: Any, unit_index: Any,
                       embedder: Any = None) -> Manifest:
    """The manifest of a synthetic index of ``n`` chunks (PER_DOC a document) and ``units`` unit rows, its
    abstention threshold the floor (``calibrate`` sets it when an embedder is at hand)."""
    import time

    docs = -(-n // PER_DOC)
    return Manifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        corpus="(synthetic)",
        model=ModelInfo(getattr(embedder, "name", "synthetic"), vectors.dim, getattr(embedder, "max_tokens", 256)),
        precision=getattr(embedder, "precision", None),
        chunking=ChunkSettings(),
        analyzer=analyzer_settings(),
        vector_index=replace(vectors.describe(), units=unit_index.describe()),
        files={source_of(d): FileEntry(chunks=min(PER_DOC, n - d * PER_DOC)) for d in range(docs)},
        skipped=(),
        counts=Counts(docs, n, units),
        calibration=Calibration(abstain_threshold=THRESHOLD_FLOOR),
        names=tuple(name_prefixes(base_texts)),
        language=detect_language(base_texts),  # recorded as a build records it (its chunks are copies of these)
    )


def synthetic_index(n: int, base_texts: list[str], base_vectors: np.ndarray, embedder: Any = None, *,
                    seed: int = 0, kind: str = "auto") -> tuple[Index, dict[str, Any]]:
    """An in-memory Index of ``n`` chunks (``path`` None), and build facts (seconds per stage, sizes).

    ``embedder`` (optional) calibrates the abstention threshold as a build would; without it the threshold is
    the floor.
    """
    import time

    rng = np.random.default_rng(seed)
    base = np.ascontiguousarray(base_vectors, dtype=np.float32)
    nb, dim = base.shape
    facts: dict[str, Any] = {}
    t0 = time.perf_counter()
    a, b, two = synthetic_draws(n, nb, rng)
    vectors = np.empty((n, dim), dtype=np.float32)
    for s, v in vector_blocks(base, a, b, rng):
        vectors[s:s + len(v)] = v
    ua = unit_passages(a, b, two)
    units = np.empty((len(ua), dim), dtype=np.float32)
    for s, v in vector_blocks(base, ua, ua, rng, mix=0.0):
        units[s:s + len(v)] = v
    facts["vectors_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tokens = [KeywordIndex.analyze(t) for t in base_texts]
    chunks: list[Chunk] = list(SyntheticChunks(a, b, two, base_texts))
    facts["chunks_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    keywords = synthetic_keywords(tokens, a, np.where(two, b, -1))
    facts["keywords_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vec_index = build_vectors(vectors, dim, kind)
    facts["vectors_index_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    unit_index = build_vectors(units, dim, kind)
    facts["units_index_s"] = time.perf_counter() - t0
    facts["chunks"], facts["units"] = n, len(units)
    facts["raw_vector_bytes"] = int(vectors.nbytes + units.nbytes)

    manifest = synthetic_manifest(n, len(units), base_texts, vec_index, unit_index, embedder)
    data = Index(manifest=manifest, chunks=chunks, vectors=vec_index, units=unit_index, keywords=keywords)
    if embedder is not None:
        data.manifest = replace(manifest, calibration=calibrate(embedder, data))
    return data, {"vector_matrix": vectors, "unit_matrix": units, **facts}


def synthetic_keywords(tokens: list[list[str]], a: np.ndarray, b: np.ndarray) -> KeywordIndex:
    """The keyword index of rows that copy passages: row j holds passage ``a[j]``'s terms (``tokens``, analysed),
    and passage ``b[j]``'s after them where ``b[j] >= 0``; the index ``KeywordIndex.from_terms`` makes of those
    rows' terms, built term by term from the passages' own postings (``KeywordIndex.from_postings``), so that ten
    million rows take seconds and little more memory than their postings, not a list of terms a row."""
    from collections import Counter

    n = len(a)
    passages: dict[str, list[tuple[int, int]]] = {}  # term -> (passage, count)
    for p, terms in enumerate(tokens):
        for term, count in Counter(terms or ["\u2205"]).items():
            passages.setdefault(term, []).append((p, count))
    groups = []  # the rows that copy each passage as their first part, and as their second
    for role in (a, b):
        order = np.argsort(role, kind="stable")
        starts = np.searchsorted(role[order], np.arange(len(tokens) + 1))
        groups.append((order, starts))
    terms = list(passages)
    indptr = np.zeros(len(terms) + 1, dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for i, term in enumerate(terms):
        rows, counts = [], []
        for order, starts in groups:
            for p, count in passages[term]:
                members = order[starts[p]:starts[p + 1]]
                rows.append(members)
                counts.append(np.full(len(members), count, dtype=np.int32))
        r, c = np.concatenate(rows), np.concatenate(counts)
        o = np.argsort(r, kind="stable")
        r, c = r[o], c[o]
        first = np.concatenate(([True], r[1:] != r[:-1]))[:len(r)]  # a row holding it twice: one posting
        starts_at = np.flatnonzero(first)
        parts.append((r[first], np.add.reduceat(c, starts_at) if len(c) else c))
        indptr[i + 1] = indptr[i] + len(starts_at)
    rows_all = np.empty(int(indptr[-1]), dtype=np.int32)
    counts_all = np.empty(int(indptr[-1]), dtype=np.int32)
    for i, (r, c) in enumerate(parts):
        rows_all[indptr[i]:indptr[i + 1]], counts_all[indptr[i]:indptr[i + 1]] = r, c
    del parts
    keep = np.diff(indptr) > 0
    if not keep.all():  # (a term of passages no row copies)
        terms = [t for t, k in zip(terms, keep, strict=True) if k]
        indptr = np.concatenate(([0], indptr[1:][keep]))
    return KeywordIndex.from_postings(terms, indptr, rows_all, counts_all, n)


def build_vectors(vectors: np.ndarray, dim: int, kind: str = "auto") -> FaissVectors:
    """FaissVectors.build with an index type ("flat", "ivf" or "auto")."""
    return FaissVectors.build(vectors, dim, kind)


def documents(data: Index) -> Iterator[tuple[str, str]]:
    """The documents' text, consistent with the chunks' offsets (chunks of a document are separated by a
    blank line), for publishing a synthetic index to disk."""
    source, parts = None, []
    for c in data.chunks:
        if c.source != source:
            if source is not None:
                yield source, "\n\n".join(parts)
            source, parts = c.source, []
        parts.append(c.text)
    if source is not None:
        yield source, "\n\n".join(parts)
