"""Example questions made from an index's own documents (the web page's "Try" buttons), so that any corpus gets
examples about its own content rather than ours.

Each comes from a heading of a section with text of its own: "What do the documents say about <heading>?" (a
heading written as a question is used as it is). Headings that only label, such as "Article 12", "PART II" or a
shouted "LEAGUE OF NATIONS.", are left out; where a document has headings with English function words ("of",
"the"...), its others (another language's duplicates) are left out too, as the question around them is English. A
document without usable headings offers its file name when every word of the name is in its text
("budget-meeting.txt"); with neither, no examples.

The questions are spread over the documents (one each in turn, documents in name order) and through each document,
and each is asked once: only those answered (not abstained) are kept, so an example never shows "not covered".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .errors import TqaError
from .index import Index

FUNCTION_WORDS = frozenset({"the", "of", "and", "in", "on", "for", "to", "with", "against", "by", "from", "a", "an",
                            "about", "into", "between", "under", "its", "their", "how", "what", "why", "who"})
_NUMBER = re.compile(r"^(\d[\d.]*|[ivxlcdm]+)[.):]?$", re.IGNORECASE)  # 12, 4.2, IV, 3)
MAX_WORDS, MAX_CHARS = 12, 90


class NotNow(Exception):
    """Asking failed part-way (the index is being replaced, say): ``found`` holds the questions kept so far."""

    def __init__(self, found: list[str]) -> None:
        super().__init__("example questions interrupted")
        self.found = found


def topic(heading: str) -> str | None:
    """The heading as a question's topic, or None for a label, a shouted line or one too long to read as a topic."""
    text = " ".join(heading.split()).strip(" .:;,-#*\u2013\u2014")
    tokens = text.split()
    words = re.findall(r"[^\W\d_]+", text)
    if not tokens or len(tokens) > MAX_WORDS or len(text) > MAX_CHARS:
        return None
    if len(tokens) <= 3 and any(_NUMBER.match(t) for t in tokens):
        return None  # a label: "Article 12", "PART I", "Chapter 3"
    if text.isupper() or not any(len(w) >= 4 for w in words):
        return None
    return text


def question(text: str) -> str:
    """The question asked about a topic."""
    if text.endswith("?"):
        return text
    first, _, rest = text.partition(" ")
    if first in ("The", "A", "An") and rest:
        text = f"{first.lower()} {rest}"
    return f"What do the documents say about {text}?"


def spread(count: int) -> list[int]:
    """0..count-1 in an order whose every prefix is spread through them: the middle, the quarters, ..."""
    order: list[int] = []
    t = 1
    while len(order) < count:
        f, d, x = 0.0, 1.0, t
        while x:
            d, f, x = d * 2, f + (x & 1) / (d * 2), x >> 1
        j = min(int(f * count), count - 1)
        if j not in order:
            order.append(j)
        t += 1
    return order


def _headings(index: Index) -> tuple[dict[str, list[int]], dict[str, list[str]], set[str]]:
    """Each source's chunk rows, its usable headings in document order, and the topics seen (casefolded)."""
    rows: dict[str, list[int]] = {}
    headings: dict[str, list[str]] = {}
    seen: set[str] = set()
    sections: set[tuple[str, tuple[str, ...]]] = set()
    for i, chunk in enumerate(index.chunks):
        rows.setdefault(chunk.source, []).append(i)
        if not chunk.section or (chunk.source, chunk.section) in sections:
            continue
        sections.add((chunk.source, chunk.section))
        text = topic(chunk.section[-1])
        if text is not None and text.casefold() not in seen:
            seen.add(text.casefold())
            headings.setdefault(chunk.source, []).append(text)
    return rows, headings, seen


def _name_topic(index: Index, source: str, rows: Sequence[int], seen: set[str]) -> str | None:
    """The file name as a topic, when every word of it is in the document's text."""
    name = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", source.rsplit("/", 1)[-1])
    text = topic(" ".join(re.split(r"[\s_.\-]+", name)))
    if text is None or re.search(r"\d", text) or text.casefold() in seen:
        return None
    body = " ".join(index.chunks[i].text for i in rows).casefold()
    if not all(re.search(rf"\b{re.escape(w)}\b", body) for w in text.casefold().split()):
        return None
    seen.add(text.casefold())
    return text.lower()


def candidates(index: Index, limit: int) -> list[list[tuple[int, str]]]:
    """Per source (name order, at most ``limit``): its (place in the document, question) pairs in asking order."""
    rows, headings, seen = _headings(index)
    queues: list[list[tuple[int, str]]] = []
    for source in sorted(rows):
        if len(queues) >= limit:
            break  # sources after these are never reached
        found = headings.get(source, [])
        topics = [h for h in found if FUNCTION_WORDS & {w.lower() for w in h.split()}] or found
        if not topics:
            name = _name_topic(index, source, rows[source], seen)
            if name is None:
                continue
            topics = [name]
        queues.append([(j, question(topics[j])) for j in spread(len(topics))])
    return queues


def example_questions(index: Index, ask: Callable[[str], Any], n: int = 3) -> list[str]:
    """Up to ``n`` questions that ``ask`` answers (an answer with passages, not abstained), one per document in
    turn; at most 4n + 4 questions are asked. Deterministic. Raises NotNow when asking fails with a TqaError."""
    tries = 4 * n + 4  # questions asked at most: the bound on the work
    queues = candidates(index, tries)
    chosen: list[tuple[int, int, str]] = []  # (source, place in the document, question)
    step = 0
    while len(chosen) < n and tries > 0 and any(step < len(q) for q in queues):
        for qi, queue in enumerate(queues):
            if step >= len(queue) or len(chosen) >= n or tries <= 0:
                continue
            tries -= 1
            place, q = queue[step]
            try:
                answer = ask(q)
            except TqaError:
                raise NotNow([q for _, _, q in sorted(chosen)]) from None
            if not answer.abstained and answer.passages:
                chosen.append((qi, place, q))
        step += 1
    return [q for _, _, q in sorted(chosen)]
