"""What updating one file of a large index costs, against a full build of it, stage by stage.

    python bench/update.py                      # 20,000 Markdown files x 50 passages (about 1,000,000 chunks)
    python bench/update.py --files 2000         # a tenth of that, for a quick look

A corpus folder of real files (MS MARCO passages from /work/shared/data/beir/msmarco-5k, repeated across files in
a seeded order, each file with its own heading) is built through the real ``build_index``. Its embedder returns
synthetic vectors (bench/synthetic.py's perturbation of real embeddings, chosen by a checksum of the text), so the
build takes minutes, not hours; every text it is asked to encode is counted, and charged at the real model's rate
measured in the same run (``--rate`` to give one instead). So:

    full build cost   = measured pipeline time + texts embedded / real rate
    update cost       = measured pipeline time + texts embedded / real rate

Then, ``--rounds`` times each, interleaved: one new file added, one file changed (a paragraph appended), one file
removed (each change kept: the next operation updates the index the last one left). Every stage of
``build_index`` is timed by wrapping the functions it calls (loading the live index, planning, extracting,
embedding, assembling and its parts, publishing). The figures are printed as Markdown and written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # (so that ``bench.synthetic`` is found when run as a script)
BEIR = Path("/work/shared/data/beir/msmarco-5k")
BLOCK = 16_384  # texts the synthetic embedder perturbs at a time


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class SyntheticEmbedder:
    """Vectors like real ones without running a model: text t gets ``perturb(E, a, b)`` with a and b chosen by a
    checksum of t (the same text, the same a and b). Counts every text it encodes."""

    name = "synthetic-minilm"
    max_tokens = 256
    precision = None

    def __init__(self, base: np.ndarray):
        self.base = np.ascontiguousarray(base, dtype=np.float32)
        self.dim = int(base.shape[1])
        self.texts = 0

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        from bench.synthetic import perturb

        self.texts += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        crc = np.array([zlib.crc32(t.encode("utf-8", "surrogatepass")) for t in texts], dtype=np.int64)
        nb = len(self.base)
        rng = np.random.default_rng(int(crc.sum()) & 0xFFFFFFFF)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(texts), BLOCK):  # a block at a time, as a model encodes a batch at a time: what a
            c = crc[s:s + BLOCK]  # build holds while embedding is its texts and the vectors, not temporaries
            out[s:s + BLOCK] = perturb(self.base, c % nb, (c // nb) % nb, rng)
        return out


def read_passages(limit: int) -> list[str]:
    out = []
    with open(BEIR / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"].strip())
            if len(out) >= limit:
                break
    return out


def file_text(i: int, passages: list[str], per: int, rng: np.random.Generator) -> str:
    picks = rng.integers(0, len(passages), per)
    body = "".join(f"## Passage {i}.{n}\n\n{passages[p]}\n\n" for n, p in enumerate(picks))
    return f"# Collection {i}\n\n{body}"


def write_corpus(folder: Path, files: int, per: int, passages: list[str]) -> dict[str, str]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    texts = {}
    for i in range(files):
        name = f"collection-{i:05d}.md"
        texts[name] = file_text(i, passages, per, rng)
        (folder / name).write_text(texts[name], encoding="utf-8")
    return texts


class Stages:
    """Wraps the functions ``build_index`` calls, recording seconds per stage for the current operation, and the
    largest resident set seen during each (sampled every 50 ms; a stage inside another counts as itself)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rss: dict[str, float] = {}  # stage -> peak resident MiB sampled while it ran
        self._undo: list[Callable[[], None]] = []
        self._running = ["(between stages)"]
        self._stop = threading.Event()
        threading.Thread(target=self._sample, name="bench-rss", daemon=True).start()

    def _sample(self) -> None:
        from bench.run import rss_mb

        while True:
            now, label = rss_mb()[0], self._running[-1]
            self.rss[label] = max(self.rss.get(label, 0.0), now)
            if self._stop.wait(0.05):
                return

    def close(self) -> None:
        """Stop sampling and put back the functions wrapped."""
        self._stop.set()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def wrap(self, module: Any, name: str, label: str) -> None:
        fn = getattr(module, name)

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            with self.timed(label):
                return fn(*a, **k)

        setattr(module, name, timed)
        self._undo.append(lambda: setattr(module, name, fn))

    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        """Time what runs inside as the stage ``label`` (added to its seconds so far)."""
        t0 = time.perf_counter()
        self._running.append(label)
        try:
            yield
        finally:
            self._running.pop()
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0

    def report(self) -> dict[str, dict[str, float]]:
        """Each stage's seconds and largest resident set (MiB), in the order they first ran."""
        return {k: {"s": v, "rss_mib": self.rss.get(k, 0.0)} for k, v in self.seconds.items()}

    @contextlib.contextmanager
    def measuring(self) -> Iterator[dict[str, float]]:
        self.seconds, self.rss = {}, {}
        yield self.seconds


def instrument() -> Stages:
    import tqa.indexing as ix

    s = Stages()
    s.wrap(ix, "_previous", "load previous")  # (the context manager is made here; loading happens on entry)
    s.wrap(ix, "plan_build", "plan (hash files)")
    s.wrap(ix, "_extract_here", "extract + chunk")
    s.wrap(ix, "embed", "embed (synthetic)")
    s.wrap(ix, "assemble", "assemble (total)")
    for name, label in (("_parts", "  carry over chunks/vectors"), ("build_vectors", "  vector indexes"),
                        ("KeywordIndex", "  keyword index"), ("learn_ranking", "  learn ranking"),
                        ("calibrate", "  calibrate"), ("detect_language", "  language"),
                        ("name_prefixes", "  names"), ("update_vectors", "  vector indexes"),
                        ("update_keywords", "  keyword index")):
        if not hasattr(ix, name):
            continue
        if name == "KeywordIndex":
            ix.KeywordIndex = _timed_keywords(ix.KeywordIndex, s, label)  # type: ignore[misc]
            continue
        s.wrap(ix, name, label)
    s.wrap(ix, "publish_index", "publish")
    return s


def _timed_keywords(cls: Any, stages: Stages, label: str) -> Any:
    """KeywordIndex whose ``build`` (the whole rebuild of BM25) and ``updated`` are timed as ``label`` (a fallback
    to ``build`` inside ``updated`` is counted once: ``cls.updated`` calls the untimed ``build``)."""

    class Timed(cls):  # type: ignore[misc, valid-type]
        @classmethod
        def build(klass, texts: list[str]) -> Any:
            t0 = time.perf_counter()
            try:
                return cls.build(texts)
            finally:
                stages.seconds[label] = stages.seconds.get(label, 0.0) + time.perf_counter() - t0

        if hasattr(cls, "updated"):
            @classmethod  # type: ignore[misc]
            def updated(klass, previous: Any, old_rows: Any, texts: list[str]) -> Any:
                t0 = time.perf_counter()
                try:
                    return cls.updated(previous, old_rows, texts)
                finally:
                    stages.seconds[label] = stages.seconds.get(label, 0.0) + time.perf_counter() - t0

    return Timed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--per-file", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=str(ROOT / "build" / "bench-update"))
    ap.add_argument("--rate", type=float, default=None, help="real texts/s (default: measured here)")
    ap.add_argument("--json", default=None, help="write the figures here as well")
    ap.add_argument("--base", default=None, help="a .npy of the base passages' real vectors: read when it exists "
                    "(the rate is then measured on --rate-sample passages), else written")
    ap.add_argument("--rate-sample", type=int, default=500)
    ap.add_argument("--compact", action="store_true", help="also time `tqa index --compact` (when it exists)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from tqa.indexing import build_index

    work = Path(args.work)
    corpus, index = work / "corpus", work / "index"
    passages = read_passages(5000)
    from tqa.embedding import load_embedder

    real = load_embedder()
    base_file = Path(args.base) if args.base else None
    if base_file is not None and base_file.is_file():
        base = np.load(base_file)
        log(f"base vectors read from {base_file}; measuring the real rate on {args.rate_sample} passages")
        real.encode(passages[:64], batch_size=32)
        sample = passages[64:64 + args.rate_sample]
        t0 = time.perf_counter()
        real.encode(sample, batch_size=32)
        measured = len(sample) / (time.perf_counter() - t0)
    else:
        log("embedding the base passages with the real model (the synthetic vectors' base; also the real rate)")
        real.encode(passages[:64], batch_size=32)
        t0 = time.perf_counter()
        base = real.encode(passages, batch_size=32)
        measured = len(passages) / (time.perf_counter() - t0)
        if base_file is not None:
            np.save(base_file, base)
    rate = args.rate or measured
    del real
    log(f"real rate {rate:.1f} texts/s")
    emb = SyntheticEmbedder(base)
    log(f"writing {args.files} files x {args.per_file} passages")
    texts = write_corpus(corpus, args.files, args.per_file, passages)
    stages = instrument()
    out: dict[str, Any] = {"files": args.files, "per_file": args.per_file, "rate": rate, "ops": {}}

    def run(label: str, **kw: Any) -> dict[str, Any]:
        emb.texts = 0
        with stages.measuring() as sec:
            t0 = time.perf_counter()
            s = build_index(corpus, index, embedder=emb, progress=False, **kw)
            wall = time.perf_counter() - t0
        r = {"wall_s": wall, "texts": emb.texts, "embed_real_s": emb.texts / rate, "cost_s": wall + emb.texts / rate,
             "chunks": s.chunks_total, "chunks_embedded": s.chunks_embedded, "stages": dict(sec),
             "rss_mib": dict(stages.rss)}
        out["ops"].setdefault(label, []).append(r)
        log(f"{label}: {wall:.1f} s measured, {emb.texts} texts embedded ({emb.texts / rate:.1f} s real), "
            f"{s.chunks_total} chunks; " + ", ".join(f"{k.strip()} {v:.1f}" for k, v in sec.items()))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
        return r

    shutil.rmtree(index, ignore_errors=True)
    log("full build")
    run("full build", rebuild=True)
    rng = np.random.default_rng(11)
    middle = f"collection-{args.files // 2:05d}.md"
    for r in range(args.rounds):  # each change stays: the next round updates the index the last one left
        (corpus / f"collection-new-{r}.md").write_text(file_text(args.files + r, passages, args.per_file, rng),
                                                       encoding="utf-8")
        run("add one file")
        (corpus / middle).write_text(texts[middle] + f"## Revision {r}\n\nRevised ({r + 1}).\n", encoding="utf-8")
        run("change one file")
        (corpus / f"collection-{1 + 7 * r:05d}.md").unlink()
        run("remove one file")
    if args.compact:
        from tqa.indexing import compact_index

        with stages.measuring():
            t0 = time.perf_counter()
            compact_index(index, embedder=emb)
            out["compact_s"] = time.perf_counter() - t0
        log(f"compact: {out['compact_s']:.1f} s")
    print(render(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


def render(out: dict[str, Any]) -> str:
    full = out["ops"]["full build"][0]
    lines = [f"{out['files']:,} files x {out['per_file']} passages: {full['chunks']:,} chunks; real embedding rate "
             f"{out['rate']:.0f} texts/s. Full build: {full['wall_s']:.0f} s measured + {full['texts']:,} texts / "
             f"rate = {full['embed_real_s']:.0f} s = **{full['cost_s']:.0f} s**.", "",
             "| operation | measured (median) | embedded texts | cost with real embedding | ÷ full build |",
             "|---|---|---|---|---|"]
    for label, runs in out["ops"].items():
        if label == "full build":
            continue
        wall = statistics.median(r["wall_s"] for r in runs)
        cost = statistics.median(r["cost_s"] for r in runs)
        lines.append(f"| {label} | {wall:.1f} s | {runs[0]['texts']} | {cost:.1f} s | "
                     f"**{100 * cost / full['cost_s']:.2f}%** |")
    lines += ["", "Stages (seconds, medians; the full build once):", "",
              "| stage | full build | " + " | ".join(k for k in out["ops"] if k != "full build") + " |",
              "|---|---|" + "---|" * (len(out["ops"]) - 1)]
    names: list[str] = []
    for runs in out["ops"].values():
        for r in runs:
            names += [k for k in r["stages"] if k not in names]
    for name in names:
        cells = [statistics.median(r["stages"].get(name, 0.0) for r in runs) for runs in out["ops"].values()]
        lines.append(f"| {name.replace(' ', '&nbsp;', 2) if name.startswith(' ') else name} | "
                     + " | ".join(f"{c:.2f}" for c in cells) + " |")
    rss = full.get("rss_mib") or {}
    if rss:
        top = max(rss, key=rss.__getitem__)
        lines += ["", f"Full build, largest resident set: **{rss[top]:,.0f} MiB**, in {top.strip()}; by stage: "
                  + ", ".join(f"{k.strip()} {v:,.0f}" for k, v in rss.items()) + " MiB."]
    if "compact_s" in out:
        lines += ["", f"`compact_index` (rebuild the structures whole, no embedding): {out['compact_s']:.1f} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
