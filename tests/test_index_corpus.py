"""One index, one corpus folder: indexing another folder into an index is refused (naming the folder it was built
from and ``--rebuild``), in the library, the CLI and ``tqa eval`` alike; a project moved or copied with its corpus
and index side by side keeps its index."""

from __future__ import annotations

import shutil

import pytest

from tqa import build_index
from tqa.errors import IndexMismatch, TqaError
from tqa.store import read_manifest

from .index_helpers import change, cli, make_legacy

# ---------------------------------------------------------------- one index, one corpus


def test_indexing_another_folder_into_an_index_is_refused(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    mydocs = tmp_path / "mydocs"
    mydocs.mkdir()
    (mydocs / "a.txt").write_text("My own notes about hotlines.\n")
    before = read_manifest(index)
    embedded = fake_embedder.embedded
    with pytest.raises(IndexMismatch) as exc:
        build_index(mydocs, index, embedder=fake_embedder)
    message = str(exc.value)
    assert str(small_corpus.resolve()) in message and "--rebuild" in message and "\n" not in message
    assert read_manifest(index) == before and fake_embedder.embedded == embedded
    s = build_index(mydocs, index, embedder=fake_embedder, rebuild=True)  # the flag that replaces it
    assert s.published and set(read_manifest(index).files) == {"a.txt"}


def test_the_cli_names_the_folder_an_index_was_built_from(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    mydocs = tmp_path / "mydocs"
    mydocs.mkdir()
    (mydocs / "a.txt").write_text("My own notes about hotlines.\n")
    r = cli("index", str(mydocs), "--index", str(index))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert str(small_corpus.resolve()) in r.stderr and "--rebuild" in r.stderr


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_moved_or_copied_project_keeps_its_index(small_corpus, tmp_path, fake_embedder, how, legacy):
    project = tmp_path / "project"
    shutil.copytree(small_corpus, project / "corpus")
    build_index(project / "corpus", project / "index", embedder=fake_embedder)
    if legacy:
        make_legacy(project / "index")
    elsewhere = tmp_path / "elsewhere" / "checkout"
    elsewhere.parent.mkdir()
    (shutil.copytree if how == "copied" else shutil.move)(project, elsewhere)
    s = build_index(elsewhere / "corpus", elsewhere / "index", embedder=fake_embedder)
    assert s.chunks_embedded == 0 and not s.files_removed and sorted(s.files_unchanged) == [
        "page.html", "sweden.md", "tech.txt"]
    change(elsewhere / "corpus", 1)
    assert build_index(elsewhere / "corpus", elsewhere / "index", embedder=fake_embedder).files_added == [
        "changing.txt"]
    assert read_manifest(elsewhere / "index").corpus == str((elsewhere / "corpus").resolve())


def test_eval_uses_the_same_rule(small_corpus, tmp_path, fake_embedder):
    from tqa.evaluation import run_eval

    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"id": "s", "question": "What does Sweden criminalise?", '
                         '"answers": ["Sweden criminalises the purchase of sex"]}\n', encoding="utf-8")
    project = tmp_path / "project"
    shutil.copytree(small_corpus, project / "corpus")
    build_index(project / "corpus", project / "index", embedder=fake_embedder)
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    report, _, _ = run_eval(questions=questions, corpus=moved / "corpus", index=moved / "index", thresholds=None,
                            embedder=fake_embedder, mode="bm25")  # a moved checkout is the same corpus
    assert report["runs"]["bm25"]["questions"][0]["rank"] == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("Some other corpus about shelters.\n")
    with pytest.raises(TqaError, match="was built from"):
        run_eval(questions=questions, corpus=other, index=moved / "index", thresholds=None, embedder=fake_embedder)


def test_the_manifest_records_the_corpus_absolute_and_relative_to_the_index(small_corpus, tmp_path, fake_embedder):
    build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    m = read_manifest(tmp_path / "index")
    assert m.corpus == str(small_corpus.resolve()) and m.corpus_relative == "../corpus"
