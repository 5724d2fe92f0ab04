"""Building and updating an index: discover, extract, chunk, embed what changed, publish atomically.

Kept apart from ``store.py`` (which only knows how an index sits on disk) because it orchestrates every stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .chunking import Chunk, Chunker
from .config import DEFAULT_MODEL, ChunkSettings, Settings
from .embedding import (
    FULL_PRECISION,
    Embedder,
    check_precision,
    load_embedder,
    precision_of,
    resolve_precision,
)
from .errors import CorpusError, IndexCorrupt, IndexMismatch, shown
from .index import Index
from .keywords import KeywordIndex, analyzer_settings
from .loaders import Document, NotReadable, SkipFile, Skipped, discover, extract, read_bounded
from .manifest import Calibration, Counts, FileEntry, Manifest, ModelInfo
from .query_encoder import write_encoder
from .retrieval import name_prefixes
from .store import (
    check_index_location,
    current_generation,
    load_index,
    publish,
    tidy,
    write_lock,
)
from .vectors import FaissVectors

Progress = Callable[[str, int, int], None]  # (stage, done, total)


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


def _printable(text: str) -> str:
    """``text`` with what cannot be printed on one line (a newline in a file name, a lone surrogate from a name that
    is not UTF-8) written as its escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _previous(index_dir: Path, rebuild: bool) -> Index | None:
    if rebuild or current_generation(index_dir) is None:
        return None
    try:
        return load_index(index_dir)
    except IndexCorrupt as exc:
        raise IndexCorrupt(f"{exc} (The existing index is damaged; --rebuild replaces it.)") from None


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
) -> IndexSummary:
    """Index ``corpus`` into ``index``, embedding only what changed since the last run.

    ``model`` and ``chunking`` default to what the existing index was built with (or the defaults for a new
    one); asking for different ones, or another corpus folder, without ``rebuild`` raises ``IndexMismatch``.
    ``index`` must be a new folder, a tqa index, or a folder empty but for README files and dotfiles; ``force``
    allows any other folder outside the corpus (nothing tqa did not write is ever deleted or replaced there).
    """
    t0 = time.perf_counter()
    settings = settings or Settings.from_env()
    corpus, index_dir = Path(corpus), Path(index)
    if progress is None:
        progress = sys.stderr.isatty()
    summary = IndexSummary(index_dir=str(index_dir))
    check_index_location(corpus, index_dir)
    candidates, skipped = discover(corpus, max_bytes=settings.max_file_bytes)

    with write_lock(index_dir, force=force):
        old = _previous(index_dir, rebuild)
        old_manifest = old.manifest if old else None
        old_chunks = old.chunks if old else []
        if old_manifest and not same_corpus(old_manifest, corpus, index_dir):
            here = Path(os.path.abspath(corpus))
            raise IndexMismatch(
                f"The index at {shown(index_dir)}/ was built from {shown(old_manifest.corpus)}, not {shown(here)}. "
                f"Run `tqa index {shown(corpus)} --index {shown(index_dir)} --rebuild` to replace its documents with "
                "this folder's, or pass --index DIR to keep a separate index."
            )
        if embedder is not None:
            model_name = embedder.name
        else:
            model_name = model or (old_manifest.model.name if old_manifest else None) or settings.model
        chunk_settings = chunking or (old_manifest.chunking if old_manifest else settings.chunking)
        if old_manifest:
            _check_compatible(old_manifest, model_name, chunk_settings, index_dir)
        precision = _build_precision(old_manifest, embedder, settings.precision, index_dir)

        # What the previous index holds, by content hash (identity) and by path.
        old_files: dict[str, FileEntry] = old_manifest.files if old_manifest else {}
        rows_by_source: dict[str, list[int]] = {}
        for i, c in enumerate(old_chunks):
            rows_by_source.setdefault(c.source, []).append(i)
        source_by_hash = {meta.sha256: src for src, meta in old_files.items() if meta.sha256}

        new_files: dict[str, FileEntry] = {}
        plan: list[tuple[str, list[Chunk] | None, list[int] | None]] = []  # (source, new chunks, reused rows)
        documents: dict[str, Document | None] = {}
        seen_hashes: dict[str, str] = {}
        chunker = Chunker(chunk_settings)
        for n, (source, path) in enumerate(candidates):
            if on_progress:
                on_progress("reading", n, len(candidates))
            try:  # checked and read on the open file: a FIFO or a file grown past the cap since discovery is skipped
                raw = read_bounded(path, settings.max_file_bytes)
            except NotReadable as exc:
                skipped.append(Skipped(source, str(exc)))
                continue
            except FileNotFoundError:
                skipped.append(Skipped(source, "vanished during indexing"))
                continue
            except OSError as exc:
                skipped.append(Skipped(source, f"unreadable: {exc.strerror or exc}"))
                continue
            digest = hashlib.sha256(raw).hexdigest()
            if digest in seen_hashes:
                skipped.append(Skipped(source, f"duplicate of {seen_hashes[digest]}"))
                continue
            seen_hashes[digest] = source
            old_src = source if source in old_files and old_files[source].sha256 == digest else \
                source_by_hash.get(digest)
            if old_src is not None and old_src in old_files:
                rows = rows_by_source.get(old_src, [])
                new_files[source] = old_files[old_src]
                plan.append((source, None, rows))
                documents[source] = None  # text is copied from the previous generation
                if old_src == source:
                    summary.files_unchanged.append(source)
                else:
                    summary.files_renamed.append({"from": old_src, "to": source})
                continue
            try:
                doc = extract(source, raw)
            except SkipFile as exc:
                skipped.append(Skipped(source, str(exc)))
                continue
            chunks = chunker.chunk(doc)
            if not chunks:
                skipped.append(Skipped(source, "no text to index"))
                continue
            for w in doc.warnings:
                summary.warnings.append({"path": source, "warning": w})
            new_files[source] = FileEntry(sha256=digest, size=len(raw), format=doc.format, chars=len(doc.text),
                                          chunks=len(chunks), pages=len(doc.pages) or None, warnings=doc.warnings)
            plan.append((source, chunks, None))
            documents[source] = doc
            (summary.files_changed if source in old_files else summary.files_added).append(source)

        renamed_from = {r["from"] for r in summary.files_renamed}
        summary.files_removed = sorted(s for s in old_files if s not in new_files and s not in renamed_from)
        summary.skipped = [s.to_dict() for s in skipped]

        if not new_files:
            raise CorpusError(
                f"No documents to index in {corpus}/ (supported: .txt .md .html .pdf). "
                + (f"{len(skipped)} file(s) skipped, for example {skipped[0].path}: {skipped[0].reason}."
                   if skipped else "The folder is empty.")
            )

        changed = bool(summary.files_added or summary.files_changed or summary.files_removed or summary.files_renamed)
        same_skips = old_manifest is not None and [s.to_dict() for s in old_manifest.skipped] == summary.skipped
        if old_manifest and not changed and not rebuild and same_skips:
            tidy(index_dir)  # what killed builds left behind, even when there is nothing to publish
            summary.chunks_total = len(old_chunks)
            summary.seconds = time.perf_counter() - t0
            return summary

        # Embed the new chunks and their units, all files in one batched pass.
        emb = embedder or load_embedder(model_name, precision)
        fresh = [c for _, chunks, _ in plan if chunks for c in chunks]
        texts = [c.search_text for c in fresh]
        unit_texts = [t for c in fresh for t in c.unit_search_texts()]
        encoded = emb.encode(texts + unit_texts, batch_size=settings.batch_size, progress=progress)
        fresh_vectors, fresh_units = encoded[:len(texts)], encoded[len(texts):]
        summary.chunks_embedded = len(fresh)

        all_chunks: list[Chunk] = []
        parts: list[np.ndarray] = []
        unit_parts: list[np.ndarray] = []
        cursor = unit_cursor = 0
        for source, new_chunks, reused in plan:
            if new_chunks is not None:
                n_units = sum(len(c.units) for c in new_chunks)
                all_chunks.extend(new_chunks)
                parts.append(fresh_vectors[cursor:cursor + len(new_chunks)])
                unit_parts.append(fresh_units[unit_cursor:unit_cursor + n_units])
                cursor += len(new_chunks)
                unit_cursor += n_units
            else:
                assert reused is not None and old is not None
                all_chunks.extend(_relabel(old_chunks[r], source) for r in reused)
                row_array = np.asarray(reused, dtype=np.int64)
                parts.append(old.vectors.take(row_array))
                unit_parts.append(old.units.take(old.unit_rows(row_array)))
        matrix = np.vstack(parts) if parts else np.zeros((0, emb.dim), dtype=np.float32)
        unit_matrix = np.vstack(unit_parts) if unit_parts else np.zeros((0, emb.dim), dtype=np.float32)

        from .retrieval import calibrate

        vectors, units = FaissVectors.build(matrix, emb.dim), FaissVectors.build(unit_matrix, emb.dim)
        draft = Manifest(
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            corpus=str(corpus.resolve()),
            corpus_relative=_relative_corpus(corpus, index_dir),
            model=ModelInfo(model_name, emb.dim, emb.max_tokens),
            precision=precision_of(emb),  # the embedding path (embedding.py); queries use the same
            chunking=chunk_settings,
            analyzer=analyzer_settings(),
            vector_index=dataclasses.replace(vectors.describe(), units=units.describe()),
            files=new_files,
            skipped=tuple(skipped),
            counts=Counts(len(new_files), len(all_chunks), len(unit_matrix)),
            calibration=Calibration(),
            names=tuple(name_prefixes([c.search_text for c in all_chunks])),
        )
        data = Index(manifest=draft, chunks=all_chunks, vectors=vectors, units=units,
                     keywords=KeywordIndex.build([c.search_text for c in all_chunks]))
        data.manifest = dataclasses.replace(draft, calibration=calibrate(emb, data))
        # unchanged documents keep the text the previous index extracted (it is already loaded: ``old``)
        old_texts = dict(old.documents()) if old and any(d is None for d in documents.values()) else {}
        renames = {r["to"]: r["from"] for r in summary.files_renamed}

        def document_texts() -> Any:
            for source, doc in documents.items():
                yield source, doc.text if doc is not None else old_texts[renames.get(source, source)]

        # with the question encoder (query_encoder.py): linked from the live generation, or exported from the model
        publish(index_dir, data, document_texts(), extra=lambda folder: write_encoder(emb, folder, index_dir))
        summary.published = True
        summary.chunks_total = len(all_chunks)
        summary.seconds = time.perf_counter() - t0
        return summary


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


def _relabel(chunk: Chunk, source: str) -> Chunk:
    if chunk.source == source:
        return chunk
    from dataclasses import replace

    return replace(chunk, source=source)


def _build_precision(old_manifest: Manifest | None, embedder: Embedder | None, asked: str | None,
                     index_dir: Path) -> str:
    """The precision to embed at: an update keeps the index's own (vectors are never mixed); asking for another
    one (``asked``: TQA_PRECISION, or an embedder at another precision) without --rebuild is refused."""
    if embedder is not None:
        if old_manifest:
            check_precision(embedder, old_manifest.precision, index_dir)
        return precision_of(embedder) or FULL_PRECISION
    requested = resolve_precision(asked) if asked else None
    built = old_manifest.precision if old_manifest else None
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
            f"{chunking.to_dict()}. "
            "Run `tqa index --rebuild` to rebuild it with the new settings."
        )


__all__ = ["IndexSummary", "build_index", "same_corpus", "DEFAULT_MODEL"]
