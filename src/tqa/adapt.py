"""Corpus-adaptive ranking: what the ranking should weigh, learned from the corpus itself, without labels.

At build time, sentences are drawn from the corpus and each is searched for as a question (a *pseudo-query*),
its own passage being the answer. So that exact match doesn't decide, the sentence is removed from its passage
first: the passage, and the paragraph (unit) that held the sentence, are embedded again without it, and their
keyword counts are taken without it; any other passage that contains the sentence verbatim (an overlap, a
duplicate) is left out of that query's ranking. Every candidate setting of the ranking is then scored by how
high it ranks the answers (MRR@10):

- ``unit_weight``: the dense score is ``(1 - u) * chunk cosine + u * best unit cosine``: whole passages, their
  best paragraph, or both;
- ``keyword_weight``: how much BM25 earns beside the dense score;
- ``fusion``: ``scores`` (a convex mix of the dense score and BM25 over the question's best BM25) or ``rrf``
  (a weighted mix of reciprocal ranks).

What is decided is the dense signal, ``unit_weight`` (the best one, or among near-equals the one nearest the
shipped setting); BM25 keeps its shipped weight and form, and the best of the whole grid is only reported
(``grid_best``): measured against hand-written questions, sentences from the text favoured keyword matching on one
corpus and disfavoured it on another, both wrongly, while on whole passages against paragraphs they agreed with
the questions on every set (eval/README.md, "Corpus-adaptive ranking: trials"). In one sentence: *tqa weighs a
passage's best paragraph as much as sentences taken out of this corpus are found by it.*

It costs three short encodings per pseudo-query (the sentence, its passage and its paragraph without it), a
few hundred in all whatever the corpus size (a large corpus is sampled), and a few milliseconds of arithmetic
per setting. The result is a small dict, recorded in the manifest with a one-sentence explanation and the
figures it was chosen on.

The module is pure: it takes chunk texts and units, their vectors, and an embedder; it touches no file.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RRF_K = 60  # the usual constant of reciprocal rank fusion
SHIPPED = {"unit_weight": 0.5, "keyword_weight": 0.2, "fusion": "scores"}  # the fixed setting before learning

UNIT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
KEYWORD_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
FUSIONS = ("scores", "rrf")

MAX_QUERIES = 200  # pseudo-queries per corpus: about 600 short encodings
MAX_POOL = 4000  # passages a pseudo-query is ranked among (a random sample of a larger corpus)
MIN_QUERIES = 20  # fewer than this: too little to decide on, keep the shipped setting
MIN_WORDS, MAX_WORDS = 5, 40  # a sentence shorter is a fragment, longer is a paragraph in disguise
# BM25 as bm25s scores it (its "lucene" variant and defaults), computed here for the pool so that the passage
# with its sentence removed can be scored like the others
K1, B = 1.5, 0.75


@dataclass(frozen=True)
class Passage:
    """What learning needs of a chunk: its search text and its units (spans relative to ``text``), with the
    prefix that is embedded before the text and each unit (the section trail)."""

    text: str
    prefix: str = ""
    units: tuple[tuple[int, int], ...] = ()

    @property
    def search_text(self) -> str:
        return self.prefix + self.text


def passages_of(chunks: Sequence[Any]) -> list[Passage]:
    """``Passage`` records of ``tqa.chunking.Chunk`` objects."""
    out = []
    for c in chunks:
        prefix = f"{c.section_label}\n" if c.section else ""
        out.append(Passage(c.text, prefix, tuple(c.units)))
    return out


# ---------------------------------------------------------------- scoring (what retrieval will call)


def fuse(chunk: np.ndarray, unit: np.ndarray, keyword: np.ndarray, settings: dict[str, Any],
         mode: str = "hybrid") -> np.ndarray:
    """The ranking score of each candidate from its three signals: whole-chunk cosine, best-unit cosine (the
    chunk's own cosine when it has no units) and raw BM25 (0 when it has no term of the question)."""
    u = float(settings.get("unit_weight", SHIPPED["unit_weight"]))
    dense = (1 - u) * np.asarray(chunk, dtype=np.float64) + u * np.asarray(unit, dtype=np.float64)
    if mode == "dense":
        return dense
    keyword = np.asarray(keyword, dtype=np.float64)
    if mode == "bm25":
        return keyword
    w = float(settings.get("keyword_weight", SHIPPED["keyword_weight"]))
    if settings.get("fusion", "scores") == "rrf":
        kw_part = np.where(keyword > 0, 1.0 / (RRF_K + _ranks(keyword)), 0.0)
        return (1 - w) / (RRF_K + _ranks(dense)) + w * kw_part
    top = float(keyword.max()) if len(keyword) else 0.0
    return (1 - w) * dense + w * (keyword / top if top > 0 else keyword)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, best first (ties by position)."""
    order = np.argsort(-x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(1, len(x) + 1)
    return r


def describe(settings: dict[str, Any]) -> str:
    u, w = float(settings["unit_weight"]), float(settings["keyword_weight"])
    dense = ("whole passages" if u == 0 else "their best paragraph" if u == 1
             else f"whole passages and their best paragraph ({1 - u:.2f}/{u:.2f})")
    kw = "no keyword score" if w == 0 else (
        f"BM25 at weight {w:.1f}" + (" by reciprocal rank" if settings.get("fusion") == "rrf" else ""))
    return f"dense similarity of {dense}, {kw}"


# ---------------------------------------------------------------- pseudo-queries

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]+(?=\s|$)")
_WORD = re.compile(r"\w+")


def _sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the whole sentences of ``text`` with MIN_WORDS..MAX_WORDS words."""
    out = []
    for m in _SENTENCE.finditer(text):
        a = m.start() + len(m.group(0)) - len(m.group(0).lstrip())
        n = len(_WORD.findall(m.group(0)))
        if MIN_WORDS <= n <= MAX_WORDS:
            out.append((a, m.end()))
    return out


@dataclass(frozen=True)
class PseudoQuery:
    query: str
    target: int  # position of the answer in the pool
    without: str  # the target's search text without the sentence
    unit: int | None  # the target's unit that held the sentence (index into its units), if any
    unit_without: str | None  # that unit's embedded text without the sentence (None: the unit was the sentence)


def draw(passages: Sequence[Passage], pool: Sequence[int] | np.ndarray, n: int, rng: np.random.Generator,
         query_form: str = "sentence") -> list[PseudoQuery]:
    """Up to ``n`` pseudo-queries from the passages of ``pool``, passages in random order, as many sentences of
    each as it takes to reach ``n`` (one each when the pool is large). Only sentences that lie inside one unit
    of their passage, and leave some text in it, qualify.

    ``query_form``: ``sentence`` (the sentence is the query), ``paraphrase`` (each word the sentence shares
    with the rest of its passage is dropped with probability one half, as a reader's own words keep some of the
    text's words and not others)."""
    per = max(1, -(-n // max(len(pool), 1)))
    out: list[PseudoQuery] = []
    for pos in rng.permutation(len(pool)):
        if len(out) >= n:
            break
        p = passages[pool[pos]]
        spans = _sentences(p.text)
        for k in rng.permutation(len(spans))[:per]:
            a, b = spans[int(k)]
            q = _pseudo(p, int(pos), a, b, rng, query_form)
            if q is not None and len(out) < n:
                out.append(q)
    return out


def _pseudo(p: Passage, pos: int, a: int, b: int, rng: np.random.Generator, form: str) -> PseudoQuery | None:
    rest = (p.text[:a] + p.text[b:]).strip()
    if len(_WORD.findall(rest)) < MIN_WORDS:
        return None
    query = p.text[a:b].strip()
    if form == "window":  # a question's length: ten consecutive words of the sentence
        words = query.split()
        if len(words) > 10:
            s = int(rng.integers(len(words) - 9))
            query = " ".join(words[s:s + 10])
    if form == "paraphrase":
        shared = {w.lower() for w in _WORD.findall(rest)}
        words = query.split()
        kept = [w for w in words if _WORD.sub("", w.lower()) == w.lower() or
                "".join(_WORD.findall(w.lower())) not in shared or rng.random() < 0.5]
        query = " ".join(kept) if len(kept) >= 3 else query
    unit = unit_text = None
    for i, (ua, ub) in enumerate(p.units):
        if ua <= a and b <= ub:
            unit = i
            left = (p.text[ua:a] + p.text[b:ub]).strip()
            unit_text = p.prefix + left if len(_WORD.findall(left)) >= 3 else None
            break
    if p.units and unit is None:
        return None  # the sentence straddles two units: neither could be embedded without it alone
    return PseudoQuery(query, pos, p.prefix + rest, unit, unit_text)


# ---------------------------------------------------------------- BM25 over the pool


class _PoolBM25:
    """BM25 over the pool's search texts, able to score one passage as if its text were another."""

    def __init__(self, texts: Sequence[str], analyze: Callable[[str], list[str]]):
        self.analyze = analyze
        self.counts = [Counter(analyze(t)) for t in texts]
        self.lengths = np.array([sum(c.values()) for c in self.counts], dtype=np.float64)
        self.avgdl = float(self.lengths.mean()) if len(self.lengths) else 1.0
        df: Counter[str] = Counter()
        postings: dict[str, list[tuple[int, int]]] = {}
        for i, c in enumerate(self.counts):
            df.update(c.keys())
            for t, tf in c.items():
                postings.setdefault(t, []).append((i, tf))
        n = len(texts)
        self.idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}
        self.postings = {t: (np.array([i for i, _ in p]), np.array([tf for _, tf in p], dtype=np.float64))
                         for t, p in postings.items()}

    def _tf_part(self, tf: np.ndarray | float, length: np.ndarray | float) -> Any:
        return tf / (tf + K1 * (1 - B + B * length / self.avgdl))

    def scores(self, query: str, target: int, target_text: str) -> np.ndarray:
        """Scores of every pool passage, the target scored with ``target_text`` instead of its own."""
        terms = self.analyze(query)
        out = np.zeros(len(self.counts), dtype=np.float64)
        for t in terms:
            p = self.postings.get(t)
            if p is not None:
                rows, tf = p
                out[rows] += self.idf[t] * self._tf_part(tf, self.lengths[rows])
        own = Counter(self.analyze(target_text))
        length = float(sum(own.values()))
        out[target] = sum(self.idf[t] * self._tf_part(float(own[t]), length) for t in terms if own.get(t))
        return out


# ---------------------------------------------------------------- learning


def _grid() -> list[dict[str, Any]]:
    settings = [{"unit_weight": u, "keyword_weight": w, "fusion": "scores"}
                for u in UNIT_WEIGHTS for w in KEYWORD_WEIGHTS]
    settings += [{"unit_weight": u, "keyword_weight": w, "fusion": "rrf"}
                 for u in UNIT_WEIGHTS for w in KEYWORD_WEIGHTS if w > 0]
    return settings


def learn(passages: Sequence[Passage], chunk_vectors: Any, unit_vectors: Any, embedder: Any,
          analyze: Callable[[str], list[str]], *, max_queries: int = MAX_QUERIES, max_pool: int = MAX_POOL,
          seed: int = 0, query_form: str = "sentence") -> dict[str, Any]:
    """The ranking setting this corpus's pseudo-queries find their passages with best (see the module
    docstring), as a small dict: ``unit_weight``, ``keyword_weight``, ``fusion``, ``why`` (one sentence),
    ``queries``, ``mrr`` (the chosen setting's MRR@10 on the pseudo-queries) and ``baseline`` (each single
    signal's and the shipped setting's). ``chunk_vectors`` holds one row per passage; ``unit_vectors`` the
    rows of every passage's units, in order (arrays, or anything that gives the rows of an array of row numbers:
    only the sampled passages' are read). ``analyze`` is the keyword index's analyser."""
    rng = np.random.default_rng(seed)
    n = len(passages)
    rows = np.sort(rng.choice(n, size=min(n, max_pool), replace=False)) if n else np.zeros(0, dtype=np.int64)
    queries = draw(passages, rows, max_queries, rng, query_form)
    if len(queries) < MIN_QUERIES:
        return {**SHIPPED, "queries": len(queries),
                "why": f"only {len(queries)} sentences could be drawn from the corpus to learn from, too few to "
                       "decide on: the shipped setting is kept"}
    pool = _Pool(passages, rows, chunk_vectors, unit_vectors, analyze)
    grid = _grid()
    if pool.units is None:  # no passage has paragraphs of its own: the unit weight means nothing
        grid = [g for g in grid if g["unit_weight"] == 0.0]
    mrr = _reciprocal_ranks(pool, queries, grid, embedder).mean(axis=1)
    return _verdict(grid, mrr, len(queries), pool.units is not None)


class _Pool:
    """The passages pseudo-queries are ranked among: their vectors (a passage's, and its paragraphs'), their
    search texts under BM25, and what each signal scores for one pseudo-query."""

    def __init__(self, passages: Sequence[Passage], rows: np.ndarray, chunk_vectors: Any, unit_vectors: Any,
                 analyze: Callable[[str], list[str]]):
        counts = np.array([len(p.units) for p in passages], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.chunks = np.asarray(chunk_vectors[rows], dtype=np.float32)
        self.counts = counts[rows]
        unit_index = np.concatenate([np.arange(ptr[i], ptr[i + 1]) for i in rows]) if self.counts.sum() else \
            np.zeros(0, dtype=np.int64)
        self.units = np.asarray(unit_vectors[unit_index], dtype=np.float32) if len(unit_index) else None
        self.has = self.counts > 0
        self.starts = (np.cumsum(self.counts) - self.counts)[self.has]
        self.bm25 = _PoolBM25([passages[i].search_text for i in rows], analyze)
        self.texts = [passages[i].text for i in rows]

    def signals(self, q: PseudoQuery, qv: np.ndarray, own: float, own_unit: float | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(dense whole-passage, dense best-paragraph, BM25) scores of every pool passage for ``q``, its own
        passage scored without the sentence (``own``, ``own_unit``: the similarities of its passage and
        paragraph without it), and which passages count (not another one holding the sentence verbatim)."""
        chunk = self.chunks @ qv
        chunk[q.target] = own
        unit = chunk.copy()
        if self.units is not None:
            sims = self.units @ qv
            if q.unit is not None:  # the paragraph that held the sentence, without it (or gone)
                row = int(np.sum(self.counts[:q.target])) + q.unit
                sims[row] = own_unit if own_unit is not None else -np.inf
            unit[self.has] = np.maximum.reduceat(sims, self.starts)
            if not np.isfinite(unit[q.target]):
                unit[q.target] = chunk[q.target]
        kw = self.bm25.scores(q.query, q.target, q.without)
        keep = np.array([i == q.target or q.query not in t for i, t in enumerate(self.texts)], dtype=bool)
        return chunk, unit, kw, keep


def _reciprocal_ranks(pool: _Pool, queries: Sequence[PseudoQuery], grid: list[dict[str, Any]],
                      embedder: Any) -> np.ndarray:
    """Reciprocal ranks, one column per pseudo-query: a row per grid setting, then dense whole passages, dense
    best paragraph and BM25 alone."""
    with_unit = [j for j, q in enumerate(queries) if q.unit is not None and q.unit_without is not None]
    texts = [q.query for q in queries] + [q.without for q in queries]
    vecs = embedder.encode(texts + [queries[j].unit_without for j in with_unit])
    qv, tv = vecs[:len(queries)], vecs[len(queries):2 * len(queries)]
    unit_vec = dict(zip(with_unit, vecs[2 * len(queries):], strict=True))
    rr = np.zeros((len(grid) + 3, len(queries)))
    for j, q in enumerate(queries):
        own_unit = float(unit_vec[j] @ qv[j]) if j in unit_vec else None
        chunk, unit, kw, keep = pool.signals(q, qv[j], float(tv[j] @ qv[j]), own_unit)
        target = int(np.sum(keep[:q.target]))
        for s, settings in enumerate(grid):
            rr[s, j] = _rr(fuse(chunk[keep], unit[keep], kw[keep], settings), target)
        for s, alone in enumerate((chunk, unit, kw)):
            rr[len(grid) + s, j] = _rr(alone[keep], target)
    return rr


def _verdict(grid: list[dict[str, Any]], mrr: np.ndarray, queries: int, units: bool) -> dict[str, Any]:
    """The setting chosen from each setting's MRR@10 (``mrr``: the grid's, then each signal's alone), and why.

    What is decided: the dense signal (the unit weight), with BM25 at its fixed weight. The whole grid is
    measured and reported, but BM25's weight and the fusion form are not taken from it: sentences taken from
    the text misjudge what keyword matching earns for a reader's questions, in both directions (eval/README.md,
    "Corpus-adaptive ranking: trials"), while their verdict on whole passages against paragraphs agreed with
    the real questions on every set measured."""
    decidable = [i for i, g in enumerate(grid) if g["keyword_weight"] == SHIPPED["keyword_weight"]
                 and g["fusion"] == SHIPPED["fusion"]]
    best = decidable[choose([grid[i] for i in decidable], mrr[decidable])]
    chosen = grid[best]
    everything = choose(grid, mrr[:len(grid)])
    # (without units the shipped setting ranks as its unit weight 0 twin)
    same = {**SHIPPED, "unit_weight": SHIPPED["unit_weight"] if units else 0.0}
    shipped = next(i for i, g in enumerate(grid) if g == same)
    baseline = {"chunk": round(float(mrr[len(grid)]), 4), "unit": round(float(mrr[len(grid) + 1]), 4),
                "bm25": round(float(mrr[len(grid) + 2]), 4), "shipped": round(float(mrr[shipped]), 4)}
    at = {grid[i]["unit_weight"]: float(mrr[i]) for i in decidable}
    why = (f"{queries} sentences drawn from the corpus, each searched for as a question with it taken out of "
           f"its passage, found that passage best with {describe(chosen)} (MRR@10 {mrr[best]:.2f}; with whole "
           f"passages only {at[0.0]:.2f}" + (f", with the best paragraph only {at[1.0]:.2f})" if 1.0 in at else ")"))
    return {**chosen, "why": why, "queries": queries, "mrr": round(float(mrr[best]), 4), "baseline": baseline,
            "grid_best": {**grid[everything], "mrr": round(float(mrr[everything]), 4)}}


def _rr(score: np.ndarray, target: int) -> float:
    """Reciprocal rank of ``target`` within the top 10 (ties count against it), else 0."""
    rank = 1 + int(np.sum(score > score[target])) + int(np.sum(score[:target] == score[target]))
    return 1.0 / rank if rank <= 10 else 0.0


TOLERANCE = 0.01  # settings within this MRR of the best are as good: the plainest of them is chosen


def choose(grid: list[dict[str, Any]], mrr: np.ndarray) -> int:
    """The best setting; among those within ``TOLERANCE`` of it, the one nearest the shipped setting (so that
    noise in a few hundred pseudo-queries does not move the ranking away from what is known to work)."""
    top = float(np.max(mrr))
    near = [i for i in range(len(grid)) if mrr[i] >= top - TOLERANCE]

    def distance(i: int) -> tuple[float, float]:
        g = grid[i]
        d = abs(g["unit_weight"] - SHIPPED["unit_weight"]) + abs(g["keyword_weight"] - SHIPPED["keyword_weight"])
        return (d + (0.5 if g["fusion"] != SHIPPED["fusion"] else 0.0), -float(mrr[i]))

    return min(near, key=distance)
