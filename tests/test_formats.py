"""Every format tqa reads, written at test time by the format's own writer from the default document split into
its sections: exact offsets, the section trail the writer put there, pages and slides, metadata, and the same
question finding the same section in every format."""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter

import pytest

from tqa.chunking import Chunk, Chunker
from tqa.loaders import ATTACHMENT_SEPARATOR, Document, SkipFile, extract, load_source

from .format_writers import (
    INTRO,
    NOTE,
    SUBJECT,
    default_sections,
    write_docx,
    write_eml,
    write_epub,
    write_html_eml,
    write_odt,
    write_pptx,
    write_rtf,
)

SECTIONS = default_sections()
WRITERS = {
    "report.docx": write_docx,
    "deck.pptx": write_pptx,
    "report.odt": write_odt,
    "book.epub": write_epub,
    "report.rtf": write_rtf,
    "message.eml": write_html_eml,
}


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def expected_trail(source: str, title: str | None) -> tuple[str, ...]:
    """The trail the writer put over a section's text, in each format."""
    if source.endswith(".eml"):
        return (SUBJECT, title) if title else (SUBJECT,)
    if source.endswith(".epub"):
        return (title or INTRO,)  # the intro chapter is headed by its table-of-contents entry
    return (title,) if title else ()


def section_of(chunk: Chunk) -> int:
    """Index of the default document's section whose paragraphs hold the chunk's text."""
    body = chunk.text.replace(f"Notes:\n{NOTE}", "").strip()
    if not body and chunk.page_unit == "slide":  # a slide's notes cut off from its text: the slide tells
        assert chunk.page is not None
        return chunk.page - 1
    head = " ".join(body.split())[:80]
    found = [i for i, s in enumerate(SECTIONS) if head in " ".join(" ".join(s.paragraphs).split())]
    assert len(found) == 1, (head, found)
    return found[0]


@pytest.fixture(scope="module", params=sorted(WRITERS))
def written(request: pytest.FixtureRequest) -> tuple[str, Document, list[Chunk]]:
    source = request.param
    doc = extract(source, WRITERS[source](SECTIONS))
    return source, doc, Chunker().chunk(doc)


def test_offsets_are_exact(written) -> None:
    _, doc, chunks = written
    assert chunks
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text


def test_every_chunk_sits_under_the_heading_the_writer_put_there(written) -> None:
    source, _, chunks = written
    seen = set()
    for c in chunks:
        i = section_of(c)
        seen.add(i)
        assert c.section == expected_trail(source, SECTIONS[i].title), (source, c.text[:60])
    assert seen == set(range(len(SECTIONS)))  # no section lost


def test_all_the_words_are_there_once(written) -> None:
    source, doc, _ = written
    want = Counter(w for s in SECTIONS for p in ((s.title or ""), *s.paragraphs) for w in words(p))
    got = Counter(words(doc.text))
    if source.endswith(".pptx"):  # each slide's notes add one sentence and the "Notes" mark
        got -= Counter(words(NOTE) * len(SECTIONS) + ["notes"] * len(SECTIONS))
    if source.endswith(".epub"):
        got -= Counter(words(INTRO))
    if source.endswith(".eml"):
        got -= Counter(words(SUBJECT))
    assert got == want


def test_comments_footnotes_and_notes_stay_out_of_the_body(written) -> None:
    source, doc, chunks = written
    if source.endswith(".pptx"):  # speaker notes are read, after the slide's text and marked as notes
        for c in chunks:
            if NOTE in c.text:
                assert f"Notes:\n{NOTE}" in c.text
        assert doc.text.count(f"Notes:\n{NOTE}") == len(SECTIONS)
    else:
        assert NOTE not in doc.text


def test_the_docx_comment_and_the_odt_footnote_were_written() -> None:
    # The test above can only fail if the writers really put a comment and a footnote in the files.
    with zipfile.ZipFile(io.BytesIO(write_docx(SECTIONS))) as z:
        assert NOTE in z.read("word/comments.xml").decode()
    with zipfile.ZipFile(io.BytesIO(write_odt(SECTIONS))) as z:
        content = z.read("content.xml").decode()
        assert "text:note" in content and NOTE in content


def test_slides_are_pages_and_their_titles_sections() -> None:
    doc = extract("deck.pptx", write_pptx(SECTIONS))
    assert doc.page_unit == "slide"
    assert len(doc.pages) == len(SECTIONS)
    chunks = Chunker().chunk(doc)
    for c in chunks:
        assert c.page == section_of(c) + 1
        assert c.page_unit == "slide" and not c.ocr
        assert doc.page_at(c.start) == c.page
    # the untitled first slide is not filed under anything, nor is a later slide under an earlier title
    assert [c.section for c in chunks if c.page == 1] == [()] * len([c for c in chunks if c.page == 1])


def test_word_tables_read_as_rows_of_cells() -> None:
    import docx

    d = docx.Document()
    d.add_heading("Shelters", 1)
    t = d.add_table(rows=3, cols=3)
    for r, row in enumerate([("Country", "Beds", "Share"), ("Spain", "340", "88%"), ("Chile", "", "12%")]):
        for c, value in enumerate(row):
            t.rows[r].cells[c].text = value
    merged = d.add_table(rows=1, cols=3)
    merged.rows[0].cells[0].merge(merged.rows[0].cells[1]).text = "Merged"
    merged.rows[0].cells[2].text = "Last"
    d.add_paragraph("After the table.")
    buf = io.BytesIO()
    d.save(buf)
    doc = extract("t.docx", buf.getvalue())
    assert doc.text == ("Shelters\n\nCountry | Beds | Share\nSpain | 340 | 88%\nChile | 12%\n\nMerged | Last"
                        "\n\nAfter the table.")
    [c] = Chunker().chunk(doc)
    assert c.section == ("Shelters",)


def test_word_outline_levels_and_styles_based_on_headings() -> None:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    d = docx.Document()
    custom = d.styles.add_style("Chapter Title", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = d.styles["Heading 1"]
    d.add_paragraph("Part one", style="Chapter Title")  # a heading by the style it is based on
    d.add_paragraph("Body of part one.")
    p = d.add_paragraph("Outlined")  # a heading by its own outline level (level 2)
    lvl = OxmlElement("w:outlineLvl")
    lvl.set(qn("w:val"), "1")
    p._p.get_or_add_pPr().append(lvl)
    d.add_paragraph("Body under the outline level.")
    buf = io.BytesIO()
    d.save(buf)
    chunks = Chunker().chunk(extract("o.docx", buf.getvalue()))
    assert [(c.section, c.text) for c in chunks] == [
        (("Part one",), "Body of part one."),
        (("Part one", "Outlined"), "Body under the outline level."),
    ]


def test_word_tracked_changes_keep_insertions_and_drop_deletions() -> None:
    import docx
    from docx.oxml import parse_xml

    d = docx.Document()
    p = d.add_paragraph("Kept ")
    w = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    p._p.append(parse_xml(f'<w:ins {w} w:id="1" w:author="a"><w:r><w:t>inserted </w:t></w:r></w:ins>'))
    p._p.append(parse_xml(f'<w:del {w} w:id="2" w:author="a"><w:r><w:delText>deleted </w:delText></w:r></w:del>'))
    p.add_run("end.")
    buf = io.BytesIO()
    d.save(buf)
    assert extract("c.docx", buf.getvalue()).text == "Kept inserted end."


def test_metadata_is_kept_apart_from_the_text() -> None:
    doc = extract("message.eml", write_eml(SECTIONS))
    assert doc.metadata["from"] == "Anna de Vries <anna@example.org>"
    assert doc.metadata["date"] == "2024-03-05T10:15:00+01:00"
    assert doc.metadata["subject"] == SUBJECT
    assert "anna@example.org" not in doc.text
    assert doc.text.startswith(SUBJECT + "\n\n")
    assert doc.headings[0].level == 1 and doc.text[doc.headings[0].start:doc.headings[0].end] == SUBJECT
    book = extract("book.epub", write_epub(SECTIONS))
    assert book.metadata["title"] == "Global governance and human trafficking"
    assert book.metadata["author"] == "tqa tests"


def test_plain_text_mail_body_is_preferred_and_kept_as_written() -> None:
    doc = extract("message.eml", write_eml(SECTIONS))
    for sec in SECTIONS:
        for para in sec.paragraphs:
            assert para in doc.text
    assert "<p>" not in doc.text
    assert all(c.section == (SUBJECT,) for c in Chunker().chunk(doc))


def score(question: str, chunk: Chunk) -> float:
    """Plain term overlap, idf-free: enough to tell the sections apart on distinctive words."""
    q = set(words(question)) - {"the", "of", "and", "in", "a", "to", "how", "what", "do", "does"}
    return sum(1 for w in words(chunk.text) if w in q) / (1 + len(chunk.text) / 1000)


QUESTIONS = [
    "How do awareness campaigns and advocacy work?",
    "What do NGOs gain from partnership with governments?",
    "Do traffickers use social media, online marketplaces and cryptocurrencies?",
    "How did globalization change trafficking trends?",
    "What did the United Nations protocols establish?",
    "What role does civil society play in strengthening governance?",
]


def test_the_same_question_finds_the_same_section_in_every_format() -> None:
    txt = next(iter(default_sections_source()))
    base = {q: max(Chunker().chunk(txt), key=lambda c: score(q, c)).section[-1] for q in QUESTIONS}
    assert len(set(base.values())) == len(QUESTIONS)  # the questions point at different sections
    for source, write in WRITERS.items():
        chunks = Chunker().chunk(extract(source, write(SECTIONS)))
        for q in QUESTIONS:
            best = max(chunks, key=lambda c: score(q, c))
            assert best.section[-1] == base[q], (source, q)


def default_sections_source() -> list[Document]:
    from .support import CORPUS

    path = next(CORPUS.glob("*.txt"))
    return [extract(path.name, path.read_bytes())]


# --- e-mail attachments


def test_attachments_become_documents_of_their_own() -> None:
    from .test_loaders import make_pdf

    pdf = make_pdf([["Shelter beds in Spain"], ["Hotline calls at night"]])
    data = write_eml(SECTIONS[:2], attachments=[
        ("figures.pdf", pdf, "application/pdf"),
        ("notes.txt", b"Plain notes about funding.", "text/plain"),
        ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image/png"),
        ("../../etc/passwd \u203a x.txt", b"A hostile name.", "text/plain"),
    ])
    doc = extract("inbox/message.eml", data)
    names = [a.source for a in doc.attachments]
    assert names == [f"inbox/message.eml{ATTACHMENT_SEPARATOR}figures.pdf",
                     f"inbox/message.eml{ATTACHMENT_SEPARATOR}notes.txt",
                     f"inbox/message.eml{ATTACHMENT_SEPARATOR}_.._etc_passwd _ x.txt"]
    pdf_doc = doc.attachments[0]
    assert pdf_doc.format == "pdf" and len(pdf_doc.pages) == 2
    assert pdf_doc.page_at(pdf_doc.text.index("Hotline")) == 2
    assert [(s.path.rsplit(ATTACHMENT_SEPARATOR, 1)[1], s.reason) for s in doc.skipped] == [
        ("photo.png", "unsupported file type .png")]
    assert "Shelter" not in doc.text  # an attachment's text is its own document's, not the message's
    assert [d.source for d in doc.walk()] == ["inbox/message.eml", *names]
    round_trip = Document.from_dict(doc.to_dict())
    assert round_trip == doc and round_trip.attachments[0].pages == pdf_doc.pages


def test_an_attachment_is_loaded_by_its_source(tmp_path) -> None:
    data = write_eml(SECTIONS[:1], attachments=[("notes.txt", b"Plain notes about funding.", "text/plain")])
    (tmp_path / "m.eml").write_bytes(data)
    doc = load_source(f"m.eml{ATTACHMENT_SEPARATOR}notes.txt", tmp_path)
    assert doc.text == "Plain notes about funding."
    with pytest.raises(SkipFile, match="no such attachment"):
        load_source(f"m.eml{ATTACHMENT_SEPARATOR}other.txt", tmp_path)


def test_old_chunk_tables_without_the_new_fields_still_load() -> None:
    old = {"source": "a.pdf", "start": 0, "end": 4, "text": "abcd", "section": ["S"], "page": 2,
           "sentences": [[0, 4]], "units": []}
    c = Chunk.from_dict(old)
    assert (c.ocr, c.page_unit, c.page) == (False, "page", 2)
    assert Chunk.from_dict(c.to_dict()) == c
    new = Chunk("d.pptx", 0, 4, "abcd", ("T",), 3, ocr=True, page_unit="slide")
    assert Chunk.from_dict(new.to_dict()) == new
    old_doc = {"source": "a.txt", "text": "x", "format": "txt", "sha256": "0", "pages": [], "headings": [],
               "warnings": []}
    assert Document.from_dict(old_doc) == Document("a.txt", "x", "txt", "0")


# --- the same through a built index: what a reader is given


@pytest.fixture(scope="module")
def format_index(tmp_path_factory: pytest.TempPathFactory):
    """Every format's file of the default document (and a PDF with a text layer) in one corpus, indexed."""
    from tqa import Assistant, build_index

    from .format_writers import write_pdf_text
    from .support import FakeEmbedder

    root = tmp_path_factory.mktemp("formats")
    corpus = root / "corpus"
    corpus.mkdir()
    for source, write in WRITERS.items():
        (corpus / source).write_bytes(write(SECTIONS))
    pdf, page_texts = write_pdf_text(SECTIONS)
    (corpus / "report.pdf").write_bytes(pdf)
    summary = build_index(corpus, root / "index", embedder=FakeEmbedder(), progress=False)
    assert summary.skipped == [] and len(summary.files_added) == len(WRITERS) + 1
    return Assistant.load(root / "index", embedder=FakeEmbedder()), page_texts


def test_every_passage_of_every_format_quotes_its_document_under_the_writers_heading(format_index) -> None:
    qa, page_texts = format_index
    texts = dict(qa.documents())
    for source in [*WRITERS, "report.pdf"]:
        hits = qa.search("governance trafficking partnership technology", k=200, mode="bm25", sources=[source],
                         dedupe=False)
        assert hits, source
        for h in hits:
            assert texts[source][h.start:h.end] == h.text  # the citation invariant
            if source == "report.pdf":  # the page whose text holds the passage's first line
                first = h.text.strip().splitlines()[0]
                assert first in page_texts[h.page - 1], (h.page, first)
                continue
            chunk = Chunk(h.source, h.start, h.end, h.text, tuple(h.section.split(" > ")) if h.section else (),
                          h.page, page_unit=h.page_unit)
            i = section_of(chunk)
            assert h.section == " > ".join(expected_trail(source, SECTIONS[i].title)), (source, h.text[:60])
            if source.endswith(".pptx"):
                assert (h.page_unit, h.page) == ("slide", i + 1)


def test_the_same_question_cites_the_same_section_in_every_format_of_an_index(format_index) -> None:
    qa, _ = format_index
    txt = default_sections_source()[0]
    base = {q: max(Chunker().chunk(txt), key=lambda c: score(q, c)).section[-1] for q in QUESTIONS}
    for source in WRITERS:
        for q in QUESTIONS:
            best = qa.ask(q, k=1, mode="bm25", sources=[source]).passages[0]
            assert best.section_path[-1] == base[q], (source, q, best.section)
