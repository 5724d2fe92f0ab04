"""A file of the live generation truncated or written over in place under a running reader (by hand or a tool copying
over it: tqa never writes into a published generation) must not kill the reader nor make it answer from bytes no
check covers: what it holds in memory keeps answering, and what it reads from a file later (mapped pages included,
where a truncated file would raise SIGBUS) is checked first, so such a question is refused in one line instead.
Each kind of index runs in a process of its own (tests/truncate_live.py), every file of it changed in turn."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from .support import ROOT

POSTINGS = {"bm25/data.csc.index.npy", "bm25/indices.csc.index.npy"}
ROWS = {"chunks.jsonl", "documents.jsonl"}  # read by blocks as questions need them (what was read is kept)
# per kind: the files whose truncation must refuse the questions after it (read after loading, mapped or by blocks),
# and those whose truncation may (read by blocks, unless the questions' rows were read before)
READ_LATER = {
    "small": (set(), set()),
    "blocks": ({"vectors.faiss", "units.faiss"} | POSTINGS, ROWS),
    "compressed": (set(), set()),
    "compressed-blocks": ({"vectors.faiss", "units.f16.npy"} | POSTINGS, ROWS),  # (its chunks: an inverted file)
}


@pytest.mark.parametrize("how", ["truncate", "flip", "touch"])
@pytest.mark.parametrize("kind", sorted(READ_LATER))
def test_changing_any_file_under_a_reader_never_kills_it_nor_goes_unchecked(kind, how, tmp_path):
    r = subprocess.run([sys.executable, "-m", "tests.truncate_live", kind, how, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    lines = r.stdout.splitlines()
    started = [line.split(" ", 1)[1] for line in lines if line.startswith("start ")]
    died = signal.Signals(-r.returncode).name if r.returncode < 0 else r.returncode
    assert r.returncode == 0, f"the reader died ({died}) after {started[-1:]} was changed: {r.stderr[-2000:]}"
    results = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(results) == len(started) > 10
    refused = set()
    for res in results:
        assert all(a.endswith(".txt") for a in res["before"]), res
        for before, after in zip(res["before"], res["after"], strict=True):
            assert after in (before, "IndexCorrupt"), res  # the same answer, or a refusal: never another
        if "IndexCorrupt" in res["after"]:
            refused.add(res["file"])
        if how == "flip" and res["blocks"]:
            assert res["found"] is True, res  # the changed bytes fail their block checksum
        if how == "touch":
            assert res["found"] is not True, res  # the same bytes: verified again, they pass
    must, may = READ_LATER[kind]
    if how == "truncate":
        assert must <= refused <= must | may
    elif how == "touch":
        assert not refused  # a new modification time alone refuses nothing
    else:
        assert refused <= must | may
