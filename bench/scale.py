"""Ten million chunks on one machine: an index too big to build in memory, published by tqa and answered from.

    python bench/scale.py [--chunks 10000000] [--work build/bench-scale] [--base FILE.npy] [--out FILE]
    python bench/run.py --scale [...]   (the same; `make bench SCALE=1`)

The chunks are bench/synthetic.py's (real MS MARCO passages and their real embeddings, perturbed), made a block at
a time so that nothing of size n is held as Python objects or float32:

1. every vector is drawn block by block and written as float16 rows to a ``.npy`` on disk (memory-mapped), and
   each float32 block is scored, as it is drawn, against the questions and held-out query vectors: the exact top 50
   of every question over all n vectors (also within a fifth of the documents), the truth recall is measured on;
2. the keyword index is built term by term (``synthetic_keywords``);
3. the compressed vector indexes are trained on a sample of the mapped rows and coded a block at a time
   (``CompressedVectors.of_rows``);
4. tqa's own ``publish`` writes the generation, reading the chunks (``SyntheticChunks``, made as read) and the
   documents one at a time.

Then, in a fresh process (``--probe``) as a reader meets the index: resident memory after the framework, the
model and loading the index, and while answering every question, each question encoded alone and asked, in
rotated order (medians: the ratio of a warm ask to encoding the question), then the keyword search alone; and, in
this process, recall@10 and @50 of the loaded index's vector search against the exact top 50. The abstention
threshold is the floor (calibrating reads every chunk's unit count: at 10M that is minutes, and a lower threshold
only makes an ask do all its work).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # `from bench... import` when run as a script

DEPTH = 50  # the exact top kept per query (recall@10 and @50)
FILTER_SHARE = 5  # the filtered recall searches one document in this many


class ExactTop:
    """The running exact top DEPTH rows of each query, fed the vectors a block at a time."""

    def __init__(self, queries: np.ndarray, allowed_docs: np.ndarray | None = None, per_doc: int = 1):
        self.q = np.ascontiguousarray(queries, dtype=np.float32)
        self.allowed_docs, self.per_doc = allowed_docs, per_doc
        self.scores = np.full((len(queries), DEPTH), -np.inf, dtype=np.float32)
        self.rows = np.full((len(queries), DEPTH), -1, dtype=np.int64)

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> ExactTop:
        """The tops found earlier (their rows; recall needs no more)."""
        top = cls(np.zeros((len(rows), 1), dtype=np.float32))
        top.rows = rows
        return top

    def add(self, start: int, block: np.ndarray) -> None:
        s = self.q @ block.T  # (queries, rows)
        if self.allowed_docs is not None:
            docs = (start + np.arange(len(block))) // self.per_doc
            s[:, ~self.allowed_docs[docs]] = -np.inf
        k = min(DEPTH, s.shape[1])
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        scores = np.concatenate([self.scores, np.take_along_axis(s, part, axis=1)], axis=1)
        rows = np.concatenate([self.rows, part + start], axis=1)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :DEPTH]
        self.scores, self.rows = np.take_along_axis(scores, keep, axis=1), np.take_along_axis(rows, keep, axis=1)


def write_rows(path: Path, blocks: Any, rows: int, dim: int, tops: list[ExactTop]) -> np.ndarray:
    """Write float16 rows to a new ``.npy`` a block at a time, feeding each float32 block to ``tops``; the file,
    memory-mapped read-only."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, dim))
    for s, v in blocks:
        out[s:s + len(v)] = v
        for t in tops:
            t.add(s, v)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def base_vectors(emb: Any, texts: list[str], cache: str | None) -> np.ndarray:
    """The passages' real embeddings (kept in ``cache`` when given, reused if it matches)."""
    if cache and Path(cache).is_file():
        v = np.load(cache)
        if len(v) == len(texts):
            return v
    v = np.asarray(emb.encode(texts), dtype=np.float32)
    if cache:
        np.save(cache, v)
    return v


def build(n: int, work: Path, emb: Any, texts: list[str], base: np.ndarray, qv: np.ndarray, held: np.ndarray,
          log: Any) -> dict[str, Any]:
    """Build and publish the n-chunk index under ``work/index``; the build's figures and the exact tops."""
    from bench.synthetic import (
        PER_DOC,
        SyntheticChunks,
        documents,
        source_of,
        synthetic_draws,
        synthetic_keywords,
        synthetic_manifest,
        unit_passages,
        vector_blocks,
    )
    from bench.update import Stages
    from tqa.index import Index
    from tqa.keywords import KeywordIndex
    from tqa.store import publish, write_lock
    from tqa.vectors import CompressedVectors

    rng = np.random.default_rng(0)
    dim = base.shape[1]
    docs = -(-n // PER_DOC)
    fifth = np.zeros(docs, dtype=bool)
    fifth[np.random.default_rng(5).choice(docs, max(1, docs // FILTER_SHARE), replace=False)] = True
    tops = {"questions": ExactTop(qv), "held-out": ExactTop(held),
            "questions, a fifth of the documents": ExactTop(qv, fifth, PER_DOC)}
    unit_tops = {"questions": ExactTop(qv)}
    stages = Stages()
    out: dict[str, Any] = {"chunks": n, "documents": docs}

    try:
        with stages.timed("vectors drawn, written as float16 and scored exactly"):
            a, b, two = synthetic_draws(n, len(base), rng)
            ua = unit_passages(a, b, two)
            rows = write_rows(work / "chunks.f16.npy", vector_blocks(base, a, b, rng), n, dim, list(tops.values()))
            unit_rows = write_rows(work / "units.f16.npy", vector_blocks(base, ua, ua, rng, mix=0.0), len(ua), dim,
                                   list(unit_tops.values()))
        out["units"] = len(ua)
        log(f"scale: {n:,} chunk and {len(ua):,} unit vectors written")
        with stages.timed("keyword index"):
            keywords = synthetic_keywords([KeywordIndex.analyze(t) for t in texts], a, np.where(two, b, -1))
        log("scale: keyword index built")
        with stages.timed("compressed index of the chunk vectors"):
            vectors = CompressedVectors.of_rows(rows)
        log("scale: chunk vectors coded")
        with stages.timed("compressed index of the unit vectors"):
            units = CompressedVectors.of_rows(unit_rows)
        log("scale: unit vectors coded")
        manifest = synthetic_manifest(n, len(ua), texts, vectors, units, emb)
        data = Index(manifest=manifest, chunks=SyntheticChunks(a, b, two, texts), vectors=vectors, units=units,
                     keywords=keywords)
        target = work / "index"
        shutil.rmtree(target, ignore_errors=True)
        with stages.timed("publish (chunk table, documents, artifacts, checksums)"), write_lock(target):
            gen = publish(target, data, documents(data))
        log(f"scale: published {gen}")
    finally:
        stages.close()
    out["stages"] = stages.report()
    out["disk"] = {p.relative_to(gen).as_posix(): p.stat().st_size for p in gen.rglob("*") if p.is_file()}
    out["vector_index"] = manifest.vector_index.to_dict()
    out["_tops"] = {"vectors": tops, "units": unit_tops}
    out["_fifth"] = [source_of(int(d)) for d in np.flatnonzero(fifth)]
    return out


def recall(index_dir: Path, tops: dict[str, dict[str, ExactTop]], fifth: list[str], qv: np.ndarray,
           held: np.ndarray) -> dict[str, Any]:
    """Recall@10 and @50 of the published index's vector searches against the exact tops, at the nprobe tqa
    chooses and at half and twice it, with the search p50."""
    from bench.run import median
    from tqa.store import load_index

    index = load_index(index_dir)
    allowed = index.scope(fifth)
    assert allowed is not None
    sets = {("vectors", "questions"): (qv, None), ("vectors", "held-out"): (held, None),
            ("vectors", "questions, a fifth of the documents"): (qv, allowed.rows), ("units", "questions"): (qv, None)}
    out: dict[str, Any] = {}
    for (which, name), (queries, rows) in sets.items():
        vi = index.vectors if which == "vectors" else index.units
        chosen = vi.nprobe
        for nprobe in (chosen // 2, chosen, chosen * 2):
            vi.nprobe = nprobe
            found, times = [], []
            for q in queries:
                t0 = time.perf_counter()
                found.append(vi.search(q, DEPTH, rows)[1])
                times.append(time.perf_counter() - t0)
            truth = tops[which][name].rows
            r = {f"r{k}": float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k
                                         for f, t in zip(found, truth, strict=True)])) for k in (10, DEPTH)}
            out.setdefault(f"{which}: {name}", []).append({"nprobe": nprobe, "chosen": nprobe == chosen,
                                                           "search_ms": 1000 * median(times), **r})
        vi.nprobe = chosen
    index.close()
    return out


def probe(index_dir: Path, questions: list[str]) -> dict[str, Any]:
    """In a fresh process: resident memory (whole, and the part that is not pages of mapped files) after the
    framework, the model, the index, and answering; load time; warm ask and encoding p50, interleaved."""
    from bench.run import median, rotated
    from tqa.retrieval import OFF_TOPIC_PROBES

    out: dict[str, Any] = {"start": memory()}
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401

    out["framework"] = memory()
    import tqa.embedding as E
    from tqa.assistant import Assistant
    from tqa.store import read_manifest

    manifest = read_manifest(index_dir)
    emb = E.embedder_for_index(manifest.model.name, manifest.precision)
    emb.encode(["warm up"])
    out["model"] = memory()
    t0 = time.perf_counter()
    qa = Assistant.load(index_dir, embedder=emb)
    out["load_s"] = time.perf_counter() - t0
    out["index"] = memory()
    t0 = time.perf_counter()
    qa.ask(questions[0])
    out["first_ask_s"] = time.perf_counter() - t0
    if qa.index.checks is not None:  # answers are timed once the background check of every block is done
        qa.index.checks.wait()
    out["checked_s"] = time.perf_counter() - t0 + out["load_s"]
    out["checked"] = memory()
    for q in OFF_TOPIC_PROBES[:8]:
        emb.encode([q])
        qa.ask(q)
    calls = {"encode": lambda q: emb.encode([q]), "ask": qa.ask}
    out["questions"] = len(questions)
    # Each question twice: first as a new question (the rows and postings it reads may not be in memory yet), then
    # again (the pages it read are cached): what a long-running server meets depends on how much of the index the
    # machine's memory holds.
    for label in ("first", "again"):
        times: dict[str, list[float]] = {k: [] for k in calls}
        for i, q in enumerate(questions):
            for name in rotated(list(calls), i):
                t0 = time.perf_counter()
                calls[name](q)
                times[name].append(time.perf_counter() - t0)
        r = out[label] = {}
        for name, xs in times.items():
            r[f"{name}_p50_ms"] = 1000 * median(xs)
            r[f"{name}_p90_ms"] = 1000 * float(np.percentile(xs, 90))
        r["ratio"] = r["ask_p50_ms"] / r["encode_p50_ms"]
        out[f"answered_{label}"] = memory()
    # The keyword search alone, each question once more (not among the asks: a search just before an ask of the same
    # question would leave its postings in the processor's caches for the ask).
    kw = []
    for q in questions:
        t0 = time.perf_counter()
        qa.index.keywords.search(q, 50)
        kw.append(time.perf_counter() - t0)
    out["again"]["keywords_p50_ms"] = 1000 * median(kw)
    out["again"]["keywords_p90_ms"] = 1000 * float(np.percentile(kw, 90))
    return out


def memory() -> dict[str, float]:
    """This process's resident set now and at its peak, and its parts (MiB): anonymous memory (what it
    allocated) and pages of files (mapped files it read, which the kernel takes back when it needs them)."""
    want = {"VmRSS": "rss", "VmHWM": "peak", "RssAnon": "anon", "RssFile": "file"}
    out = {}
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key = line.split(":")[0]
            if key in want:
                out[want[key]] = int(line.split()[1]) / 1024
    return out


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, torch {m.get('torch')}, "
            f"faiss {m.get('faiss')}, numpy {m.get('numpy')}, "
            + (f"numba {m['numba']} (keyword adds compiled)" if m.get("numba") else "no numba (keyword adds by numpy)"))


def render(R: dict[str, Any]) -> str:
    b, p = R["build"], R["probe"]
    lines = [f"# tqa at {b['chunks']:,} chunks", "",
             f"Measured {R['date']} by `{R['command']}` in {R['duration_s'] / 60:.0f} minutes on "
             f"{machine_line(R['machine'])}; load average {R['load_start']} at the start, {R['load_end']} at the "
             "end." + (" The index is the one an earlier run of this benchmark built and kept (`--keep`); the building "
                       "figures are that run's." if R.get("reused") else ""), "",
             f"{b['chunks']:,} synthetic chunks in {b['documents']:,} documents and {b['units']:,} paragraph "
             "vectors (bench/synthetic.py: real MS MARCO passages and their real embeddings, perturbed), built a "
             "block at a time (bench/scale.py) and published with tqa's own `publish`; the "
             f"{R['questions']} questions are the judged BEIR queries and the project's own.", "",
             "## Building", "", "| stage | seconds | largest resident set |", "|---|---|---|"]
    for name, st in b["stages"].items():
        lines.append(f"| {name} | {st['s']:.0f} | {st['rss_mib']:,.0f} MiB |")
    disk = b["disk"]
    lines += ["", f"On disk: {sum(disk.values()) / 2**30:.2f} GiB, the largest files " + ", ".join(
        f"{k} {v / 2**30:.2f} GiB" for k, v in sorted(disk.items(), key=lambda kv: -kv[1])[:6]) + ".",
        f"Vector index: `{json.dumps(b['vector_index'])}`.", "",
        "## Answering, in a fresh process", "",
        "| after | resident set | of it anonymous | of it pages of files | peak so far |", "|---|---|---|---|---|"]
    for key, label in (("framework", "importing torch and sentence-transformers"), ("model", "loading the model"),
                       ("index", "loading the index"), ("checked", "the background check of every block"),
                       ("answered_first", f"answering {p['questions']} questions"),
                       ("answered_again", "answering them again")):
        m = p[key]
        lines.append(f"| {label} | {m['rss']:,.0f} MiB | {m.get('anon', 0):,.0f} MiB | {m.get('file', 0):,.0f} MiB "
                     f"| {m['peak']:,.0f} MiB |")
    lines += ["", f"Loading the index took {p['load_s']:.2f} s and the first answer {p['first_ask_s']:.2f} s more; "
              f"the background check had verified every block {p['checked_s']:.0f} s after loading began, and the "
              "answers below were timed after it, interleaved with encoding each question alone:", "",
              "| | ask p50 | ask p90 | encoding p50 | encoding p90 | ask ÷ encoding (p50) |",
              "|---|---|---|---|---|---|"]
    for label, what in (("first", "each question the first time"), ("again", "each question again")):
        r = p[label]
        lines.append(f"| {what} | {r['ask_p50_ms']:.1f} ms | {r['ask_p90_ms']:.1f} ms | {r['encode_p50_ms']:.2f} ms "
                     f"| {r['encode_p90_ms']:.2f} ms | **{r['ratio']:.2f}** |")
    if "keywords_p50_ms" in p["again"]:
        r = p["again"]
        lines += ["", f"The keyword search alone (the 50 best chunks), each question once more after these: p50 "
                      f"{r['keywords_p50_ms']:.2f} ms, p90 {r['keywords_p90_ms']:.2f} ms."]
    lines += ["", "Target (issue): warm ask p50 ≤ 3× encoding the question.", "",
              "## Recall of the vector search against exact search", "",
              "| index: queries | nprobe | recall@10 | recall@50 | search p50 |", "|---|---|---|---|---|"]
    for name, rows in R["recall"].items():
        for r in rows:
            mark = " (tqa's)" if r["chosen"] else ""
            lines.append(f"| {name} | {r['nprobe']}{mark} | {r['r10']:.3f} | {r['r50']:.3f} | "
                         f"{r['search_ms']:.1f} ms |")
    lines += ["", "Targets (issue): peak resident set answering ≤ 8 GiB; recall@10 ≥ 0.95 on the real questions; "
              "warm ask p50 ≤ 3× encoding the question.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=10_000_000)
    ap.add_argument("--beir", default=str(ROOT.parent / "shared" / "data" / "beir" / "msmarco-5k"))
    ap.add_argument("--passages", type=int, default=5000, help="MS MARCO passages the chunks are copies of")
    ap.add_argument("--work", default=str(ROOT / "build" / "bench-scale"), help="scratch (deleted unless --keep)")
    ap.add_argument("--base", default=None, help="keep the passages' real embeddings in this .npy (reused)")
    ap.add_argument("--out", default=str(HERE / "results-scale.md"))
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (the index and the exact tops)")
    ap.add_argument("--reuse", action="store_true", help="measure the index a --keep run left in --work again")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--questions-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.probe:
        print(json.dumps(probe(Path(args.probe), json.loads(Path(args.questions_file).read_text("utf-8")))))
        return 0

    from bench.run import loadavg, log, machine, project_questions, read_beir, write_report
    from bench.synthetic import held_out_queries

    t_start = time.perf_counter()
    if not (Path(args.beir) / "corpus.jsonl").is_file():
        print(f"No BEIR corpus at {args.beir}; pass --beir DIR.", file=sys.stderr)
        return 2
    work = Path(args.work)
    R: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_start": loadavg(), "machine": machine(),
                         "command": " ".join(["python bench/scale.py", *(sys.argv[1:] if argv is None else argv)])}
    try:
        from tqa.embedding import load_embedder

        emb = load_embedder()
        passages, queries = read_beir(Path(args.beir), args.passages)
        texts = [t for _, _, t in passages]
        questions = queries + project_questions()
        R["questions"] = len(questions)
        log(f"scale: embedding {len(texts):,} passages")
        base = base_vectors(emb, texts, args.base)
        qv = np.asarray(emb.encode(questions), dtype=np.float32)
        held = held_out_queries(base, 200)
        saved = work / "built.json"
        if args.reuse and saved.is_file():  # the index and exact tops of an earlier run's build (--keep)
            log(f"scale: reusing the index built in {work}")
            R["reused"] = True
            built = json.loads(saved.read_text(encoding="utf-8"))
            tops = {which: {name: ExactTop.from_rows(np.array(rows)) for name, rows in sets.items()}
                    for which, sets in built.pop("_tops").items()}
        else:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            built = build(args.chunks, work, emb, texts, base, qv, held, log)
            tops = built.pop("_tops")
            for f in ("chunks.f16.npy", "units.f16.npy"):
                (work / f).unlink()
            saved.write_text(json.dumps({**built, "_tops": {w: {k: t.rows.tolist() for k, t in sets.items()}
                                                            for w, sets in tops.items()}}), encoding="utf-8")
        fifth = built.pop("_fifth")
        R["build"] = built
        del emb
        gc.collect()
        log("scale: answering in a fresh process")
        qfile = work / "questions.json"
        qfile.write_text(json.dumps(questions), encoding="utf-8")
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe", str(work / "index"),
                            "--questions-file", str(qfile)], capture_output=True, text=True, timeout=4 * 3600)
        if r.returncode != 0:
            raise RuntimeError(f"the probe failed: {r.stderr[-3000:]}")
        R["probe"] = json.loads(r.stdout.strip().splitlines()[-1])
        log("scale: recall against exact search")
        R["recall"] = recall(work / "index", tops, fifth, qv, held)
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(work, ignore_errors=True)
    R["load_end"] = loadavg()
    R["duration_s"] = time.perf_counter() - t_start
    write_report(args.out, render(R), args.json_out, R)
    log(f"wrote {args.out} ({R['duration_s'] / 60:.1f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
