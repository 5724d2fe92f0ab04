from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tqa import build_index
from tqa.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    e.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "tqa", *args], capture_output=True, text=True, env=e, timeout=300)


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from tqa.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "names = ('torch', 'sentence_transformers', 'faiss', 'gradio', 'numpy', 'bm25s')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out


def test_import_tqa_is_light():
    code = "import sys, tqa; print([m for m in ('torch', 'numpy', 'faiss') if m in sys.modules])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


def test_bad_usage_exits_2():
    r = run_cli("ask")
    assert r.returncode == 2 and "usage" in r.stderr
    r = run_cli("ask", "x", "--mode", "magic")
    assert r.returncode == 2


@pytest.mark.parametrize("args, needle", [
    (["ask", "what?"], "No index"),
    (["info"], "No index"),
    (["ask", "   "], "empty"),
    (["index", "no-such-folder"], "does not exist"),
])
def test_user_errors_exit_1_with_one_line(tmp_path, args, needle):
    r = run_cli(*args, "--index", str(tmp_path / "idx"))
    assert r.returncode == 1, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_every_command_takes_index_and_honours_the_env(tmp_path, monkeypatch):
    parser = build_parser()
    for cmd in (["index"], ["ask", "q"], ["info"], ["serve"]):
        assert parser.parse_args([*cmd, "--index", "x"]).index == "x"
    monkeypatch.setenv("TQA_INDEX", str(tmp_path / "from-env"))
    assert build_parser().parse_args(["info"]).index == str(tmp_path / "from-env")


def test_ask_and_info_through_main(small_corpus, tmp_path, fake_embedder, capsys, monkeypatch):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    import tqa.assistant

    monkeypatch.setattr(tqa.assistant, "load_embedder", lambda name: fake_embedder)
    assert main(["ask", "Sweden purchase of sex", "--index", str(index), "--json", "-k", "2"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["passages"][0]["source"] == "sweden.md" and len(d["passages"]) <= 2
    assert main(["ask", "Sweden purchase of sex", "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert "[1] sweden.md, § Sweden" in out
    assert main(["info", "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert "fake-hash-64" in out and "sweden.md" in out
    assert main(["ask", "   ", "--index", str(index)]) == 1
    assert "empty" in capsys.readouterr().err


def test_readme_documents_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert f"tqa {name}" in readme, f"README does not document `tqa {name}`"
        for action in p._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert opt in readme, f"README does not document `tqa {name} {opt}`"
