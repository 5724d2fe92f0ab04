"""The index format: the files a generation holds, and its manifest as a typed record.

The manifest is read, checked and written here and nowhere else; the rest of the code reads its attributes
(``manifest.model.name``, ``manifest.files[source].sha256``), never its JSON keys. ``Manifest.from_dict`` checks
every field once, so no reader meets a missing key or a string where it expects a number: a manifest that is not
what tqa writes is refused in one line (``IndexCorrupt``) naming the field and the fix.

Sections are small frozen dataclasses, each recording what one part of tqa needs to read the index back: the model
(``ModelInfo``), the chunking (``config.ChunkSettings``), the keyword analyzer (``keywords.AnalyzerSettings``), the
vector index FAISS built (``vectors.VectorIndexInfo``), each file (``FileEntry``), the counts, the calibration and
the artifacts' sizes and checksums. The section types of other modules are checked here too.

**Adding a section** (a ranking learned at build time, a tuned model, per-file metadata): a frozen dataclass with
``to_dict`` and a parser below, and a field of ``Manifest`` (or ``FileEntry``) that defaults to None and is left
out of the JSON when None, so that indexes written before it still load. **Unknown fields are refused**, at the top
and in every section: a section this tqa does not know may change how the index must be searched or read, and
answering from such an index as if it were not there would be silently wrong. An index written by a newer tqa is
therefore refused with "upgrade tqa, or rebuild", as a newer format version is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .config import ChunkSettings
from .errors import REBUILD_HINT, IndexCorrupt, SettingsError, first_line, shown
from .keywords import AnalyzerSettings
from .loaders import NotReadable, Skipped, read_bounded
from .vectors import VectorIndexInfo

# 2: the manifest carries its own checksum (MANIFEST_SHA) and the corpus path relative to the index; generations
# carry owner and lease files. Format 1 (the same artifacts, no manifest checksum) is still read, with its checks.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
MANIFEST_SHA = "manifest_sha256"
VECTORS = "vectors.faiss"
UNITS = "units.faiss"
CHUNKS = "chunks.jsonl"
DOCUMENTS = "documents.jsonl"
BM25_DIR = "bm25"
BM25_FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "params.index.json",
              "vocab.index.json")
# The artifacts of formats 1 and 2, fixed here (never read from the manifest): each must be listed and check out.
REQUIRED_ARTIFACTS = frozenset({VECTORS, UNITS, CHUNKS, DOCUMENTS, *(f"{BM25_DIR}/{n}" for n in BM25_FILES)})
# The stored rows of a compressed vector index (vectors.CompressedVectors), beside its codes: present exactly when
# the manifest's vector_index (or its units) records stored rows, each on its own (units outnumber chunks).
VECTORS_STORED = "vectors.f16.npy"
UNITS_STORED = "units.f16.npy"
STORED_ARTIFACTS = frozenset({VECTORS_STORED, UNITS_STORED})
# The question encoder (query_encoder.py), a group that is all there or all absent: an index without it (built by
# an older tqa, or with a model that cannot be exported) answers through sentence-transformers.
ENCODER_DIR = "encoder"
ENCODER_FILES = ("model.onnx", "tokenizer.json", "config.json")
OPTIONAL_ARTIFACTS = frozenset(f"{ENCODER_DIR}/{n}" for n in ENCODER_FILES)
# The arrays of the chunk table read on demand (chunktable.py): where each row lies in chunks.jsonl, its units, its
# document. A group that is all there (an index written since) or all absent (written before: its rows are read
# whole when it loads, as they always were); each of them, and chunks.jsonl with them, is block-checked.
CHUNK_OFFSETS = "chunks.offsets.npy"
CHUNK_UNITS = "chunks.units.npy"
CHUNK_SOURCES = "chunks.sources.npy"
TABLE_ARTIFACTS = frozenset({CHUNK_OFFSETS, CHUNK_UNITS, CHUNK_SOURCES})
# Beside them, since: each row's text key (a 64-bit hash of its words) and its start and end in its document, what
# a search needs of every candidate to drop passages that overlap or repeat another (retrieval.drop_overlaps)
# without parsing their rows. Absent from a table written before: its rows are parsed for that, as they were.
CHUNK_KEYS = "chunks.keys.npy"
# Big artifacts a reader reads in pieces: from integrity.BIG_BYTES on, each has a companion ``<file>.blocks`` with the
# SHA-256 of each of its blocks (its own listed in the file's entry), and is checked block by block as it is read
# (integrity.py). The companions are not artifacts of their own. The FAISS files are among them: an inverted file's
# lists are mapped and each verified when a search first scans it (vectors.py); other kinds are verified by their
# blocks, then read whole.
BLOCK_CHECKED = frozenset({DOCUMENTS, VECTORS_STORED, UNITS_STORED, f"{BM25_DIR}/data.csc.index.npy",
                           f"{BM25_DIR}/indices.csc.index.npy", CHUNKS, *TABLE_ARTIFACTS, CHUNK_KEYS, VECTORS,
                           UNITS})
# The files of the chunk table read on demand (chunktable.py): a small one is verified whole at load and its
# verified bytes kept; a big one is read through its block checks.
TABLE_FILES = frozenset({CHUNKS, *TABLE_ARTIFACTS, CHUNK_KEYS})
BLOCKS_SUFFIX = ".blocks"
COMPANIONS = frozenset(rel + BLOCKS_SUFFIX for rel in BLOCK_CHECKED)
# read by name, nothing else (the companions are there only when listed)
SUBFOLDERS = {BM25_DIR: frozenset(BM25_FILES), ENCODER_DIR: frozenset(ENCODER_FILES)}
FORMAT_FILES = REQUIRED_ARTIFACTS | OPTIONAL_ARTIFACTS | TABLE_ARTIFACTS | {CHUNK_KEYS} | STORED_ARTIFACTS \
    | COMPANIONS | {MANIFEST}
# A manifest grows with the corpus (a few hundred bytes a document, plus the name prefixes): 256 MiB is about a
# million documents, and it is parsed whole in memory.
MAX_MANIFEST_BYTES = 256 << 20
# The lowest abstention threshold: calibration never sets one below it, and an index whose calibration records none
# abstains below it.
THRESHOLD_FLOOR = 0.15


def artifact_set(listed: set[str] | frozenset[str]) -> frozenset[str] | None:
    """The artifacts an index must hold given the ones it lists (the required ones, with or without the whole
    optional group, with or without the whole group of the chunk table's arrays (and their row keys with them, or
    not), with the stored rows of its compressed vector indexes), or None when the listed set is none of those.
    Which stored rows it must hold is checked against the manifest's vector_index (``stored_artifacts``)."""
    stored = set(listed) & STORED_ARTIFACTS
    for allowed in (REQUIRED_ARTIFACTS, REQUIRED_ARTIFACTS | OPTIONAL_ARTIFACTS):
        for table in (frozenset(), TABLE_ARTIFACTS, TABLE_ARTIFACTS | {CHUNK_KEYS}):
            if set(listed) == allowed | table | stored:
                return allowed | table | stored
    return None


def stored_artifacts(vector_index: VectorIndexInfo) -> frozenset[str]:
    """The stored-row files the vector indexes a manifest describes need (none unless compressed)."""
    out = {VECTORS_STORED} if vector_index.compressed else set()
    if vector_index.units is not None and vector_index.units.compressed:
        out.add(UNITS_STORED)
    return frozenset(out)


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_bytes(obj: Any, **kw: Any) -> bytes:
    """JSON as UTF-8 bytes, whatever the strings hold. A lone surrogate (how Python spells a file name that is not
    valid UTF-8) cannot be encoded: it is written as its ``\\u`` escape, which reads back as the same string."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, **kw)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON (sorted keys, no spaces, ASCII escapes), its own checksum left out."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_SHA}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# ---------------------------------------------------------------- the sections tqa itself defines here


@dataclass(frozen=True)
class ModelInfo:
    """The embedding model the vectors were made with: an index answers only with this model."""

    name: str
    dim: int
    max_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class FileEntry:
    """One indexed file: its identity (the SHA-256 of its bytes; a file of the same content is the same file) and
    what extraction found. Every field may be missing from a manifest that a tool other than the build wrote."""

    sha256: str | None = None
    size: int | None = None  # bytes
    format: str | None = None
    chars: int | None = None  # of the extracted text
    chunks: int | None = None
    pages: int | None = None
    warnings: tuple[str, ...] = ()
    # What the source line shows besides the name (an e-mail's "from" and "date"; an attachment's are its
    # message's). Left out of the JSON when empty.
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    # Scanned pages not read because OCR was not available (Tesseract or its language data missing): the next
    # build reads the file again once it is. Left out of the JSON when None.
    ocr_pending: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sha256": self.sha256, "bytes": self.size, "format": self.format, "chars": self.chars,
                             "chunks": self.chunks}
        d = {k: v for k, v in d.items() if v is not None}
        d = {**d, "pages": self.pages, "warnings": list(self.warnings)}
        if self.metadata:
            d["metadata"] = dict(self.metadata)
        if self.ocr_pending is not None:
            d["ocr_pending"] = self.ocr_pending
        return d


@dataclass(frozen=True)
class Counts:
    files: int
    chunks: int
    units: int | None = None  # paragraph units (recorded since they exist)

    def to_dict(self) -> dict[str, Any]:
        d = {"files": self.files, "chunks": self.chunks}
        return d if self.units is None else {**d, "units": self.units}


@dataclass(frozen=True)
class Calibration:
    """How well off-topic probe questions match this index (retrieval.calibrate), and the abstention threshold
    placed above them."""

    abstain_threshold: float | None = None
    probes: int | None = None
    probe_best_max: float | None = None
    probe_best_p90: float | None = None
    probe_best_median: float | None = None

    @property
    def threshold(self) -> float:
        """The threshold this index abstains below (the floor when none was recorded)."""
        return THRESHOLD_FLOOR if self.abstain_threshold is None else float(self.abstain_threshold)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


FUSIONS = ("scores",)  # how the ranking mixes BM25 with the dense score: by score (retrieval.search)


@dataclass(frozen=True)
class Ranking:
    """What the build learned about ranking this corpus, without labels (``adapt.learn``): the weight of a
    passage's best paragraph in its dense score and BM25's weight, why (one sentence, for ``tqa info``), and the
    figures it was chosen on: how many pseudo-queries, their MRR@10 with this setting, with each signal alone and
    with the shipped setting (``baseline``), and the best setting of the whole grid (``grid_best``, reported,
    not used). Retrieval uses it unless ``TQA_RANKING=shipped``; an index without one ranks as shipped."""

    unit_weight: float
    keyword_weight: float
    why: str
    queries: int
    fusion: str = "scores"
    mrr: float | None = None
    baseline: dict[str, float] = field(default_factory=dict)
    grid_best: dict[str, float | str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"unit_weight": self.unit_weight, "keyword_weight": self.keyword_weight,
                             "fusion": self.fusion, "why": self.why, "queries": self.queries}
        if self.mrr is not None:
            d["mrr"] = self.mrr
        if self.baseline:
            d["baseline"] = dict(self.baseline)
        if self.grid_best:
            d["grid_best"] = dict(self.grid_best)
        return d

    @classmethod
    def learned(cls, result: dict[str, Any]) -> Ranking:
        """The record of what ``adapt.learn`` returned."""
        return cls(unit_weight=float(result["unit_weight"]), keyword_weight=float(result["keyword_weight"]),
                   fusion=str(result.get("fusion", "scores")), why=str(result["why"]),
                   queries=int(result["queries"]), mrr=result.get("mrr"),
                   baseline={k: float(v) for k, v in result.get("baseline", {}).items()},
                   grid_best=dict(result.get("grid_best", {})))


TUNED_DIR = "models"  # the index folder's subfolder holding tuned models, each named by its content hash
TUNED_FOLDER = re.compile(rf"{TUNED_DIR}/[0-9a-f]{{16}}")  # models/<the first 16 hex digits of its SHA-256>


@dataclass(frozen=True)
class Tuning:
    """The index's model was tuned on its own passages (``tqa tune``; tuning.py): the model it was tuned from, the
    tuned model's folder inside the index folder (``models/<hash prefix>``, also the name the manifest's ``model``
    records) and its content hash (checked before the model is loaded), and the figures it was kept on: training
    pairs, held-out MRR@10 before and after, the question set's MRR@10 before and after when there was one, the
    time it took and the settings."""

    base_model: str
    folder: str  # relative to the index folder
    model_sha256: str  # tuning.model_digest of the folder's files
    pairs: int
    held_out: int
    held_out_mrr_before: float
    held_out_mrr_after: float
    seconds: float
    created: str
    settings: dict[str, float | int | str] = field(default_factory=dict)
    questions: str | None = None  # the question set checked, when there was one
    questions_mrr_before: float | None = None
    questions_mrr_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "base_model": self.base_model, "folder": self.folder, "model_sha256": self.model_sha256,
            "pairs": self.pairs, "held_out": self.held_out, "held_out_mrr_before": self.held_out_mrr_before,
            "held_out_mrr_after": self.held_out_mrr_after, "seconds": self.seconds, "created": self.created,
            "settings": dict(self.settings)}
        for key in ("questions", "questions_mrr_before", "questions_mrr_after"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d


@dataclass(frozen=True)
class Artifact:
    """A file of the generation: its size and SHA-256, checked when the index is loaded; for a big file of
    ``BLOCK_CHECKED``, the size of its blocks and the SHA-256 of its companion file of block digests instead, and
    it is checked block by block as it is read (integrity.py)."""

    size: int
    sha256: str
    block_bytes: int | None = None
    blocks_sha256: str | None = None

    @property
    def by_blocks(self) -> bool:
        return self.block_bytes is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"bytes": self.size, "sha256": self.sha256}
        if self.block_bytes is not None:
            d.update(block_bytes=self.block_bytes, blocks_sha256=self.blocks_sha256)
        return d


# ---------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Manifest:
    """What an index generation holds and how it was made (see the module docstring).

    A build makes one with ``artifacts`` empty; ``store.publish`` lists the artifacts it wrote and seals it
    (``sealed``: its own checksum). ``precision`` is None for vectors of an embedder that does not say.
    """

    created: str
    corpus: str  # the corpus folder, absolute
    model: ModelInfo
    precision: str | None
    chunking: ChunkSettings
    vector_index: VectorIndexInfo
    files: dict[str, FileEntry]
    skipped: tuple[Skipped, ...]
    counts: Counts
    calibration: Calibration
    names: tuple[str, ...] = ()  # prefixes and initials of the corpus's capitalised words (the abstention checks)
    corpus_relative: str | None = None  # the corpus folder relative to the index folder (since format 2)
    analyzer: AnalyzerSettings | None = None  # None: written before it was recorded, so today's analyzer
    # the documents' main language (abstention.detect_language; "und": none it knows); None: written before it
    # was recorded (the index detects it from its chunks when loaded)
    language: str | None = None
    ranking: Ranking | None = None  # learned at build time (adapt.py); None: written before, ranks as shipped
    tuning: Tuning | None = None  # the model was tuned on the corpus (tqa tune); None: the model as published
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    tqa_version: str = __version__
    checksum: str | None = None  # its own SHA-256 (manifest_digest), as read or sealed; format 1 has none

    @property
    def sources(self) -> list[str]:
        """The indexed documents, sorted."""
        return sorted(self.files)

    @property
    def has_encoder(self) -> bool:
        """Whether the generation holds the question encoder (query_encoder.py)."""
        return OPTIONAL_ARTIFACTS <= set(self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's JSON object (``from_dict(m.to_dict()) == m`` for every manifest tqa writes)."""
        d: dict[str, Any] = {
            "format_version": self.format_version, "tqa_version": self.tqa_version, "created": self.created,
            "corpus": self.corpus, "corpus_relative": self.corpus_relative, "model": self.model.to_dict(),
            "precision": self.precision, "chunking": self.chunking.to_dict(),
            "analyzer": None if self.analyzer is None else self.analyzer.to_dict(),
            "vector_index": self.vector_index.to_dict(),
            "files": {source: entry.to_dict() for source, entry in self.files.items()},
            "skipped": [s.to_dict() for s in self.skipped], "counts": self.counts.to_dict(),
            "calibration": self.calibration.to_dict(), "names": list(self.names), "language": self.language,
            "ranking": None if self.ranking is None else self.ranking.to_dict(),
            "tuning": None if self.tuning is None else self.tuning.to_dict(),
            "artifacts": {rel: a.to_dict() for rel, a in self.artifacts.items()}, MANIFEST_SHA: self.checksum,
        }
        # left out when None (absent in older manifests)
        optional = ("corpus_relative", "analyzer", "language", "ranking", "tuning", MANIFEST_SHA)
        return {k: v for k, v in d.items() if v is not None or k not in optional}

    def sealed(self) -> Manifest:
        """This manifest with its own checksum."""
        return dataclasses.replace(self, checksum=manifest_digest(self.to_dict()))

    def to_bytes(self) -> bytes:
        """The file's content: indented JSON, UTF-8."""
        return json_bytes(self.to_dict(), indent=2) + b"\n"

    @classmethod
    def from_dict(cls, d: Any, where: str = "the manifest") -> Manifest:
        """The manifest a JSON object describes, every field checked; raises IndexCorrupt naming what is wrong."""
        try:
            return _manifest(d)
        except _Invalid as exc:
            raise IndexCorrupt(f"The index manifest {where} is not valid: {exc}. {REBUILD_HINT}") from None
        except _Unknown as exc:
            raise IndexCorrupt(
                f"The index manifest {where} holds {exc}, which this tqa does not know: it was written by a newer tqa. "
                f"Upgrade tqa, or {REBUILD_HINT[0].lower()}{REBUILD_HINT[1:]}") from None

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Manifest:
        """A manifest file's content, checked: JSON, a format this tqa reads, its own checksum (format 2), its
        fields."""
        try:
            d = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise IndexCorrupt(f"The index manifest {where} is unreadable ({first_line(exc)}). {REBUILD_HINT}") \
                from None
        if not isinstance(d, dict) or "format_version" not in d:
            raise IndexCorrupt(f"{where} is not a tqa manifest. {REBUILD_HINT}")
        version = d["format_version"]
        if not _is_count(version) or version < 1:
            raise IndexCorrupt(f"{where} names no index format tqa knows ({repr(version)[:40]}). {REBUILD_HINT}")
        if version > FORMAT_VERSION:
            raise IndexCorrupt(
                f"The index was written by a newer tqa (format {version}; this tqa reads format {FORMAT_VERSION}). "
                f"Upgrade tqa, or {REBUILD_HINT[0].lower()}{REBUILD_HINT[1:]}"
            )
        if version >= 2 or MANIFEST_SHA in d:
            try:
                sealed = d.get(MANIFEST_SHA) == manifest_digest(d)
            except ValueError:  # a number JSON cannot write back (1e999 reads as infinity)
                sealed = False
            if not sealed:
                raise IndexCorrupt(f"The index manifest {where} fails its own checksum (damaged or edited). "
                                   f"{REBUILD_HINT}")
        return cls.from_dict(d, where)

    @classmethod
    def read(cls, generation: Path) -> Manifest:
        """The manifest of a generation folder, read within a cap (never following a symlink or waiting on a FIFO)
        and checked (``parse``)."""
        path = generation / MANIFEST
        where = shown(path)
        try:
            raw = read_bounded(path, MAX_MANIFEST_BYTES, follow_symlinks=False)
        except FileNotFoundError:
            raise IndexCorrupt(f"The index manifest {where} is missing. {REBUILD_HINT}") from None
        except NotReadable as exc:
            raise IndexCorrupt(f"The index manifest {where} cannot be read: {exc}. {REBUILD_HINT}") from None
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise IndexCorrupt(f"The index manifest {where} cannot be read: {why}. {REBUILD_HINT}") from None
        return cls.parse(raw, where)


# ---------------------------------------------------------------- checking a manifest's JSON, field by field


class _Invalid(Exception):
    """A field is missing or of the wrong type; the message names it ("model.dim is not a positive whole
    number")."""


class _Unknown(Exception):
    """Fields this tqa does not know; the message names them."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


_KINDS: dict[str, tuple[str, Any]] = {
    "text": ("text", lambda v: isinstance(v, str)),
    "count": ("a whole number", _is_count),
    "positive": ("a positive whole number", lambda v: _is_count(v) and v > 0),
    "number": ("a number", _is_number),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "object": ("an object", lambda v: isinstance(v, dict)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "null": ("null", lambda v: v is None),
    "sha256": ("a SHA-256", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None),
}


def _name(key: str) -> str:
    return repr(key)[:80]


class _Fields:
    """Reads the fields of one JSON object of a manifest: each of a kind (``_KINDS``), required unless
    ``optional``; ``done()`` refuses the fields that were not read (fields this tqa does not know)."""

    def __init__(self, obj: dict[str, Any], at: str = ""):
        self.obj, self.at = obj, at
        self.seen: set[str] = set()

    def __call__(self, key: str, *kinds: str, optional: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.obj:
            if optional:
                return None
            raise _Invalid(f"{self.at}{key} is missing")
        value = self.obj[key]
        if not any(_KINDS[k][1](value) for k in kinds):
            raise _Invalid(f"{self.at}{key} is not {' or '.join(_KINDS[k][0] for k in kinds)}")
        return value

    def texts(self, key: str, optional: bool = False) -> tuple[str, ...]:
        values = self(key, "list", optional=optional) or []
        if not all(isinstance(v, str) for v in values):
            raise _Invalid(f"{self.at}{key} holds something other than text")
        return tuple(values)

    def done(self) -> None:
        unknown = sorted(set(self.obj) - self.seen)
        if unknown:
            raise _Unknown(", ".join(self.at + _name(k) for k in unknown[:5]) + (" ..." if len(unknown) > 5 else ""))


def _manifest(d: dict[str, Any]) -> Manifest:
    f = _Fields(d)
    version = f("format_version", "count")
    precision = f("precision", "text", "null") if "precision" in d else "fp32"  # recorded since bf16: before, fp32
    m = Manifest(
        format_version=version, tqa_version=f("tqa_version", "text"), created=f("created", "text"),
        corpus=f("corpus", "text"), corpus_relative=f("corpus_relative", "text", optional=True),
        model=_model(f("model", "object")), precision=precision, chunking=_chunking(f("chunking", "object")),
        analyzer=_analyzer(f("analyzer", "object", optional=True)),
        vector_index=_vector_index(f("vector_index", "object"), "vector_index.", top=True),
        files={source: _file(meta, source) for source, meta in f("files", "object").items()},
        skipped=tuple(_skipped(entry) for entry in f("skipped", "list")), counts=_counts(f("counts", "object")),
        calibration=_calibration(f("calibration", "object")), names=f.texts("names", optional=True),
        language=f("language", "text", optional=True), ranking=_ranking(f("ranking", "object", optional=True)),
        tuning=_tuning(f("tuning", "object", optional=True)),
        artifacts=_artifacts(f("artifacts", "object"), version), checksum=f(MANIFEST_SHA, "text", optional=True),
    )
    f.done()
    if stored_artifacts(m.vector_index) != set(m.artifacts) & STORED_ARTIFACTS:
        raise _Invalid("its stored vector rows are not those its vector_index records")
    if m.tuning is not None and m.model.name != m.tuning.folder:
        raise _Invalid(f"model.name is not the tuned model's folder ({m.tuning.folder})")
    return m


def _model(d: dict[str, Any]) -> ModelInfo:
    f = _Fields(d, "model.")
    m = ModelInfo(f("name", "text"), f("dim", "positive"), f("max_tokens", "positive"))
    f.done()
    return m


def _chunking(d: dict[str, Any]) -> ChunkSettings:
    expected = set(ChunkSettings().to_dict())
    if set(d) != expected:
        raise _Invalid(f"chunking holds {sorted(map(_name, d))}, not {sorted(map(_name, expected))}")
    f = _Fields(d, "chunking.")
    values = {key: f(key, "count") for key in sorted(expected)}
    try:
        return ChunkSettings(**values)
    except SettingsError as exc:
        raise _Invalid(f"chunking {values} is out of range ({exc})") from None


def _analyzer(d: dict[str, Any] | None) -> AnalyzerSettings | None:
    if d is None:
        return None
    f = _Fields(d, "analyzer.")
    a = AnalyzerSettings(lowercase=f("lowercase", "bool"), token_pattern=f("token_pattern", "text"),
                         stopwords=f("stopwords", "text"), stopwords_sha256=f("stopwords_sha256", "sha256"),
                         stemmer=f("stemmer", "text"))
    f.done()
    return a


def _vector_index(d: dict[str, Any], at: str, top: bool = False) -> VectorIndexInfo:
    f = _Fields(d, at)
    units = f("units", "object", optional=True) if top else None
    v = VectorIndexInfo(type=f("type", "text"), metric=f("metric", "text"),
                        vectors=f("vectors", "count", optional=True), exact=f("exact", "bool", optional=True),
                        nlist=f("nlist", "positive", optional=True), nprobe=f("nprobe", "positive", optional=True),
                        code_bytes=f("code_bytes", "positive", optional=True),
                        rerank_depth=f("rerank_depth", "positive", optional=True),
                        stored=f("stored", "text", optional=True),
                        changed=f("changed", "count", optional=True),
                        units=None if units is None else _vector_index(units, f"{at}units."))
    f.done()
    if v.stored not in (None, "float16"):
        raise _Invalid(f"{at}stored is not float16")
    return v


def _file(meta: Any, source: str) -> FileEntry:
    if not isinstance(meta, dict):
        raise _Invalid(f"the entry of {_name(source)} in files is not an object")
    f = _Fields(meta, f"files[{_name(source)}].")
    entry = FileEntry(sha256=f("sha256", "sha256", optional=True), size=f("bytes", "count", optional=True),
                      format=f("format", "text", optional=True), chars=f("chars", "count", optional=True),
                      chunks=f("chunks", "count", optional=True), pages=f("pages", "count", "null", optional=True),
                      warnings=f.texts("warnings", optional=True), metadata=_metadata(f),
                      ocr_pending=f("ocr_pending", "count", optional=True))
    f.done()
    return entry


def _metadata(f: _Fields) -> dict[str, str]:
    meta = f("metadata", "object", optional=True) or {}
    if not all(isinstance(v, str) for v in meta.values()):
        raise _Invalid(f"{f.at}metadata holds something other than text")
    return dict(meta)


def _skipped(entry: Any) -> Skipped:
    if not isinstance(entry, dict):
        raise _Invalid("an entry of skipped is not an object")
    f = _Fields(entry, "skipped[].")
    s = Skipped(f("path", "text"), f("reason", "text"))
    f.done()
    return s


def _counts(d: dict[str, Any]) -> Counts:
    f = _Fields(d, "counts.")
    c = Counts(f("files", "count"), f("chunks", "count"), f("units", "count", optional=True))
    f.done()
    return c


def _calibration(d: dict[str, Any]) -> Calibration:
    f = _Fields(d, "calibration.")
    c = Calibration(abstain_threshold=f("abstain_threshold", "number", optional=True),
                    probes=f("probes", "count", optional=True),
                    probe_best_max=f("probe_best_max", "number", optional=True),
                    probe_best_p90=f("probe_best_p90", "number", optional=True),
                    probe_best_median=f("probe_best_median", "number", optional=True))
    f.done()
    return c


def _ranking(d: dict[str, Any] | None) -> Ranking | None:
    if d is None:
        return None
    f = _Fields(d, "ranking.")
    f.seen.update(("unit_weight", "keyword_weight", "fusion", "why", "queries", "mrr", "baseline", "grid_best"))
    f.done()  # a field this tqa does not know may change how to rank: refused first, as a newer tqa's
    r = Ranking(unit_weight=f("unit_weight", "number"), keyword_weight=f("keyword_weight", "number"),
                fusion=f("fusion", "text"), why=f("why", "text"), queries=f("queries", "count"),
                mrr=f("mrr", "number", optional=True), baseline=f("baseline", "object", optional=True) or {},
                grid_best=f("grid_best", "object", optional=True) or {})
    f.done()
    for name in ("unit_weight", "keyword_weight"):
        if not 0 <= getattr(r, name) <= 1:
            raise _Invalid(f"ranking.{name} is not a number from 0 to 1")
    if r.fusion not in FUSIONS:
        raise _Invalid(f"ranking.fusion is not one of {', '.join(FUSIONS)}")
    if not all(_is_number(v) for v in r.baseline.values()):
        raise _Invalid("ranking.baseline holds something other than numbers")
    if not all(_is_number(v) or isinstance(v, str) for v in r.grid_best.values()):
        raise _Invalid("ranking.grid_best holds something other than numbers and text")
    return r


def _tuning(d: dict[str, Any] | None) -> Tuning | None:
    if d is None:
        return None
    f = _Fields(d, "tuning.")
    t = Tuning(base_model=f("base_model", "text"), folder=f("folder", "text"), model_sha256=f("model_sha256", "sha256"),
               pairs=f("pairs", "count"), held_out=f("held_out", "count"),
               held_out_mrr_before=f("held_out_mrr_before", "number"),
               held_out_mrr_after=f("held_out_mrr_after", "number"), seconds=f("seconds", "number"),
               created=f("created", "text"), settings=f("settings", "object"),
               questions=f("questions", "text", optional=True),
               questions_mrr_before=f("questions_mrr_before", "number", optional=True),
               questions_mrr_after=f("questions_mrr_after", "number", optional=True))
    f.done()
    # the folder is read by name inside the index folder: nothing but models/<its hash's first 16 hex digits>
    if not TUNED_FOLDER.fullmatch(t.folder) or t.folder != f"{TUNED_DIR}/{t.model_sha256[:16]}":
        raise _Invalid("tuning.folder is not models/ and the first 16 hex digits of tuning.model_sha256")
    if not all(_is_number(v) or isinstance(v, str) for v in t.settings.values()):
        raise _Invalid("tuning.settings holds something other than numbers and text")
    return t


def _artifacts(d: dict[str, Any], version: int) -> dict[str, Artifact]:
    listed = artifact_set(set(d))
    if listed is None:
        known = REQUIRED_ARTIFACTS | (OPTIONAL_ARTIFACTS if OPTIONAL_ARTIFACTS & set(d) else set()) \
            | (TABLE_ARTIFACTS if (TABLE_ARTIFACTS | {CHUNK_KEYS}) & set(d) else set()) | ({CHUNK_KEYS} & set(d))
        missing, unknown = known - set(d), set(d) - known - STORED_ARTIFACTS
        raise _Invalid(f"its artifacts are not those of format {version}"
                       + (f": {', '.join(sorted(missing))} not listed" if missing else "")
                       + (f": {', '.join(sorted(map(_name, unknown)))} unknown" if unknown else ""))
    out = {}
    for rel in sorted(listed):
        f = _Fields(_Fields(d, "artifacts.")(rel, "object"), f"artifacts[{rel!r}].")
        a = out[rel] = Artifact(f("bytes", "count"), f("sha256", "sha256"),
                                block_bytes=f("block_bytes", "positive", optional=True),
                                blocks_sha256=f("blocks_sha256", "sha256", optional=True))
        f.done()
        if (a.block_bytes is None) != (a.blocks_sha256 is None) or (a.by_blocks and rel not in BLOCK_CHECKED):
            raise _Invalid(f"artifacts[{rel!r}] has block checksums it cannot have")
    return out
