"""The vector index: inner-product search over normalised vectors (cosine similarity) with FAISS, behind a small
interface (``FaissVectors``): build, search (optionally among some rows only), take stored vectors, save, load.

Exact (``faiss.IndexFlatIP``) up to ``EXACT_MAX`` vectors, an inverted file (``faiss.IndexIVFFlat``) above, and
above ``COMPRESS_ABOVE`` vectors (``config.Settings.compress_above``) a compressed index (``CompressedVectors``:
product-quantised codes in memory choose candidates, which are re-ranked exactly from float16 rows kept in a
``.npy`` file read a row at a time as asked, never whole: ``StoredVectors``). This module is the whole vector index:
``build_vectors`` chooses the kind, ``load_vectors`` reads either back. FAISS is imported on first use: it is slow
to import, and ``tqa --help`` must stay instant.
"""

from __future__ import annotations

import functools
import io
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union

import numpy as np

from .config import COMPRESS_ABOVE
from .errors import REBUILD_HINT, IndexCorrupt, shown

if TYPE_CHECKING:
    from .integrity import BlockFile

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

# Above COMPRESS_ABOVE vectors (config.py says why 2,000,000) an index is compressed:
PQ_M_MAX = 192  # sub-quantizers (bytes of code / 2): 192 x 4 bits = 96 bytes for dimension 384 (2 dimensions each)
PQ_BITS = 4  # faiss's fast-scan layout (IndexIVFPQFastScan): codes scanned with SIMD lookups
PQ_LISTS_PER_SQRT = 4  # nlist = 4 * sqrt(n), as for the uncompressed inverted file
PQ_PROBE_SHARE = 1 / 64  # lists scanned per question, as a share of nlist ...
PQ_MIN_PROBES = 96  # ... but at least this many (64 gave recall@10 0.980 at a million, 128 gave 0.992)
PQ_TRAIN_PER_LIST = 40  # coarse k-means trained on a fixed sample of 40 vectors a list (faiss asks for 39) ...
PQ_TRAIN_MIN = 256 * 64  # ... and the codebooks on at least this many
PQ_TRAIN_ITERATIONS = 10  # of the coarse k-means
PQ_CODEBOOK_ITERATIONS = 25  # of each sub-quantizer's k-means (faiss's default; 10 lost 0.01 of recall)
PQ_MIN_VECTORS = 39 * 16  # 16 lists (and 16 centroids a 4-bit sub-quantizer) of 39 training vectors
RERANK_DEPTH = 200  # candidates scored exactly from the stored rows, at least ...
RERANK_PER_RESULT = 4  # ... and 4 per result asked for
# An update keeps the trained index (``update_vectors``) only while the number of lists a fresh training would choose
# is within this factor of the trained one (the vector count within its square); beyond it, it trains again.
RETRAIN_FACTOR = 2 ** 0.5
# An update changes a trained index (inverted file or compressed) in place: the rows of the files removed or changed
# leave it, the new rows are added by id, and the others are renumbered so that row i is still chunk i; its training
# (centroids, codebooks) is kept. Rows added or removed this way since the last training are counted (``changed``);
# once they exceed this share of the index, the next update trains it again on all its vectors (``tqa index
# --compact`` always does). A fifth: the centroids then still come from at least four fifths of the rows they
# partition, and a re-training at a million rows (about a minute) is spread over 200,000 changed rows (thousands of
# file updates of a second or two each).
RETRAIN_SHARE = 0.2
STORED_SUFFIX = ".f16.npy"  # vectors.faiss's stored rows are vectors.f16.npy
# (byte offsets, lengths) about to be read from a file: raises IndexCorrupt when they fail their checksum (store.py)
Check = Callable[[np.ndarray, np.ndarray], None]


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
    code_bytes: int | None = None  # compressed: bytes of code a vector ...
    rerank_depth: int | None = None  # ... candidates re-ranked exactly ...
    stored: str | None = None  # ... from rows stored as this type ("float16") in a file of their own
    changed: int | None = None  # inverted file: rows added or removed by updates since it was trained (0: none)

    @property
    def compressed(self) -> bool:
        return self.stored is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "metric": self.metric, "vectors": self.vectors, "exact": self.exact,
                             "nlist": self.nlist, "nprobe": self.nprobe, "code_bytes": self.code_bytes,
                             "rerank_depth": self.rerank_depth, "stored": self.stored, "changed": self.changed,
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


def allowed_bitmap(allowed: np.ndarray, n: int) -> np.ndarray:
    """The rows of ``allowed`` (of an index of ``n``) as FAISS's ``IDSelectorBitmap`` reads them: bit ``i & 7`` of
    byte ``i >> 3``. Built in a few milliseconds at ten million rows, where a hash set of two million allowed rows
    (``IDSelectorBatch``) took most of a filtered search's 189 ms; rows outside the index are never allowed."""
    allowed = np.asarray(allowed, dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[allowed[(allowed >= 0) & (allowed < n)]] = True
    return np.packbits(mask, bitorder="little")


def similarities(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The inner product of each row of ``vectors`` with ``query``, each computed alone: a row scores the same
    whatever rows are scored beside it. (A matrix-vector product through BLAS sums a row at the edge of one of
    its blocks in another order, so that a passage's score changed in its last bit with the other candidates of
    a search, and a filter could swap two passages within 1e-7 of each other; this costs about 10 µs more for
    600 rows.)"""
    return np.einsum("ij,j->i", vectors, query)


def widened(rows: np.ndarray) -> np.ndarray:
    """float16 rows as float32, converted by FAISS's scalar quantizer: numpy's conversion bit for bit (every float16
    value, tests) in a third of the time (0.06 against 0.16 ms for 300 rows of 384, one re-ranking's worth; a
    question at ten million chunks converts about 1,100 rows, bench/results.md)."""
    rows = np.ascontiguousarray(rows, dtype=np.float16)  # (native byte order, as FAISS reads it)
    n, dim = rows.shape
    out = np.empty((n, dim), dtype=np.float32)
    if n:
        faiss = _faiss()
        _half_decoder(dim).decode_c(faiss.swig_ptr(rows.view(np.uint8)), faiss.swig_ptr(out), n)
    return out


@functools.lru_cache(maxsize=8)
def _half_decoder(dim: int) -> Any:
    faiss = _faiss()
    return faiss.ScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16)


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (scores, rows), best first, ties by row: among rows of the k-th score, the first rows are kept,
    whatever order the candidates came in (so two searches that gather the same candidates otherwise agree)."""
    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)
        if len(above) + len(tied) >= k:
            tied = tied[np.argsort(rows[tied], kind="stable")[: k - len(above)]]
            part = np.concatenate([above, tied])
        else:  # (scores that compare with nothing, NaN: no order to keep)
            part = np.argpartition(-scores, k - 1)[:k]
        scores, rows = scores[part], rows[part]
    order = np.lexsort((rows, -scores))
    return scores[order], rows[order]


_T = TypeVar("_T")


class _Faiss:
    """What both vector indexes do alike with the FAISS index they hold (``_index``; ``_ivf``, its inverted file,
    or None for an exact one): their size, their bytes, reading one back, and asking an inverted file for
    candidates, optionally among some rows only."""

    _index: Any
    _ivf: Any
    _mapped: MappedLists | None = None  # the inverted file's lists, when FAISS reads them from the mapped file

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def to_bytes(self) -> bytes:
        """The FAISS index as FAISS writes it (what ``save`` writes): for a mapped one, its file as verified."""
        if self._mapped is not None:
            return self._mapped.blocks.read(0, self._mapped.blocks.size)
        return _faiss().serialize_index(self._index).tobytes()  # type: ignore[no-any-return]

    def _write(self, path: Path) -> None:
        """Write the index to ``path`` as ``to_bytes`` gives it, without holding it in memory a second time: FAISS
        hands its serialisation to Python's file a piece at a time (so a full disk surfaces as an OSError)."""
        with open(path, "wb") as f:
            if self._mapped is not None:
                f.write(self.to_bytes())
            else:
                faiss = _faiss()
                faiss.write_index(self._index, faiss.PyCallbackIOWriter(f.write))

    @staticmethod
    def _read(path: Path, make: Callable[[Any], _T], blocks: BlockFile | None = None,
              lists_at: int | None = None) -> _T:
        """``make`` applied to the FAISS index in ``path``; IndexCorrupt when the file cannot be read or ``make``
        refuses what it holds (by raising). ``blocks``, the file's block checks: every block is verified before
        FAISS reads it (through the descriptor verified) or, with ``lists_at`` (where an inverted file's lists
        begin, ``lists_start``), the blocks before it, and FAISS maps the lists instead of reading them."""
        name, flags = str(path), 0
        if blocks is not None:
            name = blocks.opener()
            if lists_at is None:
                blocks.check_all()
            else:
                blocks.check(0, lists_at)
                flags = _faiss().IO_FLAG_MMAP
        try:
            return make(_faiss().read_index(name, flags))
        except IndexCorrupt:
            raise
        except Exception as exc:  # faiss raises RuntimeError with a C++ trace
            raise IndexCorrupt(
                f"The vector file {path} cannot be read ({type(exc).__name__}). {REBUILD_HINT}"
            ) from None

    def _materialize(self) -> None:
        """Read a mapped inverted file into memory (verified): FAISS changes and writes only lists it holds."""
        if self._mapped is not None:
            data = self.to_bytes()  # (the mapped file, verified)
            nprobe = int(self._ivf.nprobe)
            self._index = _faiss().deserialize_index(np.frombuffer(data, dtype=np.uint8))
            self._ivf = _faiss().try_extract_index_ivf(self._index)
            self._ivf.nprobe = nprobe
            self._mapped = None

    def _probe(self, q: np.ndarray, depth: int, selector: Any, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's search of ``nprobe`` lists; the lists of a mapped file are verified before they are scanned."""
        faiss = _faiss()
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        if self._mapped is None:
            return self._index.search(q, depth, params=params)  # type: ignore[no-any-return]
        dist, lists = self._ivf.quantizer.search(q, nprobe)  # the lists FAISS's own search would scan
        self._mapped.check_lists(lists[0])
        scores, rows = np.empty((1, depth), dtype=np.float32), np.empty((1, depth), dtype=np.int64)
        ptr = faiss.swig_ptr  # (the Python wrapper of search_preassigned takes no parameters: the C++ call does)
        self._ivf.search_preassigned_c(1, ptr(q), depth, ptr(lists), ptr(dist), ptr(scores), ptr(rows), False, params)
        return scores, rows

    changed: int = 0  # rows added or removed by updates since the inverted file was trained (``RETRAIN_SHARE``)

    def _splice_lists(self, old_rows: np.ndarray, added: np.ndarray) -> None:
        """Change the inverted file in place so that row i is its row ``old_rows[i]`` or, where that is -1, the next
        row of ``added``: the rows not named leave it, the others are renumbered and the new ones are added by id
        (coded with the kept training). The caller rebuilds what maps rows to places (``make_direct_map``)."""
        faiss = _faiss()
        self._materialize()
        ivf = self._ivf
        kept = old_rows >= 0
        table = np.full(int(ivf.ntotal), -1, dtype=np.int64)  # old row -> new row (-1: leaves)
        table[old_rows[kept]] = np.flatnonzero(kept)
        gone = np.flatnonzero(table < 0)
        if ivf.direct_map.type != faiss.DirectMap.NoMap:
            ivf.set_direct_map_type(faiss.DirectMap.NoMap)  # (faiss removes by id only without the array map)
        if len(gone):
            ivf.remove_ids(faiss.IDSelectorBatch(gone))
        lists = ivf.invlists
        for n in range(int(ivf.nlist)):
            size = int(lists.list_size(n))
            if size:
                ids = faiss.rev_swig_ptr(lists.get_ids(n), size)  # the list's ids, in place
                ids[:] = table[ids]
        if len(added):
            step = 65_536
            new_at = np.flatnonzero(~kept)
            for s in range(0, len(added), step):
                ivf.add_with_ids(np.ascontiguousarray(added[s:s + step], dtype=np.float32), new_at[s:s + step])

    def _ivf_search(self, q: np.ndarray, k: int, allowed: np.ndarray | None, depth: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The inverted file's ``depth`` best (scores, rows) for ``q`` (one row), among ``allowed`` rows when given:
        lists scanned in proportion to how rare those rows are, and every list when the ones scanned held fewer
        than ``k``. FAISS's padding (row -1, in Python the last row) is removed."""
        faiss = _faiss()
        nlist, nprobe = int(self._ivf.nlist), int(self._ivf.nprobe)
        selector = None
        if allowed is not None:  # allowed rows are rarer in each list: scan proportionally more lists
            selector = faiss.IDSelectorBitmap(allowed_bitmap(allowed, self.ntotal))
            nprobe = min(nlist, int(np.ceil(nprobe * self.ntotal / len(allowed))))
        scores, rows = self._probe(q, depth, selector, nprobe)
        if int((rows[0] >= 0).sum()) < k and nprobe < nlist:  # the lists scanned held fewer than k rows
            scores, rows = self._probe(q, depth, selector, nlist)
        keep = rows[0] >= 0
        return scores[0][keep], rows[0][keep]


class FaissVectors(_Faiss):
    """Inner-product search over normalised vectors (cosine similarity): exact up to ``EXACT_MAX`` vectors, an
    inverted file above (see ``choose_index_type``). ``take`` returns stored vectors exactly for every type."""

    def __init__(self, index: Any, mapped: tuple[BlockFile, int] | None = None):
        faiss = _faiss()
        self._index = index
        self._ivf = faiss.try_extract_index_ivf(index) if not isinstance(index, faiss.IndexFlat) else None
        if self._ivf is not None:
            self._ivf.nprobe = ivf_probes(int(self._ivf.nlist))
            if mapped is not None:
                self._mapped = MappedLists(self._ivf, *mapped)
            if self._ivf.direct_map.type == faiss.DirectMap.NoMap and index.ntotal:
                if self._mapped is not None:
                    self._mapped.blocks.check_all()  # (it reads every list's ids)
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
                               exact=self._ivf is None, nlist=self.nlist, nprobe=self.nprobe,
                               changed=None if self._ivf is None else self.changed)

    def splice(self, old_rows: np.ndarray, added: np.ndarray) -> None:
        """Row i becomes this index's row ``old_rows[i]``, or where that is -1 the next row of ``added``; in place,
        keeping the inverted file's training (an inverted file only)."""
        if self._ivf is None:
            raise ValueError("an exact index is rebuilt, not spliced")
        self._splice_lists(old_rows, added)
        self._ivf.make_direct_map()

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
            return top_k(similarities(self.take(allowed), q[0]), np.asarray(allowed, dtype=np.int64), k)
        else:
            return self._ivf_search(q, k, allowed, k)
        keep = rows[0] >= 0
        return scores[0][keep], rows[0][keep]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of the given rows, as an (n, dim) array."""
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if self._mapped is not None:
            self._mapped.check_rows(self._ivf, rows)
        return self._index.reconstruct_batch(rows)

    def vectors(self) -> np.ndarray:
        if self.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.take(np.arange(self.ntotal, dtype=np.int64))

    def save(self, path: Path) -> None:
        self._write(path)

    @classmethod
    def load(cls, path: Path, *, blocks: BlockFile | None = None, lists_at: int | None = None) -> FaissVectors:
        """The index in ``path``; with ``blocks`` verified by them, and with ``lists_at`` too, its lists mapped
        (``_read``)."""
        def make(index: Any) -> FaissVectors:
            faiss = _faiss()
            if not isinstance(faiss.downcast_index(index), (faiss.IndexFlatIP, faiss.IndexIVFFlat)):
                raise TypeError("not a flat or inverted-file index")  # (codes would give approximate ``take``)
            return cls(index, None if lists_at is None or blocks is None else (blocks, lists_at))

        return cls._read(path, make, blocks, lists_at)


class MappedLists:
    """The lists of an inverted file that FAISS reads from a memory map of its file (``IO_FLAG_MMAP``) rather than
    from memory, and where each lies in the file, so that the bytes a search or ``take`` is about to read are
    verified first (``blocks``, integrity.py). FAISS's format puts a header first (the training, the map from rows
    to lists: ``lists_at`` bytes, verified before FAISS parses them), then list after list, each its vectors' codes
    and then their ids; anything else is refused, as a search could then read bytes no check covers."""

    def __init__(self, ivf: Any, blocks: BlockFile, lists_at: int):
        faiss = _faiss()
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        if not isinstance(lists, faiss.OnDiskInvertedLists):
            raise TypeError("the inverted file's lists are not mapped")
        lists.prefetch_nthread = 0  # (FAISS would start threads to touch a search's pages first: slower, measured)
        n = int(ivf.nlist)
        self.blocks, self.code = blocks, int(ivf.code_size)
        self.at = np.fromiter((lists.lists.at(i).offset for i in range(n)), dtype=np.int64, count=n)
        self.bytes = np.fromiter((lists.list_size(i) for i in range(n)), dtype=np.int64, count=n) * (self.code + 8)
        used = np.flatnonzero(self.bytes)
        ends = lists_at + np.cumsum(self.bytes[used])
        if not (np.array_equal(self.at[used], ends - self.bytes[used]) and (ends[-1] if len(ends) else lists_at)
                == blocks.size):
            raise IndexCorrupt(f"The vector file {shown(blocks.path)} is not laid out as tqa writes it. "
                               f"{REBUILD_HINT}")
        self._where: np.ndarray | None = None  # row -> (list << 32 | place in it): FAISS's direct map, copied once

    def check_lists(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[ids >= 0]  # (FAISS pads with -1 when there are fewer lists than asked)
        self.blocks.check(self.at[ids], self.bytes[ids])

    def check_rows(self, ivf: Any, rows: np.ndarray) -> None:
        if self._where is None:
            self._where = _faiss().vector_to_array(ivf.direct_map.array).astype(np.int64)
        where = self._where[rows]
        self.blocks.check(self.at[where >> 32] + (where & 0xFFFFFFFF) * self.code, np.full(len(rows), self.code))


def lists_start(info: VectorIndexInfo | None, size: int, rows: int, dim: int) -> int | None:
    """Where the lists of the inverted file of ``rows`` float32 vectors of dimension ``dim`` that ``info`` describes
    begin in its file of ``size`` bytes: after the header, as every vector's code (4 bytes a dimension) and id
    (8 bytes) fill the end of it. None for another kind of index, whose file is read whole."""
    if info is None or info.type != "faiss.IndexIVFFlat" or rows <= 0:
        return None
    start = size - rows * (4 * dim + 8)
    return start if 0 < start < size else None


# ---------------------------------------------------------------- compressed: codes in memory, rows on disk


def stored_path(path: Path) -> Path:
    """Where the stored rows of the vector file ``path`` are (``vectors.faiss`` -> ``vectors.f16.npy``)."""
    return path.with_name(path.name.rsplit(".", 1)[0] + STORED_SUFFIX)


def npy_header(head: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, Fortran order, dtype, where the data begin) from the first bytes of a ``.npy`` file: its header is a
    literal, parsed (no pickle, no code run). ValueError (or TypeError) when it is not one."""
    header = io.BytesIO(head)
    version = np.lib.format.read_magic(header)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(header)
    return shape, fortran, dtype, header.tell()


class StoredVectors:
    """Rows of float16 vectors: an array in memory (a build, a small file, or rows a build maps), or a ``.npy`` file
    read a row at a time as asked (a loaded index checked by blocks), never mapped: pages of a mapping count as the
    answering process's memory, and each row read maps its neighbours' pages too (at 10M chunks, 142 questions left
    4.4 GiB of the two stored-rows files mapped, for 0.5 GiB of rows read; bench/results-scale.md), while pages
    read are the system's cache, and a file cut short under the reader is a short read, refused, not a signal.

    ``check(offsets, lengths)``, when given, is called with the file's byte ranges before they are read (the block
    checksums, store.py), so no row is used unverified.
    """

    DTYPE = np.dtype("<f2")
    RUN_BYTES = 1 << 24  # the most read at once from consecutive rows (a 16 MiB buffer)

    def __init__(self, array: np.ndarray | None, *, offset: int = 0, check: Check | None = None,
                 file: tuple[Path, int, int, int] | None = None):
        self._array = array
        self._offset = offset  # of the first row in the file (the .npy header's length)
        self._check = check
        self._path: Path | None = None
        self._fd = -1
        if array is not None:
            self._shape = (int(array.shape[0]), int(array.shape[1]))
        else:  # (path, open descriptor, rows, dim): rows read from the file on demand
            assert file is not None
            self._path, self._fd = file[0], file[1]
            self._shape = (file[2], file[3])
            weakref.finalize(self, os.close, self._fd)
        self._row_bytes = self._shape[1] * self.DTYPE.itemsize

    @classmethod
    def of(cls, vectors: np.ndarray) -> StoredVectors:
        return cls(np.ascontiguousarray(vectors, dtype=cls.DTYPE))

    @classmethod
    def open(cls, path: Path, *, check: Check | None = None) -> StoredVectors:
        what = f"The vector file {shown(path)}"
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise IndexCorrupt(f"{what} cannot be read ({type(exc).__name__}). {REBUILD_HINT}") from None
        try:
            shape, fortran, dtype, start = npy_header(os.pread(fd, 4096, 0))
            size = os.fstat(fd).st_size
        except (OSError, ValueError, TypeError) as exc:
            os.close(fd)
            raise IndexCorrupt(f"{what} cannot be read ({type(exc).__name__}). {REBUILD_HINT}") from None
        if len(shape) != 2 or dtype != cls.DTYPE or fortran or size != start + shape[0] * shape[1] * 2:
            os.close(fd)
            raise IndexCorrupt(f"{what} does not hold float16 rows. {REBUILD_HINT}")
        store = cls(None, offset=start, check=check, file=(path, fd, int(shape[0]), int(shape[1])))
        if check is None:  # (small: verified whole at load) in memory, which no truncation of the file can affect
            return cls(store._read(np.arange(store.rows)))
        return store

    def write(self, path: Path) -> None:
        """Create ``path`` (never replacing a file) as a ``.npy`` of the rows."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        with os.fdopen(fd, "wb") as f:
            if self._array is not None:
                np.save(f, np.ascontiguousarray(self._array), allow_pickle=False)
                return
            np.lib.format.write_array_header_1_0(f, {"descr": self.DTYPE.str, "fortran_order": False,
                                                     "shape": self._shape})
            step = max(1, self.RUN_BYTES // self._row_bytes)
            for a in range(0, self.rows, step):
                f.write(self._read(np.arange(a, min(self.rows, a + step))).tobytes())

    @property
    def mapped(self) -> bool:
        """Whether the rows stay in a file, read as asked (a loaded index checked by blocks, or rows a build maps),
        rather than in memory."""
        return self._array is None or isinstance(self._array, np.memmap)

    @property
    def rows(self) -> int:
        return self._shape[0]

    @property
    def dim(self) -> int:
        return self._shape[1]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given rows (any order, repeats allowed) as float32, read in file order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if int(rows.min()) < 0 or int(rows.max()) >= self.rows:
            raise IndexError(f"row out of range 0..{self.rows - 1}")
        distinct, where = np.unique(rows, return_inverse=True)
        if self._array is not None:
            if self._check is not None:
                self._check(self._offset + distinct * self._row_bytes, np.full(len(distinct), self._row_bytes))
            read = self._array[distinct]
        else:
            read = self._read(distinct)
        return widened(read)[where]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Distinct ascending rows from the file, as stored (float16): consecutive rows in one read, each read
        checked first."""
        cut = np.flatnonzero(np.diff(rows) != 1) + 1
        firsts = rows[np.concatenate(([0], cut))]
        counts = np.diff(np.concatenate(([0], cut, [len(rows)])))
        step = max(1, self.RUN_BYTES // self._row_bytes)
        if int(counts.max()) > step:  # (long runs read a buffer's worth at a time)
            split = [(int(f) + s, min(step, int(c) - s)) for f, c in zip(firsts, counts, strict=True)
                     for s in range(0, int(c), step)]
            firsts = np.array([f for f, _ in split], dtype=np.int64)
            counts = np.array([c for _, c in split], dtype=np.int64)
        at = self._offset + firsts * self._row_bytes
        lengths = counts * self._row_bytes
        if self._check is not None:
            self._check(at, lengths)
        fd = self._fd
        data = b"".join([os.pread(fd, n, a) for a, n in zip(at.tolist(), lengths.tolist(), strict=True)])
        if len(data) != int(lengths.sum()):
            raise IndexCorrupt(f"The vector file {shown(self._path)} is shorter than the index it belongs to "
                               f"(changed since it was loaded?). {REBUILD_HINT}")
        return np.frombuffer(data, dtype=self.DTYPE).reshape(len(rows), self.dim)


def pq_settings(n: int) -> tuple[int, int]:
    """(nlist, nprobe) of a compressed index of ``n`` vectors."""
    nlist = max(16, min(int(round(PQ_LISTS_PER_SQRT * np.sqrt(max(n, 1)))), n // 39))
    return nlist, pq_probes(nlist)


def pq_probes(nlist: int) -> int:
    """Lists scanned per question; a search-time setting, applied when an index is loaded."""
    return min(nlist, max(PQ_MIN_PROBES, int(np.ceil(nlist * PQ_PROBE_SHARE))))


def pq_subquantizers(dim: int) -> int:
    """The largest even divisor of ``dim`` up to ``PQ_M_MAX`` (fast-scan codes come in pairs of 4-bit codes)."""
    return max((m for m in range(2, min(PQ_M_MAX, dim) + 1, 2) if dim % m == 0), default=1)


class CompressedVectors(_Faiss):
    """Candidates from product-quantised codes (faiss ``IndexIVFPQFastScan``, inner product), scored exactly
    against the stored rows (``StoredVectors``): the scores a caller sees are those of the stored vectors (float16,
    about 1e-3 from float32), and only which candidates are found is approximate, as with the inverted file.

    The same interface as ``FaissVectors`` (``search``, ``take``, ``ntotal``, ``dim``, ``kind``, ``describe``,
    ``save``); ``load`` needs the stored rows as well. Row i of the codes is row i of the store.
    """

    kind = "compressed"

    def __init__(self, index: Any, store: StoredVectors, *, depth: int = RERANK_DEPTH):
        faiss = _faiss()
        ivf = faiss.try_extract_index_ivf(index)
        ivf = None if ivf is None else faiss.downcast_index(ivf)
        if not isinstance(ivf, (faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan)):
            raise TypeError("a compressed index is a faiss IndexIVFPQ or IndexIVFPQFastScan")
        if int(index.d) != store.dim or int(index.ntotal) != store.rows:
            raise ValueError(f"codes of {index.ntotal} vectors of dimension {index.d}, stored rows "
                             f"{store.rows} x {store.dim}")
        self._index = index
        self._ivf = ivf
        self._ivf.nprobe = pq_probes(int(ivf.nlist))
        self.store = store
        self.depth = depth

    @classmethod
    def trained(cls, vectors: np.ndarray, dim: int, seed: int = 1234) -> Any:
        """An empty IndexIVFPQFastScan for ``vectors``, trained on a fixed sample of them."""
        faiss = _faiss()
        n = len(vectors)
        nlist = pq_settings(n)[0]
        index = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, nlist, pq_subquantizers(dim), PQ_BITS,
                                         faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = PQ_TRAIN_ITERATIONS
        index.cp.seed = seed
        n_train = min(n, max(nlist * PQ_TRAIN_PER_LIST, PQ_TRAIN_MIN))
        index.cp.max_points_per_centroid = max(1, -(-n_train // nlist))  # faiss must not subsample again
        index.pq.cp.seed = seed
        index.pq.cp.niter = PQ_CODEBOOK_ITERATIONS
        sample = np.sort(np.random.default_rng(0).choice(n, size=n_train, replace=False))
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        return index

    @classmethod
    def build(cls, vectors: np.ndarray, dim: int) -> CompressedVectors:
        """The compressed index of ``vectors`` (float32 rows), trained on a sample of them. (An update changes a
        trained one in place instead: ``splice``, ``update_vectors``.)"""
        index = cls.trained(vectors, dim)
        cls._code(index, vectors)
        return cls(index, StoredVectors.of(vectors))

    @classmethod
    def of_rows(cls, rows: np.ndarray) -> CompressedVectors:
        """The compressed index of float16 rows kept as they are (an array, or a ``.npy`` memory-mapped from disk,
        which is how an index too big for memory is built): trained on a sample of them and coded a block at a
        time, never a float32 copy of them all. The codes are those of the stored (float16) values."""
        if rows.ndim != 2 or rows.dtype != StoredVectors.DTYPE or not rows.flags.c_contiguous:
            raise ValueError("of_rows takes C-contiguous float16 rows")
        index = cls.trained(rows, int(rows.shape[1]))
        cls._code(index, rows)
        return cls(index, StoredVectors(rows))

    @staticmethod
    def _code(index: Any, vectors: np.ndarray) -> None:
        step = 65_536  # rows coded at a time (a few tens of MB of floats)
        for s in range(0, len(vectors), step):
            index.add(np.ascontiguousarray(vectors[s:s + step], dtype=np.float32))

    @property
    def nlist(self) -> int:
        return int(self._ivf.nlist)

    @property
    def nprobe(self) -> int:
        return int(self._ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._ivf.nprobe = int(value)

    def describe(self) -> VectorIndexInfo:
        return VectorIndexInfo(type=f"faiss.{type(self._index).__name__}", metric="cosine", vectors=self.ntotal,
                               exact=False, nlist=self.nlist, nprobe=self.nprobe,
                               code_bytes=int(self._ivf.pq.M) * int(self._ivf.pq.nbits) // 8,
                               rerank_depth=self.depth, stored="float16", changed=self.changed)

    def splice(self, old_rows: np.ndarray, added: np.ndarray) -> None:
        """As ``FaissVectors.splice``: the codes changed in place (training kept), the stored rows copied anew."""
        kept = old_rows >= 0
        rows = np.empty((len(old_rows), self.dim), dtype=StoredVectors.DTYPE)
        step = 65_536
        where = np.flatnonzero(kept)
        for s in range(0, len(where), step):
            rows[where[s:s + step]] = self.store.take(old_rows[where[s:s + step]])
        rows[~kept] = added
        self._splice_lists(old_rows, added)
        self.store = StoredVectors(rows)

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) for one query vector, optionally only among ``allowed`` rows; the codes choose
        ``depth`` candidates (at least ``RERANK_PER_RESULT`` per result), scored exactly from the stored rows.
        A filter of at most ``FILTER_EXACT_MAX`` rows is searched exactly on the stored rows."""
        k = min(k, self.ntotal if allowed is None else len(allowed))
        if k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        q = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        if allowed is not None and len(allowed) <= FILTER_EXACT_MAX:
            allowed = np.asarray(allowed, dtype=np.int64)
            return top_k(similarities(self.store.take(allowed), q[0]), allowed, k)
        found = self._ivf_search(q, k, allowed, max(self.depth, RERANK_PER_RESULT * k))[1].astype(np.int64)
        return top_k(similarities(self.store.take(found), q[0]), found, k)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of the given rows, as an (n, dim) float32 array."""
        return self.store.take(np.asarray(rows, dtype=np.int64))

    def vectors(self) -> np.ndarray:
        return self.take(np.arange(self.ntotal, dtype=np.int64))

    def save(self, path: Path) -> None:
        """Write the codes to ``path`` and the stored rows beside it (``stored_path``)."""
        self._write(path)
        self.store.write(stored_path(path))

    @classmethod
    def load(cls, path: Path, *, check: Check | None = None, blocks: BlockFile | None = None) -> CompressedVectors:
        store = StoredVectors.open(stored_path(path), check=check)
        return cls._read(path, lambda index: cls(index, store), blocks)


VectorIndex = Union[FaissVectors, CompressedVectors]  # noqa: UP007 (a runtime alias)


def build_vectors(vectors: np.ndarray, dim: int, *, compress_above: int = COMPRESS_ABOVE) -> VectorIndex:
    """The vector index of ``vectors``, of the kind ``wanted_kind`` names: compressed above ``compress_above``
    vectors (when there are enough to train codes, ``PQ_MIN_VECTORS``), otherwise ``FaissVectors`` (exact or
    inverted file by size)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
    kind = wanted_kind(len(vectors), compress_above)
    if kind == "compressed":
        return CompressedVectors.build(vectors, dim)
    return FaissVectors.build(vectors, dim, kind)


def wanted_kind(n: int, compress_above: int = COMPRESS_ABOVE) -> str:
    """The kind of index ``build_vectors`` makes of ``n`` vectors: "flat", "ivf" or "compressed"."""
    if n > compress_above and n >= PQ_MIN_VECTORS:
        return "compressed"
    kind = choose_index_type(n)
    return "flat" if kind == "ivf" and n < IVF_MIN_VECTORS else kind


def update_vectors(previous: VectorIndex | None, old_rows: np.ndarray, added: np.ndarray, dim: int, *,
                   compress_above: int = COMPRESS_ABOVE) -> VectorIndex:
    """The vector index whose row i is ``previous``'s row ``old_rows[i]`` or, where that is -1, the next row of
    ``added``: an update's. A trained ``previous`` (inverted file, compressed) that stays of its kind is changed in
    place (``splice``: its training kept) while the rows changed since it was trained stay within ``RETRAIN_SHARE``
    of the index and its number of lists within ``RETRAIN_FACTOR`` of what a fresh training would choose; otherwise
    the index is built again from all its vectors (exact indexes always: that costs little below ``EXACT_MAX``)."""
    old_rows = np.asarray(old_rows, dtype=np.int64)
    added = np.ascontiguousarray(added, dtype=np.float32).reshape(-1, dim)
    kept = old_rows >= 0
    if int((~kept).sum()) != len(added):
        raise ValueError(f"{int((~kept).sum())} new rows, {len(added)} vectors")
    n = len(old_rows)
    if previous is not None and previous.dim == dim and _spliceable(previous, n, compress_above):
        changed = previous.changed + (previous.ntotal - int(kept.sum())) + len(added)
        if changed <= RETRAIN_SHARE * n:
            previous.splice(old_rows, added)
            previous.changed = changed
            return previous
    if not kept.any():  # every row new (a first build): the vectors as given, not a copy of them
        return build_vectors(added, dim, compress_above=compress_above)
    if previous is None:
        raise ValueError("rows of a previous index, without one")
    whole = np.empty((n, dim), dtype=np.float32)
    whole[kept] = previous.take(old_rows[kept])
    whole[~kept] = added
    return build_vectors(whole, dim, compress_above=compress_above)


def _spliceable(previous: VectorIndex, n: int, compress_above: int) -> bool:
    kind = wanted_kind(n, compress_above)
    if kind != previous.kind or kind == "flat" or previous.nlist is None:
        return False
    fresh = (pq_settings(n) if kind == "compressed" else ivf_settings(n))[0]
    return 1 / RETRAIN_FACTOR <= fresh / previous.nlist <= RETRAIN_FACTOR


def load_vectors(path: Path, info: VectorIndexInfo | None, *, check: Check | None = None,
                 blocks: BlockFile | None = None, mapped: tuple[int, int] | None = None) -> VectorIndex:
    """The vector index in ``path``, of the kind the manifest records (``info``; compressed when it has stored
    rows); the file's own type must agree. ``changed`` (rows changed since training) is read from ``info``.
    ``check``: the stored rows' block checks; ``blocks``: the FAISS file's, which with ``mapped`` (the rows and
    dimension the index must have) map an inverted file's lists, verified as searches reach them (``MappedLists``),
    instead of reading the whole file."""
    index: VectorIndex
    if info is not None and info.compressed:
        index = CompressedVectors.load(path, check=check, blocks=blocks)
    else:
        at = None if mapped is None or blocks is None else lists_start(info, blocks.size, *mapped)
        index = FaissVectors.load(path, blocks=blocks, lists_at=at)
    index.changed = (info.changed if info is not None else None) or 0
    return index
