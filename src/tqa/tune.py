"""Label-free adaptation of the embedding model to one corpus (the model part of ``tqa tune``).

Pairs are drawn from the corpus itself, as in ``adapt``: a sentence of a passage is a question, the passage
without that sentence its answer (the *inverse cloze* task: the model learns which text a sentence of this
corpus belongs with, in this corpus's words). The model is trained on them with a contrastive loss (multiple
negatives ranking: each question against its own passage and every other passage of its batch), a small
learning rate and few epochs, so it adapts to the corpus rather than forgetting what it knew.

One sentence in five is held out and never trained on. Before and after training, each held-out sentence is
searched for among the corpus's passages (its own passage without it); the tuned model is kept, and saved, only
when its MRR@10 on them beats the model's by at least ``MIN_GAIN``; otherwise nothing is written, and the report
says why.

Pure: texts in, a saved sentence-transformers folder and a report out. Where the model goes, the manifest entry,
re-embedding and reverting belong to the index (``tqa tune``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .adapt import _WORD, MIN_WORDS, _sentences
from .errors import TqaError

MAX_PAIRS = 2000  # training pairs at most (a larger corpus is sampled): a few minutes on 2 cores
MAX_PAIRS_PER_PASSAGE = 8
HELD_OUT = 0.2
MAX_HELD_OUT = 300
MAX_POOL = 3000  # passages the held-out questions are searched among
EPOCHS = 2
LEARNING_RATE = 2e-5
BATCH = 16
SCALE = 20.0  # the similarity scale of the contrastive loss (sentence-transformers' default)
MAX_TOKENS = 128  # passages are cut to this many tokens while training (faster; the start holds the topic)
MIN_GAIN = 0.01  # the tuned model must find held-out passages at least this much better (MRR@10)
MIN_PAIRS = 20

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class TuneError(TqaError):
    """The corpus cannot be tuned on."""


@dataclass
class TuneReport:
    kept: bool
    reason: str
    pairs: int
    held_out: int
    passages: int
    mrr_before: float | None = None
    mrr_after: float | None = None
    epochs: int = EPOCHS
    learning_rate: float = LEARNING_RATE
    seconds: float = 0.0
    model_dir: str | None = None
    base_model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Pair:
    query: str
    passage: int  # index into the corpus passages
    answer: str  # the passage without the sentence


def pairs_from(passages: Sequence[str], rng: np.random.Generator, per_passage: int = MAX_PAIRS_PER_PASSAGE,
               limit: int | None = None) -> list[Pair]:
    """Inverse-cloze pairs: up to ``per_passage`` sentences of each passage, each with its passage without
    it; in random order, at most ``limit``."""
    out: list[Pair] = []
    for i, text in enumerate(passages):
        spans = _sentences(text)
        for k in rng.permutation(len(spans))[:per_passage]:
            a, b = spans[int(k)]
            rest = " ".join((text[:a] + " " + text[b:]).split())
            if len(_WORD.findall(rest)) >= MIN_WORDS:
                out.append(Pair(text[a:b].strip(), i, rest))
    order = rng.permutation(len(out))
    chosen = [out[int(j)] for j in order]
    return chosen[:limit] if limit else chosen


def split(pairs: list[Pair], share: float = HELD_OUT, cap: int = MAX_HELD_OUT) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): a share of the pairs held out, never trained on (pairs are in random order)."""
    n = min(cap, max(1, int(round(share * len(pairs)))))
    return pairs[n:], pairs[:n]


def held_out_mrr(encode: Callable[[list[str]], np.ndarray], passages: Sequence[str], held: Sequence[Pair],
                 pool: np.ndarray) -> float:
    """MRR@10 of held-out sentences searched for among ``pool`` passages, each one's own passage encoded
    without it; other passages holding the sentence verbatim are left out of its ranking."""
    if not held:
        return 0.0
    pool_list = [int(i) for i in pool]
    vectors = encode([passages[i] for i in pool_list])
    q = encode([p.query for p in held])
    own = encode([p.answer for p in held])
    where = {i: n for n, i in enumerate(pool_list)}
    total = 0.0
    for j, p in enumerate(held):
        scores = vectors @ q[j]
        mine = float(own[j] @ q[j])
        if p.passage in where:
            scores[where[p.passage]] = -np.inf
        for n, i in enumerate(pool_list):
            if i != p.passage and p.query in passages[i]:
                scores[n] = -np.inf
        rank = 1 + int(np.sum(scores >= mine))  # a tie counts against the passage
        total += 1.0 / rank if rank <= 10 else 0.0
    return total / len(held)


def tune(passages: Sequence[str], base_model: str, out_dir: str | Path, *, epochs: int = EPOCHS,
         learning_rate: float = LEARNING_RATE, max_pairs: int = MAX_PAIRS, batch_size: int = BATCH,
         min_gain: float = MIN_GAIN, seed: int = 0, on_progress: Progress | None = None) -> TuneReport:
    """Tune ``base_model`` (a sentence-transformers name or folder) on ``passages`` (the texts the index
    embeds). Writes the tuned model to ``out_dir`` (which must not exist) only when it is kept."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists():
        raise TuneError(f"{out} already exists; tuning writes a new folder.")
    rng = np.random.default_rng(seed)
    all_pairs = pairs_from(passages, rng, limit=None)
    train, held = split(all_pairs)
    train = train[:max_pairs]
    settings = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "scale": SCALE,
                "max_tokens": MAX_TOKENS, "max_pairs": max_pairs, "seed": seed, "min_gain": min_gain}
    report = TuneReport(False, "", len(train), len(held), len(passages), epochs=epochs, learning_rate=learning_rate,
                        base_model=str(base_model), settings=settings)
    if len(train) < MIN_PAIRS:
        report.reason = (f"only {len(train)} sentences could be drawn from the corpus to train on (at least "
                         f"{MIN_PAIRS} are needed): the model is kept as it is")
        report.seconds = round(time.perf_counter() - t0, 2)
        return report

    import torch
    from sentence_transformers import SentenceTransformer

    from .embedding import resolve_model

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # (the "Loading weights" bar is noise beside the training steps' own)
    torch.manual_seed(seed)
    model = SentenceTransformer(resolve_model(str(base_model)), device="cpu")
    full_length = int(model.max_seq_length or 256)

    def encode(texts: list[str]) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            return np.asarray(model.encode(texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True,
                                           show_progress_bar=False), dtype=np.float32)

    pool = np.sort(rng.choice(len(passages), size=min(len(passages), MAX_POOL), replace=False))
    held_ids = {p.passage for p in held}
    pool = np.union1d(pool, np.fromiter(held_ids, dtype=np.int64)) if held_ids else pool
    before = held_out_mrr(encode, passages, held, pool)
    report.mrr_before = round(before, 4)

    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / max(1, total - warmup)))
    model.max_seq_length = min(full_length, MAX_TOKENS)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(train))
        for b in range(steps_per_epoch):
            batch = [train[int(i)] for i in order[b * batch_size:(b + 1) * batch_size]]
            batch = _distinct_passages(batch)
            if len(batch) < 2:
                continue
            model.train()
            q = _embed(model, [p.query for p in batch])
            a = _embed(model, [p.answer for p in batch])
            sims = SCALE * (q @ a.T)
            loss = torch.nn.functional.cross_entropy(sims, torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if on_progress:
                on_progress("training", step, total)
    model.max_seq_length = full_length
    after = held_out_mrr(encode, passages, held, pool)
    report.mrr_after = round(after, 4)
    if after >= before + min_gain:
        model.save(str(out))
        report.kept = True
        report.model_dir = str(out)
        report.reason = (f"held-out sentences found their passages better after tuning (MRR@10 {before:.3f} -> "
                         f"{after:.3f}): the tuned model is kept")
    else:
        report.reason = (f"held-out sentences did not find their passages better after tuning (MRR@10 {before:.3f} "
                         f"-> {after:.3f}, at least +{min_gain} needed): the model is kept as it is")
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


def _distinct_passages(batch: list[Pair]) -> list[Pair]:
    """One pair per passage in a batch: two sentences of one passage would be each other's false negatives."""
    seen: set[int] = set()
    out = []
    for p in batch:
        if p.passage not in seen:
            seen.add(p.passage)
            out.append(p)
    return out


def _embed(model: Any, texts: list[str]) -> Any:
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize  # (renamed in sentence-transformers 6)
    features = prepare(texts)
    out = model(features)["sentence_embedding"]
    return torch.nn.functional.normalize(out, dim=-1)
