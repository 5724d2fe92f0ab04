"""What the CLI prints: one line per record whatever a file name holds, and a quiet, deliberate exit when the
reader of the output goes away (``tqa ask ... | head -1``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tqa import build_index
from tqa.cli import EXIT_BROKEN_PIPE, inline, main
from tqa.config import ChunkSettings

from .support import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent
ODD_NAMES = ["a\nb.md", "cr\rlf.md", "esc\x1b[31mred.md", "tab\there.md", "bidi\u202eevil.md", "sep\u2028x.md",
             "nel\x85x.md", "bell\x07.md"]


@pytest.fixture
def odd_index(tmp_path, monkeypatch) -> Path:
    """An index whose documents have names that discovery now skips (control characters): such names reach the
    CLI from an index an earlier tqa built, and must still print on one line each."""
    import tqa.loaders.files

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, name in enumerate(ODD_NAMES):
        (corpus / name).write_text(f"# Shelter {i}\n\nShelters number {i} give survivors a bed.\n")
    with monkeypatch.context() as m:
        m.setattr(tqa.loaders.files, "_name_problem", lambda name, kind: None)  # as an earlier tqa discovered
        build_index(corpus, tmp_path / "index", embedder=FakeEmbedder())
    return tmp_path / "index"


def test_discovery_now_skips_such_names_and_lists_each_on_one_line(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "plain.md").write_text("# Shelter\n\nShelters give survivors a bed.\n")
    for i, name in enumerate(ODD_NAMES):
        (corpus / name).write_text(f"# Shelter {i}\n\nShelters number {i} give survivors a bed.\n")
    summary = build_index(corpus, tmp_path / "index", embedder=FakeEmbedder())
    assert summary.files_added == ["plain.md", "tab\there.md"]  # a tab is the one odd character a name may hold
    skipped = [line for line in summary.lines() if line.startswith("skipped: ")]
    assert len(skipped) == len(ODD_NAMES) - 1
    assert all(len(line.splitlines()) == 1 and "\x1b" not in line for line in summary.lines())


def test_info_prints_one_line_per_document_whatever_its_name(odd_index, capsys):
    assert main(["info", "--index", str(odd_index)]) == 0
    lines = capsys.readouterr().out.splitlines()  # splitlines also splits at \r, \x1c-\x1e, \x85, \u2028...
    documents = [line for line in lines if line.startswith("  ")]
    assert len(documents) == len(ODD_NAMES) and len(lines) == 9 + len(ODD_NAMES)  # 9: the index, then documents
    for name in ODD_NAMES:
        assert sum(inline(name) in line for line in documents) == 1
    assert "  a\\nb.md  (md, 1 chunks)" in documents and not any("\x1b" in line for line in lines)


def test_ask_prints_each_citation_on_one_line(odd_index, fake_model, capsys):
    assert main(["ask", "Shelters give survivors a bed", "-k", "20", "--index", str(odd_index)]) == 0
    lines = capsys.readouterr().out.splitlines()
    citations = [line for line in lines if line.startswith("[")]
    assert len(citations) == len(ODD_NAMES)
    assert all(line.startswith("[") or line.startswith("    ") or line == "" for line in lines), lines
    assert any(line.startswith("[") and "a\\nb.md, § Shelter" in line for line in citations)


def test_an_error_naming_an_odd_path_stays_on_one_line(tmp_path, capsys):
    assert main(["info", "--index", str(tmp_path / "no\nindex\x1b[2J")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no\\nindex\\x1b[2J" in err


@given(st.text(st.one_of(st.characters(), st.characters(categories=["Cs"]))))
def test_inline_text_never_breaks_a_line_nor_carries_a_control(text):
    shown = inline(text)
    assert len(shown.splitlines()) <= 1
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in shown)
    shown.encode("utf-8")
    if text.isprintable():
        assert shown == text


# ---- a reader that goes away ------------------------------------------------------------------------------------


class ClosedPipe:
    """A stdout whose reader has gone."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_pipe_ends_quietly_with_141_in_process(odd_index, fake_model, monkeypatch, capsys):
    for args in (["info"], ["ask", "shelters"], ["ask", "shelters", "--json"]):
        monkeypatch.setattr(sys, "stdout", ClosedPipe())
        assert main([*args, "--index", str(odd_index)]) == EXIT_BROKEN_PIPE == 141
        monkeypatch.undo()
        import tqa.assistant

        monkeypatch.setattr(tqa.assistant, "load_embedder", lambda *a: FakeEmbedder())
        assert capsys.readouterr().err == ""


# Runs the real `tqa` entry point in a child process with the fake embedder (the index below is built with it).
WITH_FAKE_MODEL = (
    "import sys\n"
    f"sys.path.insert(0, {str(ROOT)!r})\n"
    "from tests.support import FakeEmbedder\n"
    "import tqa.assistant\n"
    "tqa.assistant.load_embedder = lambda *a: FakeEmbedder()\n"
    "from tqa.cli import run\n"
    "run()\n"
)


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_ask_piped_into_head_ends_quietly_with_141(tmp_path, json_output):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # one passage of ~600 kB: far more than a pipe holds, so the writer is still writing when `head` leaves
    paragraphs = "\n\n".join(f"Paragraph {i} says that shelters give survivors a bed, number {i}." for i in range(9000))
    (corpus / "long.md").write_text(f"# Shelters\n\n{paragraphs}\n")
    build_index(corpus, tmp_path / "index", embedder=FakeEmbedder(), chunking=ChunkSettings(1_000_000, 0))
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)  # as a user runs it: an unexpected error would print one line
    args = ["ask", "shelters give survivors a bed", "--index", str(tmp_path / "index")] + (["--json"] if json_output
                                                                                           else [])
    with subprocess.Popen([sys.executable, "-c", WITH_FAKE_MODEL, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env) as tqa:
        with subprocess.Popen(["head", "-1"], stdin=tqa.stdout, stdout=subprocess.PIPE) as head:
            assert tqa.stdout is not None and tqa.stderr is not None
            tqa.stdout.close()  # only `head` reads it now
            first, _ = head.communicate(timeout=120)
        err = tqa.stderr.read().decode()
        code = tqa.wait(timeout=120)
    assert code == EXIT_BROKEN_PIPE, err
    assert err == ""  # no traceback, no "Exception ignored", no message: the reader has what it asked for
    assert first == (b"{\n" if json_output else b"\n")


def test_info_into_head_prints_its_first_line_quietly(odd_index):
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    r = subprocess.run(f"{sys.executable} -m tqa info --index {str(odd_index)!r} | head -1; "
                       "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", capture_output=True, env=env,
                       timeout=120)
    # 0 when tqa wrote everything before `head` left, 141 when `head` left first (as for `cat`): quiet either way
    assert r.returncode in (0, EXIT_BROKEN_PIPE) and r.stderr == b""
    assert r.stdout.startswith(b"index:") and r.stdout.count(b"\n") == 1


def test_json_output_stays_valid_json(odd_index, fake_model, capsys):
    assert main(["ask", "shelters", "--json", "-k", "20", "--index", str(odd_index)]) == 0
    sources = {p["source"] for p in json.loads(capsys.readouterr().out)["passages"]}
    assert sources == set(ODD_NAMES)
