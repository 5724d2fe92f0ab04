"""The compressed vector index against the inverted file, on one synthetic index (bench/synthetic.py) of N chunks.

    python bench/compressed.py [--chunks 200000] [--work build/bench-compressed] [--json FILE]

One synthetic index (real MS MARCO passages and their real embeddings, perturbed; every fourth chunk has two
paragraph units) is built once; its chunk and unit vectors are then indexed both ways: ``IndexIVFFlat`` (what a
build makes below TQA_COMPRESS_ABOVE) and the compressed index (above it). Reported, all from this one run:

- build: seconds to train and fill each vector index (chunks and units), and its bytes in memory (FAISS's
  serialised size; the compressed index's float16 rows are on disk, not in memory);
- recall@10 and @50 of each against exact search (``IndexFlatIP`` over the same float32 vectors), for the MS MARCO
  questions and for held-out vectors; answers (top passage, top five) against the inverted file's;
- both published with tqa's own publish and answered from in fresh processes (run.py's memory probe): resident
  memory with the index loaded, peak while answering, load time;
- ask p50 against encoding the question (medians of interleaved runs, from the published indexes);
- BM25 loaded memory-mapped (as tqa loads it) against in memory, over the passages four times (``--bm25-only``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
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


def bm25_mapped(texts: list[str], questions: list[str], work: Path, rounds: int = 5) -> dict[str, Any]:
    """BM25 loaded memory-mapped (what tqa does) against loaded into memory: load time and search p50 over the
    questions, rounds interleaved, medians."""
    import bm25s

    from bench.run import median
    from tqa.keywords import KeywordIndex

    KeywordIndex.build(texts).save(work / "bm25")
    times: dict[bool, dict[str, list[float]]] = {m: {"load": [], "search": []} for m in (True, False)}
    for _ in range(rounds):
        for mapped in (False, True):
            t0 = time.perf_counter()
            index = KeywordIndex(bm25s.BM25.load(str(work / "bm25"), mmap=mapped, show_progress=False))
            times[mapped]["load"].append(time.perf_counter() - t0)
            for q in questions:
                index.search(q, 50)  # warm
            for q in questions:
                t0 = time.perf_counter()
                index.search(q, 50)
                times[mapped]["search"].append(time.perf_counter() - t0)
    out = {("mapped" if m else "in_memory"): {f"{k}_ms": 1000 * median(v) for k, v in t.items()}
           for m, t in times.items()}
    out["search_ratio"] = out["mapped"]["search_ms"] / out["in_memory"]["search_ms"]
    out["passages"] = len(texts)
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.run import answer_agreement, held_out, latency, log, read_beir, recall, scale_publish
    from bench.synthetic import synthetic_index
    from tqa.assistant import Assistant
    from tqa.config import Settings
    from tqa.embedding import load_embedder
    from tqa.index import Index
    from tqa.vectors import FaissVectors, build_vectors

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=200_000)
    ap.add_argument("--passages", type=int, default=5000, help="MS MARCO passages the synthetic chunks copy")
    ap.add_argument("--questions", type=int, default=200)
    shared = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()), ROOT.parent)
    ap.add_argument("--beir", default=str(shared / "data" / "beir" / "msmarco-5k"))
    ap.add_argument("--work", default=str(ROOT / "build" / "bench-compressed"))
    ap.add_argument("--json", dest="json_out", default=None)
    ap.add_argument("--bm25-only", action="store_true", help="only BM25 memory-mapped against in memory")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    R: dict[str, Any] = {"command": "python bench/compressed.py " + " ".join(sys.argv[1:] if argv is None else argv),
                         "chunks": args.chunks}

    passages, queries = read_beir(Path(args.beir), args.passages)
    texts = [t for _, _, t in passages]
    questions = queries[:args.questions]
    R["bm25"] = bm25_mapped(texts * 4, questions, work)
    if args.bm25_only:
        print(json.dumps(R, indent=2))
        return 0
    emb = load_embedder()
    log(f"encoding {len(texts)} passages for the synthetic base")
    base = emb.encode(texts, batch_size=64)
    log(f"building a synthetic index of {args.chunks:,} chunks")
    data, facts = synthetic_index(args.chunks, texts, base, emb, kind="ivf")
    vectors, units = facts.pop("vector_matrix"), facts.pop("unit_matrix")
    dim = vectors.shape[1]
    R["units"] = len(units)
    R["build"] = {"ivf": {"vectors_s": facts["vectors_index_s"], "units_s": facts["units_index_s"],
                          "bytes": len(data.vectors.to_bytes()) + len(data.units.to_bytes())}}
    t0 = time.perf_counter()
    cv = build_vectors(vectors, dim, compress_above=0)
    t1 = time.perf_counter()
    cu = build_vectors(units, dim, compress_above=0)
    t2 = time.perf_counter()
    R["build"]["compressed"] = {"vectors_s": t1 - t0, "units_s": t2 - t1,
                                "bytes": len(cv.to_bytes()) + len(cu.to_bytes()),
                                "stored_bytes_on_disk": 2 * dim * (len(vectors) + len(units))}
    R["raw_float32_bytes"] = 4 * dim * (len(vectors) + len(units))
    compressed = Index(manifest=dataclasses.replace(data.manifest, vector_index=dataclasses.replace(
        cv.describe(), units=cu.describe())), chunks=data.chunks, vectors=cv, units=cu, keywords=data.keywords)

    log("recall against exact search")
    flat = FaissVectors.build(vectors, dim, "flat")
    flat_units = FaissVectors.build(units, dim, "flat")
    qv = emb.encode(questions)
    sets = {"questions": qv, "held-out": held_out(base)}
    R["recall"] = {}
    for name, q in sets.items():
        truth = np.array([flat.search(v, 50)[1] for v in q])
        utruth = np.array([flat_units.search(v, 50)[1] for v in q])
        for kind, index in (("ivf", data), ("compressed", compressed)):
            found = [index.vectors.search(v, 50)[1] for v in q]
            ufound = [index.units.search(v, 50)[1] for v in q]
            R["recall"][f"{kind} {name}"] = {"r10": recall(found, truth, 10), "r50": recall(found, truth, 50),
                                            "units_r10": recall(ufound, utruth, 10)}
    del flat, flat_units, vectors, units
    gc.collect()

    log("answers, compressed against the inverted file")
    settings = Settings.from_env()
    qa_ivf, qa_c = Assistant(data, emb, settings), Assistant(compressed, emb, settings)
    agree = answer_agreement(qa_c, qa_ivf, questions)
    R["answers"] = {"top_identical": agree["top_identical"], "overlap5": agree["overlap5"]}
    del qa_ivf, qa_c

    published = {}
    for kind, index in (("ivf", data), ("compressed", compressed)):
        published[kind] = work / f"index-{kind}"
        R.setdefault("publish", {})[kind] = scale_publish(index, published[kind])
    del data, compressed, cv, cu
    gc.collect()

    log("memory and latency from the published indexes, in fresh processes")
    qfile = work / "questions.json"
    qfile.write_text(json.dumps(questions[:50]), encoding="utf-8")
    R["memory"] = {}
    for kind, path in published.items():
        r = subprocess.run([sys.executable, str(HERE / "run.py"), "--memory-probe", str(path), "--questions-file",
                            str(qfile)], capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(f"memory probe failed: {r.stderr[-2000:]}")
        R["memory"][kind] = json.loads(r.stdout.strip().splitlines()[-1])
    R["latency"] = {}
    loaded = {kind: Assistant.load(path, embedder=emb) for kind, path in published.items()}
    lat = latency(loaded["ivf"], emb, questions, {"compressed": loaded["compressed"].ask})
    R["latency"] = {"questions": len(questions), "encode_p50_ms": 1000 * lat["encode_p50"],
                    "ivf_ask_p50_ms": 1000 * lat["ask_p50"], "compressed_ask_p50_ms": 1000 * lat["compressed_p50"],
                    "ivf_ratio": lat["ask_p50"] / lat["encode_p50"],
                    "compressed_ratio": lat["compressed_p50"] / lat["encode_p50"]}
    print(json.dumps(R, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(R, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
