"""Truncate each file of a loaded index, or flip a byte of it in place, one file at a time, under a reader that
keeps answering: used by test_live_truncation.py, in a process of its own, since a reader touching a mapped page of a
truncated file dies of SIGBUS.

    python -m tests.truncate_live KIND HOW WORKDIR

HOW: "truncate" (to 0 bytes), "flip" (a byte in the middle, written in place: the same size) or "touch" (a new
modification time, the same bytes). After the questions, the index's checks verify every block ("found": whether that
raised; null when the index has no block checks).
KIND: "small" (every file small, verified whole at load), "blocks" (every big-file kind checked by blocks, an
inverted file whose lists are mapped), "compressed" and "compressed-blocks" (a compressed vector index, its rows
small or checked by blocks). Prints one JSON line per file: {"file": ..., "before": [...], "after": [...]}, each
answer's top source or the name of the error raised; "start <file>" before each, so a crash shows where.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

import tqa.vectors as vectors
from tests.support import FakeEmbedder
from tests.test_compressed import build, build_by_blocks, write_corpus
from tqa import Assistant
from tqa.errors import IndexCorrupt, TqaError
from tqa.store import current_generation

QUESTIONS = ["What does record zq7x3 tell of?", "What does record zq44x22 tell of?", "record zq50x1 near the old"]


def answers(qa: Assistant) -> list[str]:
    out = []
    for q in QUESTIONS:
        try:
            passages = qa.ask(q).passages
            out.append(passages[0].source if passages else "")
        except TqaError as exc:
            out.append(type(exc).__name__)
    return out


def main(kind: str, how: str, work: Path) -> None:
    vectors.IVF_MIN_PROBES = 4  # (when loaded: a search scans a few lists of the small inverted file)
    corpus = write_corpus(work / "corpus", files=24)
    built = work / "built"
    compress_above = 300 if kind.startswith("compressed") else 10**9
    if kind.endswith("blocks"):
        build_by_blocks(corpus, built, compress_above, inverted_file=True)
    else:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(vectors, "EXACT_MAX", 40)  # an inverted file, its files small
            mp.setattr(vectors, "IVF_MIN_VECTORS", 64)
            build(corpus, built, FakeEmbedder(), compress_above)
    gen = current_generation(built)
    assert gen is not None
    for rel in sorted(str(p.relative_to(gen)) for p in gen.rglob("*") if p.is_file()):
        index = work / "index"
        shutil.rmtree(index, ignore_errors=True)
        shutil.copytree(built, index, symlinks=True)
        print(f"start {rel}", flush=True)
        qa = Assistant.load(index, embedder=FakeEmbedder())
        try:
            before = answers(qa)
            live = current_generation(index)
            assert live is not None
            if how == "truncate":
                os.truncate(live / rel, 0)
            elif how == "touch":
                st = os.stat(live / rel)
                os.utime(live / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            else:
                with open(live / rel, "r+b") as f:
                    middle = os.fstat(f.fileno()).st_size // 2
                    f.seek(middle)
                    byte = f.read(1)
                    if byte:
                        f.seek(middle)
                        f.write(bytes([byte[0] ^ 0x20]))
            after = answers(qa)
            found = None
            if qa.index.checks is not None and qa.index.checks.files:
                try:
                    qa.index.checks.verify_all()
                    found = False
                except IndexCorrupt:
                    found = True
        finally:
            qa.index.close()
        blocks = (gen / (rel + ".blocks")).is_file()
        print(json.dumps({"file": rel, "before": before, "after": after, "found": found, "blocks": blocks}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
