"""The abstention checks (tqa.abstention), each with its near misses: pure functions, no model, no index."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tqa import abstention
from tqa.abstention import LOW_RELEVANCE, check, detect_language, main_clause, name_prefixes, strong_level
from tqa.store import KeywordIndex

THRESHOLD = 0.2
WEAK, STRONG = 0.35, 0.8  # on either side of strong_level(0.2) = 0.6


@dataclass(frozen=True)
class Vocab:
    terms: frozenset[str]
    names: frozenset[str]

    def knows(self, term: str) -> bool:
        return term in self.terms


def vocab_of(*texts: str) -> Vocab:
    terms: set[str] = set()
    for t in texts:
        terms.update(KeywordIndex.analyze(t))
    return Vocab(frozenset(terms), frozenset(name_prefixes(texts)))


DOCS = (
    "In contrast, the United States employs the Trafficking Victims Protection Act, adopted in 2000. "
    "Sweden has adopted a sex buyer law. Non-Governmental Organizations (NGOs) work with the government "
    "on shelters. The Palermo Protocol was signed by many states. The Director-General shall notify members."
)
VOCAB = vocab_of(DOCS)


def ask(question: str, *, score: float = WEAK, text: str = "A passage about the law.", language: str = "en",
        highlight: str | None = None, vocab: Vocab = VOCAB) -> str | None:
    return check(question, [(text, score)], vocab, threshold=THRESHOLD, language=language,
                 highlights=None if highlight is None else [highlight])


# ---------------------------------------------------------------- relevance


def test_below_the_threshold_abstains_whatever_else_holds() -> None:
    assert ask("What does the Protection Act say?", score=0.1) == LOW_RELEVANCE
    assert check("anything", [], VOCAB, threshold=THRESHOLD, language="en") == LOW_RELEVANCE


def test_at_the_threshold_is_relevant_enough() -> None:
    assert ask("What does the Protection Act say?", score=THRESHOLD) is None


# ---------------------------------------------------------------- years


def test_a_year_the_documents_never_use_abstains() -> None:
    assert ask("What did the 2014 protocol add?") == "they never mention “2014”"


def test_a_year_the_documents_use_does_not() -> None:
    assert ask("What did the act of 2000 do?") is None


@pytest.mark.parametrize("question", ["What does article 12 say?", "Is 1.5 the rate?", "Call 0800 1234567?"])
def test_numbers_that_are_not_years_are_not_checked(question: str) -> None:
    assert abstention.unknown_years(question, VOCAB) == []


def test_the_year_check_works_in_any_language() -> None:
    assert ask("Was hat das Protokoll von 2014 ergänzt?", language="de") == "they never mention “2014”"


# ---------------------------------------------------------------- names


def test_a_name_the_documents_never_use_abstains() -> None:
    assert ask("What is Brazil's approach to labour trafficking?") == "they never mention “Brazil”"


def test_a_name_abstains_even_with_strong_evidence() -> None:
    assert ask("What is Brazil's approach to labour trafficking?", score=STRONG) == "they never mention “Brazil”"


@pytest.mark.parametrize("question", [
    "How does Swedish law treat buyers?",  # an adjective of a name the documents use (same first letters)
    "What does Sweden's law say?",  # a possessive
    "What did the US adopt?",  # initials of a run of capitalised words
    "What does each side bring to an NGO-government partnership?",  # a hyphenated compound of known words
    "Which NGO runs shelters?",  # the singular of a plural the stemmer keeps whole ("NGOs")
    "What do the American federal laws stress?",  # a demonym of a place spelt otherwise ("United States")
    "Who does the Director-General notify?",  # a hyphenated name the documents use
    "What does the “Palermo Protocol” require?",  # a quoted title of known words
])
def test_names_the_documents_use_in_another_form_are_known(question: str) -> None:
    assert ask(question) is None


def test_a_plural_of_a_singular_the_documents_use_is_known() -> None:
    vocab = vocab_of("The NGO shelters victims.")
    assert ask("How do NGOs help?", vocab=vocab) is None


def test_a_hyphenated_compound_with_an_unknown_part_abstains() -> None:
    assert ask("What is the NGO-Brazil partnership?") == "they never mention “NGO-Brazil”"


def test_a_quoted_title_the_documents_never_use_abstains() -> None:
    assert ask("What does the report “Invisible Chains” recommend?") == "they never mention “Invisible”, “Chains”"


def test_an_unknown_adjective_abstains_on_weak_evidence_only() -> None:
    question = "What does the Brazilian statute stress?"
    assert ask(question, score=WEAK) == "they never mention “Brazilian”"
    assert ask(question, score=STRONG) is None


def test_an_unknown_compound_abstains_on_weak_evidence_only() -> None:
    question = "What is the Brazil-NGO partnership?"
    assert ask(question, score=WEAK) is not None
    assert ask(question, score=STRONG) is None


def test_strong_evidence_starts_halfway_to_a_perfect_match() -> None:
    assert strong_level(0.2) == pytest.approx(0.6)
    assert strong_level(0.0) == pytest.approx(0.5)


def test_the_first_word_of_a_question_is_not_a_name() -> None:
    assert ask("Describe the law of Sweden.") is None
    assert ask("“Describe” the law of Sweden.") is None


def test_a_demonym_whose_place_is_absent_abstains() -> None:
    assert ask("What does Dutch law say?") == "they never mention “Dutch”"
    vocab = vocab_of(DOCS, "The Netherlands signed it.")
    assert ask("What does Dutch law say?", vocab=vocab) is None


def test_the_name_check_is_off_for_a_language_that_capitalises_nouns() -> None:
    assert ask("Was sagt das Gesetz über Brasilien und Kinderarbeit?", language="de") is None


def test_the_name_check_works_for_another_language_that_capitalises_names_only() -> None:
    assert ask("Wat zegt de wet van Brazilië?", language="nl") == "they never mention “Brazilië”"
    assert ask("Wat zegt de wet van Zweden?", language="nl", vocab=vocab_of("Zweden heeft een wet.")) is None


def test_the_name_check_is_off_for_an_undetected_language() -> None:
    assert ask("Brasil Ekonomi?", language="und") is None


def test_a_non_latin_question_has_no_capitalised_names() -> None:
    assert ask("Что говорит закон о торговле людьми?") is None


# ---------------------------------------------------------------- answer types


@pytest.mark.parametrize("question, passage, fires", [
    ("How much is the minimum monthly wage?", "The minimum wage is set by national law.", True),
    ("How much is the minimum monthly wage?", "The minimum wage is € 1,500 a month.", False),
    ("How much money in compensation must be paid?", "Victims receive 2,000 dollars.", False),
    ("On what date did the convention enter into force?", "It enters into force twelve months later.", True),
    ("On what date did the convention enter into force?", "It entered into force on 5 September 2013.", False),
    ("In what year was the protocol adopted?", "It was adopted by the General Assembly in 2000.", False),
    ("How long may a migrant be detained?", "Detention must be lawful.", True),
    ("How long may a migrant be detained?", "No longer than thirty days.", False),
    ("What prison sentence can a trafficker receive?", "Stringent penalties apply.", True),
    ("What prison sentence can a trafficker receive?", "Within two years a report is due; penalties apply.", True),
    ("What prison sentence can a trafficker receive?", "Offenders face up to 20 years of imprisonment.", False),
    ("Who was the first chairperson of the committee?", "The Committee shall elect its officers.", True),
    ("Who was the first chairperson of the committee?", "The Director-General of the International Labour Office "
     "convened the Fourteenth Session.", True),
    ("Who was the first chairperson of the committee?", "Its first chair was Hoda Badran of Egypt.", False),
    ("How often must wages be paid?", "Wages are paid at least once a month.", False),
    ("How often must wages be paid?", "Wages are paid in cash.", True),
    ("How many states are parties today?", "A State Party may denounce the protocol.", True),
    ("How many states are parties today?", "Forty states had ratified it.", False),
    ("What percentage of victims are women?", "Most victims are women and girls.", True),
    ("Which article defines exploitation?", "Article 3 defines exploitation.", False),
])
def test_answer_types(question: str, passage: str, fires: bool) -> None:
    assert (ask(question, text=passage) is not None) is fires


def test_answer_types_look_at_the_best_answering_sentences_when_given() -> None:
    question = "How many states are parties today?"
    passage = "Article 22 sets out entry into force. A State Party may denounce it."
    assert ask(question, text=passage) is None  # "22" in the passage
    assert ask(question, text=passage, highlight="A State Party may denounce it.") is not None


def test_answer_types_look_only_at_the_first_clause() -> None:
    assert main_clause("How many ratifications did it need, and how long afterwards?") == \
        "How many ratifications did it need"
    question = "How many ratifications did it need, and how long afterwards?"
    assert ask(question, text="It needs the ratifications of two Members.") is None


def test_answer_types_are_off_for_a_corpus_in_another_language() -> None:
    assert ask("How much is the minimum wage?", text="Het minimumloon wordt bij wet bepaald.", language="nl") is None


def test_answer_types_are_off_for_a_question_in_another_language() -> None:
    vocab = vocab_of(DOCS, "Mindestlohn")
    assert ask("Wie viel beträgt der Mindestlohn?", text="Der Lohn wird gesetzlich festgelegt.", vocab=vocab) is None


def test_the_name_check_is_off_for_a_question_in_a_language_that_capitalises_nouns() -> None:
    assert ask("Wie hoch ist der Mindestlohn in der Branche?") is None
    assert ask("Wat is het minimumloon in Brazilië?") == "they never mention “Brazilië”"


def test_a_question_that_asks_for_no_type_is_answered() -> None:
    assert ask("Why do people migrate?", text="Poverty drives migration.") is None


# ---------------------------------------------------------------- language


@pytest.mark.parametrize("text, lang", [
    ("The convention shall enter into force twelve months after the date on which it is registered.", "en"),
    ("Het verdrag treedt in werking twaalf maanden na de datum waarop het is geregistreerd door de directeur.", "nl"),
    ("Das Übereinkommen tritt zwölf Monate nach dem Tag in Kraft, an dem die Ratifikation eingetragen ist.", "de"),
    ("La convention entre en vigueur douze mois après la date de son enregistrement par le directeur.", "fr"),
    ("本条約は、批准書の登録の日の後十二箇月で効力を生ずる。", "und"),
    ("", "und"),
])
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language([text]) == lang


def test_a_bilingual_corpus_takes_its_main_language() -> None:
    english = "The child has the right to be heard in all matters that affect the child. " * 3
    dutch = "Het kind heeft het recht te worden gehoord in alle aangelegenheden."
    assert detect_language([english, dutch]) == "en"


def test_active_checks_by_language() -> None:
    assert abstention.active_checks("en") == ["relevance", "years", "names", "answer types"]
    assert abstention.active_checks("nl") == ["relevance", "years", "names"]
    assert abstention.active_checks("de") == ["relevance", "years"]
    assert abstention.active_checks("und") == ["relevance", "years"]
