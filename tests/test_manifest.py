"""The typed manifest: it reads and writes the JSON tqa has always written, refuses what it does not know, and
records the keyword analyzer so that an index analysed otherwise is refused rather than silently mis-scored."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tqa import Assistant, build_index
from tqa.cli import main
from tqa.errors import IndexCorrupt, IndexMismatch
from tqa.keywords import analyzer_settings
from tqa.manifest import MANIFEST, MANIFEST_SHA, THRESHOLD_FLOOR, Manifest, manifest_digest
from tqa.store import current_generation, load_index, read_manifest

from .support import FakeEmbedder


@pytest.fixture
def index(small_corpus, tmp_path, fake_embedder) -> Path:
    build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    return tmp_path / "index"


def written(index: Path) -> dict:
    return json.loads((current_generation(index) / MANIFEST).read_text(encoding="utf-8"))


def rewrite(index: Path, edit) -> None:
    """Edit the live manifest's JSON and seal it again, as a tool (or a newer tqa) writing it on purpose would."""
    m = written(index)
    edit(m)
    m[MANIFEST_SHA] = manifest_digest(m)
    (current_generation(index) / MANIFEST).write_text(json.dumps(m, indent=2), encoding="utf-8")


def test_the_manifest_a_build_writes_reads_back_to_the_same_json(index):
    raw = written(index)
    m = Manifest.from_dict(raw)
    assert m.to_dict() == raw  # every key, every value, nothing added or lost
    assert m.sealed().checksum == raw[MANIFEST_SHA] == m.checksum
    assert Manifest.parse(m.to_bytes(), "a copy") == m


def test_the_manifest_is_read_as_attributes(index, small_corpus):
    m = read_manifest(index)
    assert m.model.name == "fake-hash-64" and m.model.dim == 64 and m.counts.files == 3
    assert m.sources == ["page.html", "sweden.md", "tech.txt"] and m.files["sweden.md"].format == "md"
    assert m.corpus == str(small_corpus.resolve()) and m.chunking.chunk_size == 1600
    assert m.calibration.threshold == m.calibration.abstain_threshold and not m.has_encoder


def test_the_analyzer_is_recorded(index):
    assert written(index)["analyzer"] == analyzer_settings().to_dict()
    assert read_manifest(index).analyzer == analyzer_settings()
    assert set(analyzer_settings().to_dict()) == {"lowercase", "token_pattern", "stopwords", "stopwords_sha256",
                                                  "stemmer"}


@pytest.mark.parametrize(("field", "value"), [("stemmer", "porter"), ("stopwords", "en_plus"),
                                              ("token_pattern", r"\w+"), ("lowercase", False),
                                              ("stopwords_sha256", "0" * 64)])
def test_an_index_analysed_otherwise_is_refused_with_the_rebuild_hint(index, fake_embedder, capsys, field, value):
    rewrite(index, lambda m: m["analyzer"].update({field: value}))
    for load in (load_index, lambda i: Assistant.load(i, embedder=fake_embedder)):
        with pytest.raises(IndexMismatch, match=f"another keyword analyzer \\(its {field} differ.*--rebuild"):
            load(index)
    assert read_manifest(index).analyzer.differences(analyzer_settings()) == [field]  # `tqa info` still reads it
    assert main(["ask", "shelters", "--index", str(index)]) == 1
    err = capsys.readouterr().err
    assert "keyword analyzer" in err and len(err.strip().splitlines()) == 1


def test_an_index_written_before_the_analyzer_was_recorded_is_read_with_todays(index, fake_embedder):
    rewrite(index, lambda m: m.pop("analyzer"))
    assert read_manifest(index).analyzer is None and "analyzer" not in read_manifest(index).to_dict()
    assert Assistant.load(index, embedder=fake_embedder).ask("Sweden purchase of sex").passages


def test_the_oldest_manifest_tqa_wrote_still_loads(index, fake_embedder):
    """Format 1 as first written: no precision, no unit count, no name prefixes, no vector index description
    beyond type and metric, no analyzer, no checksum of its own."""
    def oldest(m):
        for key in ("precision", "names", "analyzer", "corpus_relative", MANIFEST_SHA):
            m.pop(key)
        m["counts"].pop("units")
        m["vector_index"] = {"type": "faiss.IndexFlatIP", "metric": "cosine"}
        m["format_version"] = 1

    m = written(index)
    oldest(m)
    (current_generation(index) / MANIFEST).write_text(json.dumps(m), encoding="utf-8")
    loaded = read_manifest(index)
    assert loaded.precision == "fp32" and loaded.names == () and loaded.counts.units is None
    assert loaded.checksum is None and loaded.vector_index.vectors is None and loaded.format_version == 1
    qa = Assistant.load(index, embedder=fake_embedder)
    assert qa.ask("Sweden purchase of sex").passages


@pytest.mark.parametrize("edit", [
    lambda m: m.update(ranking={"dense": 0.8, "keyword_weight": 0.2, "why": "learned"}),
    lambda m: m.update(tune={"model": "tuned/"}),
    lambda m: m["files"]["sweden.md"].update(language="sv"),
    lambda m: m["model"].update(revision="abc"),
    lambda m: m["calibration"].update(method="other"),
    lambda m: m["vector_index"].update(codes=8),
    lambda m: m["counts"].update(pages=3),
], ids=["ranking", "tune", "file language", "model revision", "calibration method", "vector codes", "counts"])
def test_a_section_this_tqa_does_not_know_is_refused_not_ignored(index, edit):
    rewrite(index, edit)
    for read in (load_index, read_manifest):
        with pytest.raises(IndexCorrupt, match="does not know: it was written by a newer tqa. Upgrade tqa, or run "
                                               "`tqa index --rebuild`") as exc:
            read(index)
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("chunking", [{"chunk_size": 10, "chunk_overlap": 0}, {"chunk_size": 100, "chunk_overlap": 90}])
def test_chunking_out_of_range_in_a_manifest_is_refused_in_one_line(index, chunking):
    rewrite(index, lambda m: m.update(chunking=chunking))
    with pytest.raises(IndexCorrupt, match="chunking .* is out of range.*rebuild"):
        read_manifest(index)


def test_a_calibration_without_a_threshold_abstains_below_the_one_floor(index, fake_embedder):
    rewrite(index, lambda m: m.update(calibration={}))
    assert read_manifest(index).calibration.threshold == THRESHOLD_FLOOR
    assert Assistant.load(index, embedder=FakeEmbedder()).threshold == THRESHOLD_FLOOR


def test_a_manifest_is_a_value(index):
    m = read_manifest(index)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.corpus = "elsewhere"  # type: ignore[misc]
    assert dataclasses.replace(m, corpus="elsewhere").corpus == "elsewhere" and m.corpus != "elsewhere"


def test_a_files_sender_and_pending_ocr_read_back_and_are_checked(index):
    """A document's metadata (an e-mail's sender and date) and its count of scanned pages left unread are kept when
    present, left out when not, and a value of the wrong kind is refused like any other."""
    rewrite(index, lambda m: m["files"]["sweden.md"].update(metadata={"from": "a@example.org"}, ocr_pending=2))
    entry = read_manifest(index).files["sweden.md"]
    assert entry.metadata == {"from": "a@example.org"} and entry.ocr_pending == 2
    assert "metadata" not in written(index)["files"]["tech.txt"]
    for bad in ({"metadata": {"from": 3}}, {"metadata": "a@example.org"}, {"ocr_pending": -1}):
        rewrite(index, lambda m, bad=bad: m["files"]["sweden.md"].update(bad))
        with pytest.raises(IndexCorrupt, match="sweden.md"):
            read_manifest(index)
        rewrite(index, lambda m: m["files"]["sweden.md"].update(metadata={}, ocr_pending=0))
