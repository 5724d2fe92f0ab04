"""Questions encoded without torch: the index's own model, exported to ONNX when the index is built.

Importing torch and sentence-transformers takes seconds, far longer than answering. So when an index is built
(torch is loaded then anyway), the model is exported with its own pooling and normalisation to
``encoder/model.onnx`` inside the index generation, beside its tokenizer (``encoder/tokenizer.json``) and a
small description (``encoder/config.json``). A question is then encoded by onnxruntime, the ``tokenizers``
library and numpy alone. The three files are index artifacts like any other: listed in the manifest with size
and SHA-256 and checked when the index is loaded.

An export is kept only when it agrees with the model: the vectors it gives for a fixed set of probe texts (short,
long past the token limit, other scripts, punctuation only, empty) and for the same texts as one padded batch
must lie within ``TOLERANCE`` cosine of the build's own vectors. The exported graph computes in fp32; an index
whose passages were embedded in bf16 (embedding.py) is checked against its bf16 vectors, which lie within 1e-4
of fp32. A model that cannot be exported, or whose export disagrees, gets no encoder, and its index answers
through sentence-transformers as before; so does an index built by an older tqa or with an embedder that is
not a sentence-transformers model (the test fakes).

An update of an index whose model is unchanged does not export again: the previous generation's files, once
their checksums and their vectors agree, are hard-linked into the new generation (copied only where the file
system cannot link).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any, cast

import numpy as np

from .errors import REBUILD_HINT, IndexCorrupt, first_line
from .manifest import ENCODER_DIR, ENCODER_FILES, OPTIONAL_ARTIFACTS, Manifest

log = logging.getLogger("tqa")

# The file names are the index format's (store.py knows them as its optional artifacts).
FILES = ENCODER_FILES
MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE = FILES
ARTIFACTS = tuple(sorted(OPTIONAL_ARTIFACTS))  # as the manifest lists them
ENCODER_FORMAT = 1
TOLERANCE = 1e-3  # largest cosine distance allowed between an exported vector and the model's own
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "sentence_embedding"

# What an export is checked on: each alone, then all together as one padded batch.
PROBES = (
    "What is it?",
    "How does Sweden's law treat people who buy sex?",
    "Which responsibilities does the protocol set out for the countries that signed it, and who checks them?",
    "a",
    "",
    "   ",
    "?!... ;-) «»",
    "\u200b\u200d",
    "Wie behandelt das schwedische Recht Menschen, die Sex kaufen?",
    "¿Qué dice la ley sobre la trata de personas?",
    "人身売買はどのように取り締まられていますか",
    "Что говорит закон о торговле людьми?",
    "ما هي مسؤوليات الدول؟",
    "emoji 🙂🎉 and CAPITALS, numbers 1,234.5 and ‘quotes’",
    "word " * 400,
    "Traffickers recruit victims online and move the payments through cryptocurrencies. " * 30,
    "x" * 3000,
)

# The model's vectors for these are stored with an export; an update compares them with the model's vectors now.
REFERENCE = PROBES[1], PROBES[8]
SAME_MODEL = 1e-5  # cosine distance: the same model at the same precision on the same CPU gives the same vectors


class OnnxQueryEncoder:
    """An index's model as an ONNX graph: the ``Embedder`` interface without torch. Encoding is thread-safe
    (tokenisation is serialised; onnxruntime runs concurrently)."""

    precision = "fp32"  # the exported graph computes in float32

    def __init__(self, model: bytes | str, tokenizer_json: str, config: dict[str, Any]):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = config
        self.name = str(config["model"])
        self.dim = int(config["dim"])
        self.max_tokens = int(config["max_tokens"])
        self.inputs = tuple(str(i) for i in config["inputs"])
        self.pad_id = int(config["pad_id"])
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self._output = str(config["output"])
        takes = {i.name for i in self._session.get_inputs()}
        gives = {o.name for o in self._session.get_outputs()}
        if takes != set(self.inputs) or not takes <= set(INPUTS) or self._output not in gives:
            raise ValueError(f"the graph takes {sorted(takes)} and gives {sorted(gives)}, not what it describes")
        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self._tokenizer.no_padding()  # batches are padded here, to their longest text
        self._tokenizer.enable_truncation(max_length=self.max_tokens, strategy="longest_first", direction="right")
        self._lock = threading.Lock()
        self.documents_embedder: Any = None  # the full model, loaded on first need (see ``for_documents``)

    @classmethod
    def from_folder(cls, folder: Path) -> OnnxQueryEncoder:
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            if not isinstance(config, dict) or config.get("format") != ENCODER_FORMAT:
                raise ValueError(f"not an encoder description of format {ENCODER_FORMAT}")
            tokenizer = (folder / TOKENIZER_FILE).read_text(encoding="utf-8")
            return cls(str(folder / MODEL_FILE), tokenizer, config)
        except Exception as exc:  # onnxruntime and tokenizers raise their own types for a file they cannot read
            raise IndexCorrupt(f"The question encoder in {folder} cannot be read ({first_line(exc)}). {REBUILD_HINT}") \
                from None

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._encode_batch(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        vectors = np.vstack(parts).astype(np.float32, copy=False)
        # sentence-transformers' normalize_embeddings (the graph holds the model's own Normalize, if it has one)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        n = max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), n), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), n), dtype=np.int64)
        types = np.zeros((len(texts), n), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, :len(e.ids)] = e.ids
            mask[row, :len(e.ids)] = e.attention_mask
            types[row, :len(e.ids)] = e.type_ids
        given = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return np.asarray(self._session.run([self._output], {k: given[k] for k in self.inputs})[0])

    def token_ids(self, text: str) -> list[int]:
        """The token ids a text is encoded from (special tokens included, truncated to ``max_tokens``)."""
        with self._lock:
            return list(self._tokenizer.encode(text).ids)


def load_query_encoder(manifest: Manifest, generation: Path | None) -> OnnxQueryEncoder | None:
    """The question encoder of an index generation, or None when it has none (an older index, a model that could
    not be exported) or onnxruntime is not installed. The caller has checked the generation's artifacts."""
    if generation is None or not manifest.has_encoder:
        return None
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    encoder = OnnxQueryEncoder.from_folder(generation / ENCODER_DIR)
    model = manifest.model
    if encoder.name != model.name or encoder.dim != model.dim:
        raise IndexCorrupt(
            f"The question encoder in {generation / ENCODER_DIR} is for model {encoder.name!r} ({encoder.dim} "
            f"dimensions), the index for {model.name!r} ({model.dim}). {REBUILD_HINT}"
        )
    return encoder


def for_documents(embedder: Any, manifest: Manifest, load: Any = None, source: str | None = None) -> Any:
    """The embedder that embeds new documents into an index: the index's full model at its precision (loaded on
    first need, then kept; from ``source`` when given, a tuned model's folder) when ``embedder`` is a question
    encoder, else ``embedder`` itself."""
    if not isinstance(embedder, OnnxQueryEncoder):
        return embedder
    if embedder.documents_embedder is None:
        from .embedding import embedder_for_index

        embedder.documents_embedder = embedder_for_index(manifest.model.name, manifest.precision, load, source)
    return embedder.documents_embedder


# ---------------------------------------------------------------- at build time (torch is loaded then)


def write_encoder(embedder: Any, generation: Path, index_dir: str | Path) -> bool:
    """Put the question encoder of ``embedder``'s model into ``generation``, the folder being written for
    ``index_dir``: linked from the live generation when its files are intact and still agree with the model, else
    exported. Returns whether an encoder was written. Write errors (a full disk) propagate; an export that fails
    or disagrees leaves no encoder."""
    from .errors import TqaError
    from .store import current_generation

    model = _sentence_transformer(embedder)
    if model is None:
        return False
    try:
        previous = current_generation(index_dir)  # still the live one: the new generation is not published yet
    except TqaError:  # a damaged pointer (a --rebuild replaces it)
        previous = None
    target = generation / ENCODER_DIR
    if previous is not None and _reusable(previous, model):
        target.mkdir()
        for name in FILES:
            _link_or_copy(previous / ENCODER_DIR / name, target / name)
        return True
    try:
        held = _take_held(model)
        if held is not None:  # exported by ``encoder_in_memory`` for this very model: not traced twice
            files, config, distance = held
        else:
            files, config = export(model)
            encoder = OnnxQueryEncoder(files[MODEL_FILE], files[TOKENIZER_FILE].decode("utf-8"), config)
            distance = disagreement(encoder, model)
    except OSError:
        raise
    except Exception as exc:  # a model the exporter cannot trace: questions go through sentence-transformers
        log.warning("tqa: the model %s could not be exported for questions (%s); questions will load the full "
                    "model.", model.name, first_line(exc))
        return False
    if distance > TOLERANCE:
        log.warning("tqa: the exported model %s differs from the model by %.2g cosine on the probe texts; "
                    "questions will load the full model.", model.name, distance)
        return False
    config["checked_distance"] = float(distance)
    config["reference"] = [[float(f"{x:.7g}") for x in row] for row in model.encode(list(REFERENCE))]
    files[CONFIG_FILE] = (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    target.mkdir()
    for name in FILES:
        (target / name).write_bytes(files[name])
    return True


def encoder_in_memory(embedder: Any) -> OnnxQueryEncoder | None:
    """The question encoder ``write_encoder`` would export for ``embedder``'s model, held in memory (to measure an
    index before it is published, as it will answer), or None where a build would write none. The export is kept
    for the next ``write_encoder`` of the same model object (one, then released), which then writes it rather than
    tracing the model again."""
    model = _sentence_transformer(embedder)
    if model is None:
        return None
    try:
        files, config = export(model)
        encoder = OnnxQueryEncoder(files[MODEL_FILE], files[TOKENIZER_FILE].decode("utf-8"), config)
        distance = disagreement(encoder, model)
    except Exception:  # a model the exporter cannot trace: its index answers through the model itself
        return None
    with _HELD_LOCK:
        _HELD[:] = [(weakref.ref(model), files, config, distance)]
    return encoder if distance <= TOLERANCE else None


# The export ``encoder_in_memory`` made last, until ``write_encoder`` takes it for the same model object.
_HELD: list[tuple[weakref.ref[Any], dict[str, bytes], dict[str, Any], float]] = []
_HELD_LOCK = threading.Lock()


def _take_held(model: Any) -> tuple[dict[str, bytes], dict[str, Any], float] | None:
    with _HELD_LOCK:
        if not _HELD:
            return None
        ref, files, config, distance = _HELD.pop()
    return (dict(files), dict(config), distance) if ref() is model else None


def _sentence_transformer(embedder: Any) -> Any:
    """The ``SentenceTransformerEmbedder`` behind ``embedder`` (looking through wrappers that expose ``inner``),
    or None."""
    from .embedding import SentenceTransformerEmbedder

    for e in (embedder, getattr(embedder, "inner", None)):
        if isinstance(e, SentenceTransformerEmbedder):
            return e
    return None


def _reusable(previous: Path, model: Any) -> bool:
    """Whether ``previous``'s encoder can serve the new generation: listed in its manifest, intact, for this
    model, and made from the model as it is now (the model behind a name can change, by an upgrade or an edited
    folder). The model's vectors for ``REFERENCE`` are stored with the export; when they are unchanged, so is the
    model. When they moved (another precision, another CPU), the export itself is checked again."""
    from .store import sha256_file

    try:
        artifacts = Manifest.read(previous).artifacts
        for rel in ARTIFACTS:
            path, meta = previous / rel, artifacts[rel]
            if path.stat().st_size != meta.size or sha256_file(path) != meta.sha256:
                return False
        config = json.loads((previous / ENCODER_DIR / CONFIG_FILE).read_text(encoding="utf-8"))
        if (config.get("format"), config.get("model"), config.get("dim"), config.get("max_tokens")) != (
                ENCODER_FORMAT, model.name, model.dim, model.max_tokens):
            return False
        stored = np.asarray(config["reference"], dtype=np.float32)
        if _distance(model.encode(list(REFERENCE)), stored) <= SAME_MODEL:
            return True
        return disagreement(OnnxQueryEncoder.from_folder(previous / ENCODER_DIR), model) <= TOLERANCE
    except Exception:  # anything unreadable or unexpected: export afresh
        return False


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """The largest cosine distance between matching rows of two sets of unit vectors."""
    return float(1 - (a * b).sum(1).min()) if a.shape == b.shape else 2.0


def disagreement(encoder: OnnxQueryEncoder, model: Any, texts: tuple[str, ...] = PROBES) -> float:
    """The largest cosine distance between ``encoder``'s vectors and ``model``'s, for each text alone and for
    all of them as one batch."""
    reference = model.encode(list(texts))
    alone = np.vstack([encoder.encode([t]) for t in texts])
    together = encoder.encode(list(texts), batch_size=len(texts))
    return max(_distance(reference, alone), _distance(reference, together))


def export(embedder: Any) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The files of the question encoder for a ``SentenceTransformerEmbedder``'s model, in memory: the graph from
    token ids to the sentence embedding (transformer, the model's pooling and any further modules, traced from a
    float32 copy of the model whatever precision the embedder runs at), its tokenizer, and their description."""
    import warnings

    import torch
    from sentence_transformers import SentenceTransformer

    from .embedding import resolve_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter warnings; the export is checked against the model
        # (a tuned model is named by its place in the index folder, not by a path: read it from where it was)
        model = SentenceTransformer(getattr(embedder, "source", None) or resolve_model(embedder.name), device="cpu")
        tokenizer, backend, sample, names = _traceable(model)

        class Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                return self.model(dict(zip(names, tensors, strict=True)))[OUTPUT]

        buffer = io.BytesIO()
        dynamic = {k: {0: "batch", 1: "tokens"} for k in names}
        with torch.no_grad():
            # written to memory: nothing reaches the index folder before the export is checked
            torch.onnx.export(Graph(), tuple(sample[k] for k in names), cast(Any, buffer), input_names=names,
                              output_names=[OUTPUT], dynamic_axes={**dynamic, OUTPUT: {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    config: dict[str, Any] = {
        "format": ENCODER_FORMAT,
        "model": embedder.name,
        "dim": int(embedder.dim),
        "max_tokens": int(embedder.max_tokens),
        "inputs": names,
        "output": OUTPUT,
        "pad_id": int(pad_id if pad_id is not None else 0),
        "exported_with": {"torch": torch.__version__.split("+")[0], "opset": OPSET},
    }
    files = {MODEL_FILE: buffer.getvalue(), TOKENIZER_FILE: backend.to_str().encode("utf-8")}
    return files, config


def _traceable(model: Any) -> tuple[Any, Any, Any, list[str]]:
    """(tokenizer, its fast backend, a sample batch, the graph's input names) of a sentence-transformers model
    made ready to trace; raises ValueError for a model the exported graph could not reproduce."""
    import torch

    model.eval()
    if getattr(model, "default_prompt_name", None):
        raise ValueError("the model adds a prompt to every text")
    tokenizer = getattr(model, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("the model has no fast tokenizer")
    transformer = getattr(model[0], "auto_model", None)
    if transformer is not None and hasattr(transformer, "set_attn_implementation"):
        with contextlib.suppress(Exception):
            transformer.set_attn_implementation("eager")  # plain matrix products: exports everywhere
    # a padded batch of two, so the traced graph keeps the attention mask's path
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers 5 / 6
    sample = tokenize(["An example question to trace the model with.", "Short one"])
    names = [k for k in INPUTS if k in sample]
    unknown = [k for k, v in sample.items() if isinstance(v, torch.Tensor) and k not in INPUTS]
    if "input_ids" not in names or "attention_mask" not in names or unknown:
        raise ValueError(f"the model takes inputs {sorted(k for k in sample if k != 'modality')}")
    return tokenizer, backend, sample, names


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:  # a file system without hard links (or across devices): copy
        shutil.copyfile(source, dest)
