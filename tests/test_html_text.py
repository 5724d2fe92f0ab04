"""HTML pages as they are published: navigation, banners, sidebars, footers and form controls are left out;
tables read row by row; every heading span still points at the heading's text."""

from __future__ import annotations

import pytest

from tqa.chunking import Chunker, sections
from tqa.config import ChunkSettings
from tqa.loaders import Document, SkipFile, extract

NGO_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Shelter capacity in 2023 | Example NGO</title>
<link rel="stylesheet" href="/site.css"></head>
<body class="page">
<header class="site-header">
  <a href="/" class="logo"><img src="/logo.png" alt="Example NGO"></a>
  <h1 class="site-title">Example NGO</h1>
  <nav aria-label="Main menu">
    <ul><li><a href="/">Home</a></li> | <li><a href="/about">About us</a></li> |
        <li><a href="/donate">Donate</a></li></ul>
  </nav>
  <form role="search" action="/search"><label>Search <input name="q"></label><button>Go</button></form>
</header>
<div class="breadcrumbs" role="navigation"><div><a href="/">Home</a> &rsaquo;</div> <a href="/reports">Reports</a></div>
<main id="content">
  <article>
    <header class="entry-header">
      <h1 class="entry-title">Shelter capacity in 2023</h1>
      <p class="byline">By Ana Lima, 3 May 2024</p>
    </header>
    <p>Shelters across the region took in more survivors than ever.</p>
    <h2>Beds per country</h2>
    <p>The table shows beds and occupancy.</p>
    <table class="data">
      <caption>Shelter beds, 2023</caption>
      <thead><tr><th>Country</th><th>Beds</th><th>Occupancy</th></tr></thead>
      <tbody>
        <tr><th scope="row">Portugal</th><td>120</td><td>95%</td></tr>
        <tr><th scope="row">Spain</th><td> 340 </td><td><b>88</b>%</td></tr>
        <tr><th scope="row">Malta</th><td></td><td>n/a</td></tr>
      </tbody>
    </table>
    <p>Demand keeps rising.</p>
    <footer class="entry-footer">Tags: shelters, funding | <a href="#">Share on Facebook</a></footer>
  </article>
  <aside class="related"><h2>Related stories</h2><ul><li><a href="/h">Hotlines at night</a></li></ul></aside>
</main>
<div role="complementary"><p>Subscribe to our newsletter</p></div>
<footer class="site-footer">
  <p>&copy; 2024 Example NGO &middot; <a href="/privacy">Privacy</a></p>
  <nav><a href="/imprint">Imprint</a></nav>
</footer>
<div role="contentinfo">Registered charity 12345</div>
<script>trackVisit();</script>
</body></html>
"""

NGO_TEXT = (
    "Shelter capacity in 2023\n\n"
    "By Ana Lima, 3 May 2024\n\n"
    "Shelters across the region took in more survivors than ever.\n\n"
    "Beds per country\n\n"
    "The table shows beds and occupancy.\n\n"
    "Shelter beds, 2023\n\n"
    "Country | Beds | Occupancy\n"
    "Portugal | 120 | 95%\n"
    "Spain | 340 | 88%\n"
    "Malta | n/a\n\n"
    "Demand keeps rising."
)

BOILERPLATE = [
    "Example NGO", "Home", "About us", "Donate", "Search", "Go", "Reports", "Tags", "Share on Facebook",
    "Related stories", "Hotlines at night", "Subscribe", "Privacy", "Imprint", "Registered charity", "trackVisit",
]  # fmt: skip


@pytest.fixture
def ngo() -> Document:
    return extract("news/shelters.html", NGO_PAGE.encode())


def test_realistic_page_keeps_the_article_only(ngo: Document) -> None:
    assert ngo.text == NGO_TEXT


@pytest.mark.parametrize("furniture", BOILERPLATE)
def test_page_furniture_is_left_out(ngo: Document, furniture: str) -> None:
    assert furniture not in ngo.text


def test_headings_of_the_article_header_are_kept_with_exact_spans(ngo: Document) -> None:
    found = [(ngo.text[h.start : h.end], h.level) for h in ngo.headings]
    assert found == [("Shelter capacity in 2023", 1), ("Beds per country", 2)]


def test_table_is_its_own_paragraph_in_its_section_and_rows_are_sentences(ngo: Document) -> None:
    trails = {ngo.text[s.start : s.end].strip(): s.trail for s in sections(ngo)}
    beds = [body for body, trail in trails.items() if trail == ("Shelter capacity in 2023", "Beds per country")]
    assert beds == [
        "The table shows beds and occupancy.\n\nShelter beds, 2023\n\n"
        "Country | Beds | Occupancy\nPortugal | 120 | 95%\nSpain | 340 | 88%\nMalta | n/a\n\n"
        "Demand keeps rising."
    ]
    [chunk] = [c for c in Chunker(ChunkSettings(chunk_size=1600, chunk_overlap=100)).chunk(ngo) if "Spain" in c.text]
    sentences = [chunk.text[a:b] for a, b in chunk.sentences]
    assert "Spain | 340 | 88%" in sentences and "Country | Beds | Occupancy" in sentences
    assert not any("|" in s and ("." in s or "Demand" in s) for s in sentences)  # not glued to prose


def test_no_chunk_of_a_page_is_navigation(ngo: Document) -> None:
    for chunk in Chunker(ChunkSettings(chunk_size=200, chunk_overlap=0)).chunk(ngo):
        assert ngo.text[chunk.start : chunk.end] == chunk.text
        assert "Home" not in chunk.text and "Donate" not in chunk.text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        pytest.param("<p>Body</p><nav>Home | About us | Donate</nav>", "Body", id="nav"),
        pytest.param("<header><h1>Site</h1><p>Tagline</p></header><p>Body</p>", "Body", id="page-header"),
        pytest.param(
            "<section><header><h2>Part one</h2></header><p>Body</p></section>", "Part one\n\nBody", id="section-header"
        ),
        pytest.param(
            "<main><header><h1>Report</h1></header><p>Body</p></main>", "Report\n\nBody", id="main-header"
        ),
        pytest.param(
            '<div role="article"><header><h1>Post</h1></header><p>Body</p></div>', "Post\n\nBody", id="role-article"
        ),
        pytest.param('<article><header role="banner">Banner</header><p>Body</p></article>', "Body", id="role-banner"),
        pytest.param("<p>Body</p><footer><p>© 2024</p></footer>", "Body", id="footer"),
        pytest.param("<p>Body</p><aside>Related</aside>", "Body", id="aside"),
        pytest.param(
            '<div role="navigation"><div><div>Menu</div></div>Still menu</div><p>Body</p>', "Body", id="role-nested"
        ),
        pytest.param('<p>Body</p><ul role="menubar navigation"><li>Menu</ul>', "Body", id="role-list"),
        pytest.param('<div role="search"><input><button>Find</button></div><p>Body</p>', "Body", id="role-search"),
        pytest.param("<div><aside>Ad<p>more ad</div><p>Body</p>", "Body", id="unclosed-aside-ends-with-parent"),
        pytest.param("<nav><nav>inner</nav>still nav</nav><p>Body</p>", "Body", id="nested-nav"),
        pytest.param("<nav><ul><li>a<li>b</ul></nav><p>Body</p>", "Body", id="unclosed-items"),
        pytest.param("<p>Pick <select><option>Portugal<option>Spain</select> now</p>", "Pick now", id="select"),
        pytest.param("<p>Text <button>Copy link</button>more</p>", "Text more", id="button"),
        pytest.param("<p>Note</p><textarea>draft</textarea>", "Note", id="textarea"),
        pytest.param("<p>Shown</p><div hidden><p>Hidden</p></div>", "Shown", id="hidden"),
        pytest.param(
            '<form id="aspnetForm"><h1>Title</h1><p>Body</p></form>', "Title\n\nBody", id="form-wrapping-the-page"
        ),
        pytest.param("<blockquote><p>Quote.</p><footer>Author</footer></blockquote>", "Quote.\n\nAuthor", id="quote"),
        pytest.param("text<nav>menu</nav>more", "text\n\nmore", id="dropped-block-separates"),
    ],
)
def test_boilerplate_rules(html: str, text: str) -> None:
    assert extract("a.html", html.encode()).text == text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        pytest.param(
            "<p>Before</p><table><tr><th>A</th><th>B</th></tr><tr><td>1</td><td>2</td></tr></table><p>After</p>",
            "Before\n\nA | B\n1 | 2\n\nAfter",
            id="simple",
        ),
        pytest.param(
            "Intro<table><tr><td>x</td><td>y</td></tr></table>outro", "Intro\n\nx | y\n\noutro", id="own-paragraph"
        ),
        pytest.param(
            "<table><tr><td>a<td>b<tr><td>c<td>d</table>", "a | b\nc | d", id="unclosed-cells-and-rows"
        ),
        pytest.param(
            "<table>\n <tr>\n  <td> padded </td>\n  <td>\n cell </td>\n </tr>\n</table>",
            "padded | cell",
            id="whitespace",
        ),
        pytest.param("<table><tr><td></td><td>only</td><td> </td></tr></table>", "only", id="empty-cells"),
        pytest.param(
            "<table><tr><td>line one<br>line two</td><td>next</td></tr></table>",
            "line one\nline two | next",
            id="br-in-cell",
        ),
        pytest.param(
            "<table><tr><td><p>Left column.</p></td><td><p>Right column.</p></td></tr></table>",
            "Left column.\n\nRight column.",
            id="layout-table-keeps-paragraphs",
        ),
        pytest.param(
            "<table><tr><td>outer</td><td><table><tr><td>i1</td><td>i2</td></tr></table></td></tr></table>",
            "outer\n\ni1 | i2",
            id="nested",
        ),
        pytest.param(
            "<table><caption>Caption</caption><tr><td>a</td></tr></table>", "Caption\n\na", id="caption"
        ),
    ],
)
def test_tables_read_row_by_row(html: str, text: str) -> None:
    assert extract("a.html", html.encode()).text == text


@pytest.mark.parametrize(
    ("html", "headings"),
    [
        pytest.param("<h1>Title <button>Copy</button></h1><p>b</p>", [("Title", 1)], id="button-in-heading"),
        pytest.param("<nav><h2>Menu</h2></nav><h2>Real</h2><p>b</p>", [("Real", 2)], id="heading-in-nav"),
        pytest.param("<h2>Mismatched</h3><p>b</p>", [("Mismatched", 2)], id="mismatched-end-tag"),
        pytest.param("<div><h3>Cut off</div><p>b</p>", [("Cut off", 3)], id="closed-by-parent"),
        pytest.param("<table><tr><th><h4>In a cell</h4></th><td>v</td></tr></table>", [("In a cell", 4)], id="cell"),
        pytest.param("<h2>Open <aside>ad</h2><p>b</p>", [("Open", 2)], id="drop-inside-heading-closed-by-it"),
    ],
)
def test_heading_spans_stay_exact(html: str, headings: list[tuple[str, int]]) -> None:
    doc = extract("a.html", html.encode())
    assert [(doc.text[h.start : h.end], h.level) for h in doc.headings] == headings


def test_page_of_furniture_only_has_no_readable_text() -> None:
    with pytest.raises(SkipFile, match="HTML has no readable text"):
        extract("a.html", b"<header>Site</header><nav>Home | About</nav><footer>(c)</footer>")


def test_deep_or_unclosed_markup_stays_linear() -> None:
    # 20,000 unclosed elements and as many stray end tags: each end tag must not search a huge stack.
    html = ("<div><span>" * 20_000 + "</p></li>" * 20_000 + "<p>end</p>").encode()
    assert extract("a.html", html).text == "end"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        pytest.param(b"<head><title>T</title>Body text here", "Body text here", id="text-after-title"),
        pytest.param(b"<html><head><meta charset=utf-8>Intro <b>bold</b> end", "Intro bold end", id="text-then-tag"),
        pytest.param(b"<head>\n  <title>T</title>\n  <style>p{}</style>\n</head><p>Body</p>", "Body", id="closed-head"),
    ],
)
def test_text_in_an_unterminated_head_starts_the_body(html: bytes, text: str) -> None:
    assert extract("a.html", html).text == text
