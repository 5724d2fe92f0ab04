"""The page's callbacks: thin calls into ``Assistant``, formatted for the page by ``render``. Plain methods, usable
without a server (the tests call them directly); ``app.build_app`` wires them into Gradio."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..assistant import Answer, Assistant
from ..config import Settings
from ..errors import TqaError
from ..loaders import SUPPORTED, size_text
from .render import Turn, render_context, render_conversation, render_info, render_status

MAX_TURNS = 50  # conversation turns kept per browser session
MAX_UPLOAD_FILES = 20
# What the page offers and accepts for upload: the loader's own list (and only that), so a format the loader
# learns is offered at once.
UPLOAD_TYPES = tuple(SUPPORTED)


@dataclass
class Page:
    assistant: Assistant
    max_upload_bytes: int = 0
    fixed_examples: tuple[str, ...] | None = None  # else the index's own (``Assistant.example_questions``)

    def __post_init__(self) -> None:
        if not self.max_upload_bytes:
            self.max_upload_bytes = self.assistant.settings.max_file_bytes

    @property
    def examples(self) -> tuple[str, ...]:
        """The example questions to offer: about the documents the index holds now (computed once per index)."""
        if self.fixed_examples is not None:
            return self.fixed_examples
        return tuple(self.assistant.example_questions())

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
