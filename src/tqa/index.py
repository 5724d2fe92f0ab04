"""One index generation in memory (``Index``): its manifest, chunk table, vector and keyword indexes, and the
lookups a question needs, each computed once per loaded index and kept on it: the rows of a source, the rows a
source filter searches (``scope``), the section around an offset, a document's extracted text.

A reload makes a new ``Index``, so nothing kept here goes stale. ``store.load_index`` loads one from disk (holding
the generation's lease); a build assembles one in memory (``path`` None) and publishes it (``store.publish``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .chunking import Chunk, Section
from .chunktable import ChunkTable
from .keywords import KeywordIndex
from .manifest import DOCUMENTS, Manifest
from .vectors import VectorIndex

if TYPE_CHECKING:
    from .integrity import Checks
    from .retrieval import FilterVocabulary

SCOPES_KEPT = 256  # distinct source filters remembered per index


class Lease(Protocol):
    """What keeps a loaded generation from being retired (``store``): released once, when the index closes."""

    def release(self) -> None: ...


def unit_rows(ptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of the unit index that belong to the given chunk rows, in order (chunk i's units are rows
    ``ptr[i]:ptr[i + 1]``)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    starts, counts = ptr[rows], ptr[rows + 1] - ptr[rows]
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    # For each member, its chunk's first unit plus its place inside the chunk.
    offsets = np.cumsum(counts) - counts
    return (np.repeat(starts - offsets, counts) + np.arange(total)).astype(np.int64)


@dataclass(eq=False, kw_only=True)
class Index:
    """Everything a reader needs, loaded from one generation (or assembled by a build, ``path`` None).

    An index loaded from disk holds the generation's lease: no publish deletes the generation while the object
    lives (its documents are read lazily). ``close()`` releases it at once; so does garbage collection.
    """

    manifest: Manifest
    # row i of ``vectors`` is chunks[i]: a list (a build), or a ``ChunkTable`` that parses a row when it is used
    chunks: Sequence[Chunk]
    vectors: VectorIndex
    units: VectorIndex  # the chunks' units (paragraphs), in chunk order: see ``unit_ptr``
    keywords: KeywordIndex  # row i is chunks[i]'s search text
    path: Path | None = None  # the generation folder
    lease: Lease | None = field(default=None, repr=False)
    # the block checks of its big files (integrity.py; None: an index in memory, or loaded without verifying)
    checks: Checks | None = field(default=None, repr=False)
    # the vector indexes being verified and read in the background (``store.load_index(defer=True)``): ``vectors``,
    # ``units`` and ``raise_if_damaged()`` wait for them
    ready: VectorsPending | None = field(default=None, repr=False)
    _scopes: dict[frozenset[str], Scope] = field(default_factory=dict, init=False, repr=False)
    # the example questions made for this generation (tqa.examples), by how many were asked for
    examples: dict[int, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False)

    def close(self) -> None:
        """Release the generation, so that a later publish may retire it. Its documents may then disappear."""
        lease, self.lease = self.lease, None
        if isinstance(self.chunks, ChunkTable):
            self.chunks.close()
        if self.checks is not None:
            self.checks.close()
        if lease is not None:
            lease.release()

    def raise_if_damaged(self) -> None:
        """Raise IndexCorrupt when a check of its files (on a read, or in the background) found damage; wait for the
        vector indexes when they are still being verified and read."""
        if self.__dict__.get("ready") is not None:
            self._wait_vectors()
        if self.checks is not None:
            self.checks.raise_if_damaged()

    def _wait_vectors(self) -> None:
        ready = self.__dict__.get("ready")
        if ready is not None:
            vectors, units = ready.wait()  # raises IndexCorrupt, every time, when they are damaged
            self.__dict__["_vectors"], self.__dict__["_units"] = vectors, units
            self.__dict__["ready"] = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ what it is

    @property
    def folder(self) -> Path | None:
        """The index folder this generation belongs to (None for an index held in memory only)."""
        return None if self.path is None else self.path.parent

    @property
    def sources(self) -> list[str]:
        """The indexed documents, sorted."""
        return self.manifest.sources

    @property
    def threshold(self) -> float:
        """The abstention threshold calibrated for this index."""
        return self.manifest.calibration.threshold

    @functools.cached_property
    def language(self) -> str:
        """The documents' main language (``abstention.detect_language``): as the manifest records it, or, for an
        index built before it was recorded, detected from the chunks now (once)."""
        if self.manifest.language is not None:
            return self.manifest.language
        from .abstention import detect_language

        return detect_language(c.text for c in self.chunks)

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """Prefixes and initials of the corpus's capitalised words, for the abstention checks."""
        return frozenset(self.manifest.names)

    # ------------------------------------------------------------ rows

    @functools.cached_property
    def unit_ptr(self) -> np.ndarray:
        """Chunk i's units are rows unit_ptr[i]:unit_ptr[i + 1] of ``units`` (from the table's array, when it has
        one: not a parse of every row)."""
        if isinstance(self.chunks, ChunkTable):
            return self.chunks.unit_ptr
        counts = np.fromiter((len(c.units) for c in self.chunks), dtype=np.int64, count=len(self.chunks))
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @functools.cached_property
    def _source_rows(self) -> dict[str, np.ndarray]:
        if isinstance(self.chunks, ChunkTable):
            return self.chunks.source_rows()
        by_source: dict[str, list[int]] = {}
        for i, c in enumerate(self.chunks):
            by_source.setdefault(c.source, []).append(i)
        return {src: np.asarray(rows, dtype=np.int64) for src, rows in by_source.items()}

    def rows_of(self, source: str) -> np.ndarray:
        """The chunk rows of one document, in index order (none for a source the index does not hold)."""
        return self._source_rows.get(source, np.zeros(0, dtype=np.int64))

    def unit_rows(self, rows: np.ndarray) -> np.ndarray:
        """The unit rows of the given chunk rows, in order."""
        return unit_rows(self.unit_ptr, rows)

    def scope(self, sources: Iterable[str] | None) -> Scope | None:
        """The rows a search restricted to ``sources`` reads (None without a filter); made once per filter and
        remembered (the last ``SCOPES_KEPT`` filters)."""
        if not sources:
            return None
        key = frozenset(sources)
        found = self._scopes.get(key)
        if found is not None:
            return found
        parts = [self.rows_of(s) for s in key if s in self._source_rows]
        rows = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        scope = Scope(self, key, rows, self.unit_rows(rows))
        if len(self._scopes) >= SCOPES_KEPT:
            self._scopes.clear()  # (atomic: safe with questions answered in other threads)
        self._scopes[key] = scope
        return scope

    # ------------------------------------------------------------ documents

    def chunk_at(self, source: str, offset: int) -> Chunk | None:
        """The chunk of ``source`` that holds ``offset`` (the first one, where chunks overlap), or None."""
        rows = self._rows_at(source, offset)
        return self.chunks[rows[0]] if rows else None

    def _rows_at(self, source: str, offset: int) -> list[int]:
        chunks = self.chunks
        return [int(i) for i in self.rows_of(source) if chunks[i].start <= offset < chunks[i].end]

    def section_at(self, source: str, offset: int) -> Section | None:
        """The section of ``source`` around ``offset`` (the run of its chunks under the same heading trail), with
        the page of the chunk at the offset; None when no chunk of it holds the offset."""
        chunks = self.chunks
        rows = self._rows_at(source, offset)
        if not rows:
            return None
        i = j = rows[0]
        trail = chunks[i].section
        while i > 0 and chunks[i - 1].source == source and chunks[i - 1].section == trail:
            i -= 1
        while j + 1 < len(chunks) and chunks[j + 1].source == source and chunks[j + 1].section == trail:
            j += 1
        return Section(chunks[i].start, chunks[j].end, trail, chunks[rows[0]].page)

    def documents(self) -> Iterator[tuple[str, str]]:
        """(source, extracted text) of every document, read from the index (not the corpus)."""
        assert self.path is not None
        self._check_documents(None)
        return read_documents(self.path)

    def _check_documents(self, where: tuple[int, int] | None) -> None:
        """Verify the bytes of documents.jsonl about to be read (all of it when ``where`` is None)."""
        f = None if self.checks is None else self.checks.for_file(DOCUMENTS)
        if f is None:
            self.raise_if_damaged()
        elif where is None:
            f.check_all()
        else:
            f.check(*where)

    @functools.cached_property
    def _document_lines(self) -> dict[str, tuple[int, int]]:
        """(byte offset, length) of each document's line in documents.jsonl, read once per loaded index."""
        assert self.path is not None
        self._check_documents(None)
        lines: dict[str, tuple[int, int]] = {}
        with open(self.path / DOCUMENTS, "rb") as f:
            offset = 0
            for line in f:
                lines.setdefault(str(json.loads(line)["source"]), (offset, len(line)))
                offset += len(line)
        return lines

    def document_text(self, source: str) -> str | None:
        """The extracted text of one document: one line of documents.jsonl, not a scan of the file."""
        where = self._document_lines.get(source)
        if where is None:
            return None
        assert self.path is not None
        self._check_documents(where)
        with open(self.path / DOCUMENTS, "rb") as f:
            f.seek(where[0])
            return str(json.loads(f.read(where[1]))["text"])


def _waiting(name: str) -> property:
    """``Index.vectors`` and ``Index.units``: stored as given, read after the background load (if any) is done."""
    key = f"_{name}"

    def get(self: Index) -> VectorIndex:
        if self.__dict__.get("ready") is not None:
            self._wait_vectors()
        return self.__dict__[key]  # type: ignore[no-any-return]

    def put(self: Index, value: VectorIndex) -> None:
        self.__dict__[key] = value

    return property(get, put)


setattr(Index, "vectors", _waiting("vectors"))  # noqa: B010 (after the dataclass made its fields)
setattr(Index, "units", _waiting("units"))  # noqa: B010


class VectorsPending(Protocol):
    """Vector indexes loading in the background (``store``): ``wait()`` returns them or raises IndexCorrupt."""

    def wait(self) -> tuple[VectorIndex, VectorIndex]: ...


@dataclass(eq=False)
class Scope:
    """Some documents of an index, as its rows: what a search restricted to them reads (``Index.scope``)."""

    index: Index
    sources: frozenset[str]
    rows: np.ndarray  # chunk rows, in index order
    unit_rows: np.ndarray  # the units of those chunks, in order

    @property
    def everything(self) -> bool:
        """Whether the filter covers every chunk of the index."""
        return len(self.rows) == len(self.index.chunks)

    @functools.cached_property
    def vocabulary(self) -> FilterVocabulary:
        """What these documents say, for the abstention checks (``retrieval.filter_vocabulary``), computed once."""
        from . import retrieval  # (retrieval reads indexes: imported here, where it is needed)

        return retrieval.filter_vocabulary([self.index.chunks[int(i)].search_text for i in self.rows])


def read_documents(gen: Path) -> Iterator[tuple[str, str]]:
    """(source, extracted text) of every document of a generation folder, in order."""
    with open(gen / DOCUMENTS, "rb") as f:
        for line in f:
            row = json.loads(line)
            yield str(row["source"]), str(row["text"])
