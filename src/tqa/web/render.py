"""Library objects to HTML, through the templates in ``templates/`` (Jinja, autoescape on).

Escaping is done in one place: the template environment escapes every ``{{ value }}``, so document text, file
names, questions and messages are always inert text, and no HTML is put together from strings here. This module
only computes what the templates show (which span to mark, the meter's numbers, the window of a long section).
The page's CSS and JavaScript are files in ``assets/``; both folders ship in the package (package data) and are read
through ``importlib.resources``, never from the source tree.

The templates' line breaks and indentation are layout for their readers only: each line is stripped and the lines
joined before Jinja reads them (``_TemplateFiles``), so what a template writes between two tags is exactly what is
on one line between them. A sentence is written on one line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from datetime import datetime
from importlib import resources
from typing import Any

from ..assistant import Answer, Passage
from ..retrieval import KEYWORD_WEIGHT

CONTEXT_WINDOW = 2500  # characters shown on each side of a passage when its section is very long

# What the order of the passages (and their meters) is based on, for each search mode.
ORDER_BASIS = {
    "hybrid": "ranked by score: meaning and keywords",
    "dense": "ranked by similarity of meaning",
    "bm25": "ranked by keyword score (BM25)",
}


def package_file(*parts: str) -> str:
    """The text of a file shipped in this package (``assets/...``, ``templates/...``)."""
    path = resources.files(__package__)
    for part in parts:
        path = path / part
    return path.read_text(encoding="utf-8")


@functools.cache
def asset(name: str) -> str:
    """A CSS or JavaScript file of ``assets/``."""
    return package_file("assets", name)


# ----------------------------------------------------------------------------------------------------------
# What the templates show, computed
# ----------------------------------------------------------------------------------------------------------


def marked(text: str, a: int, b: int) -> tuple[str, str, str]:
    """``text`` cut as (before, marked, after) around ``text[a:b]`` (clamped; nothing marked when empty)."""
    a, b = max(0, min(a, len(text))), max(0, min(b, len(text)))
    if b <= a:
        return text, "", ""
    return text[:a], text[a:b], text[b:]


@dataclass(frozen=True)
class Meter:
    label: str
    score: str  # shown as it is: two decimals
    percent: int  # the bar's width
    title: str  # the tooltip: what the score is, and the other signals


def meter(p: Passage, answer: Answer) -> Meter:
    """A small meter of the score the passages are ordered by, so it never rises down the list.

    hybrid: the fused score (0-1, mostly meaning with some keyword match); dense: the similarity of passage and
    question (the abstention signal); bm25: the BM25 keyword score, whose bar is relative to the best passage's,
    since keyword scores have no fixed scale. The other signals are in the tooltip.
    """
    mode, threshold = answer.mode, answer.threshold
    top = answer.passages[0].score if answer.passages else 0.0
    score = float(p.score)
    sim = "" if p.relevance is None else f"similarity to the question {float(p.relevance):.2f}"
    kw = "" if p.keyword_score is None else f"keyword score (BM25) {float(p.keyword_score):.2f}"
    if mode == "bm25":
        label, width = "keywords", score / top if top > 0 else 0.0
        title = f"keyword score (BM25) {score:.2f}, which orders the passages; the bar is relative to the best one"
        others = [sim]
    elif mode == "dense":
        label, width = "similarity", score
        title = (f"similarity {score:.2f}, which orders the passages: how close the passage's meaning is to the "
                 f"question (this index treats a best passage below {threshold:.2f} as not covering it)")
        others = [kw]
    else:
        label, width = "score", score
        title = (f"hybrid score {score:.2f}, which orders the passages: {1 - KEYWORD_WEIGHT:.0%} meaning "
                 f"similarity, {KEYWORD_WEIGHT:.0%} keyword match relative to the best keyword match")
        others = [sim, kw]
    title = "; ".join([title, *[o for o in others if o]])
    return Meter(label, f"{score:.2f}", max(4, min(100, round(width * 100))), title)


def quote(p: Passage, *, sentence: bool = False) -> str:
    """A copy-ready quotation with its reference: the whole passage, or (``sentence=True``) its highlighted
    sentence with the sentence's own character offsets. Whitespace runs are folded to one space."""
    if sentence:
        # the library's reference format, with the sentence's offsets in place of the passage's
        text, ref = p.highlight, replace(p, start=p.highlight_start, end=p.highlight_end).citation()
    else:
        text, ref = p.text, p.citation()
    return f"\u201c{' '.join(text.split())}\u201d \u2014 {ref}"


def _passage_mark(p: Passage) -> tuple[str, str, str]:
    """A passage's text cut around its highlighted sentence."""
    return marked(p.text, p.highlight_start - p.start, p.highlight_end - p.start)


@dataclass(frozen=True)
class Viewer:
    """What the source viewer shows: the passage inside (a window of) its section."""

    source: str
    section: str
    page: int | None
    start: int  # the passage's offsets in the document
    end: int
    before: str  # the section's text before the passage (its window)
    passage: tuple[str, str, str]  # the passage, cut around its highlighted sentence
    after: str
    elided_before: bool  # the window starts after the section does
    elided_after: bool
    rank: int | None
    quoted: Passage | None  # the passage whose quotes are offered
    page_unit: str = "page"  # "page", or "slide" for presentations
    ocr: bool = False  # the passage was read by OCR from a scanned page
    origin: str = ""  # the document's sender and date (an e-mail's, or its attachment's)


def viewer(ctx: dict[str, Any], p: Passage | None = None, rank: int | None = None) -> Viewer:
    text = ctx["text"]
    a, b = int(ctx["passage_start"]), int(ctx["passage_end"])
    lo, hi = 0, len(text)
    if len(text) > 3 * CONTEXT_WINDOW:  # a very long section: show a window around the passage
        lo, hi = max(0, a - CONTEXT_WINDOW), min(len(text), b + CONTEXT_WINDOW)
    if p is not None:
        ha, hb = p.highlight_start - int(ctx["start"]), p.highlight_end - int(ctx["start"])
    else:
        ha = hb = a
    ha, hb = max(a, min(ha, b)), max(a, min(hb, b))
    page = ctx.get("page")
    return Viewer(
        source=str(ctx["source"]), section=str(ctx.get("section") or ""), page=None if page is None else int(page),
        start=int(ctx["start"]) + a, end=int(ctx["start"]) + b,
        before=text[lo:a], passage=marked(text[a:b], ha - a, hb - a), after=text[b:hi],
        elided_before=lo > 0, elided_after=hi < len(text), rank=None if rank is None else int(rank), quoted=p,
        page_unit="slide" if ctx.get("page_unit") == "slide" else "page",
        ocr=bool(ctx.get("ocr")) or bool(p is not None and p.ocr),
        origin=str(ctx.get("origin") or (p.origin() if p is not None else "")),
    )


def info_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    built = str(info.get("built") or "unknown")
    try:
        when = datetime.strptime(built, "%Y-%m-%dT%H:%M:%S%z")
        built = when.strftime("%Y-%m-%d %H:%M ") + ("UTC" if not when.utcoffset() else when.strftime("%z"))
    except ValueError:
        pass
    return [
        ("Documents", f"{int(info.get('documents', 0))}"),
        ("Passages (chunks)", f"{int(info.get('chunks', 0))}"),
        ("Model", str(info.get("model", ""))),
        ("Built", built),
        ("Not covered below", f"similarity {float(info.get('abstain_threshold', 0)):.2f}"),
        ("Ranking", _ranking_text(info)),
        ("Abstention checks", ", ".join(str(c) for c in info.get("abstention_checks") or ()) or "none"),
    ]


def _ranking_text(info: dict[str, Any]) -> str:
    """The ranking in use and, when it was learned from the corpus, the build's one sentence on why."""
    why = info.get("ranking_why")
    if info.get("ranking") == "learned" and why:
        return f"learned from this corpus: {why}"
    return "shipped weights" + (" (a learned ranking is recorded, unused)" if why else "")


# ----------------------------------------------------------------------------------------------------------
# The templates
# ----------------------------------------------------------------------------------------------------------


def _template_files() -> Any:
    import jinja2

    class TemplateFiles(jinja2.BaseLoader):
        """``templates/<name>`` from the package, each line stripped and the lines joined (see the module doc)."""

        def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, None, Any]:
            try:
                source = package_file("templates", template)
            except (FileNotFoundError, NotADirectoryError):
                raise jinja2.TemplateNotFound(template) from None
            return "".join(line.strip() for line in source.splitlines()), None, lambda: True

    return TemplateFiles()


@functools.cache
def environment() -> Any:
    """The one template environment: autoescape on for every template, undefined names are errors."""
    import jinja2

    env = jinja2.Environment(loader=_template_files(), autoescape=True, undefined=jinja2.StrictUndefined,
                             auto_reload=False)
    env.filters.update(quote=quote, meter=meter, passage_mark=_passage_mark,
                       order_basis=lambda mode: ORDER_BASIS.get(mode, ""))
    return env


TEMPLATES = ("parts.html", "answer.html", "conversation.html", "viewer.html", "info.html", "small.html")


def macro(template: str, name: str) -> Any:
    """A macro of a template, callable from Python (it returns escaped markup)."""
    return getattr(environment().get_template(template).module, name)


# ----------------------------------------------------------------------------------------------------------
# The page's pieces
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Turn:
    id: int
    question: str
    answer: Answer
    seconds: float = 0.0


def render_answer(answer: Answer, turn: int = 0) -> str:
    """One answer: the best sentence with its citation mark, then the cited passages [1]..[k]. When the documents
    don't cover the question, it says so plainly and keeps the closest passages behind a toggle."""
    return str(macro("answer.html", "answer")(answer, int(turn)))


def render_conversation(turns: list[Turn] | tuple[Turn, ...]) -> str:
    return str(macro("conversation.html", "conversation")(list(turns)))


def render_context(ctx: dict[str, Any], p: Passage | None = None, rank: int | None = None) -> str:
    """The source viewer: the passage inside its section, marked, under a source/section/page header."""
    return str(macro("viewer.html", "context")(viewer(ctx, p, rank)))


def render_empty_viewer() -> str:
    return str(macro("viewer.html", "empty")())


def render_info(info: dict[str, Any]) -> str:
    return str(macro("info.html", "info")(info_rows(info), list(info.get("sources") or []),
                                          list(info.get("skipped") or [])))


def render_status(message: str, kind: str = "error") -> str:
    return str(macro("small.html", "status")(message, kind))


def render_examples(examples: list[str] | tuple[str, ...]) -> str:
    return str(macro("small.html", "examples")(list(examples)))


def render_header() -> str:
    return str(macro("small.html", "header")())
