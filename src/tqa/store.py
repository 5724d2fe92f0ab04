"""The on-disk index: one folder, published atomically, checked when loaded.

Layout of an index folder::

    index/
      CURRENT               name of the live generation (replaced atomically with os.replace)
      .lock                 held while a build writes
      g-<id>/               one complete generation
        manifest.json       format and tqa versions, model, chunking, files (hashes), counts, checksums
        vectors.faiss       FAISS index; row i is chunk i
        units.faiss         FAISS index of the chunks' units (paragraphs), in chunk order
        chunks.jsonl        the chunk table, one JSON object per row
        documents.jsonl     the extracted text of every document (for context views and offset checks)
        bm25/               the keyword index (bm25s: .npy arrays without pickle, JSON vocabulary)

A build writes a new generation folder completely, fsyncs it, then points CURRENT at it. A reader follows
CURRENT once, so it sees the old complete index or the new one, never a mix. The previous generation is kept
until the next publish so a reader that just followed CURRENT can finish loading.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .chunking import Chunk
from .errors import IndexBusy, IndexCorrupt, IndexNotFound, TqaError

FORMAT_VERSION = 1
CURRENT = "CURRENT"
LOCK = ".lock"
MANIFEST = "manifest.json"
VECTORS = "vectors.faiss"
UNITS = "units.faiss"
CHUNKS = "chunks.jsonl"
DOCUMENTS = "documents.jsonl"
BM25_DIR = "bm25"
REBUILD_HINT = "Run `tqa index --rebuild` to build it again from the corpus."


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    for d in sorted({p.parent for p in path.rglob("*")} | {path}):
        _fsync_dir(d)


# ---------------------------------------------------------------- vector index (FAISS behind a small interface)

# Below this many vectors the index is exact (faiss.IndexFlatIP): a scan of 20,000 384-dimensional vectors takes
# about 1 ms on 2 cores, below the time to encode the question. Above it, an inverted-file index
# (faiss.IndexIVFFlat) scans only the lists nearest the question. Its vectors are stored uncompressed, so the
# scores of the candidates (``take``) stay exact; only which candidates are found is approximate. Settings and
# the recall@10 against exact search they give are measured by bench/run.py (bench/results.md).
EXACT_MAX = 20_000
IVF_LISTS_PER_SQRT = 4  # nlist = 4 * sqrt(n) (FAISS's usual lower bound): 4,000 lists of ~250 vectors at a million
IVF_PROBE_SHARE = 1 / 32  # lists scanned per question, as a share of nlist ...
IVF_MIN_PROBES = 96  # ... but at least this many (32 gave recall@10 0.93 at 100k chunks; bench/results.md)
IVF_TRAIN_PER_LIST = 64  # k-means is trained on a fixed sample of 64 vectors per list (deterministic)
IVF_TRAIN_ITERATIONS = 10
# A filtered search (``allowed``) over at most this many rows is exact; above it the inverted file is searched
# with a selector and proportionally more lists, and scans every list when those held fewer than k rows.
FILTER_EXACT_MAX = 20_000
IVF_MIN_VECTORS = 39 * 16  # 16 lists of 39 training vectors


def _faiss() -> Any:
    """faiss, imported on first use (it is slow to import) and typed as Any: its generated stubs lack keyword
    arguments the library accepts and documents (``SearchParameters(sel=...)``, ``SearchParametersIVF(nprobe=...)``)
    and type every index as its base class."""
    import faiss

    return faiss


def ivf_settings(n: int) -> tuple[int, int]:
    """(nlist, nprobe) for an inverted-file index of ``n`` vectors (at least 39 training vectors a list, as
    FAISS asks)."""
    nlist = max(16, min(int(round(IVF_LISTS_PER_SQRT * np.sqrt(max(n, 1)))), n // 39))
    return nlist, ivf_probes(nlist)


def ivf_probes(nlist: int) -> int:
    """Lists scanned per question. A search-time setting: applied to an index when it is loaded, so an index
    built by an older tqa searches with the current one."""
    return min(nlist, max(IVF_MIN_PROBES, int(np.ceil(nlist * IVF_PROBE_SHARE))))


def choose_index_type(n: int) -> str:
    """"flat" (exact) up to ``EXACT_MAX`` vectors, "ivf" (approximate) above."""
    return "flat" if n <= EXACT_MAX else "ivf"


def _top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, rows), best first, ties by row."""
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
        scores, rows = scores[part], rows[part]
    order = np.lexsort((rows, -scores))
    return scores[order], rows[order]


class FaissVectors:
    """Inner-product search over normalised vectors (cosine similarity): exact up to ``EXACT_MAX`` vectors, an
    inverted file above (see ``choose_index_type``). ``take`` returns stored vectors exactly for every type."""

    def __init__(self, index: Any):
        faiss = _faiss()
        self._index = index
        self._ivf = faiss.try_extract_index_ivf(index) if not isinstance(index, faiss.IndexFlat) else None
        if self._ivf is not None:
            self._ivf.nprobe = ivf_probes(int(self._ivf.nlist))
            if self._ivf.direct_map.type == faiss.DirectMap.NoMap and index.ntotal:
                self._ivf.make_direct_map()  # for ``take``; normally saved with the index

    @classmethod
    def build(cls, vectors: np.ndarray, dim: int, kind: str = "auto") -> FaissVectors:
        """An index of ``vectors``; ``kind`` is "flat", "ivf" or "auto" (by size, see ``choose_index_type``)."""
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
        kind = choose_index_type(len(vectors)) if kind == "auto" else kind
        if kind == "ivf" and len(vectors) < IVF_MIN_VECTORS:
            kind = "flat"  # too few to train an inverted file; exact search is fast for so few anyway
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
            if len(vectors):
                index.add(vectors)
            return cls(index)
        if kind != "ivf":
            raise ValueError(f"unknown vector index type {kind!r}")
        nlist = ivf_settings(len(vectors))[0]
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = IVF_TRAIN_ITERATIONS
        index.cp.seed = 1234
        n_train = min(len(vectors), nlist * IVF_TRAIN_PER_LIST)
        index.cp.max_points_per_centroid = max(1, -(-n_train // nlist))  # faiss must not subsample again
        sample = np.random.default_rng(0).choice(len(vectors), size=n_train, replace=False)
        index.train(vectors[np.sort(sample)])
        index.add(vectors)
        index.make_direct_map()
        return cls(index)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def kind(self) -> str:
        return "flat" if self._ivf is None else "ivf"

    def describe(self) -> dict[str, Any]:
        """What was built, for the manifest."""
        d: dict[str, Any] = {"type": f"faiss.{type(self._index).__name__}", "metric": "cosine",
                             "vectors": self.ntotal, "exact": self._ivf is None}
        if self._ivf is not None:
            d.update(nlist=int(self._ivf.nlist), nprobe=int(self._ivf.nprobe))
        return d

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) for one query vector, optionally only among ``allowed`` rows.

        FAISS pads a short result with row -1 (which in Python would index the last chunk): it is removed.
        """
        k = min(k, self.ntotal if allowed is None else len(allowed))
        if k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        faiss = _faiss()
        if self._ivf is None:
            if allowed is None:
                scores, rows = self._index.search(q, k)
            else:
                selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
                scores, rows = self._index.search(q, k, params=faiss.SearchParameters(sel=selector))
        elif allowed is not None and len(allowed) <= FILTER_EXACT_MAX:
            return _top_k(self.take(allowed) @ q[0], np.asarray(allowed, dtype=np.int64), k)
        else:
            nlist, nprobe = int(self._ivf.nlist), int(self._ivf.nprobe)
            selector = None if allowed is None else faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64))
            if allowed is not None:  # allowed rows are rarer in each list: scan proportionally more lists
                nprobe = min(nlist, int(np.ceil(nprobe * self.ntotal / len(allowed))))
            scores, rows = self._index.search(q, k, params=faiss.SearchParametersIVF(sel=selector, nprobe=nprobe))
            if int((rows[0] >= 0).sum()) < k and nprobe < nlist:  # the lists scanned held fewer than k rows
                scores, rows = self._index.search(q, k, params=faiss.SearchParametersIVF(sel=selector, nprobe=nlist))
        keep = rows[0] >= 0
        return scores[0][keep], rows[0][keep]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of the given rows, as an (n, dim) array."""
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))

    def vectors(self) -> np.ndarray:
        if self.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.take(np.arange(self.ntotal, dtype=np.int64))

    def save(self, path: Path) -> None:
        faiss = _faiss()
        # Serialised in memory and written by Python, so a full disk surfaces as an OSError.
        with open(path, "wb") as f:
            f.write(faiss.serialize_index(self._index).tobytes())

    @classmethod
    def load(cls, path: Path) -> FaissVectors:
        faiss = _faiss()
        try:
            return cls(faiss.read_index(str(path)))
        except Exception as exc:  # faiss raises RuntimeError with a C++ trace
            raise IndexCorrupt(
                f"The vector file {path} cannot be read ({type(exc).__name__}). {REBUILD_HINT}"
            ) from None


# ---------------------------------------------------------------- keyword index (bm25s)


class KeywordIndex:
    """BM25 over the chunks' search text: English stopwords, Snowball stemming.

    Scores are bm25s's (the same float32 sums in the same order); the top k are chosen among the rows the
    question's terms name rather than among every row. What the highlighter needs per term (its idf) is
    computed once per index, on first use, and each chunk's sentence terms once per chunk (``span_terms``).
    """

    def __init__(self, bm25: Any):
        self._bm25 = bm25
        self._vocab: dict[str, int] = getattr(bm25, "vocab_dict", None) or {}

    @staticmethod
    def analyze(text: str) -> list[str]:
        return _analyzer()(text)

    @classmethod
    def build(cls, texts: list[str]) -> KeywordIndex:
        import bm25s

        tokens = [cls.analyze(t) or ["\u2205"] for t in texts]  # bm25s wants a token in every document
        bm25 = bm25s.BM25()
        if tokens:
            bm25.index(tokens, show_progress=False)
        return cls(bm25)

    @property
    def size(self) -> int:
        return int(self._bm25.scores["num_docs"]) if self._vocab else 0

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
        top_scores, top_rows = _top_k(found[keep], rows[keep].astype(np.int64), min(k, int(keep.sum())))
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
    def load(cls, path: Path) -> KeywordIndex:
        import bm25s

        try:
            return cls(bm25s.BM25.load(str(path), show_progress=False))
        except Exception as exc:
            raise IndexCorrupt(
                f"The keyword index in {path} cannot be read ({type(exc).__name__}). {REBUILD_HINT}"
            ) from None


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


_ANALYZER: Any = None


@functools.lru_cache(maxsize=16384)
def _span_terms(text: str, spans: tuple[tuple[int, int], ...]) -> tuple[frozenset[str], ...]:
    analyze = _analyzer()
    return tuple(frozenset(analyze(text[a:b])) for a, b in spans)


def _analyzer() -> Any:
    global _ANALYZER
    if _ANALYZER is None:
        import re

        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        stem = Stemmer.Stemmer("english").stemWord
        stop = frozenset(STOPWORDS_EN)
        split = re.compile(r"(?u)\b\w\w+\b").findall

        def analyze(text: str) -> list[str]:
            return [stem(w) for w in split(text.lower()) if w not in stop]

        _ANALYZER = analyze
    return _ANALYZER


# ---------------------------------------------------------------- the index as a whole


@dataclass
class IndexData:
    """Everything a reader needs, loaded from one generation."""

    path: Path | None  # the generation folder (None while a build holds it in memory)
    manifest: dict[str, Any]
    chunks: list[Chunk]
    vectors: FaissVectors
    units: FaissVectors
    keywords: KeywordIndex

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """Prefixes and initials of the corpus's capitalised words, for the abstention checks."""
        return frozenset(self.manifest.get("names", ()))

    @functools.cached_property
    def unit_ptr(self) -> np.ndarray:
        """Chunk i's units are rows unit_ptr[i]:unit_ptr[i + 1] of ``units``."""
        counts = np.fromiter((len(c.units) for c in self.chunks), dtype=np.int64, count=len(self.chunks))
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def documents(self) -> Iterator[tuple[str, str]]:
        """(source, extracted text) of every document, read from the index (not the corpus)."""
        assert self.path is not None
        return read_documents(self.path)

    @functools.cached_property
    def _document_lines(self) -> dict[str, tuple[int, int]]:
        """(byte offset, length) of each document's line in documents.jsonl, read once per loaded index."""
        assert self.path is not None
        lines: dict[str, tuple[int, int]] = {}
        with open(self.path / DOCUMENTS, "rb") as f:
            offset = 0
            for line in f:
                lines.setdefault(str(json.loads(line)["source"]), (offset, len(line)))
                offset += len(line)
        return lines

    def document_text(self, source: str) -> str | None:
        """The extracted text of one document: one line of documents.jsonl, not a scan of the file."""
        where = self._document_lines.get(source)
        if where is None:
            return None
        assert self.path is not None
        with open(self.path / DOCUMENTS, "rb") as f:
            f.seek(where[0])
            return str(json.loads(f.read(where[1]))["text"])


def read_documents(gen: Path) -> Iterator[tuple[str, str]]:
    with open(gen / DOCUMENTS, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            yield str(row["source"]), str(row["text"])


def current_generation(index_dir: str | Path) -> Path | None:
    root = Path(index_dir)
    try:
        name = (root / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexCorrupt(f"Cannot read {root / CURRENT}: {exc.strerror}. {REBUILD_HINT}") from None
    if not name or "/" in name or name.startswith("."):
        raise IndexCorrupt(f"{root / CURRENT} does not name an index generation. {REBUILD_HINT}")
    return root / name


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    gen = current_generation(index_dir)
    if gen is None:
        raise IndexNotFound(f"No index at {index_dir}/. Run `tqa index` first (or pass --index DIR).")
    return _read_manifest(gen)


def _read_manifest(gen: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((gen / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorrupt(f"The index manifest {gen / MANIFEST} is missing. {REBUILD_HINT}") from None
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"The index manifest {gen / MANIFEST} is unreadable ({exc}). {REBUILD_HINT}") from None
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise IndexCorrupt(f"{gen / MANIFEST} is not a tqa manifest. {REBUILD_HINT}")
    version = manifest["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexCorrupt(
            f"The index was written by a newer tqa (format {version}; this tqa reads format {FORMAT_VERSION}). "
            f"Upgrade tqa, or {REBUILD_HINT[0].lower()}{REBUILD_HINT[1:]}"
        )
    return manifest


def _verify_artifacts(gen: Path, manifest: dict[str, Any]) -> None:
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, dict) or not artifacts:
        raise IndexCorrupt(f"{gen / MANIFEST} lists no artifacts. {REBUILD_HINT}")
    for rel, meta in artifacts.items():
        path = gen / rel
        if not path.is_file():
            raise IndexCorrupt(f"The index file {path} is missing. {REBUILD_HINT}")
        size = path.stat().st_size
        if size != meta.get("bytes"):
            raise IndexCorrupt(
                f"The index file {path} has {size} bytes, the manifest says {meta.get('bytes')}. {REBUILD_HINT}"
            )
        if sha256_file(path) != meta.get("sha256"):
            raise IndexCorrupt(f"The index file {path} fails its checksum (damaged or edited). {REBUILD_HINT}")


def load_index(index_dir: str | Path, *, verify: bool = True) -> IndexData:
    """Load the live generation, checking checksums and that FAISS and the chunk table agree."""
    for attempt in range(3):
        gen = current_generation(index_dir)
        if gen is None:
            raise IndexNotFound(f"No index at {index_dir}/. Run `tqa index` first (or pass --index DIR).")
        if not gen.is_dir():
            if attempt < 2:  # a publish may have just retired it: follow CURRENT again
                time.sleep(0.05)
                continue
            raise IndexCorrupt(f"{Path(index_dir) / CURRENT} points to a missing folder {gen.name}. {REBUILD_HINT}")
        try:
            return _load_generation(gen, verify)
        except IndexCorrupt:
            if attempt < 2 and current_generation(index_dir) != gen:
                continue  # raced with a publish
            raise
    raise AssertionError("unreachable")


def _load_generation(gen: Path, verify: bool) -> IndexData:
    manifest = _read_manifest(gen)
    if verify:
        _verify_artifacts(gen, manifest)
    chunks: list[Chunk] = []
    try:
        with open(gen / CHUNKS, encoding="utf-8") as f:
            for line in f:
                chunks.append(Chunk.from_dict(json.loads(line)))
    except FileNotFoundError:
        raise IndexCorrupt(f"The chunk table {gen / CHUNKS} is missing. {REBUILD_HINT}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexCorrupt(f"The chunk table {gen / CHUNKS} is damaged ({exc}). {REBUILD_HINT}") from None
    vectors = FaissVectors.load(gen / VECTORS)
    units = FaissVectors.load(gen / UNITS)
    keywords = KeywordIndex.load(gen / BM25_DIR)
    expected = manifest.get("counts", {}).get("chunks")
    if not (vectors.ntotal == len(chunks) == expected):
        raise IndexCorrupt(
            f"The index disagrees with itself: {vectors.ntotal} vectors, {len(chunks)} chunks, manifest says "
            f"{expected}. {REBUILD_HINT}"
        )
    dim = manifest.get("model", {}).get("dim")
    if len(chunks) and vectors.dim != dim:
        raise IndexCorrupt(f"The vectors have dimension {vectors.dim}, the manifest says {dim}. {REBUILD_HINT}")
    data = IndexData(gen, manifest, chunks, vectors, units, keywords)
    if units.ntotal != int(data.unit_ptr[-1]):
        raise IndexCorrupt(
            f"The index disagrees with itself: {units.ntotal} unit vectors, the chunk table lists "
            f"{int(data.unit_ptr[-1])}. {REBUILD_HINT}"
        )
    return data


@contextlib.contextmanager
def write_lock(index_dir: str | Path) -> Iterator[None]:
    """Only one build at a time writes an index folder."""
    import fcntl

    root = Path(index_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise TqaError(f"Cannot write to the index folder {root}: {exc.strerror}. Check its permissions.") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusy(f"Another `tqa index` is writing {root}. Wait for it to finish, then run again.") from None
        yield
    finally:
        os.close(fd)


def publish(index_dir: str | Path, data: IndexData, documents: Iterator[tuple[str, str]],
            extra: Callable[[Path], object] | None = None) -> Path:
    """Write a new generation and make it live atomically. The caller holds ``write_lock``. ``extra(folder)``
    may add optional artifacts to the generation folder before they are listed (the question encoder)."""
    root = Path(index_dir)
    gen_name = f"g-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    tmp = root / f".tmp-{gen_name}"
    published = False
    previous: Path | None = None
    try:
        tmp.mkdir(parents=True)
        with open(tmp / CHUNKS, "w", encoding="utf-8") as f:
            for c in data.chunks:
                f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
        with open(tmp / DOCUMENTS, "w", encoding="utf-8") as f:
            for source, text in documents:
                f.write(json.dumps({"source": source, "text": text}, ensure_ascii=False) + "\n")
        data.vectors.save(tmp / VECTORS)
        data.units.save(tmp / UNITS)
        data.keywords.save(tmp / BM25_DIR)
        if extra is not None:
            extra(tmp)
        artifacts = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                artifacts[p.relative_to(tmp).as_posix()] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        manifest = dict(data.manifest, format_version=FORMAT_VERSION, tqa_version=__version__, artifacts=artifacts)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        os.rename(tmp, root / gen_name)
        _fsync_dir(root)
        pointer = root / f".{CURRENT}.{gen_name}"
        with open(pointer, "w", encoding="utf-8") as f:
            f.write(gen_name + "\n")
            f.flush()
            os.fsync(f.fileno())
        previous = current_generation(root) if (root / CURRENT).exists() else None
        os.replace(pointer, root / CURRENT)
        published = True
        _fsync_dir(root)
    except (OSError, RuntimeError) as exc:  # FAISS and bm25s report write failures as RuntimeError
        if published:  # the new index is live; only the directory sync failed
            return root / gen_name
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(root / gen_name, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(root / f".{CURRENT}.{gen_name}")
        raise TqaError(
            f"Could not write the index to {root}: {_why(exc)}. The previous index (if any) is unchanged; "
            "free space or fix permissions and run `tqa index` again."
        ) from None
    _retire(root, keep={gen_name, previous.name if previous else ""})
    return root / gen_name


def _why(exc: BaseException) -> str:
    errno_ = getattr(exc, "errno", None)
    text = str(exc)
    if errno_ == errno.ENOSPC or "No space left" in text:
        return "the disk is full"
    if errno_ in (errno.EROFS, errno.EACCES, errno.EPERM) or "Read-only file system" in text:
        return "the folder is not writable"
    if getattr(exc, "strerror", None):
        return str(exc.strerror)  # type: ignore[attr-defined]
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


def _retire(root: Path, keep: set[str]) -> None:
    """Remove generations other than the live and the previous one, and leftovers of killed builds."""
    for p in root.iterdir():
        if p.name in keep:
            continue
        if (p.is_dir() and (p.name.startswith("g-") or p.name.startswith(".tmp-g-"))) or (
            p.is_file() and p.name.startswith(f".{CURRENT}.")
        ):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
