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

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

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
    a = rng.integers(0, nb, n)
    b = rng.integers(0, nb, n)
    two = (np.arange(n) % UNIT_EVERY) == 0
    vectors = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, BLOCK):
        e = min(n, s + BLOCK)
        vectors[s:e] = perturb(base, a[s:e], b[s:e], rng)
    ua = np.stack([a[two], b[two]], axis=1).reshape(-1)  # unit rows: (a, b) of each two-paragraph chunk
    units = np.empty((len(ua), dim), dtype=np.float32)
    for s in range(0, len(ua), BLOCK):
        e = min(len(ua), s + BLOCK)
        units[s:e] = perturb(base, ua[s:e], ua[s:e], rng, mix=0.0)
    facts["vectors_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sentences = [sentence_spans(t) for t in base_texts]
    tokens = [KeywordIndex.analyze(t) for t in base_texts]
    chunks: list[Chunk] = []
    offset, doc = 0, -1
    for j in range(n):
        if j // PER_DOC != doc:
            doc, offset = j // PER_DOC, 0
        source = f"doc-{doc:06d}.txt"
        ta = base_texts[a[j]]
        if two[j]:
            tb = base_texts[b[j]]
            text = f"{ta}\n\n{tb}"
            shift = len(ta) + 2
            sent = sentences[a[j]] + tuple((x + shift, y + shift) for x, y in sentences[b[j]])
            unit_spans: tuple[tuple[int, int], ...] = ((0, len(ta)), (shift, len(text)))
        else:
            text, sent, unit_spans = ta, sentences[a[j]], ()
        chunks.append(Chunk(source, offset, offset + len(text), text, (), None, sent, unit_spans))
        offset += len(text) + 2
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

    sizes: dict[str, int] = {}
    for c in chunks:
        sizes[c.source] = sizes.get(c.source, 0) + 1
    manifest = Manifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        corpus="(synthetic)",
        model=ModelInfo(getattr(embedder, "name", "synthetic"), dim, getattr(embedder, "max_tokens", 256)),
        precision=getattr(embedder, "precision", None),
        chunking=ChunkSettings(),
        analyzer=analyzer_settings(),
        vector_index=replace(vec_index.describe(), units=unit_index.describe()),
        files={source: FileEntry(chunks=count) for source, count in sizes.items()},
        skipped=(),
        counts=Counts(len(sizes), n, len(units)),
        calibration=Calibration(abstain_threshold=THRESHOLD_FLOOR),
        names=tuple(name_prefixes(base_texts)),
        language=detect_language(base_texts),  # recorded as a build records it (its chunks are copies of these)
    )
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
