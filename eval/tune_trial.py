"""`tqa tune`'s model part, measured: tune on a set's passages, rebuild its index with the tuned model, evaluate.

    python eval/tune_trial.py own [--lr 2e-5 --epochs 2]
    python eval/tune_trial.py treaties

Needs the set's index from `python eval/trials.py build`. The tuned model goes to build/trials/NAME-tuned/model
(only when tuning keeps it), its index to build/trials/NAME-tuned/index; then `tqa eval --modes all` runs on the
set with that index (question encoder exported from the tuned model, as at any build).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))

from trials import SETS, WORK  # noqa: E402

from tqa.evaluation import run_eval  # noqa: E402
from tqa.store import load_index  # noqa: E402
from tqa.tune import tune  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("set")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--tag", default="tuned")
    p.add_argument("--units", action="store_true", help="train on paragraphs (units) rather than whole chunks")
    a = p.parse_args()
    spec = SETS[a.set]
    data = load_index(WORK / a.set / "index")
    if a.units:  # each chunk's paragraphs (what the unit signal embeds), or the chunk when it has none
        passages = [t for c in data.chunks for t in (c.unit_search_texts() or [c.search_text])]
    else:
        passages = [c.search_text for c in data.chunks]
    base = data.manifest.model.name
    data.close()
    folder = WORK / f"{a.set}-{a.tag}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    kw = {k: v for k, v in (("learning_rate", a.lr), ("epochs", a.epochs), ("max_pairs", a.max_pairs)) if v}
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 15 or done == total:
            last[0] = time.perf_counter()
            print(f"  {stage} {done}/{total}", flush=True)

    report = tune(passages, base, folder / "model", on_progress=progress, **kw)
    print(json.dumps(report.to_dict(), indent=1), flush=True)
    if not report.kept:
        return
    t0 = time.perf_counter()
    index = _build(folder, spec, report.model_dir)
    _, lines, _ = run_eval(questions=spec["questions"], corpus=spec["corpus"], index=index, all_modes=True,
                           thresholds=None)
    print("\n".join(lines))
    print(f"eval with the tuned model: {time.perf_counter() - t0:.0f} s")


def _build(folder: Path, spec: dict, model_dir: str | None) -> Path:
    from tqa.indexing import build_index

    assert model_dir is not None
    t0 = time.perf_counter()
    summary = build_index(spec["corpus"], folder / "index", model=model_dir)
    print(f"index with the tuned model: {summary.chunks_total} chunks, {time.perf_counter() - t0:.0f} s", flush=True)
    return folder / "index"


if __name__ == "__main__":
    main()
