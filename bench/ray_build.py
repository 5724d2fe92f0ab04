#!/usr/bin/env python
"""A build on a local Ray cluster against a local build on the same cores: throughput, and that the index is the same.

    pip install -e '.[ray]'
    python bench/ray_build.py     # 5,000 MS MARCO passages, 3 interleaved rounds; writes bench/results-ray.md
    python bench/ray_build.py --passages 1000 --rounds 3

The cluster is the one the tests start (tests/ray_cluster.py): a head node and a worker node, each a separate
`ray start` process tree on this machine with 1 CPU, so two workers (actors, one model each) share the machine's
cores with the driver, as a local build's torch threads do. Measured, interleaved in rotated order each round:

- **local build**: `build_index(corpus, embedder=the bundled model)`: every stage in this process.
- **Ray build**: `build_index(corpus, ray=ADDRESS)`, what `tqa index --ray ADDRESS` runs: stages 2 and 3 (extract
  and chunk, embed) on the two workers, each loading the model at the start of the build; plan, assemble and
  publish here.
- **local stages / Ray stages**: stages 2 and 3 alone for every file of the plan, without assembling an index: here
  (`extract_and_chunk` per file, one `embed` call), and on a pool of workers started once (`RayPool.stages`: the
  driver reads each file and sends its bytes, the workers run the same two functions). This is the steady-state
  throughput of a worker, without the fixed cost of starting it.

Also: `import ray` in a fresh process, the size of the installed ray package, the cluster's start time, the pool's
(both workers loading the model). The index built on Ray is compared with the local one: chunk table, vectors
(smallest cosine), and the top 5 passages for the MS MARCO queries and the project's questions. Nothing here is a
pass/fail check: the targets are read from the ratios (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.run import log, machine, project_questions, read_beir, rotated, write_passages, write_report  # noqa: E402
from tests.ray_cluster import LocalRayCluster, ray_environment  # noqa: E402

os.environ.update(ray_environment())  # before ray is imported: the driver authenticates with the cluster's token


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def import_seconds(runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); import ray; "
                              "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip()))
    return median(times)


def installed_mb() -> float:
    import ray

    folder = Path(ray.__file__).parent
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def plan_of(corpus: Path, index: Path, model: str, precision: str) -> Any:
    from tqa.config import ChunkSettings, Settings
    from tqa.indexing import plan_build
    from tqa.loaders import discover

    cap = Settings.from_env().max_file_bytes
    return plan_build(corpus, index, discover(corpus, max_bytes=cap), None, model=model, precision=precision,
                      chunking=ChunkSettings(), max_bytes=cap)


def local_stages(plan: Any, emb: Any) -> list[Any]:
    """Stages 2 and 3 here: what a local build does between plan and assemble."""
    from tqa.indexing import Extracted, embed, extract_and_chunk

    extracted = [r for r in (extract_and_chunk(t) for t in plan.tasks) if isinstance(r, Extracted)]
    return embed(extracted, emb)


def ray_stages(plan: Any, pool: Any) -> dict[str, Any]:
    return dict(pool.stages(plan.tasks))


def texts_of(embedded: list[Any]) -> int:
    return sum(len(e.vectors) + len(e.units) for e in embedded)


def compare(local_index: Path, ray_index: Path, questions: list[str]) -> dict[str, Any]:
    import numpy as np

    from tqa import Assistant
    from tqa.store import load_index

    with load_index(local_index) as a, load_index(ray_index) as b:
        same_chunks = [c.to_dict() for c in a.chunks] == [c.to_dict() for c in b.chunks]
        va, vb = a.vectors.vectors(), b.vectors.vectors()
        ua, ub = a.units.vectors(), b.units.vectors()
        cos = float(np.min(np.sum(va * vb, axis=1))) if va.shape == vb.shape else None
        ucos = float(np.min(np.sum(ua * ub, axis=1))) if ua.shape == ub.shape and len(ua) else None
    qa, qb = Assistant.load(local_index), Assistant.load(ray_index)
    same_top1 = same_top5 = 0
    for q in questions:
        x, y = qa.ask(q), qb.ask(q)
        px = [(p.source, p.start, p.end) for p in x.passages]
        py = [(p.source, p.start, p.end) for p in y.passages]
        same_top1 += (x.abstained == y.abstained and px[:1] == py[:1])
        same_top5 += (x.abstained == y.abstained and px == py)
    return {"same_chunk_table": same_chunks, "min_cosine": cos, "min_unit_cosine": ucos,
            "questions": len(questions), "same_top1": same_top1, "same_top5": same_top5}


def render(R: dict[str, Any]) -> str:
    b, s, e = R["build"], R["stage"], R["equal"]
    lines = [
        "# A build on a local Ray cluster against a local build",
        "",
        f"`{R['command']}`, {R['date']}; {R['machine'].get('cpu', '?')}, {R['machine']['cores']} cores, "
        f"ray {R['ray_version']}, precision {R['precision']}; load average {R['load_start']} at the start, "
        f"{R['load_end']} at the end. The cluster: a head node and a worker node (separate `ray start` process "
        "trees, 1 CPU each) on this machine: two workers on the two cores the local build uses.",
        "",
        f"Corpus: {R['passages']} MS MARCO passages written as one file each: {b['chunks']} chunks, {b['texts']} texts "
        f"embedded (chunks and paragraph units). Medians of {R['rounds']} rounds, interleaved in rotated order.",
        "",
        "| measure | local | on Ray (2 workers) | Ray / local |",
        "|---|---|---|---|",
        f"| `build_index` end to end (`tqa index --ray`: workers started and loading the model in each build), "
        f"chunks/s | {b['local_chunks_s']:.1f} | {b['ray_chunks_s']:.1f} | **{b['ratio']:.2f}** |",
        f"| stages 2 and 3 (extract, chunk, embed) on workers already started (`RayPool.stages`), chunks/s | "
        f"{s['local_chunks_s']:.1f} | {s['ray_chunks_s']:.1f} | **{s['ratio']:.2f}** |",
        f"| the same, texts embedded/s | {s['local_texts_s']:.1f} | {s['ray_texts_s']:.1f} | {s['ratio']:.2f} |",
        "",
        f"**Per worker** (1 CPU core, {R['precision']}): {s['ray_texts_s'] / R['workers']:.1f} texts/s, "
        f"{s['ray_chunks_s'] / R['workers']:.1f} chunks/s of this corpus (stages 2 and 3 on started workers); "
        f"end to end: {b['ray_chunks_s'] / R['workers']:.1f} chunks/s.",
        "",
        f"Seconds per round: local build {', '.join(f'{x:.1f}' for x in b['local_s'])}; Ray build "
        f"{', '.join(f'{x:.1f}' for x in b['ray_s'])}; local stages {', '.join(f'{x:.1f}' for x in s['local_s'])}; "
        f"Ray stages {', '.join(f'{x:.1f}' for x in s['ray_s'])}.",
        "",
        "| fixed cost | seconds |",
        "|---|---|",
        f"| `import ray` in a fresh process (median of 3) | {R['import_ray_s']:.2f} |",
        f"| cluster start (`ray start --head`, then `ray start --address` for the worker node) | "
        f"{R['cluster_start_s']:.1f} |",
        f"| pool start (connect, 2 workers each loading the model; the last round's) | {R['pool_start_s']:.1f} |",
        "",
        f"Installed size of the ray package: {R['ray_installed_mb']:.0f} MB.",
        "",
        "Same index: chunk table "
        + ("identical" if e["same_chunk_table"] else "**different**")
        + f"; smallest cosine between a chunk's two vectors {e['min_cosine']:.6f}"
        + (f", between a unit's {e['min_unit_cosine']:.6f}" if e["min_unit_cosine"] is not None else "")
        + f"; top passage the same for {e['same_top1']} of {e['questions']} questions, all top 5 for "
        f"{e['same_top5']} (the BEIR queries and the project's questions, hybrid, k=5). Stages 2 and 3 on Ray: "
        f"extraction results identical to the local ones: {R['stage_equal']['same_extraction']}; "
        f"smallest cosine to the local vectors {R['stage_equal']['min_cosine']:.6f}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--beir", default=str(ROOT.parent / "shared" / "data" / "beir" / "msmarco-5k"))
    ap.add_argument("--work", default=str(ROOT / "build" / "bench-ray"))
    ap.add_argument("--out", default=str(HERE / "results-ray.md"))
    ap.add_argument("--json", dest="json_out", default=None)
    args = ap.parse_args(argv)

    import shutil

    import numpy as np
    import ray

    from tqa import build_index
    from tqa.distributed import ModelFactory, RayPool
    from tqa.embedding import load_embedder, precision_of

    beir, work = Path(args.beir), Path(args.work)
    if not (beir / "corpus.jsonl").is_file():
        print(f"No BEIR corpus at {beir}; pass --beir DIR.", file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    R: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_start": " ".join(
        f"{x:.1f}" for x in os.getloadavg()), "passages": args.passages, "rounds": args.rounds,
        "command": " ".join(["python bench/ray_build.py", *(sys.argv[1:] if argv is None else argv)]),
        "ray_version": ray.__version__}
    R["machine"] = machine()
    R["import_ray_s"] = import_seconds()
    R["ray_installed_mb"] = installed_mb()
    passages, queries = read_beir(beir, args.passages)
    corpus = work / "corpus"
    write_passages(corpus, passages)
    questions = queries + project_questions()
    emb = load_embedder()
    R["precision"] = precision_of(emb)
    plan = plan_of(corpus, work / "plan-index", emb.name, R["precision"])

    cluster = LocalRayCluster(workers=1, cpus=1, head_cpus=1)
    try:
        log("starting the cluster")
        cluster.start()
        R["cluster_start_s"] = cluster.start_seconds
        # Warm up both builds (imports, the model export a first build makes; later builds link it).
        tiny = work / "tiny"
        write_passages(tiny, passages[:20])
        build_index(tiny, work / "local-index", embedder=emb, progress=False)
        build_index(tiny, work / "ray-index", ray=cluster.address, progress=False)
        local_b, ray_b, local_s, ray_s = [], [], [], []
        chunks = texts = 0
        on_ray: dict[str, Any] = {}
        for r in range(args.rounds):
            for step in rotated(["local", "ray", "local-stages", "ray-stages"], r):
                log(f"round {r + 1}: {step}")
                if step == "ray-stages":
                    t0 = time.perf_counter()
                    pool = RayPool(cluster.address, embedder=ModelFactory(emb.name, R["precision"]))
                    R["pool_start_s"] = time.perf_counter() - t0
                    R["workers"] = len(pool.workers)
                    with pool:
                        t0 = time.perf_counter()
                        on_ray = ray_stages(plan, pool)
                        ray_s.append(time.perf_counter() - t0)
                    continue
                t0 = time.perf_counter()
                if step == "local":
                    summary = build_index(corpus, work / "local-index", embedder=emb, rebuild=True, progress=False)
                    local_b.append(time.perf_counter() - t0)
                    chunks = summary.chunks_total
                elif step == "ray":
                    build_index(corpus, work / "ray-index", ray=cluster.address, rebuild=True, progress=False)
                    ray_b.append(time.perf_counter() - t0)
                else:
                    texts = texts_of(local_stages(plan, emb))
                    local_s.append(time.perf_counter() - t0)
    finally:
        ray.shutdown()
        cluster.stop()

    R["build"] = {"chunks": chunks, "texts": texts, "local_s": local_b, "ray_s": ray_b,
                  "local_chunks_s": chunks / median(local_b), "ray_chunks_s": chunks / median(ray_b),
                  "ratio": median(local_b) / median(ray_b)}
    R["stage"] = {"local_s": local_s, "ray_s": ray_s, "local_chunks_s": chunks / median(local_s),
                  "ray_chunks_s": chunks / median(ray_s), "local_texts_s": texts / median(local_s),
                  "ray_texts_s": texts / median(ray_s), "ratio": median(local_s) / median(ray_s)}
    log("comparing the indexes")
    R["equal"] = compare(work / "local-index", work / "ray-index", questions)
    expected = local_stages(plan, emb)
    got = [on_ray.get(e.file.source) for e in expected]
    same = all(g is not None and getattr(g, "file", None) == e.file for g, e in zip(got, expected, strict=True))
    worst = min((float(np.min(np.sum(e.vectors * g.vectors, axis=1))) for g, e in zip(got, expected, strict=True)
                 if g is not None and len(e.vectors)), default=float("nan"))
    R["stage_equal"] = {"same_extraction": same, "min_cosine": worst}
    R["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    shutil.rmtree(work, ignore_errors=True)
    write_report(args.out, render(R), args.json_out, R)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
