"""The page's layout and wiring: ``build_app`` lays the components out in Gradio Blocks and connects them to the
callbacks of ``page.Page``; ``launch`` starts the server with the safe defaults (local address, no share link,
bounded queue, upload cap, no file serving of the index or corpus folders); ``serve`` is `tqa serve`.

What the page shows comes from ``render`` (templates); its CSS and JavaScript are the files in ``assets/``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..assistant import Assistant
from ..config import MAX_K, MODES, Settings
from ..errors import TqaError
from ..loaders import size_text
from .page import UPLOAD_TYPES, Page, Turn
from .render import asset, render_conversation, render_empty_viewer, render_examples, render_header

CONCURRENCY = 4  # questions answered at once (model encoding is serialised inside the embedder)
AUTH_MESSAGE = ("Log in with the name and password you were given. After several wrong passwords, a name waits a "
                "while before it may try again.")


def _theme() -> Any:
    import gradio as gr

    # System fonts: nothing is fetched from a font service.
    return gr.themes.Soft(
        primary_hue="indigo",
        font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial",
              "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"],
    )


def build_app(assistant: Assistant, *, examples: Sequence[str] | None = None,
              max_upload_bytes: int | None = None) -> Any:
    """The page as a ``gr.Blocks``; launch it with ``launch(app, ...)`` (which applies the theme, CSS and the
    safe server settings). ``examples`` default to the index's own (``Assistant.example_questions``: about the
    documents it holds, refreshed when the page loads and after an upload)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    page = Page(assistant, max_upload_bytes or 0, None if examples is None else tuple(examples))
    with gr.Blocks(title="tqa \u2014 ask your documents", analytics_enabled=False) as app:
        ui = _layout(page)
        _wire(app, ui, _callbacks(page))
    # Requests waiting beyond settings.queue_size are refused at once ("queue full") instead of piling up.
    app.queue(max_size=assistant.settings.queue_size, default_concurrency_limit=CONCURRENCY)
    app.tqa_page = page  # type: ignore[attr-defined]
    return app


def _callbacks(page: Page) -> SimpleNamespace:
    """What each event does: Gradio's side of ``Page``'s calls (updates, skips, progress, errors)."""
    import gradio as gr

    settings = page.assistant.settings

    def on_ask(question: str, k: float, mode: str, sources: list[str] | None, turns: list[Turn] | None):
        conv, turns, status, box = page.ask(question, k, mode, sources, turns)
        return (gr.skip() if conv is None else conv), turns, status, (gr.skip() if box is None else box)

    def on_cite(turns: list[Turn] | None, evt: Any):
        return page.cite(turns, (evt._data or {}).get("cite"))

    # Gradio recognises the event argument by its (resolved) type; annotations are strings in this module.
    on_cite.__annotations__ = {"evt": gr.EventData}

    def on_example(k: float, mode: str, sources: list[str] | None, turns: list[Turn] | None, evt: Any):
        # the button's own question (it may be from before an upload changed the list): asked like a typed one
        q = (evt._data or {}).get("example")
        if not isinstance(q, str):
            return gr.skip(), turns, "", gr.skip()
        return on_ask(q, k, mode, sources, turns)

    on_example.__annotations__ = {"evt": gr.EventData}

    def on_clear():
        return render_conversation([]), [], "", render_empty_viewer()

    def examples_update() -> Any:
        shown = page.examples
        return gr.update(value=render_examples(shown), visible=bool(shown))

    def on_load():
        info, sources = page.panel()
        return info, gr.update(choices=sources), gr.update(label=page.panel_label()), examples_update()

    def on_upload(files: list[str] | None, progress=gr.Progress()):  # noqa: B008 (Gradio's injection idiom)
        progress(0, desc="Saving the files")

        def report(stage: str, done: int, total: int) -> None:
            progress((done, max(total, 1)), desc="Reading documents", unit="files")

        status, info, sources = page.upload(files, on_progress=report)
        progress(1, desc="Done")
        return (status, info, gr.update(choices=sources), None, gr.update(label=page.panel_label()),
                examples_update())

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

    return SimpleNamespace(on_ask=on_ask, on_cite=on_cite, on_example=on_example, on_clear=on_clear,
                           on_load=on_load, on_upload=on_upload, api_ask=api_ask)


def _layout(page: Page) -> SimpleNamespace:
    """The components, laid out (called inside the Blocks context)."""
    import gradio as gr

    settings = page.assistant.settings
    html_info, sources0 = page.panel()
    upload_label = (f"Add documents ({' '.join(UPLOAD_TYPES)}; up to {size_text(page.max_upload_bytes)} each)")
    turns = gr.State([])
    gr.HTML(render_header(), js_on_load=None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            chat = gr.HTML(render_conversation([]), elem_id="tqa-chat",
                           js_on_load=asset("copy.js") + asset("chat.js"))
            status = gr.HTML("", elem_id="tqa-status", js_on_load=None)
            with gr.Row(equal_height=True, elem_id="tqa-ask-row"):
                question = gr.Textbox(show_label=False, placeholder="Ask a question about the documents\u2026",
                                      max_length=settings.max_question_chars, lines=1, max_lines=4, scale=6,
                                      autofocus=True, elem_id="tqa-question", submit_btn=False)
                ask_btn = gr.Button("Ask", variant="primary", scale=0, min_width=100, elem_id="tqa-ask")
            examples0 = page.examples
            example_box = gr.HTML(render_examples(examples0), elem_id="tqa-examples",
                                  js_on_load=asset("examples.js"), visible=bool(examples0))
        with gr.Column(scale=2, min_width=320, elem_id="tqa-side"):
            viewer = gr.HTML(render_empty_viewer(), elem_id="tqa-viewer",
                             js_on_load=asset("copy.js") + asset("viewer.js"))
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
    return SimpleNamespace(turns=turns, chat=chat, status=status, question=question, ask_btn=ask_btn,
                           example_box=example_box, viewer=viewer, k=k, mode=mode, source_filter=source_filter,
                           index_panel=index_panel, info=info, files=files, add_btn=add_btn,
                           upload_status=upload_status)


def _wire(app: Any, ui: SimpleNamespace, cb: SimpleNamespace) -> None:
    """Each event to its callback (called inside the Blocks context)."""
    import gradio as gr

    private: dict[str, Any] = dict(api_visibility="private")
    answer_out = [ui.chat, ui.turns, ui.status, ui.question]
    ui.question.submit(cb.on_ask, inputs=[ui.question, ui.k, ui.mode, ui.source_filter, ui.turns],
                       outputs=answer_out, show_progress="minimal", **private)
    ui.ask_btn.click(cb.on_ask, inputs=[ui.question, ui.k, ui.mode, ui.source_filter, ui.turns],
                     outputs=answer_out, show_progress="minimal", **private)
    ui.example_box.example(cb.on_example, inputs=[ui.k, ui.mode, ui.source_filter, ui.turns], outputs=answer_out,
                           show_progress="hidden", **private)
    ui.chat.cite(cb.on_cite, inputs=[ui.turns], outputs=[ui.viewer], show_progress="hidden", **private)
    ui.chat.newchat(cb.on_clear, outputs=[ui.chat, ui.turns, ui.status, ui.viewer], show_progress="hidden",
                    **private)
    ui.add_btn.click(cb.on_upload, inputs=[ui.files],
                     outputs=[ui.upload_status, ui.info, ui.source_filter, ui.files, ui.index_panel, ui.example_box],
                     concurrency_limit=1, concurrency_id="index", **private)
    app.load(cb.on_load, outputs=[ui.info, ui.source_filter, ui.index_panel, ui.example_box],
             show_progress="hidden", **private)
    gr.api(cb.api_ask, api_name="ask")


def protected_paths(assistant: Assistant) -> list[str]:
    """Folders never served as files: the index and the corpus it was built from."""
    assert assistant.index.folder is not None
    paths = [assistant.index.folder.resolve()]
    corpus = assistant.manifest.corpus
    if corpus:
        paths.append(Path(corpus).resolve())
    return [str(p) for p in paths]


def launch(app: Any, assistant: Assistant, *, host: str = "127.0.0.1", port: int = 7860, auth: Any = None,
           insecure_no_auth: bool = False, block: bool = True, quiet: bool = False) -> Any:
    """Start the server with the safe defaults. ``block=False`` returns once it is up (for tests).

    ``auth`` is an ``auth.Authenticator`` (or anything Gradio's ``auth=`` takes). Without it a non-local ``host`` is
    refused (``AuthRequired``) unless ``insecure_no_auth``, which serves it with a warning."""
    from ..auth import Authenticator, check_exposure

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
        prevent_thread_lock=not block or authenticator is not None, quiet=quiet, theme=_theme(), css=asset("tqa.css"),
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
    from ..auth import Authenticator, check_exposure

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
