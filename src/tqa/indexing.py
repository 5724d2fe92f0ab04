"""Building and updating an index, in stages that read top to bottom:

1. **plan** (``plan_build``): what the corpus holds and what changed since the previous index. Each file found is
   either carried over from the previous index (``Reuse``: the same content, whatever its name now; identity is
   the SHA-256 of its bytes), to be extracted (``FileTask``), or skipped (``Skipped``, with the reason).
2. **extract and chunk** (``extract_and_chunk``): one ``FileTask`` gives an ``Extracted`` file (its documents' text
   and chunks) or a ``Skipped`` one.
3. **embed** (``embed``): extracted files give ``Embedded`` ones (a vector per chunk and per paragraph unit), in
   one batched pass of the model.
4. **assemble** (``assemble``): the plan, the embedded files and the previous index give a new ``Index`` in
   memory: chunk table, vector and keyword indexes, the documents' language, the ranking learned from the
   corpus's own sentences (``learn_ranking``, adapt.py), calibration, manifest. An update changes the previous
   index's trained vector indexes in place by row and re-scores its keyword index from the counts it holds,
   analysing only the new chunks (``vectors.update_vectors``, ``KeywordIndex.updated``); ``compact_index``
   rebuilds them whole from the live index without embedding (``tqa index --compact``).
5. **publish** (``publish_index``): written as a new generation and made live atomically (``store.publish``).

The stages take and return plain data (frozen dataclasses of text, numbers and arrays; ``FileTask``, ``Extracted``
and ``Embedded`` also convert to and from JSON-able dicts), with nothing read from globals, so a runner may run
stages 2 and 3 in other processes or on other machines and hand their results to ``assemble``. ``build_index``
runs them all here, under the index's write lock; with ``ray=ADDRESS`` it runs stages 2 and 3 on the workers of a Ray
cluster instead (distributed.py: the same two functions, fed the bytes the driver read) and the rest here. One file
may yield several documents: an e-mail gives its own and one per attachment read (``message.eml › report.pdf``), all
in ``Extracted.documents``, and the file is reused or read again as a whole, by the SHA-256 of its bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .abstention import detect_language, name_prefixes
from .chunking import Chunk, Chunker
from .config import COMPRESS_ABOVE, DEFAULT_RANKING, ChunkSettings, Settings
from .embedding import (
    FULL_PRECISION,
    Embedder,
    check_model,
    check_precision,
    load_embedder,
    precision_of,
    resolve_precision,
)
from .errors import CorpusError, IndexCorrupt, IndexMismatch, TqaError, shown
from .index import Index
from .keywords import KeywordIndex, analyzer_settings
from .loaders import (
    ATTACHMENT_SEPARATOR,
    SUPPORTED,
    Document,
    NotReadable,
    SkipFile,
    Skipped,
    discover,
    extract,
    read_bounded,
)
from .loaders.ocr import ocr_ready
from .manifest import Calibration, Counts, FileEntry, Manifest, ModelInfo, Ranking, Tuning
from .query_encoder import write_encoder
from .retrieval import calibrate, weights_for
from .store import check_index_location, current_generation, load_index, publish, read_manifest, tidy, write_lock
from .vectors import VectorIndex, update_vectors

Progress = Callable[[str, int, int], None]  # (stage, done, total)
OcrProgress = Callable[[str, int, int], None]  # (source, pages read, pages to read)

# What the source line shows of a document's metadata (the loaders find more: title, author, recipients...).
SOURCE_LINE_KEYS = ("from", "date")
MAX_METADATA_CHARS = 300  # a value kept in the manifest, at most


def top_of(source: str) -> str:
    """The corpus file a document comes from: itself, or the message an attachment was found in. A corpus file's
    name never holds the separator (discovery skips such a name)."""
    return source.split(ATTACHMENT_SEPARATOR, 1)[0]


def families(sources: Iterable[str]) -> dict[str, list[str]]:
    """Each corpus file's documents (its own, then those found inside it, at every depth), in the order given:
    one pass, so that a corpus of many files costs no more to group than to list."""
    out: dict[str, list[str]] = {}
    for s in sources:
        out.setdefault(top_of(s), []).append(s)
    return out


def _renamed(source: str, old_top: str, new_top: str) -> str:
    return new_top + source[len(old_top):]


@dataclass
class IndexSummary:
    index_dir: str
    files_added: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_unchanged: list[str] = field(default_factory=list)
    files_renamed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    chunks_total: int = 0
    chunks_embedded: int = 0
    published: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """A human summary, one fact a line."""
        out = [
            f"index: {self.index_dir} ({'updated' if self.published else 'already up to date'})",
            f"files: {len(self.files_added)} added, {len(self.files_changed)} changed, "
            f"{len(self.files_removed)} removed, {len(self.files_unchanged)} unchanged"
            + (f", {len(self.files_renamed)} renamed" if self.files_renamed else ""),
            f"chunks: {self.chunks_total} in the index, {self.chunks_embedded} embedded now ({self.seconds:.1f} s)",
        ]
        for w in self.warnings:
            out.append(f"warning: {w['path']}: {w['warning']}")
        for s in self.skipped:
            out.append(f"skipped: {s['path']}: {s['reason']}")
        return [_printable(line) for line in out]

    @property
    def changed(self) -> bool:
        return bool(self.files_added or self.files_changed or self.files_removed or self.files_renamed)


def _printable(text: str) -> str:
    """``text`` with what cannot be printed on one line (a newline in a file name, a lone surrogate from a name that
    is not UTF-8) written as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


# ---------------------------------------------------------------- the stages' records


@dataclass(frozen=True)
class FileTask:
    """A corpus file to read, extract and chunk: the unit of work of stage 2."""

    source: str  # its path relative to the corpus, POSIX separators: what citations name
    path: str  # where to read it
    sha256: str  # of the bytes the plan read (the file may change before stage 2 reads it: ``Extracted`` says)
    chunking: ChunkSettings
    max_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chunking": self.chunking.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileTask:
        return cls(**{**d, "chunking": ChunkSettings(**d["chunking"])})


@dataclass(frozen=True)
class Reuse:
    """A corpus file whose content the previous index holds: its chunks, vectors and text are carried over."""

    source: str
    previous_source: str  # its name in the previous index (another one when the file was renamed)
    entry: FileEntry  # what the previous manifest records for it
    skipped: tuple[Skipped, ...] = ()  # its parts the previous build passed over (attachments, scanned pages)


@dataclass(frozen=True)
class Plan:
    """What a build will do (stage 1), and what it builds with."""

    corpus: Path
    index_dir: Path
    model: str
    precision: str  # what the model runs at ("fp32", "bf16")
    chunking: ChunkSettings
    files: tuple[FileTask | Reuse | Skipped, ...]  # one per corpus file found, in corpus order (the chunk order)
    unlisted: tuple[Skipped, ...] = ()  # what discovery passed over (unsupported, too large, odd names...)
    previous_sources: frozenset[str] = frozenset()  # the documents of the previous index
    tuning: Tuning | None = None  # the model is one tuned on the corpus (tuning.py): kept in the new manifest

    @property
    def tasks(self) -> list[FileTask]:
        return [f for f in self.files if isinstance(f, FileTask)]


@dataclass(frozen=True)
class ExtractedDocument:
    """One document of an extracted file: its text (what offsets point into) and its chunks."""

    source: str
    format: str
    text: str
    chunks: tuple[Chunk, ...]
    pages: int | None = None
    warnings: tuple[str, ...] = ()
    sha256: str = ""  # of its own bytes (an attachment's); empty: the file's
    metadata: dict[str, str] = field(default_factory=dict, hash=False)  # what its source line shows
    ocr_pending: int = 0  # scanned pages not read because OCR was not available

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chunks": [c.to_dict() for c in self.chunks], "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractedDocument:
        return cls(**{**d, "chunks": tuple(Chunk.from_dict(c) for c in d["chunks"]),
                      "warnings": tuple(d["warnings"])})


@dataclass(frozen=True)
class Extracted:
    """What stage 2 made of one file: its identity (the SHA-256 of the bytes read) and its documents."""

    source: str
    sha256: str
    size: int  # bytes
    documents: tuple[ExtractedDocument, ...]  # the file's own first, then its attachments (depth first)
    skipped: tuple[Skipped, ...] = ()  # its parts not read (attachments, scanned pages), with the reason

    @property
    def chunks(self) -> list[Chunk]:
        return [c for d in self.documents for c in d.chunks]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "size": self.size,
                "documents": [d.to_dict() for d in self.documents], "skipped": [s.to_dict() for s in self.skipped]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Extracted:
        return cls(d["source"], d["sha256"], d["size"], tuple(ExtractedDocument.from_dict(x) for x in d["documents"]),
                   tuple(Skipped(s["path"], s["reason"]) for s in d.get("skipped") or ()))


@dataclass(frozen=True, eq=False)
class Embedded:
    """An extracted file with its vectors (stage 3): row i of ``vectors`` is its i-th chunk (documents in order),
    ``units`` its chunks' paragraph units in the same order."""

    file: Extracted
    vectors: np.ndarray
    units: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file.to_dict(), "vectors": self.vectors.tolist(), "units": self.units.tolist(),
                "dim": int(self.vectors.shape[1])}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Embedded:
        def matrix(rows: list[list[float]]) -> np.ndarray:
            return np.asarray(rows, dtype=np.float32).reshape(-1, d["dim"])

        return cls(Extracted.from_dict(d["file"]), matrix(d["vectors"]), matrix(d["units"]))


# ---------------------------------------------------------------- 1. plan


def plan_build(corpus: Path, index_dir: Path, found: tuple[list[tuple[str, Path]], list[Skipped]],
               previous: Manifest | None, *, model: str, precision: str, chunking: ChunkSettings, max_bytes: int,
               on_progress: Progress | None = None, tuning: Tuning | None = None) -> Plan:
    """Read and hash every file ``discover`` found in ``corpus`` (``found``: candidates and what it passed over),
    within ``max_bytes``, and decide each one's fate against the previous index's manifest: unchanged or renamed
    content is reused (with the attachments read from it), the rest extracted; an unreadable file or the duplicate
    of an earlier one is skipped. A file with scanned pages left unread for want of OCR is read again once OCR is
    available."""
    candidates, unlisted = found
    every = previous.files if previous else {}
    old_files = {src: meta for src, meta in every.items() if ATTACHMENT_SEPARATOR not in src}  # corpus files
    source_by_hash = {meta.sha256: src for src, meta in old_files.items() if meta.sha256}
    members = families(every)
    old_skipped: dict[str, list[Skipped]] = {}
    for x in previous.skipped if previous else ():
        old_skipped.setdefault(top_of(x.path), []).append(x)
    ready: list[bool] = []  # whether OCR is available, asked once and only when it matters

    def pending(top: str) -> bool:
        if not any(every[s].ocr_pending for s in members.get(top, ())):
            return False
        if not ready:
            ready.append(ocr_ready())
        return ready[0]
    files: list[FileTask | Reuse | Skipped] = []
    seen: dict[str, str] = {}  # content hash -> the first source with it
    for n, (source, path) in enumerate(candidates):
        if on_progress:
            on_progress("reading", n, len(candidates))
        digest = _hash(source, path, max_bytes)
        if isinstance(digest, Skipped):
            files.append(digest)
        elif digest in seen:
            files.append(Skipped(source, f"duplicate of {seen[digest]}"))
        else:
            seen[digest] = source
            old = source if source in old_files and old_files[source].sha256 == digest else source_by_hash.get(digest)
            if old is not None and not pending(old):
                parts = tuple(Skipped(_renamed(x.path, old, source), x.reason) for x in old_skipped.get(old, ()))
                files.append(Reuse(source, old, old_files[old], parts))
            else:
                files.append(FileTask(source, str(path), digest, chunking, max_bytes))
    return Plan(corpus, index_dir, model, precision, chunking, tuple(files), tuple(unlisted), frozenset(every), tuning)


def _hash(source: str, path: Path, max_bytes: int) -> str | Skipped:
    """The SHA-256 of a file's bytes, read on the open file (a FIFO or a file grown past the cap since discovery is
    skipped, never waited on or read whole), or why it cannot be read."""
    read = _read(source, path, max_bytes)
    return read if isinstance(read, Skipped) else hashlib.sha256(read).hexdigest()


def _read(source: str, path: Path, max_bytes: int) -> bytes | Skipped:
    try:
        return read_bounded(path, max_bytes)
    except NotReadable as exc:
        return Skipped(source, str(exc))
    except FileNotFoundError:
        return Skipped(source, "vanished during indexing")
    except OSError as exc:
        return Skipped(source, f"unreadable: {exc.strerror or exc}")


# ---------------------------------------------------------------- 2. extract and chunk


def read_task(task: FileTask) -> bytes | Skipped:
    """A task's file as bytes (within its cap), or why it cannot be read."""
    return _read(task.source, Path(task.path), task.max_bytes)


def extract_and_chunk(task: FileTask, raw: bytes | None = None,
                      ocr_progress: OcrProgress | None = None) -> Extracted | Skipped:
    """Read one file (within its cap), extract its text and cut it into chunks; or say why it has none. An
    e-mail's attachments become documents of their own, after the message's; what was not read of the file
    (an attachment, a scanned page) is listed with the reason. ``raw``: the file's bytes as ``read_task`` gave
    them elsewhere (a runner whose workers do not see the corpus folder). ``ocr_progress(source, done, total)`` is
    told of scanned pages as they are read."""
    read = read_task(task) if raw is None else raw
    if isinstance(read, Skipped):
        return read
    report = None if ocr_progress is None else lambda done, total: ocr_progress(task.source, done, total)
    try:
        doc = extract(task.source, read, progress=report)
    except SkipFile as exc:
        return Skipped(task.source, str(exc))
    chunker = Chunker(task.chunking)
    documents: list[ExtractedDocument] = []
    skipped: list[Skipped] = []
    for d, meta in _documents(doc):
        chunks = chunker.chunk(d)
        if not chunks and d is not doc:
            skipped.append(Skipped(d.source, "no text to index"))
            continue
        documents.append(ExtractedDocument(d.source, d.format, d.text, tuple(chunks), len(d.pages) or None,
                                           tuple(d.warnings), d.sha256, meta, len(d.ocr_pending)))
        skipped.extend(d.skipped)
    if not any(d.chunks for d in documents):
        return Skipped(task.source, "no text to index")
    # (the file's own document stays first even without text of its own: the file is reused as a whole)
    return Extracted(task.source, doc.sha256, len(read), tuple(documents), tuple(skipped))


def _documents(doc: Document, inherited: dict[str, str] | None = None) -> Iterator[tuple[Document, dict[str, str]]]:
    """A document and those inside it (depth first), each with what its source line shows: its own sender and
    date, or (an attachment that has none) those of the message it came with."""
    own = {k: _bounded(doc.metadata[k]) for k in SOURCE_LINE_KEYS if doc.metadata.get(k)}
    meta = own or dict(inherited or {})
    yield doc, meta
    for a in doc.attachments:
        yield from _documents(a, meta)


def _bounded(value: str) -> str:
    return value if len(value) <= MAX_METADATA_CHARS else value[:MAX_METADATA_CHARS - 1] + "…"


# ---------------------------------------------------------------- 3. embed


def embed(files: Sequence[Extracted], embedder: Embedder, *, batch_size: int = 32,
          progress: bool = False) -> list[Embedded]:
    """The vectors of every chunk and unit of ``files``, encoded in one batched pass (chunks first, then units, so
    that the model sees the texts in one order whoever runs it)."""
    chunks = [c for f in files for c in f.chunks]
    if not chunks:
        return [Embedded(f, np.zeros((0, embedder.dim), np.float32), np.zeros((0, embedder.dim), np.float32))
                for f in files]
    texts = [c.search_text for c in chunks]
    unit_texts = [t for c in chunks for t in c.unit_search_texts()]
    encoded = embedder.encode(texts + unit_texts, batch_size=batch_size, progress=progress)
    vectors, units = encoded[:len(texts)], encoded[len(texts):]
    out, row, unit = [], 0, 0
    for f in files:
        n, n_units = len(f.chunks), sum(len(c.units) for c in f.chunks)
        out.append(Embedded(f, vectors[row:row + n], units[unit:unit + n_units]))
        row, unit = row + n, unit + n_units
    return out


# ---------------------------------------------------------------- 4. assemble


def assemble(plan: Plan, embedded: Sequence[Embedded], skipped: Sequence[Skipped], previous: Index | None,
             embedder: Embedder, ranking: str = DEFAULT_RANKING, compress_above: int = COMPRESS_ABOVE, *,
             learned: Ranking | None = None) -> Index:
    """The new index in memory: every file of the plan in corpus order (embedded files' chunks and vectors, reused
    files' from ``previous``), its vector and keyword indexes, its documents' language, the ranking learned from
    it (``learn_ranking``), its abstention calibration (with the weights ``ranking``, the setting of
    ``config.RANKINGS`` the index will be searched with, selects) and its manifest. ``skipped`` is every file the
    build passed over, as the manifest lists them. A vector index of more than ``compress_above`` vectors is
    compressed (``vectors.build_vectors``). ``previous``'s trained vector indexes (inverted file, compressed) are
    changed in place by row (``vectors.update_vectors``: the rows of files gone or changed removed, the new ones
    added, the rest renumbered; its training kept until ``RETRAIN_SHARE`` of the rows changed since), so
    ``previous`` is not to be searched after this. Its keyword index lends the term counts of the chunks kept
    (``KeywordIndex.updated``: only new chunks are analysed; the scores are those of a whole rebuild).
    ``learned``: the ranking to keep instead of learning one."""
    parts = _parts(plan, {e.file.source: e for e in embedded}, previous)
    dim = embedder.dim
    chunks = [c for p in parts for c in p.chunks]
    old_rows = _old_rows([p.rows for p in parts])
    # the keyword index first: its temporaries then never sit beside the vector indexes' copies of the vectors
    keywords = KeywordIndex.updated(None if previous is None else previous.keywords, old_rows,
                                    [c.search_text for c in chunks])
    vectors = update_vectors(None if previous is None else previous.vectors, old_rows,
                             _stack([p.vectors for p in parts], dim), dim, compress_above=compress_above)
    units = update_vectors(None if previous is None else previous.units, _old_rows([p.unit_rows for p in parts]),
                           _stack([p.units for p in parts], dim), dim, compress_above=compress_above)
    files = {source: entry for p in parts for source, entry in p.entries}
    draft = Manifest(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        corpus=str(plan.corpus.resolve()),
        corpus_relative=_relative_corpus(plan.corpus, plan.index_dir),
        model=ModelInfo(plan.model, dim, embedder.max_tokens),
        precision=precision_of(embedder),  # the embedding path (embedding.py); queries use the same
        chunking=plan.chunking,
        analyzer=analyzer_settings(),
        vector_index=dataclasses.replace(vectors.describe(), units=units.describe()),
        files=files,
        skipped=tuple(skipped),
        counts=Counts(len(files), len(chunks), units.ntotal),
        calibration=Calibration(),
        names=tuple(name_prefixes([c.search_text for c in chunks])),
        language=detect_language(c.text for c in chunks),
        tuning=plan.tuning,
    )
    index = Index(manifest=draft, chunks=chunks, vectors=vectors, units=units, keywords=keywords)
    embedded_now = sum(len(e.file.chunks) for e in embedded)
    index.manifest = dataclasses.replace(draft, ranking=learned if learned is not None else
                                         learn_ranking(index, embedder, previous, embedded_now))
    index.manifest = dataclasses.replace(index.manifest,
                                         calibration=calibrate(embedder, index, weights_for(index, ranking)))
    return index


RELEARN_SHARE = 0.1  # an update that embeds less than this share of the chunks keeps the ranking learned before


def learn_ranking(index: Index, embedder: Embedder, previous: Index | None = None,
                  embedded_now: int | None = None) -> Ranking:
    """What the ranking should weigh in this corpus, learned from its own sentences (``adapt.learn``: a few hundred
    short encodings whatever the corpus size). An update that embedded less than ``RELEARN_SHARE`` of the chunks
    keeps what ``previous`` learned, so that adding a file costs no new learning."""
    from . import adapt

    before = previous.manifest.ranking if previous is not None else None
    if before is not None and embedded_now is not None and embedded_now < RELEARN_SHARE * len(index.chunks):
        return before
    result = adapt.learn(adapt.passages_of(index.chunks), _Rows(index.vectors), _Rows(index.units), embedder,
                         index.keywords.analyze)
    return Ranking.learned(result)


class _Rows:
    """The rows of a vector index, read when asked for: learning reads only its sample's, never a copy of all."""

    def __init__(self, vectors: VectorIndex):
        self.vectors = vectors

    def __getitem__(self, rows: Any) -> np.ndarray:
        return self.vectors.take(np.asarray(rows, dtype=np.int64))


@dataclass
class _Part:
    """One file's share of the new index: its chunks, their vectors and units (new ones), or the rows of the previous
    index they are (a reused file's), and its manifest entries."""

    chunks: list[Chunk]
    vectors: np.ndarray  # new vectors (none for a reused file) ...
    units: np.ndarray
    entries: list[tuple[str, FileEntry]]
    rows: np.ndarray | int  # ... or the previous index's rows (an int: that many new rows)
    unit_rows: np.ndarray | int


def _parts(plan: Plan, embedded: dict[str, Embedded], previous: Index | None) -> list[_Part]:
    parts = []
    old = previous.manifest.files if previous is not None else {}
    grouped = families(old)
    none = np.zeros((0, 0), dtype=np.float32)
    for f in plan.files:
        if isinstance(f, Reuse):
            assert previous is not None
            members = grouped[f.previous_source]
            rows = np.concatenate([previous.rows_of(m) for m in members]).astype(np.int64)
            chunks = [c if f.source == f.previous_source else
                      dataclasses.replace(c, source=_renamed(c.source, f.previous_source, f.source))
                      for c in (previous.chunks[int(r)] for r in rows)]
            parts.append(_Part(chunks, none, none,
                               [(_renamed(m, f.previous_source, f.source), old[m]) for m in members],
                               rows, np.asarray(previous.unit_rows(rows), dtype=np.int64)))
        elif isinstance(f, FileTask) and f.source in embedded:
            e = embedded[f.source]
            entries = [(d.source, FileEntry(sha256=d.sha256 or e.file.sha256,
                                            size=e.file.size if d.source == e.file.source else None,
                                            format=d.format, chars=len(d.text), chunks=len(d.chunks), pages=d.pages,
                                            warnings=d.warnings, metadata=dict(d.metadata),
                                            ocr_pending=d.ocr_pending or None)) for d in e.file.documents]
            parts.append(_Part(e.file.chunks, e.vectors, e.units, entries, len(e.vectors), len(e.units)))
    return parts


def _old_rows(blocks: list[np.ndarray | int]) -> np.ndarray:
    """Each new row's row in the previous index, -1 for a new one (``vectors.update_vectors``)."""
    out = [np.full(b, -1, dtype=np.int64) if isinstance(b, int) else b for b in blocks]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _stack(blocks: list[np.ndarray], dim: int) -> np.ndarray:
    """The rows of ``blocks`` one after another: a view, not a copy, when they are consecutive rows of one array
    (how ``embed`` hands out the vectors it encoded in one pass), so a build does not hold its vectors twice."""
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return np.zeros((0, dim), dtype=np.float32)
    joined = _consecutive(blocks)
    return joined if joined is not None else np.vstack(blocks)


def _consecutive(blocks: list[np.ndarray]) -> np.ndarray | None:
    """The rows of ``blocks`` as one read-only view, when they are consecutive whole rows of one array (each a view
    of the same array, its rows packed, each beginning where the last ended), or None."""
    first = blocks[0]
    base = first.base
    if base is None or first.ndim != 2:
        return None
    at, strides = _address(first), (first.itemsize * first.shape[1], first.itemsize)
    for b in blocks:
        if b.base is not base or b.dtype != first.dtype or b.shape[1:] != first.shape[1:] or b.strides != strides \
                or _address(b) != at:
            return None
        at += b.nbytes
    rows = sum(len(b) for b in blocks)
    return np.lib.stride_tricks.as_strided(first, shape=(rows, *first.shape[1:]), strides=strides, writeable=False)


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


# ---------------------------------------------------------------- 5. publish


def publish_index(plan: Plan, index: Index, embedded: Sequence[Embedded | Extracted], previous: Index | None,
                  embedder: Embedder) -> Path:
    """Write ``index`` as a new generation of ``plan.index_dir`` with every document's text (new ones as extracted:
    ``embedded``, or just their ``Extracted`` files, reused ones as the previous index holds them) and the question
    encoder (query_encoder.py: linked from the live generation, or exported from the model), and make it live. The
    caller holds ``write_lock``."""
    return publish(plan.index_dir, index, _document_texts(plan, embedded, previous),
                   extra=lambda folder: write_encoder(embedder, folder, plan.index_dir))


def _document_texts(plan: Plan, embedded: Sequence[Embedded | Extracted],
                    previous: Index | None) -> Iterator[tuple[str, str]]:
    extracted = [e.file if isinstance(e, Embedded) else e for e in embedded]
    by_file = {f.source: f for f in extracted}
    reused = any(isinstance(f, Reuse) for f in plan.files)
    old = dict(previous.documents()) if previous is not None and reused else {}  # (already loaded: ``previous``)
    grouped = families(old)
    for f in plan.files:
        if isinstance(f, Reuse):
            for m in grouped[f.previous_source]:
                yield _renamed(m, f.previous_source, f.source), old[m]
        elif isinstance(f, FileTask) and f.source in by_file:
            yield from ((d.source, d.text) for d in by_file[f.source].documents)


# ---------------------------------------------------------------- the whole build


def build_index(
    corpus: str | Path = "corpus",
    index: str | Path = "index",
    *,
    model: str | None = None,
    chunking: ChunkSettings | None = None,
    rebuild: bool = False,
    force: bool = False,
    embedder: Embedder | None = None,
    settings: Settings | None = None,
    progress: bool | None = None,
    on_progress: Progress | None = None,
    ray: str | None = None,
    ray_workers: int | None = None,
    ray_gpus: float | None = None,
) -> IndexSummary:
    """Index ``corpus`` into ``index``, embedding only what changed since the last run.

    ``model`` and ``chunking`` default to what the existing index was built with (or the defaults for a new
    one); asking for different ones, or another corpus folder, without ``rebuild`` raises ``IndexMismatch``.
    ``index`` must be a new folder, a tqa index, or a folder empty but for README files and dotfiles; ``force``
    allows any other folder outside the corpus (nothing tqa did not write is ever deleted or replaced there).
    ``on_progress(stage, done, total)`` is told of each file read ("reading") and extracted ("extracting"; on Ray,
    "embedding on Ray": extracted and embedded).

    ``ray``: run stages 2 and 3 (extract and chunk, embed) on a Ray cluster: ``HOST:PORT`` of its head, or ``"auto"``
    for a private local one (needs ``pip install 'tqa[ray]'``); ``ray_workers`` workers (default: one per CPU of the
    cluster), each with ``ray_gpus`` GPUs when given (the model then runs on the worker's GPU). Plan, assemble and
    publish run here, as in a local build, and the index is the same. ``embedder``, when given, is sent to every
    worker as it is (it must pickle); otherwise each worker loads ``model`` (a tuned model is sent with its files).
    """
    t0 = time.perf_counter()
    settings = settings or Settings.from_env()
    corpus, index_dir = Path(corpus), Path(index)
    check_index_location(corpus, index_dir)
    if ray is not None:  # a missing extra or a cluster that does not answer is refused before anything is read
        from .distributed import check_ray

        check_ray(ray, ray_workers, ray_gpus)
    found = discover(corpus, max_bytes=settings.max_file_bytes)  # (a missing corpus is refused before the lock)
    with write_lock(index_dir, force=force), _previous(index_dir, rebuild) as previous:
        old = previous.manifest if previous else None
        tuning = _kept_tuning(corpus, index_dir, old, model, embedder, rebuild)
        name, chunks, precision = _settle(old, corpus, index_dir, model or (tuning.folder if tuning else None),
                                          chunking, embedder, settings)
        plan = plan_build(corpus, index_dir, found, old, model=name, precision=precision, chunking=chunks,
                          max_bytes=settings.max_file_bytes, on_progress=on_progress, tuning=tuning)
        if ray is None:
            done: Mapping[str, Extracted | Embedded | Skipped] = _extract_here(plan, on_progress, _ocr_bar(progress))
        else:
            from .distributed import run_stages

            done = run_stages(plan, ray, workers=ray_workers, embedder=embedder, batch_size=settings.batch_size,
                              on_progress=on_progress, progress=sys.stderr.isatty() if progress is None else progress,
                              gpus_per_worker=ray_gpus)
        extracted, skipped = _in_plan_order(plan, done)
        summary = _summary(plan, extracted, skipped)
        if old and not summary.changed and [s.to_dict() for s in old.skipped] == summary.skipped:
            tidy(index_dir)  # what killed builds left behind, even when there is nothing to publish
            summary.chunks_total = len(previous.chunks) if previous else 0
        else:
            emb = embedder or load_embedder(name, precision, _model_source(index_dir, tuning))
            if ray is None:
                embedded = embed(extracted, emb, batch_size=settings.batch_size,
                                 progress=sys.stderr.isatty() if progress is None else progress)
            else:  # embedded on the workers
                embedded = [e for e in (done[f.source] for f in extracted) if isinstance(e, Embedded)]
            new = assemble(plan, embedded, skipped, previous, emb, settings.ranking, settings.compress_above)
            files = [e.file for e in embedded]
            del embedded, done  # their vectors are in the new index now: not held a second time while it is written
            publish_index(plan, new, files, previous, emb)
            summary.published, summary.chunks_total = True, len(new.chunks)
            summary.chunks_embedded = sum(len(f.chunks) for f in files)
    summary.seconds = time.perf_counter() - t0
    return summary


def compact_index(index: str | Path = "index", *, embedder: Embedder | None = None,
                  settings: Settings | None = None) -> IndexSummary:
    """Rebuild the live index's structures whole from the index itself, nothing read from the corpus and no chunk
    embedded again (``tqa index --compact``): the vector indexes trained anew on all their vectors (the updates
    since the last training forgotten, see ``vectors.RETRAIN_SHARE``), the keyword index and the chunk table
    written again, published as a new generation atomically. The documents, chunks, vectors and learned ranking
    stay what they were; the calibration is measured again, as a build does."""
    t0 = time.perf_counter()
    settings = settings or Settings.from_env()
    index_dir = Path(index)
    if current_generation(index_dir) is None:
        load_index(index_dir)  # raises the one-line refusal of a folder that holds no index
    with write_lock(index_dir), load_index(index_dir) as previous:
        m = previous.manifest
        if embedder is not None:
            check_model(embedder, m.model.name, m.precision, shown(index_dir))
        precision = m.precision or FULL_PRECISION
        emb = embedder or load_embedder(m.model.name, precision, _model_source(index_dir, m.tuning))
        plan, extracted, skipped = reembed_plan(previous, index_dir, m.model.name, precision, m.tuning)
        embedded = []
        for f in extracted:
            rows = np.concatenate([previous.rows_of(d.source) for d in f.documents]).astype(np.int64)
            embedded.append(Embedded(f, previous.vectors.take(rows), previous.units.take(previous.unit_rows(rows))))
        new = assemble(plan, embedded, skipped, None, emb, settings.ranking, settings.compress_above,
                       learned=m.ranking)
        publish_index(plan, new, embedded, None, emb)
        summary = IndexSummary(index_dir=str(index_dir), files_unchanged=sorted(f.source for f in extracted),
                               skipped=[x.to_dict() for x in skipped], chunks_total=len(new.chunks), published=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def _extract_here(plan: Plan, on_progress: Progress | None,
                  ocr_progress: OcrProgress | None = None) -> dict[str, Extracted | Skipped]:
    """Stage 2 for every task of the plan, in this process."""
    total = len(plan.tasks)
    done: dict[str, Extracted | Skipped] = {}
    for n, task in enumerate(plan.tasks):
        if on_progress:
            on_progress("extracting", n, total)
        done[task.source] = extract_and_chunk(task, None, ocr_progress)
    return done


def _in_plan_order(plan: Plan, done: Mapping[str, Extracted | Embedded | Skipped]) -> tuple[list[Extracted],
                                                                                     list[Skipped]]:
    """The extracted files, in corpus order, from what stage 2 (or 2 and 3) gave for each task; and every file the
    build passes over, in corpus order (after those discovery passed over). Refuses a corpus that leaves nothing to
    index."""
    extracted: list[Extracted] = []
    skipped = list(plan.unlisted)
    for f in plan.files:
        result = done[f.source] if isinstance(f, FileTask) else f
        if isinstance(result, Embedded):
            result = result.file
        if isinstance(result, Skipped):
            skipped.append(result)
        elif isinstance(result, Extracted):
            extracted.append(result)
            skipped.extend(result.skipped)  # what was not read of it (an attachment, a scanned page)
        elif isinstance(result, Reuse):
            skipped.extend(result.skipped)
    if not extracted and not any(isinstance(f, Reuse) for f in plan.files):
        example = f"{len(skipped)} file(s) skipped, for example {skipped[0].path}: {skipped[0].reason}." \
            if skipped else "The folder is empty."
        raise CorpusError(f"No documents to index in {plan.corpus}/ (supported: {' '.join(sorted(SUPPORTED))}). "
                          + example)
    return extracted, skipped


def _summary(plan: Plan, extracted: list[Extracted], skipped: list[Skipped]) -> IndexSummary:
    """What the build finds changed (before anything is embedded)."""
    s = IndexSummary(index_dir=str(plan.index_dir), skipped=[x.to_dict() for x in skipped])
    for f in plan.files:
        if isinstance(f, Reuse) and f.previous_source == f.source:
            s.files_unchanged.append(f.source)
        elif isinstance(f, Reuse):
            s.files_renamed.append({"from": f.previous_source, "to": f.source})
    for e in extracted:
        (s.files_changed if e.source in plan.previous_sources else s.files_added).append(e.source)
        s.warnings.extend({"path": e.source, "warning": w} for d in e.documents for w in d.warnings)
    grouped = families(sorted(plan.previous_sources))
    kept = {_renamed(m, f.previous_source, f.source) for f in plan.files if isinstance(f, Reuse)
            for m in grouped[f.previous_source]} | {d.source for e in extracted for d in e.documents}
    renamed_from = {m for f in plan.files if isinstance(f, Reuse) and f.source != f.previous_source
                    for m in grouped[f.previous_source]}
    s.files_removed = sorted(src for src in plan.previous_sources if src not in kept and src not in renamed_from)
    return s


def _ocr_bar(progress: bool | None) -> OcrProgress | None:
    """A progress bar on stderr for the scanned pages of each file read by OCR (as the embedding pass has one), or
    None when no bar is wanted (``progress`` False, or None and stderr is not a terminal)."""
    if not (sys.stderr.isatty() if progress is None else progress):
        return None
    bars: dict[str, Any] = {}

    def update(source: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = bars.get(source)
        if bar is None:
            bar = bars[source] = tqdm(total=total, desc=f"OCR {shown(source)[-40:]}", unit="page", file=sys.stderr,
                                      leave=True, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            bars.pop(source, None)

    return update


def _kept_tuning(corpus: Path, index_dir: Path, old: Manifest | None, model: str | None, embedder: Embedder | None,
                 rebuild: bool) -> Tuning | None:
    """The tuned model an update or a rebuild keeps (``tqa tune``): the live index's, unless another model is asked
    for (``--model``, or an embedder of another name) or a rebuild replaces the documents with another folder's (the
    model was tuned on the old ones). A rebuild reads it from the live manifest, when readable."""
    manifest = old
    if manifest is None and rebuild:
        try:
            manifest = read_manifest(index_dir)
        except TqaError:  # no index, or a damaged one being rebuilt: nothing to keep
            manifest = None
    tuning = manifest.tuning if manifest is not None else None
    if tuning is None or manifest is None or not same_corpus(manifest, corpus, index_dir):
        return None
    asked = embedder.name if embedder is not None else model
    return tuning if asked is None or asked == tuning.folder else None


def _model_source(index_dir: Path, tuning: Tuning | None) -> str | None:
    """Where the tuned model is read from (its folder, checked against its hash), or None for a model by name."""
    if tuning is None:
        return None
    from .tuning import tuned_model_path

    return tuned_model_path(index_dir, tuning)


def reembed_plan(previous: Index, index_dir: Path, model: str, precision: str,
                 tuning: Tuning | None) -> tuple[Plan, list[Extracted], list[Skipped]]:
    """The plan, extracted files and skipped files of a build that embeds ``previous``'s own documents and chunks
    again with another model (``tqa tune`` and ``--revert``): nothing is read from the corpus, so the index holds
    the same documents, chunks and offsets, only their vectors (and what is learned from them) change."""
    m = previous.manifest
    corpus = Path(m.corpus)
    if m.corpus_relative is not None and (index_dir / m.corpus_relative).is_dir():
        corpus = index_dir / m.corpus_relative
    texts = dict(previous.documents())
    files: list[FileTask | Reuse | Skipped] = []
    extracted: list[Extracted] = []
    for top, members in families(m.files).items():
        entry = m.files[top]
        documents = []
        for source in members:
            e = m.files[source]
            chunks = tuple(previous.chunks[int(r)] for r in previous.rows_of(source))
            documents.append(ExtractedDocument(source, e.format or "", texts.get(source, ""), chunks, e.pages,
                                               e.warnings, "" if source == top else (e.sha256 or ""),
                                               dict(e.metadata), e.ocr_pending or 0))
        sha = entry.sha256 or ""
        files.append(FileTask(top, str(corpus / top), sha, m.chunking, 0))
        extracted.append(Extracted(top, sha, entry.size or 0, tuple(documents)))
    plan = Plan(corpus, index_dir, model, precision, m.chunking, tuple(files), (), frozenset(m.files), tuning)
    return plan, extracted, list(m.skipped)


def _previous(index_dir: Path, rebuild: bool) -> Any:
    """The live index to update (a context that closes it), or nothing for a new index or a rebuild."""
    if rebuild or current_generation(index_dir) is None:
        return contextlib.nullcontext(None)
    try:
        return load_index(index_dir)
    except IndexCorrupt as exc:
        raise IndexCorrupt(f"{exc} (The existing index is damaged; --rebuild replaces it.)") from None


def _settle(old: Manifest | None, corpus: Path, index_dir: Path, model: str | None, chunking: ChunkSettings | None,
            embedder: Embedder | None, settings: Settings) -> tuple[str, ChunkSettings, str]:
    """The model, chunking and precision to build with: an update keeps the index's own; asking for others (or
    another corpus folder) without --rebuild is refused."""
    if old and not same_corpus(old, corpus, index_dir):
        here = Path(os.path.abspath(corpus))
        raise IndexMismatch(
            f"The index at {shown(index_dir)}/ was built from {shown(old.corpus)}, not {shown(here)}. "
            f"Run `tqa index {shown(corpus)} --index {shown(index_dir)} --rebuild` to replace its documents with "
            "this folder's, or pass --index DIR to keep a separate index."
        )
    name = embedder.name if embedder is not None else model or (old.model.name if old else None) or settings.model
    chunks = chunking or (old.chunking if old else settings.chunking)
    if old:
        _check_compatible(old, name, chunks, index_dir)
    return name, chunks, _build_precision(old, embedder, settings.precision, index_dir)


def same_corpus(manifest: Manifest, corpus: str | Path, index_dir: str | Path) -> bool:
    """Whether ``corpus`` is the folder the index was built from: the same absolute path, or the same path relative
    to the index folder (recorded since format 2), so a project moved or copied with its corpus and index side by
    side keeps its index. An index of the previous format records only the absolute path: there, a folder of the
    same name beside the index counts as the same (the default layout, moved)."""
    given = _resolved(Path(corpus))
    built = manifest.corpus
    if Path(built) == given or _resolved(Path(built)) == given:
        return True
    relative = manifest.corpus_relative
    if relative is not None:
        return _resolved(Path(index_dir) / relative) == given
    return Path(built).name == given.name and given.parent == _resolved(Path(index_dir)).parent


def _relative_corpus(corpus: Path, index_dir: Path) -> str | None:
    try:
        return Path(os.path.relpath(_resolved(corpus), _resolved(index_dir))).as_posix()
    except ValueError:  # another drive
        return None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _build_precision(old: Manifest | None, embedder: Embedder | None, asked: str | None, index_dir: Path) -> str:
    """The precision to embed at: an update keeps the index's own (vectors are never mixed); asking for another
    one (``asked``: TQA_PRECISION, or an embedder at another precision) without --rebuild is refused."""
    if embedder is not None:
        if old:
            check_precision(embedder, old.precision, index_dir)
        return precision_of(embedder) or FULL_PRECISION
    requested = resolve_precision(asked) if asked else None
    built = old.precision if old else None
    if built is None:
        return requested or resolve_precision()
    if requested and requested != built:
        raise IndexMismatch(
            f"The index at {index_dir}/ holds {built} vectors, not {requested} (TQA_PRECISION). "
            f"Run `tqa index --rebuild` to rebuild it at {requested}, or unset TQA_PRECISION."
        )
    return built


def _check_compatible(manifest: Manifest, model: str, chunking: ChunkSettings, index_dir: Path) -> None:
    built_model = manifest.model.name
    if built_model != model:
        raise IndexMismatch(
            f"The index at {index_dir}/ was built with model {built_model!r}, not {model!r}. "
            f"Run `tqa index --rebuild --model {model}` to rebuild it, or drop --model."
        )
    if manifest.chunking != chunking:
        raise IndexMismatch(
            f"The index at {index_dir}/ was built with chunking {manifest.chunking.to_dict()}, not "
            f"{chunking.to_dict()}. Run `tqa index --rebuild` to rebuild it with the new settings."
        )


__all__ = ["Embedded", "Extracted", "ExtractedDocument", "FileTask", "IndexSummary", "Plan", "Reuse", "assemble",
           "build_index", "compact_index", "embed", "extract_and_chunk", "plan_build", "publish_index", "read_task",
           "same_corpus"]
