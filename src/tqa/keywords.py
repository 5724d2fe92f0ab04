"""The keyword index: BM25 over the chunks' search text (bm25s), and the analyzer that turns text into its terms.

The analyzer (lower-case, a token pattern, English stopwords, Snowball stemming) is part of the index: the index's
postings hold the terms the analyzer made when it was built, and a question only meets them if it is analysed the
same way. So its settings (``AnalyzerSettings``) are recorded in the manifest, and an index analysed otherwise is
refused with the rebuild hint rather than silently mis-scored (an index written before they were recorded was
analysed as the code analyses today). bm25s and PyStemmer are imported on first use.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import REBUILD_HINT, IndexCorrupt
from .vectors import Check, top_k

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # a word: two or more word characters (scikit-learn's and bm25s's default)
STOPWORDS = "en"  # bm25s's English stopword list
STEMMER = "english"  # PyStemmer's Snowball stemmer for English


@dataclass(frozen=True)
class AnalyzerSettings:
    """How text becomes terms: lower-cased, split by ``token_pattern``, stopwords left out, each word stemmed.

    ``stopwords_sha256`` is a checksum of the stopword list's words, so that a list changed by an upgrade of bm25s
    is noticed as surely as a change of its name."""

    lowercase: bool
    token_pattern: str
    stopwords: str
    stopwords_sha256: str
    stemmer: str

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def differences(self, other: AnalyzerSettings) -> list[str]:
        """The names of the settings in which ``other`` differs from these."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@functools.cache
def analyzer_settings() -> AnalyzerSettings:
    """The settings of the analyzer this tqa uses (what a build records; what a loaded index must have)."""
    digest = hashlib.sha256("\n".join(sorted(_stopwords())).encode("utf-8")).hexdigest()
    return AnalyzerSettings(lowercase=True, token_pattern=TOKEN_PATTERN, stopwords=STOPWORDS, stopwords_sha256=digest,
                            stemmer=STEMMER)


@functools.cache
def _analyzer() -> Any:
    import Stemmer

    stem = Stemmer.Stemmer(STEMMER).stemWord
    stop = _stopwords()
    split = re.compile(TOKEN_PATTERN).findall

    def analyze(text: str) -> list[str]:
        return [stem(w) for w in split(text.lower()) if w not in stop]

    return analyze


class KeywordIndex:
    """BM25 over the chunks' search text: English stopwords, Snowball stemming.

    Scores are bm25s's (the same float32 sums in the same order); the top k are chosen among the rows the
    question's terms name rather than among every row. What the highlighter needs per term (its idf) is
    computed once per index, on first use, and each chunk's sentence terms once per chunk (``span_terms``).
    """

    def __init__(self, bm25: Any, checks: dict[str, Check | None] | None = None):
        self._bm25 = bm25
        self._vocab: dict[str, int] = getattr(bm25, "vocab_dict", None) or {}
        scores = getattr(bm25, "scores", None) or {}
        # (check, byte offset of the first element, element size) of the postings arrays checked as they are read
        self._checks: dict[str, tuple[Check, int, int]] = {}
        for key in ("data", "indices", "indptr"):
            array = scores.get(key)
            if isinstance(array, np.memmap):  # (loaded memory-mapped: see ``load``)
                check = (checks or {}).get(f"{key}.csc.index.npy")
                if check is not None:
                    self._checks[key] = (check, int(array.offset), int(array.itemsize))
                # the same mapped pages as a plain array: slicing a memmap makes a memmap object each time
                scores[key] = array.view(np.ndarray)

    @staticmethod
    def analyze(text: str) -> list[str]:
        return _analyzer()(text)

    @classmethod
    def build(cls, texts: list[str]) -> KeywordIndex:
        """The index of ``texts`` (row i is text i), each analysed by this tqa's analyzer."""
        return cls.from_terms([cls.analyze(t) for t in texts])

    @classmethod
    def from_terms(cls, terms: list[list[str]]) -> KeywordIndex:
        """The index of texts already analysed (``analyze``): row i holds ``terms[i]``."""
        import bm25s

        tokens = [t or ["\u2205"] for t in terms]  # bm25s wants a token in every document
        bm25 = bm25s.BM25()
        if tokens:
            bm25.index(tokens, show_progress=False)
        return cls(bm25)

    @property
    def size(self) -> int:
        return int(self._bm25.scores["num_docs"]) if self._vocab else 0

    @property
    def mapped(self) -> bool:
        """Whether its score arrays are pages of the saved files, mapped read-only (a loaded index), not copies."""
        s = getattr(self._bm25, "scores", None) or {}
        return bool(s) and all(_mapped(s[k]) for k in ("data", "indices", "indptr"))

    @property
    def nbytes(self) -> int:
        """The bytes of its score arrays (the postings), as they sit in memory."""
        s = self._bm25.scores
        return sum(int(np.asarray(s[k]).nbytes) for k in ("data", "indices", "indptr")) if self._vocab else 0

    def _postings(self, terms: list[str]) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(term id, rows, scores) of each known term, in the question's order (a repeated term counts
        again, as in bm25s)."""
        s = self._bm25.scores
        indptr, indices, data = s["indptr"], s["indices"], s["data"]
        out = []
        for t in terms:
            i = self._vocab.get(t)
            if i is not None:
                a, b = int(indptr[i]), int(indptr[i + 1])
                for key in ("indices", "data"):
                    if key in self._checks:  # verify the bytes about to be read
                        check, offset, size = self._checks[key]
                        check(np.array([offset + a * size]), np.array([(b - a) * size]))
                out.append((i, indices[a:b], data[a:b]))
        return out

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) with a positive BM25 score, optionally only among ``allowed`` rows.

        Scores are accumulated as bm25s accumulates them (``np.add.at``, term by term in the question's order,
        float32), but the best are then chosen among the rows the terms name, not among every row.
        """
        postings = self._postings(self.analyze(query))
        if not postings or k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        n = self.size
        scores = np.zeros(n, dtype=np.float32)
        for _, r, v in postings:
            np.add.at(scores, r, v)
        rows = _union([r for _, r, _ in postings], n)
        if allowed is not None:
            mask = np.zeros(n, dtype=bool)
            mask[allowed] = True
            rows = rows[mask[rows]]
        found = scores[rows]
        keep = found > 0
        top_scores, top_rows = top_k(found[keep], rows[keep].astype(np.int64), min(k, int(keep.sum())))
        return top_scores.astype(np.float32), top_rows

    def knows(self, term: str) -> bool:
        """Whether an analysed term occurs anywhere in the indexed text."""
        return term in self._vocab

    def span_terms(self, text: str, spans: tuple[tuple[int, int], ...]) -> tuple[frozenset[str], ...]:
        """The analysed terms of each span of ``text`` (a chunk's sentences, for the highlighter); computed once
        per chunk and remembered (the most recently used chunks)."""
        return _span_terms(text, spans)

    def idf(self, term: str) -> float:
        """Inverse document frequency of an analysed term (0 when unknown), for the highlighter."""
        i = self._vocab.get(term)
        if i is None:
            return 0.0
        table = self._idf_table
        return float(table[i]) if i < len(table) else 0.0

    @functools.cached_property
    def _idf_table(self) -> np.ndarray:
        df = np.diff(np.asarray(self._bm25.scores["indptr"]))
        n = max(int(self._bm25.scores["num_docs"]), 1)
        return np.log(1 + (n - df + 0.5) / (df + 0.5))

    def save(self, path: Path) -> None:
        self._bm25.save(str(path), show_progress=False)

    @classmethod
    def load(cls, path: Path, checks: dict[str, Check | None] | None = None) -> KeywordIndex:
        """The index saved in ``path``, its score arrays memory-mapped read-only: a question reads the pages of its
        terms' postings only, and a large index is not copied into memory when loaded. (Measured on 20,000
        passages: the same search time within 0.01 ms, bench/README.md; so always, not only above a size.)
        ``checks`` (file name to check, integrity.py) verify the postings' bytes before a question reads them."""
        import bm25s

        try:
            bm25 = bm25s.BM25.load(str(path), mmap=True, show_progress=False)
        except Exception as exc:
            raise IndexCorrupt(
                f"The keyword index in {path} cannot be read ({type(exc).__name__}). {REBUILD_HINT}"
            ) from None
        return cls(bm25, checks)


def _mapped(array: Any) -> bool:
    while array is not None:
        if isinstance(array, mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def _union(lists: list[np.ndarray], n: int) -> np.ndarray:
    """The distinct rows of some posting lists (rows < n), in no particular order."""
    if len(lists) == 1:
        return lists[0]  # a term names a row once
    total = sum(len(r) for r in lists)
    if total * 8 > n:  # long lists: mark the rows (np.unique hashes, which is slow for large arrays)
        mark = np.zeros(n, dtype=bool)
        for r in lists:
            mark[r] = True
        return np.flatnonzero(mark)
    rows = np.sort(np.concatenate(lists))
    return rows[np.concatenate(([True], rows[1:] != rows[:-1]))] if len(rows) else rows


@functools.lru_cache(maxsize=16384)
def _span_terms(text: str, spans: tuple[tuple[int, int], ...]) -> tuple[frozenset[str], ...]:
    analyze = _analyzer()
    return tuple(frozenset(analyze(text[a:b])) for a, b in spans)
