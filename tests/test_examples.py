"""``Assistant.example_questions``: the web page's "Try" questions come from the index itself, so that a user's own
corpus gets examples about its own documents. Tried on each kind of corpus tqa meets: a sectioned report (the
shipped document), treaty texts (article labels, Dutch/English duplicates, preambles), short untitled notes and
one-paragraph passages (MS MARCO-like). Fake embedder, except the last test (the shipped corpus, real model)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from tqa import Assistant, build_index

from .support import CORPUS, TREATIES, FakeEmbedder

PREFIX = "What do the documents say about "
# The treaty texts of the shared data (read in place): beside the project's folder, as CI lays it out, or the
# workplace's copy.


def index_of(corpus: Path, tmp_path: Path, **settings) -> Assistant:
    embedder = FakeEmbedder()
    build_index(corpus, tmp_path / "index", embedder=embedder)
    qa = Assistant.load(tmp_path / "index", embedder=embedder)
    if settings:
        qa = Assistant(qa.index, qa.embedder, replace(qa.settings, **settings))
    return qa


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def headings_of(qa: Assistant) -> set[str]:
    return {c.section[-1] for c in qa.index.chunks if c.section}


def topic(question: str) -> str:
    assert question.startswith(PREFIX) and question.endswith("?"), question
    return question[len(PREFIX):-1]


def assert_answered(qa: Assistant, questions: list[str]) -> None:
    for q in questions:
        answer = qa.ask(q)
        assert not answer.abstained and answer.passages, (q, answer.message)


def test_the_shipped_report_gets_questions_about_its_own_sections(tmp_path):
    qa = index_of(CORPUS, tmp_path)
    examples = qa.example_questions()
    assert len(examples) == 3 and len(set(examples)) == 3
    order = list(dict.fromkeys(c.section[-1] for c in qa.index.chunks if c.section))  # the sections, in order
    places = []
    for q in examples:
        t = topic(q)
        heading = t if t in order else f"The {t[4:]}"  # a leading "The" reads "the" mid-sentence
        assert heading in order, q
        places.append(order.index(heading))
    # spread through the document, in its order: not its first three sections
    assert places == sorted(places) and places[-1] - places[0] >= len(order) // 3
    assert_answered(qa, examples)
    # deterministic: another load of the same index gives the same questions
    assert Assistant.load(tmp_path / "index", embedder=FakeEmbedder()).example_questions() == examples


TREATY = """<meta http-equiv='Content-Type' content='text/html; charset=utf-8' />

##Verdrag inzake de bescherming van zeevarenden

####Convention concerning the protection of seafarers

PreambuleThe States Parties to this Convention, recalling the hardships of work at sea, have agreed as follows:

### Article  1  

####Scope of application

This Convention applies to every seafarer employed on a ship registered in a State Party.

### Article  2  

####Hours of rest on board

Seafarers shall have at least ten hours of rest in any period of twenty-four hours.

### Article  3  

This Convention shall be open for signature by all States.

### Artikel  1  

####Toepassingsgebied

Dit Verdrag is van toepassing op iedere zeevarende die werkzaam is op een schip.

### Artikel  2  

####Rusttijden aan boord

Zeevarenden hebben ten minste tien uur rust in elke periode van vierentwintig uur.
"""


def test_treaty_texts_get_english_topics_never_article_labels(tmp_path):
    corpus = write(tmp_path / "treaties", {
        "seafarers.md": TREATY,
        "labels-only.md": "### Article 1\n\nStates shall cooperate.\n\n### PART II\n\nStates shall report.\n",
    })
    qa = index_of(corpus, tmp_path)
    examples = qa.example_questions()
    assert examples, "a treaty with titled articles offers examples"
    for q in examples:
        t = topic(q)
        assert not re.match(r"(Article|Artikel|PART|DEEL)\b", t), q  # labels name nothing to ask about
        assert t in headings_of(qa)
        assert t not in {"Verdrag inzake de bescherming van zeevarenden", "Toepassingsgebied",
                         "Rusttijden aan boord"}, q  # the English question is about the English text
    assert_answered(qa, examples)


@pytest.mark.skipif(TREATIES is None, reason="the shared treaty texts are not beside this project")
def test_the_shared_treaty_texts_get_questions_from_several_treaties(tmp_path):
    assert TREATIES is not None
    qa = index_of(TREATIES, tmp_path)
    examples = qa.example_questions()
    assert len(examples) == 3
    sources = {qa.ask(q).passages[0].source for q in examples}
    assert len(sources) >= 2, examples  # spread over the documents, not three articles of one treaty
    for q in examples:
        t = topic(q)
        assert not re.match(r"(Article|Artikel|PART|DEEL|LEAGUE)\b", t, re.IGNORECASE), q
        assert not re.search(r"\b(Verdrag|inzake|betreffende|Protocol tegen)\b", t), q
    assert_answered(qa, examples)


def test_notes_without_headings_offer_a_descriptive_file_name_or_nothing(tmp_path):
    notes = write(tmp_path / "notes", {
        "n1.txt": "Call the plumber about the leaking kitchen tap before Friday. He said the washer is worn.\n",
        "2024-03-02.txt": "Lentil soup needs an onion, two carrots and a litre of stock. Simmer it for half an hour.\n",
        "budget-meeting.txt": "We agreed the budget for the school trip. The meeting moved the trip to May.\n",
        "holiday-plans.txt": "Nothing about that here: only a reminder to water the plants.\n",  # words not used
    })
    qa = index_of(notes, tmp_path)
    assert not headings_of(qa)
    assert qa.example_questions() == [f"{PREFIX}budget meeting?"]
    assert_answered(qa, qa.example_questions())
    bare = write(tmp_path / "bare", {
        "note-1.txt": "Call the plumber about the leaking kitchen tap before Friday.\n",
        "untitled.txt": "Water the plants on Tuesday and Thursday mornings.\n",
    })
    assert index_of(bare, tmp_path / "b").example_questions() == []  # nothing reasonable to offer: none


def test_one_paragraph_passages_named_by_id_offer_none(tmp_path):
    passages = [
        "The presence of communication amid scientific minds was equally important to the success of the "
        "Manhattan Project as scientific intellect.",
        "Photosynthesis converts light energy into chemical energy that fuels the activities of living organisms.",
        "The Amazon rainforest covers much of the Amazon basin of South America, about seven million square km.",
    ]
    corpus = write(tmp_path / "msmarco", {f"{7067032 + i}.txt": p + "\n" for i, p in enumerate(passages)})
    qa = index_of(corpus, tmp_path)
    assert qa.example_questions() == []


def test_a_heading_written_as_a_question_is_asked_as_it_is(tmp_path):
    corpus = write(tmp_path / "faq", {"faq.md": (
        "# How do I reset my password?\n\nOpen the settings page and choose a new password there.\n\n"
        "# Article 4\n\nAccounts are kept for a year.\n")})
    assert index_of(corpus, tmp_path).example_questions() == ["How do I reset my password?"]


def test_only_questions_the_index_answers_are_offered_and_the_work_is_bounded(tmp_path):
    qa = index_of(CORPUS, tmp_path, abstain_threshold=1.01)  # nothing is covered at this threshold
    calls = len(qa.embedder.calls)
    assert qa.example_questions() == []
    asked = len(qa.embedder.calls) - calls
    assert 0 < asked <= 4 * 3 + 4


def test_examples_are_remembered_per_generation_and_follow_a_new_one(tmp_path):
    notes = write(tmp_path / "notes", {"n1.txt": "Call the plumber about the leaking kitchen tap before Friday.\n"})
    qa = index_of(notes, tmp_path)
    assert qa.example_questions() == []
    calls = len(qa.embedder.calls)
    assert qa.example_questions() == [] and len(qa.embedder.calls) == calls  # remembered: nothing asked again
    qa.add_documents([("shelters.md", b"# Shelters for survivors\n\nShelters for survivors open every night.\n")])
    assert qa.example_questions() == [f"{PREFIX}Shelters for survivors?"]
    calls = len(qa.embedder.calls)
    assert qa.example_questions(n=3) == [f"{PREFIX}Shelters for survivors?"] and len(qa.embedder.calls) == calls
    assert qa.example_questions(n=0) == []


@pytest.mark.model
def test_every_example_of_the_shipped_corpus_is_answered_with_the_real_model(default_index, real_embedder):
    qa = Assistant.load(default_index, embedder=real_embedder)
    examples = qa.example_questions()
    assert len(examples) == 3
    assert_answered(qa, examples)
