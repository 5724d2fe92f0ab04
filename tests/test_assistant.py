from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from tqa import Assistant, build_index
from tqa.assistant import NOT_COVERED
from tqa.errors import BadQuestion
from tqa.loaders import load_file
from tqa.store import load_index


def make_pdf(path: Path, pages: list[list[str]]) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    for lines in pages:
        y = 800
        for line in lines:
            c.drawString(72, y, line)
            y -= 18
        c.showPage()
    c.save()


@pytest.fixture
def all_formats(small_corpus: Path) -> Path:
    make_pdf(small_corpus / "report.pdf", [
        ["Annual report on shelters.", "Shelters gave beds to two hundred survivors."],
        ["Hotlines answered calls at night.", "Volunteers staffed the hotline in three languages."],
    ])
    return small_corpus


@pytest.fixture
def qa(all_formats, tmp_path, fake_embedder) -> Assistant:
    build_index(all_formats, tmp_path / "index", embedder=fake_embedder)
    return Assistant.load(tmp_path / "index", embedder=fake_embedder)


def test_citation_invariant_for_every_format(qa, all_formats):
    data = load_index(qa.index.path.parent)
    formats = set()
    for chunk in data.chunks:
        doc = load_file(all_formats / chunk.source, all_formats)
        formats.add(doc.format)
        assert doc.text[chunk.start:chunk.end] == chunk.text
        if doc.format in ("txt", "md"):
            raw = (all_formats / chunk.source).read_bytes().decode("utf-8-sig")
            assert doc.text == unicodedata.normalize("NFC", raw)
    assert formats == {"txt", "md", "html", "pdf"}
    for question in ("hotline night calls", "Sweden purchase of sex", "NGOs train police", "social media recruit"):
        for p in qa.ask(question, k=10).passages:
            doc = load_file(all_formats / p.source, all_formats)
            assert doc.text[p.start:p.end] == p.text
            assert doc.text[p.highlight_start:p.highlight_end] == p.highlight
            assert p.highlight in p.text and p.start <= p.highlight_start < p.highlight_end <= p.end


def test_pdf_passages_carry_their_page(qa):
    [p] = [p for p in qa.ask("Volunteers staffed the hotline", k=10).passages if p.source == "report.pdf"][:1]
    assert p.page == 2


def test_answer_shape_matches_the_documented_api(qa):
    ans = qa.ask("How does Sweden treat people who buy sex?", k=3)
    assert isinstance(ans.abstained, bool) and len(ans.passages) <= 3
    p = ans.passages[0]
    for attr in ("text", "source", "section", "page", "start", "end", "score", "highlight", "highlight_start",
                 "highlight_end"):
        assert hasattr(p, attr)
    d = ans.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d["passages"][0]) >= {"text", "source", "section", "page", "start", "end", "score", "highlight",
                                     "highlight_start", "highlight_end"}
    assert p.source == "sweden.md" and p.section == "Sweden"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_every_mode_answers(qa, mode):
    ans = qa.ask("Cryptocurrencies make payments hard to trace", mode=mode)
    assert ans.mode == mode and ans.passages[0].source == "tech.txt"


def test_highlight_is_the_sentence_that_matches(qa):
    p = qa.ask("Which payments are hard to trace?", mode="bm25").passages[0]
    assert p.highlight == "Cryptocurrencies make payments hard to trace."


@pytest.mark.parametrize("question", ["", "   ", "\n\t", "\x00\x00"])
def test_empty_questions_are_refused(qa, question):
    with pytest.raises(BadQuestion, match="empty"):
        qa.ask(question)


def test_bad_arguments_are_refused(qa):
    with pytest.raises(BadQuestion, match="mode"):
        qa.ask("shelters", mode="magic")
    with pytest.raises(BadQuestion, match="from 1 to"):
        qa.ask("shelters", k=0)
    with pytest.raises(BadQuestion, match="Not in the index"):
        qa.ask("shelters", sources=["nope.txt"])


def test_long_questions_are_truncated_with_a_warning(qa):
    ans = qa.ask("shelters " * 5000)
    assert ans.warnings and len(ans.question) <= qa.settings.max_question_chars


def test_nfc_and_nfd_questions_get_the_same_answer(qa):
    q = "Café réfugiés shelters for survivors"
    a = qa.ask(unicodedata.normalize("NFC", q)).to_dict()
    b = qa.ask(unicodedata.normalize("NFD", q)).to_dict()
    assert a == b


def test_more_passages_than_chunks_never_pads_with_minus_one(qa):
    from tqa.config import MAX_K

    n = len(qa.index.chunks)
    assert n < MAX_K
    ans = qa.ask("shelters", k=MAX_K, mode="dense")
    rows = [(p.source, p.start) for p in ans.passages]
    assert len(rows) == len(set(rows)) <= n


def test_source_filter(qa):
    ans = qa.ask("victims", k=10, sources=["tech.txt"])
    assert ans.passages and {p.source for p in ans.passages} == {"tech.txt"}


def test_overlapping_passages_are_not_shown_twice(tmp_path, fake_embedder):
    from tqa.config import ChunkSettings

    corpus = tmp_path / "c"
    corpus.mkdir()
    sentences = " ".join(f"Sentence {i} talks about shelters and survivors number {i}." for i in range(40))
    (corpus / "long.txt").write_text(sentences)
    build_index(corpus, tmp_path / "i", embedder=fake_embedder, chunking=ChunkSettings(200, 100))
    qa = Assistant.load(tmp_path / "i", embedder=fake_embedder)
    assert len(qa.index.chunks) > 5
    ps = qa.ask("shelters and survivors", k=10).passages
    for i, a in enumerate(ps):
        for b in ps[i + 1:]:
            assert a.end <= b.start or b.end <= a.start


def test_abstains_below_the_threshold(qa):
    from dataclasses import replace

    strict = Assistant(qa.index, qa.embedder, replace(qa.settings, abstain_threshold=1.01))
    ans = strict.ask("Sweden purchase of sex")
    assert ans.abstained and ans.message == NOT_COVERED and ans.best is None
    lenient = Assistant(qa.index, qa.embedder, replace(qa.settings, abstain_threshold=-1.0))
    assert not lenient.ask("Sweden purchase of sex").abstained


def test_context_returns_the_section_around_a_passage(qa):
    p = qa.ask("Trafficking for sexual exploitation fell after the law", mode="bm25").passages[0]
    ctx = qa.context(p.source, p.start, p.end)
    assert ctx["section"] == p.section == "Sweden > Results"
    assert ctx["text"][ctx["passage_start"]:ctx["passage_end"]] == p.text


def test_add_documents_indexes_them_incrementally(qa):
    summary = qa.add_documents([("../evil/Hotlines.md", b"# Hotlines\n\nThe zebra hotline answers in Swahili.\n")])
    assert summary.files_added == ["uploads/Hotlines.md"] and summary.chunks_embedded == 1
    assert qa.ask("zebra hotline Swahili", mode="bm25").passages[0].source == "uploads/Hotlines.md"
    with pytest.raises(BadQuestion, match="only"):
        qa.add_documents([("tool.exe", b"MZ")])
    with pytest.raises(BadQuestion, match="limit"):
        qa.add_documents([("big.txt", b"x" * 100)], max_bytes=10)


def test_add_documents_reports_progress(qa):
    seen = []
    qa.add_documents([("Shelters.md", b"# Shelters\n\nThe okapi shelter opens at night.\n")],
                     on_progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert seen and all(0 <= done <= total for _, done, total in seen)
    assert qa.ask("okapi shelter", mode="bm25").passages[0].source == "uploads/Shelters.md"


def test_uploads_never_overwrite_and_skipped_ones_are_not_kept(qa):
    corpus = Path(qa.manifest.corpus)
    qa.add_documents([("notes.md", b"# Notes\n\nThe first notes mention walruses.\n")])
    qa.add_documents([("notes.md", b"# Notes\n\nOther notes mention narwhals.\n")])
    assert (corpus / "uploads" / "notes.md").read_bytes().endswith(b"walruses.\n")
    assert (corpus / "uploads" / "notes-2.md").read_bytes().endswith(b"narwhals.\n")
    s = qa.add_documents([("empty.md", b"")])
    assert any(d["path"] == "uploads/empty.md" for d in s.skipped)
    assert not (corpus / "uploads" / "empty.md").exists()
