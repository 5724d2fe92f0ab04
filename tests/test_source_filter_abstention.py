"""Abstention with a source filter: every check looks only at the documents searched.

A name that only another document mentions is still "never mentioned" by the documents a question is
restricted to (`--source`, the page's "Search only in", ``sources=``).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tqa import Assistant, build_index
from tqa.cli import main
from tqa.keywords import KeywordIndex
from tqa.store import load_index
from tqa.web import Page

from .support import FakeEmbedder

DOCS = {
    "memo.md": "# Budget memo\n\nThe memo sets the shelter budget for next year and thanks the volunteers.\n",
    "report.md": "# Country report\n\nSweden criminalises the purchase of sex. The Nordic Model spread to Norway.\n",
    "notes.txt": "Field notes\nVolunteers in Lagos met the Palermo Protocol working group in March.\n",
    "uploads/extra.md": "# Extra\n\nThe United Nations Office on Drugs and Crime publishes the Global Report.\n",
}
QUESTION = "What does the memo say about Sweden?"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("filtered") / "corpus"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def index(corpus) -> Path:
    build_index(corpus, corpus.parent / "index", embedder=FakeEmbedder())
    return corpus.parent / "index"


@pytest.fixture(scope="module")
def qa(index) -> Assistant:
    loaded = Assistant.load(index, embedder=FakeEmbedder())
    # relevance never decides here: only the name check is under test
    return Assistant(loaded.index, loaded.embedder, replace(loaded.settings, abstain_threshold=-1.0))


def test_a_name_only_another_document_mentions_is_never_mentioned_by_the_filtered_one(qa):
    ans = qa.ask(QUESTION, sources=["memo.md"])
    assert ans.abstained and ans.abstain_reason == "they never mention “Sweden”"
    assert {p.source for p in ans.passages} == {"memo.md"} and ans.best is None
    # the same question over every document, or over the one that mentions Sweden, is not refused for the name
    assert qa.ask(QUESTION).abstain_reason != "they never mention “Sweden”"
    assert not qa.ask(QUESTION, sources=["report.md"]).abstained
    assert not qa.ask(QUESTION, sources=["memo.md", "report.md"]).abstained


def test_name_prefixes_and_initials_are_those_of_the_filtered_documents(qa):
    # "Swedish" is known from "Sweden" in report.md only; "UNODC"-style initials ("UN") from extra.md only
    assert qa.ask("What is the Swedish approach?", sources=["report.md"]).abstain_reason is None
    assert qa.ask("What is the Swedish approach?", sources=["notes.txt"]).abstain_reason == \
        "they never mention “Swedish”"
    assert qa.ask("What does the UN publish?", sources=["uploads/extra.md"]).abstain_reason is None
    assert qa.ask("What does the UN publish?", sources=["memo.md"]).abstain_reason == "they never mention “UN”"


def test_the_cli_source_flag_abstains_the_same_way(index, monkeypatch, capsys):
    import tqa.assistant

    monkeypatch.setattr(tqa.assistant, "load_embedder", lambda *a: FakeEmbedder())
    monkeypatch.setenv("TQA_ABSTAIN_THRESHOLD", "-1")
    assert main(["ask", QUESTION, "--source", "memo.md", "--index", str(index), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["abstained"] and d["abstain_reason"] == "they never mention “Sweden”"
    assert main(["ask", QUESTION, "--source", "memo.md", "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The documents don't seem to cover this: they never mention “Sweden”.")


def test_the_pages_search_only_in_abstains_the_same_way(qa):
    ans = Page(qa).answer(QUESTION, 5, "hybrid", ["memo.md"])
    assert ans.abstained and ans.abstain_reason == "they never mention “Sweden”"


SUBSETS = [list(c) for n in range(1, len(DOCS) + 1) for c in itertools.combinations(sorted(DOCS), n)]


@pytest.fixture(scope="module")
def alone(corpus, tmp_path_factory) -> dict[frozenset[str], Assistant]:
    """For every set of documents, an index built from those documents alone."""
    out = {}
    for subset in SUBSETS:
        root = tmp_path_factory.mktemp("alone")
        for name in subset:
            (root / "c" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "c" / name).write_bytes((corpus / name).read_bytes())
        build_index(root / "c", root / "i", embedder=FakeEmbedder())
        out[frozenset(subset)] = Assistant.load(root / "i", embedder=FakeEmbedder())
    return out


@pytest.mark.parametrize("subset", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_a_filtered_vocabulary_is_that_of_an_index_of_those_documents_alone(qa, alone, subset):
    from tqa.retrieval import IndexVocabulary, vocabulary

    mine = vocabulary(qa.index, subset)
    theirs = IndexVocabulary(alone[frozenset(subset)].index.keywords, alone[frozenset(subset)].index.names)
    every_term = set().union(*(KeywordIndex.analyze(c.search_text) for c in qa.index.chunks)) | {"zzz", "sweden"}
    assert {t for t in every_term if mine.knows(t)} == {t for t in every_term if theirs.knows(t)}
    assert mine.names == theirs.names


WORDS = ["Sweden", "Swedish", "Norway", "Nordic", "Lagos", "Palermo", "Protocol", "UN", "UNODC", "Brazil",
         "Global", "Report", "March", "Budget", "Volunteers", "Crime", "Office", "Drugs", "Canada", "NGO"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subset=st.sampled_from(SUBSETS), words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=4))
def test_unknown_names_under_a_filter_match_an_index_of_those_documents(qa, alone, subset, words):
    from tqa.abstention import unknown_names
    from tqa.retrieval import IndexVocabulary, vocabulary

    question = "What do they say about " + " and ".join(words) + "?"
    other = alone[frozenset(subset)].index
    analyze = KeywordIndex.analyze
    assert unknown_names(question, vocabulary(qa.index, subset), analyze) == \
        unknown_names(question, IndexVocabulary(other.keywords, other.names), analyze)


def test_a_filters_vocabulary_is_computed_once_and_the_unfiltered_path_computes_none(index, monkeypatch):
    import tqa.retrieval as retrieval
    from tqa.retrieval import IndexVocabulary, vocabulary

    data = load_index(index)
    texts_analysed = []
    real = retrieval.name_prefixes
    monkeypatch.setattr(retrieval, "name_prefixes", lambda texts: texts_analysed.append(len(texts)) or real(texts))
    whole = vocabulary(data, None)
    assert isinstance(whole, IndexVocabulary) and whole.keywords is data.keywords and texts_analysed == []
    assert isinstance(vocabulary(data, sorted(DOCS)), IndexVocabulary)  # a filter of every document: the index's
    assert texts_analysed == []
    first = vocabulary(data, ["memo.md", "notes.txt"])
    assert vocabulary(data, ["notes.txt", "memo.md"]) is first and texts_analysed == [2]
