"""HTML to readable text, with heading spans: page furniture left out, table rows read as lines of cells."""

from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser
from typing import Any

from .base import Heading, SkipFile, nfc
from .text import decode_checked

_HTML_WS = " \t\n\r\f"  # HTML whitespace; deliberately excludes U+00A0 (&nbsp;)
_HTML_WS_RUN = re.compile(r"[ \t\n\r\f]+")
# Elements whose content is not readable text. <title> is listed so it is dropped even without a <head>.
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "head", "title"})
# Page furniture, left out like hidden content: navigation, sidebars, footers (the page's, and an article's
# tags-and-share line) and form controls, whose labels ("Go", "Copy link") and option lists are not text.
# A <form> is kept: some sites wrap the whole page in one.
_BOILERPLATE_TAGS = frozenset({"nav", "aside", "footer", "button", "select", "datalist", "textarea"})
# The same by ARIA role (any token of the role attribute).
_BOILERPLATE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
# A <header> inside these is the section's or article's own header (its heading, byline), not the page's
# banner, and is kept (HTML-AAM: header is a banner only when not scoped to one of these).
_SECTIONING_TAGS = frozenset({"article", "aside", "main", "nav", "section"})
_SECTIONING_ROLES = frozenset({"article", "main", "region", "complementary", "navigation"})
# Elements that may appear in <head>; any other start tag closes an unterminated <head>, as browsers do.
_HEAD_TAGS = frozenset({"title", "meta", "link", "base", "style", "script", "noscript", "template"})
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param", "source",
     "track", "wbr"}
)  # fmt: skip
_PARAGRAPH_TAGS = frozenset(
    {
        "p", "div", "section", "article", "blockquote", "pre", "table", "header", "footer", "nav", "hr",
        "main", "aside", "figure", "figcaption", "address", "dl", "form", "fieldset", "details", "summary",
        "caption", "body", "h1", "h2", "h3", "h4", "h5", "h6",
    }
)  # fmt: skip
_LINE_TAGS = frozenset({"li", "tr", "dt", "dd"})
_LIST_TAGS = frozenset({"ul", "ol"})
_CELL_TAGS = frozenset({"td", "th"})
_CELL_SEPARATOR = " | "  # between the cells of a table row, so a row reads as one line: "Spain | 340 | 88%"
_HEADING_LEVELS = {f"h{i}": i for i in range(1, 7)}
# A start tag closes these when one of them is the innermost open element (an unclosed <p>, <li>, <td>...),
# as browsers do; it keeps the open-element stack as shallow as the page's real nesting.
_CLOSED_BY = {
    "p": frozenset({"p"}),
    "li": frozenset({"li", "p"}),
    "dt": frozenset({"dt", "dd", "p"}),
    "dd": frozenset({"dt", "dd", "p"}),
    "tr": frozenset({"td", "th", "tr"}),
    "td": frozenset({"td", "th"}),
    "th": frozenset({"td", "th"}),
    "option": frozenset({"option"}),
    **{h: frozenset({"p", *_HEADING_LEVELS}) for h in _HEADING_LEVELS},
    **{t: frozenset({"p"}) for t in _PARAGRAPH_TAGS | _LIST_TAGS if t not in _HEADING_LEVELS},
}
# Open elements tracked at most; deeper ones (only in broken or hostile markup) are not pushed, so matching an
# end tag never searches more than this.
_MAX_OPEN = 512


class _HTMLText(HTMLParser):
    """Collects readable text. Breaks and spaces are kept pending and only written before the next text,
    so nothing ever has to be removed from the output and recorded offsets stay valid.

    Open elements are kept on a stack, so an element whose content is left out (script, navigation, a page
    footer...) ends where the browser would end it: at its own end tag, or at the end tag of an element that
    encloses it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.length = 0
        self.pending_break = 0  # newlines to write before the next text (0, 1 or 2)
        self.pending_ws = ""  # whitespace (or a cell separator) to write before the next text if no break
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, a header inside it is not a banner)
        self.open_count: dict[str, int] = {}  # open elements by tag, so an end tag matching none costs nothing
        self.drop_at: int | None = None  # stack index of the element whose content is being left out
        self.pre_depth = 0
        self.pre_fresh = False  # right after <pre>: a leading newline is dropped
        self.list_depth = 0
        self.row_has_text = False  # the current table row has text: the next cell starts with a separator
        self.open_headings: list[list[Any]] = []  # [stack index, level, start or None]
        self.headings: list[Heading] = []

    def _break(self, n: int) -> None:
        self.pending_break = max(self.pending_break, n)
        self.pending_ws = ""

    def _write(self, s: str) -> None:
        if self.length:
            sep = "\n" * self.pending_break if self.pending_break else self.pending_ws
            if sep:
                self.parts.append(sep)
                self.length += len(sep)
        for h in self.open_headings:
            if h[2] is None:
                h[2] = self.length
        self.parts.append(s)
        self.length += len(s)
        self.pending_break = 0
        self.pending_ws = ""
        self.row_has_text = True

    # -- the open-element stack

    def _left_out(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP_TAGS:
            return True
        names = {name for name, _ in attrs}
        if "hidden" in names:
            return True
        roles = set((dict(attrs).get("role") or "").lower().split())
        if roles & _BOILERPLATE_ROLES:
            return True
        if tag == "footer":  # a quotation's footer names its source
            return not any(t == "blockquote" for t, _ in self.stack)
        if tag == "header":
            return not any(scoping for _, scoping in self.stack)
        return tag in _BOILERPLATE_TAGS

    def _in_open_head(self) -> bool:
        """An unterminated <head> is the innermost open element (and so the one being left out)."""
        return self.drop_at is not None and self.drop_at == len(self.stack) - 1 and self.stack[-1][0] == "head"

    def _push(self, tag: str, scoping: bool) -> None:
        self.stack.append((tag, scoping))
        self.open_count[tag] = self.open_count.get(tag, 0) + 1

    def _pop_to(self, index: int) -> None:
        """Close the element at ``index`` and every element opened inside it."""
        while len(self.stack) > index:
            tag, _ = self.stack.pop()
            self.open_count[tag] -= 1
            depth = len(self.stack)
            if self.drop_at is not None:
                if depth == self.drop_at:
                    self.drop_at = None
                    if tag in _PARAGRAPH_TAGS:
                        self._break(2)  # what came before and after a left-out block stay apart
                continue
            self._end_effect(tag, depth)

    def _end_effect(self, tag: str, depth: int | None) -> None:
        if tag in _HEADING_LEVELS and depth is not None:
            for i in range(len(self.open_headings) - 1, -1, -1):
                if self.open_headings[i][0] == depth:
                    _, level, start = self.open_headings.pop(i)
                    if start is not None and self.length > start:
                        self.headings.append(Heading(start, self.length, level))
                    break
        if tag in _LIST_TAGS:
            if depth is not None:
                self.list_depth = max(self.list_depth - 1, 0)
            self._break(1 if self.list_depth else 2)
        elif tag in _CELL_TAGS:
            if not self.pending_ws:
                self.pending_ws = " "
        elif tag in _LINE_TAGS:
            self._break(1)
        elif tag in _PARAGRAPH_TAGS:
            if tag == "pre" and depth is not None:
                self.pre_depth = max(self.pre_depth - 1, 0)
            self._break(2)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.drop_at is not None:
            if self._in_open_head() and tag not in _HEAD_TAGS:
                self._pop_to(self.drop_at)  # implicit </head>
            else:
                if tag not in _VOID_TAGS and len(self.stack) < _MAX_OPEN:
                    self._push(tag, False)
                return
        closes = _CLOSED_BY.get(tag)
        if closes and self.stack and self.stack[-1][0] in closes:
            self._pop_to(len(self.stack) - 1)
            if tag == "tr" and self.stack and self.stack[-1][0] == "tr":  # <tr><td>a<tr>: the cell, then the row
                self._pop_to(len(self.stack) - 1)
        pushed = tag not in _VOID_TAGS and len(self.stack) < _MAX_OPEN
        if pushed:
            roles = set((dict(attrs).get("role") or "").lower().split())
            self._push(tag, tag in _SECTIONING_TAGS or bool(roles & _SECTIONING_ROLES))
        if self._left_out(tag, attrs):
            if tag in _PARAGRAPH_TAGS:
                self._break(2)
            if pushed:
                self.drop_at = len(self.stack) - 1
            return
        if tag == "br":
            self.pending_break = min(self.pending_break + 1, 2)
            self.pending_ws = ""
        elif tag in _LIST_TAGS:
            self._break(1 if self.list_depth else 2)
            self.list_depth += 1
        elif tag in _CELL_TAGS:
            if self.row_has_text and not self.pending_break:
                self.pending_ws = _CELL_SEPARATOR
        elif tag in _LINE_TAGS:
            self._break(1)
            if tag == "tr":
                self.row_has_text = False
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
            if tag == "pre":
                self.pre_depth += 1
                self.pre_fresh = True
            elif tag in _HEADING_LEVELS and pushed:
                self.open_headings.append([len(self.stack) - 1, _HEADING_LEVELS[tag], None])

    def handle_endtag(self, tag: str) -> None:
        # An end tag closes the innermost open element of its name (for a heading, of any level, as browsers
        # do), with everything opened inside it; one matching nothing open is ignored, but for its break.
        wanted = _HEADING_LEVELS if tag in _HEADING_LEVELS else (tag,)
        if any(self.open_count.get(t) for t in wanted):  # then the search below ends where the closing starts
            for i in range(len(self.stack) - 1, -1, -1):
                if self.stack[i][0] in wanted:
                    self._pop_to(i)
                    return
        if self.drop_at is None:
            self._end_effect(tag, None)

    def handle_data(self, data: str) -> None:
        if self.drop_at is not None and data.strip(_HTML_WS) and self._in_open_head():
            self._pop_to(self.drop_at)  # text in an unterminated <head> starts the body, as browsers do
        if self.drop_at is not None or not data:
            return
        data = nfc(data)
        if self.pre_depth:
            data = data.replace("\r\n", "\n").replace("\r", "\n")
            if self.pre_fresh:
                data = data.removeprefix("\n")
                self.pre_fresh = False
            body = data.rstrip(_HTML_WS)  # leading indentation is kept, trailing whitespace held back
            if body:
                self._write(body)  # preceded by the pending break, or by held-back whitespace
                self.pending_ws = data[len(body) :]
            elif not self.pending_break:
                self.pending_ws += data
            return
        collapsed = _HTML_WS_RUN.sub(" ", data)
        core = collapsed.strip(" ")
        if collapsed.startswith(" ") and not self.pending_break and not self.pending_ws:
            self.pending_ws = " "
        if core:
            self._write(core)
            if collapsed.endswith(" "):
                self.pending_ws = " "


def html_text(raw: str) -> tuple[str, tuple[Heading, ...]]:
    """Readable text of decoded HTML (or XHTML: EPUB chapters, e-mail bodies) and its heading spans."""
    parser = _HTMLText()
    try:
        parser.feed(raw)
        parser.close()
    except Exception as e:  # html.parser is lenient, but never let a parser bug abort indexing
        raise SkipFile(f"could not parse HTML: {e}") from e
    text = "".join(parser.parts)
    spans = [(h.start, h.end, h.level) for h in sorted(parser.headings, key=lambda h: h.start)]

    # Chunks are NFC already; composition across chunk boundaries is possible, so check the whole.
    if not unicodedata.is_normalized("NFC", text):
        spans = [(len(nfc(text[:start])), len(nfc(text[:end])), lv) for start, end, lv in spans]
        text = unicodedata.normalize("NFC", text)
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    headings = []
    for start, end, lv in spans:
        start, end = max(start - lead, 0), min(end - lead, len(stripped))
        if end > start:
            headings.append(Heading(start, end, lv))
    return stripped, tuple(headings)


def extract_html(data: bytes) -> tuple[str, tuple[Heading, ...], list[str]]:
    raw, notes = decode_checked(data, html=True)
    text, headings = html_text(raw)
    return text, headings, notes
