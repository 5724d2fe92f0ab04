"""The benchmark's building blocks work (no timings: bench/run.py measures, tests only check correctness)."""

from __future__ import annotations

import threading
import time

import numpy as np

from bench.run import recall, rotated, without_encoder
from bench.synthetic import documents, held_out_queries, synthetic_index, synthetic_keywords
from tqa import Assistant
from tqa.config import Settings
from tqa.keywords import KeywordIndex
from tqa.manifest import ENCODER_FILES
from tqa.store import current_generation, load_index, publish, write_lock

from .support import FakeEmbedder

TEXTS = [
    "Sweden criminalises the purchase of sex. The law took effect in 1999.",
    "Traffickers use social media to recruit victims. Payments move through cryptocurrencies.",
    "NGOs train police officers to recognise victims of trafficking.",
    "Many countries lack funding for shelters and support services.",
    "Data analytics helps identify trafficking patterns across borders.",
    "The Palermo Protocol outlines responsibilities for countries.",
]


def test_synthetic_index_answers_publishes_and_loads(tmp_path):
    emb = FakeEmbedder()
    base = emb.encode(TEXTS)
    data, facts = synthetic_index(400, TEXTS, base, emb)
    assert len(data.chunks) == 400 and data.vectors.ntotal == 400
    assert data.units.ntotal == facts["units"] == 200 and int(data.unit_ptr[-1]) == 200  # every fourth: 2 units
    assert facts["vector_matrix"].shape == (400, emb.dim)
    assert np.allclose(np.linalg.norm(facts["vector_matrix"], axis=1), 1, atol=1e-5)
    texts = dict(documents(data))
    assert all(texts[c.source][c.start:c.end] == c.text for c in data.chunks)  # offsets are consistent
    assert all(c.text[a:b].strip() for c in data.chunks for a, b in c.units)

    qa = Assistant(data, emb, Settings())
    ans = qa.ask("How do traffickers recruit victims?", k=3)
    assert len(ans.passages) == 3 and "recruit" in ans.passages[0].text

    with write_lock(tmp_path / "index"):
        publish(tmp_path / "index", data, documents(data))
    loaded = load_index(tmp_path / "index")
    assert len(loaded.chunks) == 400 and loaded.manifest.counts.units == 200


def test_held_out_queries_are_new_normalised_vectors():
    base = FakeEmbedder().encode(TEXTS)
    q = held_out_queries(base, 20)
    assert q.shape == (20, base.shape[1]) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)


def test_helpers():
    assert rotated([1, 2, 3], 1) == [2, 3, 1] and rotated([1, 2, 3], 4) == [2, 3, 1]
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall([np.array([1, 2, 9, 9]), np.array([5, 6, 7, 8])], truth, 4) == 0.75


def test_without_encoder_copies_an_index_as_an_older_tqa_built_it(tmp_path):
    emb = FakeEmbedder()
    base = emb.encode(TEXTS)
    data, _ = synthetic_index(40, TEXTS, base, emb)
    index = tmp_path / "index"
    assert without_encoder(index, tmp_path / "none") is None  # no index yet

    def encoder(folder):  # the whole optional group: the store accepts all three files or none
        (folder / "encoder").mkdir()
        for name in ENCODER_FILES:
            (folder / "encoder" / name).write_bytes(b"graph")

    with write_lock(index):
        publish(index, data, documents(data), extra=encoder)
    assert "encoder/model.onnx" in load_index(index).manifest.artifacts
    copy = without_encoder(index, tmp_path / "copy")
    assert copy is not None
    loaded = load_index(copy)  # every remaining artifact still checks out
    assert not any(a.startswith("encoder/") for a in loaded.manifest.artifacts)
    assert not (current_generation(copy) / "encoder").exists()
    assert (current_generation(index) / "encoder" / "model.onnx").is_file()  # the original is untouched
    assert without_encoder(copy, tmp_path / "again") is None


def test_the_ocr_benchmark_measures_every_configuration_against_its_baseline(tmp_path, monkeypatch):
    from bench.ocr import measure, scanned_pdf, table
    from tqa.loaders.ocr import OcrSettings

    from .test_format_index import fake_tesseract, only_on_path

    only_on_path(monkeypatch, fake_tesseract(tmp_path / "bin", "Read from the scan."))
    data, pages = scanned_pdf(2)
    assert pages == 2
    configs = {"one": OcrSettings(workers=1, languages="eng", dpi=50),
               "two": OcrSettings(workers=2, languages="eng", dpi=50)}
    rows = measure(data, pages, configs, rounds=2)
    assert [r["configuration"] for r in rows] == ["one", "two"] and rows[0]["ratio"] == 1.0
    assert all(r["chars"] == len("Read from the scan.\n\nRead from the scan.") for r in rows)
    out = table(rows, pages, 2, 2)
    assert out.count("\n| ") == 3 and "| one | " in out


def test_synthetic_keywords_are_the_index_of_the_rows_terms():
    texts = [*TEXTS, "", "the of and"]  # passages with no terms too
    tokens = [KeywordIndex.analyze(t) for t in texts]
    rng = np.random.default_rng(3)
    a = rng.integers(1, len(texts), 500)  # (passage 0 only as a second paragraph, passage 1 in no row)
    a[a == 1] = 2
    b = np.where(np.arange(500) % 3 == 0, rng.integers(0, len(texts), 500), -1)
    b[b == 1] = 0
    b[1] = a[1]  # a row holding the same passage twice
    made = synthetic_keywords(tokens, a, b)
    own = [t or ["\u2205"] for t in tokens]  # (a passage with no terms holds the empty mark, as bm25s wants)
    full = KeywordIndex.from_terms([own[a[j]] + (own[b[j]] if b[j] >= 0 else []) for j in range(500)])
    assert made.size == full.size == 500
    for q in ["traffickers recruit victims", "police police", "law 1999 sweden", "funding shelters data", "zzz"]:
        s1, r1 = made.search(q, 200)
        s2, r2 = full.search(q, 200)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(s1, s2)


def test_keyword_bench_measures_the_keyword_index_of_the_synthetic_index():
    from bench.keywords import keyword_index, measure

    emb = FakeEmbedder()
    data, _ = synthetic_index(60, TEXTS, emb.encode(TEXTS), emb)
    index = keyword_index(60, TEXTS)
    for q in ["traffickers recruit victims", "police funding", "Palermo Protocol countries"]:
        for got, want in zip(index.search(q, 50), data.keywords.search(q, 50), strict=True):
            np.testing.assert_array_equal(got, want)
    out = measure(index, emb, ["police shelters", "recruit"], rounds=1)
    assert out["search_ms"]["p50"] > 0 and out["encode_ms"]["p50"] > 0
    assert out["postings_per_question"]["p50"] > 0


def test_compressed_bench_bm25_part_measures_both_loads(tmp_path):
    from bench.compressed import bm25_mapped

    out = bm25_mapped(TEXTS, ["traffickers recruit", "shelters funding"], tmp_path, rounds=1)
    assert out["passages"] == len(TEXTS) and out["search_ratio"] > 0
    assert set(out) >= {"mapped", "in_memory"} and out["mapped"]["load_ms"] > 0


def test_update_bench_records_each_stages_time_and_memory(small_corpus, tmp_path):
    import tqa.indexing
    from bench.update import instrument, render
    from tqa.indexing import build_index

    keywords = tqa.indexing.KeywordIndex  # (instrument replaces it with a timed subclass)
    stages = instrument()
    try:
        with stages.measuring() as seconds:
            summary = build_index(small_corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
        rss = dict(stages.rss)
    finally:
        stages.close()
        tqa.indexing.KeywordIndex = keywords
    assert summary.published and seconds["assemble (total)"] > 0 and seconds["publish"] > 0
    assert all(v > 0 for v in rss.values()) and set(rss) <= set(seconds) | {"(between stages)"}
    full = {"wall_s": 1.0, "texts": 10, "embed_real_s": 1.0, "cost_s": 2.0, "chunks": summary.chunks_total,
            "stages": seconds, "rss_mib": rss}
    text = render({"files": 1, "per_file": 1, "rate": 10.0, "ops": {"full build": [full]}})
    assert "largest resident set" in text


def test_exact_top_fed_by_blocks_is_the_exact_top_of_all_rows_within_its_filter():
    from bench.scale import DEPTH, ExactTop

    rng = np.random.default_rng(1)
    x, q = rng.standard_normal((1000, 8)).astype(np.float32), rng.standard_normal((5, 8)).astype(np.float32)
    allowed_docs = rng.random(1000 // 10) < 0.3
    tops = [ExactTop(q), ExactTop(q, allowed_docs, per_doc=10)]
    for s in range(0, 1000, 64):  # blocks of another size than a document's
        for t in tops:
            t.add(s, x[s:s + 64])
    scores = q @ x.T
    assert np.array_equal(tops[0].rows, np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH])
    scores[:, ~np.repeat(allowed_docs, 10)] = -np.inf
    assert np.array_equal(tops[1].rows, np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH])
    assert allowed_docs[tops[1].rows // 10].all()


def test_scale_bench_publishes_the_index_synthetic_index_makes_of_the_same_draws(tmp_path):
    """bench/scale.py builds a block at a time what synthetic_index builds in memory: the same chunks, documents,
    keyword index and (as float16) vectors, compressed; its exact tops are those of those vectors."""
    from bench.scale import build
    from bench.synthetic import synthetic_index

    emb = FakeEmbedder()
    base = emb.encode(TEXTS)
    qv, held = emb.encode(["victims", "police training"]), held_out_queries(base, 3)
    built = build(2000, tmp_path, emb, TEXTS, base, qv, held, log=lambda _: None)
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name == "bench-rss"]  # its sampling stopped with it
    loaded = load_index(tmp_path / "index")
    data, facts = synthetic_index(2000, TEXTS, base, emb)
    assert built["vector_index"]["type"].endswith("IndexIVFPQFastScan") and loaded.vectors.kind == "compressed"
    assert list(loaded.chunks) == list(data.chunks) and dict(loaded.documents()) == dict(documents(data))
    assert loaded.manifest.counts == data.manifest.counts and loaded.manifest.files == data.manifest.files
    for mine, theirs in ((loaded.vectors, facts["vector_matrix"]), (loaded.units, facts["unit_matrix"])):
        assert np.array_equal(mine.vectors(), theirs.astype(np.float16).astype(np.float32))
    for q in ("victims of trafficking", "Palermo Protocol"):
        (r1, s1), (r2, s2) = loaded.keywords.search(q, 20), data.keywords.search(q, 20)
        assert len(r1) and np.array_equal(r1, r2) and np.array_equal(s1, s2)
    exact = np.argsort(-(held @ facts["vector_matrix"].T), axis=1, kind="stable")[:, :50]
    assert np.array_equal(built["_tops"]["vectors"]["held-out"].rows, exact)
    fifth = set(built["_fifth"])
    filtered = built["_tops"]["vectors"]["questions, a fifth of the documents"].rows.ravel()
    assert 0 < len(fifth) < 40 and all(loaded.chunks[int(r)].source in fifth for r in filtered)


def test_run_scale_hands_over_to_the_ten_million_chunk_bench(monkeypatch):
    """`make bench SCALE=1` runs `bench/run.py --scale`, which is bench/scale.py with the same BEIR folder."""
    import bench.run
    import bench.scale

    seen = []
    monkeypatch.setattr(bench.scale, "main", lambda argv: seen.append(argv) or 0)
    assert bench.run.main(["--scale", "--beir", "/data/beir", "--json", "out.json"]) == 0
    assert seen == [["--beir", "/data/beir", "--json", "out.json"]]
