"""The chunk table read on demand: a row is parsed when it is used, not every row when the index loads.

Parsing a million JSON rows into ``Chunk`` objects takes about 20 s and gigabytes; a question uses a few dozen rows.
So a publish writes, beside the rows (``chunks.jsonl``, one JSON object a line, as before), three small arrays
(``.npy``, int64 or int32, without pickle) that a reader memory-maps instead of parsing the rows:

- ``chunks.offsets.npy``: rows + 1 entries; row i is bytes ``offsets[i]:offsets[i + 1]`` of chunks.jsonl;
- ``chunks.units.npy``: rows + 1 entries; row i's units are rows ``units[i]:units[i + 1]`` of units.faiss;
- ``chunks.sources.npy``: one entry a row, the place of the row's document in the manifest's sorted sources;
- ``chunks.keys.npy``: three entries a row (int64): a 64-bit hash of the row's words (``text_key``), its start and
  its end in its document: what a search needs of every candidate to drop those that overlap or repeat a better one
  (retrieval.drop_overlaps), so that it parses only the rows it shows. Tables written before it have none.

All four are verified before use (integrity.py): a small one whole at load (its verified bytes are kept), a big one
by blocks (``BLOCK_CHECKED``): a row's bytes are verified before they are parsed, read through the very descriptor
that was verified, and each array is verified whole (8 bytes a row: a few milliseconds at a million rows) when
the index loads. A parsed row must agree with the arrays (its units, its
document), and a row outside the table is refused (FAISS pads results with -1, which a list would take for the
last row). An index published before this table existed has no arrays: ``store`` reads its rows whole, as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from .chunking import Chunk
from .errors import REBUILD_HINT, IndexCorrupt, shown
from .integrity import BlockFile
from .manifest import CHUNK_KEYS, CHUNK_OFFSETS, CHUNK_SOURCES, CHUNK_UNITS, CHUNKS, json_bytes
from .vectors import npy_header

CACHE_ROWS = 4096  # parsed rows kept (a question reads a few dozen)
_READ_ROWS = 4096  # rows read with one system call when iterating


def write_table(folder: Path, chunks: Iterable[Chunk], sources: Sequence[str]) -> int:
    """Write ``chunks.jsonl`` and its arrays into ``folder`` (files created, never replaced); ``sources`` are the
    manifest's sorted sources, which every chunk's document must be one of. Returns the number of rows."""
    place = {s: i for i, s in enumerate(sources)}
    offsets, units, ids = [0], [0], []
    keys: list[int] = []  # (text key, start, end) a row
    with _create(folder / CHUNKS) as f:
        for c in chunks:
            line = json_bytes(c.to_dict()) + b"\n"
            f.write(line)
            offsets.append(offsets[-1] + len(line))
            units.append(units[-1] + len(c.units))
            keys += (text_key(c.text), c.start, c.end)
            try:
                ids.append(place[c.source])
            except KeyError:
                raise ValueError(f"the chunk's document {c.source!r} is not among the manifest's files") from None
    for name, values, dtype in ((CHUNK_OFFSETS, offsets, "<i8"), (CHUNK_UNITS, units, "<i8"),
                                (CHUNK_SOURCES, ids, "<i4"), (CHUNK_KEYS, keys, "<i8")):
        with _create(folder / name) as f:
            np.lib.format.write_array(f, np.asarray(values, dtype=dtype), allow_pickle=False)
    return len(ids)


def words(text: str) -> str:
    """A passage's words in order, spacing aside: what two passages must share to be the same passage."""
    return " ".join(text.split())


def text_key(text: str) -> int:
    """A 64-bit hash of ``words(text)`` (equal words, equal keys; two passages whose keys are equal are compared by
    their words before being taken for one)."""
    digest = hashlib.blake2b(words(text).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _create(path: Path) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    return os.fdopen(fd, "wb")


class _File:
    """One file of the table: read through its block checks (``BlockFile``), from its bytes as verified whole at
    load, or, for an index loaded without verifying, straight from the file."""

    def __init__(self, path: Path, verified: BlockFile | bytes | None):
        self.path = path
        self.checked = verified if isinstance(verified, BlockFile) else None
        self.data = verified if isinstance(verified, bytes) else None
        self._fd = -1
        if self.checked is not None:
            self.size = self.checked.size
        elif self.data is not None:
            self.size = len(self.data)
        else:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self.size = os.fstat(self._fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        if self.checked is not None:
            return self.checked.read(offset, length)
        if self.data is not None:
            return self.data[offset:offset + length]
        return os.pread(self._fd, length, offset)

    def whole(self) -> bytes:
        """The whole file, verified, in memory: never a mapping, whose pages a file truncated under the reader
        would pull away (SIGBUS)."""
        if self.checked is not None:
            return self.checked.read(0, self.size)
        if self.data is not None:
            return self.data
        return os.pread(self._fd, self.size, 0)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def _array(f: _File, dtype: str, length: int) -> np.ndarray:
    """The one-dimensional array of ``dtype`` and ``length`` in a verified .npy file, read into memory."""
    what = f"The index file {shown(f.path)}"
    buf = f.whole()
    try:
        shape, fortran, dt, start = npy_header(bytes(buf[:min(len(buf), 4096)]))
    except (ValueError, OSError, TypeError) as exc:
        raise IndexCorrupt(f"{what} is not an array ({exc}). {REBUILD_HINT}") from None
    if dt != np.dtype(dtype) or fortran or shape != (length,):
        raise IndexCorrupt(f"{what} holds {shape} of {dt}, the index needs {length} entries of "
                           f"{np.dtype(dtype)} (the manifest's count). {REBUILD_HINT}")
    if start + length * np.dtype(dtype).itemsize != len(buf):
        raise IndexCorrupt(f"{what} is not the size its header says. {REBUILD_HINT}")
    out = np.frombuffer(buf, dtype=dtype, count=length, offset=start)
    out.flags.writeable = False
    return out


class ChunkTable(Sequence[Chunk]):
    """The chunk table of a generation folder, read on demand (see the module docstring). Thread-safe.

    ``verified`` maps a file name (``CHUNKS`` and the arrays) to its ``BlockFile`` (integrity.py) or to its bytes as
    verified whole at load; without it (an index loaded without verifying) the files are read unchecked. ``rows``
    is the manifest's count and ``sources`` its sorted sources: the arrays must agree with them. ``keys``: the table
    has its rows' keys (``CHUNK_KEYS``; a table written before them has not).
    """

    def __init__(self, folder: Path, rows: int, sources: Sequence[str],
                 verified: dict[str, BlockFile | bytes] | None = None, *, keys: bool = False, cache: int = CACHE_ROWS):
        self.folder = Path(folder)
        self._rows, self._names = rows, list(sources)
        verified = verified or {}
        self._files: dict[str, _File] = {}
        try:
            for name in (CHUNKS, CHUNK_OFFSETS, CHUNK_UNITS, CHUNK_SOURCES, *((CHUNK_KEYS,) if keys else ())):
                self._files[name] = _File(self.folder / name, verified.get(name))
        except FileNotFoundError as exc:
            self.close()
            raise IndexCorrupt(f"The index file {shown(exc.filename)} is missing. {REBUILD_HINT}") from None
        except OSError as exc:
            self.close()
            raise IndexCorrupt(f"The index file {shown(exc.filename)} cannot be read: {exc.strerror}. "
                               f"{REBUILD_HINT}") from None
        self._rows_file = self._files[CHUNKS]
        self._offsets: np.ndarray | None = None
        self._units: np.ndarray | None = None
        self._ids: np.ndarray | None = None
        self._keys: np.ndarray | None = None
        self._keys_lock = threading.Lock()
        self._by_source: tuple[np.ndarray, np.ndarray] | None = None
        self._cache: OrderedDict[int, Chunk] = OrderedDict()
        self._cache_size = cache
        self._lock = threading.Lock()
        self.parsed = 0  # rows parsed so far (what a question cost; tests read it)

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    # ---- the arrays, each verified whole and checked against the manifest on first use

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            a = _array(self._files[CHUNK_OFFSETS], "<i8", self._rows + 1)
            if int(a[0]) != 0 or int(a[-1]) != self._rows_file.size or (self._rows and bool(np.any(a[1:] <= a[:-1]))):
                raise IndexCorrupt(f"The chunk table {shown(self.folder / CHUNKS)} does not match its offsets "
                                   f"({shown(self.folder / CHUNK_OFFSETS)}). {REBUILD_HINT}")
            self._offsets = a
        return self._offsets

    @property
    def unit_ptr(self) -> np.ndarray:
        """Row i's units are rows unit_ptr[i]:unit_ptr[i + 1] of the unit index."""
        if self._units is None:
            a = _array(self._files[CHUNK_UNITS], "<i8", self._rows + 1)
            if int(a[0]) != 0 or (self._rows and bool(np.any(a[1:] < a[:-1]))):
                raise IndexCorrupt(f"The index file {shown(self.folder / CHUNK_UNITS)} is not a table of unit "
                                   f"counts. {REBUILD_HINT}")
            self._units = a
        return self._units

    @property
    def source_ids(self) -> np.ndarray:
        if self._ids is None:
            a = _array(self._files[CHUNK_SOURCES], "<i4", self._rows)
            if self._rows and (int(a.min()) < 0 or int(a.max()) >= len(self._names)):
                raise IndexCorrupt(f"The index file {shown(self.folder / CHUNK_SOURCES)} names documents the "
                                   f"manifest does not list. {REBUILD_HINT}")
            self._ids = a
        return self._ids

    # ---- rows

    @property
    def has_keys(self) -> bool:
        return CHUNK_KEYS in self._files

    def keys(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(text key, start, end) of the given rows, from the keys array (read and verified whole when first
        asked for, not when the index loads: 24 bytes a row). Only for a table that ``has_keys``."""
        if self._keys is None:
            with self._keys_lock:
                if self._keys is None:
                    a = _array(self._files[CHUNK_KEYS], "<i8", 3 * self._rows).reshape(self._rows, 3)
                    if self._rows and bool(np.any((a[:, 1] < 0) | (a[:, 2] < a[:, 1]))):
                        raise IndexCorrupt(f"The index file {shown(self.folder / CHUNK_KEYS)} is not a table of "
                                           f"passages' places. {REBUILD_HINT}")
                    self._keys = a
        k = self._keys[np.asarray(rows, dtype=np.int64)]
        return k[:, 0], k[:, 1], k[:, 2]

    def texts(self, rows: Iterable[int]) -> list[str]:
        """The text of each of the given rows: a parsed row's (cached) or the row's own field, read and checked as
        a parse would but without making a Chunk of it (a search compares candidates' words this way)."""
        out = []
        for i in rows:
            i = int(i)
            if not 0 <= i < self._rows:
                raise IndexError(f"row {i} is not in the chunk table (it has {self._rows})")
            with self._lock:
                hit = self._cache.get(i)
            if hit is not None:
                out.append(hit.text)
                continue
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            line = self._rows_file.read(a, b - a)
            try:
                if len(line) != b - a or not line.endswith(b"\n"):
                    raise ValueError("not a whole line")
                text = json.loads(line)["text"]
                if not isinstance(text, str):
                    raise TypeError("a field of the wrong type")
            except (ValueError, KeyError, TypeError) as exc:
                raise self._damaged(i, exc) from None
            out.append(text)
        return out

    def source_names(self, rows: np.ndarray) -> list[str]:
        """The documents of the given rows (from the array of row documents, not a parse)."""
        names = self._names
        return [names[i] for i in self.source_ids[np.asarray(rows, dtype=np.int64)].tolist()]

    def __len__(self) -> int:
        return self._rows

    @overload
    def __getitem__(self, i: int) -> Chunk: ...

    @overload
    def __getitem__(self, i: slice) -> list[Chunk]: ...

    def __getitem__(self, i: int | slice) -> Chunk | list[Chunk]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._rows))]
        i = int(i)  # (numpy integers too)
        if i < 0:
            i += self._rows  # a list's negative index; FAISS's padding never reaches here (retrieval drops it)
        if not 0 <= i < self._rows:
            raise IndexError(f"row {i} is not in the chunk table (it has {self._rows})")
        with self._lock:
            hit = self._cache.get(i)
            if hit is not None:
                self._cache.move_to_end(i)
                return hit
        chunk = self._read(i, i + 1)[0]
        with self._lock:
            self._cache[i] = chunk
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return chunk

    def __eq__(self, other: object) -> bool:
        """Equal to a list (or table) of the same rows, as a list of the parsed rows would be (reads every row)."""
        if not isinstance(other, (list, tuple, ChunkTable)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __iter__(self) -> Iterator[Chunk]:
        """Every row in order, read a few MiB at a time (for a build or a rebuild; not cached)."""
        for s in range(0, self._rows, _READ_ROWS):
            yield from self._read(s, min(self._rows, s + _READ_ROWS))

    def _read(self, start: int, stop: int) -> list[Chunk]:
        offsets = self.offsets
        a, b = int(offsets[start]), int(offsets[stop])
        data = self._rows_file.read(a, b - a)
        if len(data) != b - a:
            raise IndexCorrupt(f"The chunk table {shown(self.folder / CHUNKS)} is shorter than its offsets say. "
                               f"{REBUILD_HINT}")
        ptr, ids = self.unit_ptr, self.source_ids
        out = []
        for row in range(start, stop):
            line = data[int(offsets[row]) - a:int(offsets[row + 1]) - a]
            out.append(self._parse(line, row, int(ptr[row + 1] - ptr[row]), self._names[int(ids[row])]))
        return out

    def _damaged(self, row: int, exc: Exception) -> IndexCorrupt:
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return IndexCorrupt(f"Row {row} of the chunk table {shown(self.folder / CHUNKS)} is damaged ({why}). "
                            f"{REBUILD_HINT}")

    def _parse(self, line: bytes, row: int, units: int, source: str) -> Chunk:
        self.parsed += 1
        try:
            if not line.endswith(b"\n"):
                raise ValueError("not a whole line")
            chunk = Chunk.from_dict(json.loads(line))
            if not isinstance(chunk.source, str) or not isinstance(chunk.text, str):
                raise TypeError("a field of the wrong type")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._damaged(row, exc) from None
        if len(chunk.units) != units or chunk.source != source or (
                self._keys is not None and (chunk.start, chunk.end) != tuple(self._keys[row, 1:])):
            raise IndexCorrupt(f"Row {row} of the chunk table {shown(self.folder / CHUNKS)} disagrees with the "
                               f"table's arrays. {REBUILD_HINT}")
        return chunk

    # ---- documents

    def source_rows(self) -> dict[str, np.ndarray]:
        """The rows of each document, in index order (computed once, from the array of row documents)."""
        ids = self.source_ids
        order = np.argsort(ids, kind="stable")
        bounds = np.searchsorted(ids[order], np.arange(len(self._names) + 1))
        return {self._names[k]: order[bounds[k]:bounds[k + 1]].astype(np.int64)
                for k in range(len(self._names)) if bounds[k + 1] > bounds[k]}
