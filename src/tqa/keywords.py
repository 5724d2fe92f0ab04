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
import math
import mmap
import re
import sys
import threading
from collections import Counter
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


_importing = threading.Lock()  # (numba hidden from bm25s is hidden from no one else: ``_compiled_add``)


def _bm25s() -> Any:
    """bm25s, imported without numba: bm25s imports numba when it is installed (the ``fast`` extra) for a retrieval
    backend tqa does not use (it scores postings itself), which cost every cold question 0.1 s, and would name that
    backend in the indexes it saves, which a tqa without numba could not load. tqa's indexes name ``BACKEND``."""
    with _importing:
        if "bm25s" not in sys.modules and "numba" not in sys.modules:
            sys.modules["numba"] = None  # type: ignore[assignment]  # (an import of it raises ImportError)
            try:
                import bm25s
            finally:
                del sys.modules["numba"]
    import bm25s

    return bm25s


BACKEND = {"backend": "numpy"}  # bm25s's retrieval backend, named in the indexes tqa saves
# the postings arrays tqa writes: float32 scores, integer rows and list bounds (all in the machine's byte order)
POSTINGS_KINDS = {"data": "f", "indices": "iu", "indptr": "iu"}


def _stopwords() -> frozenset[str]:
    return frozenset(_bm25s().stopwords.STOPWORDS_EN)


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
                if check is None:  # (small: verified whole at load) in memory, never a mapping whose pages a
                    scores[key] = np.array(array)  # file truncated under the reader would pull away (SIGBUS)
                    continue
                self._checks[key] = (check, int(array.offset), int(array.itemsize))  # (checks the file's size too)
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
        tokens = [t or ["\u2205"] for t in terms]  # bm25s wants a token in every document
        bm25 = _bm25s().BM25(**BACKEND)
        if tokens:
            bm25.index(tokens, show_progress=False)
        return cls(bm25)

    @classmethod
    def from_postings(cls, terms: list[str], indptr: np.ndarray, rows: np.ndarray, counts: np.ndarray,
                      n: int) -> KeywordIndex:
        """The index of ``n`` rows from its postings already grouped by term: term ``terms[i]`` is in rows
        ``rows[indptr[i]:indptr[i + 1]]`` (ascending) ``counts[...]`` times each. Scores are ``build``'s; scored a
        block at a time, so that many millions of rows need little more memory than their postings."""
        return cls(_scored_postings(terms, indptr, rows, counts, n))

    @classmethod
    def updated(cls, previous: KeywordIndex | None, old_rows: np.ndarray, texts: list[str]) -> KeywordIndex:
        """The index of ``texts`` (row i is text i) when row i is ``previous``'s row ``old_rows[i]`` (the same
        text) or, where that is -1, a new text: only the new texts are analysed. The term counts of the rows kept
        are read back from ``previous``'s scores (``_counts``) and every score computed again from the new
        corpus's document frequencies and mean length, as bm25s computes them, so the scores are those of
        ``build(texts)``. When the counts cannot be read back exactly (an index built otherwise), it is ``build``."""
        counts = None if previous is None else previous._counts()
        old_rows = np.asarray(old_rows, dtype=np.int64)
        if previous is None or counts is None or len(old_rows) != len(texts):
            return cls.build(texts)
        terms, p_doc, p_term, p_tf = counts
        table = np.full(previous.size, -1, dtype=np.int64)  # old row -> new row
        kept = old_rows >= 0
        table[old_rows[kept]] = np.flatnonzero(kept)
        new_doc = table[p_doc]
        keep = new_doc >= 0
        docs, term_ids, tfs = [new_doc[keep]], [p_term[keep]], [p_tf[keep]]
        ids = {t: i for i, t in enumerate(terms)}
        rows, words, freqs = [], [], []
        for row in np.flatnonzero(~kept):
            analysed = cls.analyze(texts[row]) or ["\u2205"]
            for word, n in Counter(analysed).items():
                rows.append(row)
                words.append(ids.setdefault(word, len(ids)))
                freqs.append(n)
        docs.append(np.asarray(rows, dtype=np.int64))
        term_ids.append(np.asarray(words, dtype=np.int64))
        tfs.append(np.asarray(freqs, dtype=np.int64))
        return cls(_scored(list(ids), np.concatenate(docs), np.concatenate(term_ids), np.concatenate(tfs),
                           len(texts)))

    def _counts(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None:
        """(terms, row, term id and count of every posting), read back from the scores: a score is
        ``idf * tf / (tf + K)`` with ``K = k1 (1 - b + b dl / avgdl)``, so ``tf / K`` follows from it, a row's
        length from those (``dl = K * sum(tf / K)``, given the mean length, which is found by bisection), and each
        count from its length. Exact or nothing: the scores computed again from the counts must equal the stored
        ones bit for bit, else None."""
        bm = self._bm25
        if not self._vocab or (bm.method, bm.idf_method, bm.k1, bm.b) != ("lucene", "lucene", K1, B):
            return None
        sc = bm.scores
        for key, (check, offset, size) in self._checks.items():  # every byte about to be read, verified first
            check(np.array([offset]), np.array([len(sc[key]) * size]))
        n = int(sc["num_docs"])
        indptr = np.asarray(sc["indptr"], dtype=np.int64)
        data = np.asarray(sc["data"], dtype=np.float32)
        doc = np.asarray(sc["indices"], dtype=np.int64)
        width = len(indptr) - 1
        terms = [""] * width
        for t, i in self._vocab.items():
            if i < width:
                terms[i] = t
        if "" in terms or len(data) == 0:
            return None
        df = np.diff(indptr)
        term = np.repeat(np.arange(width, dtype=np.int64), df)
        idf = _idf(df, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = data.astype(np.float64) / idf[term].astype(np.float64)
            q = r / (1 - r)  # tf / K
        if not np.all(np.isfinite(q)) or np.any(q <= 0):
            return None
        a = np.bincount(doc, weights=q, minlength=n)  # dl / K for each row
        k1, b = K1, B
        if np.any(a <= 0):
            return None

        def lengths(avg: float) -> np.ndarray:
            return k1 * (1 - b) * a / (1 - k1 * b * a / avg)

        lo = k1 * b * float(a.max()) * (1 + 1e-12)
        hi = max(2 * lo, 1.0)
        while float(lengths(hi).sum()) > n * hi:
            hi *= 2
        for _ in range(200):  # the mean length, where the lengths it implies average to it
            mid = (lo + hi) / 2
            if float(lengths(mid).sum()) > n * mid:
                lo = mid
            else:
                hi = mid
        dl = np.rint(lengths((lo + hi) / 2)).astype(np.int64)
        avg = dl.mean()
        big_k = _length_norm(dl, avg)
        tf = np.rint(q * big_k[doc]).astype(np.int64)
        if np.any(tf < 1) or not np.array_equal(np.bincount(doc, weights=tf, minlength=n).astype(np.int64), dl):
            return None
        again = _score(idf[term], tf, big_k[doc])
        if not np.array_equal(again, data):
            return None
        return terms, doc, term, tf

    @property
    def size(self) -> int:
        return int(self._bm25.scores["num_docs"]) if self._vocab else 0

    @property
    def mapped(self) -> bool:
        """Whether its postings (scores and rows) are pages of the saved files, mapped read-only (a loaded index
        whose postings are checked by blocks), not copies."""
        s = getattr(self._bm25, "scores", None) or {}
        return bool(s) and all(_mapped(s[k]) for k in ("data", "indices"))

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
        float32), but the best are then chosen among the rows the terms name, not among every row. Rows are
        scored ``SCORE_ROWS`` at a time (each term's postings for them are a slice, its rows being in order), so
        that the sums being added to stay in the processor's cache, and each range gives its own best (``top_k``
        then keeps the same rows as one pass over every row would, ties included). Above one range, the adds run
        compiled when numba is installed (``_compiled_add``).
        """
        postings = self._postings(self.analyze(query))
        if not postings or k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        n = self.size
        mask = None
        if allowed is not None:
            mask = np.zeros(n, dtype=bool)
            mask[allowed] = True
        edges = np.append(np.arange(0, n, SCORE_ROWS), n)
        # where each range's postings begin, per term (edges of the rows' own type: another would copy each list)
        cuts = [np.searchsorted(r, edges.astype(r.dtype)) for _, r, _ in postings]
        if any(cut[0] != 0 or cut[-1] != len(r) for cut, (_, r, _) in zip(cuts, postings, strict=True)):
            raise _outside()
        best_scores, best_rows = [], []
        rows_type = postings[0][1].dtype
        add = (_compiled_add() if n > SCORE_ROWS else None) or _numpy_add
        for i in range(len(edges) - 1):
            lo, hi = int(edges[i]), int(edges[i + 1])
            scores = _sums(hi - lo)
            lists = []
            shifted = _shifted(sum(int(cut[i + 1] - cut[i]) for cut in cuts), rows_type) if lo else None
            at = 0
            for (_, r, v), cut in zip(postings, cuts, strict=True):
                a, b = int(cut[i]), int(cut[i + 1])
                if b > a:
                    if shifted is None:
                        local = r[a:b]
                    else:
                        local = np.subtract(r[a:b], lo, out=shifted[at:at + b - a])
                        at += b - a
                    if not add(scores, local, v[a:b]):  # (rows out of order or beyond the index: never written)
                        raise _outside()
                    lists.append(local)
            if not lists:
                continue
            rows = _best_named(scores, lists, k, None if mask is None else mask[lo:hi])
            found = scores[rows]
            keep = found > 0
            best_scores.append(found[keep])
            best_rows.append(rows[keep].astype(np.int64) + lo)
        if not best_scores:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        found, rows = np.concatenate(best_scores), np.concatenate(best_rows)
        top_scores, top_rows = top_k(found, rows, min(k, len(found)))
        return top_scores.astype(np.float32), top_rows

    def postings(self, query: str) -> int:
        """How many postings a search for ``query`` reads: the rows each of its known terms is in, a term asked
        twice counted twice (the work of a keyword search, for measuring it)."""
        if not self._vocab:
            return 0
        indptr = self._bm25.scores["indptr"]
        at = [self._vocab.get(t) for t in self.analyze(query)]
        return sum(int(indptr[i + 1]) - int(indptr[i]) for i in at if i is not None)

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
        passages: the same search time within 0.01 ms, bench/README.md.) ``checks`` (file name to check,
        integrity.py) verify the postings' bytes before a question reads them; an array without one (a small
        file, verified whole at load, and ``indptr``) is then read into memory (``__init__``)."""
        try:
            bm25 = _bm25s().BM25.load(str(path), mmap=True, show_progress=False)
        except Exception as exc:
            raise IndexCorrupt(
                f"The keyword index in {path} cannot be read ({type(exc).__name__}). {REBUILD_HINT}"
            ) from None
        scores = getattr(bm25, "scores", None) or {}
        for key, kinds in POSTINGS_KINDS.items():  # (what every build writes; the adds are compiled for no other)
            array = scores.get(key)
            if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype.kind not in kinds \
                    or not array.dtype.isnative or (kinds == "f" and array.dtype != np.float32):
                kind = "missing" if not isinstance(array, np.ndarray) else f"{array.dtype}, {array.ndim}-dimensional"
                raise IndexCorrupt(f"The keyword index in {path} does not hold BM25 postings ({key}: {kind}). "
                                   f"{REBUILD_HINT}")
        return cls(bm25, checks)


SCORE_ROWS = 1 << 20  # rows scored at a time: their float32 sums (4 MiB) stay in cache while postings are added
K1, B = 1.5, 0.75  # bm25s's defaults, with which every index is built: the postings' scores depend on them


def _length_norm(dl: np.ndarray, avg: float) -> np.ndarray:
    """K of each row: ``k1 (1 - b + b dl / avgdl)``, as bm25s computes it."""
    return K1 * ((1 - B) + B * dl / avg)


def _score(idf: np.ndarray, tf: np.ndarray, big_k: np.ndarray) -> np.ndarray:
    """Each posting's stored score, ``idf * tf / (tf + K)``, to the bit as bm25s computes it."""
    return (idf.astype(np.float64) * (tf / (big_k + tf))).astype(np.float32)


def _idf(df: np.ndarray, n: int) -> np.ndarray:
    """bm25s's idf (Lucene's) of each document frequency, float32, computed as bm25s computes it."""
    return np.array([math.log(1 + (n - d + 0.5) / (d + 0.5)) if d else 0.0 for d in df.tolist()], dtype=np.float32)


def _scored(terms: list[str], doc: np.ndarray, term: np.ndarray, tf: np.ndarray, n: int) -> Any:
    """A bm25s index of ``n`` rows from its postings' (row, term id, count), as ``bm25s.BM25.index`` scores them:
    terms no row holds any more are left out."""
    width = len(terms)
    df = np.bincount(term, minlength=width)
    used = np.flatnonzero(df > 0)
    renumber = np.full(width, -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    order = np.lexsort((doc, renumber[term]))
    indptr = np.zeros(len(used) + 1, dtype=np.int64)
    np.cumsum(df[used], out=indptr[1:])
    return _scored_postings([terms[int(i)] for i in used], indptr, doc[order], tf[order], n)


SCORED_BLOCK = 1 << 24  # postings scored at a time (float64 temporaries of a few hundred MB at most)


def _scored_postings(terms: list[str], indptr: np.ndarray, rows: np.ndarray, tf: np.ndarray, n: int) -> Any:
    """A bm25s index of ``n`` rows from its postings term by term (term i's are ``indptr[i]:indptr[i + 1]``, rows
    ascending, each with its count; every term holds a row), scored as ``bm25s.BM25.index`` scores them, a block of
    postings at a time: an index of many millions of rows needs little more memory than its postings."""
    df = np.diff(indptr)
    dl = np.zeros(n, dtype=np.int64)
    for a in range(0, len(rows), SCORED_BLOCK):
        dl += np.bincount(rows[a:a + SCORED_BLOCK], weights=tf[a:a + SCORED_BLOCK], minlength=n).astype(np.int64)
    avg = dl.mean()  # (np.float64, as bm25s's)
    big_k = _length_norm(dl, avg)
    del dl
    idf = _idf(df, n)
    data = np.empty(len(rows), dtype=np.float32)
    for a in range(0, len(rows), SCORED_BLOCK):
        b = min(len(rows), a + SCORED_BLOCK)
        term = np.searchsorted(indptr, np.arange(a, b), side="right") - 1
        data[a:b] = _score(idf[term], tf[a:b], big_k[rows[a:b]])
    bm = _bm25s().BM25(**BACKEND)
    bm.scores = {"data": data, "indices": np.asarray(rows, dtype=np.int32),
                 "indptr": np.asarray(indptr, dtype=np.int64), "num_docs": n}
    vocab = {t: j for j, t in enumerate(terms)}
    vocab.setdefault("", len(vocab))  # (as bm25s.BM25.index adds it)
    bm.vocab_dict = vocab
    bm.unique_token_ids_set = set(vocab.values())
    bm.nonoccurrence_array = None  # (Lucene's BM25 has none; ``index`` sets it)
    return bm


def _mapped(array: Any) -> bool:
    while array is not None:
        if isinstance(array, mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def _outside() -> IndexCorrupt:
    return IndexCorrupt(f"The keyword index's postings name rows it does not have. {REBUILD_HINT}")


def _numpy_add(sums: np.ndarray, rows: np.ndarray, values: np.ndarray) -> bool:
    """``np.add.at(sums, rows, values)``; False when a row is past the end of ``sums`` (as ``_add_at``)."""
    try:
        np.add.at(sums, rows, values)
    except IndexError:
        return False
    return True


def _add_at(sums: np.ndarray, rows: np.ndarray, values: np.ndarray) -> bool:
    """``np.add.at(sums, rows, values)`` as a loop for numba to compile: the same float32 adds in the same order,
    so the same sums to the last bit; False, at the first row outside ``sums``, where numpy raises (or, for a
    negative row, adds to a row counted from the end)."""
    n = sums.shape[0]
    for i in range(rows.shape[0]):
        r = rows[i]
        if r < 0 or r >= n:
            return False
        sums[r] += values[i]
    return True


@functools.lru_cache(maxsize=1)
def _compiled_add() -> Any:
    """``_add_at`` compiled by numba (the ``fast`` extra: ``pip install 'tqa[fast]'``), or None without it. numpy's
    ``add.at`` costs about 1.3 ns a posting, which is most of a keyword search over millions of chunks; the
    compiled loop about half that (bench/results.md). Asked for only by indexes of more than one range of rows
    (``SCORE_ROWS``), so that a small index never imports numba (0.15 s) nor compiles (0.35 s, then read from
    numba's cache in about 0.2 s a process)."""
    try:
        with _importing:
            import numba
    except ImportError:
        return None
    if getattr(numba.config, "DISABLE_JIT", False):  # (NUMBA_DISABLE_JIT=1: the loop would run as Python)
        return None
    try:
        return numba.njit(nogil=True, cache=True)(_add_at)
    except RuntimeError:  # (numba finds no writable folder for its cache: compiled again in each process)
        return numba.njit(nogil=True)(_add_at)


_scratch = threading.local()


def _buffer(name: str, n: int, dtype: Any) -> np.ndarray:
    """``n`` items of this thread's buffer ``name``, made larger (or of another type) when needed: one buffer for
    every search rather than a new array per range of rows or term (a fresh allocation of that size is a fresh
    mapping whose every page faults when first written)."""
    buf = getattr(_scratch, name, None)
    if buf is None or len(buf) < n or buf.dtype != dtype:
        buf = np.empty(max(n, min(SCORE_ROWS, 1 << 16)), dtype=dtype)
        setattr(_scratch, name, buf)
    return buf[:n]


def _sums(n: int) -> np.ndarray:
    """``n`` float32 zeros to add postings into (this thread's buffer, zeroed)."""
    buf = _buffer("sums", n, np.float32)
    buf.fill(0)
    return buf


def _shifted(n: int, dtype: np.dtype) -> np.ndarray:
    """``n`` rows (of the postings' type) for a range's postings made relative to its first row (this thread's
    buffer)."""
    return _buffer("shifted", n, dtype)


def _at_or_above(scores: np.ndarray, floor: Any) -> np.ndarray:
    """The positions of ``scores`` at or above ``floor``, when they are few: the comparison's bytes are read
    eight at a time and only the words holding one are looked into (numpy's ``flatnonzero`` of a million
    booleans costs twice the comparison that made them)."""
    keep = scores >= floor
    if len(keep) % 8:
        return np.flatnonzero(keep)
    words = np.flatnonzero(keep.view(np.uint64) != 0)
    within, at = np.nonzero(keep.reshape(-1, 8)[words])
    return words[within] * 8 + at


def _best_named(scores: np.ndarray, lists: list[np.ndarray], k: int, allowed: np.ndarray | None = None
                ) -> np.ndarray:
    """The distinct rows of some posting lists (only those ``allowed`` marks, if given) that can be among the k
    best by ``scores``, with every row that ties the k-th: a superset of the top k.

    A list names a row once, so when the shortest list holds k rows, the k-th best score among them is a floor no
    row of the top k is below, and one pass over the scores finds every row at or above it (on 10M chunks, 2.4 ms
    faster a question than gathering every naming's score, bench/results-scale.md). Otherwise the
    ``k * len(lists)`` best namings hold at least k distinct rows: none below the score of the last of them can be
    in the top k."""
    sample = min(lists, key=len)
    if allowed is not None:
        sample = sample[allowed[sample]]
    if len(sample) >= k > 0:
        found = scores[sample]
        floor = np.partition(found, len(found) - k)[len(found) - k]
        rows = _at_or_above(scores, floor)
        return rows[allowed[rows]] if allowed is not None else rows
    named = np.concatenate(lists) if len(lists) > 1 else lists[0]
    if allowed is not None:
        named = named[allowed[named]]
    found = scores[named]
    m = k * len(lists)
    if m < len(found):
        floor = np.partition(found, len(found) - m)[len(found) - m]
        named = named[found >= floor]
    return np.unique(named)


@functools.lru_cache(maxsize=16384)
def _span_terms(text: str, spans: tuple[tuple[int, int], ...]) -> tuple[frozenset[str], ...]:
    analyze = _analyzer()
    return tuple(frozenset(analyze(text[a:b])) for a, b in spans)
