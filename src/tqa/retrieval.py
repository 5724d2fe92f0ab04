"""Finding passages: dense search, BM25, their fusion, de-duplication, source filters, abstention.

Scores:
- dense: cosine similarity of the question and the chunk's search text (FAISS inner product on normalised
  vectors);
- bm25: BM25 over the same search text;
- hybrid: a weighted reciprocal-rank fusion of the two ranked lists.
The relevance used for abstention is the best dense cosine, compared with a threshold calibrated per index
(see ``calibrate``), because BM25 scores are not comparable across questions or corpora.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .chunking import Chunk
from .errors import BadQuestion
from .store import FaissVectors, KeywordIndex

MODES = ("hybrid", "dense", "bm25")
RRF_K = 60
DENSE_WEIGHT = 1.0
KEYWORD_WEIGHT = 1.0
CANDIDATES = 50  # how deep each list is read before fusion

# Questions no corpus of ours should answer; their best cosine scores show how high an irrelevant match
# scores in a given index. Calibration happens at build time, once per index.
OFF_TOPIC_PROBES = (
    "What is the tallest mountain in Africa?",
    "How do I bake sourdough bread at home?",
    "Who won the football World Cup in 2018?",
    "What is the boiling point of water at sea level?",
    "How do I change a flat tyre on a bicycle?",
    "What is the capital city of Australia?",
    "How many moons does Jupiter have?",
    "What is the best way to learn to play the guitar?",
    "How does photosynthesis work in plants?",
    "What is the recipe for chocolate chip cookies?",
    "Who painted the Mona Lisa?",
    "How fast can a cheetah run?",
    "What programming language should I learn first?",
    "How do I care for a cactus indoors?",
    "What causes the northern lights?",
    "What are the rules of chess castling?",
    "How long does it take to boil an egg?",
    "Which planet is closest to the sun?",
    "How do vaccines train the immune system?",
    "What is the plot of Hamlet?",
    "How do I replace a kitchen faucet?",
    "What is the speed of light in a vacuum?",
    "Which wine goes well with fish?",
    "How do airplanes stay in the air?",
)
DEFAULT_THRESHOLD_FLOOR = 0.15
CALIBRATION_MARGIN = 0.05


@dataclass(frozen=True)
class Hit:
    row: int
    score: float  # the ranking score of the mode used
    dense: float | None  # cosine, when the dense list saw this chunk
    keyword: float | None  # BM25, when the keyword list saw it


def calibrate(embedder: Any, vectors: FaissVectors) -> dict[str, Any]:
    """Measure how well off-topic probe questions match this index; the abstention threshold sits above."""
    if vectors.ntotal == 0:
        return {"abstain_threshold": DEFAULT_THRESHOLD_FLOOR, "probes": 0}
    q = embedder.encode(list(OFF_TOPIC_PROBES))
    best = np.array([float(vectors.search(v, 1)[0][0]) for v in q])
    p90 = float(np.quantile(best, 0.9))
    threshold = max(DEFAULT_THRESHOLD_FLOOR, p90 + CALIBRATION_MARGIN)
    return {
        "abstain_threshold": round(threshold, 4),
        "probes": len(best),
        "probe_best_max": round(float(best.max()), 4),
        "probe_best_p90": round(p90, 4),
        "probe_best_median": round(float(np.median(best)), 4),
    }


def allowed_rows(chunks: list[Chunk], sources: list[str] | None) -> np.ndarray | None:
    if not sources:
        return None
    wanted = set(sources)
    return np.array([i for i, c in enumerate(chunks) if c.source in wanted], dtype=np.int64)


def dense_search(vectors: FaissVectors, qvec: np.ndarray, k: int, allowed: np.ndarray | None) -> list[Hit]:
    scores, rows = vectors.search(qvec, k, allowed)
    return [Hit(int(r), float(s), float(s), None) for s, r in zip(scores, rows, strict=True) if r >= 0]


def keyword_search(keywords: KeywordIndex, question: str, k: int, allowed: np.ndarray | None) -> list[Hit]:
    scores, rows = keywords.search(question, k, allowed)
    return [Hit(int(r), float(s), None, float(s)) for s, r in zip(scores, rows, strict=True)]


def fuse(dense: list[Hit], keyword: list[Hit], *, rrf_k: int = RRF_K, dense_weight: float = DENSE_WEIGHT,
         keyword_weight: float = KEYWORD_WEIGHT) -> list[Hit]:
    """Weighted reciprocal-rank fusion; ties broken by the dense score."""
    acc: dict[int, list[Any]] = {}
    for rank, h in enumerate(dense):
        acc.setdefault(h.row, [0.0, None, None])
        acc[h.row][0] += dense_weight / (rrf_k + rank + 1)
        acc[h.row][1] = h.dense
    for rank, h in enumerate(keyword):
        acc.setdefault(h.row, [0.0, None, None])
        acc[h.row][0] += keyword_weight / (rrf_k + rank + 1)
        acc[h.row][2] = h.keyword
    fused = [Hit(row, s, d, kw) for row, (s, d, kw) in acc.items()]
    fused.sort(key=lambda h: (-h.score, -(h.dense if h.dense is not None else -1.0), h.row))
    return fused


def drop_overlaps(hits: list[Hit], chunks: list[Chunk]) -> list[Hit]:
    """Keep the better-ranked of any two passages that overlap in the same document."""
    kept: list[Hit] = []
    spans: dict[str, list[tuple[int, int]]] = {}
    for h in hits:
        c = chunks[h.row]
        taken = spans.setdefault(c.source, [])
        if any(c.start < b and a < c.end for a, b in taken):
            continue
        taken.append((c.start, c.end))
        kept.append(h)
    return kept


def search(
    chunks: list[Chunk],
    vectors: FaissVectors,
    keywords: KeywordIndex,
    question: str,
    qvec: np.ndarray | None,
    *,
    k: int,
    mode: str,
    sources: list[str] | None = None,
    fusion: dict[str, Any] | None = None,
) -> tuple[list[Hit], float | None]:
    """Ranked, de-duplicated hits and the best dense cosine (the relevance used for abstention)."""
    if mode not in MODES:
        raise BadQuestion(f"Unknown search mode {mode!r}; choose one of {', '.join(MODES)}.")
    allowed = allowed_rows(chunks, sources)
    depth = max(CANDIDATES, 4 * k)
    dense = dense_search(vectors, qvec, depth, allowed) if qvec is not None else []
    best_dense = dense[0].dense if dense else None
    if mode == "dense":
        hits = dense
    elif mode == "bm25":
        hits = keyword_search(keywords, question, depth, allowed)
    else:
        hits = fuse(dense, keyword_search(keywords, question, depth, allowed), **(fusion or {}))
        dense_by_row = {h.row: h.dense for h in dense}
        hits = [Hit(h.row, h.score, dense_by_row.get(h.row, h.dense), h.keyword) for h in hits]
    return drop_overlaps(hits, chunks)[:k], best_dense
