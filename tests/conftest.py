"""Shared fixtures. Unit tests use a deterministic fake embedder; tests marked `model` load the real one once. What
tests import (the fake embedder, the shipped corpus's copy, free ports) is in support.py: no test imports conftest."""

from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

import pytest

from .support import CORPUS, FakeEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI and the web app load an index's model by name: they get the fake embedder instead."""
    import tqa.assistant

    monkeypatch.setattr(tqa.assistant, "load_embedder", lambda *a: FakeEmbedder())


@pytest.fixture
def no_background(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the reads of an index check its blocks (the background check would find damage on its own
    schedule)."""
    import tqa.integrity

    monkeypatch.setattr(tqa.integrity.Checks, "start", lambda self, nice=10: None)


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "sweden.md").write_text(
        "# Sweden\n\nSweden criminalises the purchase of sex rather than its sale.\n\n"
        "## Results\n\nTrafficking for sexual exploitation fell after the law.\n",
        encoding="utf-8",
    )
    (root / "tech.txt").write_text(
        "Technology and trafficking\n"
        "Traffickers use social media to recruit victims. Cryptocurrencies make payments hard to trace.\n\n"
        "Prevention\n"
        "Data analytics helps identify trafficking patterns and victims.\n",
        encoding="utf-8",
    )
    (root / "page.html").write_text(
        "<html><head><title>x</title><script>alert(1)</script></head><body>"
        "<h1>Partnerships</h1><p>NGOs train police officers to recognise victims.</p>"
        "<h2>Funding</h2><p>Many countries lack funding for shelters &amp; support.</p></body></html>",
        encoding="utf-8",
    )
    return root


@pytest.fixture(scope="session")
def real_embedder():
    from tqa.embedding import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def default_index(tmp_path_factory: pytest.TempPathFactory, real_embedder) -> Path:
    """The default corpus indexed once with the real model."""
    from tqa import build_index

    index = tmp_path_factory.mktemp("default") / "index"
    build_index(CORPUS, index, embedder=real_embedder)
    return index


@pytest.fixture(scope="module")
def collect_gradio_garbage():
    """Gradio opens asyncio event loops it never closes (gradio.utils.safe_get_lock); collect them when a module
    that built apps ends, so their ResourceWarnings don't surface in whichever later test triggers a collection."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
