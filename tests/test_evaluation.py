from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tqa import Assistant, build_index
from tqa.errors import EvalError
from tqa.evaluation import (
    Question,
    QuestionResult,
    beir_metrics,
    compare,
    evaluate_beir,
    evaluate_questions,
    gate,
    load_beir,
    load_questions,
    load_thresholds,
    locate_evidence,
    mrr_at,
    ndcg_at,
    passage_hits,
    question_metrics,
    recall_at,
)

ROOT = Path(__file__).resolve().parent.parent


# ---- metric definitions, against hand-worked examples


def test_ndcg_hand_worked():
    qrels = {"a": 3, "b": 2, "c": 1}
    # ranking b, x, a: DCG = 2/log2(2) + 0 + 3/log2(4) = 2 + 1.5 = 3.5
    # ideal a, b, c: 3/1 + 2/log2(3) + 1/2 = 3 + 1.26186 + 0.5 = 4.76186
    assert ndcg_at(["b", "x", "a"], qrels, 10) == pytest.approx(3.5 / (3 + 2 / math.log2(3) + 0.5))
    assert ndcg_at(["a", "b", "c"], qrels, 10) == pytest.approx(1.0)
    assert ndcg_at(["x", "y"], qrels, 10) == 0.0
    assert ndcg_at(["x"] * 10 + ["a"], qrels, 10) == 0.0  # beyond the cut


def test_recall_and_mrr_hand_worked():
    qrels = {"a": 1, "b": 2, "z": 0}  # grade 0 is not relevant
    assert recall_at(["x", "a", "z"], qrels, 10) == 0.5
    assert recall_at(["a", "b"], qrels, 1) == 0.5
    assert mrr_at(["x", "z", "b"], qrels, 10) == pytest.approx(1 / 3)
    assert mrr_at(["x"] * 10 + ["a"], qrels, 10) == 0.0


def test_metrics_agree_with_trec_eval():
    """pytrec_eval wraps trec_eval, the reference BEIR itself uses."""
    import random

    import pytrec_eval

    rng = random.Random(7)
    docs = [f"d{i}" for i in range(150)]
    qrels = {f"q{q}": {d: rng.randint(1, 3) for d in rng.sample(docs, rng.randint(1, 12))} for q in range(25)}
    run = {q: rng.sample(docs, 120) for q in qrels}
    ours = beir_metrics(run, qrels)
    scored = {q: {d: float(len(ds) - i) for i, d in enumerate(ds)} for q, ds in run.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100", "recip_rank"})
    per_query = evaluator.evaluate(scored)
    cut10 = {q: {d: s for d, s in scored[q].items() if s > len(run[q]) - 10} for q in scored}
    mrr10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut10)

    def mean(results, key):
        return sum(r[key] for r in results.values()) / len(results)

    assert ours["ndcg@10"] == pytest.approx(mean(per_query, "ndcg_cut_10"), abs=0.001)
    assert ours["recall@10"] == pytest.approx(mean(per_query, "recall_10"), abs=0.001)
    assert ours["recall@100"] == pytest.approx(mean(per_query, "recall_100"), abs=0.001)
    assert ours["mrr@10"] == pytest.approx(mean(mrr10, "recip_rank"), abs=0.001)


# ---- question sets


def test_evidence_is_found_despite_quotes_and_whitespace():
    docs = [("a.txt", "Intro.\nSweden’s  law\n criminalises buying sex.")]
    q = Question("q1", "?", ("Sweden's law criminalises buying sex.",), True)
    [[(src, start, end)]] = locate_evidence([q], docs)["q1"]
    assert src == "a.txt" and docs[0][1][start:end] == "Sweden’s  law\n criminalises buying sex."


def test_missing_evidence_names_the_question():
    q = Question("q7", "?", ("text that is nowhere",), True)
    with pytest.raises(EvalError, match="q7.*not found"):
        locate_evidence([q], [("a.txt", "something else")])


def test_hit_needs_half_of_an_occurrence():
    evidence = [[("a.txt", 100, 200)]]
    assert passage_hits("a.txt", 150, 400, evidence)  # covers 50 of 100
    assert not passage_hits("a.txt", 151, 400, evidence)
    assert not passage_hits("b.txt", 0, 1000, evidence)


def test_question_file_errors(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a", "question": "x", "answers": ["y"]}\nnot json\n')
    with pytest.raises(EvalError, match=":2:"):
        load_questions(bad)
    bad.write_text('{"id": "a", "question": "x", "answers": [], "answerable": true}\n')
    with pytest.raises(EvalError, match="no evidence"):
        load_questions(bad)
    with pytest.raises(EvalError, match="No question set"):
        load_questions(tmp_path / "missing.jsonl")


def test_project_question_set_is_well_formed():
    qs = load_questions(ROOT / "eval" / "questions.jsonl")
    assert len(qs) >= 60 and sum(not q.answerable for q in qs) >= 10
    text = (ROOT / "corpus" / "global-governance-and-human-trafficking.txt").read_text(encoding="utf-8")
    located = locate_evidence(qs, [("doc", text)])
    assert all(located[q.id] for q in qs if q.answerable)


def test_question_metrics_and_gate():
    results = [
        QuestionResult("a", "", True, 1, False, 0.5),
        QuestionResult("b", "", True, 3, False, 0.5),
        QuestionResult("c", "", True, None, True, 0.1),
        QuestionResult("u", "", False, None, True, 0.1),
    ]
    m = question_metrics(results)
    assert m["hit@1"] == pytest.approx(1 / 3) and m["hit@3"] == pytest.approx(2 / 3)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["abstained_unanswerable"] == 1.0 and m["abstained_answerable"] == pytest.approx(1 / 3)
    failures = gate(m, {"min": {"hit@1": 0.5, "hit@3": 0.5}, "max": {"abstained_answerable": 0.05}})
    assert len(failures) == 2
    assert failures[0].startswith("hit@1 = 0.333 is below the minimum 0.5 by 0.167")
    assert "abstained_answerable = 0.333 is above the maximum 0.05" in failures[1]


def test_committed_thresholds_parse():
    t = load_thresholds(ROOT / "eval" / "thresholds.toml")
    assert t["min"]["hit@5"] >= 0.9 and "abstained_answerable" in t["max"]


def test_each_question_set_gates_on_its_own_thresholds():
    from tqa.evaluation import question_thresholds

    t = load_thresholds(ROOT / "eval" / "thresholds.toml")
    own = question_thresholds(t, "eval/questions.jsonl")
    treaties = question_thresholds(t, "eval/treaties/questions.jsonl")
    assert own == {"min": t["min"], "max": t["max"]}
    assert treaties == t["questions"]["treaties"] and treaties["min"]["hit@5"] != own["min"]["hit@5"]
    assert question_thresholds(t, "elsewhere/other.jsonl") == own  # a set with no section of its own


def test_compare_explains_question_by_question():
    def report(rank_a, abst_u):
        return {"runs": {"hybrid": {"questions": [
            {"id": "a", "question": "qa", "answerable": True, "rank": rank_a, "abstained": False},
            {"id": "u", "question": "qu", "answerable": False, "rank": None, "abstained": abst_u},
        ]}}}

    lines = compare(report(1, True), report(None, False), "hybrid")
    assert any(line.startswith("newly fails  a") for line in lines)
    assert any(line.startswith("newly fails  u") for line in lines)
    assert any(line.startswith("newly passes a") for line in compare(report(9, True), report(2, True), "hybrid"))
    assert any(line.startswith("moved        a") for line in compare(report(1, True), report(2, True), "hybrid"))


def test_evaluate_questions_with_the_fake_embedder(small_corpus, tmp_path, fake_embedder):
    build_index(small_corpus, tmp_path / "i", embedder=fake_embedder)
    qa = Assistant.load(tmp_path / "i", embedder=fake_embedder)
    qs = [Question("s", "Sweden purchase of sex", ("Sweden criminalises the purchase of sex",), True),
          Question("t", "payments hard to trace", ("Cryptocurrencies make payments hard to trace.",), True)]
    runs = evaluate_questions(qa, qs, ["bm25", "recipe"])
    assert runs["bm25"]["metrics"]["hit@1"] == 1.0
    assert runs["recipe"]["metrics"]["abstained_unanswerable"] is None
    assert runs["bm25"]["questions"][0]["passages"][0]["hit"] is True


# ---- BEIR


@pytest.fixture
def tiny_beir(tmp_path) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = {"d1": "Sweden criminalises buying sex.", "d2": "Shelters give beds to survivors.",
            "d3": "Cryptocurrency payments are hard to trace.", "d/4": "Hotlines answer at night."}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                               for k, v in docs.items()))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "buying sex Sweden"}) + "\n"
                                        + json.dumps({"_id": "2", "text": "night hotlines"}) + "\n"
                                        + json.dumps({"_id": "3", "text": "unjudged"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t2\n2\td/4\t1\n")
    return root


def test_load_beir_skips_the_header_and_unjudged_queries(tiny_beir):
    corpus, queries, qrels = load_beir(tiny_beir)
    assert len(corpus) == 4 and len(queries) == 3 and qrels == {"1": {"d1": 2}, "2": {"d/4": 1}}


def test_evaluate_beir_end_to_end(tiny_beir, fake_embedder):
    result = evaluate_beir(tiny_beir, ["bm25", "dense", "recipe"], embedder=fake_embedder)
    assert result["documents"] == 4
    assert result["runs"]["bm25"]["metrics"]["ndcg@10"] == pytest.approx(1.0)
    assert result["runs"]["bm25"]["run"]["2"][0] == "d/4"


def test_not_a_beir_folder(tmp_path):
    with pytest.raises(EvalError, match="not a BEIR folder"):
        load_beir(tmp_path)


# ---- --compare: how each metric moved, then only the questions that changed


@pytest.fixture
def eval_setup(small_corpus, tmp_path, fake_embedder):
    from tqa.evaluation import run_eval

    qs = tmp_path / "q.jsonl"
    rows = [{"id": "s", "question": "Sweden purchase of sex", "answers": ["Sweden criminalises the purchase of sex"]},
            {"id": "t", "question": "payments hard to trace",
             "answers": ["Cryptocurrencies make payments hard to trace."]},
            {"id": "n", "question": "NGOs train police officers", "answers": ["NGOs train police officers"]},
            {"id": "u", "question": "What is the tallest mountain in Africa?", "answers": [],
             "answerable": False}]
    qs.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(**kw):
        return run_eval(questions=qs, corpus=small_corpus, index=tmp_path / "i", thresholds=None, mode="bm25",
                        embedder=fake_embedder, **kw)

    old = tmp_path / "old.json"
    run(json_out=old)
    return run, old


def test_compare_prints_how_each_metric_moved_then_only_the_changed_questions(eval_setup):
    from tqa.evaluation import QUESTION_METRICS

    run, old = eval_setup
    report = json.loads(old.read_text())
    now = report["runs"]["bm25"]["metrics"]
    q = next(q for q in report["runs"]["bm25"]["questions"] if q["id"] == "t")
    q["rank"] = 7  # pretend question t used to rank its evidence 7th: hit@1 and mrr@10 were lower
    report["runs"]["bm25"]["metrics"] = dict(now, **{"hit@1": now["hit@1"] - 1 / 3, "mrr@10": 0.5})
    old.write_text(json.dumps(report))
    _, lines, _ = run(compare_with=old)
    start = next(i for i, line in enumerate(lines) if line.startswith("Compared with"))
    assert lines[start] == f"Compared with {old} (bm25):"
    summary = lines[start + 1:start + 1 + len(QUESTION_METRICS)]
    assert [line.split()[0] for line in summary] == list(QUESTION_METRICS)  # every metric, first, in order
    moved = {line.split()[0]: line for line in summary}
    assert moved["hit@1"].split()[1:] == [f"{now['hit@1'] - 1 / 3:.3f}", "->", f"{now['hit@1']:.3f}", "+0.333"]
    assert moved["mrr@10"].split()[1:] == ["0.500", "->", f"{now['mrr@10']:.3f}", f"{now['mrr@10'] - 0.5:+.3f}"]
    assert moved["hit@5"].split()[-1] == "same"
    rest = lines[start + 1 + len(QUESTION_METRICS):]
    assert rest[:2] == ["", "Questions that changed: 1 of 4"]
    assert rest[2].startswith("  newly passes t: rank 7 -> ") or rest[2].startswith("  moved        t: rank 7 -> ")
    assert not any(f" {qid}: " in line for line in rest for qid in ("s", "n", "u"))  # unchanged ones are not listed


def test_compare_with_no_change_says_so_after_the_summary(eval_setup):
    run, old = eval_setup
    _, lines, _ = run(compare_with=old)
    assert "Questions that changed: 0 of 4" in lines
    summary = lines[lines.index(f"Compared with {old} (bm25):") + 1:lines.index("Questions that changed: 0 of 4")]
    assert all(line.endswith("same") for line in summary if line)


@pytest.mark.parametrize("content", ["[]", "{}", '{"runs": 3}', '"text"', '{"kind": "beir", "runs": {}}'])
def test_compare_with_something_that_is_not_a_report_is_one_line(eval_setup, content):
    run, old = eval_setup
    old.write_text(content)
    with pytest.raises(EvalError, match="report") as err:
        run(compare_with=old)
    assert "\n" not in str(err.value)
