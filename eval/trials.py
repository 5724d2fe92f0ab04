"""Corpus-adaptive ranking: the table of trials in eval/README.md ("Corpus-adaptive ranking: trials").

    python eval/trials.py build            # build each set's index once, under build/trials/ (minutes)
    python eval/trials.py run              # every trial on every set, one markdown table (seconds)
    python eval/trials.py learn            # what tqa.adapt learns on each set, and its cost

Each set's index is built once with the usual pipeline (``build_index``); then, for each question, the three
signals of every candidate passage (whole-chunk cosine, best-unit cosine, raw BM25) are computed once, exactly
as ``tqa.retrieval.search`` computes them, and every ranking setting is scored from those numbers with
``tqa.adapt.fuse``. Question sets are measured as ``tqa eval`` measures them (overlapping passages removed, top
10, evidence hits); BEIR sets by nDCG@10 of documents ranked by their best chunk. The standard recipe is run
once per set. With the setting tqa ships (units 0.5, BM25 weight 0.2, scores), the figures reproduce those of
``tqa eval --modes all``.

Sets: ``own`` (eval/questions.jsonl on corpus/), ``treaties`` (eval/treaties/questions.jsonl on the treaty
texts), ``msmarco`` (BEIR msmarco-5k), and two proxies of corpora we cannot see: ``articles`` (the treaty texts
cut into one file per section: a title line and the section's text as one paragraph, the shape of an entity
description set; the treaty questions) and ``msmarco-titled`` is not made (MS MARCO has no titles).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tqa import adapt  # noqa: E402
from tqa.evaluation import (  # noqa: E402
    StandardRecipe,
    beir_metrics,
    load_beir,
    load_questions,
    locate_evidence,
    passage_hits,
)
from tqa.retrieval import CANDIDATES, Hit, drop_overlaps, unit_rows  # noqa: E402

SHARED = Path(os.environ.get("TQA_SHARED_DATA", ROOT.parent.parent / "shared" / "data"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")
WORK = ROOT / "build" / "trials"

SETS: dict[str, dict[str, Any]] = {
    "own": {"kind": "qa", "corpus": ROOT / "corpus", "questions": ROOT / "eval" / "questions.jsonl"},
    "treaties": {"kind": "qa", "corpus": SHARED / "treaties",
                 "questions": ROOT / "eval" / "treaties" / "questions.jsonl"},
    "msmarco": {"kind": "beir", "beir": SHARED / "beir" / "msmarco-5k"},
    "articles": {"kind": "qa", "corpus": WORK / "articles" / "corpus",
                 "questions": ROOT / "eval" / "treaties" / "questions.jsonl", "proxy": True},
}

# an index of the same set built with a tuned model (eval/tune_trial.py --units --tag tuned-units)
for _name in ("own", "treaties"):
    SETS[f"{_name}-tuned"] = {**SETS[_name], "index": WORK / f"{_name}-tuned-units" / "index"}


def _safe_name(doc_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", doc_id)[:80] + ".txt"


def write_beir_corpus(folder: Path, out: Path) -> dict[str, str]:
    """One file per BEIR document (the title as its first line), as ``tqa eval --beir`` writes them."""
    corpus, _, _ = load_beir(folder)
    out.mkdir(parents=True, exist_ok=True)
    name_to_id: dict[str, str] = {}
    for doc_id, d in corpus.items():
        name = _safe_name(doc_id)
        if name in name_to_id:
            name = f"{len(name_to_id)}-{name}"
        name_to_id[name] = doc_id
        title = " ".join(d["title"].split())
        body = d["text"].strip() or title
        (out / name).write_text(f"{title}\n{body}\n" if title else f"{body}\n", encoding="utf-8")
    (out.parent / "names.json").write_text(json.dumps(name_to_id), encoding="utf-8")
    return name_to_id


def write_articles(treaties: Path, out: Path) -> None:
    """The treaty texts cut at their headings: one file per section, its heading trail as a title line and its
    body as one paragraph (line breaks folded), the shape of a set of short entity descriptions."""
    from tqa.chunking import sections
    from tqa.loaders import extract

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(treaties.glob("*.md")):
        doc = extract(path.name, path.read_bytes())
        for i, sec in enumerate(sections(doc)):
            body = " ".join(doc.text[sec.start:sec.end].split())
            if len(body) < 40:
                continue
            title = " ".join(" - ".join(sec.trail).split()) or path.stem
            (out / f"{path.stem}-{i:04d}.txt").write_text(f"{title}\n{body}\n", encoding="utf-8")


def build(names: list[str]) -> None:
    from tqa.indexing import build_index

    for name in names:
        spec = SETS[name]
        t0 = time.perf_counter()
        if spec["kind"] == "beir":
            corpus = WORK / name / "corpus"
            if not corpus.is_dir():
                write_beir_corpus(spec["beir"], corpus)
        else:
            corpus = spec["corpus"]
            if name == "articles" and not corpus.is_dir():
                write_articles(SETS["treaties"]["corpus"], corpus)
        summary = build_index(corpus, WORK / name / "index")
        print(f"{name}: {summary.chunks_total} chunks, {summary.chunks_embedded} embedded, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)


# ---------------------------------------------------------------- features of each question's candidates


class Loaded:
    """One set's index, questions and per-question candidate features."""

    def __init__(self, name: str, embedder: Any):
        from tqa.store import load_index

        self.name = name
        self.spec = SETS[name]
        self.data = load_index(self.spec.get("index", WORK / name / "index"))
        self.embedder = embedder
        self.chunk_matrix = self.data.vectors.vectors()
        self.unit_matrix = self.data.units.vectors()
        self.ptr = self.data.unit_ptr
        if self.spec["kind"] == "beir":
            _, queries, self.qrels = load_beir(self.spec["beir"])
            self.qids = [q for q in queries if q in self.qrels]
            self.texts = [queries[q] for q in self.qids]
            self.name_to_id = json.loads((WORK / name / "names.json").read_text(encoding="utf-8"))
        else:
            qs = load_questions(self.spec["questions"])
            docs = list(self.data.documents())
            if self.spec.get("proxy"):
                qs = [q for q in qs if q.answerable and _found(q, docs)]
            self.questions = [q for q in qs if q.answerable]
            self.texts = [q.question for q in self.questions]
            self.evidence = locate_evidence(self.questions, docs)
        if "index" in self.spec:  # questions encoded by the index's own (tuned) model
            from tqa.embedding import load_embedder
            from tqa.evaluation import CachingEmbedder

            self.embedder = embedder = CachingEmbedder(load_embedder(self.data.manifest.model.name))
        elif hasattr(embedder, "seed"):  # the index's own vectors: the recipe's same passages are not encoded again
            embedder.seed([c.search_text for c in self.data.chunks], self.chunk_matrix)
        self.qvecs = embedder.encode(self.texts)
        self.features = [self._features(t, v) for t, v in zip(self.texts, self.qvecs, strict=True)]

    def _features(self, question: str, qvec: np.ndarray) -> dict[str, np.ndarray]:
        """Candidates as ``search`` gathers them (top chunks, top units' chunks, top BM25), and their signals."""
        k = 300 if self.spec["kind"] == "beir" else 10
        depth = max(CANDIDATES, 4 * k)
        chunk_all = self.chunk_matrix @ qvec
        cand = [np.argsort(-chunk_all, kind="stable")[:depth]]
        unit_all = self.unit_matrix @ qvec if len(self.unit_matrix) else np.zeros(0, dtype=np.float32)
        if len(unit_all):
            top_units = np.argsort(-unit_all, kind="stable")[:2 * depth]
            cand.append(np.searchsorted(self.ptr, top_units, side="right") - 1)
        kw_scores, kw_rows = self.data.keywords.search(question, depth)
        cand.append(kw_rows)
        rows = np.unique(np.concatenate(cand))
        rows = rows[rows >= 0]
        chunk = chunk_all[rows]
        best = chunk.copy()
        members = unit_rows(self.ptr, rows)
        if len(members):
            counts = self.ptr[rows + 1] - self.ptr[rows]
            has = counts > 0
            starts = (np.cumsum(counts) - counts)[has]
            best[has] = np.maximum.reduceat(unit_all[members], starts)
        kw = np.zeros(len(rows), dtype=np.float32)
        if len(kw_rows):
            kw[np.searchsorted(rows, kw_rows)] = kw_scores
        return {"rows": rows, "chunk": chunk, "unit": best, "kw": kw}

    def measure(self, settings: dict[str, Any], mode: str = "hybrid") -> dict[str, float]:
        runs: list[list[int]] = []
        for f in self.features:
            score = adapt.fuse(f["chunk"], f["unit"], f["kw"], settings, mode=mode)
            order = np.lexsort((f["rows"], -score))
            if mode == "bm25":
                order = order[f["kw"][order] > 0]
            runs.append([int(f["rows"][i]) for i in order])
        return self._metrics(runs)

    def _metrics(self, runs: list[list[int]]) -> dict[str, float]:
        chunks = self.data.chunks
        if self.spec["kind"] == "beir":
            run = {}
            for qid, rows in zip(self.qids, runs, strict=True):
                ids = [self.name_to_id[chunks[r].source] for r in rows]
                run[qid] = list(dict.fromkeys(ids))[:100]
            m = beir_metrics(run, self.qrels)
            return {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}
        ranks = []
        for q, rows in zip(self.questions, runs, strict=True):
            hits = (Hit(r, 0.0, None, None) for r in rows)
            top = [h.row for h in drop_overlaps(hits, chunks)][:10]
            rank = next((i for i, r in enumerate(top, 1)
                         if passage_hits(chunks[r].source, chunks[r].start, chunks[r].end, self.evidence[q.id])), None)
            ranks.append(rank)
        n = len(ranks)
        return {"hit@1": sum(r == 1 for r in ranks) / n, "hit@5": sum(r is not None and r <= 5 for r in ranks) / n,
                "mrr@10": sum(1 / r for r in ranks if r) / n}

    def recipe(self) -> dict[str, float]:
        """The standard recipe on this set (cached in build/trials/NAME/recipe.json)."""
        cache = WORK / self.name / "recipe.json"
        cache.parent.mkdir(parents=True, exist_ok=True)
        if cache.is_file():
            return json.loads(cache.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        docs = list(self.data.documents())
        if self.spec["kind"] == "beir":
            recipe = StandardRecipe(((self.name_to_id[s], t) for s, t in docs), self.embedder)
            run = {}
            for qid, text in zip(self.qids, self.texts, strict=True):
                run[qid] = list(dict.fromkeys(s for s, _, _, _ in recipe.search(text, 300)))[:100]
            m = beir_metrics(run, self.qrels)
            result = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}
        else:
            recipe = StandardRecipe(docs, self.embedder)
            ranks = []
            for q in self.questions:
                found = recipe.search(q.question, 10)
                ranks.append(next((i for i, (s, a, b, _) in enumerate(found, 1)
                                   if passage_hits(s, a, b, self.evidence[q.id])), None))
            n = len(ranks)
            result = {"hit@1": sum(r == 1 for r in ranks) / n,
                      "hit@5": sum(r is not None and r <= 5 for r in ranks) / n,
                      "mrr@10": sum(1 / r for r in ranks if r) / n}
        cache.write_text(json.dumps(result), encoding="utf-8")
        return result

    def corpus_sample(self) -> tuple[list[Any], np.ndarray, np.ndarray, Any]:
        return self.data.chunks, self.chunk_matrix, self.unit_matrix, self.data.keywords


def _found(q: Any, docs: list[tuple[str, str]]) -> bool:
    """Whether every evidence string of ``q`` is in one of ``docs`` (whitespace folded)."""
    flat = [" ".join(t.split()) for _, t in docs]
    return any(any(" ".join(a.split()) in t for t in flat) for a in q.answers) and all(
        any(" ".join(a.split()) in t for t in flat) for a in q.answers)


# ---------------------------------------------------------------- the trials

FIXED = {
    "shipped: units 0.5, BM25 0.2": {"unit_weight": 0.5, "keyword_weight": 0.2, "fusion": "scores"},
    "chunk only, BM25 0.2": {"unit_weight": 0.0, "keyword_weight": 0.2, "fusion": "scores"},
    "units 0.25, BM25 0.2": {"unit_weight": 0.25, "keyword_weight": 0.2, "fusion": "scores"},
    "units 0.75, BM25 0.2": {"unit_weight": 0.75, "keyword_weight": 0.2, "fusion": "scores"},
    "best unit only, BM25 0.2": {"unit_weight": 1.0, "keyword_weight": 0.2, "fusion": "scores"},
    "units 0.5, BM25 0": {"unit_weight": 0.5, "keyword_weight": 0.0, "fusion": "scores"},
    "units 0.5, BM25 0.1": {"unit_weight": 0.5, "keyword_weight": 0.1, "fusion": "scores"},
    "units 0.5, BM25 0.3": {"unit_weight": 0.5, "keyword_weight": 0.3, "fusion": "scores"},
    "chunk only, BM25 0.1": {"unit_weight": 0.0, "keyword_weight": 0.1, "fusion": "scores"},
    "units 0.5, RRF BM25 0.2": {"unit_weight": 0.5, "keyword_weight": 0.2, "fusion": "rrf"},
    "units 0.5, RRF BM25 0.5": {"unit_weight": 0.5, "keyword_weight": 0.5, "fusion": "rrf"},
}


def _embedder() -> Any:
    from tqa.embedding import load_embedder
    from tqa.evaluation import CachingEmbedder

    class Seeded(CachingEmbedder):
        def seed(self, texts: list[str], vectors: np.ndarray) -> None:
            for t, v in zip(texts, vectors, strict=True):
                self._cache.setdefault(t, v)

    return Seeded(load_embedder())


def run(names: list[str], learn: bool = True) -> None:
    emb = _embedder()
    loaded = {n: Loaded(n, emb) for n in names}
    rows: list[tuple[str, dict[str, dict[str, float]]]] = []
    learned: dict[str, dict[str, Any]] = {}
    if learn:
        for n, s in loaded.items():
            t0 = time.perf_counter()
            learned[n] = adapt.learn(adapt.passages_of(s.data.chunks), s.chunk_matrix, s.unit_matrix, s.embedder,
                                     s.data.keywords.analyze)
            learned[n]["seconds"] = round(time.perf_counter() - t0, 2)
            print(f"learned on {n}: {json.dumps(learned[n])}", flush=True)
            (WORK / n).mkdir(parents=True, exist_ok=True)
            (WORK / n / "learned.json").write_text(json.dumps(learned[n], indent=1), encoding="utf-8")
    for mode, label in (("dense", "dense (shipped)"), ("bm25", "bm25")):
        rows.append((label, {n: s.measure(FIXED["shipped: units 0.5, BM25 0.2"], mode) for n, s in loaded.items()}))
    rows.append(("standard recipe", {n: s.recipe() for n, s in loaded.items()}))
    for label, settings in FIXED.items():
        rows.append((label, {n: s.measure(settings) for n, s in loaded.items()}))
    if learn:
        grid_best = {n: {k: learned[n]["grid_best"][k] for k in adapt.SHIPPED} if "grid_best" in learned[n]
                     else learned[n] for n in loaded}
        rows.append(("pseudo-queries' best of the whole grid, hybrid",
                     {n: s.measure(grid_best[n]) for n, s in loaded.items()}))
        rows.append(("**learned (tqa.adapt: unit weight), hybrid**",
                     {n: s.measure(learned[n]) for n, s in loaded.items()}))
        rows.append(("learned (tqa.adapt: unit weight), dense", {n: s.measure(learned[n], "dense")
                                                                 for n, s in loaded.items()}))
    print(table(rows, names))


def variants(names: list[str], forms: list[str]) -> None:
    """What each form of pseudo-query learns on each set, and how the learned setting does on the real
    questions."""
    emb = _embedder()
    for n in names:
        s = Loaded(n, emb)
        for form in forms:
            t0 = time.perf_counter()
            got = adapt.learn(adapt.passages_of(s.data.chunks), s.chunk_matrix, s.unit_matrix, emb,
                              s.data.keywords.analyze, query_form=form)
            dt = time.perf_counter() - t0
            real = s.measure(got)
            print(f"{n} {form}: u={got['unit_weight']} w={got['keyword_weight']} {got['fusion']} "
                  f"q={got['queries']} mrr={got.get('mrr')} base={got.get('baseline')} {dt:.1f}s -> "
                  + " ".join(f"{k} {v:.3f}" for k, v in real.items()), flush=True)


def table(rows: list[tuple[str, dict[str, dict[str, float]]]], names: list[str]) -> str:
    metric = {"qa": ("hit@1", "hit@5", "mrr@10"), "beir": ("ndcg@10",)}
    cols = [(n, m) for n in names for m in metric[SETS[n]["kind"]]]
    head = "| setting | " + " | ".join(f"{n} {m}" for n, m in cols) + " |"
    out = [head, "|---|" + "---|" * len(cols)]
    for label, figures in rows:
        out.append(f"| {label} | " + " | ".join(f"{figures[n][m]:.3f}" for n, m in cols) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("build", "run", "learn"))
    p.add_argument("--sets", default="own,treaties,msmarco,articles")
    p.add_argument("--forms", default="sentence,paraphrase")
    a = p.parse_args()
    names = a.sets.split(",")
    if a.command == "build":
        build(names)
    elif a.command == "learn":
        variants(names, a.forms.split(","))
    else:
        run(names, learn=True)


if __name__ == "__main__":
    main()
