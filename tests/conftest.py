"""Shared fixtures. Unit tests use a deterministic fake embedder; tests marked `model` load the real one once."""

from __future__ import annotations

import atexit
import gc
import hashlib
import os
import re
import shutil
import socket
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from .shipped_corpus import copy_shipped_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


def _shipped_corpus() -> Path:
    """The default corpus the tests read: a verified copy of exactly the shipped files (tests/shipped_corpus.py),
    made once per run, so that documents a user adds to corpus/ (uploads included) never change what is tested."""
    folder = Path(tempfile.mkdtemp(prefix="tqa-shipped-corpus-"))
    atexit.register(shutil.rmtree, folder, True)
    return copy_shipped_corpus(folder / "corpus")  # a changed shipped file stops the run, saying how to restore it


CORPUS = _shipped_corpus()


class FakeEmbedder:
    """Bag of lowercased words hashed into a small vector: deterministic, fast, and similar texts score high."""

    name = "fake-hash-64"
    dim = 64
    max_tokens = 256

    def __init__(self) -> None:
        self.calls: list[int] = []  # how many texts each encode() call received

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[i, h % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm:
                out[i] /= norm
        return out

    @property
    def embedded(self) -> int:
        return sum(self.calls)


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


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


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (servers in tests bind loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def collect_gradio_garbage():
    """Gradio opens asyncio event loops it never closes (gradio.utils.safe_get_lock); collect them when a module
    that built apps ends, so their ResourceWarnings don't surface in whichever later test triggers a collection."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
