"""A running assistant (the web server's) follows its index folder: a generation published by `tqa index` is
loaded once, before the next question, and a question keeps the index it started with."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import tqa.assistant
from tqa import Assistant, build_index
from tqa.errors import IndexMismatch
from tqa.web import Page

from .support import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.md").write_text("# Shelters\n\nShelters give survivors a bed.\n")
    return root


@pytest.fixture
def qa(corpus, tmp_path) -> Assistant:
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder())
    return Assistant.load(tmp_path / "index", embedder=FakeEmbedder())


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The generations the assistant tries to load (each call of load_index from assistant.py)."""
    seen: list[str] = []
    real = tqa.assistant.load_index

    def counting(index_dir, **kw):
        seen.append((Path(index_dir) / "CURRENT").read_text().strip())
        return real(index_dir, **kw)

    monkeypatch.setattr(tqa.assistant, "load_index", counting)
    return seen


def publish(corpus: Path, index: Path, name: str, text: str, embedder=None) -> None:
    (corpus / name).write_text(text)
    build_index(corpus, index, embedder=embedder or FakeEmbedder())


def test_a_document_indexed_by_another_process_is_found_by_the_next_question(qa, corpus, tmp_path, loads):
    index = tmp_path / "index"
    with pytest.raises(Exception, match="Not in the index: zebra.md"):
        qa.ask("zebra hotline", sources=["zebra.md"])
    (corpus / "zebra.md").write_text("# Hotlines\n\nThe zebra hotline answers in Swahili.\n")
    # `tqa index` in another process, as a user runs it while `tqa serve` is up
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.support import FakeEmbedder\nfrom tqa import build_index\n"
            f"build_index({str(corpus)!r}, {str(index)!r}, embedder=FakeEmbedder())\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    ans = qa.ask("zebra hotline Swahili", mode="bm25", sources=["zebra.md"])
    assert ans.passages[0].source == "zebra.md" and not ans.warnings
    assert qa.ask("zebra hotline Swahili", mode="bm25").passages[0].source == "zebra.md"
    assert len(loads) == 1  # once per publish, not once per question
    assert "zebra.md" in qa.sources() and "zebra.md" in qa.info()["sources"] and len(loads) == 1


def test_the_page_sees_a_new_document_in_its_list_and_its_answers(qa, corpus, tmp_path):
    page = Page(qa)
    assert page.panel()[1] == ["a.md"]
    publish(corpus, tmp_path / "index", "b.md", "# Okapi\n\nThe okapi shelter opens at night.\n")
    assert page.panel()[1] == ["a.md", "b.md"]
    assert page.answer("okapi shelter", 3, "bm25", ["b.md"]).passages[0].source == "b.md"


def test_concurrent_questions_load_each_publish_at_most_once(qa, corpus, tmp_path, monkeypatch):
    index = tmp_path / "index"
    real = tqa.assistant.load_index
    gate = threading.Event()
    counted: list[str] = []

    def slow(index_dir, **kw):  # hold each load open, so that questions keep arriving while it loads
        gate.wait(5)
        data = real(index_dir, **kw)
        counted.append(data.path.name)
        return data

    monkeypatch.setattr(tqa.assistant, "load_index", slow)
    errors: list[BaseException] = []
    seen: list[set[str]] = [set(), set()]
    stop = threading.Event()

    def asker(i: int) -> None:
        try:
            while not stop.is_set():
                ans = qa.ask("shelter night okapi zebra walrus", k=10, mode="bm25")
                seen[i].update(p.source for p in ans.passages)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=asker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    publishes = 3
    try:
        for n, animal in enumerate(("okapi", "zebra", "walrus")[:publishes]):
            publish(corpus, index, f"{animal}.md", f"# {animal}\n\nThe {animal} shelter opens at night.\n")
            gate.set()  # let the one load through; the questions meanwhile answered from the previous index
            wait_until(lambda n=n: len(counted) >= n + 1 or bool(errors))
            gate.clear()
        gate.set()
        # a last round of questions from both threads on the last index
        for i in range(2):
            seen[i].clear()
        wait_until(lambda: all(s >= {"walrus.md"} for s in seen) or bool(errors))
    finally:
        stop.set()
        gate.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert len(counted) == publishes and len(set(counted)) == publishes  # each publish loaded exactly once
    assert qa.index.path.name == counted[-1]


def wait_until(condition, limit: float = 60.0) -> None:
    """Poll ``condition``; the limit only keeps a broken build from hanging the suite."""
    import time

    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "gave up waiting"
        time.sleep(0.01)


class BlockingEmbedder(FakeEmbedder):
    """Encodes a question containing "HOLD" only once ``release`` is set (a question in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    def encode(self, texts, **kw):
        if any("HOLD" in t for t in texts):
            self.holding.set()
            assert self.release.wait(30)
        return super().encode(texts, **kw)


def test_a_question_in_flight_keeps_its_index_which_is_closed_after_it(corpus, tmp_path):
    index = tmp_path / "index"
    embedder = BlockingEmbedder()
    build_index(corpus, index, embedder=embedder)
    qa = Assistant.load(index, embedder=embedder)
    first = qa.index
    closed: list[str] = []
    first.close = lambda: closed.append("first")  # what the store offers to release a loaded index
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(ans=qa.ask("HOLD okapi shelter night", k=10, mode="bm25")))
    t.start()
    assert embedder.holding.wait(30)
    publish(corpus, index, "okapi.md", "# Okapi\n\nThe okapi shelter opens at night.\n", embedder)
    fresh = qa.ask("okapi shelter night", k=10, mode="bm25")  # loads the new generation meanwhile
    assert fresh.passages[0].source == "okapi.md" and qa.index is not first
    assert closed == []  # still answering the question in flight
    embedder.release.set()
    t.join(30)
    assert {p.source for p in result["ans"].passages} == {"a.md"}  # the index it started with
    assert closed == ["first"]


def test_an_index_handed_to_the_assistant_is_not_closed_by_it(corpus, tmp_path):
    from tqa.store import load_index

    index = tmp_path / "index"
    build_index(corpus, index, embedder=FakeEmbedder())
    data = load_index(index)
    closed: list[int] = []
    data.close = lambda: closed.append(1)
    qa = Assistant(data, FakeEmbedder(), Assistant.load(index, embedder=FakeEmbedder()).settings)
    publish(corpus, index, "b.md", "# B\n\nThe okapi shelter.\n")
    assert qa.ask("okapi", mode="bm25").passages[0].source == "b.md"
    assert closed == []  # its owner may still use it


class OtherModel(FakeEmbedder):
    name = "another-model"


def test_an_index_built_with_another_model_is_refused_in_one_line(qa, corpus, tmp_path, loads):
    from tqa.cli import inline

    build_index(corpus, tmp_path / "index", embedder=OtherModel(), rebuild=True)
    for _ in range(3):
        with pytest.raises(IndexMismatch, match="another-model") as err:
            qa.ask("shelters")
        assert "\n" not in str(err.value) and "tqa index --rebuild" in inline(err.value)
    assert len(loads) == 1  # the refused generation is not loaded again for every question
    assert qa.info()["model"] == "fake-hash-64"  # the panel still shows what is loaded
    publish(corpus, tmp_path / "index", "c.md", "# C\n\nThe walrus shelter.\n", OtherModel())
    with pytest.raises(IndexMismatch):
        qa.ask("walrus")
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), rebuild=True)
    assert qa.ask("walrus", mode="bm25").passages[0].source == "c.md"  # a compatible publish is followed again


def test_a_damaged_new_generation_leaves_the_loaded_index_answering_with_a_warning(qa, corpus, tmp_path, loads):
    index = tmp_path / "index"
    publish(corpus, index, "b.md", "# B\n\nThe okapi shelter.\n")
    gen = index / (index / "CURRENT").read_text().strip()
    with open(gen / "chunks.jsonl", "ab") as f:
        f.write(b"junk")
    ans = qa.ask("Shelters give survivors a bed")
    assert ans.passages and "cannot be used" in ans.warnings[0] and "tqa index --rebuild" in ans.warnings[0]
    assert qa.ask("Shelters").warnings and len(loads) == 1
    json.dumps(ans.to_dict())


def test_a_removed_index_folder_leaves_the_loaded_index_answering(qa, tmp_path):
    shutil.rmtree(tmp_path / "index")
    ans = qa.ask("Shelters give survivors a bed", mode="bm25")
    assert ans.passages[0].source == "a.md"


@pytest.mark.model
def test_a_server_answering_through_the_exported_encoder_follows_two_publishes(tmp_path, real_embedder):
    """The web server's assistant encodes questions with the index's exported model (fp32, whatever precision the
    passages were embedded at): a publish by `tqa index` is followed, not refused as another precision, and a
    citation of the first index still opens after two publishes (the generation is held, not deleted)."""
    from tqa.query_encoder import OnnxQueryEncoder

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Shelters\n\nShelters give survivors of trafficking a safe bed and counselling.\n")
    index = tmp_path / "index"
    build_index(corpus, index, embedder=real_embedder)
    qa = Assistant.load(index)
    assert isinstance(qa.embedder, OnnxQueryEncoder)
    page = Page(qa)
    first = page.answer("Where can survivors sleep safely?")
    assert first.passages and first.passages[0].source == "a.md"
    publish(corpus, index, "b.md", "# Hotlines\n\nA hotline answers calls from victims day and night.\n", real_embedder)
    publish(corpus, index, "c.md", "# Courts\n\nJudges hear trafficking cases in special chambers.\n", real_embedder)
    answer = page.answer("Who answers calls from victims at night?")
    assert not answer.warnings, answer.warnings
    assert answer.passages[0].source == "b.md"
    assert "c.md" in qa.sources()
    p = first.passages[0]
    ctx = qa.context(p.source, p.start, p.end)  # from the index the answer was given by, or the live one
    assert ctx["text"][ctx["passage_start"]:ctx["passage_end"]] == p.text
