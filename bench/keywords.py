"""Keyword search at scale: tqa's BM25 over a synthetic index of N chunks (default ten million) against encoding the
question, on the real questions.

    python bench/keywords.py [--chunks 10000000] [--rounds 3] [--beir DIR] [--json FILE]

The keyword index is the one bench/synthetic.py gives a synthetic index of that size (every chunk copies an MS MARCO
passage, every fourth holds two), built term by term (``synthetic_keywords``: seconds, and little more memory than
its postings, where a list of terms per chunk would not fit at 10M), written with tqa's own ``save`` and loaded
with its ``load``. Then, ``--rounds`` times, the 142 questions (the MS MARCO queries and the project's own) in a
rotated order, each: encoded by the question encoder tqa exports for the default model (what ``tqa ask`` encodes
with) and searched for the 50 best chunks (the depth hybrid retrieval reads), interleaved. Reported: the medians
and 90th percentiles, their ratio, the postings a question's terms hold, the index's bytes and the build's time
and peak memory. Nothing here is a pass/fail: it is the figure docs/scaling.md takes for keyword search.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # `from bench... import` when run as a script


def keyword_index(n: int, texts: list[str], seed: int = 0) -> Any:
    """The keyword index of a synthetic index of ``n`` chunks made from ``texts`` (synthetic.py's assignment)."""
    from bench.synthetic import UNIT_EVERY, synthetic_keywords
    from tqa.keywords import KeywordIndex

    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(texts), n)
    b = rng.integers(0, len(texts), n)
    two = (np.arange(n) % UNIT_EVERY) == 0
    return synthetic_keywords([KeywordIndex.analyze(t) for t in texts], a, np.where(two, b, -1))


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def measure(index: Any, encoder: Any, questions: list[str], rounds: int, depth: int = 50) -> dict[str, Any]:
    from bench.run import rotated

    for q in questions:  # warm: the pages of every question's postings, the encoder's first runs
        encoder.encode([q])
        index.search(q, depth)
    times: dict[str, list[float]] = {"encode": [], "search": []}
    for r in range(rounds):
        for i, q in enumerate(rotated(questions, r)):
            steps = [("encode", lambda q=q: encoder.encode([q])), ("search", lambda q=q: index.search(q, depth))]
            for name, step in (steps if (i + r) % 2 == 0 else steps[::-1]):
                t0 = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t0)
    postings = [index.postings(q) for q in questions]
    out: dict[str, Any] = {f"{k}_ms": {"p50": 1000 * percentile(v, 50), "p90": 1000 * percentile(v, 90)}
                           for k, v in times.items()}
    out["search_over_encode_p50"] = out["search_ms"]["p50"] / out["encode_ms"]["p50"]
    out["postings_per_question"] = {"p50": percentile(postings, 50), "p90": percentile(postings, 90)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    shared = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()), ROOT.parent)
    ap.add_argument("--beir", default=str(shared / "data" / "beir" / "msmarco-5k"))
    ap.add_argument("--work", default=str(ROOT / "build" / "bench-keywords"))
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    from bench.run import project_questions, read_beir
    from tqa.embedding import load_embedder
    from tqa.keywords import KeywordIndex
    from tqa.query_encoder import encoder_in_memory

    passages, queries = read_beir(Path(args.beir), 10**9)
    texts = [p[2] for p in passages]
    questions = queries + project_questions()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        built = keyword_index(args.chunks, texts)
        build_s = time.perf_counter() - t0
        built.save(work / "bm25")
        del built
        index = KeywordIndex.load(work / "bm25")
        encoder = encoder_in_memory(load_embedder())
        if encoder is None:
            raise SystemExit("the default model could not be exported to a question encoder")
        out = {"chunks": args.chunks, "passages": len(texts), "questions": len(questions), "build_s": build_s,
               "index_bytes": index.nbytes,
               **measure(index, encoder, questions, args.rounds),
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
