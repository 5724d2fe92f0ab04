"""Block checksums of big artifacts (integrity.py): listed at publish, checked as they are read and in the
background, never read whole at load. Sizes are lowered so that a small index has big files: every block-checked
file gets block digests, in blocks of 1 KiB (8 float16 rows of the fake embedder's 64 dimensions)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tqa.integrity as integrity
from tqa import Assistant
from tqa.cli import main
from tqa.errors import IndexCorrupt
from tqa.manifest import BLOCK_CHECKED, DOCUMENTS, VECTORS_STORED
from tqa.store import current_generation, load_index, read_manifest

from .support import FakeEmbedder
from .test_compressed import build, build_by_blocks, write_corpus

ROW_BYTES = 64 * 2  # a float16 row of the fake embedder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lazy")
    corpus = write_corpus(root / "corpus")
    build_by_blocks(corpus, root / "index", 700)
    return corpus, root / "index"


@pytest.fixture
def index(built, tmp_path: Path) -> Path:
    """A copy of the built index, free to damage."""
    return shutil.copytree(built[1], tmp_path / "index", symlinks=True)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def header(path: Path) -> int:
    return int(np.load(path, mmap_mode="r").offset)


def rows_of(index: Path, source: str) -> list[int]:
    with load_index(index) as data:
        return data.rows_of(source).tolist()


def test_big_files_are_listed_by_blocks_and_not_read_at_load(built):
    _, index = built
    m = read_manifest(index)
    blocked = {rel for rel, a in m.artifacts.items() if a.by_blocks}
    assert blocked == BLOCK_CHECKED
    gen = current_generation(index)
    assert gen is not None
    for rel in blocked:
        assert (gen / (rel + ".blocks")).stat().st_size == 32 * -(-m.artifacts[rel].size // 1024)
    with load_index(index) as data:
        assert data.checks is not None and set(data.checks.files) == BLOCK_CHECKED
        data.checks.verify_all()
        assert data.checks.complete


def test_small_files_stay_verified_whole(tmp_path: Path):
    """At the real sizes a small index has no block checksums: its manifest is as before."""
    corpus = write_corpus(tmp_path / "corpus", files=3, paragraphs=5)
    build(corpus, tmp_path / "index", FakeEmbedder(), compress_above=700)
    m = read_manifest(tmp_path / "index")
    assert not any(a.by_blocks for a in m.artifacts.values())
    assert "block_bytes" not in json.dumps(m.to_dict())


def test_a_damaged_row_refuses_the_search_that_reads_it_only(index, no_background):
    row = rows_of(index, "doc00.txt")[0]
    gen = current_generation(index)
    assert gen is not None
    flip(gen / VECTORS_STORED, header(gen / VECTORS_STORED) + row * ROW_BYTES + 5)
    qa = Assistant.load(index, embedder=FakeEmbedder())
    # a search among other documents' rows (other blocks) answers
    far = qa.ask("zq40x3", mode="dense", sources=["doc40.txt"]).passages
    assert far and far[0].source == "doc40.txt"
    with pytest.raises(IndexCorrupt, match=r"vectors\.f16\.npy fails its checksum .*tqa index --rebuild"):
        qa.ask("zq0x0", mode="dense", sources=["doc00.txt"])
    # once found, the damage refuses every later question, wherever it reads
    with pytest.raises(IndexCorrupt, match="fails its checksum"):
        qa.ask("zq40x3", mode="dense", sources=["doc40.txt"])
    with pytest.raises(IndexCorrupt, match="fails its checksum"):
        qa.ask("zq41x2", mode="bm25")


def test_the_background_check_finds_damage_no_question_read(index):
    gen = current_generation(index)
    assert gen is not None
    path = gen / "bm25" / "data.csc.index.npy"
    flip(path, path.stat().st_size - 3)
    with load_index(index) as data:
        assert data.checks is not None
        with pytest.raises(IndexCorrupt, match=r"data\.csc\.index\.npy fails its checksum"):
            data.checks.wait(timeout=60)
        with pytest.raises(IndexCorrupt, match="fails its checksum"):
            data.raise_if_damaged()


def test_a_damaged_document_text_is_refused_when_read(index, no_background):
    gen = current_generation(index)
    assert gen is not None
    raw = (gen / DOCUMENTS).read_bytes()
    at = raw.index(b"zq7x20")
    flip(gen / DOCUMENTS, at + 2)
    qa = Assistant.load(index, embedder=FakeEmbedder())
    assert qa.ask("zq7x20", mode="bm25").passages  # questions read the chunk table, not the documents
    with pytest.raises(IndexCorrupt, match=r"documents\.jsonl fails its checksum"):
        qa.documents()
    with load_index(index) as data:  # (finding a document's line reads the whole file first)
        with pytest.raises(IndexCorrupt, match=r"documents\.jsonl fails its checksum"):
            data.document_text("doc40.txt")


@pytest.mark.parametrize("damage", ["companion flipped", "companion missing", "file truncated", "file grown",
                                    "unlisted companion"])
def test_damage_to_the_checksums_or_sizes_is_refused_at_load(index, damage):
    gen = current_generation(index)
    assert gen is not None
    target = gen / VECTORS_STORED
    companion = gen / (VECTORS_STORED + ".blocks")
    if damage == "companion flipped":
        flip(companion, 40)
    elif damage == "companion missing":
        companion.unlink()
    elif damage == "file truncated":
        target.write_bytes(target.read_bytes()[:-1])
    elif damage == "file grown":
        target.write_bytes(target.read_bytes() + b"\0")
    else:
        (gen / "bm25" / "params.index.json.blocks").write_bytes(b"\0" * 32)
    with pytest.raises(IndexCorrupt, match="tqa index --rebuild"):
        load_index(index).close()


def test_cli_ask_refuses_a_damaged_block_in_one_line(index, capsys, monkeypatch):
    import tqa.assistant

    monkeypatch.setattr(tqa.assistant, "load_embedder", lambda name: FakeEmbedder())
    row = rows_of(index, "doc00.txt")[1]
    gen = current_generation(index)
    assert gen is not None
    flip(gen / VECTORS_STORED, header(gen / VECTORS_STORED) + row * ROW_BYTES + 1)
    code = main(["ask", "zq0x1", "--index", str(index), "--mode", "dense", "--source", "doc00.txt"])
    err = capsys.readouterr().err
    assert code != 0 and "fails its checksum" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_update_of_a_block_checked_index_verifies(built, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(integrity, "BIG_BYTES", 1)
    monkeypatch.setattr(integrity, "BLOCK_BYTES", 1024)
    monkeypatch.setattr(integrity, "ROW_BLOCK_BYTES", 1024)
    corpus = shutil.copytree(built[0], tmp_path / "corpus")
    index = shutil.copytree(built[1], tmp_path / "index", symlinks=True)
    (corpus / "doc02.txt").write_text("Record zqchanged tells of a changed harbour.\n", encoding="utf-8")
    build(corpus, index, FakeEmbedder(), compress_above=700)
    with load_index(index) as data:
        assert data.checks is not None and set(data.checks.files) == BLOCK_CHECKED
        data.checks.verify_all()
        assert (data.document_text("doc02.txt") or "").strip() == "Record zqchanged tells of a changed harbour."
    # a third build retires the first generation, its companion files with it
    (corpus / "doc03.txt").write_text("Record zqagain tells of another harbour.\n", encoding="utf-8")
    build(corpus, index, FakeEmbedder(), compress_above=700)
    generations = sorted(p for p in index.iterdir() if p.name.startswith("g-"))
    assert len(generations) == 2 and not [p for p in index.iterdir() if p.name.startswith((".tmp-", ".retired-"))]


@pytest.mark.parametrize("edit", ["blocks on a file read whole", "block size without digests", "digests of a damaged "
                                  "kind", "stored rows without codes"])
def test_a_manifest_with_checks_it_cannot_have_is_refused(built, edit):
    from tqa.manifest import Manifest

    d = read_manifest(built[1]).to_dict()
    if edit == "blocks on a file read whole":
        d["artifacts"]["bm25/vocab.index.json"].update(block_bytes=1024, blocks_sha256="0" * 64)
    elif edit == "block size without digests":
        del d["artifacts"][DOCUMENTS]["blocks_sha256"]
    elif edit == "digests of a damaged kind":
        d["artifacts"][DOCUMENTS]["blocks_sha256"] = "not a checksum"
    else:
        del d["vector_index"]["units"]["stored"]
    with pytest.raises(IndexCorrupt, match="not valid"):
        Manifest.from_dict(d)
