"""Finding a corpus's files and reading one file's bytes safely."""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from pathlib import Path, PurePosixPath

from tqa.errors import CorpusError

from .base import (
    ATTACHMENT_SEPARATOR,
    DEFAULT_MAX_BYTES,
    SUPPORTED,
    UNSAFE_NAME_CHARS,
    NotReadable,
    Skipped,
    nfc,
    shown,
    size_text,
)


def read_bounded(path: str | Path, max_bytes: int, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, checked and read in one step.

    The file is opened first (non-blocking, so a FIFO never makes it wait for a writer) and every check is made
    on the open file, never on the name: a file replaced by a FIFO, a device or a link to /dev/zero after it was
    listed, or grown past the cap, is refused instead of hanging or read without limit. Raises ``NotReadable``
    (not a regular file, a symlink when ``follow_symlinks`` is false, too large) or ``OSError`` (missing,
    permission denied...).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow_symlinks:
            raise NotReadable("a symlink, not a regular file") from None
        raise
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotReadable("not a regular file")
        if st.st_size > max_bytes:
            raise NotReadable(f"larger than {size_text(max_bytes)}")
        chunks, total = [], 0
        while total <= max_bytes:  # the size may change after fstat: never read past the cap
            block = f.read(min(1 << 20, max_bytes + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > max_bytes:
            raise NotReadable(f"larger than {size_text(max_bytes)}")
        return b"".join(chunks)


def _unsupported(name: str) -> str:
    ext = PurePosixPath(name).suffix.lower()
    return f"unsupported file type {ext}" if ext else "unsupported file type (no extension)"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _name_problem(name: str, kind: str) -> str | None:
    """Why ``name`` cannot be a part of a source, or None.

    A name that is not valid UTF-8 is skipped rather than indexed under a substitute: the source is the citation
    and the name a reader opens the file by (``load_file(source, root)``, the web page's file links), and any
    valid-UTF-8 stand-in either loses information (U+FFFD: two files would share one name) or can collide with a
    real file's name (an escape such as ``caf%E9.txt``). Skipping names the file so it can be renamed.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return f"{kind} name is not valid UTF-8; rename it"
    if UNSAFE_NAME_CHARS.search(name):
        return f"{kind} name contains control characters; rename it"
    if ATTACHMENT_SEPARATOR in name:  # kept for the documents inside a file: "message.eml › report.pdf"
        mark = ATTACHMENT_SEPARATOR.strip()
        return f"{kind} name contains ' {mark} ', which tqa keeps for e-mail attachments; rename it"
    return None


def _unreadable(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "vanished during indexing"
    return f"unreadable: {shown(e.strerror or str(e))}"


def discover(
    root: str | Path, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[list[tuple[str, Path]], list[Skipped]]:
    """Walk ``root`` recursively and sort its files into candidates and skipped ones.

    Returns ``(candidates, skipped)``: candidates are ``(relative posix path, absolute Path)`` for files
    with a supported extension (case-insensitive), sorted by relative path; ``skipped`` lists every other
    file with a reason, also sorted. Hidden files and folders (name starting with '.') are ignored silently.

    Every relative path returned (candidate or skipped) is valid UTF-8 on one line. A candidate's is the file's
    exact name, so it opens the file; a name that is not valid UTF-8 or holds control characters is skipped
    (folders too, with all they contain), and of two names in one folder that differ only in Unicode
    normalisation (NFC and NFD spellings look the same) the NFC one is kept and the other skipped.

    Symlinks are resolved: one pointing outside ``root`` is skipped; one pointing inside is followed, unless
    its target is already part of the corpus through another path (then it is listed as a duplicate, which
    also ends symlink cycles). Real paths are always preferred over paths through symlinks.
    Raises CorpusError if ``root`` is missing, not a folder, or unreadable.
    """
    root_abs, root_real = _open_root(root)
    walk = _Walk(root_real, max_bytes)
    walk.tree(".", root_abs)
    walk.follow_links()
    walk.candidates.sort(key=lambda c: c[0])
    walk.skipped.sort(key=lambda s: s.path)
    return walk.candidates, walk.skipped


def _open_root(root: str | Path) -> tuple[Path, Path]:
    """The corpus folder as given (absolute) and resolved; raises CorpusError if it is missing, not a folder, or
    unreadable."""
    root_path = Path(root)
    if not root_path.exists():
        raise CorpusError(
            f"Corpus folder '{shown(str(root))}' does not exist. Pass the folder of your documents: tqa index PATH"
        )
    if not root_path.is_dir():
        raise CorpusError(
            f"'{shown(str(root))}' is not a folder. Put your documents in a folder and pass that folder: "
            "tqa index PATH"
        )
    root_abs = root_path.absolute()
    try:
        with os.scandir(root_abs):
            pass
    except OSError as e:
        raise CorpusError(
            f"Cannot read corpus folder '{shown(str(root))}': {shown(e.strerror or str(e))}. "
            "Check its permissions and try again."
        ) from e
    return root_abs, root_path.resolve()


class _Walk:
    """One discovery: the real tree first, breadth-first, then the symlinks found in it (so that real paths win
    over linked ones)."""

    def __init__(self, root_real: Path, max_bytes: int) -> None:
        self.root_real = root_real
        self.max_bytes = max_bytes
        self.candidates: list[tuple[str, Path]] = []
        self.skipped: list[Skipped] = []
        self.seen_files: dict[Path, str] = {}  # real path -> relative path it was included under
        self.seen_dirs: dict[Path, str] = {root_real: "."}
        self.links: deque[tuple[str, Path]] = deque()  # symlinks found, handled after the real tree

    def add_file(self, rel: str, path: Path, real: Path, st: os.stat_result) -> None:
        if not _inside(real, self.root_real):  # a folder on the way was swapped for a symlink while listing
            self.skipped.append(Skipped(rel, "symlink points outside the corpus"))
        elif real in self.seen_files:
            self.skipped.append(Skipped(rel, f"same file as {self.seen_files[real]} (via symlink)"))
        elif not stat.S_ISREG(st.st_mode):
            self.skipped.append(Skipped(rel, "not a regular file"))
        elif PurePosixPath(rel).suffix.lower() not in SUPPORTED:
            self.skipped.append(Skipped(rel, _unsupported(rel)))
        elif st.st_size > self.max_bytes:
            self.skipped.append(Skipped(rel, f"larger than {size_text(self.max_bytes)}"))
        else:
            self.seen_files[real] = rel
            self.candidates.append((rel, path))

    def usable(self, entries: list[os.DirEntry[str]], rel_here: str) -> list[os.DirEntry[str]]:
        """The entries whose names can be sources; the others are listed as skipped."""
        nfc_owner: dict[str, str] = {}  # NFC form -> the name kept for it (its NFC spelling if present)
        for entry in entries:
            key = nfc(entry.name)
            if key not in nfc_owner or entry.name == key:
                nfc_owner[key] = entry.name
        kept = []
        for entry in entries:
            rel = entry.name if rel_here == "." else f"{rel_here}/{entry.name}"
            try:
                kind = "folder" if entry.is_dir(follow_symlinks=False) else "file"
            except OSError:
                kind = "file"
            problem = _name_problem(entry.name, kind)
            if problem is None and nfc_owner[nfc(entry.name)] != entry.name:
                twin = nfc_owner[nfc(entry.name)]
                problem = f"same name as {twin} in another Unicode form; rename one"
            if problem is None:
                kept.append(entry)
            else:
                self.skipped.append(Skipped(shown(rel), problem))
        return kept

    def folder(self, rel: str, path: Path) -> bool:
        """Whether a real subfolder is new (to be walked); a folder outside the root or seen before is skipped."""
        real = path.resolve()
        if not _inside(real, self.root_real):  # as in add_file
            self.skipped.append(Skipped(rel, "symlink points outside the corpus"))
        elif real in self.seen_dirs:  # reachable only below a followed symlink
            self.skipped.append(Skipped(rel, f"same folder as {self.seen_dirs[real]} (via symlink)"))
        else:
            self.seen_dirs[real] = rel
            return True
        return False

    def tree(self, rel_dir: str, dir_path: Path) -> None:
        """Breadth-first over real subfolders; symlinks are queued for ``follow_links``."""
        pending = deque([(rel_dir, dir_path)])
        while pending:
            rel_here, here = pending.popleft()
            try:
                with os.scandir(here) as it:
                    entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
            except OSError as e:
                self.skipped.append(Skipped(rel_here, _unreadable(e)))
                continue
            for entry in self.usable(entries, rel_here):
                rel = entry.name if rel_here == "." else f"{rel_here}/{entry.name}"
                path = here / entry.name
                try:
                    if entry.is_symlink():
                        self.links.append((rel, path))
                    elif entry.is_dir(follow_symlinks=False):
                        if self.folder(rel, path):
                            pending.append((rel, path))
                    else:
                        self.add_file(rel, path, path.resolve(), entry.stat(follow_symlinks=False))
                except OSError as e:
                    self.skipped.append(Skipped(rel, _unreadable(e)))

    def follow_links(self) -> None:
        """The symlinks found, in order: a file is added, a new folder walked (which may queue more links)."""
        while self.links:
            rel, path = self.links.popleft()
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError):  # broken link, or a loop of links resolving to nothing
                self.skipped.append(Skipped(rel, "broken symlink"))
                continue
            if not _inside(real, self.root_real):
                self.skipped.append(Skipped(rel, "symlink points outside the corpus"))
                continue
            try:
                st = real.stat()
            except OSError as e:
                self.skipped.append(Skipped(rel, _unreadable(e)))
                continue
            if not stat.S_ISDIR(st.st_mode):
                self.add_file(rel, path, real, st)
            elif real in self.seen_dirs:  # also what ends symlink cycles
                self.skipped.append(Skipped(rel, f"same folder as {self.seen_dirs[real]} (via symlink)"))
            else:
                self.seen_dirs[real] = rel
                self.tree(rel, path)
