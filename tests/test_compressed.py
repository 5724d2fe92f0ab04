"""The compressed vector index (vectors.CompressedVectors): recall against exact search, exact re-ranking from stored
float16 rows read from their file as asked when loaded, filtered search, when an update may keep the training,
refusal of damaged or mismatched files, and the whole build above a lowered threshold (TQA_COMPRESS_ABOVE): the same top
passage as an uncompressed build, updates by one file, source filters, ``tqa info``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tqa.integrity as integrity
import tqa.vectors as vectors
from tqa import Assistant, build_index
from tqa.cli import main
from tqa.config import ChunkSettings, Settings
from tqa.errors import IndexCorrupt, SettingsError
from tqa.manifest import UNITS_STORED, VECTORS_STORED
from tqa.store import current_generation, load_index, read_manifest
from tqa.vectors import CompressedVectors, FaissVectors, StoredVectors, build_vectors, load_vectors

from .support import FakeEmbedder
from .test_vector_index import clustered, exact_top


def f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, CompressedVectors]:
    x, queries = clustered(5000, dim=48)
    v = build_vectors(x, 48, compress_above=1000)
    assert isinstance(v, CompressedVectors)
    return x, queries, v


def test_recall_at_10_against_exact_search(data):
    x, queries, v = data
    recall = np.mean([len(set(v.search(q, 10)[1].tolist()) & exact_top(x, q, 10)) / 10 for q in queries])
    assert recall >= 0.95


def test_scores_are_exact_for_the_stored_rows_best_first(data):
    x, queries, v = data
    for q in queries[:10]:
        scores, rows = v.search(q, 10)
        assert len(rows) == 10 and len(set(rows.tolist())) == 10
        assert np.allclose(scores, f16(x[rows]) @ q, atol=1e-6)
        assert np.all(np.diff(scores) <= 0)


def test_of_rows_codes_float16_rows_memory_mapped_as_a_build_of_their_values(data, tmp_path):
    """An index too big for memory is coded from its float16 rows on disk: the same index as one built from the
    same values in memory, its rows left mapped (not copied), and anything but float16 rows refused."""
    x, queries, _ = data
    np.save(tmp_path / "rows.npy", x.astype(np.float16))
    rows = np.load(tmp_path / "rows.npy", mmap_mode="r")
    mapped = CompressedVectors.of_rows(rows)
    assert mapped.store.mapped and mapped.ntotal == len(x)
    built = CompressedVectors.build(f16(x), 48)
    assert mapped.to_bytes() == built.to_bytes()
    for q in queries[:10]:
        assert np.array_equal(mapped.search(q, 10)[1], built.search(q, 10)[1])
    with pytest.raises(ValueError, match="float16"):
        CompressedVectors.of_rows(x)


def test_threshold_decides_the_kind():
    x, _ = clustered(2000, dim=48)
    assert isinstance(build_vectors(x, 48, compress_above=2000), FaissVectors)  # not above: unchanged
    assert isinstance(build_vectors(x, 48, compress_above=1999), CompressedVectors)
    # too few vectors to train codes: the exact index, whatever the threshold
    few = build_vectors(x[:vectors.PQ_MIN_VECTORS - 1], 48, compress_above=0)
    assert isinstance(few, FaissVectors) and few.kind == "flat"
    assert isinstance(build_vectors(x[:0], 48, compress_above=0), FaissVectors)


def test_threshold_setting_is_checked(monkeypatch):
    assert Settings().compress_above == vectors.COMPRESS_ABOVE == 2_000_000
    monkeypatch.setenv("TQA_COMPRESS_ABOVE", "700")
    assert Settings.from_env().compress_above == 700
    for bad in ("-1", "many"):
        monkeypatch.setenv("TQA_COMPRESS_ABOVE", bad)
        with pytest.raises(SettingsError, match="TQA_COMPRESS_ABOVE"):
            Settings.from_env()


def test_saved_rows_are_read_on_demand_when_checked_and_read_back(data, tmp_path: Path):
    """Rows read through block checks stay in their file, read as asked (each read checked, the file's size with
    it); without checks (a small file, verified whole at load) they are read into memory, which no truncation of
    the file can affect."""
    x, queries, v = data
    v.save(tmp_path / "v.faiss")
    assert (tmp_path / "v.f16.npy").stat().st_size > 5000 * 48 * 2
    read: list[int] = []
    w = load_vectors(tmp_path / "v.faiss", v.describe(), check=lambda offsets, lengths: read.append(len(offsets)))
    assert isinstance(w, CompressedVectors) and w.store.mapped and not v.store.mapped
    whole = load_vectors(tmp_path / "v.faiss", v.describe())
    assert isinstance(whole, CompressedVectors) and not whole.store.mapped
    assert np.array_equal(whole.take(np.arange(50)), w.take(np.arange(50))) and read
    assert w.describe() == v.describe()
    rows = np.array([4999, 0, 17, 17, 2500])
    assert np.array_equal(w.take(rows), f16(x[rows]))
    for q in queries[:5]:
        assert [a.tolist() for a in w.search(q, 10)] == [a.tolist() for a in v.search(q, 10)]


def mapped_files() -> set[str]:
    return {line.split(maxsplit=5)[5].strip() for line in Path("/proc/self/maps").read_text().splitlines()
            if len(line.split(maxsplit=5)) == 6}


def test_rows_on_demand_are_read_not_mapped_and_each_read_is_checked(data, tmp_path: Path):
    """A loaded store maps none of its file: pages of a mapping count as the answering process's memory (a 10M
    index answering 142 questions held 4.4 GiB of them: each row read mapped its neighbours too), pages read are
    the system's cache. Rows come back exact in any order, repeated, in runs and alone, and the checks are asked
    for exactly the bytes read."""
    x, queries, v = data
    v.save(tmp_path / "v.faiss")
    asked: list[tuple[int, int]] = []
    w = load_vectors(tmp_path / "v.faiss", v.describe(),
                     check=lambda offsets, lengths: asked.extend(zip(offsets.tolist(), lengths.tolist(),
                                                                        strict=True)))
    assert isinstance(w, CompressedVectors)
    for q in queries[:5]:
        w.search(q, 10)
    assert str(tmp_path / "v.f16.npy") not in mapped_files()
    rng = np.random.default_rng(3)
    for rows in (np.arange(5000), np.arange(100, 300), rng.integers(0, 5000, 700), np.array([4999, 4998, 0, 0, 1]),
                 np.zeros(0, dtype=np.int64)):
        asked.clear()
        assert np.array_equal(w.take(rows), f16(x[rows]).reshape(len(rows), 48))
        start = w.store._offset
        covered = sorted(set(rows.tolist()))
        assert sorted(asked) == sorted((start + r * 96, 96) for r in covered) or \
            {(o - start) // 96 + i for o, n in asked for i in range(n // 96)} == set(covered)
    with pytest.raises(IndexError):
        w.take(np.array([5000]))


def test_rows_read_on_demand_are_written_again_as_the_same_file(data, tmp_path: Path, monkeypatch):
    """A loaded index saved again (a publish that keeps its vectors) writes its rows from the file it reads, a
    buffer at a time, byte for byte the file it was loaded from, every read checked."""
    x, queries, v = data
    v.save(tmp_path / "v.faiss")
    asked: list[int] = []
    w = load_vectors(tmp_path / "v.faiss", v.describe(), check=lambda offsets, lengths: asked.append(len(offsets)))
    assert isinstance(w, CompressedVectors) and w.store.mapped
    monkeypatch.setattr(StoredVectors, "RUN_BYTES", 96 * 700)  # (several buffers, the last one short)
    (tmp_path / "again").mkdir()
    w.save(tmp_path / "again" / "v.faiss")
    assert (tmp_path / "again" / "v.f16.npy").read_bytes() == (tmp_path / "v.f16.npy").read_bytes()
    assert len(asked) >= 8


def test_stored_rows_are_float32_bit_for_bit_as_numpy_converts_them(tmp_path: Path):
    """Rows taken from the store, in memory or read from its file, in any order and repeated, are numpy's float32
    of their float16 values bit for bit, for every one of the 65,536 float16 values (subnormals, signed zeros,
    infinities; a NaN stays a NaN): the scores a question gets do not depend on how the rows were converted."""
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(-1, 64)
    expected = halves.astype(np.float32)
    memory = StoredVectors(halves)
    memory.write(tmp_path / "all.f16.npy")
    on_file = StoredVectors.open(tmp_path / "all.f16.npy", check=lambda offsets, lengths: None)
    assert on_file.mapped and memory._array is not None
    rng = np.random.default_rng(5)
    for rows in (np.arange(len(halves)), rng.integers(0, len(halves), 3000), np.array([7, 7, 0, 1023, 7])):
        for store in (memory, on_file):
            got = store.take(rows)
            assert got.dtype == np.float32 and got.shape == (len(rows), 64)
            want = expected[rows]
            nan = np.isnan(want)
            assert np.array_equal(np.isnan(got), nan)
            assert np.array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])


def test_rows_of_a_file_cut_short_after_loading_are_refused_not_invented(data, tmp_path: Path):
    """A stored-rows file truncated under a loaded index (checks that let it through, as a check already passed
    would) is refused with the rebuild hint when a row past its new end is read, never answered from zeros or
    killed by a signal."""
    x, queries, v = data
    v.save(tmp_path / "v.faiss")
    w = load_vectors(tmp_path / "v.faiss", v.describe(), check=lambda offsets, lengths: None)
    path = tmp_path / "v.f16.npy"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 96 * 10)
    assert np.array_equal(w.take(np.arange(10)), f16(x[:10]))
    with pytest.raises(IndexCorrupt, match="rebuild|Rebuild"):
        w.take(np.array([1, 4995]))


@pytest.mark.parametrize("share", [0.01, 0.5])  # the exact path for few rows, the selector path for many
def test_filtered_search_returns_only_allowed_rows(data, share, monkeypatch):
    monkeypatch.setattr(vectors, "FILTER_EXACT_MAX", 200)
    x, queries, v = data
    allowed = np.sort(np.random.default_rng(3).choice(len(x), int(len(x) * share), replace=False))
    recalls = []
    for q in queries[:20]:
        scores, rows = v.search(q, 10, allowed)
        assert len(rows) == 10 and set(rows.tolist()) <= set(allowed.tolist())
        assert np.allclose(scores, f16(x[rows]) @ q, atol=1e-6)
        recalls.append(len(set(rows.tolist()) & exact_top(x, q, 10, allowed)) / 10)
    assert np.mean(recalls) >= 0.95
    assert v.search(queries[0], 10, np.array([3, 7]))[1].tolist() in ([3, 7], [7, 3])
    assert len(v.search(queries[0], 10, np.zeros(0, dtype=np.int64))[1]) == 0


def test_an_update_keeps_the_training_only_while_it_serves(data):
    """``update_vectors`` changes a trained index in place only while a fresh training would choose about as many
    lists (``RETRAIN_FACTOR``); four times the vectors want twice the lists: trained again."""
    x, _, v = data
    assert vectors._spliceable(v, 4900, compress_above=0)
    assert not vectors._spliceable(v, 20000, compress_above=0)
    assert vectors.pq_settings(20000)[0] != v.nlist
    assert not vectors._spliceable(v, 4900, compress_above=10_000)  # no longer compressed: built anew


def test_mismatched_or_damaged_files_are_refused(data, tmp_path: Path):
    x, _, v = data
    v.save(tmp_path / "v.faiss")
    FaissVectors.build(x, 48).save(tmp_path / "flat.faiss")
    with pytest.raises(IndexCorrupt, match="cannot be read"):  # codes read as an uncompressed index
        FaissVectors.load(tmp_path / "v.faiss")
    shutil.copy(tmp_path / "v.f16.npy", tmp_path / "flat.f16.npy")
    with pytest.raises(IndexCorrupt, match="cannot be read"):  # an uncompressed index read as codes
        CompressedVectors.load(tmp_path / "flat.faiss")
    (tmp_path / "v.f16.npy").unlink()
    with pytest.raises(IndexCorrupt, match="cannot be read"):
        CompressedVectors.load(tmp_path / "v.faiss")
    np.save(tmp_path / "v.f16.npy", x.astype(np.float32))
    with pytest.raises(IndexCorrupt, match="float16"):
        CompressedVectors.load(tmp_path / "v.faiss")
    (tmp_path / "v.f16.npy").unlink()
    StoredVectors.of(x[:10]).write(tmp_path / "v.f16.npy")
    with pytest.raises(IndexCorrupt):  # as many stored rows as codes
        CompressedVectors.load(tmp_path / "v.faiss")


# ---------------------------------------------------------------- the whole build, threshold lowered


WORDS = ["harbour", "lantern", "meadow", "quarry", "saddle", "thimble", "walnut", "beacon", "cinder", "drizzle",
         "ember", "falcon", "glacier", "hazel", "island", "juniper", "kettle", "lagoon", "marble", "nectar"]


def write_corpus(root: Path, files: int = 56, paragraphs: int = 45) -> Path:
    """Files of short paragraphs, each naming its own code word, so a question about one has one answer."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for f in range(files):
        paras = []
        for p in range(paragraphs):
            common = " ".join(rng.choice(WORDS, 6))
            paras.append(f"Record zq{f}x{p} tells of the {common} near the old {WORDS[(f + p) % 20]}.")
        (root / f"doc{f:02d}.txt").write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return root


SMALL_CHUNKS = ChunkSettings(chunk_size=300, chunk_overlap=0)  # two or three paragraphs (units) a chunk


def build(corpus: Path, index: Path, embedder: FakeEmbedder, compress_above: int) -> None:
    build_index(corpus, index, embedder=embedder, chunking=SMALL_CHUNKS,
                settings=Settings(compress_above=compress_above, chunking=SMALL_CHUNKS))


def build_by_blocks(corpus: Path, index: Path, compress_above: int, *, inverted_file: bool = False) -> None:
    """``build`` with sizes lowered so that a small index is checked as a big one is: every block-checked file gets
    block digests, in blocks of 1 KiB; with ``inverted_file`` its vectors are an inverted file (from 64)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(integrity, "BIG_BYTES", 1)
        mp.setattr(integrity, "BLOCK_BYTES", 1024)
        mp.setattr(integrity, "ROW_BLOCK_BYTES", 1024)
        if inverted_file:
            mp.setattr(vectors, "EXACT_MAX", 40)
            mp.setattr(vectors, "IVF_MIN_VECTORS", 64)
        build(corpus, index, FakeEmbedder(), compress_above)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("compressed")
    corpus = write_corpus(root / "corpus")
    build(corpus, root / "plain", FakeEmbedder(), compress_above=vectors.COMPRESS_ABOVE)
    build(corpus, root / "small", FakeEmbedder(), compress_above=700)
    return corpus, root / "plain", root / "small"


def test_a_build_above_the_threshold_is_compressed_and_recorded(built, capsys):
    _, plain, small = built
    m, p = read_manifest(small), read_manifest(plain)
    assert m.counts.chunks == p.counts.chunks > 700
    info = m.vector_index
    assert info.compressed and info.type == "faiss.IndexIVFPQFastScan" and info.code_bytes and info.rerank_depth
    assert info.units is not None and info.units.compressed
    assert {VECTORS_STORED, UNITS_STORED} <= set(m.artifacts)
    assert not p.vector_index.compressed and not ({VECTORS_STORED, UNITS_STORED} & set(p.artifacts))
    gen = current_generation(small)
    assert gen is not None and (gen / VECTORS_STORED).is_file() and (gen / UNITS_STORED).is_file()
    with load_index(small) as index:  # (its rows are small files, verified whole at load and held in memory)
        assert isinstance(index.vectors, CompressedVectors) and not index.vectors.store.mapped
        assert index.vectors.ntotal == len(index.chunks)
    assert main(["info", "--index", str(small)]) == 0
    out = capsys.readouterr().out
    assert "faiss.IndexIVFPQFastScan" in out and "float16" in out


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_answers_match_an_uncompressed_build(built, mode):
    """The same top passage for every question (measured: the same five passages too, in every mode)."""
    _, plain, small = built
    a, b = Assistant.load(plain, embedder=FakeEmbedder()), Assistant.load(small, embedder=FakeEmbedder())
    questions = [f"zq{f}x{p}" for f in range(0, 56, 5) for p in range(0, 45, 11)]
    overlap = []
    for q in questions:
        pa, pb = a.ask(q, mode=mode).passages, b.ask(q, mode=mode).passages
        assert pa and pb and (pa[0].source, pa[0].start) == (pb[0].source, pb[0].start)
        if mode == "bm25":
            assert f"Record {q} " in pb[0].text  # the one paragraph that names it
        overlap.append(len({(p.source, p.start) for p in pa} & {(p.source, p.start) for p in pb}) / len(pa))
    assert np.mean(overlap) >= 0.9


def test_source_filter_on_a_compressed_index(built):
    _, _, small = built
    b = Assistant.load(small, embedder=FakeEmbedder())
    for mode in ("hybrid", "dense"):
        hit = b.ask("zq5x4 old walnut", mode=mode, sources=["doc05.txt", "doc09.txt"]).passages
        assert hit and {p.source for p in hit} <= {"doc05.txt", "doc09.txt"}
    assert "Record zq5x4 " in b.ask("zq5x4", mode="bm25", sources=["doc05.txt"]).passages[0].text


def test_an_update_by_one_file_stays_compressed(built, tmp_path: Path):
    corpus, _, small = built
    corpus = shutil.copytree(corpus, tmp_path / "corpus")
    index = shutil.copytree(small, tmp_path / "index", symlinks=True)
    build(corpus, index, FakeEmbedder(), compress_above=700)  # (the corpus moved: same content, nothing embedded)
    before = read_manifest(index)
    (corpus / "doc03.txt").write_text("Record zqnew tells of a brand new lighthouse.\n\n" * 3, encoding="utf-8")
    (corpus / "doc04.txt").unlink()
    embedder = FakeEmbedder()
    build(corpus, index, embedder, compress_above=700)
    after = read_manifest(index)
    assert 0 < embedder.calls[0] < 20  # the changed file's chunks and units only (then a few probe questions)
    assert after.vector_index.compressed and after.vector_index.nlist == before.vector_index.nlist
    with load_index(index) as data:
        assert data.vectors.ntotal == len(data.chunks) == after.counts.chunks
        assert data.units.ntotal == int(data.unit_ptr[-1])
    ask = Assistant.load(index, embedder=FakeEmbedder())
    top = ask.ask("brand new lighthouse zqnew").passages
    assert top and top[0].source == "doc03.txt"
    assert all(p.source != "doc04.txt" for p in ask.ask("What does record zq4x3 tell?").passages)
    assert "Record zq7x3 " in ask.ask("What does record zq7x3 tell?").passages[0].text


def test_a_manifest_that_disowns_its_stored_rows_is_refused(built, tmp_path: Path):
    _, _, small = built
    index = shutil.copytree(small, tmp_path / "index", symlinks=True)
    gen = current_generation(index)
    assert gen is not None
    d = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
    del d["vector_index"]["stored"]
    from tqa.manifest import manifest_digest

    d["manifest_sha256"] = manifest_digest(d)
    (gen / "manifest.json").write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(IndexCorrupt, match="stored vector rows"):
        load_index(index)


def test_keyword_postings_are_memory_mapped_when_loaded_if_checked_by_blocks(built, tmp_path, monkeypatch):
    """Postings checked by blocks (from integrity.BIG_BYTES) are mapped, each read checked; smaller ones, verified
    whole at load, are read into memory, where no file truncated under the reader can pull pages away."""
    import tqa.integrity as integrity

    corpus, plain, _ = built
    with load_index(plain) as index:
        assert not index.keywords.mapped
        scores, rows = index.keywords.search("zq5x4", 3)
        assert len(rows) and "Record zq5x4 " in index.chunks[int(rows[0])].text
    monkeypatch.setattr(integrity, "BIG_BYTES", 1)
    build(corpus, tmp_path / "big", FakeEmbedder(), compress_above=vectors.COMPRESS_ABOVE)
    with load_index(tmp_path / "big") as index:
        assert index.keywords.mapped
        assert np.array_equal(index.keywords.search("zq5x4", 3)[1], rows)
    from tqa.keywords import KeywordIndex

    assert not KeywordIndex.build(["a built index is held in memory"]).mapped


def test_tuning_a_compressed_index_keeps_it_compressed(built, tmp_path):
    from tqa.tuning import tune_index

    from .tune_fakes import Loader, Trainer

    _, _, small = built
    index = tmp_path / "index"
    shutil.copytree(small, index)
    result = tune_index(index, use_questions=False, trainer=Trainer(), load=Loader(),
                        settings=Settings(compress_above=700, chunking=SMALL_CHUNKS))
    assert result.kept, result.message
    m = read_manifest(index)
    assert m.tuning is not None and m.vector_index.compressed  # re-embedded with the same threshold
    with load_index(index) as data:
        assert isinstance(data.vectors, CompressedVectors)
