"""Finding passages: dense search, BM25, their fusion, de-duplication, source filters, and the relevance and
vocabulary the abstention checks (``abstention.py``) read.

Scores, for a candidate chunk:
- dense: the mean of two cosine similarities: the question with the chunk's whole search text, and the
  question with the chunk's best-matching unit (paragraph). The first rewards a section that is about the
  question as a whole; the second a section where one paragraph answers it (and covers text beyond the
  model's token limit).
- bm25: BM25 over the chunk's search text (section trail + passage).
- hybrid: ``(1 - w) * dense + w * bm25 / best_bm25`` with ``w = KEYWORD_WEIGHT``: a convex combination of the
  dense score and the BM25 score scaled by the best BM25 score of the question.
Candidates are the union of the top chunks by each signal; every candidate is then scored exactly.

The relevance used for abstention is the best dense score, compared with a threshold calibrated per index
(see ``calibrate``), because BM25 scores are not comparable across questions or corpora.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, overload

import numpy as np

from .abstention import Vocabulary, name_prefixes
from .chunking import Chunk
from .chunktable import ChunkTable, words
from .config import MODES
from .errors import BadQuestion
from .index import Index, unit_rows
from .keywords import KeywordIndex
from .manifest import THRESHOLD_FLOOR, Calibration
from .vectors import similarities

KEYWORD_WEIGHT = 0.2
UNIT_WEIGHT = 0.5
CANDIDATES = 50  # how deep each signal's list is read
# A question whose terms have this many postings has its vector searches run in another thread while its keyword
# search runs (a few tenths of a millisecond of keyword work here, more than handing the work over costs): at 10M
# chunks a search then takes the longer of the two, not their sum (bench/results-scale.md).
PARALLEL_POSTINGS = 100_000

# Questions no corpus of ours should answer; their best scores show how high an irrelevant match scores in a
# given index. Calibration happens at build time, once per index.
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
CALIBRATION_MARGIN = 0.05  # the threshold sits this far above the 90th percentile of the probes' best scores


@dataclass(frozen=True)
class Scored:
    """A chunk found for a question, with its scores."""

    row: int
    score: float  # the ranking score of the mode used
    dense: float | None  # dense score (None when not computed: bm25 mode without a question vector)
    keyword: float | None  # raw BM25 score
    also_in: tuple[str, ...] = ()  # other documents holding the same text, whose copies were not listed


class Ranked(Sequence[Scored]):
    """Candidates best first, each made a ``Scored`` only when read (an ask reads a few of some hundreds)."""

    def __init__(self, rows: np.ndarray, score: np.ndarray, dense: np.ndarray | None, keyword: np.ndarray):
        self.rows, self._score, self._dense, self._keyword = rows, score, dense, keyword

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> Scored: ...

    @overload
    def __getitem__(self, i: slice) -> list[Scored]: ...

    def __getitem__(self, i: int | slice) -> Scored | list[Scored]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        kw = float(self._keyword[i])
        return Scored(int(self.rows[i]), float(self._score[i]), None if self._dense is None else
                      float(self._dense[i]), kw if kw > 0 else None)


@dataclass(frozen=True)
class Weights:
    """How a search weighs its signals: the best unit (paragraph) in the dense score, BM25 in the hybrid one."""

    unit: float = UNIT_WEIGHT
    keyword: float = KEYWORD_WEIGHT


SHIPPED = Weights()


_pools: dict[int, ThreadPoolExecutor] = {}  # by process


def _dense_pool() -> ThreadPoolExecutor:
    """The threads that run vector searches beside a keyword search: FAISS in each scans with one thread of its
    own (a search of one question is one thread's work in FAISS; a second would contend with the keyword search
    for the cores; measured the same alone at 10M chunks, and 20% faster overall). One pool per process: a process
    forked from one that searched has none of its threads, and work handed to them would wait for ever."""
    def one_thread() -> None:
        from .vectors import _faiss

        _faiss().omp_set_num_threads(1)  # (this thread's setting only: OpenMP keeps it per thread)

    pool = _pools.get(os.getpid())
    if pool is None:  # (no lock, which a fork could copy held: two threads racing here at worst make a spare pool,
        # which starts no thread; setdefault keeps one)
        pool = _pools.setdefault(os.getpid(), ThreadPoolExecutor(max(2, os.cpu_count() or 2),
                                                                 thread_name_prefix="tqa-dense",
                                                                 initializer=one_thread))
    return pool


def weights_for(index: Index, ranking: str, keyword_weight: float | None = None) -> Weights:
    """The weights an index is searched with under the ranking setting ``ranking`` (``config.RANKINGS``): the ones
    its build learned (``manifest.ranking``) when ``learned`` and it has them, else the shipped ones; BM25's weight
    is ``keyword_weight`` when given (``TQA_KEYWORD_WEIGHT``)."""
    learned = index.manifest.ranking
    chosen = Weights(learned.unit_weight, learned.keyword_weight) if ranking == "learned" and learned is not None \
        else SHIPPED
    return chosen if keyword_weight is None else Weights(chosen.unit, float(keyword_weight))


def calibrate(embedder: Any, index: Index, weights: Weights = SHIPPED) -> Calibration:
    """Measure how well off-topic probe questions match this index; the abstention threshold sits above."""
    if not index.chunks:
        return Calibration(abstain_threshold=THRESHOLD_FLOOR, probes=0)
    q = embedder.encode(list(OFF_TOPIC_PROBES))
    best = np.array([search(index, p, v, k=1, mode="dense", weights=weights)[1] or 0.0
                     for p, v in zip(OFF_TOPIC_PROBES, q, strict=True)])
    p90 = float(np.quantile(best, 0.9))
    threshold = max(THRESHOLD_FLOOR, p90 + CALIBRATION_MARGIN)
    return Calibration(abstain_threshold=round(threshold, 4), probes=len(best),
                       probe_best_max=round(float(best.max()), 4), probe_best_p90=round(p90, 4),
                       probe_best_median=round(float(np.median(best)), 4))


def dense_scores(index: Index, qvec: np.ndarray, rows: np.ndarray, unit_weight: float = UNIT_WEIGHT) -> np.ndarray:
    """Exact dense scores of the given chunk rows (see the module docstring)."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.float32)
    chunk_sims = similarities(index.vectors.take(rows), qvec)
    ptr = index.unit_ptr
    best_unit = chunk_sims.copy()
    members = unit_rows(ptr, rows)
    if len(members):
        sims = similarities(index.units.take(members), qvec)
        counts = ptr[rows + 1] - ptr[rows]
        has = counts > 0
        starts = (np.cumsum(counts) - counts)[has]
        best_unit[has] = np.maximum.reduceat(sims, starts)  # each chunk's best unit
    return (1 - unit_weight) * chunk_sims + unit_weight * best_unit


def drop_overlaps(hits: Iterable[Scored], chunks: Sequence[Chunk]) -> Iterator[Scored]:
    """Keep the better-ranked of any two passages that overlap in the same document, and the better-ranked of
    passages with the same text (words and their order; spacing aside) in several documents, naming the others
    in its ``also_in`` (a report kept in the corpus and attached to messages is one passage, not five). Lazy in
    what it yields, so that a caller who needs k hits stops after k; ``hits`` are the candidates, read whole.

    What it needs of every candidate (document, start, end, words) comes from the chunk table's arrays when it has
    its rows' keys: candidates whose keys are equal are parsed, to compare their words, and only once one of them
    is reached (copies ranked below the last hit a caller takes are never read)."""
    ranked = hits if isinstance(hits, Ranked) else list(hits)
    key_of: _Keys
    if isinstance(chunks, ChunkTable) and chunks.has_keys:
        rows = ranked.rows if isinstance(ranked, Ranked) else \
            np.fromiter((h.row for h in ranked), dtype=np.int64, count=len(ranked))
        hashes, first, last = chunks.keys(rows)
        sources, starts, ends = chunks.source_names(rows), first.tolist(), last.tolist()
        key_of = _same_words(rows, hashes.tolist(), chunks)
    else:
        parsed = [chunks[h.row] for h in ranked]
        sources, starts, ends = [c.source for c in parsed], [c.start for c in parsed], [c.end for c in parsed]
        texts = [words(c.text) for c in parsed]
        key_of = _Keys(texts, texts)
    spans: dict[str, list[tuple[int, int]]] = {}
    shown: set[object] = set()
    for i in range(len(ranked)):
        source, start, end = sources[i], starts[i], ends[i]
        taken = spans.setdefault(source, [])
        if any(start < b and a < end for a, b in taken) or key_of[i] in shown:
            continue
        taken.append((start, end))
        shown.add(key_of[i])
        others = tuple(dict.fromkeys(sources[j] for j in key_of.holders(i) if sources[j] != source))
        yield replace(ranked[i], also_in=others) if others else ranked[i]


class _Keys:
    """A key per candidate, equal exactly when their words are, and which candidates hold each. ``first`` is a key
    per candidate equal whenever their words are (and perhaps otherwise); ``exact`` starts as a copy of it, and
    for a group of candidates sharing a first key ``resolve(positions)`` sets their exact keys, the first time one
    of them is asked for."""

    def __init__(self, first: list[Any], exact: list[Any], resolve: Callable[[list[int]], None] | None = None):
        self._first, self._exact, self._resolve = first, exact, resolve
        self._members: dict[Any, list[int]] = {}
        for i, key in enumerate(first):
            self._members.setdefault(key, []).append(i)
        self._resolved: set[Any] = set()

    def __getitem__(self, i: int) -> Any:
        group = self._first[i]
        if self._resolve is not None and group not in self._resolved:
            self._resolved.add(group)
            if len(self._members[group]) > 1:
                self._resolve(self._members[group])
        return self._exact[i]

    def holders(self, i: int) -> list[int]:
        """The candidates whose words are candidate ``i``'s (it among them), in rank order."""
        key = self[i]
        return [j for j in self._members[self._first[i]] if self[j] == key]


def _same_words(rows: np.ndarray, hashes: list[int], table: ChunkTable) -> _Keys:
    """Keys per row, equal exactly when the rows' words are: the hash where no other row has it, else the words
    themselves (the texts of the rows sharing a hash are read, when one of them is first asked for: two passages
    are never taken for one on a hash alone)."""
    exact: list[object] = list(hashes)

    def resolve(positions: list[int]) -> None:
        for i, text in zip(positions, table.texts(rows[positions]), strict=True):
            exact[i] = words(text)

    return _Keys(hashes, exact, resolve)


def search(
    index: Index,
    question: str,
    qvec: np.ndarray | None,
    *,
    k: int,
    mode: str,
    sources: list[str] | None = None,
    dedupe: bool = True,
    weights: Weights = SHIPPED,
) -> tuple[list[Scored], float | None]:
    """Ranked, de-duplicated hits and the best dense score (the relevance used for abstention). ``weights``: how
    the signals are weighed (``weights_for``)."""
    if mode not in MODES:
        raise BadQuestion(f"Unknown search mode {mode!r}; choose one of {', '.join(MODES)}.")
    index.raise_if_damaged()  # damage found since the index was loaded (integrity.py), wherever it is
    scope = index.scope(sources)
    allowed, allowed_units = (None, None) if scope is None else (scope.rows, scope.unit_rows)
    depth = max(CANDIDATES, 4 * k)
    candidates: list[np.ndarray] = []

    def dense_candidates() -> list[np.ndarray]:
        assert qvec is not None
        q = np.asarray(qvec, dtype=np.float32)
        found = [index.vectors.search(q, depth, allowed)[1]]
        if index.units.ntotal:
            _, unit_hits = index.units.search(q, depth * 2, allowed_units)
            found.append(np.searchsorted(index.unit_ptr, unit_hits, side="right") - 1)
        return found

    beside = None
    if qvec is not None and index.keywords.postings(question) >= PARALLEL_POSTINGS:
        beside = _dense_pool().submit(dense_candidates)  # (FAISS lets go of the interpreter meanwhile)
    elif qvec is not None:
        candidates.extend(dense_candidates())
    try:
        kw_scores, kw_rows = index.keywords.search(question, depth, allowed)
    except BaseException:
        if beside is not None:
            futures.wait([beside])  # (no search left running on an index its caller may now close)
        raise
    if beside is not None:
        candidates.extend(beside.result())
    candidates.append(kw_rows)
    rows = np.unique(np.concatenate(candidates)) if candidates else np.zeros(0, dtype=np.int64)
    rows = rows[rows >= 0]  # FAISS pads short results with -1
    if len(rows) == 0:
        return [], None

    dense = dense_scores(index, qvec, rows, weights.unit) if qvec is not None else None
    keyword = np.zeros(len(rows), dtype=np.float32)
    if len(kw_rows):
        keyword[np.searchsorted(rows, kw_rows)] = kw_scores  # rows is sorted and holds every kw_row
    best_dense = float(dense.max()) if dense is not None else None

    if mode == "dense":
        if dense is None:
            return [], None
        score = dense
    elif mode == "bm25":
        score = keyword
    else:
        top_kw = float(kw_scores.max()) if len(kw_scores) else 0.0
        kw_norm = keyword / top_kw if top_kw > 0 else keyword
        w = weights.keyword
        score = (1 - w) * dense + w * kw_norm if dense is not None else kw_norm
    order = np.lexsort((rows, -score))  # by score, ties by position in the index
    if mode == "bm25":
        order = order[keyword[order] > 0]
    hits = Ranked(rows[order], score[order], None if dense is None else dense[order], keyword[order])
    return list(itertools.islice(drop_overlaps(hits, index.chunks) if dedupe else hits, k)), best_dense


# ---------------------------------------------------------------- the vocabulary the abstention checks read
#
# The checks themselves are in ``abstention.py``; here is what they need of an index: the analysed terms and
# name prefixes of the documents a question searched.

@dataclass(frozen=True)
class IndexVocabulary:
    """The whole index's vocabulary: the keyword index's terms and the prefixes listed in the manifest."""

    keywords: KeywordIndex
    names: frozenset[str]

    def knows(self, term: str) -> bool:
        return self.keywords.knows(term)


@dataclass(frozen=True)
class FilterVocabulary:
    """The vocabulary of some documents only: every analysed term and name prefix of their chunks."""

    terms: frozenset[str]
    names: frozenset[str]

    def knows(self, term: str) -> bool:
        return term in self.terms


def vocabulary(index: Index, sources: list[str] | None = None) -> Vocabulary:
    """The vocabulary of the documents a question searched: the whole index's without a source filter, else
    only the filtered documents' (a word that only another document uses is not known to them).

    A filter's vocabulary is computed from its chunks' search texts (as the keyword index and the manifest's
    name prefixes are) the first time the filter is used, and kept with the filter's rows (``Index.scope``); a
    filter that covers every chunk uses the index's own.
    """
    scope = index.scope(sources)
    if scope is None or scope.everything:
        return IndexVocabulary(index.keywords, index.names)
    return scope.vocabulary


def filter_vocabulary(texts: list[str]) -> FilterVocabulary:
    """The vocabulary of some documents, from their chunks' search texts: every analysed term and name prefix."""
    terms: set[str] = set()
    for text in texts:
        terms.update(KeywordIndex.analyze(text))
    return FilterVocabulary(frozenset(terms), frozenset(name_prefixes(texts)))
