"""An inverted file read for answering (``load_index(defer=True)``, what ``Assistant.load`` does) is not read whole:
its header is verified and parsed, its lists are memory-mapped, and each list is verified by its blocks before a
search first scans it (``vectors.MappedLists``), the rest by the background check. Sizes are lowered so that a
small index is an inverted file with block checks in blocks of 1 KiB (a list of the fake embedder's 64-dimensional
vectors spans a few blocks)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import tqa.vectors as vectors
from tqa import Assistant
from tqa.cli import main
from tqa.errors import REBUILD_HINT, IndexCorrupt
from tqa.manifest import UNITS, VECTORS
from tqa.store import load_index, read_manifest

from .support import FakeEmbedder
from .test_chunktable import gen_of
from .test_compressed import build, build_by_blocks, write_corpus

QUESTIONS = [f"What does record zq{f}x{p} tell of?" for f, p in [(7, 3), (12, 40), (30, 1), (44, 22), (55, 9)]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mapped")
    corpus = write_corpus(root / "corpus")
    build_by_blocks(corpus, root / "index", vectors.COMPRESS_ABOVE, inverted_file=True)
    return root / "index"


@pytest.fixture(autouse=True)
def few_probes(monkeypatch):
    """A search scans a few of the small index's lists (by default it would scan them all)."""
    monkeypatch.setattr(vectors, "IVF_MIN_PROBES", 4)


@pytest.fixture
def index(built: Path, tmp_path: Path) -> Path:
    """A copy of the built index, free to damage."""
    return shutil.copytree(built, tmp_path / "index", symlinks=True)


def query(text: str) -> np.ndarray:
    return FakeEmbedder().encode([text])[0]


def probed(v: vectors.FaissVectors, q: np.ndarray, nprobe: int | None = None) -> np.ndarray:
    """The lists a search of ``q`` scans (FAISS's own choice, asked of the quantizer)."""
    ivf = v._ivf
    return ivf.quantizer.search(q.reshape(1, -1).astype(np.float32), nprobe or int(ivf.nprobe))[1][0]


def list_blocks(v: vectors.FaissVectors, lists: np.ndarray) -> np.ndarray:
    m = v._mapped
    assert m is not None
    block = m.blocks.block
    out = [np.arange(m.at[i] // block, (m.at[i] + m.bytes[i] - 1) // block + 1) for i in lists if m.bytes[i]]
    return np.unique(np.concatenate(out))


def test_the_index_is_an_inverted_file_listed_by_blocks(built):
    m = read_manifest(built)
    assert m.vector_index is not None and m.vector_index.type == "faiss.IndexIVFFlat"
    assert m.vector_index.units is not None and m.vector_index.units.type == "faiss.IndexIVFFlat"
    assert m.artifacts[VECTORS].by_blocks and m.artifacts[UNITS].by_blocks


def test_lists_are_mapped_and_verified_only_as_searches_reach_them(built, no_background):
    with load_index(built, defer=True) as data:
        v = data.vectors
        assert isinstance(v, vectors.FaissVectors) and v._mapped is not None
        blocks = data.checks.for_file(VECTORS)
        header = vectors.lists_start(read_manifest(built).vector_index, blocks.size, v.ntotal, v.dim)
        assert header is not None and 0 < header < blocks.size
        verified = blocks._verified.copy()
        assert verified[: header // blocks.block].all()  # the header, before FAISS parsed it
        assert not verified[-(-header // blocks.block):].any()  # and no list yet
        q = query(QUESTIONS[0])
        v.search(q, 5)
        after = blocks._verified
        assert after[list_blocks(v, probed(v, q))].all()  # every list the search scanned, first
        assert not after.all()  # and not the others


def test_a_mapped_index_answers_as_one_read_whole(built, monkeypatch):
    monkeypatch.setattr(vectors, "FILTER_EXACT_MAX", 10)  # filtered searches go through the inverted file too
    with load_index(built) as whole, load_index(built, defer=True) as mapped:
        assert whole.vectors._mapped is None and mapped.vectors._mapped is not None
        rng = np.random.default_rng(1)
        allowed = np.sort(rng.choice(whole.vectors.ntotal, 60, replace=False))
        for text in QUESTIONS:
            q = query(text)
            for v, w in [(mapped.vectors, whole.vectors), (mapped.units, whole.units)]:
                for kwargs in [{}, {"allowed": allowed[allowed < v.ntotal]}]:
                    a, b = v.search(q, 8, **kwargs), w.search(q, 8, **kwargs)
                    assert np.array_equal(a[1], b[1]) and np.allclose(a[0], b[0])
        rows = rng.choice(whole.vectors.ntotal, 50, replace=False)
        assert np.array_equal(mapped.vectors.take(rows), whole.vectors.take(rows))
        assert mapped.vectors.to_bytes() == (gen_of(built) / VECTORS).read_bytes()  # (what it was published as)


def test_take_verifies_the_rows_it_reads(built, no_background):
    with load_index(built, defer=True) as data:
        v = data.vectors
        m = v._mapped
        rows = np.array([0, v.ntotal // 2, v.ntotal - 1])
        v.take(rows)
        where = faiss_where(v)[rows]
        starts = m.at[where >> 32] + (where & 0xFFFFFFFF) * m.code
        assert data.checks.for_file(VECTORS)._verified[starts // m.blocks.block].all()


def faiss_where(v: vectors.FaissVectors) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(v._ivf.direct_map.array).astype(np.int64)


def damage_list(index: Path, avoid: str, hit: str) -> None:
    """Flip a byte in a list the search of ``hit`` scans and that of ``avoid`` does not."""
    with load_index(index, defer=True) as data:
        v = data.vectors
        spared = set(probed(v, query(avoid)).tolist())
        target = next(i for i in probed(v, query(hit)).tolist() if i not in spared and v._mapped.bytes[i])
        offset = int(v._mapped.at[target] + v._mapped.bytes[target] // 2)
    path = gen_of(index) / VECTORS
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


def test_a_damaged_list_refuses_the_search_that_scans_it_and_every_later_one(index, no_background):
    damage_list(index, avoid=QUESTIONS[0], hit=QUESTIONS[1])
    with load_index(index, defer=True) as data:
        v = data.vectors
        v.search(query(QUESTIONS[0]), 5)  # its lists are intact
        with pytest.raises(IndexCorrupt, match="vectors.faiss"):
            v.search(query(QUESTIONS[1]), 5)
        with pytest.raises(IndexCorrupt, match="vectors.faiss"):
            v.search(query(QUESTIONS[0]), 5)  # the whole index is damaged now
        with pytest.raises(IndexCorrupt):
            data.raise_if_damaged()


def test_the_background_check_finds_a_damaged_list_no_search_scanned(index):
    damage_list(index, avoid=QUESTIONS[0], hit=QUESTIONS[1])
    with load_index(index, defer=True) as data:
        with pytest.raises(IndexCorrupt, match="vectors.faiss"):
            data.checks.wait(timeout=60)
        # then refused, whether the vector index finished loading before the background check found the damage
        # (its search fails) or after it (loading it fails: every check raises the damage once found)
        with pytest.raises(IndexCorrupt, match="vectors.faiss"):
            data.vectors.search(query(QUESTIONS[0]), 5)


@pytest.mark.parametrize("rel", [VECTORS, UNITS])
@pytest.mark.parametrize("where", ["start", "header"])
def test_a_damaged_header_is_refused_before_faiss_reads_it(index, no_background, rel, where):
    path = gen_of(index) / rel
    raw = bytearray(path.read_bytes())
    raw[0 if where == "start" else 200] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexCorrupt, match=rel):
        load_index(index, defer=True).vectors  # noqa: B018
    qa = Assistant.load(index, embedder=FakeEmbedder())
    try:
        for _ in range(2):
            with pytest.raises(IndexCorrupt, match=rel):
                qa.ask(QUESTIONS[0])
    finally:
        qa.index.close()


def test_cli_ask_refuses_a_damaged_list_in_one_line(index, capsys, no_background, fake_model):
    damage_list(index, avoid=QUESTIONS[2], hit=QUESTIONS[1])
    assert main(["ask", QUESTIONS[1], "--index", str(index)]) != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and REBUILD_HINT in err and VECTORS in err, err


def test_an_assistant_answers_from_the_mapped_index(built):
    qa = Assistant.load(built, embedder=FakeEmbedder())
    try:
        assert qa.index.vectors._mapped is not None
        top = qa.ask(QUESTIONS[0]).passages[0]
        assert "zq7x3" in top.text
    finally:
        qa.index.close()


def test_searches_from_many_threads_verify_each_block_once_and_agree(built):
    with load_index(built) as whole, load_index(built, defer=True) as mapped:
        expected = {t: whole.vectors.search(query(t), 5)[1].tolist() for t in QUESTIONS}
        errors: list[BaseException] = []
        got: dict[tuple[int, str], list[int]] = {}

        def run(n: int) -> None:
            try:
                for t in QUESTIONS:
                    got[(n, t)] = mapped.vectors.search(query(t), 5)[1].tolist()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert all(got[(n, t)] == expected[t] for n in range(6) for t in QUESTIONS)


def test_an_update_of_a_mapped_index_changes_its_lists_in_memory(built):
    """Splicing (an update) reads the mapped file into memory first, verified: the result is the one a whole
    read gives, and the published file is untouched."""
    before = (gen_of(built) / VECTORS).read_bytes()
    with load_index(built) as whole, load_index(built, defer=True) as mapped:
        n = whole.vectors.ntotal
        old_rows = np.concatenate([np.arange(5, n), [-1, -1]])
        added = np.random.default_rng(2).standard_normal((2, whole.vectors.dim)).astype(np.float32)
        added /= np.linalg.norm(added, axis=1, keepdims=True)
        for v in (whole.vectors, mapped.vectors):
            v.splice(old_rows, added)
        assert mapped.vectors._mapped is None
        assert mapped.vectors.to_bytes() == whole.vectors.to_bytes()
    assert (gen_of(built) / VECTORS).read_bytes() == before


def test_a_file_not_laid_out_as_written_is_refused(built):
    with load_index(built) as data:
        blocks = data.checks.for_file(VECTORS)
        right = vectors.lists_start(read_manifest(built).vector_index, blocks.size, data.vectors.ntotal,
                                    data.vectors.dim)
        assert right is not None
        vectors.FaissVectors.load(gen_of(built) / VECTORS, blocks=blocks, lists_at=right)
        for wrong in (right - 8, right + 8):
            with pytest.raises(IndexCorrupt, match="not laid out"):
                vectors.FaissVectors.load(gen_of(built) / VECTORS, blocks=blocks, lists_at=wrong)


def test_an_inverted_file_without_block_checks_is_read_whole(tmp_path, monkeypatch):
    """An index published before the FAISS files had block checks (or small ones): read whole, as before."""
    corpus = write_corpus(tmp_path / "corpus", files=20)
    monkeypatch.setattr(vectors, "EXACT_MAX", 40)
    monkeypatch.setattr(vectors, "IVF_MIN_VECTORS", 64)
    build(corpus, tmp_path / "index", FakeEmbedder(), compress_above=vectors.COMPRESS_ABOVE)
    m = read_manifest(tmp_path / "index")
    assert m.vector_index.type == "faiss.IndexIVFFlat" and not m.artifacts[VECTORS].by_blocks
    with load_index(tmp_path / "index", defer=True) as data:
        assert data.vectors._mapped is None and len(data.vectors.search(query(QUESTIONS[0]), 5)[1]) == 5


def test_faiss_opens_the_verified_file_through_its_descriptor(built, monkeypatch):
    """FAISS opens files by name: it is given the descriptor's entry in /proc, so a file renamed over the
    verified one after the check is not the one mapped; where /proc has no entry, the path."""
    with load_index(built) as data:
        blocks = data.checks.for_file(VECTORS)
        name = blocks.opener()
        assert name.startswith("/proc/self/fd/")
        import os

        assert os.path.samefile(name, gen_of(built) / VECTORS)
        monkeypatch.setattr(os.path, "exists", lambda p: False)
        assert blocks.opener() == str(gen_of(built) / VECTORS)


def test_a_file_renamed_over_the_verified_one_is_not_the_one_read(index, no_background):
    """Between the check of the header and FAISS opening the file, another file put in its place (a rename) is
    not read: FAISS opens the very file verified."""
    import tqa.vectors as v_mod

    path = gen_of(index) / VECTORS
    original = v_mod._faiss().read_index

    def swapped(name, flags=0):
        other = path.with_name("other.faiss")
        raw = bytearray(path.read_bytes())
        half = len(raw) // 2
        raw[half:] = bytes(len(raw) - half)  # every vector in the second half of the lists zeroed
        other.write_bytes(bytes(raw))
        other.replace(path)  # the published name now holds a damaged copy
        return original(name, flags)

    with load_index(index) as whole:
        expected = [whole.vectors.search(query(t), 5) for t in QUESTIONS]
    faiss = v_mod._faiss()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(faiss, "read_index", swapped)
        with load_index(index, defer=True) as data:
            for text, (scores, rows) in zip(QUESTIONS, expected, strict=True):
                got = data.vectors.search(query(text), 5)  # the verified file, intact
                assert np.array_equal(got[1], rows) and np.array_equal(got[0], scores)
            data.checks.verify_all()
