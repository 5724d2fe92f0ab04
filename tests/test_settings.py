"""Settings are checked in one place (``Settings``): a value out of range is refused in one line that names the
variable and the range, by every command, before anything is read, indexed or searched."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tqa import build_index
from tqa.cli import main
from tqa.config import MAX_K, ChunkSettings, Settings
from tqa.errors import SettingsError, TqaError

from .support import FakeEmbedder

# variable -> (smallest valid, largest valid); ranges as documented in the README
NUMBERS = {
    "TQA_CHUNK_SIZE": (50, 1_000_000),
    "TQA_BATCH_SIZE": (1, 4096),
    "TQA_MAX_QUESTION_CHARS": (1, 100_000),
    "TQA_QUEUE_SIZE": (1, 10_000),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (*NUMBERS, "TQA_CHUNK_OVERLAP", "TQA_ABSTAIN_THRESHOLD", "TQA_MODE", "TQA_MODEL", "TQA_INDEX",
                 "TQA_PRECISION", "TQA_DEBUG"):
        monkeypatch.delenv(name, raising=False)


def refused(monkeypatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        Settings.from_env()
    message = str(err.value)
    assert name in message and "\n" not in message
    return message


@pytest.mark.parametrize("name", sorted(NUMBERS))
@pytest.mark.parametrize("value", ["0", "-1", "-5000", "99999999999999999999", "1e3", "2.5", "nan", "ten", " ", "0x10"])
def test_absurd_numbers_are_refused_naming_the_variable_and_its_range(monkeypatch, name, value):
    lo, hi = NUMBERS[name]
    message = refused(monkeypatch, name, value)
    assert f"from {lo} to {hi}" in message or "not a whole number" in message


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(NUMBERS)), value=st.integers(min_value=-(10**30), max_value=10**30))
def test_every_whole_number_is_taken_in_range_and_refused_outside(name, value):
    lo, hi = NUMBERS[name]
    field = {"TQA_CHUNK_SIZE": None, "TQA_BATCH_SIZE": "batch_size", "TQA_MAX_QUESTION_CHARS": "max_question_chars",
             "TQA_QUEUE_SIZE": "queue_size"}[name]
    make = (lambda: ChunkSettings(chunk_size=value, chunk_overlap=0)) if field is None else \
        (lambda: Settings(**{field: value}))
    if lo <= value <= hi:
        make()
    else:
        with pytest.raises(SettingsError, match=f"{name} must be a whole number from {lo} to {hi}"):
            make()


@pytest.mark.parametrize(("size", "overlap"), [(1600, 5000), (1600, 1600), (1600, 801), (1600, -1), (100, 51)])
def test_an_overlap_of_half_a_chunk_or_more_is_refused(monkeypatch, size, overlap):
    monkeypatch.setenv("TQA_CHUNK_SIZE", str(size))
    message = refused(monkeypatch, "TQA_CHUNK_OVERLAP", str(overlap))
    assert f"from 0 to {size // 2}" in message


def test_half_a_chunk_of_overlap_is_allowed():
    assert ChunkSettings(200, 100).chunk_overlap == 100


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "3", "-2.5", "x"])
def test_an_absurd_threshold_is_refused(monkeypatch, value):
    message = refused(monkeypatch, "TQA_ABSTAIN_THRESHOLD", value)
    assert "from -2 to 2" in message or "not a number" in message


def test_an_unknown_mode_is_refused_by_the_settings(monkeypatch):
    assert "hybrid, dense, bm25" in refused(monkeypatch, "TQA_MODE", "magic")


@pytest.mark.parametrize("value", ["fp8", "int8", "bf16 ", "32"])
def test_an_unknown_precision_is_refused_by_the_settings(monkeypatch, value):
    if value.strip() == "bf16":  # case and spaces around a known name are forgiven, as in a shell
        monkeypatch.setenv("TQA_PRECISION", value)
        assert Settings.from_env().precision == "bf16"
        return
    assert "auto, fp32, bf16" in refused(monkeypatch, "TQA_PRECISION", value)


def test_only_the_settings_module_reads_tqa_variables():
    """Every TQA_* variable is read in config.py (the settings object, the CLI's default --index, TQA_DEBUG)."""
    src = Path(__file__).resolve().parent.parent / "src" / "tqa"
    readers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                     if re.search(r"environ[^\n]*TQA_|getenv\([^)]*TQA_", p.read_text(encoding="utf-8")))
    assert readers == []


def test_the_cli_default_index_and_debug_come_from_the_settings_module(monkeypatch):
    from tqa.config import debug_requested, default_index

    monkeypatch.setenv("TQA_CHUNK_SIZE", "0")  # another setting out of range does not stop these two
    monkeypatch.setenv("TQA_INDEX", "elsewhere")
    monkeypatch.setenv("TQA_DEBUG", "1")
    assert default_index() == "elsewhere" and debug_requested()
    monkeypatch.setenv("TQA_INDEX", "")
    monkeypatch.delenv("TQA_DEBUG")
    assert default_index() == "index" and not debug_requested()


def test_k_and_other_fields_are_checked_whichever_way_settings_are_made():
    for bad in (0, MAX_K + 1, True, 2.0):
        with pytest.raises(SettingsError, match=f"passages per answer\\) must be a whole number from 1 to {MAX_K}"):
            Settings(k=bad)
    with pytest.raises(SettingsError, match="TQA_BATCH_SIZE"):
        replace(Settings(), batch_size=0)
    with pytest.raises(SettingsError, match="TQA_INDEX"):
        Settings(index_dir="")


def test_overrides_replace_a_bad_variable_instead_of_failing_on_it(monkeypatch):
    monkeypatch.setenv("TQA_CHUNK_SIZE", "0")
    assert Settings.from_env(chunking=ChunkSettings(300, 30)).chunking.chunk_size == 300


def test_a_long_digit_string_is_refused_not_crashed_on(monkeypatch):
    refused(monkeypatch, "TQA_BATCH_SIZE", "9" * 5000)
    with pytest.raises(SettingsError, match="too long to show"):
        Settings(batch_size=10**5000)


# ---- through the commands: one line, exit 1, nothing written ---------------------------------------------------


@pytest.fixture
def index(small_corpus, tmp_path) -> Path:
    build_index(small_corpus, tmp_path / "index", embedder=FakeEmbedder())
    return tmp_path / "index"


@pytest.mark.parametrize(("name", "value", "needle"), [
    ("TQA_CHUNK_SIZE", "0", "TQA_CHUNK_SIZE must be a whole number from 50 to 1000000"),
    ("TQA_CHUNK_OVERLAP", "5000", "TQA_CHUNK_OVERLAP must be a whole number from 0 to 800"),
    ("TQA_BATCH_SIZE", "0", "TQA_BATCH_SIZE must be a whole number from 1 to 4096"),
    ("TQA_BATCH_SIZE", "-3", "TQA_BATCH_SIZE must be a whole number from 1 to 4096"),
    ("TQA_MAX_QUESTION_CHARS", "0", "TQA_MAX_QUESTION_CHARS must be a whole number from 1 to 100000"),
    ("TQA_QUEUE_SIZE", "-1", "TQA_QUEUE_SIZE must be a whole number from 1 to 10000"),
    ("TQA_ABSTAIN_THRESHOLD", "nan", "TQA_ABSTAIN_THRESHOLD must be a number from -2 to 2"),
    ("TQA_MODE", "magic", "TQA_MODE must be one of hybrid, dense, bm25"),
    ("TQA_PRECISION", "fp8", "TQA_PRECISION must be one of auto, fp32, bf16"),
])
@pytest.mark.parametrize("command", ["ask", "index", "serve", "eval"])
def test_every_command_refuses_a_bad_setting_in_one_line(index, small_corpus, tmp_path, monkeypatch, capsys,
                                                         name, value, needle, command):
    import tqa.assistant
    import tqa.indexing

    def no_model(*a, **k):
        raise AssertionError("a model was loaded despite a bad setting")

    monkeypatch.setattr(tqa.assistant, "load_embedder", no_model)
    monkeypatch.setattr(tqa.indexing, "load_embedder", no_model, raising=False)
    monkeypatch.setenv(name, value)
    fresh = tmp_path / "fresh-index"
    args = {
        "ask": ["ask", "What about shelters?", "--index", str(index)],
        "index": ["index", str(small_corpus), "--index", str(fresh)],
        "serve": ["serve", "--index", str(index), "--port", "1"],
        "eval": ["eval", "--corpus", str(small_corpus), "--index", str(fresh), "--no-gate"],
    }[command]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {needle}") and len(err.strip().splitlines()) == 1
    assert not (fresh / "CURRENT").exists()


def test_the_smallest_question_limit_is_not_an_empty_search(index, monkeypatch, capsys):
    import json

    import tqa.assistant

    monkeypatch.setattr(tqa.assistant, "load_embedder", lambda *a: FakeEmbedder())
    monkeypatch.setenv("TQA_MAX_QUESTION_CHARS", "1")
    assert main(["ask", "Sweden purchase of sex", "--index", str(index), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["question"] == "S" and d["warnings"]


def test_settings_errors_are_tqa_errors():
    assert issubclass(SettingsError, TqaError)
    assert re.search("unset it or fix it", str(pytest.raises(SettingsError, ChunkSettings, 0).value))
