"""What a build learns (tqa.adapt) differs with the shape of the corpus and is recorded in its manifest (the real
model): long sectioned documents against short title-and-paragraph ones made of the same text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tqa import adapt
from tqa.chunking import Chunker, sections
from tqa.loaders import extract
from tqa.store import KeywordIndex

from .support import CORPUS

pytestmark = [pytest.mark.model, pytest.mark.slow]


def _learn(docs: list[tuple[str, bytes]], embedder) -> dict:
    chunker = Chunker()
    chunks = [c for name, raw in docs for c in chunker.chunk(extract(name, raw))]
    vectors = embedder.encode([c.search_text for c in chunks])
    unit_texts = [t for c in chunks for t in c.unit_search_texts()]
    units = embedder.encode(unit_texts) if unit_texts else np.zeros((0, embedder.dim), dtype=np.float32)
    return adapt.learn(adapt.passages_of(chunks), vectors, units, embedder, KeywordIndex.analyze)


def _short_documents(path: Path) -> list[tuple[str, bytes]]:
    """The document's paragraphs as short documents: one file each, its section heading as the title line (the shape
    of a set of entity descriptions: a title and one paragraph)."""
    doc = extract(path.name, path.read_bytes())
    out = []
    for sec in sections(doc):
        title = " - ".join(sec.trail) or path.stem
        for para in doc.text[sec.start:sec.end].split("\n"):
            if len(para.split()) >= 20:
                out.append((f"{len(out):03d}.txt", f"{title}\n{' '.join(para.split())}\n".encode()))
    return out


def _build(tmp: Path, docs: list[tuple[str, bytes]], embedder) -> dict:
    """What a build of ``docs`` learned, as its manifest records it."""
    from tqa import build_index
    from tqa.store import read_manifest

    (tmp / "corpus").mkdir()
    for name, raw in docs:
        (tmp / "corpus" / name).write_bytes(raw)
    build_index(tmp / "corpus", tmp / "index", embedder=embedder)
    ranking = read_manifest(tmp / "index").ranking
    assert ranking is not None
    return ranking.to_dict()


def test_sectioned_and_short_documents_learn_different_settings(real_embedder, tmp_path) -> None:
    path = next(CORPUS.glob("*.txt"))
    (tmp_path / "long").mkdir()
    (tmp_path / "short").mkdir()
    long = _build(tmp_path / "long", [(path.name, path.read_bytes())], real_embedder)
    short = _build(tmp_path / "short", _short_documents(path), real_embedder)
    # the build learns what adapt.learn learns from the same chunks
    assert {k: long[k] for k in ("unit_weight", "keyword_weight")} == \
        {k: _learn([(path.name, path.read_bytes())], real_embedder)[k] for k in ("unit_weight", "keyword_weight")}
    assert long["queries"] >= adapt.MIN_QUERIES and short["queries"] >= adapt.MIN_QUERIES
    chosen = ("unit_weight", "keyword_weight")
    assert {k: long[k] for k in chosen} != {k: short[k] for k in chosen}, (long["why"], short["why"])
    # sections of several paragraphs: the best paragraph earns weight, as the sentences drawn from them say;
    # one-paragraph documents are scored as whole passages
    assert long["unit_weight"] > 0, long["why"]
    assert short["unit_weight"] == 0, short["why"]
    assert "whole passages" in short["why"] and "best paragraph" in long["why"]
