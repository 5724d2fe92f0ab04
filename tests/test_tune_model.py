"""tqa tune end to end with the real bundled model on a small corpus written here: refused (nothing changes),
kept (the index answers through the tuned model's question encoder), reverted (the base model's answers again);
and a SIGKILL of the real command while it trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import ROOT, TOPICS
from tqa.assistant import Assistant
from tqa.cli import main
from tqa.evaluation import run_eval
from tqa.indexing import build_index
from tqa.query_encoder import OnnxQueryEncoder
from tqa.store import current_generation, load_index, read_manifest
from tqa.tuning import model_digest, revert_tuning, tune_index

pytestmark = [pytest.mark.model, pytest.mark.slow]

QUESTION = "Which country publishes the names of employers who use forced labour?"


def _corpus(root: Path) -> Path:
    root.mkdir()
    for name, a, b in TOPICS:
        sections = [f"## Report {k}\n\n{name} {a}, according to the ministry in year {2010 + k}. Officials said that "
                    f"{b}. Researchers in {name} expect the numbers to change again next year. A new law in {name} "
                    f"was debated in parliament for {k + 2} months." for k in range(3)]
        (root / f"{name.lower()}.md").write_text(f"# {name}\n\n" + "\n\n".join(sections) + "\n", encoding="utf-8")
    return root


def _vectors(index: Path) -> np.ndarray:
    with load_index(index) as data:
        return data.vectors.take(np.arange(data.vectors.ntotal))


def _eval_mrr(questions: Path, corpus: Path, index: Path) -> float:
    report, _, _ = run_eval(questions=questions, corpus=corpus, index=index, thresholds=None)
    return round(report["runs"]["hybrid"]["metrics"]["mrr@10"], 4)


def _cited(index: Path) -> list[tuple[str, int, int]]:
    qa = Assistant.load(index)
    try:
        return [(p.source, p.start, p.end) for p in qa.ask(QUESTION, k=5).passages]
    finally:
        qa.index.close()


def test_tune_refused_kept_and_reverted(tmp_path: Path, real_embedder, capsys: pytest.CaptureFixture[str]) -> None:
    corpus, index = _corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=real_embedder)
    base = read_manifest(index)
    base_vectors, base_cited = _vectors(index), _cited(index)
    assert base_cited[0][0] == "brazil.md"

    gen = current_generation(index)
    refused = tune_index(index, use_questions=False, epochs=1, max_pairs=40, min_gain=1.0)
    assert not refused.kept and "did not find their passages better" in refused.message
    assert current_generation(index) == gen and read_manifest(index) == base
    assert not (index / "models").exists()

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{n}", "question": f"What does {name} do, by the ministry's "
                                             "account?", "answers": [f"{name} {a}"]}) + "\n"
                                 for n, (name, a, _) in enumerate(TOPICS)), encoding="utf-8")
    before_eval = _eval_mrr(questions, corpus, index)
    kept = tune_index(index, questions=questions, epochs=1, max_pairs=40, min_gain=-1.0)
    assert kept.kept, kept.message
    # the question set was measured as `tqa eval` measures it, before and after
    assert kept.questions_mrr_before == before_eval
    assert kept.questions_mrr_after == _eval_mrr(questions, corpus, index)
    figures = kept.report
    assert 20 <= figures["pairs"] <= 40 and figures["held_out"] > 0
    assert 0 <= figures["mrr_before"] <= 1 and 0 <= figures["mrr_after"] <= 1
    m = read_manifest(index)
    t = m.tuning
    assert t is not None and t.base_model == base.model.name and m.model.name == t.folder
    assert (t.held_out_mrr_before, t.held_out_mrr_after) == (figures["mrr_before"], figures["mrr_after"])
    assert model_digest(index / t.folder) == t.model_sha256
    assert m.files == base.files and m.has_encoder
    assert not np.allclose(_vectors(index), base_vectors, atol=1e-4)  # re-embedded with the tuned model
    qa = Assistant.load(index)
    assert isinstance(qa.embedder, OnnxQueryEncoder) and qa.embedder.name == t.folder  # exported from it
    answer = qa.ask(QUESTION, k=5)
    assert answer.passages and answer.passages[0].source == "brazil.md"
    qa.index.close()
    assert main(["info", "--index", str(index)]) == 0
    assert f"tuned from {base.model.name}" in capsys.readouterr().out

    reverted = revert_tuning(index)
    assert reverted.kept and "Reverted" in reverted.message
    m = read_manifest(index)
    assert m.tuning is None and m.model == base.model
    assert not (index / "models").exists()
    assert np.allclose(_vectors(index), base_vectors, atol=1e-5)
    assert _cited(index) == base_cited  # the base model's answers again


def test_a_kill_while_training_leaves_the_index_as_it_was(tmp_path: Path, real_embedder) -> None:
    corpus, index = _corpus(tmp_path / "corpus"), tmp_path / "index"
    build_index(corpus, index, embedder=real_embedder)
    before, cited = read_manifest(index), _cited(index)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "tune.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tqa", "tune", "--index", str(index), "--no-questions",
                                 "--epochs", "50", "--min-gain", "-1"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not any((index / "models").glob(".tmp-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")
            time.sleep(0.2)
        time.sleep(8)  # the model is loaded and training (50 epochs outlast this by far)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert read_manifest(index) == before
    assert _cited(index) == cited
