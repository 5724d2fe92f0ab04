"""The web page without a browser: rendering, callbacks, and the running app's API and file routes.

Fast: the fake embedder, one small index and one server for the module.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from markupsafe import escape

from tqa import Assistant, build_index
from tqa.errors import AuthRequired
from tqa.loaders import SUPPORTED
from tqa.web import (
    MAX_K,
    Page,
    Turn,
    build_app,
    launch,
    protected_paths,
    quote,
    render_answer,
    render_context,
    render_conversation,
    render_empty_viewer,
    render_examples,
    render_info,
)

from .support import FakeEmbedder, free_port


def esc(value) -> str:
    """What the templates' autoescape makes of a value."""
    return str(escape(value))


EVIL = (
    "# Evil <b>heading</b>\n\n"
    "The zebra protocol <script>window.__pwned=1</script> and <img src=x onerror=\"window.__pwned=2\"> "
    "are described here & tested.\n"
)
UPLOAD_CAP = 64 * 1024

# Gradio opens asyncio event loops it never closes (gradio.utils.safe_get_lock, when Blocks and queues are built);
# their ResourceWarnings at garbage collection are third-party noise. Ignored in this module, and collected when it
# ends so that they don't surface in whichever later test happens to trigger a collection.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module", autouse=True)
def _collect_gradio_garbage(collect_gradio_garbage):
    yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("web") / "corpus"
    root.mkdir()
    (root / "sweden.md").write_text(
        "# Sweden\n\nSweden criminalises the purchase of sex rather than its sale.\n\n"
        "## Results\n\nTrafficking for sexual exploitation fell after the law.\n", encoding="utf-8")
    (root / "tech.txt").write_text(
        "Technology and trafficking\n"
        "Traffickers use social media to recruit victims. Cryptocurrencies make payments hard to trace.\n",
        encoding="utf-8")
    (root / "evil <i>.md").write_text(EVIL, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def qa(corpus) -> Assistant:
    embedder = FakeEmbedder()
    index = corpus.parent / "index"
    build_index(corpus, index, embedder=embedder)
    return Assistant.load(index, embedder=embedder)


@pytest.fixture(scope="module")
def server(qa):
    """The app running in-process on a free local port (started once for the module)."""
    app = build_app(qa, max_upload_bytes=UPLOAD_CAP)
    _, url, _ = launch(app, qa, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        yield url.rstrip("/")
    finally:
        app.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def one_note_index(tmp_path: Path) -> Assistant:
    """An index of one short note in tmp_path/corpus, loaded: a page to upload into."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\nShelters for survivors.\n")
    embedder = FakeEmbedder()
    build_index(corpus, tmp_path / "index", embedder=embedder)
    return Assistant.load(tmp_path / "index", embedder=embedder)


def evil_answer(qa: Assistant):
    ans = qa.ask("zebra protocol script", mode="bm25")
    assert ans.passages[0].source == "evil <i>.md"
    return ans


# ---- rendering ------------------------------------------------------------------------------------------


def test_rendering_escapes_document_text(qa):
    ans = evil_answer(qa)
    page = render_answer(replace(ans, abstained=False), turn=3)
    assert "<script" not in page and "<img" not in page and "<i>" not in page and "<b>heading" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "onerror=&#34;window.__pwned=2&#34;" in page
    assert "evil &lt;i&gt;.md" in page and "&amp; tested" in page
    # the only tags are ours
    tags = set(re.findall(r"<([a-z0-9]+)", page))
    assert tags <= {"div", "blockquote", "p", "button", "footer", "span", "details", "summary", "article", "header",
                    "mark", "textarea"}


def test_answer_shows_the_best_sentence_with_its_citation_then_the_passages(qa):
    ans = qa.ask("Cryptocurrencies make payments hard to trace", k=3)
    assert not ans.abstained
    page = render_answer(ans, turn=7)
    best = ans.passages[0]
    lead = re.search(r'<blockquote class="tqa-lead">(.*?)</blockquote>', page).group(1)
    assert best.highlight in lead and 'data-cite="7:1"' in lead
    for p in ans.passages:
        assert f'data-cite="7:{p.rank}"' in page and f'id="tqa-p-7-{p.rank}"' in page
    assert f"<mark>{best.highlight}</mark>" in page
    assert "tech.txt" in page and "§ Technology and trafficking" in page
    assert page.count('class="tqa-rel"') == len(ans.passages) and "ranked by score: meaning and keywords" in page
    assert "<details" in page and "tqa-closest" not in page


@pytest.mark.parametrize(("mode", "label", "basis"), [
    ("hybrid", "score", "ranked by score: meaning and keywords"),
    ("dense", "similarity", "ranked by similarity of meaning"),
    ("bm25", "keywords", "ranked by keyword score (BM25)"),
])
def test_the_meter_shows_the_score_the_passages_are_ranked_by(qa, mode, label, basis):
    ans = qa.ask("Trafficking victims social media sex purchase", k=4, mode=mode)
    assert len(ans.passages) >= 2
    page = render_answer(replace(ans, abstained=False))
    assert basis in page
    shown = re.findall(r'<span class="tqa-rel" title="([^"]*)">.*?width:(\d+)%.*?<span class="tqa-rel-num">([^<]*)<',
                       page, re.S)
    assert len(shown) == len(ans.passages)
    top = ans.passages[0].score
    for p, (title, width, number) in zip(ans.passages, shown, strict=True):
        assert number == f"{label} {p.score:.2f}"  # the ranking score, named
        scaled = p.score / top if mode == "bm25" else p.score  # keyword scores have no fixed scale
        assert int(width) == max(4, min(100, round(scaled * 100)))
        assert "which orders the passages" in title
        if mode != "dense":  # the other signals, in the tooltip
            assert f"similarity to the question {p.relevance:.2f}" in title
        if mode != "bm25" and p.keyword_score is not None:
            assert f"keyword score (BM25) {p.keyword_score:.2f}" in title
    assert int(shown[0][1]) == 100 or mode != "bm25"


def test_abstention_is_plain_with_the_closest_passages_behind_a_toggle(qa):
    strict = Assistant(qa.index, qa.embedder, replace(qa.settings, abstain_threshold=1.01))
    ans = strict.ask("Sweden purchase of sex")
    assert ans.abstained
    page = render_answer(ans)
    assert "The documents don&#39;t seem to cover this." in page
    assert "tqa-lead" not in page  # nothing is presented as the answer
    toggle = page.index('<details class="tqa-closest">')
    assert "<details" not in page[:toggle] and "open" not in page[toggle:toggle + 40]
    assert page.index("tqa-passage") > toggle and "not an answer" in page


def test_copy_ready_quote_carries_the_reference(qa):
    p = qa.ask("Sweden purchase of sex", k=1).passages[0]
    q = quote(p)
    assert q.startswith("\u201cSweden criminalises the purchase of sex") and q.endswith(p.citation())
    assert "sweden.md" in q and "§ Sweden" in q


def test_the_sentence_quote_is_the_highlight_with_its_own_offsets(qa):
    text = (Path(qa.manifest.corpus) / "tech.txt").read_text(encoding="utf-8")
    p = qa.ask("Cryptocurrencies payments hard to trace", k=1, mode="bm25").passages[0]
    assert p.highlight == "Cryptocurrencies make payments hard to trace." and p.highlight != p.text
    assert text[p.highlight_start:p.highlight_end] == p.highlight
    q = quote(p, sentence=True)
    assert q == (f"\u201cCryptocurrencies make payments hard to trace.\u201d \u2014 tech.txt, "
                 f"§ Technology and trafficking, chars {p.highlight_start}-{p.highlight_end}")
    assert p.start < p.highlight_start and f"chars {p.start}-{p.end}" in quote(p)


def test_lead_passages_and_viewer_each_offer_the_sentence_and_the_passage(qa):
    page = Page(qa)
    _, turns, _, _ = page.ask("Cryptocurrencies payments hard to trace", 2, "hybrid", None, [])
    ans = turns[0].answer
    html = render_conversation(turns)
    lead = re.search(r'<blockquote class="tqa-lead">(.*?)</blockquote>', html, re.S).group(1)
    viewer = page.cite(turns, "0:1")
    cards = re.findall(r'<article class="tqa-passage".*?</article>', html, re.S)
    assert len(cards) == len(ans.passages)
    for where, p in [(lead, ans.passages[0]), (viewer, ans.passages[0])] + list(zip(cards, ans.passages, strict=True)):
        quotes = dict(re.findall(r'<textarea class="tqa-quote" data-quote="(\w+)"[^>]*>([^<]*)</textarea>', where))
        assert quotes == {"sentence": esc(quote(p, sentence=True)), "passage": esc(quote(p))}
        assert 'data-copy="sentence"' in where and 'data-copy="passage"' in where and "data-quotes" in where
    # the viewer shows the sentence's quote; elsewhere the quotes wait in hidden fields for the buttons
    assert re.search(r'data-quote="sentence" readonly rows="\d+" aria-label', viewer)
    assert re.search(r'data-quote="sentence" readonly rows="\d+" hidden', lead)


def test_quotes_of_markup_stay_text(qa):
    ans = evil_answer(qa)
    p = ans.passages[0]
    html = render_answer(replace(ans, abstained=False)) + render_context(qa.context(p.source, p.start, p.end), p, 1)
    assert "<script" not in html and "<img" not in html
    # each quote stays inside its own field: no document text closes a textarea early
    assert html.count("<textarea") == html.count("</textarea>") == 6
    assert f">{esc(quote(p, sentence=True))}</textarea>" in html and f">{esc(quote(p))}</textarea>" in html
    assert "&lt;script&gt;" in esc(quote(p))


def test_source_viewer_marks_the_passage_in_its_section(qa):
    ans = qa.ask("Trafficking for sexual exploitation fell after the law", mode="bm25")
    p = ans.passages[0]
    ctx = qa.context(p.source, p.start, p.end)
    page = render_context(ctx, p, 1)
    assert '<mark class="tqa-in-context">' in page and "sweden.md" in page and "§ Sweden &gt; Results" in page
    marked = re.search(r'<mark class="tqa-in-context">(.*?)</mark>', page, re.S).group(1)
    assert re.sub(r"</?b>", "", marked) == p.text.replace("'", "&#39;")
    assert f"chars {p.start}\u2013{p.end}" in page


def test_source_viewer_escapes_and_windows_long_sections(qa):
    ans = evil_answer(qa)
    p = ans.passages[0]
    page = render_context(qa.context(p.source, p.start, p.end), p, 1)
    assert "<script" not in page and "<img" not in page and "&lt;script&gt;" in page
    text = "A" * 20000 + "PASSAGE" + "B" * 20000
    long_ctx = {"source": "x.txt", "section": "", "page": None, "start": 0, "end": len(text), "text": text,
                "passage_start": 20000, "passage_end": 20007}
    page = render_context(long_ctx)
    assert len(page) < 8000 and "<mark class=\"tqa-in-context\">PASSAGE</mark>" in page and "[\u2026]" in page


def test_info_panel(qa):
    page = render_info(qa.info())
    assert "fake-hash-64" in page and "Documents" in page and "evil &lt;i&gt;.md" in page
    assert "<i>" not in page


def test_info_panel_says_how_the_index_ranks_and_abstains(qa):
    info = qa.info()
    page = render_info(info)
    assert "Ranking" in page and "Abstention checks" in page
    assert ", ".join(info["abstention_checks"]) in page  # the checks tqa info lists, in the same order
    why = info["ranking_why"]
    assert why and str(escape(why)) in page  # the learned ranking's one sentence, escaped


def test_conversation_keeps_turns_in_order_and_starts_empty(qa):
    assert "Ask a question" in render_conversation([])
    turns = [Turn(0, "first <q>", qa.ask("Sweden")), Turn(1, "second", qa.ask("Cryptocurrencies"))]
    page = render_conversation(turns)
    assert page.index("first &lt;q&gt;") < page.index("second") and "2 questions" in page
    assert 'data-newchat="1"' in page


# ---- callbacks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_empty_question_gives_a_validation_message(qa, question):
    conv, turns, status, box = Page(qa).ask(question, 5, "hybrid", [], [])
    assert conv is None and turns == [] and box is None
    assert "Please type a question" in status and 'role="alert"' in status


def test_questions_are_capped_on_the_server(qa):
    page = Page(qa)
    ans = page.answer("Sweden purchase of sex " * 10000)
    assert len(ans.question) <= qa.settings.max_question_chars and ans.warnings
    conv, turns, _, _ = page.ask("Sweden " * 5000, 5, "hybrid", [], [])
    assert "only the start was used" in conv and len(turns[0].question) <= qa.settings.max_question_chars


@pytest.mark.parametrize(("k", "mode", "sources", "match"), [
    (0, "hybrid", None, "from 1 to"),
    (MAX_K + 1, "hybrid", None, "from 1 to"),
    (2.5, "hybrid", None, "whole number"),
    (True, "hybrid", None, "whole number"),
    (float("nan"), "hybrid", None, "whole number"),
    (float("inf"), "hybrid", None, "whole number"),
    ("5", "hybrid", None, "whole number"),
    (5, "magic", None, "mode"),
    (5, "hybrid", ["nope.txt"], "Not in the index"),
    (5, "hybrid", [3], "sources"),
])
def test_bad_arguments_are_refused_with_a_message(qa, k, mode, sources, match):
    from tqa.errors import BadQuestion

    with pytest.raises(BadQuestion, match=match):
        Page(qa).answer("Sweden", k, mode, sources)


def test_conversation_grows_and_citations_open_the_viewer(qa):
    page = Page(qa)
    conv, turns, status, box = page.ask("Sweden purchase of sex", 3, "hybrid", ["sweden.md"], [])
    conv, turns, status, box = page.ask("Cryptocurrencies", 2.0, "dense", None, turns)
    assert [t.id for t in turns] == [0, 1] and status == "" and box == ""
    assert {p.source for p in turns[0].answer.passages} == {"sweden.md"}
    viewer = page.cite(turns, "0:1")
    assert '<mark class="tqa-in-context">' in viewer and "sweden.md" in viewer and "Quote with reference" in viewer
    for bad in ("9:1", "0:99", "x", "", None, "0:1<script>"):
        assert "no longer in this conversation" in page.cite(turns, bad)
    assert render_empty_viewer().startswith("<div")


def test_upload_over_the_cap_or_of_another_type_is_refused(qa, tmp_path):
    page = Page(qa, max_upload_bytes=100)
    big = tmp_path / "big.md"
    big.write_text("x" * 101)
    status, _, sources = page.upload([str(big)])
    assert "larger than" in status and "tqa-status-error" in status and "uploads/big.md" not in sources
    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ")
    refused = page.upload([str(exe)])[0]
    assert f"tool.exe: only {' '.join(SUPPORTED)} files can be added." in refused and ".docx" in refused
    assert "Choose one or more files" in page.upload([])[0]
    empty = tmp_path / "empty.md"
    empty.write_text("")
    status = Page(qa).upload([str(empty)])[0]
    assert "Nothing was added" in status and "uploads/empty.md" in status
    assert not (Path(qa.manifest.corpus) / "uploads" / "big.md").exists()


def test_upload_indexes_and_is_searchable_at_once(tmp_path):
    qa = one_note_index(tmp_path)
    f = tmp_path / "up" / "Hotlines.md"
    f.parent.mkdir()
    f.write_text("# Hotlines\n\nThe zebra hotline answers in Swahili.\n")
    seen = []
    status, info, sources = Page(qa).upload([str(f)], on_progress=lambda *a: seen.append(a))
    assert "tqa-status-ok" in status and "uploads/Hotlines.md" in status
    assert sources == ["a.md", "uploads/Hotlines.md"] and "uploads/Hotlines.md" in info
    assert seen and seen[0][0] == "reading"
    assert qa.ask("zebra hotline Swahili", mode="bm25").passages[0].source == "uploads/Hotlines.md"


def test_launch_uses_the_safe_defaults_and_warns_when_exposed(qa, capsys):
    class Recorder:
        tqa_page = Page(qa, max_upload_bytes=1234)

        def launch(self, **kwargs):
            self.kwargs = kwargs

    app = Recorder()
    launch(app, qa, host="127.0.0.1", port=7861)
    kw = app.kwargs
    assert kw["share"] is False and kw["show_error"] is False and kw["server_name"] == "127.0.0.1"
    assert kw["max_file_size"] == 1234 and kw["allowed_paths"] == []
    assert set(kw["blocked_paths"]) == set(protected_paths(qa))
    assert str(Path(qa.manifest.corpus).resolve()) in kw["blocked_paths"]
    assert str(qa.index.path.parent.resolve()) in kw["blocked_paths"]
    assert capsys.readouterr().err == ""
    with pytest.raises(AuthRequired):  # no login: refused (tests/test_auth.py has the rest)
        launch(app, qa, host="0.0.0.0", port=7861)
    launch(app, qa, host="0.0.0.0", port=7861, insecure_no_auth=True)
    assert "without authentication" in capsys.readouterr().err
    launch(app, qa, host="0.0.0.0", port=7861, auth=("u", "p"))
    assert capsys.readouterr().err == ""


def test_app_has_no_flagging_and_a_bounded_queue(qa):
    app = build_app(qa)
    assert app._queue.max_size is not None and app._queue.max_size > 0
    config = app.get_config_file()
    assert not any("flag" in str(d.get("api_name") or "") for d in config["dependencies"])
    public = [d["api_name"] for d in config["dependencies"] if d.get("api_visibility", "public") == "public"]
    assert public == ["ask"]


# ---- the running app ----------------------------------------------------------------------------------------


def test_ask_endpoint_returns_the_documented_json(client, qa):
    res = client.predict("How does Sweden treat people who buy sex?", 2, "hybrid", None, api_name="/ask")
    assert set(res) >= {"question", "abstained", "message", "mode", "relevance", "threshold", "warnings", "passages"}
    assert res == qa.ask("How does Sweden treat people who buy sex?", k=2).to_dict()
    assert len(res["passages"]) <= 2
    p = res["passages"][0]
    assert set(p) >= {"text", "source", "section", "page", "start", "end", "score", "highlight", "highlight_start",
                      "highlight_end", "rank", "relevance", "citation"}
    assert p["source"] == "sweden.md"
    only = client.predict(question="victims", k=5, mode="bm25", sources=["tech.txt"], api_name="/ask")
    assert {p["source"] for p in only["passages"]} == {"tech.txt"} and only["mode"] == "bm25"
    assert client.predict("Sweden", api_name="/ask")["mode"] == qa.settings.mode


def test_ask_endpoint_validation_errors_are_messages(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Please type a question"):
        client.predict("   ", api_name="/ask")
    with pytest.raises(AppError, match="from 1 to"):
        client.predict("Sweden", 10_000, api_name="/ask")
    with pytest.raises(AppError, match="mode"):
        client.predict("Sweden", 3, "magic", api_name="/ask")


def test_ask_endpoint_caps_long_questions(client, qa):
    res = client.predict("Sweden purchase " * 20000, api_name="/ask")
    assert len(res["question"]) <= qa.settings.max_question_chars and res["warnings"]


def raw_get(server: str, path: str) -> tuple[int, str]:
    """GET without any client-side normalisation of the path (httpx would resolve ``..`` itself)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(server)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_file_routes_refuse_the_index_and_the_corpus(server, qa):
    import gradio

    gen = qa.index.path
    corpus = Path(qa.manifest.corpus).resolve()
    targets = [gen / "manifest.json", gen / "chunks.jsonl", gen / "documents.jsonl", qa.index.path.parent / "CURRENT",
               corpus / "sweden.md"]
    assert all(t.is_file() for t in targets)
    paths = [str(t.resolve()) for t in targets]
    # ../ traversal out of Gradio's own upload folder (which it does serve), plain and percent-encoded
    up = Path(gradio.utils.get_upload_folder()).resolve()
    up.mkdir(parents=True, exist_ok=True)
    ups = "/".join([".."] * len(up.parts))
    paths += [f"{up}/{ups}{corpus}/sweden.md", f"{up}/{ups.replace('..', '%2e%2e')}{corpus}/sweden.md",
              f"{up}/{ups}{gen}/manifest.json"]
    for path in paths:
        status, body = raw_get(server, f"/gradio_api/file={path}")
        assert status in (400, 403, 404), path
        assert "Sweden criminalises" not in body and "format_version" not in body


def test_uploads_over_the_cap_are_refused_by_the_server(server):
    import tempfile

    import gradio

    def temp_files() -> set[Path]:
        """Files under Gradio's upload folder and the temp folder (other test runs' pytest folders left out; the
        temp folder is shared, so a path that can't be read is skipped rather than failing this test)."""
        found = set()
        for root in {gradio.utils.get_upload_folder(), tempfile.gettempdir()}:
            for folder, dirs, names in os.walk(root):
                dirs[:] = [d for d in dirs if not d.startswith("pytest-of")]
                found.update(Path(folder, n) for n in names)
        return found

    def holds_the_refused_body(path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                return f.read(4096) == b"x" * 4096
        except OSError:
            return False

    before = temp_files()
    with httpx.Client(base_url=server, timeout=30) as http:
        r = http.post("/gradio_api/upload", files={"files": ("big.md", b"x" * (UPLOAD_CAP + 1), "text/markdown")})
        assert r.status_code == 413
        left = [p for p in temp_files() - before if holds_the_refused_body(p)]
        assert left == [], f"a refused upload left {left}"
        r = http.post("/gradio_api/upload", files={"files": ("small.md", b"# Small\n\nok\n", "text/markdown")})
        assert r.status_code == 200
        # the file route itself works (so the refusals above mean something): an upload is served back
        [path] = r.json()
        assert raw_get(server, f"/gradio_api/file={path}") == (200, "# Small\n\nok\n")


def test_page_is_served_without_external_assets(server):
    with httpx.Client(base_url=server, timeout=10) as http:
        page = http.get("/").text
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert srcs and not [s for s in srcs if s.startswith(("http:", "https:", "//"))]


def test_simultaneous_questions_get_the_same_answers_as_one_at_a_time(client, qa):
    questions = ["Sweden purchase of sex", "Cryptocurrencies payments", "social media recruit victims",
                 "zebra protocol", "Trafficking fell after the law", "What is the tallest mountain in Africa?"] * 2
    jobs = [client.submit(q, 3, "hybrid", None, api_name="/ask") for q in questions]
    results = [job.result(timeout=60) for job in jobs]
    assert results == [qa.ask(q, k=3).to_dict() for q in questions]


def test_source_viewer_shows_the_text_around_the_passage(tmp_path):
    from tqa.config import ChunkSettings

    corpus = tmp_path / "c"
    corpus.mkdir()
    body = " ".join(f"Sentence {i} is about shelter number {i}." for i in range(60))
    (corpus / "long.md").write_text(f"# Shelters\n\n{body}\n\n# Other\n\nNothing here.\n")
    embedder = FakeEmbedder()
    build_index(corpus, tmp_path / "i", embedder=embedder, chunking=ChunkSettings(300, 0))
    qa = Assistant.load(tmp_path / "i", embedder=embedder)
    page = Page(qa)
    _, turns, _, _ = page.ask("Sentence 30 is about shelter number 30", 1, "bm25", None, [])
    p = turns[0].answer.passages[0]
    assert p.section == "Shelters" and 0 < p.start
    viewer = page.cite(turns, "0:1")
    pattern = r'<div class="tqa-context">(.*?)<mark class="tqa-in-context">(.*?)</mark>(.*?)</div>'
    before, marked, after = re.search(pattern, viewer, re.S).groups()
    assert "Sentence 0 is about" in before and "Sentence 59 is about" in after and "Nothing here" not in after
    assert "Sentence 30 is about shelter number 30." in re.sub(r"</?b>", "", marked)


# ---- the relevance meter follows the order ----------------------------------------------------------------

METER = re.compile(r'<span class="tqa-rel[^"]*"[^>]*>.*?width:(\d+)%.*?<span class="tqa-rel-num">([^<]*)</span>', re.S)


def meters(page: str) -> list[tuple[int, float]]:
    """(bar width %, number shown) of each passage's meter, in the order the passages are shown."""
    return [(int(w), float(n.split()[-1])) for w, n in METER.findall(page)]


@pytest.mark.model
@pytest.mark.slow  # 92 questions with the real model, per mode
@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_the_meter_never_rises_down_the_ranking_on_the_default_questions(default_index, real_embedder, mode):
    import json

    qa = Assistant.load(default_index, embedder=real_embedder)
    questions = [json.loads(line)["question"] for line in
                 (Path(__file__).parent.parent / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    assert len(questions) > 50
    several = 0
    for q in questions:
        ans = qa.ask(q, k=5, mode=mode)
        shown = meters(render_answer(ans))
        assert len(shown) == len(ans.passages), q
        several += len(shown) >= 2
        widths, numbers = [w for w, _ in shown], [n for _, n in shown]
        assert widths == sorted(widths, reverse=True), (mode, q, shown)
        assert numbers == sorted(numbers, reverse=True), (mode, q, shown)
    assert several > len(questions) / 2  # most answers have passages to compare


# ---- what the page offers comes from the library ---------------------------------------------------------------


def component(app, elem_id: str) -> dict:
    [found] = [c["props"] for c in app.get_config_file()["components"] if c.get("props", {}).get("elem_id") == elem_id]
    return found


def test_upload_types_offered_and_accepted_are_the_loaders_list(qa, tmp_path):
    app = build_app(qa, max_upload_bytes=UPLOAD_CAP)
    upload = component(app, "tqa-upload")
    assert upload["file_types"] == list(SUPPORTED)
    assert upload["label"] == f"Add documents ({' '.join(SUPPORTED)}; up to 64 KB each)"
    # a format the loader reads beyond the first five is accepted by the page too
    own = one_note_index(tmp_path)
    rtf = tmp_path / "up" / "Okapi.rtf"
    rtf.parent.mkdir()
    rtf.write_text(r"{\rtf1\ansi{\fonttbl\f0\fswiss Helvetica;}\f0\pard The okapi hotline answers in Lingala.\par}")
    status, _, sources = Page(own).upload([str(rtf)])
    assert "tqa-status-ok" in status and "uploads/Okapi.rtf" in sources
    assert own.ask("okapi hotline Lingala", mode="bm25").passages[0].source == "uploads/Okapi.rtf"


def test_the_examples_are_the_index_own_and_follow_an_upload(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.txt").write_text("Call the plumber about the leaking kitchen tap before Friday.\n")
    embedder = FakeEmbedder()
    build_index(corpus, tmp_path / "index", embedder=embedder)
    own = Assistant.load(tmp_path / "index", embedder=embedder)
    app = build_app(own)
    assert component(app, "tqa-examples")["visible"] is False  # nothing to offer about untitled notes
    page = app.tqa_page
    assert page.examples == ()
    doc = tmp_path / "up" / "shelters.md"
    doc.parent.mkdir()
    doc.write_text("# Shelters for survivors\n\nShelters for survivors open every night of the year.\n")
    page.upload([str(doc)])
    assert page.examples == ("What do the documents say about Shelters for survivors?",)
    html = render_examples(page.examples)
    assert 'data-example="What do the documents say about Shelters for survivors?"' in html
    assert Page(own, fixed_examples=("Mine?",)).examples == ("Mine?",)  # build_app(examples=...) still wins


def test_the_shipped_default_corpus_is_not_named_in_the_web_layer():
    import tqa.web

    folder = Path(tqa.web.__file__).parent
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*")) if p.is_file()
                   and p.suffix in (".py", ".html", ".js", ".css"))
    for word in ("global-governance", "Palermo", "Sweden", "trafficking"):
        assert word not in text, word
