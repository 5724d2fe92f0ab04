"""The web page: a thin Gradio layer over ``Assistant``. ``app.py`` and ``tqa serve`` build and launch it."""

from __future__ import annotations

import html
import os
import sys
from typing import Any

from .assistant import Answer, Assistant
from .config import Settings
from .errors import TqaError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
QUEUE_SIZE = 64


def render_answer(answer: Answer) -> str:
    """HTML for an answer. Every piece of document text is escaped: corpus content is shown as text."""
    out = []
    if answer.abstained:
        out.append(f'<p class="tqa-abstain"><strong>{html.escape(answer.message)}</strong></p>')
        if answer.passages:
            out.append("<details><summary>Closest passages (not an answer)</summary>")
    for p in answer.passages:
        a, b = p.highlight_start - p.start, p.highlight_end - p.start
        body = (html.escape(p.text[:a]) + f"<mark>{html.escape(p.text[a:b])}</mark>" + html.escape(p.text[b:]))
        where = [f"<code>{html.escape(p.source)}</code>"]
        if p.section:
            where.append(f"§ {html.escape(p.section)}")
        if p.page is not None:
            where.append(f"p. {p.page}")
        rel = f"relevance {p.relevance:.2f}" if p.relevance is not None else ""
        out.append(
            f'<div class="tqa-passage"><p><strong>[{p.rank}]</strong> {" · ".join(where)} '
            f'<small>chars {p.start}–{p.end} {rel}</small></p><blockquote>{body}</blockquote></div>'
        )
    if answer.abstained and answer.passages:
        out.append("</details>")
    return "\n".join(out)


def build_app(assistant: Assistant) -> Any:
    import gradio as gr

    settings = assistant.settings

    def ask(question: str, k: float = 5, mode: str = "hybrid") -> str:
        try:
            answer = assistant.ask(str(question or "")[: settings.max_question_chars * 2], k=int(k), mode=mode)
        except TqaError as exc:
            return f'<p class="tqa-error">{html.escape(str(exc))}</p>'
        return render_answer(answer)

    with gr.Blocks(title="tqa") as app:
        gr.Markdown("## tqa: ask your documents\nEvery answer is quoted from the documents, with its source.")
        with gr.Row():
            question = gr.Textbox(label="Question", placeholder="Ask a question…", scale=4,
                                  max_length=settings.max_question_chars)
            button = gr.Button("Ask", variant="primary", scale=1)
        with gr.Row():
            k = gr.Slider(1, 10, value=settings.k, step=1, label="Passages")
            mode = gr.Radio(["hybrid", "dense", "bm25"], value=settings.mode, label="Search mode")
        result = gr.HTML()
        question.submit(ask, [question, k, mode], result, api_name="ask_html")
        button.click(ask, [question, k, mode], result, api_name=False)
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=4)
    return app


def serve(index: str = "index", host: str = "127.0.0.1", port: int = 7860) -> None:
    settings = Settings.from_env(index_dir=index)
    assistant = Assistant.load(index, settings=settings)
    if host not in LOCAL_HOSTS:
        print(f"warning: serving on {host} without authentication; anyone who can reach it can ask questions.",
              file=sys.stderr)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(assistant)
    app.launch(server_name=host, server_port=port, share=False, show_error=False, inbrowser=False)
