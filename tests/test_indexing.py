from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tqa import Assistant, build_index
from tqa.config import ChunkSettings
from tqa.errors import BadQuestion, CorpusError, IndexBusy, IndexCorrupt, IndexMismatch, IndexNotFound
from tqa.manifest import MANIFEST, VECTORS
from tqa.store import CURRENT, current_generation, load_index, read_manifest, write_lock

ROOT = Path(__file__).resolve().parent.parent


def test_incremental_runs_embed_all_then_nothing_then_only_the_changed_file(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    first = build_index(small_corpus, index, embedder=fake_embedder)
    assert sorted(first.files_added) == ["page.html", "sweden.md", "tech.txt"]
    assert first.chunks_embedded == first.chunks_total > 0

    second = build_index(small_corpus, index, embedder=fake_embedder)
    assert second.chunks_embedded == 0 and not second.published
    assert sorted(second.files_unchanged) == ["page.html", "sweden.md", "tech.txt"]

    (small_corpus / "tech.txt").write_text("Prevention\nHotlines let victims ask for help at any hour.\n")
    third = build_index(small_corpus, index, embedder=fake_embedder)
    assert third.files_changed == ["tech.txt"]
    tech_chunks = [c for c in load_index(index).chunks if c.source == "tech.txt"]
    assert third.chunks_embedded == len(tech_chunks) == 1
    assert third.chunks_total == first.chunks_total - 2 + 1  # tech.txt had two sections before


def test_deleted_file_leaves_the_index(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    (small_corpus / "sweden.md").unlink()
    s = build_index(small_corpus, index, embedder=fake_embedder)
    assert s.files_removed == ["sweden.md"] and s.chunks_embedded == 0
    qa = Assistant.load(index, embedder=fake_embedder)
    answer = qa.ask("Sweden purchase of sex", k=10)
    assert all(p.source != "sweden.md" for p in answer.passages)
    assert "sweden.md" not in read_manifest(index).files


def test_identity_is_the_content_hash_a_renamed_file_is_not_embedded_again(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    (small_corpus / "tech.txt").rename(small_corpus / "technology.txt")
    s = build_index(small_corpus, index, embedder=fake_embedder)
    assert s.files_renamed == [{"from": "tech.txt", "to": "technology.txt"}] and s.chunks_embedded == 0
    data = load_index(index)
    assert {c.source for c in data.chunks} == {"page.html", "sweden.md", "technology.txt"}
    assert data.document_text("technology.txt").startswith("Technology and trafficking")


def test_skipped_files_are_reported_with_a_reason(small_corpus, tmp_path, fake_embedder):
    (small_corpus / "empty.txt").write_bytes(b"")
    (small_corpus / "blob.txt").write_bytes(b"\x00\x01\x02binary\x00" * 50)
    (small_corpus / "notes.docx").write_bytes(b"PK\x03\x04")
    (small_corpus / "z-copy.md").write_bytes((small_corpus / "sweden.md").read_bytes())
    s = build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    reasons = {d["path"]: d["reason"] for d in s.to_dict()["skipped"]}
    assert set(reasons) == {"empty.txt", "blob.txt", "notes.docx", "z-copy.md"}
    assert "empty" in reasons["empty.txt"]
    assert "binary" in reasons["blob.txt"]
    assert ".docx" in reasons["notes.docx"]
    assert "duplicate" in reasons["z-copy.md"]
    assert [x.to_dict() for x in read_manifest(tmp_path / "index").skipped] == s.skipped
    assert any(line.startswith("skipped: blob.txt") for line in s.lines())


def test_summary_shape(small_corpus, tmp_path, fake_embedder):
    d = build_index(small_corpus, tmp_path / "index", embedder=fake_embedder).to_dict()
    for key in ("files_added", "files_changed", "files_removed", "files_unchanged", "skipped", "chunks_total",
                "chunks_embedded"):
        assert key in d
    json.dumps(d)


def test_mismatched_model_or_chunking_asks_for_a_rebuild(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    with pytest.raises(IndexMismatch, match="--rebuild"):
        build_index(small_corpus, index, model="some-other-model")
    with pytest.raises(IndexMismatch, match="--rebuild"):
        build_index(small_corpus, index, embedder=fake_embedder, chunking=ChunkSettings(300, 30))
    s = build_index(small_corpus, index, embedder=fake_embedder, chunking=ChunkSettings(300, 30), rebuild=True)
    assert s.chunks_embedded == s.chunks_total
    assert read_manifest(index).chunking.to_dict() == {"chunk_size": 300, "chunk_overlap": 30}


def test_empty_or_missing_corpus_is_a_clear_error(tmp_path, fake_embedder):
    with pytest.raises(CorpusError, match="does not exist"):
        build_index(tmp_path / "nope", tmp_path / "index", embedder=fake_embedder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="No documents"):
        build_index(tmp_path / "empty", tmp_path / "index", embedder=fake_embedder)
    assert current_generation(tmp_path / "index") is None


def test_manifest_describes_the_index(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    s = build_index(small_corpus, index, embedder=fake_embedder)
    m = read_manifest(index).to_dict()  # the JSON as written
    assert m["format_version"] == 2 and m["model"] == {"name": "fake-hash-64", "dim": 64, "max_tokens": 256}
    assert m["counts"]["files"] == 3 and m["counts"]["chunks"] == s.chunks_total
    assert set(m["files"]["sweden.md"]) >= {"sha256", "bytes", "chunks", "format"}
    assert {"vectors.faiss", "chunks.jsonl", "documents.jsonl"} <= set(m["artifacts"])
    assert 0 < m["calibration"]["abstain_threshold"] < 1
    assert not list(index.rglob("*.pkl")) and not list(index.rglob("*.pickle"))


def test_publish_is_atomic_the_old_generation_stays_until_the_next(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    g1 = current_generation(index)
    (small_corpus / "new.txt").write_text("Shelters\nShelters offer beds and counselling to survivors.\n")
    build_index(small_corpus, index, embedder=fake_embedder)
    g2 = current_generation(index)
    assert g1 != g2 and g1.is_dir() and g2.is_dir()
    (small_corpus / "new.txt").unlink()
    killed = subprocess.run([sys.executable, "-m", "tests.crash_build", str(small_corpus), str(index), "save_vectors"],
                            cwd=ROOT, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [leftover] = [p for p in index.iterdir() if p.name.startswith(".tmp-g-")]  # what a killed build leaves behind
    build_index(small_corpus, index, embedder=fake_embedder)
    g3 = current_generation(index)
    assert not g1.exists() and g2.is_dir() and g3.is_dir() and not leftover.exists()
    assert (index / CURRENT).read_text().strip() == g3.name


def test_a_concurrent_build_is_refused(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    with write_lock(index), pytest.raises(IndexBusy, match="Wait"):
        build_index(small_corpus, index, embedder=fake_embedder)


@pytest.mark.parametrize("damage", ["flip", "truncate", "append", "delete", "manifest_version"])
def test_damaged_index_is_refused_with_a_rebuild_hint(small_corpus, tmp_path, fake_embedder, damage):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    gen = current_generation(index)
    vec = gen / VECTORS
    data = vec.read_bytes()
    if damage == "flip":
        vec.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        vec.write_bytes(data[: len(data) // 2])
    elif damage == "append":
        vec.write_bytes(data + b"junk")
    elif damage == "delete":
        (gen / "chunks.jsonl").unlink()
    else:
        m = json.loads((gen / MANIFEST).read_text())
        m["format_version"] = 99
        (gen / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(IndexCorrupt, match="rebuild"):
        Assistant.load(index, embedder=fake_embedder)


def test_no_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFound, match="tqa index"):
        Assistant.load(tmp_path / "missing")


def test_loaded_index_agrees_with_itself(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    data = load_index(index)
    assert data.vectors.ntotal == len(data.chunks) == data.manifest.counts.chunks


def test_rebuild_on_a_damaged_index_works(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    (current_generation(index) / VECTORS).write_bytes(b"garbage")
    with pytest.raises(IndexCorrupt, match="--rebuild"):
        build_index(small_corpus, index, embedder=fake_embedder)
    assert build_index(small_corpus, index, embedder=fake_embedder, rebuild=True).published
    Assistant.load(index, embedder=fake_embedder)


def test_paths_are_relative_to_the_corpus(small_corpus, tmp_path, fake_embedder):
    sub = small_corpus / "reports" / "2024"
    sub.mkdir(parents=True)
    (sub / "r.md").write_text("# Report\n\nA nested report about shelters.\n")
    build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    assert "reports/2024/r.md" in read_manifest(tmp_path / "index").files
    assert not Path("reports/2024/r.md").is_absolute()


def test_document_text_reads_each_document_from_its_own_line(small_corpus, tmp_path, fake_embedder):
    # multi-byte text before and inside a document: the offsets table counts bytes, not characters
    (small_corpus / "a-first.md").write_text("# Résumé\n\nSão Paulo — “quoted” 東京 text.\n", encoding="utf-8")
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    data = load_index(index)
    scanned = dict(data.documents())
    assert len(scanned) == 4
    for source, text in scanned.items():
        assert data.document_text(source) == text
    assert data.document_text("a-first.md").startswith("# Résumé")
    assert data.document_text("missing.md") is None


def test_context_finds_the_section_of_a_passage(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    qa = Assistant.load(index, embedder=fake_embedder)
    for c in qa.index.chunks:
        ctx = qa.context(c.source, c.start, c.end)
        assert ctx["source"] == c.source and ctx["start"] <= c.start and c.end <= ctx["end"]
        assert ctx["text"][ctx["passage_start"]:ctx["passage_end"]] == qa.index.document_text(c.source)[c.start:c.end]
    with pytest.raises(BadQuestion):
        qa.context("missing.md", 0, 10)
