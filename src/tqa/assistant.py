"""The question-answering surface: ``Assistant.load(index).ask(question)`` returns an ``Answer`` made only of
passages quoted from the documents, each with its citation and the sentence(s) that best answer."""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .chunking import SECTION_SEPARATOR, Chunk
from .config import Settings
from .embedding import Embedder, check_precision, embedder_for_index, load_embedder
from .errors import BadQuestion
from .retrieval import MODES, Hit, coverage_gap, rows_by_source, search, vocabulary
from .store import IndexData, KeywordIndex, load_index

NOT_COVERED = "The documents don't seem to cover this."
LOW_RELEVANCE = "no passage is relevant enough"
# Control characters other than tab/newline are replaced by spaces (NUL bytes included).
_CONTROL = {c: " " for c in range(32) if chr(c) not in "\t\n"} | {0x7F: " "}


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

    def citation(self) -> str:
        """A human reference: file, section, page."""
        parts = [self.source]
        if self.section:
            parts.append(f"§ {self.section}")
        if self.page is not None:
            parts.append(f"p. {self.page}")
        parts.append(f"chars {self.start}-{self.end}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["section_path"] = list(self.section_path)
        d["citation"] = self.citation()
        return d


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


def normalize_question(question: Any, max_chars: int) -> tuple[str, list[str]]:
    """Validate and clean a question: NFC, control characters removed, length capped."""
    if not isinstance(question, str):
        raise BadQuestion("The question must be text.")
    q = unicodedata.normalize("NFC", question).translate(_CONTROL)
    q = " ".join(q.split())
    if not q:
        raise BadQuestion("Please type a question: it is empty.")
    warnings = []
    if len(q) > max_chars:
        q = q[:max_chars].rsplit(" ", 1)[0] or q[:max_chars]
        warnings.append(f"The question was longer than {max_chars} characters; only the start was used.")
    return q, warnings


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
    """Answers questions from one index. Load once, ask many times (thread-safe)."""

    def __init__(self, data: IndexData, embedder: Embedder, settings: Settings):
        self.data = data
        self.embedder = embedder
        self.settings = settings

    @classmethod
    def load(cls, index: str | Path = "index", *, embedder: Embedder | None = None,
             settings: Settings | None = None) -> Assistant:
        settings = settings or Settings.from_env()
        data = load_index(index)
        model = data.manifest["model"]["name"]
        if embedder is None:
            # the index's model at the precision its vectors were made at (embedding.py)
            embedder = embedder_for_index(data.manifest, load_embedder)
        elif embedder.name != model:
            from .errors import IndexMismatch

            raise IndexMismatch(
                f"The index at {index}/ was built with model {model!r}, not {embedder.name!r}. "
                "Run `tqa index --rebuild` with the model you want."
            )
        else:
            check_precision(embedder, data.manifest, index)
        return cls(data, embedder, settings)

    @property
    def manifest(self) -> dict[str, Any]:
        return self.data.manifest

    @property
    def threshold(self) -> float:
        return self._threshold(self.data)

    def _threshold(self, data: IndexData) -> float:
        if self.settings.abstain_threshold is not None:
            return self.settings.abstain_threshold
        return float(data.manifest.get("calibration", {}).get("abstain_threshold", 0.2))

    def sources(self) -> list[str]:
        return sorted(self.data.manifest.get("files", {}))

    def info(self) -> dict[str, Any]:
        """What the index holds, for a status panel."""
        m = self.data.manifest
        return {
            "documents": m["counts"]["files"],
            "chunks": m["counts"]["chunks"],
            "model": m["model"]["name"],
            "built": m.get("created"),
            "corpus": m.get("corpus"),
            "sources": self.sources(),
            "skipped": m.get("skipped", []),
            "abstain_threshold": self.threshold,
        }

    def context(self, source: str, start: int, end: int) -> dict[str, Any]:
        """The section around a passage, for reading it in context: the section's text and offsets, and where
        the passage sits inside it. Reads the index's copy of the document, not the corpus."""
        chunks = self.data.chunks
        rows = [int(i) for i in rows_by_source(self.data).get(source, ()) if chunks[i].start <= start < chunks[i].end]
        if not rows:
            raise BadQuestion(f"No passage at {source} {start}-{end} in this index.")
        i = j = rows[0]
        trail = chunks[i].section
        while i > 0 and chunks[i - 1].source == source and chunks[i - 1].section == trail:
            i -= 1
        while j + 1 < len(chunks) and chunks[j + 1].source == source and chunks[j + 1].section == trail:
            j += 1
        text = self.data.document_text(source)
        if text is None:
            raise BadQuestion(f"{source} is not in this index.")
        a, b = chunks[i].start, chunks[j].end
        return {
            "source": source,
            "section": SECTION_SEPARATOR.join(trail),
            "page": chunks[rows[0]].page,
            "start": a,
            "end": b,
            "text": text[a:b],
            "passage_start": start - a,
            "passage_end": min(end, b) - a,
        }

    def reload(self) -> None:
        """Pick up a newly published index (after an incremental build)."""
        assert self.data.path is not None
        self.data = load_index(self.data.path.parent)  # one assignment: a question in flight keeps the old one

    def add_documents(self, files: list[tuple[str, bytes]], *, subfolder: str = "uploads",
                      max_bytes: int | None = None, on_progress: Any = None) -> Any:
        """Save documents into the corpus folder this index was built from, index them incrementally and
        reload. Names are reduced to a safe base name; unsupported types and oversized files are refused.
        ``on_progress(stage, done, total)`` is passed to ``build_index`` (for a progress bar)."""
        from .indexing import build_index
        from .loaders import SUPPORTED, size_text

        corpus = self.data.manifest.get("corpus")
        if not corpus or not Path(corpus).is_dir():
            raise BadQuestion("The corpus folder of this index is not available; add files there and run `tqa index`.")
        limit = max_bytes or self.settings.max_file_bytes
        target = Path(corpus) / subfolder
        saved = []
        for name, data in files:
            base = Path(name.replace("\\", "/")).name.lstrip(".")
            if not base or Path(base).suffix.lower() not in SUPPORTED:
                raise BadQuestion(f"{name!r}: only {', '.join(sorted(SUPPORTED))} files can be added.")
            if len(data) > limit:
                raise BadQuestion(f"{base}: larger than the {size_text(limit)} limit.")
            saved.append((base, data))
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for base, data in saved:
            dest = _free_name(target, base, data)
            if dest.exists():
                continue  # the same file was added before
            tmp = target / f".{dest.name}.part"
            tmp.write_bytes(data)
            tmp.replace(dest)
            written.append(dest)
        assert self.data.path is not None
        summary = build_index(corpus, self.data.path.parent, embedder=self.embedder, settings=self.settings,
                              on_progress=on_progress)
        # A file the indexer skipped (empty, binary, a duplicate...) adds nothing: don't leave it in the corpus.
        skipped = {s["path"] for s in summary.skipped}
        for dest in written:
            if dest.relative_to(corpus).as_posix() in skipped:
                dest.unlink(missing_ok=True)
        self.reload()
        return summary

    def ask(self, question: str, k: int | None = None, mode: str | None = None,
            sources: list[str] | None = None) -> Answer:
        k = self.settings.k if k is None else k
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise BadQuestion(f"Unknown search mode {mode!r}; choose one of {', '.join(MODES)}.")
        if not isinstance(k, int) or k < 1:
            raise BadQuestion("The number of passages must be a whole number of at least 1.")
        q, warnings = normalize_question(question, self.settings.max_question_chars)
        data = self.data  # one snapshot per question, even if an upload reloads the index meanwhile
        if sources:
            unknown = sorted(set(sources) - set(data.manifest.get("files", {})))
            if unknown:
                raise BadQuestion(f"Not in the index: {', '.join(unknown)}. See `tqa info` for the documents.")
        qvec = self.embedder.encode([q])[0]
        hits, relevance = search(data, q, qvec, k=k, mode=mode, sources=sources)
        threshold = self._threshold(data)
        passages = [_passage(data, h, rank, q) for rank, h in enumerate(hits, 1)]
        if relevance is None or relevance < threshold:
            reason: str | None = LOW_RELEVANCE
            message = NOT_COVERED
        else:
            # every check looks only at the documents searched: a name another document mentions is still
            # never mentioned by these
            reason = coverage_gap(q, [p.text for p in passages[:3]], vocabulary(data, sources))
            message = f"{NOT_COVERED[:-1]}: {reason}." if reason else ""
        abstained = reason is not None
        if not abstained:
            message = f"{len(passages)} passage{'s' if len(passages) != 1 else ''} from the documents."
        return Answer(q, passages, abstained, message, mode,
                      None if relevance is None else round(relevance, 4), threshold, warnings, reason)


def _passage(data: IndexData, hit: Hit, rank: int, question: str) -> Passage:
    c = data.chunks[hit.row]
    a, b = highlight(c, question, data.keywords)
    return Passage(
        text=c.text,
        source=c.source,
        section=SECTION_SEPARATOR.join(c.section),
        page=c.page,
        start=c.start,
        end=c.end,
        score=round(hit.score, 6),
        highlight=c.text[a:b],
        highlight_start=c.start + a,
        highlight_end=c.start + b,
        rank=rank,
        relevance=None if hit.dense is None else round(hit.dense, 4),
        keyword_score=None if hit.keyword is None else round(hit.keyword, 4),
        section_path=c.section,
    )
