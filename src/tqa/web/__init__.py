"""The web page: a thin Gradio layer over ``Assistant``. ``app.py`` at the project root and ``tqa serve`` build and
launch it.

The page is a conversation (kept in the browser session; every question is answered from the documents alone),
a source viewer opened by the citation marks, search settings, and an index panel that adds documents.

- ``app``: the layout and wiring (``build_app``), and the server with its safe defaults (``launch``, ``serve``);
- ``page``: the callbacks (``Page``), plain methods testable without a server;
- ``render``: library objects to HTML through the Jinja templates of ``templates/`` (autoescape: every piece of
  document text and every question is escaped there, once);
- ``assets/``: the page's CSS and JavaScript. Templates and assets are package data, read through
  ``importlib.resources``.
"""

from ..config import MAX_K
from .app import AUTH_MESSAGE, CONCURRENCY, build_app, launch, protected_paths, serve
from .page import MAX_TURNS, MAX_UPLOAD_FILES, UPLOAD_TYPES, Page
from .render import (
    ORDER_BASIS,
    Turn,
    quote,
    render_answer,
    render_context,
    render_conversation,
    render_empty_viewer,
    render_examples,
    render_info,
    render_status,
)

__all__ = [
    "AUTH_MESSAGE",
    "CONCURRENCY",
    "MAX_K",
    "MAX_TURNS",
    "MAX_UPLOAD_FILES",
    "ORDER_BASIS",
    "UPLOAD_TYPES",
    "Page",
    "Turn",
    "build_app",
    "launch",
    "protected_paths",
    "quote",
    "render_answer",
    "render_context",
    "render_conversation",
    "render_empty_viewer",
    "render_examples",
    "render_info",
    "render_status",
    "serve",
]
