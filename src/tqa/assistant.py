"""The question-answering surface: ``Assistant.load(index).ask(question)`` returns an ``Answer`` made only of
passages quoted from the documents, each with its citation and the sentence(s) that best answer."""

from __future__ import annotations

import numbers
import os
import re
import reprlib
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import abstention, examples
from .chunking import SECTION_SEPARATOR, Chunk
from .config import MAX_K, MAX_SEARCH_K, MODES, Settings
from .embedding import Embedder, check_model, embedder_for_index, load_embedder
from .errors import BadQuestion, IndexMismatch, TqaError, shown
from .index import Index
from .keywords import KeywordIndex
from .manifest import Manifest
from .query_encoder import OnnxQueryEncoder, for_documents, load_query_encoder
from .retrieval import Scored, Weights, search, vocabulary, weights_for
from .store import CURRENT, current_generation, load_index
from .tuning import model_source

NOT_COVERED = "The documents don't seem to cover this."
LOW_RELEVANCE = abstention.LOW_RELEVANCE
# Control characters other than tab/newline (C0, DEL and C1, NUL bytes included) are replaced by spaces.
_CONTROL = {c: " " for c in range(32) if chr(c) not in "\t\n"} | {c: " " for c in range(0x7F, 0xA0)}
_SURROGATE = re.compile("[\ud800-\udfff]")
# How a citation marks a passage read by OCR from a scanned page (its words may be misread).
OCR_MARK = "read by OCR"
SHOWN_NAMES = 10  # unknown document names listed in an error, at most
NAME_CHARS = 120  # a document name in an error, at most


@dataclass(frozen=True)
class Passage:
    text: str
    source: str
    section: str  # the heading trail, joined with " > "
    page: int | None
    start: int  # character offsets into the document's extracted text: text == extracted[start:end]
    end: int
    score: float  # the ranking score of the mode used (hybrid: fused reciprocal rank)
    highlight: str  # the best-answering sentence(s), verbatim from text
    highlight_start: int  # offsets into the document's extracted text, like start/end
    highlight_end: int
    rank: int = 1
    relevance: float | None = None  # cosine similarity of question and passage (None if not measured)
    keyword_score: float | None = None
    section_path: tuple[str, ...] = ()
    ocr: bool = False  # the text was read by OCR from a scanned page: a word may be misread
    page_unit: str = "page"  # what ``page`` counts: "page", or "slide" for presentations
    # The document's sender and date ("from", "date"): an e-mail's, or for an attachment its message's.
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    also_in: tuple[str, ...] = ()  # other documents holding the same text (shown once, here)

    def origin(self) -> str:
        """What the source line shows besides the name: "from Anna <anna@example.org>, 2024-03-05 10:15"."""
        return origin_line(self.metadata)

    def citation(self) -> str:
        """A human reference: file, section, page (or slide), and whether the text was read by OCR."""
        parts = [self.source]
        if self.section:
            parts.append(f"§ {self.section}")
        where = page_label(self.page, self.page_unit)
        if where:
            parts.append(where)
        if self.ocr:
            parts.append(OCR_MARK)
        parts.append(f"chars {self.start}-{self.end}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["section_path"] = list(self.section_path)
        d["also_in"] = list(self.also_in)
        d["citation"] = self.citation()
        d["origin"] = self.origin()
        return d


def origin_line(metadata: dict[str, str]) -> str:
    """A document's sender and date for its source line ("" when it has neither). A date the loader could read is
    ISO 8601, shown to the minute."""
    parts = []
    if metadata.get("from"):
        parts.append(f"from {metadata['from']}")
    date = metadata.get("date") or ""
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?([+-]\d\d:\d\d|Z)?", date):
        date = date[:10] + " " + date[11:16]
    if date:
        parts.append(date)
    return ", ".join(parts)


def page_label(page: int | None, unit: str = "page") -> str:
    """"p. 3", "slide 3", or "" without a page."""
    if page is None:
        return ""
    return f"slide {page}" if unit == "slide" else f"p. {page}"


@dataclass(frozen=True)
class Answer:
    question: str
    passages: list[Passage]
    abstained: bool
    message: str  # what to tell the reader in one line
    mode: str
    relevance: float | None  # the best passage's cosine similarity, the abstention signal
    threshold: float
    warnings: list[str] = field(default_factory=list)
    abstain_reason: str | None = None  # why the documents don't seem to cover the question

    @property
    def best(self) -> Passage | None:
        return None if self.abstained or not self.passages else self.passages[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "abstained": self.abstained,
            "message": self.message,
            "mode": self.mode,
            "relevance": self.relevance,
            "threshold": self.threshold,
            "warnings": list(self.warnings),
            "abstain_reason": self.abstain_reason,
            "passages": [p.to_dict() for p in self.passages],
        }


@dataclass(frozen=True)
class Hit:
    """A passage ``Assistant.search`` ranked: where it is and how it scored (no highlight, no abstention)."""

    rank: int
    source: str
    start: int  # character offsets into the document's extracted text, as for a Passage
    end: int
    section: str  # the heading trail, joined with " > "
    page: int | None
    score: float  # the ranking score of the mode used
    relevance: float | None  # cosine similarity of question and passage (None in bm25 mode: not computed)
    keyword_score: float | None
    text: str
    ocr: bool = False  # read by OCR from a scanned page
    page_unit: str = "page"  # "page", or "slide" for presentations
    also_in: tuple[str, ...] = ()  # other documents holding the same text (listed once, here)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["also_in"] = list(self.also_in)
        return d


def normalize_question(question: Any, max_chars: int) -> tuple[str, list[str]]:
    """Validate and clean a question: lone surrogates (text that is not valid Unicode, such as undecodable
    bytes in a command line) and control characters removed, NFC, whitespace collapsed, length capped."""
    if not isinstance(question, str):
        raise BadQuestion("The question must be text.")
    warnings = []
    bound = 4 * max_chars + 1024  # bound the work before cleaning; what is cut here is past the cap anyway
    cut = len(question) > bound
    q = question[:bound] if cut else question
    if _SURROGATE.search(q):
        # a well-formed pair becomes its character; a lone half is not text and cannot be encoded: removed
        q = _SURROGATE.sub(" ", q.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass"))
    q = unicodedata.normalize("NFC", q).translate(_CONTROL)
    q = " ".join(q.split())
    if not q:
        raise BadQuestion("Please type a question: it is empty.")
    if len(q) > max_chars:
        q = q[:max_chars].rsplit(" ", 1)[0] or q[:max_chars]
        cut = True
    if cut:
        warnings.append(f"The question was longer than {max_chars} characters; only the start was used.")
    return q, warnings


@dataclass(frozen=True)
class Query:
    """A checked request: the cleaned question, the number of passages, the mode and the source filter."""

    question: str
    k: int
    mode: str
    sources: tuple[str, ...] | None
    warnings: tuple[str, ...] = ()


def prepare_query(question: Any, k: Any = None, mode: Any = None, sources: Any = None, *,
                  settings: Settings, max_k: int = MAX_K) -> Query:
    """Check a request once, for every front end: the question (``normalize_question``), ``k`` (a whole
    number from 1 to ``max_k``; a bool is not a number here), the mode and the type of ``sources`` (a list of
    document names, or one name as a string; empty means every document). Whether the sources are in the
    index is checked against the index that answers (``Assistant.ask``)."""
    q, warnings = normalize_question(question, settings.max_question_chars)
    k = settings.k if k is None else k
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= int(k) <= max_k:
        raise BadQuestion(f"The number of passages must be a whole number from 1 to {max_k}.")
    mode = settings.mode if mode is None or mode == "" else mode
    if not isinstance(mode, str) or mode not in MODES:
        raise BadQuestion(f"Unknown search mode {reprlib.repr(mode)}; choose one of {', '.join(MODES)}.")
    if isinstance(sources, str):
        sources = [sources]  # one document
    if sources is not None:
        if not isinstance(sources, (list, tuple, set, frozenset)) or not all(isinstance(s, str) for s in sources):
            raise BadQuestion("sources must be a list of document names (text); `tqa info` lists them.")
        sources = tuple(dict.fromkeys(sources)) or None
    return Query(q, int(k), mode, sources, tuple(warnings))


def highlight(chunk: Chunk, question: str, keywords: KeywordIndex) -> tuple[int, int]:
    """Relative span of the sentence(s) in ``chunk`` that share the most informative words with the question.

    Each sentence scores the summed inverse document frequency of the question's (stemmed) terms it contains;
    a neighbouring sentence that scores nearly as well is included too. With no overlap, the first sentence.
    The sentences' terms are analysed once per chunk (``KeywordIndex.span_terms``), not once per question.
    """
    terms = set(keywords.analyze(question))
    sentences = chunk.sentences or ((0, len(chunk.text)),)
    if not terms:
        return sentences[0]
    scores = [sum(keywords.idf(t) for t in terms & words) for words in keywords.span_terms(chunk.text, sentences)]
    best = max(range(len(sentences)), key=lambda i: (scores[i], -i))
    if scores[best] <= 0:
        return sentences[0]
    a, b = sentences[best]
    for j in (best + 1, best - 1):
        if 0 <= j < len(sentences) and scores[j] >= 0.8 * scores[best] and len(terms) > 2:
            a, b = min(a, sentences[j][0]), max(b, sentences[j][1])
            break
    return a, b


def _free_name(folder: Path, name: str, data: bytes) -> Path:
    """``folder/name``, or ``name-2``, ``name-3``... when a different file already has that name (an upload
    never overwrites a document)."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = folder / name, 1
    while candidate.exists() and candidate.read_bytes() != data:
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    return candidate


class Assistant:
    """Answers questions from one index. Load once, ask many times (thread-safe).

    A running assistant follows its index folder: before each question it looks whether ``CURRENT`` was
    replaced since it last read it (one ``stat``, no file read on the way of an answer), and when a build has
    published another generation than the loaded one it loads it, once per publish (one question loads it;
    questions asked meanwhile answer from the loaded one). A question keeps the index it started with to the
    end. A generation built with another model is refused with ``IndexMismatch`` rather than searched with
    this assistant's embedder.
    """

    def __init__(self, index: Index, embedder: Embedder, settings: Settings):
        self.embedder = embedder
        self.settings = settings
        self._index = index
        self._lock = threading.Lock()  # guards _index, _users, _retired, _owned, _refused
        self._loading = threading.Lock()  # held by the one thread loading a newly published generation
        self._users: dict[int, int] = {}  # id(index) -> questions answering from it now
        self._retired: dict[int, Index] = {}  # replaced generations still in use, closed when the last ends
        self._owned: set[int] = set()  # generations this assistant loaded (and so closes); not one handed to it
        self._refused: tuple[str, TqaError] | None = None  # a published generation this assistant cannot use
        self._seen: tuple[int, ...] | None = None  # CURRENT's identity when it last named the loaded generation

    @classmethod
    def load(cls, index: str | Path = "index", *, embedder: Embedder | None = None,
             settings: Settings | None = None) -> Assistant:
        settings = settings or Settings.from_env()
        loaded = load_index(index, defer=True)  # its vector indexes verified and read while the model loads
        if embedder is None:
            # the index's exported model, without torch (query_encoder.py); else the index's model at the
            # precision its vectors were made at (embedding.py)
            embedder = load_query_encoder(loaded.manifest, loaded.path) or embedder_for_index(
                loaded.manifest.model.name, loaded.manifest.precision, load_embedder,
                model_source(loaded.manifest, Path(index)))
        else:
            _check_embedder(embedder, loaded, index)
        qa = cls(loaded, embedder, settings)
        qa._owned.add(id(loaded))
        return qa

    @property
    def index(self) -> Index:
        """The index loaded now (a question takes its own snapshot; see the class docstring)."""
        return self._index

    @property
    def manifest(self) -> Manifest:
        """The loaded index's manifest: what it holds and how it was built."""
        return self._index.manifest

    @property
    def threshold(self) -> float:
        return self._threshold(self._index)

    def _weights(self, index: Index) -> Weights:
        """How this assistant weighs the signals of ``index`` (settings ``ranking`` and ``keyword_weight``)."""
        return weights_for(index, self.settings.ranking, self.settings.keyword_weight)

    def _threshold(self, index: Index) -> float:
        if self.settings.abstain_threshold is not None:
            return self.settings.abstain_threshold
        return index.threshold

    # ------------------------------------------------------------ following the index folder

    def _follow(self, strict: bool = True) -> list[str]:
        """Load a newly published generation if there is one (see the class docstring). Returns warnings for
        the reader; raises the ``IndexMismatch`` of a generation this assistant cannot answer from (unless
        ``strict`` is false: then it goes on with the loaded one)."""
        index = self._index
        if index.path is None:
            return []  # an index held in memory only
        stamp = _stamp(index.path.parent)
        if stamp is None or stamp == self._seen:
            return []  # no index there any more (keep the loaded one), or the same CURRENT as last time
        try:
            gen = current_generation(index.path.parent)
        except TqaError:
            return []  # CURRENT is being replaced or was damaged: keep the loaded index
        if gen is None or gen.name == index.path.name:
            self._seen = stamp  # (stamped before reading: a publish in between is seen next time)
            return []
        refused = self._refused
        if refused is None or refused[0] != gen.name:
            if not self._loading.acquire(blocking=False):
                return []  # another question is loading it; this one answers from the loaded index
            try:
                self._load_published()
            finally:
                self._loading.release()
            refused = self._refused
            if refused is None or refused[0] != gen.name:
                return []
        if isinstance(refused[1], IndexMismatch) and strict:
            raise refused[1]
        return [f"A newer index was published but cannot be used: {refused[1]} Answers come from the index "
                "loaded before."]

    def _load_published(self) -> None:
        """Load the live generation if it is not the loaded one (the caller holds ``_loading``)."""
        current = self._index
        assert current.path is not None
        root = current.path.parent
        try:
            gen = current_generation(root)
        except TqaError:
            return
        if gen is None or gen.name == current.path.name:
            return
        try:
            new = load_index(root)
        except TqaError as exc:
            with self._lock:
                self._refused = (gen.name, exc)
            return
        assert new.path is not None
        try:
            _check_embedder(self.embedder, new, root)
        except IndexMismatch as exc:
            new.close()
            with self._lock:
                self._refused = (new.path.name, exc)
            return
        self._install(new)

    def _install(self, new: Index) -> None:
        """Make ``new`` the loaded index; the one it replaces is closed now, or when its last question ends."""
        with self._lock:
            old, self._index = self._index, new
            self._owned.add(id(new))
            self._refused = None
            close = id(old) in self._owned and old is not new
            if close and self._users.get(id(old)):
                self._retired[id(old)] = old  # a question is still answering from it
                close = False
            if close:
                self._owned.discard(id(old))
        if close:
            old.close()

    @contextmanager
    def _snapshot(self, strict: bool = True) -> Iterator[tuple[Index, list[str]]]:
        """The index one question answers from, from start to end, and warnings about it."""
        notes = self._follow(strict)
        with self._lock:
            index = self._index
            self._users[id(index)] = self._users.get(id(index), 0) + 1
        try:
            yield index, notes
        finally:
            with self._lock:
                n = self._users.pop(id(index)) - 1
                if n:
                    self._users[id(index)] = n
                retired = self._retired.pop(id(index), None) if not n else None
                if retired is not None:
                    self._owned.discard(id(index))
            if retired is not None:
                retired.close()

    def reload(self) -> None:
        """Load the live generation now (after an incremental build); a question in flight keeps the old one."""
        folder = self._index.folder
        assert folder is not None
        with self._loading:
            new = load_index(folder)
            try:
                _check_embedder(self.embedder, new, folder)
            except IndexMismatch:
                new.close()
                raise
            if new.path is not None and self._index.path is not None and new.path.name == self._index.path.name:
                new.close()  # nothing was published meanwhile
                return
            self._install(new)

    # ------------------------------------------------------------ what the index holds

    def sources(self) -> list[str]:
        self._follow(strict=False)
        return self._index.sources

    def info(self) -> dict[str, Any]:
        """What the index holds, for a status panel."""
        self._follow(strict=False)
        m = self._index.manifest
        return {
            "documents": m.counts.files,
            "chunks": m.counts.chunks,
            "model": m.model.name,
            "built": m.created,
            "corpus": m.corpus,
            "sources": m.sources,
            "skipped": [s.to_dict() for s in m.skipped],
            "abstain_threshold": self._threshold(self._index),
            "language": self._index.language,
            "abstention_checks": abstention.active_checks(self._index.language),
            "ranking": self.settings.ranking if m.ranking is not None else "shipped",
            "ranking_why": m.ranking.why if m.ranking is not None else None,
        }

    def documents(self) -> list[tuple[str, str]]:
        """(source, extracted text) of every indexed document, as the index holds them: the text that passages'
        and hits' offsets point into."""
        with self._snapshot(strict=False) as (index, _):
            return list(index.documents())

    def context(self, source: str, start: int, end: int) -> dict[str, Any]:
        """The section around a passage, for reading it in context: the section's text and offsets, and where
        the passage sits inside it. Reads the index's copy of the document, not the corpus."""
        with self._snapshot() as (index, _):
            section = index.section_at(source, start)
            if section is None:
                raise BadQuestion(f"No passage at {shown(source, NAME_CHARS)} {start}-{end} in this index.")
            text = index.document_text(source)
            if text is None:
                raise BadQuestion(f"{shown(source, NAME_CHARS)} is not in this index.")
            at = index.chunk_at(source, start)
        a, b = section.start, section.end
        return {
            "source": source,
            "section": SECTION_SEPARATOR.join(section.trail),
            "page": section.page,
            "page_unit": at.page_unit if at is not None else "page",
            "ocr": bool(at is not None and at.ocr),
            "origin": origin_line(_metadata(index, source)),
            "start": a,
            "end": b,
            "text": text[a:b],
            "passage_start": start - a,
            "passage_end": min(end, b) - a,
        }

    # ------------------------------------------------------------ adding documents

    @property
    def document_types(self) -> tuple[str, ...]:
        """The file extensions an index reads (``add_documents`` accepts these, and only these)."""
        from .loaders import SUPPORTED

        return tuple(sorted(SUPPORTED))

    def add_documents(self, files: list[tuple[str, bytes]], *, subfolder: str = "uploads",
                      max_bytes: int | None = None, on_progress: Any = None) -> Any:
        """Save documents into the corpus folder this index was built from, index them incrementally and
        reload. Names are reduced to a safe base name; unsupported types and oversized files are refused.
        ``on_progress(stage, done, total)`` is passed to ``build_index`` (for a progress bar)."""
        from .indexing import build_index

        corpus = self._index.manifest.corpus
        if not corpus or not Path(corpus).is_dir():
            raise BadQuestion("The corpus folder of this index is not available; add files there and run `tqa index`.")
        accepted = self._accepted(files, max_bytes or self.settings.max_file_bytes)
        written = _save(Path(corpus) / subfolder, accepted)
        folder = self._index.folder
        assert folder is not None
        documents_embedder = for_documents(self.embedder, self._index.manifest, load_embedder,  # the full model
                                           model_source(self._index.manifest, folder))
        summary = build_index(corpus, folder, embedder=documents_embedder, settings=self.settings,
                              on_progress=on_progress)
        # A file the indexer skipped (empty, binary, a duplicate...) adds nothing: don't leave it in the corpus.
        skipped = {s["path"] for s in summary.skipped}
        for dest in written:
            if dest.relative_to(corpus).as_posix() in skipped:
                dest.unlink(missing_ok=True)
        self.reload()
        return summary

    def _accepted(self, files: list[tuple[str, bytes]], limit: int) -> list[tuple[str, bytes]]:
        """(safe base name, content) of each file; raises BadQuestion for an unsupported or oversized one."""
        from .loaders import size_text

        accepted = []
        for name, data in files:
            base = Path(name.replace("\\", "/")).name.lstrip(".")
            if not base or Path(base).suffix.lower() not in self.document_types:
                raise BadQuestion(f"{name!r}: only {', '.join(self.document_types)} files can be added.")
            if len(data) > limit:
                raise BadQuestion(f"{base}: larger than the {size_text(limit)} limit.")
            accepted.append((base, data))
        return accepted

    # ------------------------------------------------------------ asking

    def ask(self, question: str, k: int | None = None, mode: str | None = None,
            sources: str | list[str] | None = None) -> Answer:
        """Answer ``question`` with up to ``k`` passages (1 to ``MAX_K``; default ``settings.k``), searched with
        ``mode`` (hybrid, dense, bm25) in every document or only in ``sources``. Bad input raises
        ``BadQuestion`` with a one-line message (see ``prepare_query``)."""
        query = prepare_query(question, k, mode, sources, settings=self.settings)
        with self._snapshot() as (index, notes):
            return self._answer(index, query, notes)

    def search(self, question: str, k: int | None = None, mode: str | None = None,
               sources: str | list[str] | None = None, *, dedupe: bool = True) -> list[Hit]:
        """The ``k`` best passages for ``question`` (1 to ``MAX_SEARCH_K``; default ``settings.k``), ranked by
        ``mode`` in every document or only in ``sources``: the ranking ``ask`` answers from, with each passage's
        source, offsets, section, page and scores, but no highlight and no abstention (for evaluation and tools).
        ``dedupe=False`` keeps passages that overlap a better-ranked one of the same document. Bad input raises
        ``BadQuestion``, as for ``ask``."""
        query = prepare_query(question, k, mode, sources, settings=self.settings, max_k=MAX_SEARCH_K)
        with self._snapshot() as (index, _):
            source_list = _checked_sources(index, query.sources)
            qvec = None if query.mode == "bm25" else self.embedder.encode([query.question])[0]
            scored, _ = search(index, query.question, qvec, k=query.k, mode=query.mode, sources=source_list,
                               dedupe=dedupe, weights=self._weights(index))
            return [_hit(index, s, rank) for rank, s in enumerate(scored, 1)]

    def _answer(self, index: Index, query: Query, notes: list[str]) -> Answer:
        q, k, mode = query.question, query.k, query.mode
        source_list = _checked_sources(index, query.sources)
        qvec = self.embedder.encode([q])[0]
        scored, relevance = search(index, q, qvec, k=k, mode=mode, sources=source_list,
                                   weights=self._weights(index))
        threshold = self._threshold(index)
        passages = [_passage(index, s, rank, q) for rank, s in enumerate(scored, 1)]
        # every check looks only at the documents searched: a name another document mentions is still never
        # mentioned by these
        reason = abstention.check(
            q, [abstention.Evidence(p.text, p.relevance or 0.0, p.highlight) for p in passages],
            vocabulary(index, source_list), threshold=threshold, language=index.language,
            analyze=index.keywords.analyze, relevance=relevance, calibrated=index.threshold)
        abstained = reason is not None
        if reason == LOW_RELEVANCE:
            message = NOT_COVERED
        elif reason is not None:
            message = f"{NOT_COVERED[:-1]}: {reason}."
        else:
            message = f"{len(passages)} passage{'s' if len(passages) != 1 else ''} from the documents."
        return Answer(q, passages, abstained, message, mode,
                      None if relevance is None else round(relevance, 4), threshold,
                      [*query.warnings, *notes], reason)

    # ------------------------------------------------------------ example questions

    def example_questions(self, n: int = 3) -> list[str]:
        """Up to ``n`` questions about this index's own documents, each answered here (the web page's "Try"
        buttons); see ``tqa.examples``. Computed once per loaded generation."""
        index = self.index
        memo = index.examples.get(n)
        if memo is None:
            try:
                memo = tuple(examples.example_questions(index, self.ask, n))
            except examples.NotNow as stop:
                return list(stop.found)  # not answering now: not remembered
            index.examples[n] = memo
        return list(memo)

def _checked_sources(index: Index, sources: tuple[str, ...] | None) -> list[str] | None:
    """The source filter as a list (None for every document); raises BadQuestion naming documents the index does
    not hold."""
    if not sources:
        return None
    unknown = sorted(set(sources) - set(index.manifest.files))
    if unknown:
        listed = ", ".join(shown(u, NAME_CHARS) for u in unknown[:SHOWN_NAMES])
        more = f" and {len(unknown) - SHOWN_NAMES} more" if len(unknown) > SHOWN_NAMES else ""
        raise BadQuestion(f"Not in the index: {listed}{more}. See `tqa info` for the documents.")
    return list(sources)


def _check_embedder(embedder: Embedder, index: Index, where: Any) -> None:
    """Refuse an index made with another model (or precision) than ``embedder`` encodes questions with. The
    question encoder exported from the model (query_encoder.py) computes in fp32 for an index of any precision: its
    agreement with the index's own vectors was checked when it was exported."""
    exported = isinstance(embedder, OnnxQueryEncoder)
    check_model(embedder, index.manifest.model.name, None if exported else index.manifest.precision, where)


def _stamp(index_dir: Path) -> tuple[int, ...] | None:
    """The identity of ``index_dir/CURRENT`` (a publish replaces it with a new file), or None without one."""
    try:
        st = os.stat(index_dir / CURRENT)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _save(target: Path, files: list[tuple[str, bytes]]) -> list[Path]:
    """Write each file into ``target`` under a free name (never over another document); returns those written
    (a file added before with the same content is not written again)."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for base, data in files:
        dest = _free_name(target, base, data)
        if dest.exists():
            continue  # the same file was added before
        tmp = target / f".{dest.name}.part"
        tmp.write_bytes(data)
        tmp.replace(dest)
        written.append(dest)
    return written


def _hit(index: Index, scored: Scored, rank: int) -> Hit:
    c = index.chunks[scored.row]
    return Hit(rank=rank, source=c.source, start=c.start, end=c.end, section=SECTION_SEPARATOR.join(c.section),
               page=c.page, score=scored.score, relevance=scored.dense, keyword_score=scored.keyword, text=c.text,
               ocr=c.ocr, page_unit=c.page_unit, also_in=scored.also_in)


def _passage(index: Index, scored: Scored, rank: int, question: str) -> Passage:
    c = index.chunks[scored.row]
    a, b = highlight(c, question, index.keywords)
    return Passage(
        text=c.text,
        source=c.source,
        section=SECTION_SEPARATOR.join(c.section),
        page=c.page,
        start=c.start,
        end=c.end,
        score=round(scored.score, 6),
        highlight=c.text[a:b],
        highlight_start=c.start + a,
        highlight_end=c.start + b,
        rank=rank,
        relevance=None if scored.dense is None else round(scored.dense, 4),
        keyword_score=None if scored.keyword is None else round(scored.keyword, 4),
        section_path=c.section,
        ocr=c.ocr,
        page_unit=c.page_unit,
        metadata=_metadata(index, c.source),
        also_in=scored.also_in,
    )


def _metadata(index: Index, source: str) -> dict[str, str]:
    entry = index.manifest.files.get(source)
    return dict(entry.metadata) if entry is not None else {}
