"""The manifest checks itself: its own checksum, a schema, and the set of artifacts fixed by the code.

An edited, flipped or truncated manifest either loads exactly as written or is refused with one line naming the
fix (IndexCorrupt); it never loads silently with other values and never fails with an unexpected error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tqa import Assistant, build_index, manifest, store
from tqa.errors import IndexCorrupt
from tqa.manifest import MANIFEST
from tqa.store import current_generation, load_index, read_manifest


@pytest.fixture
def index(small_corpus, tmp_path, fake_embedder) -> Path:
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    return index


def edit_manifest(index: Path, edit, *, reseal: bool) -> None:
    """Edit the live manifest; ``reseal`` recomputes its checksum, as someone editing it on purpose would."""
    path = current_generation(index) / MANIFEST
    m = json.loads(path.read_text(encoding="utf-8"))
    edit(m)
    if reseal:
        m[manifest.MANIFEST_SHA] = manifest.manifest_digest(m)
    path.write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def refused(index: Path, match: str = "rebuild") -> str:
    for read in (load_index, read_manifest):
        with pytest.raises(IndexCorrupt, match=match) as exc:
            read(index)
        assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("reseal", [False, True])
def test_deleting_an_artifact_entry_does_not_turn_off_its_check(index, reseal):
    gen = current_generation(index)
    edit_manifest(index, lambda m: m["artifacts"].pop("chunks.jsonl"), reseal=reseal)
    table = (gen / "chunks.jsonl").read_text(encoding="utf-8")
    (gen / "chunks.jsonl").write_text(table.replace('"start": 0', '"start": 5', 1), encoding="utf-8")
    refused(index)


@pytest.mark.parametrize("reseal", [False, True])
def test_an_artifact_the_format_does_not_have_is_refused(index, reseal):
    gen = current_generation(index)
    (gen / "extra.bin").write_bytes(b"extra")
    edit_manifest(index, lambda m: m["artifacts"].update({"extra.bin": {"bytes": 5, "sha256": store.sha256_file(
        gen / "extra.bin")}}), reseal=reseal)
    refused(index)


def test_an_unlisted_file_in_the_keyword_index_is_refused(index):
    gen = current_generation(index)
    (gen / "bm25" / "nonoccurrence_array.index.npy").write_bytes(b"\x93NUMPY")  # bm25s would read it
    with pytest.raises(IndexCorrupt, match="rebuild"):
        load_index(index)


def test_a_missing_required_artifact_is_refused_even_when_unlisted(index):
    gen = current_generation(index)
    edit_manifest(index, lambda m: m["artifacts"].pop("bm25/vocab.index.json"), reseal=True)
    (gen / "bm25" / "vocab.index.json").unlink()
    refused(index)


def _set(*path, value):
    def edit(m):
        *parents, last = path
        for p in parents:
            m = m[p]
        if value is DELETE:
            del m[last]
        else:
            m[last] = value

    return edit


DELETE = object()
VIOLATIONS = {
    "no model": _set("model", value=DELETE),
    "model not an object": _set("model", value="fake-hash-64"),
    "dimension as text": _set("model", "dim", value="64"),
    "dimension true": _set("model", "dim", value=True),
    "no model name": _set("model", "name", value=DELETE),
    "counts a list": _set("counts", value=[1, 2]),
    "no chunk count": _set("counts", "chunks", value=DELETE),
    "negative chunk count": _set("counts", "chunks", value=-1),
    "files a list": _set("files", value=["sweden.md"]),
    "a file entry a string": _set("files", "sweden.md", value="x"),
    "threshold as text": _set("calibration", "abstain_threshold", value="0.9"),
    "chunking with an unknown setting": _set("chunking", "stride", value=3),
    "chunk size missing": _set("chunking", "chunk_size", value=DELETE),
    "skipped entry without reason": _set("skipped", value=[{"path": "a.txt"}]),
    "artifact size as text": _set("artifacts", "vectors.faiss", "bytes", value="12"),
    "artifacts missing": _set("artifacts", value=DELETE),
    "names not strings": _set("names", value=[1, 2]),
    "corpus a number": _set("corpus", value=7),
    "format as text": _set("format_version", value="2"),
    "format zero": _set("format_version", value=0),
}


@pytest.mark.parametrize("how", list(VIOLATIONS))
def test_a_schema_violation_is_one_line_not_an_unexpected_error(index, how):
    edit_manifest(index, VIOLATIONS[how], reseal=True)
    refused(index)


@pytest.mark.parametrize("text", ["[1, 2, 3]", "null", "{}", '{"format_version": 2}', "1e999", '"text"'])
def test_a_manifest_that_is_not_an_object_of_the_format_is_refused(index, text):
    (current_generation(index) / MANIFEST).write_text(text + "\n")
    refused(index)


def test_an_edit_without_a_matching_checksum_is_refused(index):
    edit_manifest(index, _set("calibration", "abstain_threshold", value=0.9697), reseal=False)
    message = refused(index)
    assert "checksum" in message


def test_every_bit_flip_in_the_first_kilobyte_loads_identically_or_is_refused(index, fake_embedder):
    path = current_generation(index) / MANIFEST
    raw = path.read_bytes()
    base = load_index(index)
    expected_manifest, expected_chunks = base.manifest, base.chunks
    base.close()
    same = refused_count = 0
    for bit in range(min(len(raw), 1024) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        try:
            data = load_index(index)
        except IndexCorrupt as exc:
            assert "\n" not in str(exc)
            refused_count += 1
            continue
        assert data.manifest == expected_manifest and data.chunks == expected_chunks, bit
        data.close()
        same += 1
    assert refused_count + same == min(len(raw), 1024) * 8 and refused_count > same
    path.write_bytes(raw)
    assert Assistant.load(index, embedder=fake_embedder).ask("Sweden").passages


def test_a_truncated_manifest_is_refused_at_every_length(index):
    path = current_generation(index) / MANIFEST
    raw = path.read_bytes()
    for n in list(range(0, 200)) + list(range(200, len(raw), 97)):
        path.write_bytes(raw[:n])
        with pytest.raises(IndexCorrupt):
            load_index(index)


def test_the_written_manifest_is_canonical_and_sealed(index):
    m = read_manifest(index).to_dict()
    assert m["format_version"] == manifest.FORMAT_VERSION == 2
    assert m[manifest.MANIFEST_SHA] == manifest.manifest_digest(m)
    assert set(m["artifacts"]) == manifest.REQUIRED_ARTIFACTS | manifest.TABLE_ARTIFACTS | {manifest.CHUNK_KEYS}


def _with_encoder_files(gen: Path, names) -> dict:
    (gen / manifest.ENCODER_DIR).mkdir(exist_ok=True)
    entries = {}
    for name in names:
        path = gen / manifest.ENCODER_DIR / name
        path.write_bytes(b"stand-in for " + name.encode())
        entries[f"{manifest.ENCODER_DIR}/{name}"] = {"bytes": path.stat().st_size, "sha256": store.sha256_file(path)}
    return entries


def test_the_optional_encoder_group_is_all_or_nothing(index):
    """The question encoder's files are optional, as a group fixed by the code: listing part of it is refused."""
    gen = current_generation(index)
    part = _with_encoder_files(gen, manifest.ENCODER_FILES[:1])
    edit_manifest(index, lambda m: m["artifacts"].update(part), reseal=True)
    assert "not listed" in refused(index)


def test_a_listed_encoder_file_is_checked_like_any_artifact(index):
    gen = current_generation(index)
    whole = _with_encoder_files(gen, manifest.ENCODER_FILES)
    edit_manifest(index, lambda m: m["artifacts"].update(whole), reseal=True)
    load_index(index).close()  # the whole group, intact: loads
    (gen / manifest.ENCODER_DIR / manifest.ENCODER_FILES[1]).write_bytes(b"edited")
    with pytest.raises(IndexCorrupt, match="rebuild"):
        load_index(index)
    (gen / manifest.ENCODER_DIR / manifest.ENCODER_FILES[1]).unlink()
    with pytest.raises(IndexCorrupt, match="missing"):
        load_index(index)


def test_an_unlisted_file_in_the_encoder_folder_is_refused(index):
    gen = current_generation(index)
    whole = _with_encoder_files(gen, manifest.ENCODER_FILES)
    edit_manifest(index, lambda m: m["artifacts"].update(whole), reseal=True)
    (gen / manifest.ENCODER_DIR / "extra.onnx").write_bytes(b"x")
    with pytest.raises(IndexCorrupt, match="did not write"):
        load_index(index)
