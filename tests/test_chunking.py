from __future__ import annotations

import pytest

from tqa.chunking import Chunker, sections, sentence_spans
from tqa.config import ChunkSettings
from tqa.loaders import Document, Heading, extract

from .support import CORPUS


def doc(text: str, fmt: str = "txt", **kw) -> Document:
    return Document(source=f"x.{fmt}", text=text, format=fmt, sha256="0", **kw)


def test_inferred_headings_in_default_document():
    d = extract(CORPUS.name + ".txt", next(CORPUS.glob("*.txt")).read_bytes())
    trails = [s.trail for s in sections(d)]
    titles = {t[0] for t in trails if t}
    assert "The United Nations Protocols" in titles
    assert "Case Studies of Effective National Governance" in titles
    assert "Variability in National Policies" in titles
    # The opening note and the list items are not headings.
    assert not any(t.startswith("FYI") or t.startswith("-") for t in titles)
    assert trails[0] == ()  # the introduction comes before any heading
    assert len(titles) == 16


def test_chunks_keep_exact_offsets_and_never_span_sections():
    d = extract("doc.txt", next(CORPUS.glob("*.txt")).read_bytes())
    chunks = Chunker(ChunkSettings(chunk_size=400, chunk_overlap=50)).chunk(d)
    secs = sections(d)
    for c in chunks:
        assert d.text[c.start:c.end] == c.text
        assert any(s.start <= c.start and c.end <= s.end and s.trail == c.section for s in secs)
        assert len(c.text) <= 400
        for a, b in c.sentences:
            assert c.text[a:b].strip() == c.text[a:b] and b > a


def test_heading_line_is_not_in_the_passage_but_is_in_search_text():
    d = doc("Intro line that is long enough to be a paragraph.\nShort Title\nBody text of the section is here.\n")
    [c1, c2] = Chunker().chunk(d)
    assert c1.section == ()
    assert c2.section == ("Short Title",) and c2.text == "Body text of the section is here."
    assert c2.search_text.startswith("Short Title\n")
    assert "Short Title" not in c2.text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("# A\ntext a\n## B\ntext b\n# C\ntext c\n", [("A",), ("A", "B"), ("C",)]),
        ("####Article 1\nThe parties agree.\n####Article 2\nThey also agree.\n", [("Article 1",), ("Article 2",)]),
        ("Title\n=====\n\nbody one\n\nSub\n---\n\nbody two\n", [("Title",), ("Title", "Sub")]),
        ("```\n# not a heading\n```\n# Real\nbody\n", [(), ("Real",)]),
    ],
)
def test_markdown_trails(text, expected):
    assert [s.trail for s in sections(doc(text, "md"))] == expected


def test_html_headings_from_loader():
    text = "Partnerships\n\nNGOs train police.\n\nFunding\n\nMoney is short."
    d = doc(text, "html", headings=(Heading(0, 12, 1), Heading(34, 41, 2)))
    assert [s.trail for s in sections(d)] == [("Partnerships",), ("Partnerships", "Funding")]


def test_pdf_pages_split_sections():
    text = "page one text.\n\npage two text."
    d = doc(text, "pdf", pages=(0, 16))
    chunks = Chunker().chunk(d)
    assert [(c.page, c.text) for c in chunks] == [(1, "page one text."), (2, "page two text.")]


def test_list_items_and_questions_are_not_headings():
    text = "Factors include:\n- Money and capacity\n- Culture\nWhat next?\nA long paragraph follows here.\n"
    assert all(s.trail == () for s in sections(doc(text)))


def test_sentence_spans():
    text = "First one. Second “quoted.” Third?\nFourth"
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == ["First one.", "Second “quoted.”", "Third?", "Fourth"]


def test_html_heading_with_a_line_break_gives_a_one_line_trail():
    # A section trail is shown on one line ("Report > Part one"); a <br> inside a heading must not break it.
    d = extract("a.html", b"<h1>Annual report<br>2023</h1><p>Body text.</p><h2>Part\tone</h2><p>More.</p>")
    assert [s.trail for s in sections(d)] == [("Annual report 2023",), ("Annual report 2023", "Part one")]
