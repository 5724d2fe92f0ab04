"""``tqa tune``: the index's model tuned on the index's own passages, kept only where it finds them better.

``tune.tune`` does the learning (pure: texts in, a model folder and a report out). Here is what the index makes
of it:

1. Under the index's write lock, the live index is loaded and its passages taken: each chunk's paragraphs (the
   texts the unit signal embeds; pairs from them taught the model more than whole chunks, eval/README.md), or the
   chunk when it has none. Tuning always starts from the base model (an index tuned before is tuned afresh).
2. The tuned model is written into a temporary folder ``models/.tmp-<hex>/`` of the index folder (what a killed
   run left in ``models/``, temporary folders and models no manifest names, is removed first). It is kept only
   when held-out sentences find their passages better (``tune.MIN_GAIN`` or ``min_gain``), and, where a question
   set is available, when the index re-embedded with it answers that set at least as well (MRR@10 in the search
   mode the assistant uses, hybrid by default) as the live index does, each measured as ``tqa eval`` measures it:
   questions encoded by the index's exported question encoder (for the new index, exported in memory, and that
   export is what the publish writes into the generation), or by its model where it has none. A refusal is a result: it
   removes what it wrote and changes nothing else.
3. A kept model goes to ``models/<first 16 hex digits of its SHA-256>/`` (the hash is over its files' names and
   contents; a folder of that hash already there is reused), the index's own documents and chunks are embedded
   again with it (nothing is read from the corpus) and published as a new generation through the build's own
   ``assemble`` and ``publish_index``, with a ``tuning`` section in the manifest; the question encoder is exported
   from the tuned model as at any build. A kill at any point leaves the previous generation live.
4. ``revert_tuning`` embeds the documents again with the base model, publishes, and removes the tuned model's folder
   (the index's own files only: a folder whose content no longer matches its hash is left where it is).

The tuned model is read from its folder only after its hash checks out (``tuned_model_path``): a damaged one is
refused in one line naming ``tqa tune --revert`` and ``tqa index --rebuild --model``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import IndexCorrupt, IndexMismatch, TqaError, shown
from .manifest import TUNED_DIR, TUNED_FOLDER, Manifest, Tuning
from .tune import MIN_GAIN, TuneError

# Without a question set to check, held-out sentences alone decide, and they are not a safe guard (on the treaty
# texts they improved while real questions were answered worse, eval/README.md): a larger gain is required.
MIN_GAIN_ALONE = 0.03

TMP_RE = re.compile(r"\.tmp-[0-9a-f]{32}")  # models/.tmp-<hex>: a tuned model being written
TMP_OWNER = ".tqa-tuning"  # written first into a temporary folder: tqa made it
DEFAULT_QUESTIONS = Path("eval") / "questions.jsonl"  # the project's question set, about corpus/
DEFAULT_CORPUS = Path("corpus")
Progress = Callable[[str, int, int], None]


@dataclass
class TuneResult:
    """What ``tqa tune`` (or ``--revert``) did, and the figures it decided on."""

    kept: bool  # a new generation was published (a tuned model, or the base model again)
    message: str  # one plain sentence for the user
    report: dict[str, Any] = field(default_factory=dict)  # tune.TuneReport's figures
    questions: str | None = None
    questions_mrr_before: float | None = None
    questions_mrr_after: float | None = None
    model_folder: str | None = None  # relative to the index folder
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kept", "message", "report", "questions", "questions_mrr_before",
                                               "questions_mrr_after", "model_folder", "seconds")}


# ---------------------------------------------------------------- the tuned model's folder


def model_digest(folder: Path) -> str:
    """SHA-256 over a model folder: each regular file's path (relative, POSIX) and the SHA-256 of its bytes, in
    sorted order. A symlink or anything but files and folders is refused (``IndexCorrupt``)."""
    from .store import sha256_file

    return _digest(folder, [(rel, sha256_file(path)) for rel, path in _model_files(folder)])


def _model_files(folder: Path) -> list[tuple[str, Path]]:
    """Each regular file of a model folder as (path relative to it, POSIX; path), sorted; a symlink or anything but
    files and folders is refused (``IndexCorrupt``)."""
    files = []
    for path in sorted(folder.rglob("*")):
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise IndexCorrupt(f"{shown(path)} is not a regular file")
        files.append((path.relative_to(folder).as_posix(), path))
    return files


def _digest(folder: Path | str, hashed: Sequence[tuple[str, str]]) -> str:
    if not hashed:
        raise IndexCorrupt(f"{shown(folder)} holds no files")
    lines = "".join(f"{rel}\0{sha}\n" for rel, sha in hashed)
    return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()


def files_digest(files: Sequence[tuple[str, bytes]], where: str = "the model") -> str:
    """``model_digest`` of a model folder held in memory as (relative path, bytes), as ``tuned_model_files``
    reads it."""
    return _digest(where, [(rel, hashlib.sha256(data).hexdigest()) for rel, data in sorted(files)])


def tuned_model_files(index_dir: str | Path, tuning: Tuning) -> tuple[tuple[str, bytes], ...]:
    """The tuned model's files as (relative path, bytes), to send where the index folder cannot be read (Ray
    workers, distributed.py): read once, and checked against the manifest's hash as read, so that what is sent is
    what the hash vouches for."""
    folder = Path(tuned_model_path(index_dir, tuning))
    files = tuple((rel, path.read_bytes()) for rel, path in _model_files(folder))
    if files_digest(files, str(folder)) != tuning.model_sha256:
        raise IndexCorrupt(f"The tuned model {shown(folder)} of the index changed while it was read. Run the build "
                           "again.")
    return files


def tuned_model_path(index_dir: str | Path, tuning: Tuning) -> str:
    """The tuned model's folder inside the index folder, once its content matches the hash the manifest records;
    raises ``IndexCorrupt`` (one line, naming the ways out) when it is missing or damaged."""
    folder = Path(index_dir) / tuning.folder
    fix = (f"Run `tqa tune --revert --index {shown(index_dir)}` to go back to the base model, or `tqa index "
           f"--rebuild --model {tuning.base_model} --index {shown(index_dir)}`.")
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise IndexCorrupt(f"{shown(folder)} is not a folder")
        ok = model_digest(folder) == tuning.model_sha256
    except FileNotFoundError:
        raise IndexCorrupt(f"The tuned model {shown(folder)} of the index is missing. {fix}") from None
    except (OSError, IndexCorrupt) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise IndexCorrupt(f"The tuned model {shown(folder)} of the index cannot be read ({why}). {fix}") from None
    if not ok:
        raise IndexCorrupt(f"The tuned model {shown(folder)} of the index fails its checksum (damaged or edited). "
                           f"{fix}")
    return str(folder)


def model_source(manifest: Manifest, index_dir: str | Path) -> str | None:
    """Where the index's model is read from: its tuned model's folder (checked), or None for a model by name."""
    return None if manifest.tuning is None else tuned_model_path(index_dir, manifest.tuning)


def _clear_leftovers(models: Path) -> None:
    """Remove the temporary folders a killed ``tqa tune`` left in ``models/`` (only those that hold tqa's owner
    file). The caller holds the write lock."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(models):
            if TMP_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False) \
                    and os.path.isfile(os.path.join(entry.path, TMP_OWNER)):
                shutil.rmtree(entry.path, ignore_errors=True)


def _prune_models(index_dir: Path, keep: str | None) -> None:
    """Remove the tuned models in ``models/`` other than ``keep`` (the folder the live manifest names) that tqa
    saved there (named by the hash of what they hold): what a ``tqa tune`` killed after saving its model and before
    publishing left behind. The caller holds the write lock."""
    models = index_dir / TUNED_DIR
    with contextlib.suppress(OSError):
        for entry in os.scandir(models):
            rel = f"{TUNED_DIR}/{entry.name}"
            if rel == keep or not TUNED_FOLDER.fullmatch(rel) or not entry.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError, IndexCorrupt):
                if model_digest(Path(entry.path))[:16] == entry.name:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _remove_model(index_dir: Path, tuning: Tuning) -> bool:
    """Remove a tuned model's folder the index no longer uses, when it is still what tqa saved (its hash checks
    out); anything else is left where it is. Returns whether it was removed."""
    folder = index_dir / tuning.folder
    try:
        if not TUNED_FOLDER.fullmatch(tuning.folder) or model_digest(folder) != tuning.model_sha256:
            return False
    except (OSError, IndexCorrupt):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        (index_dir / TUNED_DIR).rmdir()  # only when empty
    return True


def _settle_model(tmp: Path, models: Path) -> tuple[str, str, bool]:
    """Move the model saved in ``tmp/model`` to ``models/<hash prefix>`` (reusing a folder of that hash already
    there). Returns (folder relative to the index, full hash, whether the folder was new)."""
    digest = model_digest(tmp / "model")
    final = models / digest[:16]
    rel = f"{TUNED_DIR}/{digest[:16]}"
    if final.is_dir() and not final.is_symlink():
        with contextlib.suppress(OSError, IndexCorrupt):
            if model_digest(final) == digest:
                return rel, digest, False
        raise TqaError(f"{shown(final)} holds something else than the tuned model of that hash. Move it away and run "
                       "`tqa tune` again.")
    os.rename(tmp / "model", final)
    from .store import _fsync_tree

    _fsync_tree(final)
    return rel, digest, True


# ---------------------------------------------------------------- tqa tune


def index_passages(chunks: Sequence[Any]) -> list[str]:
    """What tuning trains on: each chunk's paragraphs as the index embeds them, or the chunk when it has none."""
    return [t for c in chunks for t in (c.unit_search_texts() or [c.search_text])]


def default_questions(manifest: Manifest, index_dir: Path, corpus: str | Path | None) -> Path | None:
    """The project's question set when the index is of the project's corpus (``corpus/`` here, or ``corpus`` given
    and the index's), else None."""
    from .indexing import same_corpus

    folder = Path(corpus) if corpus is not None else DEFAULT_CORPUS
    if not DEFAULT_QUESTIONS.is_file() or not same_corpus(manifest, folder, index_dir):
        return None
    return DEFAULT_QUESTIONS if _resolved(folder) == _resolved(DEFAULT_CORPUS) else None


def _resolved(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))


def tune_index(index: str | Path = "index", *, corpus: str | Path | None = None, questions: str | Path | None = None,
               use_questions: bool = True, epochs: int | None = None, max_pairs: int | None = None,
               min_gain: float | None = None, settings: Settings | None = None, progress: bool | None = None,
               on_progress: Progress | None = None, trainer: Callable[..., Any] | None = None,
               load: Callable[..., Any] | None = None) -> TuneResult:
    """Tune the index's model on its passages and, when kept, publish the index re-embedded with it (see the module
    docstring). ``corpus``: the folder the index is of (checked; it selects the default question set).
    ``questions``: a question set to check against (default: the project's for an index of ``corpus/``);
    ``use_questions`` False skips that check. ``trainer`` (``tune.tune``) and ``load`` (``load_embedder``) are
    there for tests."""
    from . import tune as tuning
    from .embedding import load_embedder
    from .indexing import same_corpus
    from .store import load_index, read_manifest, write_lock

    t0 = time.perf_counter()
    settings = settings or Settings.from_env()
    index_dir = Path(index)
    trainer = trainer or tuning.tune
    load = load or load_embedder
    read_manifest(index_dir)  # no index: one line, before the lock is taken
    with write_lock(index_dir), load_index(index_dir) as live:
        m = live.manifest
        if corpus is not None and not same_corpus(m, corpus, index_dir):
            raise IndexMismatch(f"The index at {shown(index_dir)}/ was built from {shown(m.corpus)}, not "
                                f"{shown(corpus)}. Pass the index of that corpus with --index DIR.")
        qfile = Path(questions) if questions is not None else default_questions(m, index_dir, corpus)
        qset = _load_questions(qfile) if use_questions and qfile is not None else None
        base = m.tuning.base_model if m.tuning is not None else m.model.name
        models = index_dir / TUNED_DIR
        models.mkdir(exist_ok=True)
        _clear_leftovers(models)
        _prune_models(index_dir, m.tuning.folder if m.tuning is not None else None)
        tmp = models / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        (tmp / TMP_OWNER).write_text("a tuned model being written by tqa tune\n", encoding="utf-8")
        new_folder: Path | None = None
        try:
            gain = min_gain if min_gain is not None else MIN_GAIN if qset is not None else MIN_GAIN_ALONE
            kw: dict[str, Any] = {k: v for k, v in (("epochs", epochs), ("max_pairs", max_pairs)) if v is not None}
            kw["min_gain"] = gain
            report = trainer(index_passages(live.chunks), base, tmp / "model",
                             on_progress=on_progress or _bar(progress), **kw)
            figures = report.to_dict()
            if report.mrr_before is None:  # too few pairs: nothing was trained
                raise TuneError(f"The index's passages give only {report.pairs} sentences to train on (at least "
                                f"{tuning.MIN_PAIRS} are needed): tune an index of a larger corpus.")
            if not report.kept:
                return TuneResult(False, f"Not tuned: {report.reason}; the index is unchanged.", figures,
                                  seconds=round(time.perf_counter() - t0, 1))
            rel, digest, fresh = _settle_model(tmp, models)
            new_folder = index_dir / rel if fresh else None
            figures["model_dir"] = str(index_dir / rel)  # (not the temporary folder it was saved in)
            tuned = Tuning(base_model=base, folder=rel, model_sha256=digest, pairs=report.pairs,
                           held_out=report.held_out, held_out_mrr_before=float(report.mrr_before),
                           held_out_mrr_after=float(report.mrr_after or 0.0), seconds=0.0,
                           created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           settings={k: v for k, v in report.settings.items() if isinstance(v, (int, float, str))})
            embedder = load(rel, m.precision or None, source=str(index_dir / rel))
            plan, new, embedded = _reembedded(live, index_dir, embedder, tuned, settings, progress)
            result = TuneResult(True, "", figures, model_folder=rel)
            if qset is not None:  # each index as it answers: through its question encoder, where it has one
                from .query_encoder import encoder_in_memory, load_query_encoder

                current = load_query_encoder(m, live.path) or _current_embedder(live, index_dir, load)
                before = _question_mrr(live, current, qset, live, settings)
                after = _question_mrr(new, encoder_in_memory(embedder) or embedder, qset, live, settings)
                result.questions, result.questions_mrr_before, result.questions_mrr_after = str(qfile), before, after
                tuned = _replace(tuned, questions=str(qfile), questions_mrr_before=before, questions_mrr_after=after)
                if after < before:
                    result.kept, result.model_folder, figures["model_dir"] = False, None, None
                    result.message = (f"Not tuned: held-out sentences found their passages better (MRR@10 "
                                      f"{report.mrr_before:.3f} -> {report.mrr_after:.3f}), but the questions of "
                                      f"{shown(qfile)} were answered worse ({settings.mode} MRR@10 {before:.3f} -> "
                                      f"{after:.3f}); the index is unchanged.")
                    result.seconds = round(time.perf_counter() - t0, 1)
                    return result
            tuned = _replace(tuned, seconds=round(time.perf_counter() - t0, 1))
            _publish(plan, new, embedded, embedder, tuned)
            new_folder = None  # live now
            old = m.tuning
            if old is not None and old.folder != rel:
                _remove_model(index_dir, old)
            checked = (f"; the questions of {shown(qfile)} were answered at least as well ({settings.mode} MRR@10 "
                       f"{result.questions_mrr_before:.3f} -> {result.questions_mrr_after:.3f})"
                       if result.questions is not None else "; no question set was checked")
            result.message = (f"Tuned: held-out sentences found their passages better (MRR@10 {report.mrr_before:.3f}"
                              f" -> {report.mrr_after:.3f}){checked}. The index now uses the tuned model in "
                              f"{shown(index_dir / rel)}.")
            result.seconds = tuned.seconds
            return result
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if new_folder is not None:  # refused or failed: a model folder this call made is not left behind
                shutil.rmtree(new_folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                models.rmdir()  # only when empty


def revert_tuning(index: str | Path = "index", *, settings: Settings | None = None, progress: bool | None = None,
                  load: Callable[..., Any] | None = None) -> TuneResult:
    """Embed the index's documents again with the base model, publish, and remove the tuned model's folder. An
    index that is not tuned is left as it is (the result says there is nothing to revert)."""
    from .embedding import load_embedder
    from .store import load_index, read_manifest, write_lock

    t0 = time.perf_counter()
    settings = settings or Settings.from_env()
    index_dir = Path(index)
    load = load or load_embedder
    read_manifest(index_dir)
    with write_lock(index_dir), load_index(index_dir) as live:
        old = live.manifest.tuning
        if old is None:
            return TuneResult(False, f"Nothing to revert: the index at {shown(index_dir)}/ uses the model "
                                     f"{live.manifest.model.name} as published.")
        embedder = load(old.base_model, live.manifest.precision or None)
        plan, new, embedded = _reembedded(live, index_dir, embedder, None, settings, progress)
        _publish(plan, new, embedded, embedder, None)
        removed = _remove_model(index_dir, old)
        _clear_leftovers(index_dir / TUNED_DIR)
        _prune_models(index_dir, None)
    where = (f"its folder {shown(index_dir / old.folder)} was removed" if removed else
             f"its folder {shown(index_dir / old.folder)} was left in place (it no longer matches what tqa saved)")
    return TuneResult(True, f"Reverted: the index at {shown(index_dir)}/ uses the base model {old.base_model} again; "
                            f"the tuned model is no longer used and {where}.",
                      seconds=round(time.perf_counter() - t0, 1))


# ---------------------------------------------------------------- the steps


def _replace(t: Tuning, **changes: Any) -> Tuning:
    import dataclasses

    return dataclasses.replace(t, **changes)


def _reembedded(live: Any, index_dir: Path, embedder: Any, tuning: Tuning | None, settings: Settings,
                progress: bool | None) -> tuple[Any, Any, Any]:
    """(plan, new index in memory, embedded files): the live index's documents and chunks embedded with
    ``embedder``, assembled as a build does."""
    from .indexing import assemble, embed, reembed_plan

    plan, extracted, skipped = reembed_plan(live, index_dir, embedder.name, live.manifest.precision or "fp32",
                                            tuning)
    embedded = embed(extracted, embedder, batch_size=settings.batch_size,
                     progress=sys.stderr.isatty() if progress is None else progress)
    new = assemble(plan, embedded, skipped, None, embedder, settings.ranking, settings.compress_above)
    return plan, new, embedded


def _publish(plan: Any, new: Any, embedded: Any, embedder: Any, tuning: Tuning | None) -> None:
    import dataclasses

    from .indexing import publish_index

    new.manifest = dataclasses.replace(new.manifest, tuning=tuning)
    publish_index(plan, new, embedded, None, embedder)


def _current_embedder(live: Any, index_dir: Path, load: Callable[..., Any]) -> Any:
    """The live index's own full model (its tuned model, or the model by name)."""
    m = live.manifest
    source = model_source(m, index_dir)
    extra = {} if source is None else {"source": source}
    return load(m.model.name, m.precision or None, **extra)


def _load_questions(path: Path) -> Any:
    from .evaluation import load_questions

    if not path.is_file():
        raise TuneError(f"No question set at {shown(path)}. Pass --questions FILE with one (JSON lines, as `tqa "
                        "eval` reads), or --no-questions.")
    return load_questions(path)


def _question_mrr(index: Any, embedder: Any, questions: Any, documents_of: Any, settings: Settings) -> float:
    """MRR@10 of a question set on ``index`` searched with ``embedder`` in the assistant's mode (as ``tqa eval``
    measures it), the evidence located in ``documents_of``'s documents (the same in both indexes)."""
    from .assistant import Assistant
    from .evaluation import evaluate_questions

    qa = Assistant(index, embedder, settings)
    runs = evaluate_questions(qa, questions, [settings.mode], documents=list(documents_of.documents()))
    value = runs[settings.mode]["metrics"].get("mrr@10")
    return round(float(value or 0.0), 4)


def _bar(progress: bool | None) -> Progress | None:
    """A progress bar of training steps on stderr (on a terminal, or when asked for)."""
    if not (sys.stderr.isatty() if progress is None else progress):
        return None
    state: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc="tuning", unit="step", file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
