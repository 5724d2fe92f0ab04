"""tqa.tune: inverse-cloze pairs, the held-out split and measure, the keep-or-refuse decision; end to end with the
real model on a tiny corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tqa import tune as tuning
from tqa.tune import Pair, TuneError, held_out_mrr, pairs_from, split

from .support import TOPICS


def _passages() -> list[str]:
    out = []
    for name, a, b in TOPICS:
        for k in range(5):
            out.append(f"Report {k} on {name}. {name} {a}, according to the ministry. Officials said that {b}. "
                       f"Researchers in {name} expect the numbers to change again next year. "
                       f"A new law in {name} was debated in parliament for a long time.")
    return out


def test_pairs_are_sentences_taken_out_of_their_passages() -> None:
    passages = _passages()
    pairs = pairs_from(passages, np.random.default_rng(0))
    assert pairs
    for p in pairs:
        assert p.query in passages[p.passage]
        assert p.query not in p.answer
        assert len(p.answer) < len(passages[p.passage])


def test_pairs_are_capped_per_passage_and_in_all() -> None:
    passages = _passages()
    assert all(sum(p.passage == i for p in pairs_from(passages, np.random.default_rng(0), per_passage=2)) <= 2
               for i in range(len(passages)))
    assert len(pairs_from(passages, np.random.default_rng(0), limit=7)) == 7


def test_held_out_pairs_are_never_trained_on() -> None:
    pairs = pairs_from(_passages(), np.random.default_rng(0))
    train, held = split(pairs, share=0.2)
    assert len(held) == round(0.2 * len(pairs))
    assert not {(p.query, p.passage) for p in held} & {(p.query, p.passage) for p in train}


def test_held_out_mrr_of_a_perfect_and_of_a_useless_encoder() -> None:
    passages = ["alpha beta gamma. delta.", "epsilon zeta eta. theta.", "iota kappa lambda. mu."]
    held = [Pair("alpha beta gamma.", 0, "delta."), Pair("iota kappa lambda.", 2, "mu.")]

    def by_passage(texts: list[str]) -> np.ndarray:  # every text of passage i maps to the unit vector i
        out = np.zeros((len(texts), 3), dtype=np.float32)
        for n, t in enumerate(texts):
            i = next(i for i, p in enumerate(passages) if t in p)
            out[n, i] = 1
        return out

    def constant(texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 3), dtype=np.float32) / np.sqrt(3)

    pool = np.arange(3)
    assert held_out_mrr(by_passage, passages, held, pool) == 1.0
    assert held_out_mrr(constant, passages, held, pool) < 1.0


def test_too_few_sentences_keeps_the_model_and_writes_nothing(tmp_path: Path) -> None:
    report = tuning.tune(["One sentence only, nothing else here."] * 3, "unused-model", tmp_path / "out")
    assert not report.kept
    assert "kept as it is" in report.reason
    assert not (tmp_path / "out").exists()


def test_an_existing_output_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(TuneError, match="already exists"):
        tuning.tune(_passages(), "unused-model", tmp_path / "out")


@pytest.mark.model
@pytest.mark.slow
def test_tune_end_to_end_kept_or_refused_with_the_real_model(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from tqa.config import DEFAULT_MODEL

    passages = _passages()
    steps: list[tuple[str, int, int]] = []
    kept = tuning.tune(passages, DEFAULT_MODEL, tmp_path / "kept", epochs=1, batch_size=8, min_gain=-1.0,
                       on_progress=lambda *a: steps.append(a))
    assert kept.kept and kept.model_dir == str(tmp_path / "kept")
    assert kept.mrr_before is not None and kept.mrr_after is not None
    assert steps and steps[-1][0] == "training" and steps[-1][1] == steps[-1][2]
    assert "kept" in kept.reason
    model = SentenceTransformer(str(tmp_path / "kept"), device="cpu")
    vec = model.encode(["Who funds shelters in Canada?"], normalize_embeddings=True)
    assert vec.shape == (1, 384) and np.isfinite(vec).all()
    json.dumps(kept.to_dict())  # the report is JSON for the manifest

    refused = tuning.tune(passages, DEFAULT_MODEL, tmp_path / "refused", epochs=1, batch_size=8, min_gain=1.0)
    assert not refused.kept and refused.model_dir is None
    assert "did not find their passages better" in refused.reason
    assert not (tmp_path / "refused").exists()
