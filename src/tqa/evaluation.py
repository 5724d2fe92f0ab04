"""Measuring retrieval quality, and gating on it.

Two kinds of sets:
- a question set (``eval/questions.jsonl``): questions with evidence strings copied from the corpus; a passage
  *hits* when, in the same source, it covers at least half of the characters of an occurrence of an evidence
  string. Metrics: hit@1, hit@3, hit@5, MRR@10 over answerable questions; the share of unanswerable questions
  abstained and of answerable questions wrongly abstained.
- a BEIR set (``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``): documents are indexed and chunked as usual,
  a document scores its best chunk; nDCG@10 (linear gain, as trec_eval), Recall@10, Recall@100, MRR@10.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import MODES
from .errors import EvalError

if TYPE_CHECKING:
    from .assistant import Assistant

QUESTION_METRICS = ("hit@1", "hit@3", "hit@5", "mrr@10", "abstained_unanswerable", "abstained_answerable")
BEIR_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
RECIPE = "recipe"  # the standard LangChain recipe, run side by side
ALL_MODES = (*MODES, RECIPE)


# ---------------------------------------------------------------- question sets


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    answerable: bool


def load_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalError(f"No question set at {path}. Pass --questions FILE (JSON lines).") from None
    out, seen = [], set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            qid, question = str(row["id"]), row["question"]
            answers = tuple(row.get("answers") or ())
        except (ValueError, KeyError, TypeError) as exc:
            raise EvalError(
                f"{path}:{n}: not a question object ({exc}). Each line needs id, question, answers."
            ) from None
        if not isinstance(question, str) or not question.strip() or not all(isinstance(a, str) for a in answers):
            raise EvalError(f"{path}:{n}: question and answers must be text.")
        if qid in seen:
            raise EvalError(f"{path}:{n}: duplicate id {qid!r}.")
        seen.add(qid)
        answerable = bool(row.get("answerable", bool(answers)))
        if answerable and not answers:
            raise EvalError(f"{path}:{n}: question {qid} is answerable but has no evidence in 'answers'.")
        out.append(Question(qid, question, answers, answerable))
    if not out:
        raise EvalError(f"{path} holds no questions.")
    return out


_QUOTES = str.maketrans({"‘": "'", "’": "'", "‚": "'", "′": "'", "“": '"', "”": '"', "„": '"', "″": '"'})


def _normalise_with_map(text: str) -> tuple[str, list[int]]:
    """Text with straight quotes and whitespace runs folded to one space, and for each kept character its
    offset in the original."""
    out, where = [], []
    prev_space = False
    for i, ch in enumerate(text.translate(_QUOTES)):
        if ch.isspace():
            if prev_space:
                continue
            out.append(" ")
            prev_space = True
        else:
            out.append(ch)
            prev_space = False
        where.append(i)
    return "".join(out), where


Occurrence = tuple[str, int, int]  # source, start, end


def locate_evidence(
    questions: Sequence[Question], documents: Iterable[tuple[str, str]]
) -> dict[str, list[list[Occurrence]]]:
    """For each question, for each evidence string, every place it occurs in the corpus. Missing evidence is an
    error in the set."""
    norm_docs = []
    for source, text in documents:
        norm, where = _normalise_with_map(text)
        norm_docs.append((source, norm, where, len(text)))
    found: dict[str, list[list[Occurrence]]] = {}
    for q in questions:
        per_answer = []
        for answer in q.answers:
            needle = _normalise_with_map(answer.strip())[0]
            occ: list[Occurrence] = []
            for source, norm, where, _ in norm_docs:
                for m in re.finditer(re.escape(needle), norm):
                    start = where[m.start()]
                    end = where[m.end() - 1] + 1
                    occ.append((source, start, end))
            if not occ:
                short = answer if len(answer) <= 80 else answer[:77] + "..."
                raise EvalError(f"Question {q.id}: evidence not found in the corpus: {short!r}. Fix the question set.")
            per_answer.append(occ)
        found[q.id] = per_answer
    return found


def passage_hits(source: str, start: int, end: int, evidence: list[list[Occurrence]]) -> bool:
    for occurrences in evidence:
        for src, a, b in occurrences:
            if src == source and min(end, b) - max(start, a) >= 0.5 * (b - a):
                return True
    return False


@dataclass
class QuestionResult:
    id: str
    question: str
    answerable: bool
    rank: int | None  # 1-based rank of the first hitting passage within the top 10
    abstained: bool | None  # None when the mode cannot abstain (the standard recipe)
    relevance: float | None
    passages: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def question_metrics(results: Sequence[QuestionResult]) -> dict[str, float | None]:
    ans = [r for r in results if r.answerable]
    unans = [r for r in results if not r.answerable]
    n = max(len(ans), 1)

    def hit(k: int) -> float:
        return sum(1 for r in ans if r.rank is not None and r.rank <= k) / n

    can_abstain = all(r.abstained is not None for r in results)
    return {
        "hit@1": hit(1),
        "hit@3": hit(3),
        "hit@5": hit(5),
        "mrr@10": sum(1 / r.rank for r in ans if r.rank is not None and r.rank <= 10) / n,
        "abstained_unanswerable": _share(unans, can_abstain),
        "abstained_answerable": _share(ans, can_abstain),
        "answerable": len(ans),
        "unanswerable": len(unans),
    }


def _share(results: Sequence[QuestionResult], can_abstain: bool) -> float | None:
    """The share of ``results`` that abstained (None when there are none or the method cannot abstain)."""
    if not results or not can_abstain:
        return None
    return sum(1 for r in results if r.abstained) / len(results)


# ---------------------------------------------------------------- BEIR metrics (standard definitions)


def ndcg_at(ranking: Sequence[str], qrels: dict[str, int], k: int = 10) -> float:
    """nDCG@k with linear gain (trec_eval, BEIR): sum rel / log2(rank + 1), over the ideal ordering."""
    dcg = sum(qrels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranking: Sequence[str], qrels: dict[str, int], k: int) -> float:
    relevant = {d for d, r in qrels.items() if r > 0}
    return len(relevant & set(ranking[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranking: Sequence[str], qrels: dict[str, int], k: int = 10) -> float:
    for i, d in enumerate(ranking[:k]):
        if qrels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def beir_metrics(run: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    judged = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    n = max(len(judged), 1)
    return {
        "ndcg@10": sum(ndcg_at(run.get(q, []), qrels[q], 10) for q in judged) / n,
        "recall@10": sum(recall_at(run.get(q, []), qrels[q], 10) for q in judged) / n,
        "recall@100": sum(recall_at(run.get(q, []), qrels[q], 100) for q in judged) / n,
        "mrr@10": sum(mrr_at(run.get(q, []), qrels[q], 10) for q in judged) / n,
        "queries": len(judged),
    }


def load_beir(folder: str | Path) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus {id: {title, text}}, queries {id: text}, qrels {qid: {docid: grade}})."""
    folder = Path(folder)
    if not (folder / "corpus.jsonl").is_file() or not (folder / "queries.jsonl").is_file():
        raise EvalError(f"{folder} is not a BEIR folder: it needs corpus.jsonl, queries.jsonl and qrels/*.tsv.")
    corpus: dict[str, dict[str, str]] = {}
    queries: dict[str, str] = {}
    try:
        with open(folder / "corpus.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    corpus[str(row["_id"])] = {"title": row.get("title") or "", "text": row.get("text") or ""}
        with open(folder / "queries.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    queries[str(row["_id"])] = row["text"]
    except (ValueError, KeyError) as exc:
        raise EvalError(f"{folder}: malformed BEIR JSON lines ({exc}).") from None
    qrel_files = sorted((folder / "qrels").glob("*.tsv"))
    preferred = [p for p in qrel_files if p.stem == "test"] or qrel_files
    if not preferred:
        raise EvalError(f"{folder}/qrels/ holds no .tsv file.")
    qrels: dict[str, dict[str, int]] = {}
    for line in preferred[0].read_text(encoding="utf-8").splitlines():
        parts = line.strip().split("\t")
        if len(parts) < 3:
            continue
        if len(parts) == 4:  # TREC style: qid, iteration, docid, grade
            parts = [parts[0], parts[2], parts[3]]
        try:
            grade = int(float(parts[2]))
        except ValueError:
            continue  # a header line
        qrels.setdefault(parts[0], {})[parts[1]] = grade
    qrels = {q: r for q, r in qrels.items() if q in queries}
    return corpus, queries, qrels


# ---------------------------------------------------------------- thresholds and reports


def load_thresholds(path: str | Path) -> dict[str, Any]:
    """{"min": {metric: value}, "max": {metric: value}, "beir": {set name: {"min": ..., "max": ...}},
    "questions": {set name: {"min": ..., "max": ...}}}."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalError(f"No thresholds file at {path}. Pass --thresholds FILE or --no-gate.") from None
    except tomllib.TOMLDecodeError as exc:
        raise EvalError(f"{path} is not valid TOML: {exc}.") from None
    return {"min": dict(data.get("min", {})), "max": dict(data.get("max", {})), "beir": dict(data.get("beir", {})),
            "questions": dict(data.get("questions", {}))}


def question_thresholds(spec: dict[str, Any], questions: str | Path) -> dict[str, Any]:
    """The thresholds of a question set: those of ``[questions.NAME]`` for a set at ``.../NAME/questions.jsonl``
    (``eval/treaties/questions.jsonl``: ``treaties``), else the file's top-level ``[min]`` and ``[max]`` (the
    project's set, ``eval/questions.jsonl``)."""
    own = spec.get("questions", {}).get(Path(questions).parent.name)
    return own if own is not None else {"min": spec.get("min", {}), "max": spec.get("max", {})}


def gate(metrics: dict[str, Any], thresholds: dict[str, Any]) -> list[str]:
    """The shortfalls, one line each; empty when every threshold holds."""
    failures = []
    for name, minimum in thresholds.get("min", {}).items():
        value = metrics.get(name)
        if value is None:
            failures.append(f"{name} was not measured (minimum {minimum})")
        elif value < minimum:
            failures.append(f"{name} = {value:.3f} is below the minimum {minimum} by {minimum - value:.3f}")
    for name, maximum in thresholds.get("max", {}).items():
        value = metrics.get(name)
        if value is None:
            failures.append(f"{name} was not measured (maximum {maximum})")
        elif value > maximum:
            failures.append(f"{name} = {value:.3f} is above the maximum {maximum} by {value - maximum:.3f}")
    return failures


def _run_of(report: dict[str, Any], mode: str) -> tuple[str | None, dict[str, Any]]:
    """(the mode compared, its run) of a report: the run of ``mode``, else the report's primary run."""
    runs = report.get("runs")
    if not isinstance(runs, dict) or not runs:
        return None, {}
    name = mode if mode in runs else report.get("primary") if report.get("primary") in runs else next(iter(runs))
    run = runs[name]
    return str(name), run if isinstance(run, dict) else {}


def metric_changes(old: dict[str, Any], new: dict[str, Any], mode: str, metrics: Sequence[str]) -> list[str]:
    """How each metric moved between two reports: one line each, old -> new and the change."""
    (_, a), (_, b) = _run_of(old, mode), _run_of(new, mode)
    before, after = a.get("metrics") or {}, b.get("metrics") or {}

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "–"

    width = max(len(m) for m in metrics)
    lines = []
    for m in metrics:
        x, y = before.get(m), after.get(m)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)):
            delta = f"{y - x:+.3f}" if round(y - x, 3) else "same"
        else:
            delta = "not measured in both"
        lines.append(f"  {m:<{width}}  {cell(x)} -> {cell(y)}  {delta}")
    return lines


def compare(old: dict[str, Any], new: dict[str, Any], mode: str) -> list[str]:
    """Question by question: what newly fails, newly passes, or moved, between two reports (only the
    questions that changed)."""
    def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
        questions = _run_of(report, mode)[1].get("questions") or []
        return {str(q["id"]): q for q in questions if isinstance(q, dict) and "id" in q}

    def passed(q: dict[str, Any]) -> bool:
        """An answerable question passes with evidence in the top 5, an unanswerable one by abstaining."""
        rank = q.get("rank")
        return (isinstance(rank, int) and rank <= 5) if q.get("answerable") else bool(q.get("abstained"))

    before, after = by_id(old), by_id(new)
    lines = []
    for qid in sorted(set(before) | set(after)):
        a, b = before.get(qid), after.get(qid)
        if a is None or b is None:
            lines.append(f"{qid}: only in the {'new' if a is None else 'old'} report")
            continue
        ok_a, ok_b = passed(a), passed(b)
        ra, rb, aa, ab = a.get("rank"), b.get("rank"), a.get("abstained"), b.get("abstained")
        if ok_a and not ok_b:
            lines.append(f"newly fails  {qid}: rank {ra} -> {rb}, abstained {aa} -> {ab}  ({b.get('question')})")
        elif ok_b and not ok_a:
            lines.append(f"newly passes {qid}: rank {ra} -> {rb}  ({b.get('question')})")
        elif ra != rb or aa != ab:
            lines.append(f"moved        {qid}: rank {ra} -> {rb}, abstained {aa} -> {ab}")
    return lines


def comparison(old: dict[str, Any], new: dict[str, Any], mode: str, metrics: Sequence[str], label: str) -> list[str]:
    """What ``tqa eval --compare`` prints: first how each metric moved, then only the questions that changed."""
    if not isinstance(old.get("runs"), dict) or old.get("kind", new.get("kind")) != new.get("kind"):
        raise EvalError(f"{label} is not a report of the same kind of evaluation (write one with --json FILE).")
    old_mode = _run_of(old, mode)[0]
    against = mode if old_mode == mode else f"{mode}; its run is {old_mode}"
    lines = [f"Compared with {label} ({against}):", *metric_changes(old, new, mode, metrics)]
    changed = compare(old, new, mode)
    total = len(_run_of(new, mode)[1].get("questions") or [])
    if total:
        lines += ["", f"Questions that changed: {len(changed)} of {total}"] + [f"  {c}" for c in changed]
    return lines


def format_table(runs: dict[str, dict[str, Any]], metrics: Sequence[str]) -> str:
    names = list(runs)
    head = "| metric | " + " | ".join(names) + " |"
    sep = "|---|" + "---|" * len(names)
    rows = []
    for m in metrics:
        cells = []
        for n in names:
            v = runs[n]["metrics"].get(m)
            cells.append("–" if v is None else f"{v:.3f}")
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


def _progress(total: int, label: str) -> Callable[[], None]:
    if not sys.stderr.isatty():
        return lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=label, leave=False, file=sys.stderr)

    def step() -> None:
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return step


# ---------------------------------------------------------------- the standard recipe, for comparison


class StandardRecipe:
    """LangChain's usual recipe: RecursiveCharacterTextSplitter(1000, 200) over each whole document, the same
    model, exact dense search, no headings, no abstention."""

    def __init__(self, documents: Iterable[tuple[str, str]], embedder: Any, chunk_size: int = 1000,
                 chunk_overlap: int = 200):
        import numpy as np
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        from .vectors import FaissVectors

        splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                                  add_start_index=True)
        self.spans: list[tuple[str, int, int]] = []
        texts: list[str] = []
        for source, text in documents:
            for d in splitter.create_documents([text]):
                start = int(d.metadata["start_index"])
                self.spans.append((source, start, start + len(d.page_content)))
                texts.append(d.page_content)
        self.embedder = embedder
        vectors = embedder.encode(texts) if texts else np.zeros((0, embedder.dim), dtype=np.float32)
        self.index = FaissVectors.build(vectors, embedder.dim)

    def search(self, question: str, k: int) -> list[tuple[str, int, int, float]]:
        qvec = self.embedder.encode([question])[0]
        scores, rows = self.index.search(qvec, k)
        return [(*self.spans[r], float(s)) for s, r in zip(scores, rows, strict=True)]


class CachingEmbedder:
    """Wraps an embedder so that a text embedded twice in one evaluation is encoded once (the recipe and tqa
    often embed identical passages; identical inputs give identical vectors)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name, self.dim, self.max_tokens = inner.name, inner.dim, inner.max_tokens
        self._cache: dict[str, Any] = {}

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> Any:
        import numpy as np

        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for t, v in zip(missing, self.inner.encode(missing, batch_size=batch_size, progress=progress),
                            strict=True):
                self._cache[t] = v
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


# ---------------------------------------------------------------- running


def evaluate_questions(assistant: Assistant, questions: Sequence[Question], modes: Sequence[str],
                       embedder: Any = None, documents: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Each mode's run of ``questions`` on ``assistant``. ``documents``: the (source, text) the evidence is located
    in, when the assistant's index holds none of its own (one assembled in memory, not yet published)."""
    documents = assistant.documents() if documents is None else documents
    evidence = locate_evidence(questions, documents)
    runs: dict[str, dict[str, Any]] = {}
    for mode in modes:
        t0 = time.perf_counter()
        step = _progress(len(questions), f"eval {mode}")
        results = []
        if mode == RECIPE:
            recipe = StandardRecipe(documents, embedder or assistant.embedder)
        for q in questions:
            passages: list[dict[str, Any]]
            if mode == RECIPE:
                found = recipe.search(q.question, 10)
                passages = [{"source": s, "start": a, "end": b, "score": round(sc, 4)} for s, a, b, sc in found]
                abstained, relevance = None, (found[0][3] if found else None)
            else:
                ans = assistant.ask(q.question, k=10, mode=mode)
                passages = [{"source": p.source, "start": p.start, "end": p.end, "score": p.score,
                             "section": p.section} for p in ans.passages]
                abstained, relevance = ans.abstained, ans.relevance
            rank = None
            for i, p in enumerate(passages, 1):
                p["hit"] = bool(q.answerable and passage_hits(p["source"], p["start"], p["end"], evidence[q.id]))
                if p["hit"] and rank is None:
                    rank = i
            results.append(QuestionResult(q.id, q.question, q.answerable, rank, abstained, relevance, passages))
            step()
        runs[mode] = {
            "metrics": question_metrics(results),
            "seconds": round(time.perf_counter() - t0, 2),
            "questions": [r.to_dict() for r in results],
        }
    return runs


def _safe_name(doc_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", doc_id)[:80] + ".txt"


def write_beir_documents(documents: Iterable[tuple[str, str, str]], folder: Path) -> dict[str, str]:
    """Write BEIR documents ``(id, title, text)`` into ``folder``, one text file each, the title (when there is one)
    as its first line, which tqa reads as the document's heading. Returns {file name: document id}."""
    folder.mkdir(parents=True, exist_ok=True)
    name_to_id: dict[str, str] = {}
    for doc_id, title, text in documents:
        name = _safe_name(doc_id)
        if name in name_to_id:
            name = f"{len(name_to_id)}-{name}"
        name_to_id[name] = doc_id
        title = " ".join(title.split())
        body = text.strip() or title
        (folder / name).write_text(f"{title}\n{body}\n" if title else f"{body}\n", encoding="utf-8")
    return name_to_id


def evaluate_beir(folder: str | Path, modes: Sequence[str], *, index: str | Path | None = None,
                  embedder: Any = None, depth: int = 100) -> dict[str, Any]:
    """Index a BEIR corpus with the usual pipeline (one document a file, the title as its heading) and rank
    documents by their best chunk."""
    from .assistant import Assistant
    from .config import Settings
    from .embedding import load_embedder
    from .indexing import build_index

    corpus, queries, qrels = load_beir(folder)
    embedder = CachingEmbedder(embedder or load_embedder(precision=Settings.from_env().precision))
    with tempfile.TemporaryDirectory(prefix="tqa-beir-") as tmp:
        documents = ((doc_id, d["title"], d["text"]) for doc_id, d in corpus.items())
        name_to_id = write_beir_documents(documents, Path(tmp) / "corpus")
        index_dir = Path(index) if index else Path(tmp) / "index"
        summary = build_index(Path(tmp) / "corpus", index_dir, embedder=embedder)
        qa = Assistant.load(index_dir, embedder=embedder)
        judged = [q for q in queries if q in qrels]
        runs = {mode: _beir_run(qa, mode, {q: queries[q] for q in judged}, qrels, name_to_id, depth)
                for mode in modes}
        return {"documents": len(corpus), "chunks": summary.chunks_total, "runs": runs}


def _beir_run(qa: Assistant, mode: str, queries: dict[str, str], qrels: dict[str, dict[str, int]],
              name_to_id: dict[str, str], depth: int) -> dict[str, Any]:
    """One mode's ranking of every judged query (a document ranks at its best chunk), and its metrics."""
    t0 = time.perf_counter()
    step = _progress(len(queries), f"beir {mode}")
    run: dict[str, list[str]] = {}
    if mode == RECIPE:
        recipe = StandardRecipe(((name_to_id[s], t) for s, t in qa.documents()), qa.embedder)
    for qid, question in queries.items():
        if mode == RECIPE:
            ranked = [s for s, _, _, _ in recipe.search(question, depth * 3)]
        else:
            ranked = [name_to_id[h.source] for h in qa.search(question, k=depth * 3, mode=mode, dedupe=False)]
        run[qid] = list(dict.fromkeys(ranked))[:depth]
        step()
    return {"metrics": beir_metrics(run, qrels), "seconds": round(time.perf_counter() - t0, 2), "run": run}


def run_eval(*, questions: str | Path = "eval/questions.jsonl", corpus: str | Path = "corpus",
             index: str | Path = "index", beir: str | Path | None = None, mode: str | None = None,
             all_modes: bool = False, thresholds: str | Path | None = "eval/thresholds.toml",
             json_out: str | Path | None = None, compare_with: str | Path | None = None,
             embedder: Any = None) -> tuple[dict[str, Any], list[str], list[str]]:
    """Run an evaluation; returns (report, printable lines, gate failures)."""
    from . import __version__
    from .config import Settings

    settings = Settings.from_env()
    primary = mode or settings.mode
    modes = list(ALL_MODES) if all_modes else [primary]
    gate_spec = load_thresholds(thresholds) if thresholds else None
    old = _read_report(compare_with) if compare_with else None

    t0 = time.perf_counter()
    if beir:
        report, runs, header = _beir_report(beir, modes, embedder)
        metric_names: Sequence[str] = BEIR_METRICS
        spec = gate_spec["beir"].get(Path(beir).name) if gate_spec else None
    else:
        report, runs, header = _questions_report(questions, corpus, index, modes, embedder)
        metric_names = QUESTION_METRICS
        spec = question_thresholds(gate_spec, questions) if gate_spec else None
    report.update({"tqa_version": __version__, "modes": modes, "primary": primary,
                   "seconds": round(time.perf_counter() - t0, 2), "runs": runs})
    lines = [header, "", format_table(runs, metric_names)]
    if RECIPE in runs and primary in runs:
        for metric in ("mrr@10", "ndcg@10", "hit@1", "hit@5"):
            a, b = runs[primary]["metrics"].get(metric), runs[RECIPE]["metrics"].get(metric)
            if a is not None and b is not None:
                lines.append(f"{primary} vs standard recipe, {metric}: {a:.3f} vs {b:.3f} ({a - b:+.3f})")
    failures = gate(runs[primary]["metrics"], spec) if spec else []
    report["gate"] = {"thresholds": spec, "failures": failures}
    if old is not None:
        lines += ["", *comparison(old, report, primary, metric_names, str(compare_with))]
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        lines.append(f"\nreport written to {json_out}")
    lines.append(f"\n{'gate: ' + ('FAILED' if failures else 'passed') if spec else 'gate: none'} "
                 f"({report['seconds']:.1f} s)")
    return report, lines, failures


def _read_report(path: str | Path) -> dict[str, Any]:
    """A report of an earlier ``tqa eval --json``, to compare with."""
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalError(f"Cannot read the report to compare with, {path}: {exc}.") from None
    if not isinstance(old, dict) or not isinstance(old.get("runs"), dict):
        raise EvalError(f"{path} is not a tqa eval report; write one with `tqa eval --json FILE`.")
    return old


def _beir_report(beir: str | Path, modes: list[str], embedder: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(the report's head, the runs, the header line) of a BEIR set."""
    result = evaluate_beir(beir, modes, embedder=embedder)
    runs = result["runs"]
    judged = len(next(iter(runs.values()))["run"])
    header = f"BEIR set {beir}: {judged} judged queries, {result['documents']} documents, {result['chunks']} chunks"
    return {"kind": "beir", "set": str(beir), "documents": result["documents"], "chunks": result["chunks"]}, runs, \
        header


def _questions_report(questions: str | Path, corpus: str | Path, index: str | Path, modes: list[str],
                      embedder: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(the report's head, the runs, the header line) of a question set on the index of ``corpus``."""
    qa = _eval_assistant(corpus, index, embedder)
    qs = load_questions(questions)
    runs = evaluate_questions(qa, qs, modes, embedder=embedder)
    m = qa.manifest
    header = (f"{questions}: {sum(q.answerable for q in qs)} answerable and "
              f"{sum(not q.answerable for q in qs)} unanswerable questions on {corpus}/ "
              f"({m.counts.files} documents, {m.counts.chunks} chunks, model {m.model.name}, "
              f"chunking {m.chunking.to_dict()}, abstain below {qa.threshold:.3f})")
    report = {"kind": "questions", "set": str(questions), "corpus": str(corpus),
              "index": {"model": m.model.to_dict(), "chunking": m.chunking.to_dict(), "counts": m.counts.to_dict(),
                        "calibration": m.calibration.to_dict()},
              "abstain_threshold": qa.threshold}
    return report, runs, header


def _eval_assistant(corpus: str | Path, index: str | Path, embedder: Any) -> Assistant:
    """The index of ``corpus`` at ``index``, brought up to date first. An index of another corpus is refused
    (by ``build_index``'s own rule, IndexMismatch) rather than overwritten."""
    from .assistant import Assistant
    from .indexing import build_index

    build_index(corpus, index, embedder=embedder)
    return Assistant.load(index, embedder=embedder)
