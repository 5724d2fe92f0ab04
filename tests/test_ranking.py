"""The ranking a build learns (adapt.py): recorded in the manifest, shown by `tqa info`, used by retrieval unless
TQA_RANKING=shipped; an index written before it ranks as shipped; what it holds is checked when read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tqa import build_index
from tqa.assistant import Assistant
from tqa.config import Settings
from tqa.errors import IndexCorrupt, SettingsError
from tqa.manifest import Ranking
from tqa.retrieval import SHIPPED, Weights, weights_for
from tqa.store import load_index, read_manifest

from .index_helpers import cli
from .support import FakeEmbedder
from .test_manifest import rewrite

TOPICS = ["shelters", "police", "courts", "labour", "migration", "funding", "schools", "health"]


def _corpus(root: Path, n: int = 8) -> Path:
    """Documents of four sections of two paragraphs each, enough sentences to learn from."""
    root.mkdir(parents=True)
    for i, topic in enumerate(TOPICS[:n]):
        parts = []
        for s in range(4):
            paras = [" ".join(f"The {topic} programme number {i} helps victims of trafficking in region {j} with "
                              f"support {k} and care for every {topic} case of part {s} reported to the office."
                              for k in range(3)) for j in range(2)]
            parts.append(f"## Part {s}\n\n" + "\n\n".join(paras))
        (root / f"{topic}.md").write_text(f"# {topic.title()}\n\n" + "\n\n".join(parts) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ranking")
    build_index(_corpus(tmp / "corpus"), tmp / "index", embedder=FakeEmbedder())
    return tmp / "index"


def test_a_build_records_what_it_learned_and_info_says_it_in_one_sentence(index, monkeypatch):
    ranking = read_manifest(index).ranking
    assert ranking is not None and ranking.queries > 0
    assert 0 <= ranking.unit_weight <= 1 and ranking.keyword_weight == SHIPPED.keyword
    assert ranking.why.count(". ") == 0 and ranking.why  # one sentence
    monkeypatch.delenv("TQA_RANKING", raising=False)
    out = cli("info", "--index", str(index))
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("ranking:"))
    assert line == f"ranking:    learned: {ranking.why}"
    monkeypatch.setenv("TQA_RANKING", "shipped")
    shipped = cli("info", "--index", str(index))
    assert f"ranking:    shipped (TQA_RANKING=shipped); learned, unused: {ranking.why}" in shipped.stdout


def test_the_learned_weights_are_used_only_when_asked_for(index):
    loaded = load_index(index)
    learned = Ranking(unit_weight=1.0, keyword_weight=0.3, why="test", queries=30)
    loaded.manifest = dataclasses.replace(loaded.manifest, ranking=learned)
    assert weights_for(loaded, "shipped") == SHIPPED
    assert weights_for(loaded, "learned") == Weights(1.0, 0.3)
    assert weights_for(loaded, "learned", keyword_weight=0.0) == Weights(1.0, 0.0)
    older = dataclasses.replace(loaded.manifest, ranking=None)
    loaded.manifest = older
    assert weights_for(loaded, "learned") == SHIPPED  # an index built before learning ranks as shipped


def test_retrieval_scores_with_the_learned_unit_weight(index):
    question = "Which programme helps victims in the courts?"
    embedder = FakeEmbedder()
    qvec = embedder.encode([question])[0]
    for unit_weight in (0.0, 1.0):
        qa = Assistant.load(index, embedder=embedder, settings=Settings(ranking="learned"))
        qa.index.manifest = dataclasses.replace(
            qa.index.manifest, ranking=Ranking(unit_weight=unit_weight, keyword_weight=0.2, why="test", queries=30))
        hit = qa.search(question, k=1, mode="dense")[0]
        row = next(i for i, c in enumerate(qa.index.chunks) if c.source == hit.source and c.start == hit.start)
        chunk = float((qa.index.vectors.take(np.array([row])) @ qvec)[0])
        ptr = qa.index.unit_ptr
        units = qa.index.units.take(np.arange(ptr[row], ptr[row + 1])) @ qvec
        expected = chunk if unit_weight == 0.0 else float(units.max())
        assert hit.relevance == pytest.approx(expected, abs=1e-5)


def test_an_index_written_before_learning_reads_as_shipped(tmp_path):
    build_index(_corpus(tmp_path / "corpus", 3), tmp_path / "index", embedder=FakeEmbedder())
    rewrite(tmp_path / "index", lambda m: m.pop("ranking"))
    assert read_manifest(tmp_path / "index").ranking is None
    qa = Assistant.load(tmp_path / "index", embedder=FakeEmbedder(), settings=Settings(ranking="learned"))
    assert qa._weights(qa.index) == SHIPPED and qa.info()["ranking"] == "shipped"
    out = cli("info", "--index", str(tmp_path / "index"))
    assert "ranking:    shipped (nothing learned" in out.stdout


@pytest.mark.parametrize("edit, says", [
    (lambda r: r.update(unit_weight=1.5), "ranking.unit_weight is not a number from 0 to 1"),
    (lambda r: r.update(keyword_weight=-0.1), "ranking.keyword_weight is not a number from 0 to 1"),
    (lambda r: r.update(unit_weight="half"), "ranking.unit_weight is not a number"),
    (lambda r: r.update(fusion="rrf"), "ranking.fusion is not one of scores"),
    (lambda r: r.pop("why"), "ranking.why is missing"),
    (lambda r: r.update(baseline={"chunk": "high"}), "ranking.baseline holds something other than numbers"),
    (lambda r: r.update(queries=-3), "ranking.queries is not a whole number"),
], ids=["unit weight", "keyword weight", "not a number", "unknown fusion", "no reason", "baseline", "queries"])
def test_a_damaged_ranking_is_refused_naming_the_field(index, tmp_path, edit, says):
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(index, copy, symlinks=True)
    rewrite(copy, lambda m: edit(m["ranking"]))
    with pytest.raises(IndexCorrupt, match=says):
        read_manifest(copy)


def test_an_update_that_embeds_little_keeps_the_ranking_learned_before(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    embedder = FakeEmbedder()
    build_index(corpus, tmp_path / "index", embedder=embedder)
    before = read_manifest(tmp_path / "index").ranking
    (corpus / "note.txt").write_text("A short note.\n", encoding="utf-8")
    embedder.calls.clear()
    build_index(corpus, tmp_path / "index", embedder=embedder)
    assert read_manifest(tmp_path / "index").ranking == before
    # the new chunk, then the 24 calibration probes: no pseudo-query encoded
    assert len(read_manifest(tmp_path / "index").files) == 9 and embedder.calls == [1, 24], embedder.calls
    (corpus / "more.md").write_text((corpus / "police.md").read_text().replace("police", "prisons"))
    (corpus / "other.md").write_text((corpus / "courts.md").read_text().replace("courts", "ports"))
    (corpus / "third.md").write_text((corpus / "labour.md").read_text().replace("labour", "farms"))
    embedder.calls.clear()
    build_index(corpus, tmp_path / "index", embedder=embedder)
    assert sum(embedder.calls) > 12 * 3 + 24  # a tenth of the chunks or more: learned again


@pytest.mark.parametrize("name, value, says", [
    ("TQA_RANKING", "magic", "learned, shipped"),
    ("TQA_KEYWORD_WEIGHT", "1.5", "from 0 (dense only) to 1 (BM25 only)"),
    ("TQA_KEYWORD_WEIGHT", "nan", "from 0 (dense only) to 1 (BM25 only)"),
    ("TQA_KEYWORD_WEIGHT", "x", "is not a number"),
])
def test_bad_ranking_settings_are_refused(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=says.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env()


def test_the_learned_ranking_is_the_default(monkeypatch):
    monkeypatch.delenv("TQA_RANKING", raising=False)
    assert Settings.from_env().ranking == Settings().ranking == "learned"


def test_ranking_settings_are_read(monkeypatch):
    monkeypatch.setenv("TQA_RANKING", "Learned")
    monkeypatch.setenv("TQA_KEYWORD_WEIGHT", "0.35")
    s = Settings.from_env()
    assert s.ranking == "learned" and s.keyword_weight == 0.35


def test_learning_reads_only_the_rows_of_its_sample_and_learns_what_full_arrays_give(index, monkeypatch):
    from tqa import adapt
    from tqa.indexing import _Rows, learn_ranking
    from tqa.vectors import FaissVectors

    loaded = load_index(index)
    full = adapt.learn(adapt.passages_of(loaded.chunks), loaded.vectors.take(np.arange(len(loaded.chunks))),
                       loaded.units.take(np.arange(int(loaded.unit_ptr[-1]))), FakeEmbedder(),
                       loaded.keywords.analyze)
    assert learn_ranking(loaded, FakeEmbedder()) == Ranking.learned(full) == read_manifest(index).ranking
    asked: list[int] = []
    real = FaissVectors.take
    monkeypatch.setattr(FaissVectors, "take", lambda self, rows: asked.append(len(rows)) or real(self, rows))
    adapt.learn(adapt.passages_of(loaded.chunks), _Rows(loaded.vectors), _Rows(loaded.units), FakeEmbedder(),
                loaded.keywords.analyze, max_pool=10)
    assert asked and asked[0] == 10 and max(asked) <= 10 * 2  # the pool's chunks, then their units (2 each)
