"""The fake embedder unit tests use: a real implementation of tqa's Embedder interface, in a module with no side
effects, so that Ray workers can import it too."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from tqa.embedding import Embedder


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
