"""One settings object: defaults, overridable by ``TQA_*`` environment variables and by arguments."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODES = ("hybrid", "dense", "bm25")


def _env(name: str, default: Any, cast: type) -> Any:
    raw = os.environ.get(f"TQA_{name.upper()}")
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        from .errors import TqaError

        raise TqaError(f"TQA_{name.upper()}={raw!r} is not a valid {cast.__name__}; unset it or fix it.") from None


@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut. Stored in the manifest: changing any of these needs a rebuild."""

    # Chosen with `tqa eval` (eval/README.md): sections of this document and of typical reports fit whole, and
    # each paragraph is embedded on its own as well, so nothing is lost to the model's 256-token window.
    chunk_size: int = 1600
    chunk_overlap: int = 100

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Settings:
    index_dir: str = "index"
    model: str = DEFAULT_MODEL
    chunking: ChunkSettings = field(default_factory=ChunkSettings)
    mode: str = "hybrid"
    k: int = 5
    # Abstain when the calibrated relevance of the best passage is below this. None: use the value
    # calibrated for the index at build time (stored in the manifest).
    abstain_threshold: float | None = None
    max_question_chars: int = 2000
    max_file_bytes: int = 50 * 1024 * 1024
    batch_size: int = 32
    queue_size: int = 64  # web requests allowed to wait; beyond it the server answers "queue full" at once

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        base = cls(
            index_dir=_env("index", cls.index_dir, str),
            model=_env("model", cls.model, str),
            chunking=ChunkSettings(
                chunk_size=_env("chunk_size", ChunkSettings.chunk_size, int),
                chunk_overlap=_env("chunk_overlap", ChunkSettings.chunk_overlap, int),
            ),
            mode=_env("mode", cls.mode, str),
            abstain_threshold=_env("abstain_threshold", None, float),
            max_question_chars=_env("max_question_chars", cls.max_question_chars, int),
            batch_size=_env("batch_size", cls.batch_size, int),
            queue_size=_env("queue_size", cls.queue_size, int),
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})
