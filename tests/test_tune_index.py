"""tqa tune's index side (tuning.py) with stand-ins for training and the model: kept or refused (held-out figures, a
question set), the tuned model saved under its hash and recorded in the manifest, updates and rebuilds keeping it,
revert, errors in one line, and kills at every step leaving the previous index live."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import FakeEmbedder
from tests.support import ROOT
from tests.tune_fakes import Loader, NamedFake, Trainer
from tqa import indexing
from tqa.assistant import Assistant
from tqa.cli import main
from tqa.config import Settings
from tqa.errors import IndexBusy, IndexCorrupt, IndexMismatch, IndexNotFound
from tqa.indexing import build_index
from tqa.manifest import Manifest
from tqa.store import current_generation, load_index, read_manifest, write_lock
from tqa.tune import TuneError
from tqa.tuning import model_digest, revert_tuning, tune_index, tuned_model_path

QUESTIONS = [
    {"id": "q1", "question": "Which country criminalises buying sex?", "answerable": True,
     "answers": ["Sweden criminalises the purchase of sex"]},
    {"id": "q2", "question": "How do traffickers recruit victims?", "answerable": True,
     "answers": ["Traffickers use social media to recruit victims"]},
    {"id": "q3", "question": "Who trains police officers?", "answerable": True,
     "answers": ["NGOs train police officers to recognise victims"]},
]


@pytest.fixture
def index(tmp_path: Path, small_corpus: Path) -> Path:
    out = tmp_path / "index"
    build_index(small_corpus, out, embedder=FakeEmbedder())
    return out


def _questions(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    return path


def _state(index: Path) -> tuple[str, str | None, bool]:
    """(live generation, manifest checksum, whether a models/ folder exists)."""
    gen = current_generation(index)
    assert gen is not None
    return gen.name, read_manifest(index).checksum, (index / "models").exists()


def _tuned(index: Path, **kw) -> Manifest:
    result = tune_index(index, use_questions=False, trainer=Trainer(**kw), load=Loader())
    assert result.kept, result.message
    return read_manifest(index)


def test_a_kept_model_is_saved_under_its_hash_recorded_and_used(index: Path) -> None:
    before = read_manifest(index)
    with load_index(index) as data:
        base_vectors = data.vectors.take(np.arange(data.vectors.ntotal))
    loader, trainer = Loader(), Trainer()
    result = tune_index(index, use_questions=False, trainer=trainer, load=loader)
    assert result.kept and result.message.startswith("Tuned:")
    m = read_manifest(index)
    t = m.tuning
    assert t is not None and result.report["model_dir"] == str(index / t.folder)
    assert t is not None and t.base_model == FakeEmbedder.name
    folder = index / t.folder
    assert t.folder == f"models/{t.model_sha256[:16]}" and model_digest(folder) == t.model_sha256
    assert m.model.name == t.folder and (t.held_out_mrr_before, t.held_out_mrr_after) == (0.2, 0.5)
    assert loader.sources[-1] == str(folder)  # the re-embedding read the model from its folder
    assert trainer.calls[0]["base"] == FakeEmbedder.name
    assert trainer.calls[0]["min_gain"] == 0.03  # no question set: the larger gain is asked for
    assert sorted(p.name for p in (index / "models").iterdir()) == [folder.name]  # no temporary folder left
    assert (m.files, m.counts, m.chunking) == (before.files, before.counts, before.chunking)  # same documents
    with load_index(index) as now:  # the published generation loads, checks out, and holds the tuned vectors
        assert now.vectors.ntotal == len(base_vectors)
        assert not np.allclose(now.vectors.take(np.arange(now.vectors.ntotal)), base_vectors)
    qa = Assistant.load(index, embedder=NamedFake(t.folder))
    assert qa.ask("Who trains police officers?").passages[0].source == "page.html"
    with pytest.raises(IndexMismatch):  # the base model no longer queries it
        Assistant.load(index, embedder=FakeEmbedder())


def test_passages_are_the_chunks_paragraphs(index: Path, small_corpus: Path) -> None:
    (small_corpus / "long.md").write_text("# Shelters\n\n" + "\n\n".join(
        f"Paragraph {i} says shelters in region {i} opened last year with new funding." for i in range(4)) + "\n",
        encoding="utf-8")
    build_index(small_corpus, index, embedder=FakeEmbedder())
    trainer = Trainer()
    tune_index(index, use_questions=False, trainer=trainer, load=Loader())
    with load_index(index) as data:
        expected = [t for c in data.chunks for t in (c.unit_search_texts() or [c.search_text])]
        texts = [c.search_text for c in data.chunks]
    assert trainer.calls[0]["passages"] == expected
    assert len(expected) > len(texts)  # some chunk gave several paragraphs


def test_a_refusal_changes_nothing(index: Path) -> None:
    before = _state(index)
    result = tune_index(index, use_questions=False, trainer=Trainer(keep=False), load=Loader())
    assert not result.kept and result.message.startswith("Not tuned:") and "unchanged" in result.message
    assert _state(index) == before and before[2] is False  # same generation and manifest, no models folder


def test_a_question_set_answered_worse_refuses_the_model(index: Path, tmp_path: Path) -> None:
    before = _state(index)
    dense = dataclasses.replace(Settings.from_env(), mode="dense")  # (BM25 alone finds these few passages)
    result = tune_index(index, questions=_questions(tmp_path), trainer=Trainer(), load=Loader(useless=True),
                        settings=dense)
    assert not result.kept
    assert result.questions_mrr_after is not None and result.questions_mrr_before is not None
    assert result.questions_mrr_after < result.questions_mrr_before
    assert "answered worse" in result.message
    assert result.model_folder is None and result.report["model_dir"] is None  # nothing of it is left
    assert _state(index) == before


def test_a_question_set_answered_as_well_keeps_it_and_is_recorded(index: Path, tmp_path: Path) -> None:
    trainer = Trainer()
    result = tune_index(index, questions=_questions(tmp_path), trainer=trainer, load=Loader())
    assert result.kept, result.message
    t = read_manifest(index).tuning
    assert t is not None and t.questions == str(_questions(tmp_path))
    assert t.questions_mrr_after is not None and t.questions_mrr_before is not None
    assert t.questions_mrr_after >= t.questions_mrr_before
    assert trainer.calls[0]["min_gain"] == 0.01


def test_the_project_question_set_is_the_default_for_an_index_of_corpus(tmp_path: Path, small_corpus: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tqa.tuning import default_questions

    monkeypatch.chdir(tmp_path)  # holds corpus/ (small_corpus) but no eval/questions.jsonl yet
    build_index("corpus", "index", embedder=FakeEmbedder())
    m = read_manifest("index")
    assert default_questions(m, Path("index"), None) is None
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "questions.jsonl").write_text("", encoding="utf-8")
    assert default_questions(m, Path("index"), None) == Path("eval/questions.jsonl")
    other = tmp_path / "other"
    shutil.copytree(small_corpus, other)
    build_index(other, "index2", embedder=FakeEmbedder())
    assert default_questions(read_manifest("index2"), Path("index2"), None) is None


def test_a_missing_question_file_is_one_error(index: Path, tmp_path: Path) -> None:
    with pytest.raises(TuneError, match="No question set"):
        tune_index(index, questions=tmp_path / "nope.jsonl", trainer=Trainer(), load=Loader())
    assert not (index / "models").exists()


def test_another_corpus_is_refused(index: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(IndexMismatch, match="was built from"):
        tune_index(index, corpus=tmp_path / "elsewhere", trainer=Trainer(), load=Loader())


def test_revert_goes_back_to_the_base_model_and_removes_the_tuned_one(index: Path) -> None:
    base = read_manifest(index)
    with load_index(index) as data:
        base_vectors = data.vectors.take(np.arange(data.vectors.ntotal))
    tuned = _tuned(index)
    assert tuned.tuning is not None
    result = revert_tuning(index, load=Loader())
    assert result.kept and result.message.startswith("Reverted:") and "was removed" in result.message
    m = read_manifest(index)
    assert m.tuning is None and m.model == base.model
    assert not (index / "models").exists()
    qa = Assistant.load(index, embedder=FakeEmbedder())
    assert qa.ask("Who trains police officers?").passages[0].source == "page.html"
    with load_index(index) as now:
        assert np.array_equal(now.vectors.take(np.arange(now.vectors.ntotal)), base_vectors)


def test_revert_on_an_index_that_is_not_tuned_says_so_and_changes_nothing(index: Path) -> None:
    before = _state(index)
    result = revert_tuning(index, load=Loader())
    assert not result.kept and result.message.startswith("Nothing to revert")
    assert _state(index) == before


def test_tuning_again_replaces_the_old_tuned_model(index: Path) -> None:
    first = _tuned(index, content="one").tuning
    second = _tuned(index, content="two").tuning
    assert first is not None and second is not None and first.folder != second.folder
    assert sorted(p.name for p in (index / "models").iterdir()) == [Path(second.folder).name]
    assert second.base_model == FakeEmbedder.name  # tuned afresh from the base, not from the tuned model


def test_updates_and_rebuilds_keep_the_tuned_model(index: Path, small_corpus: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    t = _tuned(index).tuning
    assert t is not None
    loads: list[tuple[str, str | None]] = []

    def load(name: str, precision: str | None = None, source: str | None = None) -> NamedFake:
        loads.append((name, source))
        return NamedFake(name)

    monkeypatch.setattr(indexing, "load_embedder", load)
    (small_corpus / "new.md").write_text("# New\n\nShelters opened in three more provinces this year.\n",
                                         encoding="utf-8")
    build_index(small_corpus, index)  # tqa index: an update
    assert loads[-1] == (t.folder, str(index / t.folder))
    assert read_manifest(index).tuning == t
    build_index(small_corpus, index, rebuild=True)  # tqa index --rebuild, no --model
    m = read_manifest(index)
    assert m.tuning == t and m.model.name == t.folder and "new.md" in m.files
    build_index(small_corpus, index, rebuild=True, embedder=FakeEmbedder())  # --rebuild with another model
    m = read_manifest(index)
    assert m.tuning is None and m.model.name == FakeEmbedder.name


def test_a_rebuild_from_another_corpus_drops_the_tuned_model(index: Path, small_corpus: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _tuned(index)
    other = tmp_path / "other"
    shutil.copytree(small_corpus, other)
    monkeypatch.setattr(indexing, "load_embedder", Loader())
    build_index(other, index, rebuild=True)  # the model was tuned on the old documents: as for any new index
    m = read_manifest(index)
    assert m.tuning is None and m.model.name == Settings.from_env().model


def test_an_update_asking_for_another_model_is_refused(index: Path, small_corpus: Path) -> None:
    _tuned(index)
    (small_corpus / "new.md").write_text("# New\n\nMore text about shelters.\n", encoding="utf-8")
    with pytest.raises(IndexMismatch, match="--rebuild --model"):
        build_index(small_corpus, index, model="all-MiniLM-L6-v2")


@pytest.mark.parametrize("damage", ["edit", "delete", "extra"])
def test_a_damaged_tuned_model_is_refused_in_one_line(index: Path, small_corpus: Path, damage: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    t = _tuned(index).tuning
    assert t is not None
    folder = index / t.folder
    if damage == "edit":
        (folder / "sub" / "weights.bin").write_text("flipped", encoding="utf-8")
    elif damage == "delete":
        shutil.rmtree(folder)
    else:
        (folder / "stray.txt").write_text("x", encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="tqa tune --revert"):
        tuned_model_path(index, t)
    (small_corpus / "new.md").write_text("# New\n\nMore text about shelters.\n", encoding="utf-8")
    assert main(["index", str(small_corpus), "--index", str(index)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tqa tune --revert" in err and "tqa index --rebuild --model" in err
    # reverting does not need the tuned model
    assert revert_tuning(index, load=Loader()).kept
    assert read_manifest(index).tuning is None


def test_no_index_busy_index_and_too_few_pairs_are_one_line_errors(tmp_path: Path, index: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(IndexNotFound):
        tune_index(tmp_path / "none", trainer=Trainer(), load=Loader())
    assert main(["tune", "--index", str(tmp_path / "none")]) == 1
    assert "Run `tqa index` first" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    with write_lock(index), pytest.raises(IndexBusy):
        tune_index(index, trainer=Trainer(), load=Loader())
    with pytest.raises(TuneError, match="at least 20"):  # the real trainer: three short files give few pairs
        tune_index(index, use_questions=False, load=Loader())
    assert main(["tune", "--index", str(index), "--no-questions"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 20" in err
    assert not (index / "models").exists()


def test_revert_takes_no_tuning_options(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--revert", "--epochs", "3", "--index", str(index)]) == 1
    assert "--epochs" in capsys.readouterr().err
    assert main(["tune", "--revert", "--index", str(index)]) == 0
    assert "Nothing to revert" in capsys.readouterr().out


def test_info_shows_the_tuning(index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--index", str(index)]) == 0
    assert "tuning:     none" in capsys.readouterr().out
    t = _tuned(index).tuning
    assert t is not None
    assert main(["info", "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert f"tuned from {FakeEmbedder.name}" in out and "0.200 -> 0.500" in out and t.folder in out


# ---------------------------------------------------------------- the manifest section


def test_the_tuning_section_round_trips_and_is_checked(index: Path) -> None:
    m = _tuned(index)
    d = m.to_dict()
    assert Manifest.from_dict(d) == m
    assert Manifest.from_dict(json.loads(json.dumps(d))) == m
    untuned = {k: v for k, v in d.items() if k != "tuning"}
    untuned["model"] = dict(d["model"], name="fake-hash-64")
    assert Manifest.from_dict(untuned).tuning is None  # an index written before the section still loads

    def refused(change, match: str) -> None:
        bad = json.loads(json.dumps(d))
        change(bad)
        with pytest.raises(IndexCorrupt, match=match):
            Manifest.from_dict(bad)

    refused(lambda x: x["tuning"].update(surprise=1), "does not know")
    refused(lambda x: x["tuning"].pop("model_sha256"), "tuning.model_sha256 is missing")
    refused(lambda x: x["tuning"].pop("base_model"), "tuning.base_model is missing")
    refused(lambda x: x["tuning"].update(pairs="many"), "tuning.pairs")
    refused(lambda x: x["tuning"].update(folder="../../elsewhere"), "tuning.folder")
    refused(lambda x: x["tuning"].update(model_sha256="0" * 64), "tuning.folder")
    refused(lambda x: x["model"].update(name="all-MiniLM-L6-v2"), "model.name is not the tuned model's folder")
    refused(lambda x: x["tuning"]["settings"].update(bad=[1]), "tuning.settings")


# ---------------------------------------------------------------- kills


def _crash(index: Path, step: str, nth: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.crash_tune", str(index), step, str(nth)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
# train: saving the model; checksum 1 and fsync 1: hashing and syncing it in models/; rename 1: moving it into
# place; encode: re-embedding; checksum 5, fsync 2, rename 2, replace 1: publishing the generation
@pytest.mark.parametrize("step,nth", [("train", 1), ("checksum", 1), ("fsync", 1), ("rename", 1), ("encode", 1),
                                      ("checksum", 5), ("fsync", 2), ("rename", 2), ("replace", 1)])
def test_a_kill_during_tune_leaves_the_previous_index_live(index: Path, step: str, nth: int) -> None:
    before = read_manifest(index)
    proc = _crash(index, step, nth)
    assert proc.returncode == -9, proc.stderr
    m = read_manifest(index)
    assert m == before  # the previous manifest, as it was
    qa = Assistant.load(index, embedder=FakeEmbedder())
    assert qa.ask("Who trains police officers?").passages
    # the next run cleans up after the killed one (its temporary folder, or its model saved but never published:
    # the stand-in trainer saved other content there, so another hash) and tunes
    m = _tuned(index)
    assert m.tuning is not None
    assert sorted(p.name for p in (index / "models").iterdir()) == [Path(m.tuning.folder).name]
    assert not [p for p in index.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--max-pairs", "-3"], ["--min-gain", "nan"],
                                  ["--min-gain", "2"], ["--questions", "q.jsonl", "--no-questions"]])
def test_bad_tune_options_are_refused_before_anything_runs(index: Path, args: list[str]) -> None:
    before = _state(index)
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--index", str(index), *args])
    assert exc.value.code == 2
    assert _state(index) == before


def test_the_model_files_sent_elsewhere_are_the_ones_the_hash_vouches_for(index: Path, monkeypatch) -> None:
    """What a Ray build sends its workers (``tuned_model_files``): every file, with the manifest's hash over the bytes
    as read; a model edited between the check of its folder and the read is refused in one line."""
    from tqa import tuning
    from tqa.tuning import files_digest, tuned_model_files

    t = _tuned(index).tuning
    assert t is not None
    files = tuned_model_files(index, t)
    assert sorted(rel for rel, _ in files) == ["config.json", "sub/weights.bin"]
    assert files_digest(files) == t.model_sha256 == model_digest(index / t.folder)
    checked = tuning.tuned_model_path

    def edited_after_the_check(index_dir, tuned):
        path = checked(index_dir, tuned)
        (Path(path) / "sub" / "weights.bin").write_text("edited", encoding="utf-8")
        return path

    monkeypatch.setattr(tuning, "tuned_model_path", edited_after_the_check)
    with pytest.raises(IndexCorrupt) as err:
        tuned_model_files(index, t)
    assert "changed while it was read" in str(err.value) and "\n" not in str(err.value)
