"""The login page in a real browser: Debian's chromium driven by Playwright, headless, against the app started in
this process on a free loopback port with a login (an auth file made by `tqa user add`'s code). The fake embedder
answers: this is about the login, not about retrieval."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from argon2 import PasswordHasher

from tqa import Assistant, build_index
from tqa.auth import Authenticator, add_user
from tqa.web import build_app, launch

from .support import CHROMIUM, FakeEmbedder, chromium, free_port

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")  # Gradio's unclosed event loops

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # weak on purpose: tests only

if not Path(CHROMIUM).exists():  # `make test` installs it; say how rather than fail obscurely
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`make chromium`)", allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def _collect_gradio_garbage(collect_gradio_garbage):
    yield


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth-browser")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "sweden.md").write_text(
        "# Sweden\n\nSweden criminalises the purchase of sex rather than its sale.\n", encoding="utf-8")
    (corpus / "tech.txt").write_text("Traffickers use social media to recruit victims.\n", encoding="utf-8")
    embedder = FakeEmbedder()
    build_index(corpus, root / "index", embedder=embedder)
    qa = Assistant.load(root / "index", embedder=embedder)
    users = root / "users.json"
    add_user(users, "alice", "correct horse", hasher=FAST)
    app = build_app(qa)
    _, address, _ = launch(app, qa, host="127.0.0.1", port=free_port(),
                           auth=Authenticator(users, log=lambda line: None), block=False, quiet=True)
    yield address.rstrip("/")
    app.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    errors: list[str] = []
    requests: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(url)
    yield pg
    hosts = {urlsplit(u).netloc for u in requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    context.close()
    assert not errors, errors
    assert hosts == {urlsplit(url).netloc}  # the login page fetches nothing from anywhere else


def log_in(page, name: str, password: str) -> None:
    """Log in and wait for the server's answer: a message left by an earlier failure is on the page already, so
    the next step must not start while this attempt is still in flight (it raced the next attempt's typing)."""
    page.locator("input[data-testid=textbox]").fill(name)
    page.locator("input[type=password]").fill(password)
    with page.expect_response(lambda r: r.request.method == "POST" and urlsplit(r.url).path.endswith("/login")):
        page.get_by_role("button", name="Login").click()


def test_login_page_refuses_a_wrong_password_then_admits_the_right_one_and_answers(page):
    page.get_by_role("heading", name="Login").wait_for()
    assert "Log in with the name and password you were given" in page.locator("p.auth").inner_text()
    assert page.locator("#tqa-question").count() == 0  # nothing of the app before the login
    assert "Sweden" not in page.content()

    log_in(page, "alice", "wrong horse")
    page.locator("p.creds").wait_for()
    assert "incorrect" in page.locator("p.creds").inner_text().lower()
    assert page.locator("#tqa-question").count() == 0

    log_in(page, "mallory", "correct horse")  # an unknown name is refused the same way
    page.locator("p.creds").wait_for()
    assert page.locator("#tqa-question").count() == 0

    log_in(page, "alice", "correct horse")
    box = page.locator("#tqa-question textarea")
    box.wait_for()
    box.fill("Does Sweden criminalise the purchase of sex?")
    box.press("Enter")
    turn = page.locator("#tqa-chat .tqa-turn").first
    turn.wait_for()
    first = turn.locator(".tqa-passage").first
    assert first.locator(".tqa-src").inner_text() == "sweden.md"
    assert "criminalises the purchase" in first.inner_text()


def test_logout_returns_to_the_login_page(page, url):
    log_in(page, "alice", "correct horse")
    page.locator("#tqa-question textarea").wait_for()
    page.goto(f"{url}/logout")
    page.get_by_role("heading", name="Login").wait_for()
    assert page.locator("#tqa-question").count() == 0
    page.goto(url)  # and the old session is gone, not merely hidden
    page.get_by_role("heading", name="Login").wait_for()
    assert page.locator("#tqa-question").count() == 0
