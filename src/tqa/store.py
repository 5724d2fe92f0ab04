"""The on-disk index: one folder, published atomically, checked when loaded, owning only what tqa wrote.

Layout of an index folder::

    index/
      .tqa-index            marks the folder as a tqa index and holds its id (written once, before anything else)
      CURRENT               name of the live generation (replaced atomically with os.replace)
      .lock                 held while a build writes
      g-<time>-<hex>/       one complete generation
        .tqa-owner          written first: "generation <name> of index <id>"
        .tqa-lease          readers hold a shared lock on it for as long as they use the generation
        manifest.json       format and tqa versions, model, chunking, keyword analyzer, files (hashes), counts,
                            the artifacts' sizes and checksums, and its own checksum (manifest.py)
        vectors.faiss       FAISS index; row i is chunk i
        units.faiss         FAISS index of the chunks' units (paragraphs), in chunk order
        vectors.f16.npy     the stored rows of a compressed vectors.faiss (float16, memory-mapped; vectors.py)
        units.f16.npy       the same for a compressed units.faiss
        chunks.jsonl        the chunk table, one JSON object per row, read a row at a time (chunktable.py)
        chunks.offsets.npy  where each row lies in chunks.jsonl; chunks.units.npy, each row's units (rows of
        chunks.units.npy    units.faiss); chunks.sources.npy, each row's document (its place in the manifest's
        chunks.sources.npy  sorted files). Absent from a generation written before them (its rows are read whole)
        x.blocks            the SHA-256 of each block of a block-checked file x (integrity.py)
        documents.jsonl     the extracted text of every document (for context views and offset checks)
        bm25/               the keyword index (bm25s: .npy arrays without pickle, JSON vocabulary)
        encoder/            the question encoder, when the model could be exported (query_encoder.py)

The file names and which artifacts a generation must hold are the format's (manifest.py); this module writes and
reads the folder. A loaded generation is an ``index.Index``.

A build writes a new generation folder completely (as ``.tmp-<name>``), fsyncs it, renames it into place, then
points CURRENT at it. A reader follows CURRENT, takes a shared lock on the generation's lease file and checks that
the generation is still in place, so it uses the old complete index or the new one, never a mix, and keeps it for
as long as it holds the lease.

What tqa deletes: only entries whose names follow its exact patterns (``g-<time>-<hex>``, ``.tmp-``, ``.retired-``,
``.CURRENT.`` and ``.tqa-index.*.tmp`` leftovers) and that it can show it wrote: a folder whose owner file names it
and this index's id, a pointer file that holds its generation's name. Inside such a folder it deletes only the
files the format defines; anything else stays, and the folder with it. A generation is retired (renamed aside
while exclusively locked, then removed) only when no reader holds it; the live and the previous one are kept.
A ``CURRENT`` that is not a regular file is moved aside, never deleted. Nothing else in the folder is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, integrity
from .chunking import Chunk
from .chunktable import ChunkTable, write_table
from .errors import (
    REBUILD_HINT,
    IndexBusy,
    IndexCorrupt,
    IndexLocationError,
    IndexMismatch,
    IndexNotFound,
    TqaError,
    first_line,
    shown,
)
from .index import Index
from .integrity import BlockFile, Checks, open_checks
from .keywords import KeywordIndex, analyzer_settings
from .loaders import NotReadable, read_bounded
from .manifest import (
    BLOCK_CHECKED,
    BLOCKS_SUFFIX,
    BM25_DIR,
    BM25_FILES,
    CHUNK_KEYS,
    CHUNKS,
    DOCUMENTS,
    ENCODER_DIR,
    FORMAT_FILES,
    FORMAT_VERSION,
    MANIFEST,
    REQUIRED_ARTIFACTS,
    SUBFOLDERS,
    TABLE_ARTIFACTS,
    TABLE_FILES,
    UNITS,
    UNITS_STORED,
    VECTORS,
    VECTORS_STORED,
    Artifact,
    Manifest,
    artifact_set,
    json_bytes,
)
from .vectors import Check, VectorIndex, load_vectors

log = logging.getLogger("tqa")

CURRENT = "CURRENT"
LOCK = ".lock"
MARKER = ".tqa-index"
OWNER = ".tqa-owner"
LEASE = ".tqa-lease"
GEN_RE = re.compile(r"g-\d{8}T\d{6}-[0-9a-f]{8}")  # g-<local time>-<8 hex digits>, as publish() names them
_TMP_RE = re.compile(rf"\.tmp-({GEN_RE.pattern})")
_RETIRED_RE = re.compile(rf"\.retired-({GEN_RE.pattern})")
_POINTER_RE = re.compile(rf"\.{CURRENT}\.({GEN_RE.pattern})")
_MARKER_TMP_RE = re.compile(r"\.tqa-index\.[0-9a-f]{32}\.tmp")
_MARKER_RE = re.compile(rb"tqa-index ([0-9a-f]{32})\n")

# Caps for the small files tqa reads by name (never following a symlink, never waiting on a FIFO): CURRENT holds a
# 27-byte name; the marker and owner files a line or two. (The manifest's cap is manifest.MAX_MANIFEST_BYTES.)
MAX_POINTER_BYTES = 256
MAX_SMALL_BYTES = 4096
_LOAD_ATTEMPTS = 5
_O_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_regular(path: Path) -> int:
    """An open descriptor of a regular file, opened without following a symlink or waiting on a FIFO. Raises
    NotReadable (not a regular file) or OSError."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _O_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotReadable("a symlink, not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotReadable("not a regular file")
    return fd


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(_open_regular(path), "rb") as f:
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


# ---------------------------------------------------------------- the index as a whole


class _Gone(Exception):
    """The generation CURRENT named was retired (or is being retired) before a reader could take it."""


class _Lease:
    """A shared lock on a generation's lease file, held while a reader uses the generation: a publish retires only
    generations it can lock exclusively. Released by ``release()``, or when the object is garbage-collected."""

    def __init__(self, fd: int):
        self._release = weakref.finalize(self, os.close, fd)

    @classmethod
    def take(cls, gen: Path) -> _Lease | None:
        """The lease of ``gen``, None when it has none to take (a generation written by the previous tqa, or a
        file system without locks); raises ``_Gone`` when the generation is gone or being retired."""
        import fcntl

        path = gen / LEASE
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _O_FLAGS)
        except OSError:
            if gen.is_dir():
                return None
            raise _Gone from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # a publish holds it exclusively: it is being retired
                os.close(fd)
                raise _Gone from None
            except OSError:  # no locks here (some network file systems)
                os.close(fd)
                return None
            # A publish renames a generation aside (while it holds the lock) before removing it: the lease counts
            # only if the file locked is still the one at the generation's name.
            held = os.fstat(fd)
            try:
                now = os.stat(path, follow_symlinks=False)
            except OSError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                os.close(fd)
                raise _Gone
        except _Gone:
            raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return cls(fd)

    def release(self) -> None:
        self._release()


def current_generation(index_dir: str | Path) -> Path | None:
    """The live generation's folder, or None when there is no index.

    Cheap (one read of at most 256 bytes) and safe to call before every question: CURRENT is read without following
    a symlink or waiting on a FIFO, and must hold exactly a generation name. Raises IndexCorrupt when it is damaged.
    """
    root = Path(index_dir)
    path = root / CURRENT
    try:
        raw = read_bounded(path, MAX_POINTER_BYTES, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except NotReadable as exc:
        raise IndexCorrupt(f"{shown(path)} is damaged ({exc}). {REBUILD_HINT}") from None
    except OSError as exc:
        raise IndexCorrupt(f"Cannot read {shown(path)}: {exc.strerror or exc}. {REBUILD_HINT}") from None
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise IndexCorrupt(f"{shown(path)} is damaged (not text). {REBUILD_HINT}") from None
    if not GEN_RE.fullmatch(name):
        raise IndexCorrupt(f"{shown(path)} does not name an index generation. {REBUILD_HINT}")
    return root / name


def _live_name(root: Path) -> str | None:
    """The live generation's name, None when there is none or CURRENT is damaged."""
    try:
        gen = current_generation(root)
    except IndexCorrupt:
        return None
    return gen.name if gen is not None else None


def read_manifest(index_dir: str | Path) -> Manifest:
    """The live generation's manifest, checked (``Manifest.read``)."""
    gen = current_generation(index_dir)
    if gen is None:
        raise IndexNotFound(f"No index at {shown(index_dir)}/. Run `tqa index` first (or pass --index DIR).")
    return Manifest.read(gen)


class _Hashing:
    """The SHA-256 of one open file, computed in a thread of its own (hashlib releases the interpreter lock, so it
    runs beside the reading of the other files); ``verify()`` waits for it and raises IndexCorrupt on a mismatch."""

    def __init__(self, path: Path, fd: int, sha256: str):
        self.path, self._fd, self._sha256 = path, fd, sha256
        self._stop = threading.Event()
        self._digest: str | None = None
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="tqa-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            h = hashlib.sha256()
            while not self._stop.is_set() and (block := os.read(self._fd, 8 << 20)):
                h.update(block)
            self._digest = h.hexdigest()
        except OSError as exc:
            self._error = exc.strerror or str(exc)
        finally:
            os.close(self._fd)

    def verify(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise IndexCorrupt(f"Cannot read the index file {shown(self.path)}: {self._error}. {REBUILD_HINT}")
        if self._digest != self._sha256:
            raise IndexCorrupt(f"The index file {shown(self.path)} fails its checksum (damaged or edited). "
                               f"{REBUILD_HINT}")

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()


def _verify_artifacts(gen: Path, manifest: Manifest, pending: list[_Hashing], kept: dict[str, bytes]) -> Checks:
    """Every artifact the format requires (the list is the code's, not the manifest's) is a regular file of the
    listed size and checksum; the keyword index's folder, which bm25s reads by name, holds nothing else. A big file
    listed with block checksums is not read here: its companion is checked whole, its size, and its blocks as they
    are read (the ``Checks`` returned, integrity.py). A big FAISS file is hashed in a thread of its own, added to
    ``pending``: FAISS reads it only once that is done (``_VectorLoad``); every other file is verified here. The
    small files of a chunk table read on demand are read once, verified, and their bytes put in ``kept``."""
    artifacts = manifest.artifacts
    by_blocks = {rel: a for rel, a in artifacts.items() if a.by_blocks}
    table = TABLE_FILES if TABLE_ARTIFACTS <= set(artifacts) else frozenset()
    for rel in sorted(artifact_set(set(artifacts)) or REQUIRED_ARTIFACTS):
        if rel in by_blocks:
            continue
        path = gen / rel
        meta = artifacts[rel]
        if rel in table:
            kept[rel] = integrity.read_verified(path, meta.size, meta.sha256)
            continue
        try:
            fd = _open_regular(path)
        except FileNotFoundError:
            raise IndexCorrupt(f"The index file {shown(path)} is missing. {REBUILD_HINT}") from None
        except NotReadable as exc:
            raise IndexCorrupt(f"The index file {shown(path)} is {exc}. {REBUILD_HINT}") from None
        except OSError as exc:
            raise IndexCorrupt(f"Cannot read the index file {shown(path)}: {exc.strerror}. {REBUILD_HINT}") from None
        size = os.fstat(fd).st_size
        if size != meta.size:
            os.close(fd)
            raise IndexCorrupt(f"The index file {shown(path)} has {size} bytes, the manifest says "
                               f"{meta.size}. {REBUILD_HINT}")
        if rel in (VECTORS, UNITS) and size >= integrity.BIG_BYTES:  # (only FAISS waits: nothing reads it before)
            pending.append(_Hashing(path, fd, meta.sha256))
            continue
        with os.fdopen(fd, "rb") as f:
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != meta.sha256:
            raise IndexCorrupt(f"The index file {shown(path)} fails its checksum (damaged or edited). {REBUILD_HINT}")
    for sub, files in SUBFOLDERS.items():
        folder = gen / sub
        if sub == ENCODER_DIR and not manifest.has_encoder:
            continue
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise IndexCorrupt(f"The index folder {shown(folder)} is not a folder. {REBUILD_HINT}")
        companions = {rel.split("/", 1)[1] + BLOCKS_SUFFIX for rel in by_blocks if rel.startswith(sub + "/")}
        extra = sorted(set(os.listdir(folder)) - files - companions)
        if extra:
            raise IndexCorrupt(f"The index folder {shown(folder)} holds a file tqa did not write "
                               f"({shown(extra[0])}). {REBUILD_HINT}")
    return open_checks(gen, [(rel, a.size, int(a.block_bytes or 0), str(a.blocks_sha256))
                             for rel, a in sorted(by_blocks.items())])


def load_index(index_dir: str | Path, *, verify: bool = True, defer: bool = False) -> Index:
    """Load the live generation, checking checksums and that FAISS and the chunk table agree. The result holds the
    generation's lease (see ``Index``).

    ``defer``: the FAISS files are verified and then read in a background thread, and the index's ``vectors``,
    ``units`` and ``raise_if_damaged()`` wait for them (raising IndexCorrupt when they are damaged): a caller with
    other work to do before its first search (loading a model) does it meanwhile. An inverted file published with
    block checks is then not read whole: its header is verified and read, its lists are memory-mapped and each is
    verified when a search first scans it (``vectors.MappedLists``), the rest by the background check. For a reader
    that answers questions; an index to be changed (an update) is loaded without it. Without ``defer`` the vector
    indexes are read whole, and ready, or refused, when this returns."""
    root = Path(index_dir)
    for attempt in range(_LOAD_ATTEMPTS):
        last = attempt == _LOAD_ATTEMPTS - 1
        gen = current_generation(root)
        if gen is None:
            raise IndexNotFound(f"No index at {shown(root)}/. Run `tqa index` first (or pass --index DIR).")
        try:
            lease = _Lease.take(gen)
        except _Gone:
            if not last:  # a publish retired it after we read CURRENT: follow CURRENT again
                time.sleep(0.02 * (attempt + 1))
                continue
            raise IndexCorrupt(
                f"{shown(root / CURRENT)} points to a missing folder {gen.name}. {REBUILD_HINT}") from None
        try:
            data = _load_generation(gen, verify, defer)
        except IndexCorrupt:
            if lease is not None:
                lease.release()
            if not last and current_generation(root) != gen:
                continue  # raced with a publish (a generation written by the previous tqa has no lease)
            raise
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        data.lease = lease
        return data
    raise AssertionError("unreachable")


def _load_generation(gen: Path, verify: bool, defer: bool) -> Index:
    manifest = Manifest.read(gen)
    _check_analyzer(gen, manifest)
    pending: list[_Hashing] = []  # big files read whole, hashed in threads of their own
    kept: dict[str, bytes] = {}  # small files of the chunk table, as verified
    checks = None
    try:
        checks = _verify_artifacts(gen, manifest, pending, kept) if verify else None
        data = _read_generation(gen, manifest, checks, kept, pending, mapped=defer)
    except BaseException:
        for h in pending:
            h.cancel()
        if checks is not None:
            checks.close()
        raise
    if not defer:
        try:
            data.raise_if_damaged()  # the vector indexes verified and read now
        except BaseException:
            data.close()
            raise
    if checks is not None:
        checks.start()  # every block verified in the background, at a low priority
    return data


def _read_generation(gen: Path, manifest: Manifest, checks: Checks | None, kept: dict[str, bytes],
                     pending: list[_Hashing], *, mapped: bool) -> Index:
    chunks = _read_chunks(gen, manifest, checks, kept)
    try:
        keywords = KeywordIndex.load(gen / BM25_DIR, checks={name: _checker(_blocks(checks, f"{BM25_DIR}/{name}"))
                                                             for name in BM25_FILES})
        ready = _VectorLoad(gen, manifest, checks, pending, len(chunks), _unit_total(chunks), mapped)
    except BaseException:
        if isinstance(chunks, ChunkTable):
            chunks.close()
        raise
    return Index(manifest=manifest, chunks=chunks, vectors=None, units=None, keywords=keywords,  # type: ignore[arg-type]
                 path=gen, checks=checks, ready=ready)


def _read_chunks(gen: Path, manifest: Manifest, checks: Checks | None, kept: dict[str, bytes]) -> Sequence[Chunk]:
    """The chunk table: read on demand when the generation has the table's arrays (chunktable.py), each file through
    its block checks or as verified whole at load (``kept``), its arrays verified and checked against the manifest
    here; parsed whole, as before, for a generation written before the arrays."""
    if TABLE_ARTIFACTS <= set(manifest.artifacts):
        verified: dict[str, BlockFile | bytes] | None = None
        if checks is not None:
            verified = dict(kept)
            for rel in (TABLE_FILES & set(manifest.artifacts)) - set(kept):
                blocks = checks.for_file(rel)
                if blocks is None:  # (unreachable: a file is verified whole or by blocks)
                    raise IndexCorrupt(f"The index file {shown(gen / rel)} is not verified. {REBUILD_HINT}")
                verified[rel] = blocks
        table = ChunkTable(gen, manifest.counts.chunks, manifest.sources, verified,
                           keys=CHUNK_KEYS in manifest.artifacts)
        try:
            table.offsets, table.unit_ptr, table.source_ids  # noqa: B018 (verified and checked now, not at a question)
        except BaseException:
            table.close()
            raise
        return table
    chunks: list[Chunk] = []
    try:
        with open(gen / CHUNKS, "rb") as f:
            for line in f:
                chunks.append(Chunk.from_dict(json.loads(line)))
    except FileNotFoundError:
        raise IndexCorrupt(f"The chunk table {shown(gen / CHUNKS)} is missing. {REBUILD_HINT}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexCorrupt(f"The chunk table {shown(gen / CHUNKS)} is damaged ({first_line(exc)}). "
                           f"{REBUILD_HINT}") from None
    return chunks


def _blocks(checks: Checks | None, rel: str) -> BlockFile | None:
    return None if checks is None else checks.for_file(rel)


def _unit_total(chunks: Sequence[Chunk]) -> int:
    if isinstance(chunks, ChunkTable):
        return int(chunks.unit_ptr[-1])
    return sum(len(c.units) for c in chunks)


class _VectorLoad:
    """The vector indexes of a generation, loaded in a thread of its own: the FAISS files' checksums first (their
    hashing threads, ``pending``, or their blocks), then FAISS reads them (``mapped``: an inverted file's header
    only, its lists mapped, see ``load_index``), then they must agree with the chunk table and the manifest.
    ``wait()`` returns them or raises IndexCorrupt (the damage is also recorded in ``checks``, so every later check
    of the index raises it too). FAISS never reads a byte before it is verified."""

    def __init__(self, gen: Path, manifest: Manifest, checks: Checks | None, pending: list[_Hashing], rows: int,
                 unit_total: int, mapped: bool = False):
        self._args = (gen, manifest, checks, pending, rows, unit_total)
        self._mapped = mapped
        self._checks = checks
        self._result: tuple[VectorIndex, VectorIndex] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tqa-vectors", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        gen, manifest, checks, pending, rows, unit_total = self._args
        try:
            for h in pending:
                h.verify()
            dim, mapped = manifest.model.dim, self._mapped
            vectors = load_vectors(gen / VECTORS, manifest.vector_index,
                                   check=_checker(_blocks(checks, VECTORS_STORED)), blocks=_blocks(checks, VECTORS),
                                   mapped=(rows, dim) if mapped else None)
            units = load_vectors(gen / UNITS, manifest.vector_index.units,
                                 check=_checker(_blocks(checks, UNITS_STORED)), blocks=_blocks(checks, UNITS),
                                 mapped=(unit_total, dim) if mapped else None)
            expected = manifest.counts.chunks
            if not (vectors.ntotal == rows == expected):
                raise IndexCorrupt(f"The index disagrees with itself: {vectors.ntotal} vectors, {rows} chunks, "
                                   f"manifest says {expected}. {REBUILD_HINT}")
            if rows and vectors.dim != dim:
                raise IndexCorrupt(f"The vectors have dimension {vectors.dim}, the manifest says {dim}. "
                                   f"{REBUILD_HINT}")
            if units.ntotal != unit_total:
                raise IndexCorrupt(f"The index disagrees with itself: {units.ntotal} unit vectors, the chunk table "
                                   f"lists {unit_total}. {REBUILD_HINT}")
            self._result = (vectors, units)
        except BaseException as exc:  # noqa: BLE001 (handed to the thread that waits)
            for h in pending:
                h.cancel()
            self._error = exc
        finally:
            self._args = ()  # type: ignore[assignment]

    def wait(self) -> tuple[VectorIndex, VectorIndex]:
        self._thread.join()
        if self._result is not None:
            return self._result
        exc = self._error
        if isinstance(exc, IndexCorrupt):
            if self._checks is not None:
                self._checks.damage.set(exc)
            raise IndexCorrupt(str(exc))
        if isinstance(exc, TqaError):
            raise type(exc)(str(exc))
        raise IndexCorrupt(f"The vector index could not be read ({type(exc).__name__}). {REBUILD_HINT}")


def _checker(f: BlockFile | None) -> Check | None:
    return None if f is None else f.check


def _check_analyzer(gen: Path, manifest: Manifest) -> None:
    """Refuse an index whose keyword index was analysed otherwise than this tqa analyses a question (its terms would
    not meet the index's). An index written before the analyzer was recorded was analysed as today."""
    mine = analyzer_settings()
    if manifest.analyzer is not None and manifest.analyzer != mine:
        changed = ", ".join(manifest.analyzer.differences(mine))
        raise IndexMismatch(f"The index in {shown(gen)} was built with another keyword analyzer (its {changed} "
                            f"differ from this tqa's). {REBUILD_HINT}")


# ---------------------------------------------------------------- writing: what the index folder may hold


def check_index_location(corpus: str | Path, index_dir: str | Path) -> None:
    """Refuse an index folder that is the corpus, lies inside it or contains it: a build would index its own files,
    or write among the documents."""
    c, i = _resolved(Path(corpus)), _resolved(Path(index_dir))
    fix = "Pass --index DIR with a folder outside the corpus (for example index/ beside it)."
    if i == c:
        raise IndexLocationError(f"The index folder {shown(index_dir)} is the corpus folder itself. {fix}")
    if c in i.parents:
        raise IndexLocationError(f"The index folder {shown(index_dir)} is inside the corpus {shown(corpus)}. {fix}")
    if i in c.parents:
        raise IndexLocationError(f"The index folder {shown(index_dir)} contains the corpus {shown(corpus)}. {fix}")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return Path(os.path.abspath(path))


def _read_small(path: Path) -> bytes | None:
    """A small file tqa wrote (marker, owner, pointer), None when it does not exist. Raises NotReadable or OSError."""
    try:
        return read_bounded(path, MAX_SMALL_BYTES, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _marker_bytes(index_id: str) -> bytes:
    return (f"tqa-index {index_id}\n"
            "This folder is a tqa index. tqa writes here only CURRENT, .lock, this file, its generation folders\n"
            "g-*/ (each holding a .tqa-owner file that names this index) and its own temporary files, and it\n"
            "deletes only what it wrote.\n"
            ).encode("ascii")


def _marker_id(root: Path) -> str | None:
    """The id in the folder's marker, None when there is no marker; raises when the marker is damaged."""
    path = root / MARKER
    try:
        raw = _read_small(path)
    except (NotReadable, OSError) as exc:
        why = str(exc) if isinstance(exc, NotReadable) else (exc.strerror or str(exc))
        raw, damage = b"", why
    else:
        damage = "not a marker tqa wrote"
    if raw is None:
        return None
    m = _MARKER_RE.match(raw)
    if m is None:
        raise IndexLocationError(f"{shown(path)} is damaged ({damage}). tqa marks its index folders with this file: "
                                 "delete it and run `tqa index` again.")
    return m.group(1).decode("ascii")


def _owner_bytes(gen: str, index_id: str) -> bytes:
    return f"tqa-generation {gen} {index_id}\n".encode("ascii")


def _owned(folder: Path, gen: str, index_id: str) -> bool:
    """Whether ``folder`` is a real folder that tqa made for generation ``gen`` of this index."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
        return _read_small(folder / OWNER) == _owner_bytes(gen, index_id)
    except (NotReadable, OSError):
        return False


def _only_format_files(folder: Path) -> bool:
    """Whether a real folder holds nothing but what tqa writes in a generation (a previous tqa's, for adoption)."""
    allowed = FORMAT_FILES | {OWNER, LEASE}
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
        for entry in os.scandir(folder):
            if entry.name in SUBFOLDERS and entry.is_dir(follow_symlinks=False):
                if not all(f"{entry.name}/{e.name}" in allowed and e.is_file(follow_symlinks=False)
                           for e in os.scandir(entry.path)):
                    return False
            elif entry.name not in allowed or not entry.is_file(follow_symlinks=False):
                return False
    except OSError:
        return False
    return True


@dataclass
class _Survey:
    """What an index folder holds, before a build writes into it."""

    exists: bool
    index_id: str | None = None  # from the marker
    legacy: bool = False  # an index written by the previous tqa (generations, no marker)
    others: list[str] = field(default_factory=list)  # entries other than README files and dotfiles


def _survey(root: Path) -> _Survey:
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return _Survey(exists=False)
    except OSError as exc:
        raise IndexLocationError(f"Cannot use the index folder {shown(root)}: {exc.strerror}.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise IndexLocationError(f"{shown(root)} is not a folder. Pass --index DIR with a folder.")
    index_id = _marker_id(root)
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        raise IndexLocationError(f"Cannot read the index folder {shown(root)}: {exc.strerror}.") from None
    others = [n for n in names if not n.startswith(".") and not n.lower().startswith("readme")]
    legacy = index_id is None and any(
        GEN_RE.fullmatch(n) and (root / n / MANIFEST).is_file() and _only_format_files(root / n) for n in names)
    return _Survey(True, index_id, legacy, others)


def _check_writable(root: Path, survey: _Survey, force: bool) -> None:
    """A build writes only into a new folder, a tqa index, or a folder empty but for README files and dotfiles;
    ``force`` allows any other folder, but never one with a CURRENT that tqa did not write (it would be replaced)."""
    if survey.index_id is not None or survey.legacy or not survey.others:
        return
    if not force:
        listing = ", ".join(shown(n) for n in survey.others[:3]) + (", ..." if len(survey.others) > 3 else "")
        raise IndexLocationError(
            f"{shown(root)} is not empty and is not a tqa index (it holds {listing}). Pass --index DIR with a new or "
            "empty folder, or --force to build there anyway (tqa never deletes or replaces what it did not write).")
    if os.path.lexists(root / CURRENT):
        raise IndexLocationError(
            f"{shown(root / CURRENT)} was not written by tqa, and a build would replace it. Move it away, or pass "
            "--index DIR with another folder.")


def _write_new(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Create ``path`` (never replacing anything) and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_FLAGS, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def _claim(root: Path, survey: _Survey) -> None:
    """Mark the folder as a tqa index. An index written by the previous tqa is adopted: its generations (folders
    that hold nothing but the format's files) get owner and lease files, so that later publishes retire them."""
    if survey.index_id is not None:
        return
    index_id = _adopted_id(root) if survey.legacy else None
    index_id = index_id or uuid.uuid4().hex
    tmp = root / f"{MARKER}.{uuid.uuid4().hex}.tmp"
    _write_new(tmp, _marker_bytes(index_id))
    try:
        try:
            os.link(tmp, root / MARKER)  # never replaces an existing file
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links
            _write_new(root / MARKER, _marker_bytes(index_id))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(root)
    if not survey.legacy:
        return
    for name in sorted(os.listdir(root)):
        m = GEN_RE.fullmatch(name) or _TMP_RE.fullmatch(name)
        folder = root / name
        if m is None or os.path.lexists(folder / OWNER) or not _only_format_files(folder):
            continue
        gen = m.group(1) if m.re is _TMP_RE else name
        with contextlib.suppress(OSError):
            _write_new(folder / OWNER, _owner_bytes(gen, index_id))
            if GEN_RE.fullmatch(name):
                _write_new(folder / LEASE, b"")


def _adopted_id(root: Path) -> str | None:
    """The id named by the live generation's owner file (a marker deleted by hand), if there is one."""
    name = _live_name(root)
    if name is None:
        return None
    with contextlib.suppress(NotReadable, OSError):
        raw = _read_small(root / name / OWNER) or b""
        m = re.fullmatch(rb"tqa-generation (\S+) ([0-9a-f]{32})\n", raw)
        if m and m.group(1).decode() == name:
            return m.group(2).decode("ascii")
    return None


@contextlib.contextmanager
def write_lock(index_dir: str | Path, *, force: bool = False) -> Iterator[None]:
    """Only one build at a time writes an index folder, and only a folder it may write (see ``_check_writable``);
    nothing is written into a refused folder, not even the lock file."""
    import fcntl

    root = Path(index_dir)
    _check_writable(root, _survey(root), force)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | _O_FLAGS, 0o644)
    except OSError as exc:
        raise TqaError(f"Cannot write to the index folder {shown(root)}: {exc.strerror}. Check its permissions.") \
            from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusy(f"Another `tqa index` is writing {shown(root)}. Wait for it to finish, then run again.") \
                from None
        survey = _survey(root)  # again, now that no other build can change it
        _check_writable(root, survey, force)
        try:
            _claim(root, survey)
        except OSError as exc:
            raise TqaError(f"Cannot write to the index folder {shown(root)}: {_why(exc)}. Check its permissions.") \
                from None
        yield
    finally:
        os.close(fd)


def publish(index_dir: str | Path, data: Index, documents: Iterator[tuple[str, str]],
            extra: Callable[[Path], object] | None = None) -> Path:
    """Write a new generation and make it live atomically. The caller holds ``write_lock``. ``extra(folder)`` may
    add the optional artifacts (``OPTIONAL_ARTIFACTS``: the question encoder) before the artifacts are listed.

    A failure of any kind before the switch removes what this call wrote (the temporary folder, the generation, the
    pointer file) and leaves the previous index as it was; I/O errors become one line (TqaError), anything else is
    raised as it is.
    """
    root = Path(index_dir)
    index_id = _marker_id(root)
    if index_id is None:
        raise RuntimeError(f"publish() writes an index folder held with write_lock(), not {root}")
    gen_name = f"g-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    tmp, final, pointer = root / f".tmp-{gen_name}", root / gen_name, root / f".{CURRENT}.{gen_name}"
    made: list[Path] = []  # what this call created, in order
    published = False
    previous: str | None = None
    try:
        tmp.mkdir()
        made.append(tmp)
        _write_new(tmp / OWNER, _owner_bytes(gen_name, index_id), sync=False)  # first: the folder is tqa's
        _write_new(tmp / LEASE, b"", sync=False)
        _write_generation(tmp, data, documents, extra)
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "a generation of that name exists", str(final))
        os.rename(tmp, final)
        made[made.index(tmp)] = final
        _fsync_dir(root)
        made.append(pointer)
        _write_new(pointer, f"{gen_name}\n".encode("ascii"))
        previous = _live_name(root)
        _clear_pointer_slot(root)
        os.replace(pointer, root / CURRENT)
        published = True
        _fsync_dir(root)
    except BaseException as exc:
        if published:
            if isinstance(exc, OSError):  # the new index is live; only the directory sync failed
                return final
            raise
        for p in reversed(made):
            _discard(p, f"{gen_name}\n".encode("ascii"))
        if isinstance(exc, (OSError, RuntimeError)):  # FAISS and bm25s report write failures as RuntimeError
            raise TqaError(
                f"Could not write the index to {shown(root)}: {_why(exc)}. The previous index (if any) is unchanged; "
                "free space or fix permissions and run `tqa index` again."
            ) from None
        raise
    with contextlib.suppress(OSError):
        _retire(root, keep={gen_name, previous or gen_name})
    return final


def _write_generation(tmp: Path, data: Index, documents: Iterator[tuple[str, str]],
                      extra: Callable[[Path], object] | None) -> None:
    """Write the artifacts of ``data`` into the folder ``tmp``, then its manifest (listing them, sealed), and sync
    it all to disk."""
    write_table(tmp, data.chunks, data.manifest.sources)
    with open(tmp / DOCUMENTS, "wb") as f:
        for source, text in documents:
            f.write(json_bytes({"source": source, "text": text}) + b"\n")
    data.vectors.save(tmp / VECTORS)
    data.units.save(tmp / UNITS)
    data.keywords.save(tmp / BM25_DIR)
    if extra is not None:
        extra(tmp)
    manifest = dataclasses.replace(data.manifest, format_version=FORMAT_VERSION, tqa_version=__version__,
                                   artifacts=_artifact_table(tmp)).sealed()
    try:
        Manifest.from_dict(manifest.to_dict(), shown(tmp / MANIFEST))
    except IndexCorrupt as exc:  # a bug in what the build assembled, not damage
        raise ValueError(f"tqa assembled an invalid manifest: {exc}") from None
    with open(tmp / MANIFEST, "wb") as f:
        f.write(manifest.to_bytes())
    _fsync_tree(tmp)


def _artifact_table(gen: Path) -> dict[str, Artifact]:
    """Size and checksum of each artifact; the files written must be exactly the format's. A big file a reader
    reads in pieces (``BLOCK_CHECKED``, from ``integrity.BIG_BYTES`` on) gets its block digests written beside it
    (``x.blocks``) and listed by their checksum, for a reader to verify as it reads (integrity.py)."""
    written = {p.relative_to(gen).as_posix() for p in gen.rglob("*") if p.is_file()} - {OWNER, LEASE}
    expected = artifact_set(written)
    if expected is None:
        raise RuntimeError(f"the files written differ from the index format's: {sorted(written ^ REQUIRED_ARTIFACTS)}")
    table = {}
    for rel in sorted(expected):
        size = (gen / rel).stat().st_size
        if rel in BLOCK_CHECKED and size >= integrity.BIG_BYTES:
            block = integrity.block_size_for(rel)
            whole, digests = integrity.digest_file(gen / rel, block)
            _write_new(gen / (rel + BLOCKS_SUFFIX), digests, sync=False)  # (synced with the folder)
            table[rel] = Artifact(size, whole, block, hashlib.sha256(digests).hexdigest())
        else:
            table[rel] = Artifact(size, sha256_file(gen / rel))
    return table


def _discard(path: Path, pointer: bytes) -> None:
    """Remove something this very publish created: its folder (all of it written by this call) or its pointer."""
    with contextlib.suppress(OSError, NotReadable):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            content = _read_small(path)
            if content is not None and pointer.startswith(content):  # created (perhaps half written) by this call
                os.unlink(path)


def _clear_pointer_slot(root: Path) -> None:
    """Make way for the new CURRENT. A regular file there is tqa's pointer (the folder is a tqa index) and is
    replaced; anything else (a folder, a symlink, a FIFO) tqa never writes, so it is moved aside, not deleted."""
    path = root / CURRENT
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    aside = root / f"{CURRENT}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    os.rename(path, aside)
    kind = "a folder" if stat.S_ISDIR(mode) else "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
    log.warning("%s was %s; moved aside to %s", shown(path), kind, shown(aside.name))


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


# ---------------------------------------------------------------- retiring generations and leftovers


def tidy(index_dir: str | Path) -> None:
    """Remove the leftovers of killed builds (temporary folders and files tqa can show it wrote); generations stay.
    The caller holds ``write_lock``."""
    with contextlib.suppress(OSError):
        _retire(Path(index_dir), keep=set(), generations=False)


def _retire(root: Path, keep: set[str], *, generations: bool = True) -> None:
    """Remove this index's generations other than ``keep`` that no reader holds, and leftovers of killed builds.
    Only what tqa can show it wrote is touched (see the module docstring). The caller holds ``write_lock``."""
    try:
        index_id = _marker_id(root)
    except TqaError:
        return
    if index_id is None:
        return
    for name in sorted(os.listdir(root)):
        path = root / name
        if GEN_RE.fullmatch(name):
            if generations and name not in keep and _owned(path, name, index_id):
                _retire_generation(root, name)
        elif m := _TMP_RE.fullmatch(name):  # a build killed before its switch (we hold the lock: none is running)
            if _owned(path, m.group(1), index_id):
                _remove_owned(path)
        elif m := _RETIRED_RE.fullmatch(name):  # a retirement killed half way
            if _owned(path, m.group(1), index_id):
                _locked_remove(path, path)
        elif m := _POINTER_RE.fullmatch(name):  # a pointer file never switched to
            with contextlib.suppress(NotReadable, OSError):
                if _read_small(path) == f"{m.group(1)}\n".encode("ascii"):
                    os.unlink(path)
        elif _MARKER_TMP_RE.fullmatch(name):
            with contextlib.suppress(NotReadable, OSError):
                if _MARKER_RE.match(_read_small(path) or b""):
                    os.unlink(path)


def _retire_generation(root: Path, name: str) -> None:
    _locked_remove(root / name, root / f".retired-{name}")


def _locked_remove(folder: Path, aside: Path) -> None:
    """Take the generation's lease exclusively (without waiting: a reader holds it, so it stays for a later
    publish), rename it aside while holding the lock (a reader then sees it gone), and remove it."""
    import fcntl

    try:
        fd = os.open(folder / LEASE, os.O_RDWR | os.O_CREAT | _O_FLAGS, 0o644)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return
        if folder != aside:
            try:
                os.rename(folder, aside)
            except OSError:
                return
        _remove_owned(aside)
    finally:
        os.close(fd)


def _remove_owned(folder: Path) -> None:
    """Delete the files tqa writes in a generation folder it owns, then the folder. Anything else found there stays,
    and so does the folder, with its owner file."""
    names = sorted(FORMAT_FILES | {LEASE})
    real_subfolders = {sub for sub in SUBFOLDERS if _is_real_dir(folder / sub)}
    for rel in names:
        if "/" in rel and rel.split("/", 1)[0] not in real_subfolders:
            continue  # never through a symlink
        with contextlib.suppress(OSError):
            if not stat.S_ISDIR(os.lstat(folder / rel).st_mode):
                os.unlink(folder / rel)
    for sub in real_subfolders:
        with contextlib.suppress(OSError):
            os.rmdir(folder / sub)  # only when empty
    try:
        if set(os.listdir(folder)) - {OWNER}:
            return
        os.unlink(folder / OWNER)
        os.rmdir(folder)
    except OSError:
        return


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
