"""The web page in a real browser: Debian's chromium driven by Playwright, headless, against the app started
in this process on a free local port with the real model. The apps start once for the module."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tqa import Assistant, build_index
from tqa.web import build_app, launch

from .support import CHROMIUM, CORPUS, ROOT, chromium, free_port

pytestmark = [
    pytest.mark.model,
    # Gradio opens asyncio event loops it never closes; their ResourceWarnings are third-party noise.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

ARTIFACTS = ROOT / "test-artifacts"
QUESTION = "How has technology changed human trafficking?"
DOCUMENT = "global-governance-and-human-trafficking.txt"
EVIL = (
    "# Zebra protocol\n\n"
    "The zebra protocol <script>window.__pwned=1</script> and <img src=x onerror=\"window.__pwned=2\"> "
    "describe how markup in a document must be shown as text. "
    "See [the zebra guide](javascript:window.__pwned=3) and ![zebra](x onerror=window.__pwned=4).\n"
)

if not Path(CHROMIUM).exists():  # `make test` installs it; say how rather than fail obscurely
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`make chromium`)", allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def _collect_gradio_garbage(collect_gradio_garbage):
    yield


def serve_in_process(qa: Assistant):
    app = build_app(qa)
    _, url, _ = launch(app, qa, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    return app, url.rstrip("/")


@pytest.fixture(scope="module")
def default_url(default_index, real_embedder):
    """The default corpus, as `make run` serves it."""
    app, url = serve_in_process(Assistant.load(default_index, embedder=real_embedder))
    yield url
    app.close()


@pytest.fixture(scope="module")
def tmp_url(tmp_path_factory, real_embedder):
    """A copy of the default corpus plus a document full of markup; uploads go here, never into corpus/."""
    root = tmp_path_factory.mktemp("browser")
    corpus = root / "corpus"
    shutil.copytree(CORPUS, corpus)
    (corpus / "zebra.md").write_text(EVIL, encoding="utf-8")
    build_index(corpus, root / "index", embedder=real_embedder)
    app, url = serve_in_process(Assistant.load(root / "index", embedder=real_embedder))
    yield url
    app.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


class Tab:
    """One page, with the requests it made and the errors it logged."""

    def __init__(self, browser, url: str):
        self.url = url
        # clipboard permissions, so that the copy buttons can be checked through the real clipboard
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                           permissions=["clipboard-read", "clipboard-write"])
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)
        self.page.wait_for_selector("#tqa-question textarea")
        self.page.wait_for_selector("#tqa-chat .tqa-empty")

    def copied_by(self, button) -> str:
        """Click a copy button and return what it put on the clipboard (emptied first)."""
        self.page.evaluate("navigator.clipboard.writeText('')")
        button.click()
        self.page.wait_for_function("navigator.clipboard.readText().then((t) => t !== '')")
        return self.page.evaluate("navigator.clipboard.readText()")

    def turns(self) -> int:
        return self.page.locator("#tqa-chat .tqa-turn").count()

    def ask(self, question: str):
        """Type the question, press Enter, and return the new turn once it is shown (and the seconds it took)."""
        n = self.turns()
        box = self.page.locator("#tqa-question textarea")
        box.fill(question)
        t0 = time.perf_counter()
        box.press("Enter")
        self.page.wait_for_function(f"document.querySelectorAll('#tqa-chat .tqa-turn').length > {n}")
        seconds = time.perf_counter() - t0
        return self.page.locator("#tqa-chat .tqa-turn").nth(n), seconds


def open_tab(browser, url):
    """A fresh tab on ``url``, closed afterwards; the page must not have raised a script error."""
    t = Tab(browser, url)
    yield t
    t.context.close()
    assert not t.errors, t.errors


@pytest.fixture
def tab(browser, default_url):
    yield from open_tab(browser, default_url)


@pytest.fixture
def tmp_tab(browser, tmp_url):
    yield from open_tab(browser, tmp_url)


def test_question_shows_cited_highlighted_passages(tab):
    tab.ask("What responsibilities does the Palermo Protocol lay out for countries?")  # warm up this session
    turn, seconds = tab.ask(QUESTION)
    lead = turn.locator(".tqa-lead")
    assert lead.locator(".tqa-cite").inner_text() == "[1]"
    passages = turn.locator(".tqa-passage")
    assert passages.count() == 5
    first = passages.nth(0)
    assert first.locator(".tqa-src").inner_text() == DOCUMENT
    assert first.locator(".tqa-trail").inner_text().startswith("§ ")
    assert first.locator(".tqa-rel-num").count() == 1
    highlight = first.locator(".tqa-text mark").inner_text()
    assert highlight and highlight in lead.inner_text()
    assert "traffickers" in first.inner_text().lower()
    ARTIFACTS.mkdir(exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "answered.png"), full_page=True)
    # the warm answer's time is recorded, not asserted (timings are too noisy here to pass or fail a test)
    (ARTIFACTS / "answer-seconds.txt").write_text(f"{seconds:.3f}\n")
    # nothing was fetched from anywhere but this server
    hosts = {urlsplit(u).netloc for u in tab.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {urlsplit(tab.url).netloc}


def test_citation_opens_the_source_viewer_with_the_passage_marked(tab):
    turn, _ = tab.ask(QUESTION)
    first = turn.locator(".tqa-passage").nth(0)
    section = first.locator(".tqa-sec").inner_text()
    highlight = first.locator(".tqa-text mark").inner_text()
    turn.locator(".tqa-lead .tqa-cite").click()
    viewer = tab.page.locator("#tqa-viewer .tqa-viewer")
    marked = viewer.locator("mark.tqa-in-context")
    marked.wait_for()
    assert viewer.locator(".tqa-viewer-src").inner_text() == DOCUMENT
    assert viewer.locator(".tqa-sec").inner_text() == section
    assert "passage [1]" in viewer.locator(".tqa-kicker").text_content()
    assert " ".join(highlight.split()) in " ".join(marked.inner_text().split())
    context = " ".join(viewer.locator(".tqa-context").inner_text().split())  # the section around the passage
    assert " ".join(marked.inner_text().split()) in context
    assert first.evaluate("e => e.classList.contains('tqa-active')")
    ARTIFACTS.mkdir(exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "citation.png"))  # the page as docs/screenshot.png shows it
    quote = viewer.locator("textarea[data-quote=passage]").input_value()
    assert quote.startswith("\u201c") and DOCUMENT in quote and section in quote
    # another passage's mark replaces the viewer
    turn.locator(".tqa-passage").nth(2).locator(".tqa-cite").click()
    tab.page.wait_for_function("document.querySelector('#tqa-viewer .tqa-kicker').innerText.includes('[3]')")


def test_unanswerable_question_says_so_plainly(tab):
    turn, _ = tab.ask("What is the tallest mountain in Africa?")
    assert "The documents don't seem to cover this" in turn.locator(".tqa-abstain-msg").inner_text()
    assert turn.locator(".tqa-lead").count() == 0
    toggle = turn.locator("details.tqa-closest")
    assert toggle.get_attribute("open") is None
    assert not turn.locator(".tqa-passage").first.is_visible()
    toggle.locator("summary").click()
    assert turn.locator(".tqa-passage").first.is_visible()


def test_empty_question_shows_a_validation_message(tab):
    tab.page.locator("#tqa-ask").click()
    status = tab.page.locator("#tqa-status .tqa-status-error")
    status.wait_for()
    assert "Please type a question" in status.inner_text()
    assert tab.turns() == 0
    tab.page.locator("#tqa-question textarea").fill("   ")
    tab.page.locator("#tqa-question textarea").press("Enter")
    time.sleep(0.5)
    assert tab.turns() == 0 and "Please type a question" in status.inner_text()
    # a real question clears the message
    tab.ask(QUESTION)
    tab.page.wait_for_function("!document.querySelector('#tqa-status .tqa-status-error')")


def test_example_question_and_new_conversation(tab):
    example = tab.page.locator(".tqa-example").nth(2)
    asked = example.inner_text()
    assert asked.startswith("What do the documents say about ")  # a question about this index's own headings
    example.click()
    tab.page.wait_for_function("document.querySelectorAll('#tqa-chat .tqa-turn').length === 1")
    assert tab.page.locator(".tqa-turn .tqa-q p").inner_text() == asked
    assert tab.page.locator(".tqa-turn .tqa-lead").count() == 1  # answered, not "not covered"
    tab.ask(QUESTION)
    assert tab.turns() == 2  # the history stays on the page
    tab.page.locator("[data-newchat]").click()
    tab.page.wait_for_selector("#tqa-chat .tqa-empty")
    assert tab.turns() == 0


def test_uploaded_markdown_is_searchable_at_once(tmp_tab, tmp_path):
    page = tmp_tab.page
    doc = tmp_path / "okapi-hotline.md"
    doc.write_text("# Okapi hotline\n\nThe okapi hotline answers calls from survivors in Lingala every night.\n",
                   encoding="utf-8")
    page.locator("#tqa-index").get_by_text("Index: 2 documents", exact=False).click()
    page.locator("#tqa-upload input[type=file]").set_input_files(str(doc))
    page.locator("#tqa-upload").get_by_text("okapi-hotline", exact=True).wait_for()  # shown as name + extension
    page.locator("#tqa-add").click()
    ok = page.locator("#tqa-upload-status .tqa-status-ok")
    ok.wait_for(timeout=60_000)
    assert "uploads/okapi-hotline.md" in ok.inner_text()
    info = page.locator("#tqa-info")
    assert "uploads/okapi-hotline.md" in info.text_content() and "3 documents" in info.inner_text()
    assert "Index: 3 documents" in page.locator("#tqa-index").inner_text()
    turn, _ = tmp_tab.ask("Which hotline answers survivors in Lingala?")
    first = turn.locator(".tqa-passage").nth(0)
    assert first.locator(".tqa-src").inner_text() == "uploads/okapi-hotline.md"
    assert "Lingala" in turn.locator(".tqa-lead").inner_text()


def test_markup_in_a_document_is_shown_as_text_and_never_runs(tmp_tab):
    page = tmp_tab.page
    turn, _ = tmp_tab.ask("What does the zebra protocol say about markup in a document?")
    card = turn.locator(".tqa-passage", has=page.locator(".tqa-src", has_text="zebra.md")).first
    text = card.locator(".tqa-text").text_content()
    assert "<script>window.__pwned=1</script>" in text and 'onerror="window.__pwned=2"' in text
    card.locator(".tqa-cite").click()
    page.locator("#tqa-viewer mark.tqa-in-context").wait_for()
    assert "<script>window.__pwned=1</script>" in page.locator("#tqa-viewer .tqa-context").inner_text()
    time.sleep(0.3)  # give an injected image's onerror a chance to fire
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#tqa-chat script, #tqa-chat img, #tqa-viewer script, #tqa-viewer img").count() == 0
    # Markdown links stay text too: no link to javascript: is created
    assert "[the zebra guide](javascript:window.__pwned=3)" in text
    assert page.locator("#tqa-chat a[href^='javascript'], #tqa-viewer a[href^='javascript']").count() == 0


def expected_quote(text: str, p, a: int, b: int) -> str:
    """The reference format, built here from the answer's fields: “text” — file, § section, p. N, chars a-b."""
    where = [p.source] + ([f"\u00a7 {p.section}"] if p.section else []) + ([f"p. {p.page}"] if p.page else [])
    return f"\u201c{' '.join(text.split())}\u201d \u2014 {', '.join(where)}, chars {a}-{b}"


def test_copy_buttons_put_the_sentence_or_the_passage_with_its_reference_on_the_clipboard(tab, real_embedder,
                                                                                         default_index):
    answer = Assistant.load(default_index, embedder=real_embedder).ask(QUESTION)  # what the page shows
    document = (CORPUS / DOCUMENT).read_text(encoding="utf-8")
    turn, _ = tab.ask(QUESTION)

    def both(p) -> tuple[str, str]:
        assert document[p.highlight_start:p.highlight_end] == p.highlight  # the sentence's own offsets
        assert document[p.start:p.end] == p.text
        return (expected_quote(p.highlight, p, p.highlight_start, p.highlight_end),
                expected_quote(p.text, p, p.start, p.end))

    best, third = answer.passages[0], answer.passages[2]
    lead = turn.locator(".tqa-lead")
    sentence, passage = both(best)
    assert len(sentence) < len(passage)
    assert tab.copied_by(lead.locator("[data-copy=sentence]")) == sentence
    assert lead.locator("[data-copy=sentence]").inner_text() == "Copied"
    assert tab.copied_by(lead.locator("[data-copy=passage]")) == passage

    card = turn.locator(".tqa-passage").nth(2)
    sentence, passage = both(third)
    assert " ".join(card.locator(".tqa-text mark").inner_text().split()) in sentence
    assert tab.copied_by(card.locator("[data-copy=sentence]")) == sentence
    assert tab.copied_by(card.locator("[data-copy=passage]")) == passage

    card.locator(".tqa-cite").click()  # the source viewer offers both too, the sentence's quote on show
    viewer = tab.page.locator("#tqa-viewer .tqa-viewer")
    tab.page.wait_for_function("document.querySelector('#tqa-viewer .tqa-kicker').innerText.includes('[3]')")
    assert viewer.locator("textarea[data-quote=sentence]").is_visible()
    assert viewer.locator("textarea[data-quote=sentence]").input_value() == sentence
    assert tab.copied_by(viewer.locator("[data-copy=sentence]")) == sentence
    assert tab.copied_by(viewer.locator("[data-copy=passage]")) == passage
    ARTIFACTS.mkdir(exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / "viewer.png"))


def test_markup_in_a_question_is_shown_as_text_and_never_runs(tmp_tab):
    page = tmp_tab.page
    question = 'Zebra <img src=x onerror="window.__pwned=5"> protocol <script>window.__pwned=6</script>?'
    turn, _ = tmp_tab.ask(question)
    assert turn.locator(".tqa-q p").text_content() == question
    time.sleep(0.3)  # give an injected image's onerror a chance to fire
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#tqa-chat script, #tqa-chat img").count() == 0
