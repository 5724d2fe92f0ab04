"""build_index in stages, each testable alone: plan, extract and chunk, embed, assemble, publish. The stages take and
return plain data, so stages 2 and 3 can run in another process (here, a spawned one) and hand their results to
assemble, giving the same index as build_index."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from tqa import build_index
from tqa.config import ChunkSettings
from tqa.indexing import (
    Embedded,
    Extracted,
    FileTask,
    Plan,
    Reuse,
    assemble,
    embed,
    extract_and_chunk,
    plan_build,
    publish_index,
)
from tqa.loaders import Skipped, discover
from tqa.store import load_index, write_lock

from .index_helpers import deadline
from .support import FakeEmbedder

CHUNKING = ChunkSettings(300, 30)


def plan_for(corpus: Path, index: Path, previous=None, **kw) -> Plan:
    return plan_build(corpus, index, discover(corpus, max_bytes=10_000), previous, model="fake-hash-64",
                      precision="fp32", chunking=CHUNKING, max_bytes=10_000, **kw)


def test_plan_decides_each_files_fate_in_corpus_order(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder, chunking=CHUNKING)
    previous = load_index(index).manifest
    (small_corpus / "sweden.md").rename(small_corpus / "nordic.md")  # renamed: the same content
    (small_corpus / "tech.txt").write_text("Technology\nTraffickers advertise jobs online.\n")  # changed
    (small_corpus / "zcopy.md").write_bytes((small_corpus / "nordic.md").read_bytes())  # a duplicate
    (small_corpus / "new.txt").write_text("Shelters\nShelters open at night.\n")  # added
    (small_corpus / "tool.exe").write_bytes(b"MZ")  # not a document
    (small_corpus / "big.txt").write_text("x" * 20_000)  # over the cap
    seen = []
    plan = plan_for(small_corpus, index, previous, on_progress=lambda *a: seen.append(a))
    fates = {f.source if not isinstance(f, Skipped) else f.path: f for f in plan.files}
    assert [f.source if not isinstance(f, Skipped) else f.path for f in plan.files] == sorted(fates)
    assert isinstance(fates["nordic.md"], Reuse) and fates["nordic.md"].previous_source == "sweden.md"
    assert isinstance(fates["page.html"], Reuse) and fates["page.html"].previous_source == "page.html"
    assert fates["page.html"].entry == previous.files["page.html"]
    assert isinstance(fates["zcopy.md"], Skipped) and "duplicate of" in fates["zcopy.md"].reason
    for source in ("tech.txt", "new.txt"):
        task = fates[source]
        assert isinstance(task, FileTask) and task.chunking == CHUNKING and task.max_bytes == 10_000
        assert Path(task.path) == small_corpus / source
    assert {s.path for s in plan.unlisted} == {"big.txt", "tool.exe"}
    assert [t.source for t in plan.tasks] == ["new.txt", "tech.txt"]
    assert plan.previous_sources == {"page.html", "sweden.md", "tech.txt"}
    assert seen and all(stage == "reading" for stage, _, _ in seen)


def test_extract_and_chunk_one_file(small_corpus, tmp_path):
    task = next(t for t in plan_for(small_corpus, tmp_path / "index").tasks if t.source == "sweden.md")
    assert FileTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task  # plain data, JSON and back
    out = extract_and_chunk(task)
    assert isinstance(out, Extracted) and out.source == "sweden.md" and out.sha256 == task.sha256
    assert out.size == (small_corpus / "sweden.md").stat().st_size
    (doc,) = out.documents
    assert doc.format == "md" and doc.chunks and all(doc.text[c.start:c.end] == c.text for c in doc.chunks)
    assert {c.section[-1] for c in doc.chunks} == {"Sweden", "Results"}
    assert Extracted.from_dict(json.loads(json.dumps(out.to_dict()))) == out
    (small_corpus / "sweden.md").write_bytes(b"")  # emptied after the plan read it
    assert extract_and_chunk(task) == Skipped("sweden.md", "empty file")
    (small_corpus / "sweden.md").unlink()
    assert extract_and_chunk(task) == Skipped("sweden.md", "vanished during indexing")


def test_embed_encodes_every_chunk_and_unit_in_one_pass(small_corpus, tmp_path):
    long = "\n\n".join(f"Paragraph {i} says shelters in region {i} need beds and staff." for i in range(4))
    (small_corpus / "long.md").write_text(f"# Long\n\n{long}\n")
    files = [extract_and_chunk(t) for t in plan_for(small_corpus, tmp_path / "index").tasks]
    emb = FakeEmbedder()
    out = embed(files, emb, batch_size=8)
    chunks = [c for f in files for c in f.chunks]
    units = [u for c in chunks for u in c.unit_search_texts()]
    assert units and emb.calls == [len(chunks) + len(units)]  # one call: the model batches across files
    assert [e.file for e in out] == files
    assert np.array_equal(np.vstack([e.vectors for e in out]), FakeEmbedder().encode([c.search_text for c in chunks]))
    assert np.array_equal(np.vstack([e.units for e in out]), FakeEmbedder().encode(units))
    again = Embedded.from_dict(json.loads(json.dumps(out[0].to_dict())))
    assert again.file == out[0].file and np.array_equal(again.vectors, out[0].vectors)
    assert np.array_equal(again.units, out[0].units) and again.units.shape[1] == emb.dim
    assert embed([], emb) == [] and emb.calls == [len(chunks) + len(units)]  # nothing to encode: no call


def test_assemble_keeps_corpus_order_and_reuses_the_previous_rows(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder, chunking=CHUNKING)
    previous = load_index(index)
    (small_corpus / "new.txt").write_text("Shelters\nShelters open at night.\n")
    plan = plan_for(small_corpus, index, previous.manifest)
    embedded = embed([extract_and_chunk(t) for t in plan.tasks], fake_embedder)
    new = assemble(plan, embedded, list(plan.unlisted), previous, fake_embedder)
    assert [c.source for c in new.chunks] == sorted(c.source for c in new.chunks)  # corpus order
    assert new.path is None and new.vectors.ntotal == len(new.chunks) == new.manifest.counts.chunks
    for source in ("page.html", "sweden.md", "tech.txt"):  # carried over, vectors and all
        rows, old_rows = new.rows_of(source), previous.rows_of(source)
        assert [new.chunks[int(i)] for i in rows] == [previous.chunks[int(i)] for i in old_rows]
        assert np.array_equal(new.vectors.take(rows), previous.vectors.take(old_rows))
        assert new.manifest.files[source] == previous.manifest.files[source]
    assert np.array_equal(new.vectors.take(new.rows_of("new.txt")), embedded[0].vectors)
    entry = new.manifest.files["new.txt"]
    assert entry.sha256 == embedded[0].file.sha256 and entry.chunks == len(embedded[0].file.chunks)
    assert new.manifest.calibration.abstain_threshold is not None and new.manifest.analyzer is not None


def test_publish_index_makes_the_assembled_index_live(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    plan = plan_for(small_corpus, index)
    embedded = embed([extract_and_chunk(t) for t in plan.tasks], fake_embedder)
    new = assemble(plan, embedded, [], None, fake_embedder)
    with write_lock(index):
        gen = publish_index(plan, new, embedded, None, fake_embedder)
    loaded = load_index(index)
    assert loaded.path == gen and loaded.chunks == new.chunks
    assert np.array_equal(loaded.vectors.vectors(), new.vectors.vectors())
    assert dict(loaded.documents()) == {d.source: d.text for e in embedded for d in e.file.documents}
    assert loaded.manifest.files == new.manifest.files and loaded.manifest.checksum is not None


def _remote(task_json: str) -> str:
    """What a worker elsewhere runs: stages 2 and 3 from JSON to JSON, with nothing from the caller's process."""
    from tests.support import FakeEmbedder as Model
    from tqa.indexing import FileTask, Skipped, embed, extract_and_chunk

    extracted = extract_and_chunk(FileTask.from_dict(json.loads(task_json)))
    if isinstance(extracted, Skipped):
        return json.dumps({"skipped": extracted.to_dict()})
    return json.dumps(embed([extracted], Model())[0].to_dict())


def test_stages_2_and_3_elsewhere_give_the_index_build_index_gives(small_corpus, tmp_path, fake_embedder):
    (small_corpus / "empty.md").write_bytes(b"")
    local = tmp_path / "local"
    build_index(small_corpus, local, embedder=fake_embedder, chunking=CHUNKING)
    plan = plan_for(small_corpus, tmp_path / "distributed")
    assert pickle.loads(pickle.dumps(plan)) == plan
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state shared with this one
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        results = [json.loads(r) for r in pool.map(_remote, [json.dumps(t.to_dict()) for t in plan.tasks])]
    skipped = list(plan.unlisted) + [Skipped(**r["skipped"]) for r in results if "skipped" in r]
    embedded = [Embedded.from_dict(r) for r in results if "skipped" not in r]
    new = assemble(plan, embedded, skipped, None, fake_embedder)
    with write_lock(plan.index_dir):
        publish_index(plan, new, embedded, None, fake_embedder)
    a, b = load_index(local), load_index(plan.index_dir)
    assert a.chunks == b.chunks and np.array_equal(a.vectors.vectors(), b.vectors.vectors())
    assert np.array_equal(a.units.vectors(), b.units.vectors()) and dict(a.documents()) == dict(b.documents())
    different = {"created", "corpus_relative", "artifacts", "manifest_sha256"}  # when and where it was written
    assert {k: v for k, v in a.manifest.to_dict().items() if k not in different} == \
        {k: v for k, v in b.manifest.to_dict().items() if k not in different}
    assert [s.path for s in b.manifest.skipped] == ["empty.md"]


def test_a_file_that_became_a_fifo_before_extraction_is_skipped_not_waited_on(small_corpus, tmp_path):
    task = plan_for(small_corpus, tmp_path / "index").tasks[0]
    os.unlink(task.path)
    os.mkfifo(task.path)
    with deadline():
        result = extract_and_chunk(task)
    assert result == Skipped(task.source, "not a regular file")


# ---------------------------------------------------------------- the vectors a build holds


def test_stacking_consecutive_blocks_of_one_array_copies_nothing():
    from tqa.indexing import _stack

    encoded = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    blocks = [encoded[0:5], encoded[5:5], encoded[5:17], encoded[17:40]]  # as ``embed`` hands them out
    joined = _stack(blocks, 4)
    assert np.array_equal(joined, encoded) and np.shares_memory(joined, encoded)
    assert np.shares_memory(_stack([encoded[3:9], encoded[9:12]], 4), encoded)
    for other in ([encoded[0:5], encoded[6:10]],  # a gap
                  [encoded[5:10], encoded[0:5]],  # out of order
                  [encoded[0:5], np.ones((3, 4), np.float32)],  # another array
                  [encoded[:, :2], encoded[:, 2:]]):  # not whole rows
        want = np.vstack([b for b in other if len(b)])
        got = _stack(other, want.shape[1])
        assert np.array_equal(got, want) and not np.shares_memory(got, encoded)
    assert _stack([encoded[0:0]], 4).shape == (0, 4)


def test_a_new_vector_index_is_built_from_the_vectors_given_not_a_copy(monkeypatch):
    import tqa.vectors as vectors

    seen = []
    real = vectors.build_vectors
    monkeypatch.setattr(vectors, "build_vectors", lambda v, dim, **kw: seen.append(v) or real(v, dim, **kw))
    added = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    built = vectors.update_vectors(None, np.full(50, -1), added, 8)
    assert np.shares_memory(seen[0], added) and np.allclose(built.take(np.arange(50)), added)


def test_build_index_lets_go_of_the_embedded_vectors_before_publishing(small_corpus, tmp_path, fake_embedder,
                                                                       monkeypatch):
    import weakref

    import tqa.indexing as indexing

    refs, alive = [], []
    real_embed, real_publish = indexing.embed, indexing.publish

    def embed(*a, **kw):
        out = real_embed(*a, **kw)
        refs.extend(weakref.ref(e.vectors.base if e.vectors.base is not None else e.vectors) for e in out)
        return out

    def publish(*a, **kw):
        alive.append(sum(r() is not None for r in refs))
        return real_publish(*a, **kw)

    monkeypatch.setattr(indexing, "embed", embed)
    monkeypatch.setattr(indexing, "publish", publish)
    summary = build_index(small_corpus, tmp_path / "index", embedder=fake_embedder, chunking=CHUNKING)
    assert refs and alive == [0] and summary.chunks_embedded == summary.chunks_total > 0
    assert len(load_index(tmp_path / "index").chunks) == summary.chunks_total
