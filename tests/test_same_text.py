"""The same text in several documents (a report kept in the corpus and attached to messages, a form copied into
two folders) is shown once, at its best rank, naming the other documents that hold it, instead of filling the
answer with copies of one passage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tqa import build_index
from tqa.assistant import Assistant
from tqa.cli import main
from tqa.loaders import ATTACHMENT_SEPARATOR as SEP
from tqa.web.render import render_answer

from .format_writers import default_sections, write_eml
from .support import FakeEmbedder

REPORT = ("Shelter capacity in the northern provinces doubled between 2019 and 2023, while the waiting time for "
          "a place fell from six weeks to nine days.")
OTHER = "Volunteer hotlines answer calls at night and refer victims to the nearest shelter."


@pytest.fixture
def qa(tmp_path: Path) -> Assistant:
    corpus = tmp_path / "corpus"
    (corpus / "inbox").mkdir(parents=True)
    (corpus / "report.txt").write_text(REPORT + "\n")
    for n in (1, 2):  # the same report attached to two messages
        (corpus / "inbox" / f"m{n}.eml").write_bytes(
            write_eml(default_sections()[:1], attachments=[("report.txt", (REPORT + "\n").encode(), "text/plain")]))
    (corpus / "copy").mkdir()
    (corpus / "copy" / "report.md").write_text("  " + REPORT.replace(" in the", "  in\nthe") + "\n")  # spacing only
    (corpus / "hotline.txt").write_text(OTHER + "\n")
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    return Assistant.load(tmp_path / "index", embedder=FakeEmbedder())


def _twins() -> set[str]:
    return {"report.txt", f"inbox/m1.eml{SEP}report.txt", f"inbox/m2.eml{SEP}report.txt", "copy/report.md"}


def test_one_passage_for_one_text_naming_the_other_documents(qa: Assistant) -> None:
    answer = qa.ask("waiting time for a shelter place in the northern provinces", k=5)
    shown = [p for p in answer.passages if "waiting time" in p.text]
    assert len(shown) == 1  # not four copies of one passage
    p = shown[0]
    assert {p.source, *p.also_in} == _twins() and p.source not in p.also_in
    assert len(p.also_in) == len(set(p.also_in)) == 3
    assert any("hotline" in q.source for q in answer.passages)  # the room the copies took goes to other passages


def test_hits_say_so_too_and_dedupe_off_keeps_every_copy(qa: Assistant) -> None:
    hits = qa.search("waiting time for a shelter place in the northern provinces", k=10)
    copies = [h for h in hits if "waiting time" in h.text]
    assert len(copies) == 1 and {copies[0].source, *copies[0].also_in} == _twins()
    every = qa.search("waiting time for a shelter place in the northern provinces", k=10, dedupe=False)
    assert {h.source for h in every if "waiting time" in h.text} == _twins()
    assert all(h.also_in == () for h in every)


def test_text_that_differs_in_words_is_not_merged(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(REPORT + "\n")
    (corpus / "b.txt").write_text(REPORT.replace("nine days", "ten days") + "\n")
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    qa = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    passages = qa.ask("waiting time for a shelter place", k=5).passages
    assert {p.source for p in passages} == {"a.txt", "b.txt"} and all(p.also_in == () for p in passages)


def test_cli_json_and_web_name_the_other_documents(qa: Assistant, tmp_path: Path, fake_model, capsys) -> None:
    q = "waiting time for a shelter place in the northern provinces"
    assert main(["ask", q, "-k", "3", "--index", str(tmp_path / "index"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["passages"]
    first = next(p for p in got if "waiting time" in p["text"])
    assert {first["source"], *first["also_in"]} == _twins()
    assert main(["ask", q, "-k", "3", "--index", str(tmp_path / "index")]) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("[")]
    assert sum("report" in line for line in headers) == 1  # one passage for the four copies
    also = next(line for line in out.splitlines() if "same text also in: " in line)
    assert all(src in also for src in _twins() if src not in next(h for h in headers if "report" in h))
    page = render_answer(qa.ask(q, k=3), 1)
    assert "Same text also in" in page and "m2.eml" in page


def test_hostile_names_of_the_other_documents_are_shown_as_text(tmp_path: Path, fake_model, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(REPORT + "\n")
    evil = "<img src=x onerror=alert(1)>.txt"
    (corpus / evil).write_text(REPORT + "\n\n")  # the same text, other bytes: not a duplicate file
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), progress=False)
    qa = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    answer = qa.ask("waiting time for a shelter place", k=3)
    assert {answer.passages[0].source, *answer.passages[0].also_in} == {"a.txt", evil}
    page = render_answer(answer, 1)
    assert "<img" not in page and "&lt;img src=x" in page
    assert main(["ask", "waiting time for a shelter place", "-k", "3", "--index", str(tmp_path / "index")]) == 0
    assert "same text also in: " in capsys.readouterr().out

