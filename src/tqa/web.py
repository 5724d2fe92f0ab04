"""The web page: a thin Gradio layer over ``Assistant``. ``app.py`` and ``tqa serve`` build and launch it.

The page is a conversation (kept in the browser session; every question is answered from the documents alone),
a source viewer opened by the citation marks, search settings, and an index panel that adds documents.
``render_*`` functions turn library objects into HTML and escape every piece of document text; ``Page`` holds
the callbacks (plain methods, testable without a server); ``build_app`` wires them into Gradio Blocks and
``launch`` starts it with the safe defaults (local address, no share link, bounded queue, upload cap, no file
serving of the index or corpus folders).
"""

from __future__ import annotations

import html
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .assistant import Answer, Assistant, Passage
from .config import MAX_K, MODES, Settings
from .errors import TqaError
from .loaders import size_text
from .retrieval import KEYWORD_WEIGHT

CONCURRENCY = 4  # questions answered at once (model encoding is serialised inside the embedder)
MAX_TURNS = 50  # conversation turns kept per browser session
MAX_UPLOAD_FILES = 20
UPLOAD_TYPES = (".txt", ".md", ".html", ".htm", ".pdf")
CONTEXT_WINDOW = 2500  # characters shown on each side of a passage when its section is very long
DEFAULT_DOCUMENT = "global-governance-and-human-trafficking.txt"
DEFAULT_EXAMPLES = (
    "How has technology changed human trafficking?",
    "What responsibilities does the Palermo Protocol lay out for countries?",
    "How does Sweden's law treat people who buy sex?",
)
EMPTY_VIEWER = (
    '<div class="tqa-viewer tqa-viewer-empty"><p class="tqa-kicker">Source viewer</p>'
    "<p>Click a citation mark such as <span class=\"tqa-cite-sample\">[1]</span> to read the passage "
    "in its section, with the passage marked.</p></div>"
)


def esc(value: Any) -> str:
    """Document text (and anything else that is not our own markup) as inert HTML text."""
    return html.escape(str(value), quote=True)


# ----------------------------------------------------------------------------------------------------------
# Rendering: library objects to HTML. Every string from a document goes through esc().
# ----------------------------------------------------------------------------------------------------------


def _marked(text: str, a: int, b: int, tag: str = "mark") -> str:
    """``text`` with ``text[a:b]`` wrapped in ``<tag>``, every part escaped."""
    a, b = max(0, min(a, len(text))), max(0, min(b, len(text)))
    if b <= a:
        return esc(text)
    return f"{esc(text[:a])}<{tag}>{esc(text[a:b])}</{tag}>{esc(text[b:])}"


def _trail(section: str, page: int | None) -> list[str]:
    """The section and page marks of a passage (either may be absent)."""
    parts = []
    if section:
        parts.append(f'<span class="tqa-sec" title="section">§ {esc(section)}</span>')
    if page is not None:
        parts.append(f'<span class="tqa-page">p. {int(page)}</span>')
    return parts


def _where(source: str, section: str, page: int | None) -> str:
    return " ".join([f'<span class="tqa-src" title="source file">{esc(source)}</span>', *_trail(section, page)])


def render_relevance(p: Passage, mode: str, top: float, threshold: float) -> str:
    """A small meter of the score the passages are ordered by, so it never rises down the list.

    hybrid: the fused score (0-1, mostly meaning with some keyword match); dense: the similarity of passage and
    question (the abstention signal); bm25: the BM25 keyword score, whose bar is relative to ``top`` (the best
    passage's), since keyword scores have no fixed scale. The other signals are in the tooltip.
    """
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
    percent = max(4, min(100, round(width * 100)))
    return (f'<span class="tqa-rel" title="{esc(title)}">'
            f'<span class="tqa-meter"><span style="width:{percent}%"></span></span>'
            f'<span class="tqa-rel-num">{label} {score:.2f}</span></span>')


def quote(p: Passage, *, sentence: bool = False) -> str:
    """A copy-ready quotation with its reference: the whole passage, or (``sentence=True``) its highlighted
    sentence with the sentence's own character offsets. Whitespace runs are folded to one space."""
    if sentence:
        # the library's reference format, with the sentence's offsets in place of the passage's
        text, ref = p.highlight, replace(p, start=p.highlight_start, end=p.highlight_end).citation()
    else:
        text, ref = p.text, p.citation()
    return f"\u201c{' '.join(text.split())}\u201d \u2014 {ref}"


def _quotes(p: Passage, *, label: str = "", show_sentence: bool = False) -> str:
    """Copy buttons for the highlighted sentence and for the whole passage, each quote with its reference in a
    textarea of its own (hidden unless ``show_sentence``; shown and selected when the clipboard is unavailable)."""
    head = f'<span class="tqa-quote-label">{esc(label)}</span>' if label else ""
    sentence_hidden = "" if show_sentence else " hidden"
    return (
        f'<div class="tqa-quotes" data-quotes="1">{head}'
        '<button type="button" class="tqa-copy" data-copy="sentence" '
        'title="Copy the highlighted sentence with its reference (the sentence\u2019s own character offsets)">'
        "Copy sentence</button>"
        '<button type="button" class="tqa-copy" data-copy="passage" title="Copy the whole passage with its reference">'
        "Copy passage</button>"
        f'<textarea class="tqa-quote" data-quote="sentence" readonly rows="3"{sentence_hidden} '
        f'aria-label="The highlighted sentence with its reference">{esc(quote(p, sentence=True))}</textarea>'
        '<textarea class="tqa-quote" data-quote="passage" readonly rows="4" hidden '
        f'aria-label="The passage with its reference">{esc(quote(p))}</textarea></div>'
    )


def _cite(turn: int, rank: int) -> str:
    return (f'<button type="button" class="tqa-cite" data-cite="{int(turn)}:{int(rank)}" '
            f'title="Open passage [{int(rank)}] in the source viewer">[{int(rank)}]</button>')


# What the order of the passages (and their meters) is based on, for each search mode.
ORDER_BASIS = {
    "hybrid": "ranked by score: meaning and keywords",
    "dense": "ranked by similarity of meaning",
    "bm25": "ranked by keyword score (BM25)",
}


def render_passage(p: Passage, turn: int, answer: Answer) -> str:
    a, b = p.highlight_start - p.start, p.highlight_end - p.start
    trail = _trail(p.section, p.page)
    meter = render_relevance(p, answer.mode, answer.passages[0].score, answer.threshold)
    return (
        f'<article class="tqa-passage" id="tqa-p-{int(turn)}-{int(p.rank)}">'
        f'<header><div class="tqa-line">{_cite(turn, p.rank)}'
        f'<span class="tqa-src" title="source file">{esc(p.source)}</span>{meter}</div>'
        + (f'<div class="tqa-trail">{" · ".join(trail)}</div>' if trail else "")
        + "</header>"
        f'<div class="tqa-text">{_marked(p.text, a, b)}</div>'
        f'<footer>{_quotes(p)}<span class="tqa-offsets">chars {int(p.start)}\u2013{int(p.end)}</span></footer>'
        "</article>"
    )


def render_examples(examples: Sequence[str]) -> str:
    if not examples:
        return ""
    buttons = "".join(f'<button type="button" class="tqa-example" data-example="{i}">{esc(q)}</button>'
                      for i, q in enumerate(examples))
    return f'<div class="tqa-examples"><span class="tqa-try">Try</span>{buttons}</div>'


def render_answer(answer: Answer, turn: int = 0) -> str:
    """HTML for one answer: the best sentence with its citation mark, then the cited passages [1]..[k].

    When the documents don't cover the question, say so plainly and keep the closest passages behind a toggle.
    """
    out = ['<div class="tqa-a' + (' tqa-abstained' if answer.abstained else '') + '">']
    for w in answer.warnings:
        out.append(f'<p class="tqa-warning">{esc(w)}</p>')
    n = len(answer.passages)
    if answer.abstained:
        out.append(f'<p class="tqa-abstain-msg"><strong>{esc(answer.message)}</strong></p>')
        if answer.relevance is not None and answer.relevance < answer.threshold:
            out.append(f'<p class="tqa-note">The closest passage has similarity {answer.relevance:.2f} to the '
                       f"question, below this index's threshold of {answer.threshold:.2f}. Try other words, or add "
                       f"documents that cover it.</p>")
        if n:
            out.append(f'<details class="tqa-closest"><summary>Closest passages ({n}), not an answer'
                       f'<span class="tqa-basis">{esc(ORDER_BASIS.get(answer.mode, ""))}</span></summary>'
                       f'<div class="tqa-passages">')
            out.extend(render_passage(p, turn, answer) for p in answer.passages)
            out.append("</div></details>")
    elif not answer.passages:
        out.append(f'<p class="tqa-abstain-msg">{esc(answer.message)}</p>')
    else:
        best = answer.passages[0]
        out.append(
            f'<blockquote class="tqa-lead"><p>\u201c{esc(best.highlight)}\u201d {_cite(turn, best.rank)}</p>'
            f'<footer><span class="tqa-where">{_where(best.source, best.section, best.page)}</span>{_quotes(best)}'
            "</footer></blockquote>"
        )
        basis = ORDER_BASIS.get(answer.mode, "")
        out.append(f'<details class="tqa-sources" open><summary>{n} cited passage{"s" if n != 1 else ""} '
                   f'<span class="tqa-mode">{esc(answer.mode)} search</span>'
                   f'<span class="tqa-basis">{esc(basis)}</span></summary><div class="tqa-passages">')
        out.extend(render_passage(p, turn, answer) for p in answer.passages)
        out.append("</div></details>")
    out.append("</div>")
    return "".join(out)


@dataclass
class Turn:
    id: int
    question: str
    answer: Answer
    seconds: float = 0.0


def render_conversation(turns: Sequence[Turn]) -> str:
    if not turns:
        return (
            '<div class="tqa-conv"><div class="tqa-empty"><p><strong>Ask a question about the documents.</strong>'
            "</p><p>Each answer is quoted from them: the sentence that answers best, then the passages it comes "
            "from, each with its file, section and page. Click a mark like <span class=\"tqa-cite-sample\">[1]"
            "</span> to read it in context.</p></div></div>"
        )
    n = len(turns)
    out = [f'<div class="tqa-bar"><span>{n} question{"s" if n != 1 else ""} in this conversation; each is answered '
           'from the documents alone</span><button type="button" class="tqa-new" data-newchat="1">New conversation'
           '</button></div><div class="tqa-conv">']
    for t in turns:
        out.append(
            f'<section class="tqa-turn" id="tqa-turn-{t.id}"><div class="tqa-q"><span class="tqa-who">You</span>'
            f"<p>{esc(t.question)}</p></div>{render_answer(t.answer, t.id)}"
            f'<p class="tqa-time">answered in {t.seconds:.2f} s</p></section>'
        )
    out.append("</div>")
    return "".join(out)


def render_context(ctx: dict[str, Any], p: Passage | None = None, rank: int | None = None) -> str:
    """The source viewer: the passage inside its section, marked, under a source/section/page header."""
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
    inner = _marked(text[a:b], ha - a, hb - a, tag="b")
    body = (("<span class=\"tqa-elided\">[\u2026]</span> " if lo > 0 else "") + esc(text[lo:a])
            + f'<mark class="tqa-in-context">{inner}</mark>' + esc(text[b:hi])
            + (" <span class=\"tqa-elided\">[\u2026]</span>" if hi < len(text) else ""))
    label = f"Source \u00b7 passage [{int(rank)}]" if rank is not None else "Source"
    start, end = int(ctx["start"]) + a, int(ctx["start"]) + b
    out = [
        '<div class="tqa-viewer">',
        f'<p class="tqa-kicker">{label}</p>',
        f'<h3 class="tqa-viewer-src">{esc(ctx["source"])}</h3>',
        '<p class="tqa-viewer-meta">',
        f'<span class="tqa-sec">§ {esc(ctx["section"])}</span> \u00b7 ' if ctx.get("section") else "",
        f'<span class="tqa-page">p. {int(ctx["page"])}</span> \u00b7 ' if ctx.get("page") is not None else "",
        f'<span class="tqa-offsets">chars {start}\u2013{end}</span></p>',
        f'<div class="tqa-context">{body}</div>',
    ]
    if p is not None:
        out.append(f'<div class="tqa-viewer-quote">{_quotes(p, label="Quote with reference", show_sentence=True)}'
                   "</div>")
    out.append("</div>")
    return "".join(out)


def render_info(info: dict[str, Any]) -> str:
    built = str(info.get("built") or "unknown")
    try:
        when = datetime.strptime(built, "%Y-%m-%dT%H:%M:%S%z")
        built = when.strftime("%Y-%m-%d %H:%M ") + ("UTC" if not when.utcoffset() else when.strftime("%z"))
    except ValueError:
        pass
    sources = info.get("sources") or []
    rows = [
        ("Documents", f"{int(info.get('documents', 0))}"),
        ("Passages (chunks)", f"{int(info.get('chunks', 0))}"),
        ("Model", esc(info.get("model", ""))),
        ("Built", esc(built)),
        ("Not covered below", f"similarity {float(info.get('abstain_threshold', 0)):.2f}"),
    ]
    out = ['<div class="tqa-info"><dl>']
    out.extend(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    out.append("</dl>")
    if sources:
        out.append(f"<details><summary>{len(sources)} document{'s' if len(sources) != 1 else ''}</summary><ul>")
        out.extend(f"<li>{esc(s)}</li>" for s in sources)
        out.append("</ul></details>")
    skipped = info.get("skipped") or []
    if skipped:
        out.append(f"<details><summary>{len(skipped)} skipped</summary><ul>")
        out.extend(f"<li>{esc(s.get('path'))}: {esc(s.get('reason'))}</li>" for s in skipped)
        out.append("</ul></details>")
    out.append("</div>")
    return "".join(out)


def render_status(message: str, kind: str = "error") -> str:
    if not message:
        return ""
    role = "alert" if kind == "error" else "status"
    return f'<p class="tqa-status tqa-status-{esc(kind)}" role="{role}">{esc(message)}</p>'


# ----------------------------------------------------------------------------------------------------------
# Callbacks: thin calls into Assistant, formatted for the page (usable without a server, for tests).
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Page:
    assistant: Assistant
    max_upload_bytes: int = 0
    examples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.max_upload_bytes:
            self.max_upload_bytes = self.assistant.settings.max_file_bytes

    @property
    def settings(self) -> Settings:
        return self.assistant.settings

    def answer(self, question: Any, k: Any = None, mode: Any = None, sources: Any = None) -> Answer:
        """Ask, translating what the wire carries; every check is the library's (``Assistant.ask``), so the page,
        the API, the CLI and Python refuse the same input with the same message."""
        if k == "" or (isinstance(k, float) and k.is_integer()):
            k = None if k == "" else int(k)  # the slider sends 3.0; an empty field means the default
        return self.assistant.ask(question, k=k, mode=mode or None, sources=sources or None)

    def ask(self, question: Any, k: Any, mode: Any, sources: Any,
            turns: list[Turn] | None) -> tuple[str | None, list[Turn], str, str | None]:
        """(conversation HTML or None to keep it, turns, status HTML, new question box value or None)."""
        turns = list(turns or [])
        t0 = time.perf_counter()
        try:
            answer = self.answer(question, k, mode, sources)
        except TqaError as exc:
            return None, turns, render_status(str(exc)), None
        turn_id = turns[-1].id + 1 if turns else 0
        turns.append(Turn(turn_id, answer.question, answer, time.perf_counter() - t0))
        turns = turns[-MAX_TURNS:]
        return render_conversation(turns), turns, "", ""

    def cite(self, turns: list[Turn] | None, cite: Any) -> str:
        """The source viewer for citation ``"<turn>:<rank>"`` of this conversation."""
        m = re.fullmatch(r"(\d{1,9}):(\d{1,4})", str(cite or ""))
        turn = next((t for t in turns or [] if m and t.id == int(m.group(1))), None)
        if m is None or turn is None:
            return render_status("That citation is no longer in this conversation; ask again.")
        rank = int(m.group(2))
        p = next((p for p in turn.answer.passages if p.rank == rank), None)
        if p is None:
            return render_status("That citation is no longer in this conversation; ask again.")
        try:
            ctx = self.assistant.context(p.source, p.start, p.end)
        except TqaError as exc:
            return render_status(f"{exc} The index may have changed since this answer; ask again.")
        return render_context(ctx, p, rank)

    def panel(self) -> tuple[str, list[str]]:
        info = self.assistant.info()
        return render_info(info), list(info["sources"])

    def panel_label(self) -> str:
        info = self.assistant.info()
        n, c = int(info["documents"]), int(info["chunks"])
        return f"Index: {n} document{'s' if n != 1 else ''}, {c} passage{'s' if c != 1 else ''}"

    def upload(self, paths: Sequence[str] | None,
               on_progress: Callable[[str, int, int], None] | None = None) -> tuple[str, str, list[str]]:
        """Add uploaded files to the corpus and index them. Returns (status HTML, info HTML, sources)."""
        info, sources = self.panel()
        paths = [str(p) for p in (paths or []) if p]
        if not paths:
            return render_status("Choose one or more files to add first."), info, sources
        if len(paths) > MAX_UPLOAD_FILES:
            return render_status(f"Add at most {MAX_UPLOAD_FILES} files at a time."), info, sources
        files = []
        for path in paths:
            name = Path(path).name
            if Path(name).suffix.lower() not in UPLOAD_TYPES:
                return render_status(f"{name}: only {' '.join(UPLOAD_TYPES)} files can be added."), info, sources
            try:
                size = os.path.getsize(path)
            except OSError:
                return render_status(f"{name}: the upload did not arrive; try again."), info, sources
            if size > self.max_upload_bytes:
                limit = size_text(self.max_upload_bytes)
                return render_status(f"{name} is larger than the {limit} limit for uploads."), info, sources
            with open(path, "rb") as f:
                files.append((name, f.read(self.max_upload_bytes + 1)))
        t0 = time.perf_counter()
        try:
            summary = self.assistant.add_documents(files, max_bytes=self.max_upload_bytes, on_progress=on_progress)
        except TqaError as exc:
            return render_status(str(exc)), info, sources
        info, sources = self.panel()
        added = summary.files_added + summary.files_changed
        problems = "; ".join(f"{s.get('path')}: {s.get('reason')}" for s in summary.skipped
                             if str(s.get("path", "")).startswith("uploads/"))
        if not added:
            msg = f"Nothing was added: {problems}." if problems else "Nothing new: the same content is already indexed."
            return render_status(msg, "error" if problems else "ok"), info, sources
        msg = (f"Indexed {', '.join(added)} in {time.perf_counter() - t0:.1f} s: {summary.chunks_embedded} passages "
               f"embedded; the index now holds {summary.chunks_total} passages. Ask away.")
        if problems:
            msg += f" Skipped {problems}."
        return render_status(msg, "ok"), info, sources


# ----------------------------------------------------------------------------------------------------------
# The Gradio app
# ----------------------------------------------------------------------------------------------------------

# Copy buttons ([data-copy="sentence"|"passage"]) copy the textarea of the same kind in their [data-quotes] box:
# through the clipboard API where the page is a secure context (localhost is), else by selecting the textarea.
COPY_JS = """
const copyQuote = (btn) => {
  const box = btn.closest('[data-quotes]');
  const ta = box && box.querySelector('textarea[data-quote="' + btn.dataset.copy + '"]');
  if (!ta) return;
  if (!btn.dataset.label) btn.dataset.label = btn.textContent;
  const done = () => { btn.textContent = 'Copied'; setTimeout(() => { btn.textContent = btn.dataset.label; }, 1500); };
  const fallback = () => { ta.hidden = false; ta.focus(); ta.select();
    try { if (document.execCommand('copy')) done(); } catch (e) { /* the text stays selected */ } };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(ta.value).then(done, fallback);
  else fallback();
};
"""

CHAT_JS = COPY_JS + """
element.addEventListener('click', (ev) => {
  const t = ev.target instanceof Element ? ev.target : null;
  if (!t) return;
  const cite = t.closest('[data-cite]');
  if (cite) {
    ev.preventDefault();
    element.querySelectorAll('.tqa-active').forEach((e) => e.classList.remove('tqa-active'));
    const card = element.querySelector('#tqa-p-' + cite.dataset.cite.replace(':', '-'));
    if (card) card.classList.add('tqa-active');
    trigger('cite', {cite: cite.dataset.cite});
    return;
  }
  const copy = t.closest('[data-copy]');
  if (copy) { ev.preventDefault(); copyQuote(copy); return; }
  if (t.closest('[data-newchat]')) { ev.preventDefault(); trigger('newchat'); }
});
const toLatest = () => {
  const box = element.querySelector('.tqa-conv');
  const turns = element.querySelectorAll('.tqa-turn');
  const last = turns[turns.length - 1];
  if (box && last) box.scrollTop = Math.max(0, last.offsetTop - 8);
};
if (typeof watch === 'function') watch('value', toLatest);
"""

EXAMPLES_JS = """
element.addEventListener('click', (ev) => {
  const b = ev.target instanceof Element ? ev.target.closest('[data-example]') : null;
  if (b) { ev.preventDefault(); trigger('example', {example: b.dataset.example}); }
});
"""

VIEWER_JS = COPY_JS + """
element.addEventListener('click', (ev) => {
  const copy = ev.target instanceof Element ? ev.target.closest('[data-copy]') : null;
  if (copy) { ev.preventDefault(); copyQuote(copy); }
});
const show = () => {
  const box = element.querySelector('.tqa-context');
  const m = box && box.querySelector('mark');
  if (box && m) box.scrollTop = Math.max(0, m.offsetTop - 48);
  const r = element.getBoundingClientRect();
  if (r.top < 0 || r.top > window.innerHeight - 120) element.scrollIntoView({block: 'start', behavior: 'smooth'});
};
if (typeof watch === 'function') watch('value', show);
"""

CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto !important; }
#tqa-header h1 { font-size: 1.55rem; margin: 0.2rem 0 0 0; letter-spacing: -0.01em; }
#tqa-header p { margin: 0.15rem 0 0.4rem 0; color: var(--body-text-color-subdued); }
#tqa-header .tqa-logo { display: inline-block; background: var(--color-accent); color: white; border-radius: 6px;
  padding: 0 0.45rem; margin-right: 0.4rem; font-weight: 700; }
.tqa-conv { max-height: 66vh; min-height: 220px; overflow-y: auto; position: relative;
  padding: 0.25rem 0.5rem 0.5rem 0; }
.tqa-bar { display: flex; justify-content: space-between; align-items: center; gap: 0.5rem; font-size: 0.8rem;
  color: var(--body-text-color-subdued); border-bottom: 1px solid var(--border-color-primary);
  padding: 0 0 0.35rem 0;
  margin: 0 0 0.6rem 0; }
.tqa-new { font: inherit; font-size: 0.8rem; background: none; border: 1px solid var(--border-color-primary);
  border-radius: 6px; padding: 0.1rem 0.6rem; cursor: pointer; color: var(--body-text-color); white-space: nowrap; }
.tqa-new:hover { border-color: var(--color-accent); color: var(--color-accent); }
.tqa-empty { border: 1px dashed var(--border-color-primary); border-radius: 10px; padding: 1.2rem 1.4rem;
  color: var(--body-text-color-subdued); }
.tqa-empty p { margin: 0.3rem 0; }
.tqa-turn { margin: 0 0 1.4rem 0; }
.tqa-q { display: flex; gap: 0.6rem; align-items: baseline; margin: 0 0 0.6rem 0; }
.tqa-q p { margin: 0; font-weight: 600; font-size: 1.05rem; }
.tqa-who { font-size: 0.72rem; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--body-text-color-subdued);
  border: 1px solid var(--border-color-primary); border-radius: 999px; padding: 0 0.45rem; }
.tqa-a { border-left: 3px solid var(--color-accent); padding: 0.1rem 0 0.1rem 0.9rem; }
.tqa-a.tqa-abstained { border-left-color: #9ca3af; }
.tqa-lead { margin: 0 0 0.7rem 0; padding: 0.75rem 1rem; border-radius: 10px; background: var(--color-accent-soft);
  border: none; }
.tqa-lead p { margin: 0; font-size: 1.08rem; line-height: 1.55; }
.tqa-lead footer { margin-top: 0.35rem; font-size: 0.85rem; color: var(--body-text-color-subdued);
  display: flex; flex-wrap: wrap; gap: 0.3rem 0.8rem; align-items: center; justify-content: space-between; }
.tqa-lead footer .tqa-quotes { font-size: 0.78rem; }
.tqa-abstain-msg { font-size: 1.08rem; margin: 0.2rem 0 0.3rem 0; }
.tqa-note, .tqa-time { color: var(--body-text-color-subdued); font-size: 0.82rem; margin: 0.2rem 0; }
.tqa-time { text-align: right; }
.tqa-warning { background: #fef3c7; color: #78350f; border-radius: 6px; padding: 0.3rem 0.6rem;
  font-size: 0.85rem; }
.tqa-a details > summary { cursor: pointer; font-size: 0.88rem; color: var(--body-text-color-subdued);
  margin: 0.2rem 0; }
.tqa-mode { margin-left: 0.4rem; font-size: 0.75rem; border: 1px solid var(--border-color-primary);
  border-radius: 999px;
  padding: 0 0.4rem; }
.tqa-passages { display: flex; flex-direction: column; gap: 0.6rem; margin-top: 0.4rem; }
.tqa-passage { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 0.6rem 0.8rem;
  background: var(--block-background-fill); transition: box-shadow 0.2s; }
.tqa-passage.tqa-active { box-shadow: 0 0 0 2px var(--color-accent); }
.tqa-passage header { font-size: 0.84rem; }
.tqa-line { display: flex; align-items: center; gap: 0.5rem; }
.tqa-line .tqa-src { flex: 1 1 auto; min-width: 0; }
.tqa-trail { color: var(--body-text-color-subdued); margin-top: 0.15rem; }
.tqa-src { font-family: var(--font-mono); font-size: 0.8rem; color: var(--body-text-color); word-break: break-all; }
.tqa-text { white-space: pre-wrap; line-height: 1.55; margin: 0.45rem 0 0.3rem 0; font-size: 0.93rem; }
.tqa-passage footer { display: flex; gap: 0.6rem; align-items: center; font-size: 0.78rem;
  color: var(--body-text-color-subdued); flex-wrap: wrap; }
.tqa-quotes { display: flex; flex-wrap: wrap; gap: 0.4rem; align-items: center; }
.tqa-passage footer .tqa-quotes { flex: 1 1 auto; }
.tqa-quote { flex: 1 1 100%; width: 100%; font-size: 0.8rem; border-radius: 6px; padding: 0.3rem 0.5rem;
  border: 1px solid var(--border-color-primary); background: var(--input-background-fill);
  color: var(--body-text-color); resize: vertical; }
mark, .tqa-text mark { background: #fde68a; color: #1f2937; padding: 0 0.1em; border-radius: 3px; }
.tqa-cite, .tqa-cite-sample { font: inherit; font-weight: 700; font-size: 0.85em; color: var(--color-accent);
  background: var(--color-accent-soft); border: 1px solid transparent; border-radius: 6px; padding: 0 0.3rem;
  cursor: pointer; vertical-align: baseline; }
.tqa-cite:hover, .tqa-cite:focus-visible { border-color: var(--color-accent); outline: none; }
.tqa-copy { font: inherit; font-size: 0.78rem; background: none; border: 1px solid var(--border-color-primary);
  border-radius: 6px; padding: 0.05rem 0.5rem; cursor: pointer; color: var(--body-text-color); }
.tqa-copy:hover { border-color: var(--color-accent); }
.tqa-rel { display: inline-flex; align-items: center; gap: 0.3rem; font-size: 0.78rem;
  color: var(--body-text-color-subdued);
  white-space: nowrap; }
.tqa-meter { display: inline-block; width: 56px; height: 6px; border-radius: 3px;
  background: var(--border-color-primary);
  overflow: hidden; }
.tqa-meter > span { display: block; height: 100%; background: var(--color-accent); }
.tqa-basis { margin-left: 0.5rem; font-size: 0.78rem; }
.tqa-status { margin: 0.2rem 0; padding: 0.45rem 0.75rem; border-radius: 8px; font-size: 0.9rem; }
.tqa-status-error { background: #fee2e2; color: #7f1d1d; }
.tqa-status-ok { background: #dcfce7; color: #14532d; }
.tqa-viewer { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 0.8rem 1rem;
  background: var(--block-background-fill); }
.tqa-viewer-empty { color: var(--body-text-color-subdued); border-style: dashed; }
.tqa-viewer-empty p { margin: 0.3rem 0; }
.tqa-kicker { text-transform: uppercase; letter-spacing: 0.06em; font-size: 0.72rem; margin: 0;
  color: var(--body-text-color-subdued); }
.tqa-viewer-src { font-family: var(--font-mono); font-size: 0.92rem; margin: 0.2rem 0; word-break: break-all; }
.tqa-viewer-meta { font-size: 0.84rem; color: var(--body-text-color-subdued); margin: 0 0 0.5rem 0; }
.tqa-context { white-space: pre-wrap; line-height: 1.6; font-size: 0.9rem; max-height: 52vh; overflow-y: auto;
  position: relative; padding-right: 0.4rem; }
.tqa-context mark.tqa-in-context { background: #fef3c7; }
.tqa-context mark.tqa-in-context b { background: #fde68a; color: #1f2937; font-weight: 600; }
.tqa-elided { color: var(--body-text-color-subdued); }
.tqa-viewer-quote { margin-top: 0.6rem; }
.tqa-quote-label { font-size: 0.78rem; color: var(--body-text-color-subdued); margin-right: 0.2rem; }
.tqa-info dl { display: grid; grid-template-columns: auto 1fr; gap: 0.15rem 0.8rem; margin: 0 0 0.4rem 0;
  font-size: 0.88rem; }
.tqa-info dt { color: var(--body-text-color-subdued); }
.tqa-info dd { margin: 0; word-break: break-all; }
.tqa-info details { font-size: 0.85rem; }
.tqa-info ul { margin: 0.2rem 0 0.2rem 1.1rem; padding: 0; }
.tqa-examples { display: flex; flex-wrap: wrap; gap: 0.4rem; align-items: center; margin-top: 0.1rem; }
.tqa-try { font-size: 0.78rem; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--body-text-color-subdued);
  margin-right: 0.2rem; }
.tqa-example { font: inherit; font-size: 0.85rem; background: var(--block-background-fill);
  color: var(--body-text-color);
  border: 1px solid var(--border-color-primary); border-radius: 999px; padding: 0.2rem 0.75rem; cursor: pointer; }
.tqa-example:hover { border-color: var(--color-accent); color: var(--color-accent); }
"""


def _theme() -> Any:
    import gradio as gr

    # System fonts: nothing is fetched from a font service.
    return gr.themes.Soft(
        primary_hue="indigo",
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial",
              "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"],
    )


def default_examples(assistant: Assistant) -> tuple[str, ...]:
    """Example questions when the index holds the default document."""
    return DEFAULT_EXAMPLES if any(Path(s).name == DEFAULT_DOCUMENT for s in assistant.sources()) else ()


def build_app(assistant: Assistant, *, examples: Sequence[str] | None = None,
              max_upload_bytes: int | None = None) -> Any:
    """The page as a ``gr.Blocks``; launch it with ``launch(app, ...)`` (which applies the theme, CSS and the
    safe server settings). ``examples`` default to questions about the default corpus when it is indexed."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    page = Page(assistant, max_upload_bytes or 0,
                tuple(examples) if examples is not None else default_examples(assistant))
    settings = assistant.settings
    html_info, sources0 = page.panel()

    def on_ask(question: str, k: float, mode: str, sources: list[str] | None, turns: list[Turn] | None):
        conv, turns, status, box = page.ask(question, k, mode, sources, turns)
        return (gr.skip() if conv is None else conv), turns, status, (gr.skip() if box is None else box)

    def on_cite(turns: list[Turn] | None, evt: Any):
        return page.cite(turns, (evt._data or {}).get("cite"))

    # Gradio recognises the event argument by its (resolved) type; annotations are strings in this module.
    on_cite.__annotations__ = {"evt": gr.EventData}

    def on_example(k: float, mode: str, sources: list[str] | None, turns: list[Turn] | None, evt: Any):
        i = str((evt._data or {}).get("example", ""))
        if not i.isdigit() or int(i) >= len(page.examples):
            return gr.skip(), turns, "", gr.skip()
        return on_ask(page.examples[int(i)], k, mode, sources, turns)

    on_example.__annotations__ = {"evt": gr.EventData}

    def on_clear():
        return render_conversation([]), [], "", EMPTY_VIEWER

    def on_load():
        info, sources = page.panel()
        return info, gr.update(choices=sources), gr.update(label=page.panel_label())

    def on_upload(files: list[str] | None, progress=gr.Progress()):  # noqa: B008 (Gradio's injection idiom)
        progress(0, desc="Saving the files")

        def report(stage: str, done: int, total: int) -> None:
            progress((done, max(total, 1)), desc="Reading documents", unit="files")

        status, info, sources = page.upload(files, on_progress=report)
        progress(1, desc="Done")
        return status, info, gr.update(choices=sources), None, gr.update(label=page.panel_label())

    def api_ask(question: str, k: int = settings.k, mode: str = settings.mode,
                sources: list[str] | None = None) -> dict:
        """Answer a question with passages quoted from the documents. Returns Answer.to_dict(): question,
        abstained, message, mode, relevance, threshold, warnings, passages (text, source, section, page, start,
        end, score, highlight, highlight_start, highlight_end, rank, relevance, keyword_score, section_path,
        citation)."""
        try:
            return page.answer(question, k, mode, sources).to_dict()
        except TqaError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    api_ask.__annotations__ = {"question": str, "k": int, "mode": str, "sources": list[str] | None, "return": dict}

    upload_label = (f"Add documents ({' '.join(UPLOAD_TYPES)}; up to {size_text(page.max_upload_bytes)} each)")
    with gr.Blocks(title="tqa \u2014 ask your documents", analytics_enabled=False) as app:
        turns = gr.State([])
        gr.HTML('<div id="tqa-header"><h1><span class="tqa-logo">tqa</span>Ask your documents</h1>'
                "<p>Every answer is quoted from the documents, with its file, section and page. "
                "Nothing is written by a language model.</p></div>", js_on_load=None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                chat = gr.HTML(render_conversation([]), elem_id="tqa-chat", js_on_load=CHAT_JS)
                status = gr.HTML("", elem_id="tqa-status", js_on_load=None)
                with gr.Row(equal_height=True, elem_id="tqa-ask-row"):
                    question = gr.Textbox(show_label=False, placeholder="Ask a question about the documents\u2026",
                                          max_length=settings.max_question_chars, lines=1, max_lines=4, scale=6,
                                          autofocus=True, elem_id="tqa-question", submit_btn=False)
                    ask_btn = gr.Button("Ask", variant="primary", scale=0, min_width=100, elem_id="tqa-ask")
                example_box = gr.HTML(render_examples(page.examples), elem_id="tqa-examples", js_on_load=EXAMPLES_JS,
                                      visible=bool(page.examples))
            with gr.Column(scale=2, min_width=320, elem_id="tqa-side"):
                viewer = gr.HTML(EMPTY_VIEWER, elem_id="tqa-viewer", js_on_load=VIEWER_JS)
                with gr.Accordion("Search settings", open=True):
                    k = gr.Slider(1, min(10, MAX_K), value=settings.k, step=1, label="Passages per answer")
                    mode = gr.Radio(list(MODES), value=settings.mode, label="Search mode",
                                    info="hybrid: meaning + keywords; dense: meaning; bm25: keywords")
                    source_filter = gr.Dropdown(sources0, value=[], multiselect=True, label="Search only in",
                                                info="leave empty to search every document",
                                                elem_id="tqa-sources")
                with gr.Accordion(page.panel_label(), open=False, elem_id="tqa-index") as index_panel:
                    info = gr.HTML(html_info, js_on_load=None, elem_id="tqa-info")
                    files = gr.File(file_count="multiple", file_types=list(UPLOAD_TYPES), type="filepath",
                                    label=upload_label, elem_id="tqa-upload")
                    add_btn = gr.Button("Add to the index", variant="primary", elem_id="tqa-add")
                    upload_status = gr.HTML("", js_on_load=None, elem_id="tqa-upload-status")

        ask_io: dict[str, Any] = dict(inputs=[question, k, mode, source_filter, turns],
                                      outputs=[chat, turns, status, question], api_visibility="private",
                                      show_progress="minimal")
        question.submit(on_ask, **ask_io)
        ask_btn.click(on_ask, **ask_io)
        example_box.example(on_example, inputs=[k, mode, source_filter, turns],
                            outputs=[chat, turns, status, question], api_visibility="private",
                            show_progress="hidden")
        chat.cite(on_cite, inputs=[turns], outputs=[viewer], api_visibility="private", show_progress="hidden")
        chat.newchat(on_clear, outputs=[chat, turns, status, viewer], api_visibility="private",
                     show_progress="hidden")
        add_btn.click(on_upload, inputs=[files], outputs=[upload_status, info, source_filter, files, index_panel],
                      api_visibility="private", concurrency_limit=1, concurrency_id="index")
        app.load(on_load, outputs=[info, source_filter, index_panel], api_visibility="private",
                 show_progress="hidden")
        gr.api(api_ask, api_name="ask")
    # Requests waiting beyond settings.queue_size are refused at once ("queue full") instead of piling up.
    app.queue(max_size=settings.queue_size, default_concurrency_limit=CONCURRENCY)
    app.tqa_page = page  # type: ignore[attr-defined]
    return app


def protected_paths(assistant: Assistant) -> list[str]:
    """Folders never served as files: the index and the corpus it was built from."""
    assert assistant.index.folder is not None
    paths = [assistant.index.folder.resolve()]
    corpus = assistant.manifest.corpus
    if corpus:
        paths.append(Path(corpus).resolve())
    return [str(p) for p in paths]


AUTH_MESSAGE = ("Log in with the name and password you were given. After several wrong passwords, a name waits a "
                "while before it may try again.")


def launch(app: Any, assistant: Assistant, *, host: str = "127.0.0.1", port: int = 7860, auth: Any = None,
           insecure_no_auth: bool = False, block: bool = True, quiet: bool = False) -> Any:
    """Start the server with the safe defaults. ``block=False`` returns once it is up (for tests).

    ``auth`` is an ``auth.Authenticator`` (or anything Gradio's ``auth=`` takes). Without it a non-local ``host`` is
    refused (``AuthRequired``) unless ``insecure_no_auth``, which serves it with a warning."""
    from .auth import Authenticator, check_exposure

    warning = check_exposure(host, auth=bool(auth), insecure_no_auth=insecure_no_auth)
    if warning:
        print(warning, file=sys.stderr)
    authenticator = auth if isinstance(auth, Authenticator) else None
    blocked = protected_paths(assistant) + ([os.path.realpath(authenticator.path)] if authenticator else [])
    page: Page = app.tqa_page
    result = app.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, show_error=False,
        auth=authenticator.gradio_check if authenticator else auth, auth_message=AUTH_MESSAGE if auth else None,
        max_file_size=page.max_upload_bytes, allowed_paths=[], blocked_paths=blocked,
        prevent_thread_lock=not block or authenticator is not None, quiet=quiet, theme=_theme(), css=CSS,
        footer_links=["api", "settings"],
        state_session_capacity=1000,  # conversations kept in memory (the oldest sessions' are dropped first)
        ssr_mode=False, mcp_server=False, pwa=False, enable_monitoring=False,
    )
    if authenticator is not None:
        # Gradio keeps logged-in sessions as token -> user name; this table re-reads the auth file on each lookup
        # and ends the sessions of users removed from it or given a new password.
        app.server_app.tokens = authenticator.sessions(app.server_app.tokens)
        if block:
            app.block_thread()
    return result


def serve(index: str = "index", host: str = "127.0.0.1", port: int = 7860, *, auth: Any = None,
          auth_file: str | None = None, insecure_no_auth: bool = False) -> None:
    """Load the index and the model once, then serve the page until interrupted (Ctrl+C). ``auth_file`` requires a
    login (users made by `tqa user add`); a non-local ``host`` without one is refused unless ``insecure_no_auth``.
    Both are checked before anything is loaded."""
    from .auth import Authenticator, check_exposure

    if auth_file is not None:
        auth = Authenticator(auth_file)  # a missing, damaged or empty auth file stops here
    check_exposure(host, auth=bool(auth), insecure_no_auth=insecure_no_auth)
    settings = Settings.from_env(index_dir=index)
    assistant = Assistant.load(index, settings=settings)
    assistant.ask("What do the documents say?")  # warm up the model, so the first reader's answer is quick too
    app = build_app(assistant)
    _, url, _ = launch(app, assistant, host=host, port=port, auth=auth, insecure_no_auth=insecure_no_auth,
                       block=False, quiet=True)
    info = assistant.info()
    n = info["documents"]
    login = ""
    if isinstance(auth, Authenticator):
        users = len(auth.users())
        login = f", login required ({users} user{'s' if users != 1 else ''} in {auth.path})"
    print(f"tqa: serving {index}/ ({n} document{'s' if n != 1 else ''}, {info['chunks']} passages) on {url}{login} "
          "- press Ctrl+C to stop", file=sys.stderr, flush=True)
    app.block_thread()
