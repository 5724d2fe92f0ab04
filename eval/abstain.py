"""Abstention figures: the checks of ``tqa.abstention`` against today's ``coverage_gap`` on both question sets.

    python eval/abstain.py            # needs the indexes of `python eval/trials.py build --sets own,treaties`

Each question is asked once (hybrid, 10 passages, as ``tqa eval`` asks); ``tqa.assistant.coverage_gap`` is
replaced for the run by a recorder, so that both the shipped checks and the new ones see exactly what the
assistant passes them. Prints, per set and per method, the share of unanswerable questions abstained and of
answerable ones wrongly abstained, then every question either method gets wrong with its reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import tqa.assistant as assistant_module  # noqa: E402
from tqa import abstention  # noqa: E402
from tqa.evaluation import load_questions  # noqa: E402

WORK = ROOT / "build" / "trials"
SETS = {"own": ROOT / "eval" / "questions.jsonl", "treaties": ROOT / "eval" / "treaties" / "questions.jsonl"}


def collect(name: str) -> tuple[list[dict[str, Any]], Any]:
    """Every question's answer, with what the coverage check was given."""
    qa = assistant_module.Assistant.load(WORK / name / "index")
    seen: dict[str, Any] = {}
    shipped = assistant_module.coverage_gap

    def recorder(question: str, passages: list[str], vocab: Any) -> str | None:
        seen["vocab"] = vocab
        return shipped(question, passages, vocab)

    assistant_module.coverage_gap = recorder
    rows = []
    try:
        for q in load_questions(SETS[name]):
            seen.clear()
            ans = qa.ask(q.question, k=10, mode="hybrid")
            rows.append({"q": q, "answer": ans, "vocab": seen.get("vocab")})
    finally:
        assistant_module.coverage_gap = shipped
    return rows, qa


def new_reason(row: dict[str, Any], qa: Any, language: str) -> str | None:
    ans = row["answer"]
    vocab = row["vocab"] or assistant_module.vocabulary(qa.data)
    return abstention.check(
        ans.question,
        [(p.text, p.relevance if p.relevance is not None else 0.0) for p in ans.passages],
        vocab,
        threshold=ans.threshold,
        language=language,
        highlights=[p.highlight for p in ans.passages],
    )


def main() -> None:
    for name in SETS:
        rows, qa = collect(name)
        language = abstention.detect_language([c.text for c in qa.data.chunks])
        results = {"shipped": [], "new": []}
        for r in rows:
            results["shipped"].append(r["answer"].abstain_reason)
            results["new"].append(new_reason(r, qa, language))
        print(f"\n{name} (language {language}, threshold {qa.threshold:.3f})")
        for method, reasons in results.items():
            un = [x for x, r in zip(reasons, rows, strict=True) if not r["q"].answerable]
            an = [x for x, r in zip(reasons, rows, strict=True) if r["q"].answerable]
            print(f"  {method}: unanswerable abstained {sum(x is not None for x in un)}/{len(un)} "
                  f"({sum(x is not None for x in un) / len(un):.3f}), answerable wrongly abstained "
                  f"{sum(x is not None for x in an)}/{len(an)} ({sum(x is not None for x in an) / len(an):.3f})")
        for i, r in enumerate(rows):
            a, b = results["shipped"][i], results["new"][i]
            ok_new = (b is None) == r["q"].answerable
            if not ok_new or ((a is None) != (b is None)):
                mark = "ok " if ok_new else "BAD"
                print(f"  {mark} {r['q'].id} rel={r['answer'].relevance} shipped={a!r} new={b!r}  {r['q'].question}")


if __name__ == "__main__":
    main()
