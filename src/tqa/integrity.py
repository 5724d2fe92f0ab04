"""Checksums that do not make a reader wait, and still never let it use a damaged byte.

Every artifact's size and SHA-256 are in the manifest (whose own checksum seals them), and a small artifact is
checked whole when the index is loaded. The big ones that a reader reads in pieces (``BLOCK_CHECKED``: the stored
vector rows of a compressed index, BM25's postings, the documents' text, the chunk table, the lists of an inverted
file that FAISS maps for a reader answering questions) would cost seconds to hash at every load (30 s at a million
chunks), so from ``BIG_BYTES`` on, the publish also writes the SHA-256 of each block of the file into a companion
file (``x.blocks``, whose own size and SHA-256 are in the manifest) and a reader:

- checks the companion whole and the file's size when it loads the index;
- asks ``BlockFile.check(offsets, lengths)`` before it uses byte ranges of the file, which verifies the blocks
  those ranges fall in that were not verified yet (a failure raises ``IndexCorrupt`` and marks the whole index
  damaged);
- runs a background thread (``Verifier``, low priority) that verifies every block of every such file; damage found
  there marks the index damaged too, and every later check, of any file, raises the same error.

So no answer is made from an unverified byte, a reader answers at once, and a damaged index is refused as soon as
the damage is found: at the latest when the background check reaches it. tqa never changes a file once published
(an update writes a new generation), so a block verified once stays verified while the reader holds it. A file
written over in place anyway (by hand, or a tool copying over the folder) is noticed at its next check, which
compares its size and modification time with those it had when its blocks were verified: truncated, it is refused
(a reader touching a mapped page past its end would die of SIGBUS); else its blocks are verified again as they are
read, since the bytes a mapping shows may no longer be those verified.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import REBUILD_HINT, IndexCorrupt, shown

BIG_BYTES = 4 << 20  # artifacts of BLOCK_CHECKED from this size on are checked by blocks, smaller ones whole
BLOCK_BYTES = 64 << 10  # 64 KiB: a block verifies in about 0.1 ms; its digest is 1/2048 of the data
# Stored vector rows are read a row (768 bytes) at a time, a few hundred rows a question, far apart: smaller blocks
# there, so that questions asked before the background check is done verify 8 KiB a row, not 64.
ROW_BLOCK_BYTES = 8 << 10
DIGEST = 32  # bytes of a SHA-256
BLOCKS_SUFFIX = ".blocks"  # the block digests of ``x`` are in ``x.blocks``
_O_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def block_size_for(rel: str) -> int:
    return ROW_BLOCK_BYTES if rel.endswith(".f16.npy") else BLOCK_BYTES


def blocks_for(size: int, block: int) -> int:
    return -(-size // block)


def digest_file(path: Path, block: int) -> tuple[str, bytes]:
    """The SHA-256 of the whole file and of each ``block``-byte block of it (the last one shorter), in one read."""
    whole = hashlib.sha256()
    out: list[bytes] = []
    step = block * max(1, (8 << 20) // block)
    with open(path, "rb") as f:
        while data := f.read(step):
            whole.update(data)
            view = memoryview(data)
            out.extend(hashlib.sha256(view[s:s + block]).digest() for s in range(0, len(view), block))
    return whole.hexdigest(), b"".join(out)


def _damaged(path: Path, why: str) -> IndexCorrupt:
    return IndexCorrupt(f"The index file {shown(path)} {why}. {REBUILD_HINT}")


def _open(path: Path) -> int:
    try:
        fd = os.open(path, _O_FLAGS)
    except FileNotFoundError:
        raise _damaged(path, "is missing") from None
    except OSError as exc:
        why = "is a symlink, not a regular file" if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror}"
        raise _damaged(path, why) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _damaged(path, "is not a regular file")
    return fd


def read_verified(path: Path, size: int, sha256: str) -> bytes:
    """A small file's bytes, read once and checked whole: a regular file, its size, its SHA-256."""
    with os.fdopen(_open(path), "rb") as f:
        data = f.read(size + 1)
    if len(data) != size:
        raise _damaged(path, f"has {len(data)} bytes, the manifest says {size}")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _damaged(path, "fails its checksum (damaged or edited)")
    return data


class Damage:
    """The first damage found in one loaded index, shared by all its files: once set, every check raises it."""

    def __init__(self) -> None:
        self.error: IndexCorrupt | None = None
        self._lock = threading.Lock()

    def set(self, error: IndexCorrupt) -> IndexCorrupt:
        with self._lock:
            if self.error is None:
                self.error = error
            return self.error

    def raise_if_set(self) -> None:
        if self.error is not None:
            raise IndexCorrupt(str(self.error))


class BlockFile:
    """One big artifact, opened once (without following a symlink) and verified block by block. Blocks are read with
    ``os.pread`` on the descriptor opened here: the bytes verified are those of the file the reader maps."""

    def __init__(self, path: Path, size: int, digests: bytes, block: int, damage: Damage):
        self.path, self.size, self.block, self.damage = Path(path), size, block, damage
        n = blocks_for(size, block)
        if len(digests) != n * DIGEST:
            raise _damaged(self.path, "has block checksums that do not cover it")
        self._digests = digests
        fd = _open(self.path)
        st = os.fstat(fd)
        if st.st_size != size:
            os.close(fd)
            raise _damaged(self.path, f"has {st.st_size} bytes, the manifest says {size}")
        self._fd = fd
        self._stamp = (st.st_size, st.st_mtime_ns)  # what a write in place would change (``check``)
        self._epoch = 0  # writes in place seen since it was opened (``_unchanged``)
        self._verified = np.zeros(n, dtype=bool)
        self._left = n
        self._lock = threading.Lock()

    @property
    def complete(self) -> bool:
        return self._left == 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 (at interpreter shutdown)
            pass

    def check(self, offsets: np.ndarray | int, lengths: np.ndarray | int) -> None:
        """Verify the blocks of the byte ranges [offset, offset + length) not verified yet; raise IndexCorrupt on
        damage (here or anywhere else in the index). A file written in place since its blocks were verified (its
        modification time changed) has them verified again (``_unchanged``). Once every block is verified this is a
        flag test and an ``fstat``."""
        self.damage.raise_if_set()
        self._unchanged()
        if self._left == 0:
            return
        offs = np.atleast_1d(np.asarray(offsets, dtype=np.int64))
        lens = np.atleast_1d(np.asarray(lengths, dtype=np.int64))
        keep = lens > 0
        offs, lens = offs[keep], lens[keep]
        if len(offs) == 0:
            return
        if int(offs.min()) < 0 or int((offs + lens).max()) > self.size:
            raise self.damage.set(_damaged(self.path, "is shorter than the index reads (it disagrees with itself)"))
        first, last = offs // self.block, (offs + lens - 1) // self.block
        spans = last - first + 1
        need = np.repeat(first, spans) + (np.arange(int(spans.sum())) - np.repeat(np.cumsum(spans) - spans, spans))
        need = np.unique(need)
        for b in need[~self._verified[need]].tolist():
            self._verify(int(b))

    def check_all(self) -> None:
        """Verify the whole file (a reader about to read all of it)."""
        self.check(0, self.size)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length), verified, read through the descriptor that is verified."""
        self.check(offset, length)
        try:
            return os.pread(self._fd, length, offset) if length > 0 else b""
        except OSError as exc:
            raise self.damage.set(_damaged(self.path, f"cannot be read: {exc.strerror or exc}")) from None

    def opener(self) -> str:
        """A name that opens the very file verified here, for a library that opens files by name (FAISS): the
        descriptor's entry in /proc where there is one (Linux), the path elsewhere."""
        proc = f"/proc/self/fd/{self._fd}"
        return proc if self._fd >= 0 and os.path.exists(proc) else str(self.path)

    def _unchanged(self) -> None:
        """Notice a write in place since the blocks were verified (the file's size or modification time changed):
        those blocks prove nothing about the bytes a mapping of it now shows. Truncated or extended, the file is
        refused (a reader touching a mapped page past its end would die of SIGBUS); else every block is to be
        verified again before it is read, so a file only touched reads on, and one whose bytes changed fails
        where they did."""
        try:
            st = os.fstat(self._fd)
        except OSError as exc:
            raise self.damage.set(_damaged(self.path, f"cannot be read: {exc.strerror or exc}")) from None
        if (st.st_size, st.st_mtime_ns) == self._stamp:
            return
        if st.st_size != self.size:
            raise self.damage.set(_damaged(self.path, f"was truncated or extended in place since it was loaded "
                                                      f"({st.st_size} bytes, the manifest says {self.size})"))
        with self._lock:
            if (st.st_size, st.st_mtime_ns) != self._stamp:
                self._stamp = (st.st_size, st.st_mtime_ns)
                self._epoch += 1
                self._verified[:] = False
                self._left = len(self._verified)

    def _verify(self, b: int) -> None:
        # Read and hashed outside the lock: a reader and the background check never wait for each other's block
        # (two may hash the same one; the first to finish marks it).
        if self._verified[b]:
            return
        self.damage.raise_if_set()
        epoch = self._epoch  # (a block read before the file was written again is not marked verified after it)
        start = b * self.block
        want = min(self.block, self.size - start)
        try:
            data = os.pread(self._fd, want, start)
        except OSError as exc:
            raise self.damage.set(_damaged(self.path, f"cannot be read: {exc.strerror or exc}")) from None
        if len(data) != want or hashlib.sha256(data).digest() != self._digests[b * DIGEST:(b + 1) * DIGEST]:
            raise self.damage.set(_damaged(self.path, "fails its checksum (damaged or edited)"))
        with self._lock:
            if self._epoch == epoch and not self._verified[b]:
                self._verified[b] = True
                self._left -= 1

    def verify_all(self, stop: threading.Event | None = None) -> bool:
        """Verify every block not verified yet (every block again if the file was written in place since); False
        when stopped first."""
        self._unchanged()
        for b in np.flatnonzero(~self._verified).tolist():
            if stop is not None and stop.is_set():
                return False
            self._verify(int(b))
        return True


class Checks:
    """The block-checked files of one loaded generation (by relative path), their shared ``Damage`` and the
    background check. A reader asks ``for_file(rel)`` for the check of a file (None when it was verified whole at
    load), and ``raise_if_damaged()`` before it answers."""

    def __init__(self, files: dict[str, BlockFile], damage: Damage):
        self.files, self.damage = files, damage
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def for_file(self, rel: str) -> BlockFile | None:
        return self.files.get(rel)

    def raise_if_damaged(self) -> None:
        self.damage.raise_if_set()

    @property
    def complete(self) -> bool:
        return all(f.complete for f in self.files.values())

    def verify_all(self) -> None:
        """Verify every block now (in this thread); raises IndexCorrupt on damage."""
        for f in sorted(self.files.values(), key=lambda f: f.size):
            f.verify_all()

    def start(self, nice: int = 10) -> None:
        """Verify every block in a background thread, at a lower priority than the threads answering."""
        if self._thread is not None or not self.files:
            return
        self._thread = threading.Thread(target=self._run, args=(nice,), name="tqa-verify", daemon=True)
        self._thread.start()

    def _run(self, nice: int) -> None:
        try:
            if nice and hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
                try:  # on Linux a thread has a nice value of its own
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
                except OSError:
                    pass
            for f in sorted(self.files.values(), key=lambda f: f.size):
                if not f.verify_all(self._stop):
                    return
        except IndexCorrupt:
            pass  # recorded in ``damage``
        except Exception as exc:  # noqa: BLE001 (an I/O surprise must not pass for a verified index)
            self.damage.set(IndexCorrupt(f"The index could not be verified ({type(exc).__name__}). {REBUILD_HINT}"))
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background check; True when every block is verified. Raises the damage found."""
        if self._thread is not None:
            self._done.wait(timeout)
        self.damage.raise_if_set()
        return self.complete

    def close(self) -> None:
        self._stop.set()
        for f in self.files.values():
            f.close()


def open_checks(gen: Path, entries: Iterable[tuple[str, int, int, str]], damage: Damage | None = None) -> Checks:
    """``Checks`` of the files ``entries`` lists as (relative path, size, block bytes, SHA-256 of its companion):
    each companion is read and checked whole, each file's size checked."""
    damage = damage or Damage()
    files: dict[str, BlockFile] = {}
    try:
        for rel, size, block, blocks_sha256 in entries:
            companion = gen / (rel + BLOCKS_SUFFIX)
            digests = read_verified(companion, blocks_for(size, block) * DIGEST, blocks_sha256)
            files[rel] = BlockFile(gen / rel, size, digests, block, damage)
    except BaseException:
        for f in files.values():
            f.close()
        raise
    return Checks(files, damage)
