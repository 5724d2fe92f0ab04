"""Corpus-adaptive ranking (tqa.adapt): the fusion, the pseudo-queries, the pool's BM25 and the choice."""

from __future__ import annotations

import numpy as np
import pytest

from tqa import adapt
from tqa.adapt import Passage, fuse
from tqa.store import KeywordIndex

from .support import FakeEmbedder

# ---------------------------------------------------------------- fusion


def test_dense_mixes_chunk_and_best_unit_by_the_unit_weight() -> None:
    chunk, unit, kw = np.array([0.9, 0.2]), np.array([0.1, 0.8]), np.zeros(2)
    assert np.argmax(fuse(chunk, unit, kw, {"unit_weight": 0.0}, mode="dense")) == 0
    assert np.argmax(fuse(chunk, unit, kw, {"unit_weight": 1.0}, mode="dense")) == 1
    assert fuse(chunk, unit, kw, {"unit_weight": 0.5}, mode="dense") == pytest.approx([0.5, 0.5])


def test_scores_fusion_is_convex_in_bm25_over_its_best() -> None:
    chunk = unit = np.array([0.6, 0.5])
    kw = np.array([0.0, 8.0])
    got = fuse(chunk, unit, kw, {"unit_weight": 0.5, "keyword_weight": 0.2, "fusion": "scores"})
    assert got == pytest.approx([0.8 * 0.6, 0.8 * 0.5 + 0.2 * 1.0])


def test_the_shipped_setting_is_what_retrieval_computes() -> None:
    from tqa import retrieval

    assert adapt.SHIPPED == {"unit_weight": retrieval.UNIT_WEIGHT, "keyword_weight": retrieval.KEYWORD_WEIGHT,
                             "fusion": "scores"}


def test_no_keyword_weight_is_dense_order() -> None:
    chunk, unit, kw = np.array([0.3, 0.7, 0.5]), np.array([0.3, 0.7, 0.5]), np.array([9.0, 0.0, 1.0])
    for fusion in ("scores", "rrf"):
        got = fuse(chunk, unit, kw, {"unit_weight": 0.5, "keyword_weight": 0.0, "fusion": fusion})
        assert list(np.argsort(-got)) == [1, 2, 0]


def test_rrf_fusion_counts_ranks_not_scores_and_ignores_absent_keywords() -> None:
    chunk = unit = np.array([0.9, 0.1, 0.2])
    kw = np.array([0.0, 100.0, 0.0])
    got = fuse(chunk, unit, kw, {"unit_weight": 0.0, "keyword_weight": 0.5, "fusion": "rrf"})
    assert got[0] == pytest.approx(0.5 / 61)  # dense rank 1, no keyword match
    assert got[1] == pytest.approx(0.5 / 63 + 0.5 / 61)  # dense rank 3, keyword rank 1
    assert got[2] == pytest.approx(0.5 / 62)


def test_bm25_mode_is_the_keyword_score() -> None:
    kw = np.array([1.0, 3.0])
    assert list(fuse(np.zeros(2), np.zeros(2), kw, adapt.SHIPPED, mode="bm25")) == [1.0, 3.0]


def test_describe_says_what_was_chosen_in_words() -> None:
    assert adapt.describe({"unit_weight": 0.0, "keyword_weight": 0.0, "fusion": "scores"}) == \
        "dense similarity of whole passages, no keyword score"
    assert "best paragraph" in adapt.describe({"unit_weight": 1.0, "keyword_weight": 0.2, "fusion": "rrf"})
    assert "reciprocal rank" in adapt.describe({"unit_weight": 1.0, "keyword_weight": 0.2, "fusion": "rrf"})


# ---------------------------------------------------------------- pseudo-queries

TEXT = ("Sweden criminalises the purchase of sex rather than its sale. The law was passed in 1999 after long debate.\n"
        "Trafficking for sexual exploitation fell after the law took effect in the country.")


def test_a_pseudo_query_is_a_sentence_removed_from_its_passage() -> None:
    p = Passage(TEXT, "Sweden\n", ((0, 110), (111, len(TEXT))))
    queries = adapt.draw([p], np.array([0]), 10, np.random.default_rng(0))
    assert queries
    for q in queries:
        assert q.query in TEXT
        assert q.query not in q.without  # exact match can't decide
        assert q.without.startswith("Sweden\n")  # the section trail stays, as it is embedded
        assert q.unit is not None
        if q.unit_without is not None:
            assert q.query not in q.unit_without


def test_a_sentence_across_two_units_is_not_drawn() -> None:
    p = Passage(TEXT, "", ((0, 30), (30, len(TEXT))))  # the first sentence straddles both units
    queries = adapt.draw([p], np.array([0]), 10, np.random.default_rng(0))
    assert all(not q.query.startswith("Sweden criminalises") for q in queries)


def test_a_passage_of_one_sentence_gives_no_pseudo_query() -> None:
    p = Passage("Sweden criminalises the purchase of sex rather than its sale.")
    assert adapt.draw([p], np.array([0]), 10, np.random.default_rng(0)) == []


def test_the_pool_bm25_is_the_keyword_index_bm25() -> None:
    texts = ["Sweden criminalises the purchase of sex.", "Trafficking fell in Sweden after the law.",
             "Canada funds shelters for survivors of trafficking.", "Nothing relevant here at all."]
    pool = adapt._PoolBM25(texts, KeywordIndex.analyze)
    index = KeywordIndex.build(texts)
    query = "trafficking in Sweden"
    scores, rows = index.search(query, 10)
    mine = pool.scores(query, 3, texts[3])  # the target "rewritten" to its own text changes nothing
    for s, r in zip(scores, rows, strict=True):
        assert mine[r] == pytest.approx(float(s), rel=1e-5)


def test_the_pool_bm25_scores_the_target_without_its_sentence() -> None:
    texts = ["Sweden criminalises the purchase of sex. Shelters help.", "Canada funds shelters."]
    pool = adapt._PoolBM25(texts, KeywordIndex.analyze)
    assert pool.scores("Sweden criminalises purchase", 0, texts[0])[0] > 0
    assert pool.scores("Sweden criminalises purchase", 0, "Shelters help.")[0] == 0


# ---------------------------------------------------------------- learning and choosing


def _corpus(n: int = 40) -> list[Passage]:
    topics = ["sweden law purchase sex", "canada shelters survivors help", "labour recruitment debt bondage",
              "online recruitment social media", "border control smuggling boats", "child marriage age limits",
              "domestic workers wages pay", "forced labour prison camps", "organ removal illegal clinics",
              "fishing vessels crews sea"]
    out = []
    for i in range(n):
        t = topics[i % len(topics)].split()
        sents = [f"The {t[0]} report number {i} covers {t[1]} and {t[2]} in detail.",
                 f"Officials said {t[2]} and {t[3]} were rising in region {i}.",
                 f"A second study of {t[0]} {t[3]} found similar patterns of {t[1]}.",
                 f"Experts recommend more funding for work on {t[1]} and {t[3]}."]
        out.append(Passage(" ".join(sents)))
    return out


def test_learn_returns_a_setting_from_the_grid_with_its_reason() -> None:
    passages = _corpus()
    emb = FakeEmbedder()
    vectors = emb.encode([p.search_text for p in passages])
    got = adapt.learn(passages, vectors, np.zeros((0, emb.dim), dtype=np.float32), emb, KeywordIndex.analyze,
                      max_queries=40)
    assert {k: got[k] for k in ("unit_weight", "keyword_weight", "fusion")} in adapt._grid()
    assert got["queries"] == 40
    assert got["unit_weight"] == 0.0  # no passage has units: there is no paragraph to weigh
    assert "sentences drawn from the corpus" in got["why"]
    # BM25's weight and the fusion form are not decided from pseudo-queries (only reported)
    assert (got["keyword_weight"], got["fusion"]) == (adapt.SHIPPED["keyword_weight"], adapt.SHIPPED["fusion"])
    assert {k: got["grid_best"][k] for k in ("unit_weight", "keyword_weight", "fusion")} in adapt._grid()
    assert 0 <= got["mrr"] <= 1
    assert set(got["baseline"]) == {"chunk", "unit", "bm25", "shipped"}
    # the pseudo-queries cost three short encodings each at most
    assert emb.embedded <= len(passages) + 3 * 40


def test_learn_keeps_the_shipped_setting_when_too_few_sentences() -> None:
    passages = [Passage("One sentence only here, nothing more to say.")] * 3
    emb = FakeEmbedder()
    got = adapt.learn(passages, emb.encode([p.text for p in passages]), np.zeros((0, emb.dim), np.float32), emb,
                      KeywordIndex.analyze)
    assert {k: got[k] for k in adapt.SHIPPED} == adapt.SHIPPED
    assert "too few" in got["why"]


def test_learn_is_deterministic() -> None:
    passages = _corpus()
    emb = FakeEmbedder()
    vectors = emb.encode([p.search_text for p in passages])
    units = np.zeros((0, emb.dim), dtype=np.float32)
    a = adapt.learn(passages, vectors, units, emb, KeywordIndex.analyze, max_queries=30)
    b = adapt.learn(passages, vectors, units, emb, KeywordIndex.analyze, max_queries=30)
    assert a == b


def test_choose_prefers_the_setting_nearest_the_shipped_one_among_equals() -> None:
    grid = adapt._grid()
    mrr = np.full(len(grid), 0.5)
    assert grid[adapt.choose(grid, mrr)] == adapt.SHIPPED
    far = next(i for i, g in enumerate(grid) if g["unit_weight"] == 0.0 and g["keyword_weight"] == 0.5)
    mrr[far] = 0.5 + 2 * adapt.TOLERANCE
    assert adapt.choose(grid, mrr) == far
