"""The vector index: inner-product search over normalised vectors (cosine similarity) with FAISS, behind a small
interface (``FaissVectors``): build, search (optionally among some rows only), take stored vectors, save, load.

Exact (``faiss.IndexFlatIP``) up to ``EXACT_MAX`` vectors, an inverted file (``faiss.IndexIVFFlat``) above. FAISS is
imported on first use: it is slow to import, and ``tqa --help`` must stay instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import REBUILD_HINT, IndexCorrupt

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


@dataclass(frozen=True)
class VectorIndexInfo:
    """What a vector index is (``FaissVectors.describe``), as the manifest records it. FAISS reads an index's type
    from its file, so this is for people (``tqa info``) and the benchmark; older manifests hold only type and
    metric."""

    type: str  # "faiss.IndexFlatIP", "faiss.IndexIVFFlat"
    metric: str
    vectors: int | None = None
    exact: bool | None = None
    nlist: int | None = None  # inverted file: its lists ...
    nprobe: int | None = None  # ... and how many a search scans (set again when an index is loaded)
    units: VectorIndexInfo | None = None  # in the manifest: the paragraph units' index, beside the chunks'

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "metric": self.metric, "vectors": self.vectors, "exact": self.exact,
                             "nlist": self.nlist, "nprobe": self.nprobe,
                             "units": None if self.units is None else self.units.to_dict()}
        return {k: v for k, v in d.items() if v is not None}


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


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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

    @property
    def nlist(self) -> int | None:
        """The inverted file's number of lists (None for an exact index)."""
        return None if self._ivf is None else int(self._ivf.nlist)

    @property
    def nprobe(self) -> int | None:
        """Lists scanned per search (None for an exact index); a search-time setting, see ``ivf_probes``."""
        return None if self._ivf is None else int(self._ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self._ivf is None:
            raise ValueError("an exact index scans every vector; it has no lists to probe")
        self._ivf.nprobe = int(value)

    def describe(self) -> VectorIndexInfo:
        """What was built, for the manifest."""
        return VectorIndexInfo(type=f"faiss.{type(self._index).__name__}", metric="cosine", vectors=self.ntotal,
                               exact=self._ivf is None, nlist=self.nlist, nprobe=self.nprobe)

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
            return top_k(self.take(allowed) @ q[0], np.asarray(allowed, dtype=np.int64), k)
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

    def to_bytes(self) -> bytes:
        """The index as FAISS writes it (what ``save`` writes)."""
        return _faiss().serialize_index(self._index).tobytes()  # type: ignore[no-any-return]

    def save(self, path: Path) -> None:
        # Serialised in memory and written by Python, so a full disk surfaces as an OSError.
        with open(path, "wb") as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> FaissVectors:
        faiss = _faiss()
        try:
            return cls(faiss.read_index(str(path)))
        except Exception as exc:  # faiss raises RuntimeError with a C++ trace
            raise IndexCorrupt(
                f"The vector file {path} cannot be read ({type(exc).__name__}). {REBUILD_HINT}"
            ) from None
