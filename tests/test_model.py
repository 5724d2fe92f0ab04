"""Integration tests with the real bundled model (loaded once per session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tqa import Assistant

from .support import CORPUS

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def qa(default_index, real_embedder) -> Assistant:
    return Assistant.load(default_index, embedder=real_embedder)


def test_palermo_question_ranks_the_responsibilities_passage_first(qa):
    ans = qa.ask("What responsibilities does the Palermo Protocol lay out for countries?")
    assert not ans.abstained
    p = ans.passages[0]
    assert "outline responsibilities for countries to ensure the protection of victims" in p.text
    assert "outline responsibilities" in p.highlight
    assert p.source == "global-governance-and-human-trafficking.txt"
    assert p.section == "The Intersection of Global Governance and Human Trafficking"
    text = (CORPUS / p.source).read_text(encoding="utf-8")
    assert text[p.start:p.end] == p.text


def test_off_topic_question_abstains(qa):
    ans = qa.ask("What is the tallest mountain in Africa?")
    assert ans.abstained and ans.message.startswith("The documents don't seem to cover this")


def test_sweden_question(qa):
    ans = qa.ask("How does Sweden's law treat people who buy sex?", k=5)
    assert not ans.abstained
    assert "criminalizes the purchase of sex services" in ans.passages[0].highlight


def test_model_is_the_bundled_one_and_loads_offline(real_embedder):
    assert real_embedder.name == "all-MiniLM-L6-v2" and real_embedder.dim == 384


def test_cli_end_to_end(default_index):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    r = subprocess.run(
        [sys.executable, "-m", "tqa", "ask", "What responsibilities does the Palermo Protocol lay out for countries?",
         "--index", str(default_index), "--json"], capture_output=True, text=True, env=env, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert "outline responsibilities" in d["passages"][0]["text"] and d["abstained"] is False
    r = subprocess.run([sys.executable, "-m", "tqa", "ask", "What is the tallest mountain in Africa?",
                        "--index", str(default_index)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "The documents don't seem to cover this" in r.stdout
