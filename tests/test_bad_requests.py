"""Odd requests, checked once in the library and refused (or answered) alike through Python, the CLI and the
web API: a one-line message, the right exit code, never "unexpected ... report it".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tqa import Assistant, build_index
from tqa.cli import main
from tqa.errors import BadQuestion

from .support import FakeEmbedder, free_port

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")  # Gradio's unclosed event loops

K_RANGE = "whole number from 1 to 20"
BAD_K = [0, -1, 21, 2**63, -(2**63), 10**30, True, False, 2.5, float("nan"), float("inf"), "5", [3], {}]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("requests")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "good.md").write_text("# Shelters\n\nShelters give survivors a bed and a meal.\n")
    (corpus / "other.txt").write_text("Hotlines\nHotlines answer calls about shelters at night.\n")
    build_index(corpus, root / "index", embedder=FakeEmbedder())
    return root / "index"


@pytest.fixture(scope="module")
def qa(index) -> Assistant:
    return Assistant.load(index, embedder=FakeEmbedder())


@pytest.fixture
def cli(index, monkeypatch, capsys):
    """Run ``tqa ask ... --index INDEX`` in-process with the fake embedder: (exit code, stdout, stderr)."""
    import tqa.assistant

    monkeypatch.setattr(tqa.assistant, "load_embedder", lambda *a: FakeEmbedder())

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["ask", "--index", str(index), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def one_line_error(code: int, out: str, err: str, needle: str) -> None:
    assert code == 1, err
    assert err.startswith("error: ") and needle in err and "unexpected" not in err
    assert len(err.strip().splitlines()) == 1


# ---- the question --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["\ud800", "\udcff\udcfe", " \ud800 \x00 ", "\udfff\ud800"])
def test_a_question_of_lone_surrogates_is_empty(qa, cli, question):
    with pytest.raises(BadQuestion, match="empty"):
        qa.ask(question)
    one_line_error(*cli("--", question), "empty")


def test_lone_surrogates_are_removed_and_pairs_joined(qa, cli):
    ans = qa.ask("Shelters \ud800give\udcff survivors \ud83d\udee1?")
    assert ans.question == "Shelters give survivors \U0001f6e1?" and ans.passages
    code, out, err = cli("--json", "--", "Shelters \udcffbed")
    assert code == 0, err
    assert json.loads(out)["question"] == "Shelters bed"
    code, out, err = cli("--", "Shelters \udcffbed")
    assert code == 0 and "[1] good.md" in out, err


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=200))
def test_any_string_answers_or_is_refused_in_one_line_and_the_answer_encodes(qa, question):
    try:
        ans = qa.ask(question)
    except BadQuestion as exc:
        assert "\n" not in str(exc)
        return
    json.dumps(ans.to_dict(), ensure_ascii=False).encode("utf-8")  # no lone surrogate left anywhere


def test_a_question_that_is_not_text_is_refused(qa):
    for question in (None, 3, b"shelters", ["shelters"]):
        with pytest.raises(BadQuestion, match="must be text"):
            qa.ask(question)


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_the_tiniest_question_limit_still_asks_something(qa, limit):
    from dataclasses import replace

    tiny = Assistant(qa.index, qa.embedder, replace(qa.settings, max_question_chars=limit))
    ans = tiny.ask("Shelters give survivors a bed")
    assert 1 <= len(ans.question) <= limit and ans.warnings


# ---- k --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", BAD_K, ids=repr)
def test_k_out_of_range_or_not_a_whole_number_is_refused(qa, k):
    with pytest.raises(BadQuestion, match=K_RANGE):
        qa.ask("shelters", k=k)


@pytest.mark.parametrize("k", [1, 20, np.int64(3)], ids=repr)
def test_k_in_range_is_taken(qa, k):
    assert 1 <= len(qa.ask("shelters", k=k).passages) <= int(k)


@pytest.mark.parametrize("k", ["0", "21", "-1", "9223372036854775808", "99999999999999999999999"])
def test_cli_k_out_of_range_is_one_line(cli, k):
    one_line_error(*cli("-k", k, "shelters"), K_RANGE)


# ---- sources --------------------------------------------------------------------------------------------------


def test_a_string_of_sources_is_one_document_not_its_characters(qa):
    ans = qa.ask("shelters", sources="good.md")
    assert ans.passages and {p.source for p in ans.passages} == {"good.md"}
    with pytest.raises(BadQuestion, match="Not in the index: nope.md\\."):
        qa.ask("shelters", sources="nope.md")


@pytest.mark.parametrize("sources", [[1], ["good.md", None], [b"good.md"], 7, {"good.md": 1}, object()],
                         ids=repr)
def test_sources_that_are_not_names_are_refused(qa, sources):
    with pytest.raises(BadQuestion, match="sources must be a list of document names"):
        qa.ask("shelters", sources=sources)


def test_unknown_sources_are_named_on_one_line_whatever_they_hold(qa, cli):
    with pytest.raises(BadQuestion) as err:
        qa.ask("shelters", sources=["a\nb.md", "\ud800", "x" * 5000])
    message = str(err.value)
    assert "\n" not in message and "'a\\nb.md'" in message and "'\\ud800'" in message and len(message) < 400
    message.encode("utf-8")
    with pytest.raises(BadQuestion, match="n0, n1, .* and 20 more\\."):
        qa.ask("shelters", sources=[f"n{i}" for i in range(30)])
    one_line_error(*cli("--source", "a\nb.md", "--source", "\udcff", "shelters"), "Not in the index")


def test_empty_sources_mean_every_document(qa):
    assert qa.ask("shelters", sources=[]).to_dict() == qa.ask("shelters").to_dict()


# ---- mode -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["magic", 3, ["hybrid"], "\ud800", "hybrid\n"], ids=repr)
def test_unknown_modes_are_refused_in_one_line(qa, mode):
    with pytest.raises(BadQuestion, match="Unknown search mode") as err:
        qa.ask("shelters", mode=mode)
    assert "\n" not in str(err.value)
    str(err.value).encode("utf-8")


# ---- the web API: the same checks, through Gradio ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(qa, collect_gradio_garbage):
    from tqa.web import build_app, launch

    app = build_app(qa)
    _, url, _ = launch(app, qa, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        yield url
    finally:
        app.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


def raw_ask(server: str, *data: object) -> tuple[str, object]:
    """Call the ask endpoint with JSON written by hand (ASCII, with escapes): gradio_client cannot send a lone
    surrogate, a browser or another client can. Returns (event, payload): ("complete", [answer]) or
    ("error", {"error": message, ...})."""
    import httpx

    body = json.dumps({"data": list(data)}).encode("ascii")
    with httpx.Client(base_url=server, timeout=60) as http:
        r = http.post("gradio_api/call/ask", content=body, headers={"content-type": "application/json"})
        r.raise_for_status()
        stream = http.get(f"gradio_api/call/ask/{r.json()['event_id']}").text
    event = stream.split("event: ", 1)[1].split("\n", 1)[0]
    return event, json.loads(stream.split("data: ", 1)[1].split("\n", 1)[0])


@pytest.mark.parametrize("question", ["\ud800", "\udcff \udfff\ud800"], ids=repr)
def test_the_api_refuses_a_question_of_lone_surrogates_as_empty(server, question):
    event, payload = raw_ask(server, question, 5, "hybrid", None)
    assert event == "error" and payload["error"] == "Please type a question: it is empty."


def test_the_api_removes_lone_surrogates_from_a_question(server, qa):
    event, payload = raw_ask(server, "Shelters \ud800bed", 5, "hybrid", None)
    assert event == "complete" and payload == [qa.ask("Shelters bed").to_dict()]


@pytest.mark.parametrize(("args", "needle"), [
    (("shelters", 2**63), K_RANGE),
    (("shelters", -(2**63)), K_RANGE),
    (("shelters", True), K_RANGE),
    (("shelters", 2.5), K_RANGE),
    (("shelters", 5, "hybrid", [1]), "sources must be a list of document names"),
    (("shelters", 5, "hybrid", ["nope.md"]), "Not in the index"),
    (("shelters", 5, "magic"), "Unknown search mode"),
], ids=repr)
def test_the_api_refuses_with_the_librarys_message(client, args, needle):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=needle):
        client.predict(*args, api_name="/ask")


def test_the_api_takes_one_source_as_a_string(client, qa):
    res = client.predict("shelters", 5, "hybrid", "good.md", api_name="/ask")
    assert res == qa.ask("shelters", sources=["good.md"]).to_dict()
