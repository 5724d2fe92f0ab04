"""The assistant abstains through tqa.abstention, and only there: the misfires of surface-word checks on
answerable questions, strong evidence against weak, the English-only check off for other languages, and what
`tqa info` says is active."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import tqa.abstention as abstention
from tqa import build_index
from tqa.assistant import Assistant
from tqa.config import Settings
from tqa.manifest import Calibration
from tqa.store import current_generation, load_index

from .index_helpers import cli
from .support import FakeEmbedder

ENGLISH = {
    "usa.md": "# Federal law\n\nThe United States passed the Trafficking Victims Protection Act, whose three pillars "
              "are prevention, protection and prosecution of traffickers.\n",
    "partners.md": "# Partnerships\n\nIn a partnership, NGOs bring trust with victims and knowledge of their "
                   "communities, while governments bring funding and law enforcement.\n",
    "sweden.md": "# Sweden\n\nSweden criminalises the purchase of sex rather than its sale, and trafficking for "
                 "sexual exploitation fell after the law was passed.\n",
}
DUTCH = {
    "verdrag.md": "# Het Verdrag\n\nDe Staten die partij zijn bij het Verdrag werken samen om de smokkel van "
                  "migranten te voorkomen en te bestrijden, en zij beschermen de rechten van de migranten die "
                  "het voorwerp zijn geweest van die smokkel.\n",
    "kinderen.md": "# Kinderen\n\nElk kind heeft recht op onderwijs en op bescherming tegen elke vorm van "
                   "uitbuiting, en de Staten nemen daartoe de nodige maatregelen in hun wetgeving.\n",
}


def _index(tmp_path: Path, docs: dict[str, str], name: str = "c") -> Path:
    corpus = tmp_path / name
    corpus.mkdir()
    for file, text in docs.items():
        (corpus / file).write_text(text, encoding="utf-8")
    index = tmp_path / f"{name}-index"
    build_index(corpus, index, embedder=FakeEmbedder())
    return index


@pytest.fixture(scope="module")
def english(tmp_path_factory) -> Path:
    return _index(tmp_path_factory.mktemp("en"), ENGLISH)


@pytest.fixture(scope="module")
def dutch(tmp_path_factory) -> Path:
    return _index(tmp_path_factory.mktemp("nl"), DUTCH)


CALIBRATED = 0.2  # the fake embedder's probes score high on a corpus this small: the calibration is set here


def _qa(index: Path, **settings) -> Assistant:
    qa = Assistant.load(index, embedder=FakeEmbedder(), settings=Settings(**settings))
    m = qa.index.manifest
    qa.index.manifest = dataclasses.replace(m, calibration=Calibration(abstain_threshold=CALIBRATED))
    return qa


def test_a_demonym_of_a_place_the_documents_spell_otherwise_does_not_abstain(english):
    answer = _qa(english).ask("What three pillars does the American anti-trafficking statute stress?")
    assert answer.relevance is not None and answer.relevance >= answer.threshold
    assert not answer.abstained, answer.abstain_reason
    assert answer.passages[0].source == "usa.md"


def test_a_hyphenated_compound_whose_parts_are_both_in_the_text_does_not_abstain(english):
    answer = _qa(english).ask("What does each side bring to an NGO-government partnership?")
    assert not answer.abstained, answer.abstain_reason
    assert answer.passages[0].source == "partners.md"


def test_a_name_none_of_the_documents_use_still_abstains(english):
    answer = _qa(english).ask("What does Brazil criminalise about the purchase of sex?")
    assert answer.abstained and answer.abstain_reason == "they never mention “Brazil”"


def test_an_unknown_adjective_abstains_on_weak_evidence_and_not_on_strong(english):
    qa = _qa(english)
    strong = qa.ask("Sweden criminalises the purchase of sex rather than its sale, and Nordic trafficking for "
                    "sexual exploitation fell after the law was passed?")
    weak = qa.ask("Is the Nordic law about sex purchase?")
    level = abstention.strong_level(qa.index.threshold)
    assert strong.relevance is not None and strong.relevance >= level
    assert not strong.abstained, strong.abstain_reason
    assert weak.relevance is not None and qa.index.threshold <= weak.relevance < level
    assert weak.abstained and weak.abstain_reason == "they never mention “Nordic”"


def test_strong_evidence_is_measured_from_the_calibrated_threshold_not_a_readers_override(english):
    # a reader who turns the relevance check off (threshold -1) does not make every passage strong evidence
    answer = _qa(english, abstain_threshold=-1.0).ask("Is the Nordic law about sex purchase?")
    assert answer.abstained and answer.abstain_reason == "they never mention “Nordic”"


def test_the_english_answer_type_check_is_off_for_documents_in_another_language(dutch, english):
    question = "How many Staten are partij bij het Verdrag over smokkel van migranten?"
    nl = _qa(dutch).ask(question)
    assert nl.relevance is not None and nl.relevance >= nl.threshold
    assert not nl.abstained, nl.abstain_reason
    # the same check is on for English documents: a length of time asked for and none in the best sentences
    en = _qa(english).ask("How many years ago did Sweden criminalise the purchase of sex?")
    assert en.relevance is not None and en.relevance >= en.threshold
    assert en.abstained and en.abstain_reason == "the closest passages give no length of time"


def test_the_language_is_recorded_at_build_time_and_detected_for_an_older_index(english, dutch):
    assert load_index(english).manifest.language == "en"
    assert load_index(dutch).manifest.language == "nl"
    index = load_index(dutch)
    older = dataclasses.replace(index.manifest, language=None)
    index.manifest = older
    assert index.language == "nl"  # detected from the chunks, as the build would have recorded it


def test_the_assistant_has_no_second_copy_of_the_checks():
    import tqa.assistant
    import tqa.retrieval

    for module in (tqa.assistant, tqa.retrieval):
        for name in ("coverage_gap", "unknown_names", "_ASKS_FOR_FIGURE", "_FIGURE"):
            assert not hasattr(module, name), f"{module.__name__}.{name}"


def test_the_assistant_abstains_through_tqa_abstention(english, monkeypatch):
    seen = []
    real = abstention.check

    def spy(question, passages, vocab, **kw):
        seen.append((question, kw["language"]))
        return real(question, passages, vocab, **kw)

    monkeypatch.setattr(abstention, "check", spy)
    _qa(english).ask("What does each side bring to a partnership?")
    assert seen == [("What does each side bring to a partnership?", "en")]


def test_info_says_which_checks_are_active(english, dutch):
    en = cli("info", "--index", str(english))
    assert en.returncode == 0, en.stderr
    assert "abstention: relevance, years, names, answer types (documents' language: en)" in en.stdout
    nl = cli("info", "--index", str(dutch))
    assert "abstention: relevance, years, names (documents' language: nl)" in nl.stdout
    assert _qa(dutch).info()["abstention_checks"] == ["relevance", "years", "names"]


def test_info_of_an_index_built_before_the_language_was_recorded(tmp_path):
    index = _index(tmp_path, ENGLISH)
    gen = current_generation(index)
    assert gen is not None
    manifest = json.loads((gen / "manifest.json").read_text(encoding="utf-8"))
    del manifest["language"]
    from tqa.manifest import MANIFEST_SHA, manifest_digest

    manifest[MANIFEST_SHA] = manifest_digest(manifest)
    (gen / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    out = cli("info", "--index", str(index))
    assert out.returncode == 0, out.stderr
    assert "detected when the index is loaded" in out.stdout
    assert _qa(index).info()["abstention_checks"] == ["relevance", "years", "names", "answer types"]
