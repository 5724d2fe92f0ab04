"""What the tests share besides fixtures (those are in conftest.py): the verified copy of the shipped corpus, the
fake embedder unit tests use (a real implementation of tqa's Embedder interface), a free port for test servers."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .fakes import FakeEmbedder
from .shipped_corpus import copy_shipped_corpus

__all__ = ["CHROMIUM", "CORPUS", "ROOT", "TREATIES", "FakeEmbedder", "chromium", "free_port"]

ROOT = Path(__file__).resolve().parent.parent
# The treaty texts eval/treaties/questions.jsonl is about, read in place (the places the Makefile looks), or None
TREATIES = next((p for p in (ROOT.parent / "shared" / "data" / "treaties", ROOT.parent.parent / "shared" / "data" /
                             "treaties", Path("/work/shared/data/treaties")) if p.is_dir()), None)


def _shipped_corpus() -> Path:
    """The default corpus the tests read: a verified copy of exactly the shipped files (tests/shipped_corpus.py),
    made once per run, so that documents a user adds to corpus/ (uploads included) never change what is tested."""
    folder = Path(tempfile.mkdtemp(prefix="tqa-shipped-corpus-"))
    atexit.register(shutil.rmtree, folder, True)
    return copy_shipped_corpus(folder / "corpus")  # a changed shipped file stops the run, saying how to restore it


CORPUS = _shipped_corpus()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (servers in tests bind loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = "/usr/bin/chromium"  # Debian's (`make chromium`); Playwright never downloads a browser of its own


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian chromium driven by Playwright, closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            yield b
        finally:
            b.close()


# Six short country notes, each with two facts: a corpus small enough to tune a model on in a test.
TOPICS = [
    ("Sweden", "criminalises the purchase of sex rather than its sale", "street prostitution fell by half"),
    ("Canada", "funds shelters for survivors in every province", "survivors receive temporary residence permits"),
    ("Nepal", "sends many workers abroad through recruitment agencies", "agencies charge fees that create debts"),
    ("Thailand", "inspects fishing vessels at sea and in port", "crews were held on boats for years"),
    ("Nigeria", "works with courts against recruiters of young women", "the agency convicted hundreds"),
    ("Brazil", "keeps a public list of employers using slave labour", "firms on the list lose access to credit"),
]
