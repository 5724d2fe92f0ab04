"""Hostile and odd input: questions of any shape, and corpora with every kind of bad file."""

from __future__ import annotations

import os
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tqa import Assistant, build_index
from tqa.cli import main
from tqa.errors import BadQuestion

from .support import FakeEmbedder

NASTY = [
    "",
    "   \t\n ",
    "\x00\x00\x00",
    "What\x00 about\x07 shelters\x1b[31m?",
    "ما هو دور المنظمات غير الحكومية؟",  # right-to-left
    "‏‮shelters‬ ‎",  # bidi controls
    "🛟🚨 shelters for survivors? 👩‍👧",
    "Ελληνικά 中文 русский shelters",
    "x" * 100_000,
    "é" * 3000,
    "Cafe\u0301 re\u0301fugie\u0301s",
]


@pytest.fixture(scope="module")
def qa(tmp_path_factory) -> Assistant:
    root = tmp_path_factory.mktemp("hostile")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Shelters\n\nShelters give survivors a bed. Café réfugiés help too.\n")
    (corpus / "b.txt").write_text("Hotlines\nHotlines answer calls at night in three languages.\n")
    build_index(corpus, root / "index", embedder=FakeEmbedder())
    return Assistant.load(root / "index", embedder=FakeEmbedder())


def _answer_or_refusal(qa: Assistant, question: str):
    try:
        return qa.ask(question)
    except BadQuestion as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


@pytest.mark.parametrize("question", NASTY, ids=range(len(NASTY)))
def test_nasty_questions_answer_or_refuse_in_one_line(qa, question):
    ans = _answer_or_refusal(qa, question)
    if ans is not None:
        assert len(ans.question) <= qa.settings.max_question_chars
        assert "\x00" not in ans.question
        ans.to_dict()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=st.text(max_size=3000))
def test_any_text_answers_or_refuses_and_nfc_nfd_agree(qa, question):
    a = _answer_or_refusal(qa, unicodedata.normalize("NFC", question))
    b = _answer_or_refusal(qa, unicodedata.normalize("NFD", question))
    assert (a is None) == (b is None)
    if a is not None:
        assert a.to_dict() == b.to_dict()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=st.text(alphabet=st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=500))
def test_cli_never_shows_a_traceback(qa, question, monkeypatch_session, capsys):
    """Any text, lone surrogates (undecodable bytes on a command line) included."""
    code = main(["ask", "--index", str(qa.index.path.parent), "--", question])  # "--": a question may start with "-"
    out = capsys.readouterr()
    assert code in (0, 1)
    assert "Traceback" not in out.err
    if code == 1:
        assert len(out.err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def monkeypatch_session():
    import tqa.assistant

    mp = pytest.MonkeyPatch()
    mp.setattr(tqa.assistant, "load_embedder", lambda name: FakeEmbedder())
    yield mp
    mp.undo()


# ---- a corpus with every kind of bad file


def test_bad_corpus_files_are_reported_and_indexing_completes(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.md").write_text("# Good\n\nShelters give survivors a bed.\n")
    (corpus / "binary.txt").write_bytes(bytes(range(256)) * 40)
    (corpus / "latin1.txt").write_bytes("Réfugiés à Genève.\n".encode("cp1252"))
    (corpus / "utf16.txt").write_bytes("Hotlines at night.\n".encode("utf-16"))
    (corpus / "empty.md").write_bytes(b"")
    (corpus / "copy-of-good.md").write_bytes((corpus / "good.md").read_bytes())
    with open(corpus / "huge.txt", "wb") as f:  # a 200 MB file, sparse: costs no disk
        f.truncate(200 * 1024 * 1024)
    outside = tmp_path / "secret.txt"
    outside.write_text("SECRET outside the corpus\n")
    os.symlink(outside, corpus / "link-out.txt")
    (corpus / "vanishes.txt").write_text("This file disappears during indexing.\n")
    (corpus / "changes.txt").write_text("First version of a changing file.\n")

    import tqa.indexing

    real_read = tqa.indexing.read_bounded

    def racing_read(path, *args, **kwargs) -> bytes:
        if path.name == "binary.txt":  # while the first file is read, two later files change under our feet
            (corpus / "vanishes.txt").unlink(missing_ok=True)
            (corpus / "changes.txt").write_text("Second version, written during indexing.\n")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(tqa.indexing, "read_bounded", racing_read)
    s = build_index(corpus, tmp_path / "index", embedder=FakeEmbedder())
    reasons = {d["path"]: d["reason"] for d in s.skipped}
    assert "binary" in reasons["binary.txt"]
    assert "empty" in reasons["empty.md"]
    assert "duplicate of" in reasons["good.md"] or "duplicate of" in reasons["copy-of-good.md"]
    assert "larger than" in reasons["huge.txt"]
    assert "outside" in reasons["link-out.txt"]
    assert "vanished" in reasons["vanishes.txt"]
    assert {"latin1.txt", "utf16.txt", "changes.txt"} <= set(s.files_added)
    assert any(w["path"] == "latin1.txt" for w in s.warnings)
    qa = Assistant.load(tmp_path / "index", embedder=FakeEmbedder())
    texts = " ".join(c.text for c in qa.index.chunks)
    assert "SECRET" not in texts and "Second version" in texts  # the version read is the version indexed
    for line in s.lines():
        assert "\n" not in line
