"""The question encoder: the index's model exported to ONNX, so that answering needs neither torch nor
sentence-transformers. Its vectors must be the model's, it must be checked like every index artifact, reused
across updates, and an index without one must still answer."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tqa.query_encoder as Q
from tqa import Assistant, build_index
from tqa.errors import IndexCorrupt, TqaError
from tqa.manifest import MANIFEST, MANIFEST_SHA, manifest_digest
from tqa.store import current_generation, load_index, sha256_file

from .support import CORPUS, ROOT, FakeEmbedder

HEAVY = ("torch", "sentence_transformers", "transformers")

# Questions of every kind: the project's own, short, long past the model's 256-token window, in other scripts,
# punctuation only, and texts with nothing left after tokenisation.
EDGE_CASES = [
    "Why?",
    "a",
    "",
    " ",
    "\t\n",
    "\u200b",
    "\u200b\u200c\u200d\ufeff",
    "\x00\x01\x7f",
    "?",
    "?!?!... --- ;;; ((( )))",
    "«»„“‚‘ — … ¿¡",
    "🙂🙂🙂",
    "🏳️‍🌈 and 👩‍👩‍👧",
    "Wie behandelt das schwedische Recht Menschen, die Sex kaufen?",
    "Quelles sont les responsabilités des pays selon le protocole de Palerme ?",
    "人身売買はどのように取り締まられていますか",
    "人口贩卖如何受到打击？",
    "인신매매는 어떻게 단속되나요?",
    "Что говорит закон о торговле людьми?",
    "ما هي مسؤوليات الدول في مكافحة الاتجار بالبشر؟",
    "מה אומר החוק על סחר בבני אדם?",
    "मानव तस्करी को कैसे रोका जाता है?",
    "Ο νόμος για την εμπορία ανθρώπων",
    "Çocuk işçiliği ve insan ticareti nasıl önlenir?",
    "Ẓ̸̢a̷l̶g̵o̴ text with combining marks",
    "ＦＵＬＬＷＩＤＴＨ ｑｕｅｓｔｉｏｎ",
    "CAPITALS AND numbers 1,234,567.89 and dates 1999-01-01",
    "https://example.org/a/b?c=d&e=f#g user@example.org",
    "def f(x): return x ** 2  # code",
    "word " * 400,
    "Traffickers recruit victims online and move the payments through cryptocurrencies. " * 40,
    "x" * 5000,
    "supercalifragilisticexpialidocious" * 50,
    " ".join(str(i) for i in range(600)),
]


def project_questions() -> list[str]:
    with open(ROOT / "eval" / "questions.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["question"] for line in f if line.strip()]


def generation(index: Path) -> Path:
    gen = current_generation(index)
    assert gen is not None
    return gen


def clean_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


@pytest.fixture(scope="module")
def encoder(default_index) -> Q.OnnxQueryEncoder:
    enc = Assistant.load(default_index).embedder
    assert isinstance(enc, Q.OnnxQueryEncoder)
    return enc


class CountExports:
    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls = 0
        original = Q.export

        def counted(embedder):
            self.calls += 1
            return original(embedder)

        monkeypatch.setattr(Q, "export", counted)


class NotSentenceTransformers:
    """Passes through to the real model without being a sentence-transformers embedder (as a user's own
    embedder would): its index gets no question encoder."""

    def __init__(self, inner):
        self._inner = inner
        self.name, self.dim, self.max_tokens, self.precision = inner.name, inner.dim, inner.max_tokens, inner.precision

    def encode(self, texts, *, batch_size=32, progress=False):
        return self._inner.encode(texts, batch_size=batch_size, progress=progress)


# ---------------------------------------------------------------- the vectors are the model's


@pytest.mark.model
def test_question_vectors_match_the_model_on_many_kinds_of_questions(encoder, real_embedder):
    from tqa.embedding import load_embedder

    texts = project_questions() + EDGE_CASES
    assert len(texts) > 100
    alone = np.vstack([encoder.encode([t]) for t in texts])
    batched = encoder.encode(texts, batch_size=16)
    assert alone.shape == (len(texts), 384) and alone.dtype == np.float32
    assert np.allclose(np.linalg.norm(alone, axis=1), 1, atol=1e-5)
    # the model as the index was built with it (bf16 where the CPU has it), and as published (fp32)
    for model in (real_embedder, load_embedder(precision="fp32")):
        reference = model.encode(texts)
        for mine in (alone, batched):
            distance = 1 - (mine * reference).sum(1)
            assert distance.max() <= 1e-3, [texts[i][:40] for i in np.flatnonzero(distance > 1e-3)]


@pytest.mark.model
def test_question_tokens_are_the_models_tokens(encoder, real_embedder):
    model = real_embedder._model
    for text in project_questions()[:20] + EDGE_CASES:
        expected = model.preprocess([text])["input_ids"][0].tolist()
        assert encoder.token_ids(text) == expected, text[:40]
    assert len(encoder.token_ids("word " * 400)) == encoder.max_tokens == 256


@pytest.mark.model
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=0, max_size=300))
def test_generated_text_encodes_like_the_model(encoder, real_embedder, text):
    mine = encoder.encode([text])
    reference = real_embedder.encode([text])
    assert float(1 - (mine * reference).sum()) <= 1e-3


# ---------------------------------------------------------------- answering without torch


@pytest.mark.model
def test_answering_from_an_exported_index_never_imports_torch(default_index, real_embedder):
    questions = ["How does Sweden's law treat people who buy sex?", "What is the tallest mountain in Africa?"]
    code = (
        "import contextlib, io, json, sys\nfrom tqa.cli import main\nanswers = []\n"
        f"for q in {questions!r}:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        f"        assert main(['ask', q, '--index', {str(default_index)!r}, '--json']) == 0\n"
        "    answers.append(json.loads(out.getvalue()))\n"
        f"print(json.dumps({{'answers': answers, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["heavy"] == []
    answers = result["answers"]
    # the same passages as through the model itself
    qa = Assistant.load(default_index, embedder=real_embedder)
    for q, got in zip(questions, answers, strict=True):
        want = qa.ask(q).to_dict()
        assert got["abstained"] == want["abstained"]
        assert [(p["source"], p["start"]) for p in got["passages"]] == [
            (p["source"], p["start"]) for p in want["passages"]]


def test_help_does_not_import_the_question_encoder():
    code = (
        "import sys; from tqa.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('onnxruntime', 'tokenizers', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out


# ---------------------------------------------------------------- indexes without an encoder still answer


def test_an_index_of_a_fake_embedder_has_no_encoder_and_answers(small_corpus, tmp_path, fake_embedder, monkeypatch):
    import tqa.assistant

    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    assert not (generation(index) / Q.ENCODER_DIR).exists()
    assert not any(a.startswith(Q.ENCODER_DIR) for a in load_index(index).manifest.artifacts)
    monkeypatch.setattr(tqa.assistant, "load_embedder", lambda name: fake_embedder)
    qa = Assistant.load(index)
    assert qa.embedder is fake_embedder
    assert qa.ask("Sweden purchase of sex").passages[0].source == "sweden.md"


@pytest.mark.model
def test_an_index_without_encoder_answers_through_sentence_transformers(tmp_path, real_embedder):
    from tqa.embedding import SentenceTransformerEmbedder

    index = tmp_path / "index"
    build_index(CORPUS, index, embedder=NotSentenceTransformers(real_embedder))
    assert not (generation(index) / Q.ENCODER_DIR).exists()
    qa = Assistant.load(index)
    assert isinstance(qa.embedder, SentenceTransformerEmbedder)
    assert "criminalizes the purchase of sex" in qa.ask("How does Sweden's law treat people who buy sex?").best.text


# ---------------------------------------------------------------- built once, reused by updates


@pytest.mark.model
@pytest.mark.slow
def test_updates_link_the_encoder_and_uploads_load_the_full_model_lazily(tmp_path, real_embedder, monkeypatch):
    from tqa.embedding import SentenceTransformerEmbedder

    exports = CountExports(monkeypatch)
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(CORPUS, corpus)
    build_index(corpus, index, embedder=real_embedder)
    first = generation(index)
    assert exports.calls == 1
    artifacts = json.loads((first / MANIFEST).read_text(encoding="utf-8"))["artifacts"]
    for rel in Q.ARTIFACTS:  # listed, with size and checksum, like every artifact
        assert artifacts[rel] == {"bytes": (first / rel).stat().st_size, "sha256": sha256_file(first / rel)}
    config = json.loads((first / Q.ENCODER_DIR / Q.CONFIG_FILE).read_text(encoding="utf-8"))
    assert config["model"] == "all-MiniLM-L6-v2" and config["checked_distance"] <= Q.TOLERANCE

    qa = Assistant.load(index)
    assert isinstance(qa.embedder, Q.OnnxQueryEncoder) and qa.embedder.documents_embedder is None
    summary = qa.add_documents([("shelters.md", b"# Shelters\n\nThe Wombat Trust runs shelters in Tasmania.\n")])
    assert summary.files_added == ["uploads/shelters.md"]
    second = generation(index)
    assert second != first and exports.calls == 1  # not exported again
    assert (second / Q.ENCODER_DIR / Q.MODEL_FILE).stat().st_ino == (first / Q.ENCODER_DIR / Q.MODEL_FILE).stat().st_ino
    # the new document was embedded by the full model, at the index's precision, loaded only now
    assert isinstance(qa.embedder.documents_embedder, SentenceTransformerEmbedder)
    assert qa.embedder.documents_embedder.precision == load_index(index).manifest.precision
    assert isinstance(qa.embedder, Q.OnnxQueryEncoder)
    assert qa.ask("Who runs shelters in Tasmania?").best.source == "uploads/shelters.md"

    build_index(corpus, index, embedder=real_embedder, rebuild=True)  # a rebuild with the same model links too
    assert exports.calls == 1 and generation(index) != second
    assert Assistant.load(index).ask("Who runs shelters in Tasmania?").best.source == "uploads/shelters.md"


@pytest.mark.model
@pytest.mark.slow
def test_a_model_that_changed_is_exported_again_and_an_export_that_disagrees_is_dropped(
        tmp_path, real_embedder, monkeypatch, caplog):
    exports = CountExports(monkeypatch)
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(CORPUS, corpus)
    build_index(corpus, index, embedder=real_embedder)
    assert exports.calls == 1 and (generation(index) / Q.ENCODER_DIR).is_dir()

    # the model behind the name changes (here: its vectors are skewed), then a document changes
    original = real_embedder.encode
    skew = np.random.default_rng(0).normal(size=real_embedder.dim).astype(np.float32)

    def skewed(texts, **kw):
        v = original(texts, **kw) + 0.2 * skew
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    monkeypatch.setattr(real_embedder, "encode", skewed)
    (corpus / "more.md").write_text("# More\n\nAnother document.\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="tqa"):
        build_index(corpus, index, embedder=real_embedder)
    assert exports.calls == 2  # the previous export no longer matched the model: exported again ...
    assert not (generation(index) / Q.ENCODER_DIR).exists()  # ... and the new export disagreed: none kept
    assert "questions will load the full model" in caplog.text
    monkeypatch.setattr(real_embedder, "encode", original)
    qa = Assistant.load(index)
    assert not isinstance(qa.embedder, Q.OnnxQueryEncoder)


@pytest.mark.model
def test_a_model_that_cannot_be_exported_gets_no_encoder(tmp_path, real_embedder, monkeypatch, caplog):
    def fail(embedder):
        raise RuntimeError("cannot trace this model\nsecond line")

    monkeypatch.setattr(Q, "export", fail)
    index = tmp_path / "index"
    with caplog.at_level(logging.WARNING, logger="tqa"):
        build_index(CORPUS, index, embedder=real_embedder)
    assert not (generation(index) / Q.ENCODER_DIR).exists()
    assert "could not be exported for questions (cannot trace this model)" in caplog.text
    assert not isinstance(Assistant.load(index).embedder, Q.OnnxQueryEncoder)


# ---------------------------------------------------------------- damage and failures


@pytest.fixture
def exported_copy(default_index, tmp_path) -> Path:
    """A copy of the default index (files copied, not linked), to damage."""
    copy = tmp_path / "index"
    shutil.copytree(default_index, copy)
    assert (generation(copy) / Q.ENCODER_DIR / Q.MODEL_FILE).is_file()
    return copy


def rewrite_checksums(gen: Path) -> None:
    """Edit the manifest to match the files (as a careless hand would), so the encoder's own checks are reached."""
    manifest = json.loads((gen / MANIFEST).read_text(encoding="utf-8"))
    for rel in manifest["artifacts"]:
        manifest["artifacts"][rel] = {"bytes": (gen / rel).stat().st_size, "sha256": sha256_file(gen / rel)}
    manifest[MANIFEST_SHA] = manifest_digest(manifest)  # the manifest checks itself too
    (gen / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.model
@pytest.mark.parametrize("name", Q.FILES)
def test_a_damaged_encoder_file_is_refused(exported_copy, name, capsys):
    from tqa.cli import main

    path = generation(exported_copy) / Q.ENCODER_DIR / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt, match="fails its checksum"):
        Assistant.load(exported_copy)
    assert main(["ask", "Why?", "--index", str(exported_copy)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tqa index --rebuild" in err


@pytest.mark.model
@pytest.mark.parametrize("damage, message", [
    ({"model": "another-model"}, "is for model 'another-model'"),
    ({"dim": 768}, "768 dimensions"),
    ({"format": 99}, "cannot be read"),
    ({"inputs": ["input_ids", "attention_mask", "nonsense"]}, "cannot be read"),
])
def test_an_encoder_description_that_disagrees_is_refused(exported_copy, damage, message):
    gen = generation(exported_copy)
    path = gen / Q.ENCODER_DIR / Q.CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**config, **damage}), encoding="utf-8")
    rewrite_checksums(gen)
    with pytest.raises(IndexCorrupt, match=message):
        Assistant.load(exported_copy).ask("Why?")


@pytest.mark.model
def test_a_graph_that_is_not_onnx_is_refused(exported_copy):
    gen = generation(exported_copy)
    (gen / Q.ENCODER_DIR / Q.MODEL_FILE).write_bytes(b"not a model")
    rewrite_checksums(gen)
    with pytest.raises(IndexCorrupt, match="question encoder .* cannot be read"):
        Assistant.load(exported_copy)


def test_a_full_disk_while_linking_the_encoder_keeps_the_previous_index(small_corpus, tmp_path, monkeypatch):
    emb = FakeEmbedder()
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=emb)
    before = generation(index)
    (small_corpus / "new.md").write_text("# New\n\nShelters give survivors a bed.\n", encoding="utf-8")

    def full(source, dest):
        raise OSError(errno.ENOSPC, "No space left on device")

    # as if the fake were an exportable model whose encoder is linked from the live generation
    monkeypatch.setattr(Q, "_sentence_transformer", lambda embedder: embedder)
    monkeypatch.setattr(Q, "_reusable", lambda previous, model: True)
    monkeypatch.setattr(Q, "_link_or_copy", full)
    with pytest.raises(TqaError, match="the disk is full"):
        build_index(small_corpus, index, embedder=emb)
    assert generation(index) == before
    assert sorted(p.name for p in index.iterdir() if p.name.startswith((".tmp", "g-"))) == [before.name]
    load_index(index)  # still complete and intact


def test_linking_falls_back_to_a_copy(tmp_path, monkeypatch):
    source = tmp_path / "a"
    source.write_bytes(b"graph")

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    Q._link_or_copy(source, tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"graph" and os.stat(tmp_path / "b").st_ino != os.stat(source).st_ino


@pytest.mark.model
def test_an_export_measured_in_memory_is_written_without_tracing_the_model_again(real_embedder, tmp_path,
                                                                                monkeypatch):
    """``tqa tune`` measures the tuned index through the encoder it will publish (``encoder_in_memory``), then
    publishes: the model is traced once, the files written are those measured, and only once."""
    traced = []
    export = Q.export
    monkeypatch.setattr(Q, "export", lambda model: traced.append(model) or export(model))
    encoder = Q.encoder_in_memory(real_embedder)
    assert encoder is not None and len(traced) == 1
    first, second = tmp_path / "g1", tmp_path / "g2"
    first.mkdir(), second.mkdir()
    assert Q.write_encoder(real_embedder, first, tmp_path / "no-index") and len(traced) == 1
    question = ["Which law criminalises the purchase of sex?"]
    written = Q.OnnxQueryEncoder((first / Q.ENCODER_DIR / Q.MODEL_FILE).read_bytes(),
                                 (first / Q.ENCODER_DIR / Q.TOKENIZER_FILE).read_text(encoding="utf-8"),
                                 json.loads((first / Q.ENCODER_DIR / Q.CONFIG_FILE).read_text(encoding="utf-8")))
    assert np.array_equal(written.encode(question), encoder.encode(question))
    assert Q.write_encoder(real_embedder, second, tmp_path / "no-index") and len(traced) == 2  # held once only
