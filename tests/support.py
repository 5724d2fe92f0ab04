"""What the tests share besides fixtures (those are in conftest.py): the verified copy of the shipped corpus, the
fake embedder unit tests use (a real implementation of tqa's Embedder interface), a free port for test servers."""

from __future__ import annotations

import atexit
import hashlib
import re
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np

from tqa.embedding import Embedder

from .shipped_corpus import copy_shipped_corpus

ROOT = Path(__file__).resolve().parent.parent


def _shipped_corpus() -> Path:
    """The default corpus the tests read: a verified copy of exactly the shipped files (tests/shipped_corpus.py),
    made once per run, so that documents a user adds to corpus/ (uploads included) never change what is tested."""
    folder = Path(tempfile.mkdtemp(prefix="tqa-shipped-corpus-"))
    atexit.register(shutil.rmtree, folder, True)
    return copy_shipped_corpus(folder / "corpus")  # a changed shipped file stops the run, saying how to restore it


CORPUS = _shipped_corpus()


class FakeEmbedder(Embedder):
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


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (servers in tests bind loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
