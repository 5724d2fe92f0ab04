from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import random
import threading
import unicodedata
from pathlib import Path

import pytest

from tqa.errors import CorpusError, TqaError
from tqa.loaders import (
    DEFAULT_MAX_BYTES,
    SUPPORTED,
    Document,
    Heading,
    SkipFile,
    Skipped,
    discover,
    extract,
    load_file,
)

needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="needs POSIX symlinks")


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def skip_reason(source: str, data: bytes) -> str:
    with pytest.raises(SkipFile) as info:
        extract(source, data)
    return str(info.value)


# --- constants


def test_public_constants() -> None:
    assert DEFAULT_MAX_BYTES == 50 * 1024 * 1024
    assert SUPPORTED == {
        ".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md",
        ".html": "html", ".htm": "html", ".pdf": "pdf", ".docx": "docx", ".pptx": "pptx", ".odt": "odt",
        ".epub": "epub", ".rtf": "rtf", ".eml": "eml",
    }  # fmt: skip
    assert not issubclass(SkipFile, TqaError)
    assert issubclass(CorpusError, TqaError)


# --- decoding

NFD_CAFE = unicodedata.normalize("NFD", "café")
WORLD = "Grüße 世界\n"
CRLF = "one\r\ntwo\r\n\r\n  indented\t\n"


@pytest.mark.parametrize(
    ("data", "text", "warnings"),
    [
        pytest.param("Grüße, 世界\n".encode(), "Grüße, 世界\n", (), id="utf8"),
        pytest.param(codecs.BOM_UTF8 + "Grüße\n".encode(), "Grüße\n", (), id="utf8-bom-removed"),
        pytest.param(codecs.BOM_UTF16_LE + WORLD.encode("utf-16-le"), WORLD, (), id="utf16le-bom"),
        pytest.param(codecs.BOM_UTF16_BE + WORLD.encode("utf-16-be"), WORLD, (), id="utf16be-bom"),
        pytest.param(
            "“smart” quotes \u2013 café €5".encode("cp1252"),
            "“smart” quotes \u2013 café €5",
            ("decoded as cp1252 (not valid UTF-8)",),
            id="cp1252-fallback",
        ),
        pytest.param(
            b"caf\xe9 au lait \x81",  # 0x81 is undefined in cp1252
            "café au lait \x81",
            ("decoded as latin-1 (not valid UTF-8)",),
            id="latin1-last-resort",
        ),
        pytest.param(NFD_CAFE.encode(), "café", (), id="nfd-to-nfc"),
        pytest.param(CRLF.encode(), CRLF, (), id="crlf-kept"),
    ],
)
@pytest.mark.parametrize("ext", [".txt", ".md"])
def test_text_decoding(ext: str, data: bytes, text: str, warnings: tuple[str, ...]) -> None:
    doc = extract("dir/file" + ext, data)
    assert doc.text == text
    assert doc.warnings == warnings
    assert doc.format == SUPPORTED[ext]
    assert doc.source == "dir/file" + ext
    assert doc.sha256 == hashlib.sha256(data).hexdigest()
    assert doc.pages == () and doc.headings == ()
    assert unicodedata.is_normalized("NFC", doc.text)


def test_nfd_really_changes_length() -> None:
    # guards the NFC test above: the input is longer than the output
    doc = extract("a.txt", NFD_CAFE.encode())
    assert len(NFD_CAFE) == 5 and len(doc.text) == 4


def test_markdown_is_kept_raw() -> None:
    src = "# Title\r\n\r\nSome *emphasis* and [a link](http://x).\r\n\r\n```\ncode\n```\n"
    doc = extract("notes/readme.MD", src.encode())
    assert doc.text == src
    assert doc.format == "md"
    assert doc.headings == ()


@pytest.mark.parametrize(
    ("source", "data", "reason"),
    [
        pytest.param("a.txt", b"", "empty file", id="empty"),
        pytest.param("a.md", b" \r\n\t\n  ", "empty file", id="whitespace-only"),
        pytest.param("a.txt", codecs.BOM_UTF8 + b"\n\n", "empty file", id="bom-and-newlines"),
        pytest.param("a.html", b"   \n", "empty file", id="html-whitespace"),
        pytest.param("a.pdf", b"", "empty file", id="empty-pdf"),
        pytest.param("a.txt", b"mostly ordinary text, but one \x00 byte", "binary content", id="nul-byte"),
        pytest.param("a.html", b"<p>ordinary paragraph</p>\x00", "binary content", id="nul-in-html"),
        pytest.param("a.md", "hello".encode("utf-16-le"), "binary content", id="utf16-without-bom"),
        pytest.param("a.txt", b"ab\x01\x02\x03\x04\x05\x06cd", "binary content", id="control-chars"),
        pytest.param("a.xlsx", b"PK\x03\x04", "unsupported file type .xlsx", id="unsupported"),
        pytest.param("Makefile", b"all:", "unsupported file type (no extension)", id="no-extension"),
        pytest.param("a.html", b"<script>x()</script>", "HTML has no readable text", id="html-no-text"),
    ],
)
def test_skip_reasons(source: str, data: bytes, reason: str) -> None:
    assert skip_reason(source, data) == reason


def test_few_control_chars_are_not_binary() -> None:
    data = b"page one\x0cpage two with a form feed and a \x1b escape among many normal characters"
    assert extract("a.txt", data).text == data.decode()


def test_invalid_utf16_is_undecodable() -> None:
    reason = skip_reason("a.txt", codecs.BOM_UTF16_LE + b"a\x00\x00\xd8")  # lone high surrogate
    assert reason.startswith("could not decode text")


# --- HTML

HTML_PAGE = """<!DOCTYPE html>
<html><head><title>Page title</title>
<style>p { color: red }</style>
<script>var secret = "SCRIPTTEXT" < 3;</script></head>
<body>
  <nav><a href="/">Home</a></nav>
  <h1>  The   <em>Main</em>
      Title </h1>
  <p>First &amp; only   paragraph
     spans lines &lt;ok&gt; &eacute;t&eacute; &#8364;5.</p>
  <p>Second paragraph<br>second line</p>
  <h2>Lists</h2>
  <ul><li>one</li><li>two</li></ul>
  <noscript>NOSCRIPTTEXT</noscript>
  <template><p>TEMPLATETEXT</p></template>
  <h3>Caf\u00e9 e\u0301tude</h3>
  <pre>
  x = 1
    y = 2
</pre>
  <script>document.write("MORESCRIPT")</script>
</body></html>
"""


@pytest.fixture
def html_doc() -> Document:
    return extract("site/page.html", HTML_PAGE.encode())


def test_html_text(html_doc: Document) -> None:
    assert html_doc.text == (  # the <nav> is page furniture, left out
        "The Main Title\n\n"
        "First & only paragraph spans lines <ok> été €5.\n\n"
        "Second paragraph\nsecond line\n\n"
        "Lists\n\n"
        "one\ntwo\n\n"
        "Café étude\n\n"
        "  x = 1\n    y = 2"
    )
    assert html_doc.format == "html"
    assert html_doc.warnings == ()


@pytest.mark.parametrize(
    "hidden", ["SCRIPTTEXT", "MORESCRIPT", "color", "Page title", "NOSCRIPTTEXT", "TEMPLATETEXT"]
)
def test_html_hidden_content_removed(html_doc: Document, hidden: str) -> None:
    assert hidden not in html_doc.text


def test_html_headings_exact_spans(html_doc: Document) -> None:
    found = [(html_doc.text[h.start : h.end], h.level) for h in html_doc.headings]
    assert found == [("The Main Title", 1), ("Lists", 2), ("Café étude", 3)]
    assert all(isinstance(h, Heading) for h in html_doc.headings)
    assert unicodedata.is_normalized("NFC", html_doc.text)


def test_html_nfc_across_tags_keeps_spans() -> None:
    # the combining accent is in a different text chunk than its base letter
    doc = extract("a.html", "<p>x</p><h2>Caf<b>e</b>\u0301 time</h2><p>after</p>".encode())
    assert doc.text == "x\n\nCafé time\n\nafter"
    [h] = doc.headings
    assert doc.text[h.start : h.end] == "Café time" and h.level == 2


def test_html_unclosed_head_and_paragraphs() -> None:
    doc = extract("a.htm", b"<head><title>T</title><meta charset=utf-8><p>one<p>two<h4>four</h4>tail")
    assert doc.text == "one\n\ntwo\n\nfour\n\ntail"
    [h] = doc.headings
    assert (doc.text[h.start : h.end], h.level) == ("four", 4)


def test_html_nbsp_is_not_collapsed() -> None:
    assert extract("a.html", b"<p>a&nbsp;&nbsp;b   c</p>").text == "a\u00a0\u00a0b c"


def test_html_meta_charset_used_when_not_utf8() -> None:
    body = '<html><head><meta charset="shift_jis"></head><body><p>日本語のテキスト</p></body></html>'
    doc = extract("jp.html", body.encode("shift_jis"))
    assert doc.text == "日本語のテキスト"
    assert doc.warnings and "shift_jis" in doc.warnings[0]


def test_html_cp1252_fallback_warns() -> None:
    doc = extract("a.html", "<p>“quoted” café</p>".encode("cp1252"))
    assert doc.text == "“quoted” café"
    assert doc.warnings == ("decoded as cp1252 (not valid UTF-8)",)


# --- PDF


def make_pdf(pages: list[list[str]], **canvas_kwargs: object) -> bytes:
    """Build a PDF: one list of text lines per page; an empty list gives a page with a drawing but no text."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, **canvas_kwargs)
    for lines in pages:
        if not lines:
            c.rect(100, 100, 200, 200, fill=1)
        for i, line in enumerate(lines):
            c.drawString(72, 750 - 20 * i, line)
        c.showPage()
    c.save()
    return buf.getvalue()


PDF_PAGES = [
    ["alpha bravo charlie", "second line of page one"],
    ["delta echo foxtrot"],
    ["golf hotel india"],
]


@pytest.fixture
def pdf_doc() -> Document:
    return extract("papers/report.PDF", make_pdf(PDF_PAGES))


def test_pdf_pages_and_offsets(pdf_doc: Document) -> None:
    doc = pdf_doc
    assert doc.format == "pdf"
    assert len(doc.pages) == 3 and doc.pages[0] == 0
    assert list(doc.pages) == sorted(doc.pages)
    bounds = [*doc.pages, len(doc.text) + 2]
    for i, words in enumerate(PDF_PAGES):
        page_text = doc.text[bounds[i] : bounds[i + 1] - 2]
        assert page_text == page_text.rstrip()
        for word in " ".join(words).split():
            assert word in page_text, (word, i + 1)
            assert doc.page_at(doc.text.index(word)) == i + 1
        if i:
            assert doc.text[bounds[i] - 2 : bounds[i]] == "\n\n"


def test_pdf_page_at_edges(pdf_doc: Document) -> None:
    doc = pdf_doc
    assert doc.page_at(0) == 1
    assert doc.page_at(doc.pages[1] - 1) == 1  # separator belongs to the page before it
    assert doc.page_at(doc.pages[1]) == 2
    assert doc.page_at(doc.pages[2]) == 3
    assert doc.page_at(len(doc.text)) == 3
    assert doc.page_at(-1) is None
    assert doc.page_at(len(doc.text) + 1) is None
    assert extract("a.txt", b"text").page_at(0) is None


def test_pdf_empty_page_keeps_numbering() -> None:
    doc = extract("a.pdf", make_pdf([["first page words"], [], ["third page words"]]))
    assert len(doc.pages) == 3
    assert doc.pages[2] == doc.pages[1] + 2  # empty page contributes "" then the separator
    assert doc.page_at(doc.text.index("third")) == 3
    assert doc.page_at(doc.text.index("first")) == 1


def test_pdf_nfc_text() -> None:
    doc = extract("a.pdf", make_pdf([["caf\u00e9 na\u00efve"]]))
    assert "café naïve" in doc.text
    assert unicodedata.is_normalized("NFC", doc.text)


@pytest.mark.parametrize(
    ("data", "reason_start"),
    [
        pytest.param(random.Random(1).randbytes(2048), "could not read PDF: ", id="random-bytes"),
        pytest.param(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\n", "could not read PDF: ", id="garbage"),
        pytest.param(make_pdf([["x y z"]])[:300], "could not read PDF: ", id="truncated"),
        pytest.param(make_pdf([[], []]), "PDF has no extractable text", id="no-text-layer"),
        pytest.param(make_pdf([["secret words"]], encrypt="pw"), "encrypted PDF", id="password-protected"),
    ],
)
def test_pdf_skipped_without_exception(data: bytes, reason_start: str) -> None:
    assert skip_reason("bad.pdf", data).startswith(reason_start)


def test_pdf_encrypted_with_empty_user_password_opens() -> None:
    from reportlab.lib.pdfencrypt import StandardEncryption

    enc = StandardEncryption("", ownerPassword="owner", canPrint=0)
    doc = extract("a.pdf", make_pdf([["readable words"]], encrypt=enc))
    assert "readable words" in doc.text


# --- Document


def test_to_dict_is_json_ready_and_round_trips(html_doc: Document, pdf_doc: Document) -> None:
    for doc in (html_doc, pdf_doc, extract("a.txt", b"\xe9t\xe9")):
        d = json.loads(json.dumps(doc.to_dict()))
        assert set(d) == {"source", "text", "format", "sha256", "pages", "headings", "warnings", "page_unit",
                          "ocr_pages", "ocr_pending", "metadata", "attachments", "skipped"}
        assert d["text"] == doc.text
        assert Document.from_dict(d) == doc
    assert Skipped("a/b.docx", "unsupported file type .docx").to_dict() == {
        "path": "a/b.docx",
        "reason": "unsupported file type .docx",
    }


# --- discover


def test_discover_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        discover(tmp_path / "nope")


def test_discover_rejects_single_file(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "x")
    with pytest.raises(CorpusError, match="not a folder"):
        discover(f)


def test_discover_candidates_and_skipped(tmp_path: Path) -> None:
    write(tmp_path / "b.txt", "b")
    write(tmp_path / "a.MD", "a")
    write(tmp_path / "sub" / "deep" / "c.html", "<p>c</p>")
    write(tmp_path / "sub" / "d.PDF", b"%PDF")
    write(tmp_path / "sub" / "notes.xlsx", b"PK")
    write(tmp_path / "README", "x")
    write(tmp_path / "empty.txt", b"")  # empty files are found here and rejected by extract()
    write(tmp_path / ".hidden.txt", "h")
    write(tmp_path / ".git" / "config.txt", "h")
    write(tmp_path / "sub" / ".cache" / "x.md", "h")
    (tmp_path / "emptydir").mkdir()

    candidates, skipped = discover(str(tmp_path))
    assert [rel for rel, _ in candidates] == ["a.MD", "b.txt", "empty.txt", "sub/d.PDF", "sub/deep/c.html"]
    for rel, path in candidates:
        assert path.is_absolute() and path.is_file()
        assert path.read_bytes() == (tmp_path / rel).read_bytes()
    assert skipped == [
        Skipped("README", "unsupported file type (no extension)"),
        Skipped("sub/notes.xlsx", "unsupported file type .xlsx"),
    ]


def test_discover_is_deterministic(tmp_path: Path) -> None:
    names = ["zeta.txt", "Alpha.txt", "mid/b.md", "mid/a.md", "m.txt", "x.bin", "a.bin"]
    for n in names:
        write(tmp_path / n, n)
    first = discover(tmp_path)
    assert first == discover(tmp_path)
    rels = [rel for rel, _ in first[0]]
    assert rels == sorted(rels) == ["Alpha.txt", "m.txt", "mid/a.md", "mid/b.md", "zeta.txt"]
    assert [s.path for s in first[1]] == ["a.bin", "x.bin"]


def test_discover_oversized(tmp_path: Path) -> None:
    write(tmp_path / "small.txt", "x" * 100)
    write(tmp_path / "big.txt", "x" * 101)
    candidates, skipped = discover(tmp_path, max_bytes=100)
    assert [rel for rel, _ in candidates] == ["small.txt"]
    assert skipped == [Skipped("big.txt", "larger than 100 bytes")]


def test_default_size_limit_message(tmp_path: Path) -> None:
    write(tmp_path / "big.txt", "x")
    os.truncate(tmp_path / "big.txt", DEFAULT_MAX_BYTES + 1)  # sparse, cheap
    _, skipped = discover(tmp_path)
    assert skipped == [Skipped("big.txt", "larger than 50 MB")]


@needs_symlinks
def test_symlink_outside_root_skipped(tmp_path: Path) -> None:
    root, outside = tmp_path / "corpus", tmp_path / "outside"
    write(outside / "secret.txt", "secret")
    write(root / "ok.txt", "ok")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    candidates, skipped = discover(root)
    assert [rel for rel, _ in candidates] == ["ok.txt"]
    assert skipped == [
        Skipped("link.txt", "symlink points outside the corpus"),
        Skipped("linkdir", "symlink points outside the corpus"),
    ]


@needs_symlinks
def test_symlink_inside_root_followed(tmp_path: Path) -> None:
    # targets in hidden folders are not walked directly, so only the links make them visible
    write(tmp_path / ".store" / "kept.txt", "kept")
    write(tmp_path / ".shelf" / "inner" / "deep.md", "deep")
    (tmp_path / "alias.txt").symlink_to(tmp_path / ".store" / "kept.txt")
    (tmp_path / "shelf").symlink_to(tmp_path / ".shelf", target_is_directory=True)
    candidates, skipped = discover(tmp_path)
    assert [rel for rel, _ in candidates] == ["alias.txt", "shelf/inner/deep.md"]
    assert candidates[1][1] == tmp_path.absolute() / "shelf" / "inner" / "deep.md"
    assert load_file(candidates[0][1], tmp_path).text == "kept"
    assert skipped == []


@needs_symlinks
def test_symlink_to_included_file_is_not_duplicated(tmp_path: Path) -> None:
    write(tmp_path / "z" / "real.txt", "real")
    (tmp_path / "a_link.txt").symlink_to(tmp_path / "z" / "real.txt")
    candidates, skipped = discover(tmp_path)
    assert [rel for rel, _ in candidates] == ["z/real.txt"]  # the real path wins, though it sorts later
    assert skipped == [Skipped("a_link.txt", "same file as z/real.txt (via symlink)")]


@needs_symlinks
def test_symlink_broken(tmp_path: Path) -> None:
    (tmp_path / "gone.txt").symlink_to(tmp_path / "missing.txt")
    assert discover(tmp_path) == ([], [Skipped("gone.txt", "broken symlink")])


@needs_symlinks
def test_symlink_cycle_terminates(tmp_path: Path) -> None:
    write(tmp_path / "a" / "doc.txt", "doc")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "a" / "self").symlink_to(tmp_path / "a", target_is_directory=True)
    write(tmp_path / ".h" / "x.txt", "x")
    (tmp_path / ".h" / "back").symlink_to(tmp_path / ".h", target_is_directory=True)
    (tmp_path / "h").symlink_to(tmp_path / ".h", target_is_directory=True)
    (tmp_path / "l1").symlink_to(tmp_path / "l2")  # link-to-link loop
    (tmp_path / "l2").symlink_to(tmp_path / "l1")

    result: list[tuple[list[tuple[str, Path]], list[Skipped]]] = []
    worker = threading.Thread(target=lambda: result.append(discover(tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "discover() looped on a symlink cycle"
    candidates, skipped = result[0]
    assert [rel for rel, _ in candidates] == ["a/doc.txt", "h/x.txt"]
    assert [s.path for s in skipped] == ["a/loop", "a/self", "h/back", "l1", "l2"]
    assert skipped[0].reason == "same folder as . (via symlink)"
    assert skipped[3].reason == "broken symlink"


# --- load_file


def test_load_file(tmp_path: Path) -> None:
    path = write(tmp_path / "docs" / "note.txt", "caf\u00e9\r\n")
    doc = load_file(path, tmp_path)
    assert doc.source == "docs/note.txt"
    assert doc.text == "café\r\n"
    assert load_file("docs/note.txt", tmp_path) == doc  # relative to root


def test_load_file_skips(tmp_path: Path) -> None:
    write(tmp_path / "e.md", b"")
    write(tmp_path / "bad.pdf", random.Random(2).randbytes(512))
    write(tmp_path / "big.txt", "x" * 50)
    with pytest.raises(SkipFile, match="empty file"):
        load_file(tmp_path / "e.md", tmp_path)
    with pytest.raises(SkipFile, match="could not read PDF"):
        load_file(tmp_path / "bad.pdf", tmp_path)
    with pytest.raises(SkipFile, match="larger than 10 bytes"):
        load_file(tmp_path / "big.txt", tmp_path, max_bytes=10)
    with pytest.raises(SkipFile, match="unreadable"):
        load_file(tmp_path / "missing.txt", tmp_path)


def test_discover_then_extract_end_to_end(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "plain text")
    write(tmp_path / "b.html", "<h1>Head</h1><p>Body</p>")
    write(tmp_path / "c.pdf", make_pdf([["pdf words"]]))
    write(tmp_path / "d.txt", b"\x00\x01")
    candidates, _ = discover(tmp_path)
    docs, failed = [], []
    for rel, path in candidates:
        try:
            docs.append(load_file(path, tmp_path))
        except SkipFile as e:
            failed.append(Skipped(rel, str(e)))
    assert [(d.source, d.format) for d in docs] == [("a.txt", "txt"), ("b.html", "html"), ("c.pdf", "pdf")]
    assert docs[1].text == "Head\n\nBody"
    assert failed == [Skipped("d.txt", "binary content")]


# ---------------------------------------------------------------- read_bounded: checks on the open file


def test_read_bounded_reads_a_regular_file_up_to_the_cap(tmp_path: Path) -> None:
    from tqa.loaders import NotReadable, read_bounded

    f = tmp_path / "a.txt"
    f.write_bytes(b"x" * 10)
    assert read_bounded(f, 10) == b"x" * 10
    with pytest.raises(NotReadable, match="larger than 9 bytes"):
        read_bounded(f, 9)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "directory"])
def test_read_bounded_refuses_what_is_not_a_regular_file_without_waiting(tmp_path: Path, kind: str) -> None:
    from tqa.loaders import NotReadable, read_bounded

    target = tmp_path / "f"
    if kind == "fifo":
        os.mkfifo(target)  # a blocking open would wait for a writer forever
    elif kind == "dev-zero-link":
        target.symlink_to("/dev/zero")  # a read without a cap would never end
    else:
        target.mkdir()
    with pytest.raises((NotReadable, IsADirectoryError), match="not a regular file|Is a directory"):
        read_bounded(target, 1024)


def test_read_bounded_can_refuse_symlinks(tmp_path: Path) -> None:
    from tqa.loaders import NotReadable, read_bounded

    (tmp_path / "real").write_bytes(b"ok")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_bounded(tmp_path / "link", 10) == b"ok"
    with pytest.raises(NotReadable, match="symlink"):
        read_bounded(tmp_path / "link", 10, follow_symlinks=False)
