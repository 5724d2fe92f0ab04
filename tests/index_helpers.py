"""Helpers shared by the index-folder tests (a plain module: tests import it, pytest collects nothing from it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tqa import manifest, store
from tqa.manifest import MANIFEST

ROOT = Path(__file__).resolve().parent.parent


class Blocked(BaseException):
    """Raised by ``deadline``: not an OSError (TimeoutError is one) nor an Exception, so no handler turns it into
    something else."""


@contextlib.contextmanager
def deadline(seconds: int = 20):
    """Fail (rather than hang the test run) when the body blocks: SIGALRM interrupts a blocking open or read, and
    keeps doing so every second until the body ends."""

    def fire(signum, frame):
        signal.alarm(1)
        raise Blocked(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (symlinks not followed) with its kind and, for files, its content."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_fifo():
                out[rel] = "fifo"
            else:
                out[rel] = p.read_bytes().decode("utf-8", "replace")
    return out


def generations(index: Path) -> list[str]:
    return sorted(p.name for p in index.iterdir() if store.GEN_RE.fullmatch(p.name) and p.is_dir())


def change(corpus: Path, i: int) -> None:
    (corpus / "changing.txt").write_text(f"Update {i}\nShelters opened in region {i} this year.\n")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "tqa", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=cwd)


def make_legacy(index: Path) -> None:
    """Turn an index into exactly what the previous tqa wrote: format 1, no folder marker, no owner or lease files,
    no manifest checksum, no corpus path relative to the index."""
    (index / store.MARKER).unlink()
    for gen in index.iterdir():
        if store.GEN_RE.fullmatch(gen.name):
            (gen / store.OWNER).unlink()
            (gen / store.LEASE).unlink()
            m = json.loads((gen / MANIFEST).read_text(encoding="utf-8"))
            m.pop(manifest.MANIFEST_SHA, None)
            m.pop("corpus_relative", None)
            m["format_version"] = 1
            (gen / MANIFEST).write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
