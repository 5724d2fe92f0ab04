"""One settings object: defaults, overridable by ``TQA_*`` environment variables and by arguments.

Every value is checked here, once, whichever way it arrived (environment, ``Settings(...)``, ``replace``): a
value out of range is refused with one line naming the variable and the range it takes, before anything is
read, indexed or searched. This module is the only reader of ``TQA_*`` variables: the two read before a whole
``Settings`` can be (the CLI's default ``--index`` and ``TQA_DEBUG``, which must work even when another setting
is out of range) have their own functions here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import SettingsError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODES = ("hybrid", "dense", "bm25")
MAX_K = 20  # passages per answer, in every front end: each is a quoted passage a reader has to read
MAX_SEARCH_K = 1000  # passages one search may rank (Assistant.search: evaluation reads deep rankings)
# How the model runs (embedding.py): "auto" is bf16 where the CPU computes it natively, fp32 elsewhere.
PRECISIONS = ("auto", "fp32", "bf16")
# How passages are ranked: "learned", the weights the build learned from the corpus's own sentences (adapt.py,
# recorded in the manifest; an index without them ranks as shipped), or "shipped", the fixed weights measured in
# eval/README.md. Learned is the default: on the project's set, the treaty set and MS MARCO it lost nowhere against
# the shipped weights (eval/README.md, "Wired in").
RANKINGS = ("learned", "shipped")
DEFAULT_RANKING = "learned"
DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024  # a corpus file larger than this is skipped, an upload refused
# Above this many vectors (chunks, and separately units) the index is compressed (``vectors.CompressedVectors``). An
# inverted file holds every vector as 1,536 bytes of float32 in memory: at a million chunks that is 1.45 GiB of
# vectors and 0.73 GiB of units, and a process answering from it holds 4.4 GiB (bench/results.md, "Memory"). At
# two million chunks it would hold about 9 GiB, more than a laptop spares; the compressed index holds 96 bytes of
# code a vector (plus the pages of stored rows it reads), and gave recall@10 0.98 at a million vectors with 200
# candidates re-ranked. Below the threshold the uncompressed index stays: it is exact in its scores without any
# file read, and fits. A build reads it from ``Settings.compress_above`` (TQA_COMPRESS_ABOVE).
COMPRESS_ABOVE = 2_000_000

# (minimum, maximum) of each number. Ranges are generous: they keep out what cannot work (a zero or negative
# size, an overlap as long as a chunk) and what would exhaust memory, not what is merely unusual.
CHUNK_SIZE_RANGE = (50, 1_000_000)  # characters
BATCH_SIZE_RANGE = (1, 4096)  # texts per encoding batch
QUESTION_CHARS_RANGE = (1, 100_000)  # a question is cut to this many characters (the model reads ~256 tokens)
FILE_BYTES_RANGE = (1, 1 << 40)
QUEUE_SIZE_RANGE = (1, 10_000)  # web requests allowed to wait
COMPRESS_ABOVE_RANGE = (0, 1 << 40)  # vectors
# A cosine similarity lies in [-1, 1]; a threshold a little beyond is allowed to mean "never abstain" (below -1)
# or "always abstain" (above 1). NaN and infinities are not thresholds.
THRESHOLD_RANGE = (-2.0, 2.0)


def _env_name(name: str) -> str:
    return f"TQA_{name.upper()}"


def _shown(value: Any) -> str:
    """A value for an error message: short, on one line, control characters escaped."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return f"a {type(value).__name__} too long to show"
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(label: str, value: Any, lo: int, hi: int, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        fix = "; unset it or fix it." if label.startswith("TQA_") else "."
        raise SettingsError(f"{label} must be a whole number from {lo} to {hi}{what}, not {_shown(value)}{fix}")
    return value


def _lower(text: str) -> str | None:
    return text.strip().lower() or None


def _env(name: str, default: Any, cast: Any) -> Any:
    raw = os.environ.get(_env_name(name))
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        kind = "a whole number" if cast is int else "a number"
        raise SettingsError(f"{_env_name(name)}={_shown(raw)} is not {kind}; unset it or fix it.") from None


@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut. Stored in the manifest: changing any of these needs a rebuild."""

    # Chosen with `tqa eval` (eval/README.md): sections of this document and of typical reports fit whole, and
    # each paragraph is embedded on its own as well, so nothing is lost to the model's 256-token window.
    chunk_size: int = 1600
    chunk_overlap: int = 100

    def __post_init__(self) -> None:
        _whole("TQA_CHUNK_SIZE", self.chunk_size, *CHUNK_SIZE_RANGE, " characters")
        # An overlap of half a chunk already embeds every character twice; more would only multiply the chunks
        # (and the splitter cannot advance at all once the overlap reaches the chunk size).
        _whole("TQA_CHUNK_OVERLAP", self.chunk_overlap, 0, self.chunk_size // 2,
               f" characters (half of TQA_CHUNK_SIZE, {self.chunk_size})")

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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    batch_size: int = 32
    queue_size: int = 64  # web requests allowed to wait; beyond it the server answers "queue full" at once
    # The precision a build embeds at (one of PRECISIONS); None when not asked for: a new index is built at
    # "auto", an update keeps its index's precision (an index's vectors are never of two precisions).
    precision: str | None = None
    ranking: str = DEFAULT_RANKING
    # BM25's weight in the hybrid score, from 0 (dense only) to 1 (BM25 only); None: the ranking's (``ranking``)
    keyword_weight: float | None = None
    # A build compresses a vector index (chunks', units') of more than this many vectors (see COMPRESS_ABOVE)
    compress_above: int = COMPRESS_ABOVE

    def __post_init__(self) -> None:
        for label, value in (("TQA_INDEX", self.index_dir), ("TQA_MODEL", self.model)):
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise SettingsError(f"{label} must be a name or a folder, not {_shown(value)}; unset it or fix it.")
        if not isinstance(self.chunking, ChunkSettings):
            raise SettingsError(f"chunking must be a ChunkSettings, not {_shown(self.chunking)}.")
        if self.mode not in MODES:
            raise SettingsError(f"{_env_name('mode')} must be one of {', '.join(MODES)}, not {_shown(self.mode)}; "
                                "unset it or fix it.")
        _whole("k (passages per answer)", self.k, 1, MAX_K)
        t = self.abstain_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
                              or not THRESHOLD_RANGE[0] <= t <= THRESHOLD_RANGE[1]):
            raise SettingsError(
                f"{_env_name('abstain_threshold')} must be a number from {THRESHOLD_RANGE[0]:g} to "
                f"{THRESHOLD_RANGE[1]:g} (it is compared with a cosine similarity), not {_shown(t)}; "
                "unset it or fix it."
            )
        _whole("TQA_MAX_QUESTION_CHARS", self.max_question_chars, *QUESTION_CHARS_RANGE, " characters")
        _whole("max_file_bytes", self.max_file_bytes, *FILE_BYTES_RANGE, " bytes")
        _whole("TQA_BATCH_SIZE", self.batch_size, *BATCH_SIZE_RANGE)
        _whole("TQA_QUEUE_SIZE", self.queue_size, *QUEUE_SIZE_RANGE)
        _whole("TQA_COMPRESS_ABOVE", self.compress_above, *COMPRESS_ABOVE_RANGE, " vectors")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise SettingsError(f"{_env_name('precision')} must be one of {', '.join(PRECISIONS)}, not "
                                f"{_shown(self.precision)}; unset it or fix it.")
        w = self.keyword_weight
        if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w)
                              or not 0 <= w <= 1):
            raise SettingsError(f"{_env_name('keyword_weight')} must be a number from 0 (dense only) to 1 (BM25 "
                                f"only), not {_shown(w)}; unset it or fix it.")
        if self.ranking not in RANKINGS:
            raise SettingsError(f"{_env_name('ranking')} must be one of {', '.join(RANKINGS)}, not "
                                f"{_shown(self.ranking)}; unset it or fix it.")

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Defaults, then ``TQA_*`` variables, then ``overrides`` (those not None); checked once, together."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        values: dict[str, Any] = {
            "index_dir": _env("index", cls.index_dir, str),
            "model": _env("model", cls.model, str),
            "mode": _env("mode", cls.mode, str),
            "abstain_threshold": _env("abstain_threshold", None, float),
            "max_question_chars": _env("max_question_chars", cls.max_question_chars, int),
            "batch_size": _env("batch_size", cls.batch_size, int),
            "queue_size": _env("queue_size", cls.queue_size, int),
            "precision": _env("precision", None, _lower),
            "ranking": _env("ranking", cls.ranking, _lower),
            "keyword_weight": _env("keyword_weight", None, float),
            "compress_above": _env("compress_above", cls.compress_above, int),
        }
        if "chunking" not in overrides:
            values["chunking"] = ChunkSettings(
                chunk_size=_env("chunk_size", ChunkSettings.chunk_size, int),
                chunk_overlap=_env("chunk_overlap", ChunkSettings.chunk_overlap, int),
            )
        return cls(**{**values, **overrides})


def default_index() -> str:
    """The index folder when none is given: ``TQA_INDEX``, else ``index``."""
    return str(_env("index", Settings.index_dir, str))


def debug_requested() -> bool:
    """Whether ``TQA_DEBUG=1`` asks for tracebacks of unexpected errors (read on its own: it must work even when
    another setting is out of range)."""
    return os.environ.get(_env_name("debug")) == "1"
