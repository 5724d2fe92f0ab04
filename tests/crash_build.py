"""Run a build that kills itself (SIGKILL) at a chosen point: used by test_faults.py.

    python -m tests.crash_build CORPUS INDEX STEP [NTH]

STEP names a function the build calls; the process kills itself on its NTH call (before the call runs),
or "none" to build normally (slowly, so that the caller can kill it at a random moment).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from tests.support import FakeEmbedder


class SlowEmbedder(FakeEmbedder):
    def encode(self, texts, **kw):
        time.sleep(0.004 * len(texts))
        return super().encode(texts, **kw)


def arm(owner, name: str, nth: int) -> None:
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


STEPS = {
    # name: (owner, attribute)
    "encode": ("embedder", "encode"),
    "write_chunks": ("json", "dumps"),
    "save_vectors": ("FaissVectors", "save"),
    "save_keywords": ("KeywordIndex", "save"),
    "checksum": ("store", "sha256_file"),
    "fsync": ("store", "_fsync_tree"),
    "rename": ("os", "rename"),
    "fsync_dir": ("store", "_fsync_dir"),
    "replace": ("os", "replace"),
    "retire": ("store", "_retire"),
}


def main() -> None:
    corpus, index, step = sys.argv[1:4]
    nth = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    import json

    from tqa import store
    from tqa.indexing import build_index
    from tqa.keywords import KeywordIndex
    from tqa.vectors import FaissVectors

    embedder = SlowEmbedder()
    if step != "none":
        owner_name, attr = STEPS[step]
        owner = {"embedder": embedder, "json": json, "os": os, "store": store,
                 "FaissVectors": FaissVectors, "KeywordIndex": KeywordIndex}[owner_name]
        arm(owner, attr, nth)
    build_index(corpus, index, embedder=embedder)
    print("done", flush=True)


if __name__ == "__main__":
    main()
