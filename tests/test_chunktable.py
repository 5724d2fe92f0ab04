"""The chunk table read on demand (chunktable.py): a loaded index parses only the rows a question uses, reads rows
only after their bytes are verified, and refuses, with the one-line rebuild hint, every way its files can break:
rows cut short or edited, arrays that disagree with the rows or with the manifest, a damaged FAISS file. An index
published before the table's arrays existed still loads and answers alike. No timing assertions."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import tqa.integrity as integrity
from tqa import Assistant
from tqa.chunktable import ChunkTable
from tqa.cli import main
from tqa.errors import REBUILD_HINT, IndexCorrupt
from tqa.manifest import (
    BLOCKS_SUFFIX,
    CHUNK_KEYS,
    CHUNK_OFFSETS,
    CHUNK_SOURCES,
    CHUNK_UNITS,
    CHUNKS,
    MANIFEST,
    TABLE_ARTIFACTS,
    UNITS,
    VECTORS,
    Artifact,
    Manifest,
)
from tqa.retrieval import CANDIDATES
from tqa.store import current_generation, load_index

from .support import FakeEmbedder
from .test_compressed import build, build_by_blocks, write_corpus

QUESTION = "What does record zq7x3 tell of?"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index whose chunk table is read through its block checks, as a big one is."""
    root = tmp_path_factory.mktemp("table")
    corpus = write_corpus(root / "corpus")
    build_by_blocks(corpus, root / "index", 10**9)
    return root / "index"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same index at the real sizes: its chunk table is small, verified whole at load."""
    root = tmp_path_factory.mktemp("small-table")
    corpus = write_corpus(root / "corpus")
    build(corpus, root / "index", FakeEmbedder(), compress_above=10**9)
    return root / "index"


@pytest.fixture
def index(built: Path, tmp_path: Path, fake_model) -> Path:
    """A copy of the built index, free to damage (`tqa ask` answers with the fake embedder)."""
    return shutil.copytree(built, tmp_path / "index", symlinks=True)


def gen_of(index: Path) -> Path:
    gen = current_generation(index)
    assert gen is not None
    return gen


def reseal(gen: Path, rel: str) -> None:
    """List ``rel`` as it now is (size, checksum, block digests), as a publish that wrote it so would: a forgery, or
    a bug, that the checksums cannot catch."""
    m = Manifest.read(gen)
    old = m.artifacts[rel]
    path = gen / rel
    if old.by_blocks:
        whole, digests = integrity.digest_file(path, int(old.block_bytes or 0))
        (gen / (rel + BLOCKS_SUFFIX)).write_bytes(digests)
        new = Artifact(path.stat().st_size, whole, old.block_bytes, hashlib.sha256(digests).hexdigest())
    else:
        new = Artifact(path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    artifacts = {**m.artifacts, rel: new}
    (gen / MANIFEST).write_bytes(dataclasses.replace(m, artifacts=artifacts).sealed().to_bytes())


def save_array(path: Path, values: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array(f, values, allow_pickle=False)


def without_keys(index: Path) -> None:
    """Make the live generation one written before the rows' keys: the table's other arrays, no keys."""
    gen = gen_of(index)
    m = Manifest.read(gen)
    (gen / CHUNK_KEYS).unlink()
    (gen / (CHUNK_KEYS + BLOCKS_SUFFIX)).unlink(missing_ok=True)
    artifacts = {k: v for k, v in m.artifacts.items() if k != CHUNK_KEYS}
    (gen / MANIFEST).write_bytes(dataclasses.replace(m, artifacts=artifacts).sealed().to_bytes())


def as_before(index: Path) -> None:
    """Make the live generation one written before the table's arrays: no arrays, chunks.jsonl checked whole."""
    without_keys(index)
    gen = gen_of(index)
    m = Manifest.read(gen)
    for rel in (*TABLE_ARTIFACTS, CHUNKS):
        (gen / (rel + BLOCKS_SUFFIX)).unlink()
    for rel in TABLE_ARTIFACTS:
        (gen / rel).unlink()
    data = (gen / CHUNKS).read_bytes()
    artifacts = {k: v for k, v in m.artifacts.items() if k not in TABLE_ARTIFACTS}
    artifacts[CHUNKS] = Artifact(len(data), hashlib.sha256(data).hexdigest())
    (gen / MANIFEST).write_bytes(dataclasses.replace(m, artifacts=artifacts).sealed().to_bytes())


def refused(index: Path, capsys) -> str:
    """The one line `tqa ask` prints for the index, which must be a refusal with the rebuild hint."""
    assert main(["ask", QUESTION, "--index", str(index)]) != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and REBUILD_HINT in err, err
    return err


def ask(index: Path) -> list[tuple[str, int]]:
    qa = Assistant.load(index, embedder=FakeEmbedder())
    try:
        return [(p.source, p.start) for p in qa.ask(QUESTION).passages]
    finally:
        qa.index.close()


# ---------------------------------------------------------------- reading on demand


@pytest.mark.parametrize("which", ["by blocks", "whole"])
def test_a_loaded_index_parses_only_the_rows_a_question_uses(built, small, which):
    qa = Assistant.load(built if which == "by blocks" else small, embedder=FakeEmbedder())
    try:
        table = qa.index.chunks
        assert isinstance(table, ChunkTable)
        assert table.parsed == 0  # nothing parsed to load
        answer = qa.ask(QUESTION)
        assert answer.passages and answer.passages[0].source == "doc07.txt"
        # the candidates of the signals (50 rows, 100 units, 50 keyword rows) and their sections at most
        assert 0 < table.parsed <= 5 * CANDIDATES < len(table) // 2
        before = table.parsed
        qa.ask(QUESTION)
        assert table.parsed == before  # the same rows again: kept, not parsed twice
    finally:
        qa.index.close()


def test_the_table_reads_back_what_was_built(built, tmp_path):
    shutil.copytree(built, tmp_path / "before")
    as_before(tmp_path / "before")
    with load_index(built) as new, load_index(tmp_path / "before") as old:
        assert isinstance(new.chunks, ChunkTable) and isinstance(old.chunks, list)
        n = len(old.chunks)
        assert len(new.chunks) == n and n > 600
        assert list(new.chunks) == old.chunks
        assert [new.chunks[i] for i in (0, n // 2, n - 1, -1, np.int64(3))] == \
            [old.chunks[i] for i in (0, n // 2, n - 1, -1, 3)]
        assert new.chunks[5:9] == old.chunks[5:9]
        for bad in (n, -n - 1, 10**12):
            with pytest.raises(IndexError):
                new.chunks[bad]
        assert np.array_equal(new.unit_ptr, old.unit_ptr)
        for source in new.sources:
            assert np.array_equal(new.rows_of(source), old.rows_of(source))
        assert len(new.rows_of("absent.txt")) == 0
        assert new.section_at("doc03.txt", 500) == old.section_at("doc03.txt", 500)


def test_a_small_table_is_verified_whole_and_refused_at_load(small, tmp_path, fake_model, capsys):
    assert not any(a.by_blocks for a in Manifest.read(gen_of(small)).artifacts.values())
    index = shutil.copytree(small, tmp_path / "index")
    path = gen_of(index) / CHUNKS
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("zq40x", "zq04x", 1), encoding="utf-8")  # same size, far from the question
    assert "chunks.jsonl" in refused(index, capsys)


def test_an_index_from_before_the_table_loads_and_answers_alike(built, tmp_path):
    shutil.copytree(built, tmp_path / "before")
    as_before(tmp_path / "before")
    assert ask(tmp_path / "before") == ask(built)


# ---------------------------------------------------------------- damage: refused before a wrong answer


def test_a_truncated_chunk_table_is_refused_at_load(index, capsys):
    path = gen_of(index) / CHUNKS
    path.write_bytes(path.read_bytes()[:-100])
    assert "chunks.jsonl" in refused(index, capsys)


def test_a_flipped_byte_in_the_middle_of_the_rows_is_refused_by_the_question_that_reads_it(index, no_background,
                                                                                          capsys):
    gen = gen_of(index)
    source, start = ask(index)[0]
    with load_index(index) as data:
        assert isinstance(data.chunks, ChunkTable)
        row = int(next(r for r in data.rows_of(source) if data.chunks[int(r)].start == start))
        mid = (int(data.chunks.offsets[row]) + int(data.chunks.offsets[row + 1])) // 2  # in the answer's row
    raw = bytearray((gen / CHUNKS).read_bytes())
    raw[mid] ^= 0x01
    (gen / CHUNKS).write_bytes(bytes(raw))
    with load_index(index):
        pass  # the load reads no row: it does not see the damage
    assert "chunks.jsonl" in refused(index, capsys)


def test_a_flipped_byte_far_from_the_question_is_found_in_the_background(index, capsys):
    gen = gen_of(index)
    raw = bytearray((gen / CHUNKS).read_bytes())
    raw[len(raw) - 30] ^= 0x01
    (gen / CHUNKS).write_bytes(bytes(raw))
    with load_index(index) as data, pytest.raises(IndexCorrupt, match="chunks.jsonl"):
        assert data.checks is not None
        data.checks.wait(60)


@pytest.mark.parametrize("rel", [CHUNK_OFFSETS, CHUNK_UNITS, CHUNK_SOURCES, CHUNK_KEYS])
@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_a_damaged_array_is_refused_at_load(index, capsys, rel, how):
    path = gen_of(index) / rel
    raw = bytearray(path.read_bytes())
    if how == "flipped":
        raw[len(raw) // 2] ^= 0x10
    else:
        del raw[-4:]
    path.write_bytes(bytes(raw))
    assert rel in refused(index, capsys)


def test_offsets_pointing_past_the_end_are_refused(index, capsys):
    gen = gen_of(index)
    offsets = np.load(gen / CHUNK_OFFSETS).copy()
    offsets[len(offsets) // 2] = offsets[-1] + 1000  # past the end (and out of order), checksums resealed
    save_array(gen / CHUNK_OFFSETS, offsets)
    reseal(gen, CHUNK_OFFSETS)
    assert "offsets" in refused(index, capsys)


def test_offsets_that_cut_rows_elsewhere_are_refused_when_read(index, capsys):
    """Offsets in order and ending at the file's end, but not at the rows' ends: a row read is not a whole row."""
    gen = gen_of(index)
    offsets = np.load(gen / CHUNK_OFFSETS).copy()
    offsets[1:-1] += 3
    save_array(gen / CHUNK_OFFSETS, offsets)
    reseal(gen, CHUNK_OFFSETS)
    assert "chunk table" in refused(index, capsys)


@pytest.mark.parametrize("rel", [CHUNK_OFFSETS, CHUNK_UNITS, CHUNK_SOURCES, CHUNK_KEYS])
def test_an_array_with_another_row_count_than_the_manifest_is_refused(index, capsys, rel):
    gen = gen_of(index)
    values = np.load(gen / rel)
    save_array(gen / rel, values[:-1])  # one row short, checksums resealed
    reseal(gen, rel)
    assert "manifest" in refused(index, capsys)


def test_unit_counts_that_disagree_with_the_rows_are_refused(index, capsys):
    gen = gen_of(index)
    ptr = np.load(gen / CHUNK_UNITS).copy()
    ptr[1:] += 1  # row 0 gets one unit more; the total no longer matches units.faiss either
    save_array(gen / CHUNK_UNITS, ptr)
    reseal(gen, CHUNK_UNITS)
    refused(index, capsys)


def test_rows_given_to_another_document_are_refused_when_read(index, capsys):
    gen = gen_of(index)
    ids = np.load(gen / CHUNK_SOURCES).copy()
    ids[:] = (ids + 1) % (int(ids.max()) + 1)
    save_array(gen / CHUNK_SOURCES, ids)
    reseal(gen, CHUNK_SOURCES)
    assert "disagrees" in refused(index, capsys)


def test_row_places_that_disagree_with_the_rows_are_refused_when_read(index, capsys):
    """The keys array says where each row lies in its document; a row parsed must agree (resealed: a forgery)."""
    gen = gen_of(index)
    keys = np.load(gen / CHUNK_KEYS).reshape(-1, 3).copy()
    keys[:, 1:] += 1
    save_array(gen / CHUNK_KEYS, keys.reshape(-1))
    reseal(gen, CHUNK_KEYS)
    assert "disagrees" in refused(index, capsys)


def test_row_places_that_are_not_places_are_refused(index, capsys):
    gen = gen_of(index)
    keys = np.load(gen / CHUNK_KEYS).reshape(-1, 3).copy()
    keys[3, 1], keys[3, 2] = 10, 5  # a passage ending before it starts
    save_array(gen / CHUNK_KEYS, keys.reshape(-1))
    reseal(gen, CHUNK_KEYS)
    assert CHUNK_KEYS in refused(index, capsys)


def test_keys_without_the_rest_of_the_table_are_refused(index, capsys):
    as_before(index)
    gen = gen_of(index)
    save_array(gen / CHUNK_KEYS, np.zeros(3 * Manifest.read(gen).counts.chunks, dtype="<i8"))
    m = Manifest.read(gen)
    artifacts = {**m.artifacts, CHUNK_KEYS: Artifact((gen / CHUNK_KEYS).stat().st_size,
                                                     hashlib.sha256((gen / CHUNK_KEYS).read_bytes()).hexdigest())}
    (gen / MANIFEST).write_bytes(dataclasses.replace(m, artifacts=artifacts).sealed().to_bytes())
    assert "artifacts" in refused(index, capsys)


@pytest.mark.parametrize("rel", [CHUNK_OFFSETS, CHUNK_UNITS, CHUNK_SOURCES])
def test_a_manifest_listing_part_of_the_table_is_refused(index, capsys, rel):
    gen = gen_of(index)
    m = Manifest.read(gen)
    artifacts = {k: v for k, v in m.artifacts.items() if k != rel}
    (gen / MANIFEST).write_bytes(dataclasses.replace(m, artifacts=artifacts).sealed().to_bytes())
    assert "artifacts" in refused(index, capsys)


def test_an_index_from_before_with_a_damaged_row_is_still_refused(index, capsys):
    as_before(index)
    path = gen_of(index) / CHUNKS
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    assert "chunks.jsonl" in refused(index, capsys)


@pytest.mark.parametrize("rel", [VECTORS, UNITS])
@pytest.mark.parametrize("how", ["flipped", "truncated"])
@pytest.mark.parametrize("big", [False, True], ids=["hashed in line", "hashed in a thread"])
def test_a_damaged_faiss_file_is_refused_at_load(index, capsys, monkeypatch, rel, how, big):
    if big:  # every file read whole is hashed beside the reading of the others
        monkeypatch.setattr(integrity, "BIG_BYTES", 1)
    path = gen_of(index) / rel
    raw = bytearray(path.read_bytes())
    if how == "flipped":
        raw[len(raw) // 2] ^= 0x01
    else:
        del raw[-8:]
    path.write_bytes(bytes(raw))
    assert rel in refused(index, capsys)


def test_files_hashed_in_threads_load_an_intact_index(built, monkeypatch):
    monkeypatch.setattr(integrity, "BIG_BYTES", 1)
    assert ask(built)


@pytest.mark.parametrize("rel", [VECTORS, UNITS])
def test_a_damaged_faiss_file_loaded_in_the_background_refuses_every_question(index, monkeypatch, rel):
    """`Assistant.load` verifies and reads the FAISS files while the model loads: damage refuses the first question
    and every later one, and the vectors are never handed out; `load_index` refuses it at once."""
    monkeypatch.setattr(integrity, "BIG_BYTES", 1)  # hashed in a thread, as a big file is
    path = gen_of(index) / rel
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexCorrupt, match=rel):
        load_index(index)
    qa = Assistant.load(index, embedder=FakeEmbedder())
    try:
        for _ in range(2):
            with pytest.raises(IndexCorrupt, match=rel):
                qa.ask(QUESTION)
        with pytest.raises(IndexCorrupt, match=rel):
            qa.index.vectors  # noqa: B018
    finally:
        qa.index.close()


def test_vectors_loaded_in_the_background_are_the_ones_verified_at_once(built):
    with load_index(built) as now, load_index(built, defer=True) as later:
        assert later.ready is not None or later.vectors.ntotal == now.vectors.ntotal
        assert later.vectors.ntotal == now.vectors.ntotal and later.units.ntotal == now.units.ntotal
        assert later.ready is None  # waited for once, then kept
        q = FakeEmbedder().encode([QUESTION])[0]
        assert np.array_equal(later.vectors.search(q, 5)[1], now.vectors.search(q, 5)[1])


def test_a_big_file_read_whole_other_than_faiss_is_verified_before_the_load_returns(index, monkeypatch):
    """Only the FAISS files are verified in the background (nothing reads them before); the rows of an index from
    before the table, read whole at load, are verified first, however big."""
    monkeypatch.setattr(integrity, "BIG_BYTES", 1)
    as_before(index)
    path = gen_of(index) / CHUNKS
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexCorrupt, match="fails its checksum"):
        Assistant.load(index, embedder=FakeEmbedder())


def test_texts_are_the_rows_texts_and_a_row_that_is_not_json_is_refused(index):
    """What a search reads to compare candidates' words: each row's own text, checked as a parse would be."""
    table = load_index(index).chunks
    rows = list(table)
    order = np.random.default_rng(0).permutation(len(rows))
    table[int(order[0])]  # noqa: B018 (one row parsed and cached: read from the cache)
    assert table.texts(order) == [rows[i].text for i in order]
    with pytest.raises(IndexError):
        table.texts([len(rows)])
    gen = gen_of(index)
    data = bytearray((gen / CHUNKS).read_bytes())
    offsets = np.load(gen / CHUNK_OFFSETS)
    data[int(offsets[2])] = ord("[")  # row 2 no longer an object
    (gen / CHUNKS).write_bytes(bytes(data))
    reseal(gen, CHUNKS)
    table = load_index(index).chunks
    assert table.texts([1]) == [rows[1].text]
    with pytest.raises(IndexCorrupt, match="Row 2 of the chunk table"):
        table.texts([2])
