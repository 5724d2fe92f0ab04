"""`tqa eval` end to end with the real model: the committed gate passes, a worse setting fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support import CORPUS, TREATIES

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.model


def tqa_eval(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`tqa eval` on the verified copy of the shipped corpus (never corpus/ itself), unless given --corpus."""
    e = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    e.pop("PYTEST_CURRENT_TEST", None)
    corpus = [] if "--corpus" in args else ["--corpus", str(CORPUS)]
    return subprocess.run([sys.executable, "-m", "tqa", "eval", *corpus, *args], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def eval_index(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval") / "index"


@pytest.fixture(scope="module")
def passing_report(eval_index, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("report") / "report.json"
    r = tqa_eval("--index", str(eval_index), "--json", str(out))
    return r, json.loads(out.read_text()) if out.exists() else {}


def test_default_eval_passes_the_committed_thresholds(passing_report):
    r, report = passing_report
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gate: passed" in r.stdout
    assert report["gate"]["failures"] == [] and report["runs"]["hybrid"]["metrics"]["hit@5"] >= 0.95


def test_bm25_mode_falls_below_the_gate_and_names_the_shortfall(eval_index):
    r = tqa_eval("--index", str(eval_index), "--mode", "bm25")
    assert r.returncode == 1
    assert "FAILED" in r.stderr and "is below the minimum" in r.stderr and "mrr@10" in r.stderr


def test_a_deliberately_bad_setting_fails(eval_index):
    r = tqa_eval("--index", str(eval_index), env={"TQA_ABSTAIN_THRESHOLD": "0.95"})
    assert r.returncode == 1 and "abstained_answerable" in r.stderr and "above the maximum" in r.stderr


@pytest.mark.parametrize("weight", ["1", "0.9"])
def test_a_deliberately_bad_fusion_setting_fails_the_gate(eval_index, weight):
    # BM25 given (nearly) all the weight of the hybrid score: the project's set falls below its minimums
    r = tqa_eval("--index", str(eval_index), env={"TQA_KEYWORD_WEIGHT": weight})
    assert r.returncode == 1, r.stdout
    assert "FAILED" in r.stderr and "mrr@10" in r.stderr and "is below the minimum" in r.stderr




@pytest.fixture(scope="module")
def treaties_index(tmp_path_factory) -> Path:
    if TREATIES is None:
        pytest.skip("the treaty texts of eval/treaties/questions.jsonl are not on this machine")
    return tmp_path_factory.mktemp("treaties") / "index"


@pytest.mark.slow
def test_the_treaty_set_gates_on_its_own_thresholds_and_a_bad_fusion_setting_fails_it(treaties_index):
    args = ("--questions", "eval/treaties/questions.jsonl", "--corpus", str(TREATIES), "--index", str(treaties_index))
    good = tqa_eval(*args)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "gate: passed" in good.stdout and "87 answerable and 24 unanswerable" in good.stdout
    bad = tqa_eval(*args, env={"TQA_KEYWORD_WEIGHT": "1"})
    assert bad.returncode == 1 and "is below the minimum" in bad.stderr


def test_compare_lists_questions_that_moved(eval_index, passing_report, tmp_path):
    _, report = passing_report
    old = tmp_path / "old.json"
    # pretend an earlier run had every answerable question at rank 1 and nothing abstained
    for q in report["runs"]["hybrid"]["questions"]:
        q["rank"], q["abstained"] = (1, False) if q["answerable"] else (None, True)
    old.write_text(json.dumps(report))
    r = tqa_eval("--index", str(eval_index), "--compare", str(old), "--no-gate")
    assert r.returncode == 0 and "Compared with" in r.stdout
    assert "moved" in r.stdout or "newly fails" in r.stdout
    # first how each metric moved (the old report's metrics were kept: every one is the same), then the questions
    after = r.stdout.split("Compared with", 1)[1].splitlines()[1:]
    assert [line.split()[0] for line in after[:6]] == ["hit@1", "hit@3", "hit@5", "mrr@10", "abstained_unanswerable",
                                                      "abstained_answerable"]
    assert all(line.endswith("same") for line in after[:6])
    assert after[7].startswith("Questions that changed: ")
    changed = [line for line in after[8:] if line.startswith("  ")]
    assert changed and len(changed) < len(report["runs"]["hybrid"]["questions"])


def test_missing_evidence_is_an_error_naming_the_question(eval_index, tmp_path):
    qs = tmp_path / "q.jsonl"
    qs.write_text(json.dumps({"id": "broken-1", "question": "x?", "answers": ["this sentence is not in it"]}) + "\n")
    r = tqa_eval("--index", str(eval_index), "--questions", str(qs), "--no-gate")
    assert r.returncode == 1 and "broken-1" in r.stderr and "not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_an_index_of_another_corpus_is_not_overwritten(tmp_path, eval_index):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("Some other corpus about shelters.\n")
    r = tqa_eval("--index", str(eval_index), "--corpus", str(other), "--no-gate")
    assert r.returncode == 1 and "was built from" in r.stderr
