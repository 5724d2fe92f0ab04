"""Building on a Ray cluster: extraction, chunking and embedding run on Ray workers; the driver assembles and publishes.

Install with ``pip install 'tqa[ray]'``. Ray is imported only when a ``RayPool`` is made, so ``import tqa`` and
``tqa --help`` never load it.

Why Ray Core (a pool of actors) and not Ray Data. Each worker is an actor that loads the model once and then
takes calls: ``encode`` (a slice of texts in, float32 vectors out) and ``process`` (a batch of files as bytes in;
each file extracted and chunked, then all of the batch's texts embedded in one pass; documents, chunks and vectors
out). Extraction and chunking run in the same call as embedding, in the worker that holds the model, rather than as
tasks of their own, because on CPU workers a separate extraction task would compete with the embedding actors for
the same CPUs (each actor reserves its CPUs for as long as it lives, so on a 2-CPU cluster with 2 actors there is
no CPU left for a task) and would send every text through the object store twice; extraction of text formats is
a few percent of embedding time, and files are independent, so fusing costs nothing in parallelism. Ray Data
(``map_batches`` over an actor pool) would do the same with more machinery: it needs the ``ray[data]`` extra
(pyarrow, pandas), turns our dataclasses into Arrow rows, runs its own streaming scheduler and resource reservation
on top of Ray Core, and hides the retry of one call behind it. Plain actor calls keep the results keyed by file
and streamed back in the order they finish, bounded in flight, and retried by Ray itself: a worker process that
dies is restarted (``max_restarts``: the model is loaded again) and the calls it held are run again
(``max_task_retries``); each call is a pure function of its input, so running it twice is safe. When Ray cannot
restart a worker any more, the build stops with one line (``DistributedError``) before anything is published:
workers never write the index folder; the driver holds its write lock and publishes as a local build does.

The interface is deliberately narrow so that the staged build (plan, extract and chunk, embed, assemble, publish)
can hand its per-file stage to the workers:

- ``RayPool(address, model=..., precision=...)``: connects to a cluster (``"auto"`` starts a private local one) and
  starts one worker per ``cpus_per_worker`` CPUs of the cluster.
- ``RayPool.encode(texts, batch_size)``: vectors in the order of ``texts`` (sorted by length and cut into slices
  aligned with the model's batches, so that each batch pads as it would in one local pass).
- ``RayPool.process(jobs, extract=..., texts_of=...)``: ``FileJob(key, source, data)`` in, ``FileResult(key,
  extracted, vectors)`` out as calls finish. ``extract(source, data)`` is any picklable function whose result is
  picklable (by default ``extract_and_chunk`` with the index's chunk settings); ``texts_of(result)`` says what to
  embed for it (by default ``Extracted.texts``: the chunks' search texts, then their units').
- ``RayEmbedder(pool)``: the ``Embedder`` protocol over the pool, so that ``build_index(embedder=RayEmbedder(pool))``
  builds a complete index whose embedding ran on the cluster.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import DEFAULT_MODEL, ChunkSettings
from .errors import DistributedError, TqaError

if TYPE_CHECKING:
    import numpy as np

    from .chunking import Chunk
    from .loaders import Document

log = logging.getLogger("tqa")

LOCAL = "auto"  # the address that starts a private local cluster
MAX_RESTARTS = 3  # times Ray restarts a lost worker (and runs again the calls it held) before the build gives up
CALL_TEXTS = 512  # texts per encode call (16 model batches of 32): a call costs about a millisecond of overhead
CALL_FILES = 256  # files per process call at most
CALL_BYTES = 1 << 20  # and at most this many bytes of file data per call (one large file is a call of its own)
IN_FLIGHT = 2  # calls queued per worker: the next call's input reaches the worker while it runs the current one
START_SECONDS = 600.0  # workers must have loaded the model within this
STALL_SECONDS = 900.0  # no call finished for this long: workers are gone and cannot be placed again


def ray_module() -> Any:
    """The ``ray`` package, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DistributedError(
            "Building on Ray needs the ray extra: run `pip install 'tqa[ray]'` (on the driver and every worker)."
        ) from None
    return ray


# ---------------------------------------------------------------- the per-file stage (runs on a worker)


@dataclass(frozen=True)
class FileJob:
    """One file for a worker: ``key`` is the driver's handle for it (its place in the plan)."""

    key: int
    source: str
    data: bytes


@dataclass(frozen=True)
class Extracted:
    """What extracting and chunking one file gives: its document and chunks, or the reason it is skipped."""

    source: str
    document: Document | None
    chunks: tuple[Chunk, ...] = ()
    skipped: str | None = None

    def texts(self) -> list[str]:
        """What is embedded for this file, in the order a local build embeds it: every chunk's search text, then
        every chunk's units'. The first ``len(chunks)`` vectors are the chunks', the rest the units'."""
        return [c.search_text for c in self.chunks] + [t for c in self.chunks for t in c.unit_search_texts()]


@functools.lru_cache(maxsize=8)
def _chunker(settings: ChunkSettings) -> Any:
    from .chunking import Chunker

    return Chunker(settings)


def extract_and_chunk(source: str, data: bytes, chunking: ChunkSettings) -> Extracted:
    """Extract one file's text and chunk it, as a local build does; a file that cannot be read, or has no text,
    comes back with the reason it is skipped."""
    from .loaders import SkipFile, extract

    try:
        doc = extract(source, data)
    except SkipFile as exc:
        return Extracted(source, None, skipped=str(exc))
    chunks = _chunker(chunking).chunk(doc)
    if not chunks:
        return Extracted(source, None, skipped="no text to index")
    return Extracted(source, doc, tuple(chunks))


def texts_of_extracted(result: Extracted) -> list[str]:
    return result.texts()


@dataclass(frozen=True)
class FileResult:
    key: int
    extracted: Any  # what ``extract`` returned (an ``Extracted`` by default)
    vectors: np.ndarray  # (len(texts_of(extracted)), dim) float32, L2-normalised, in that order


@dataclass(frozen=True)
class ModelFactory:
    """Loads ``load_embedder(name, precision)`` on a worker (picklable, so that it can travel to the cluster)."""

    name: str = DEFAULT_MODEL
    precision: str | None = None

    def __call__(self) -> Any:
        from .embedding import load_embedder

        return load_embedder(self.name, self.precision)


class _Worker:
    """A Ray actor: the model, loaded once, and the calls that use it. An error while loading is kept and reported
    by ``describe`` (a failed ``__init__`` would only surface as a dead actor)."""

    def __init__(self, factory: Callable[[], Any], threads: int) -> None:
        self.error: tuple[str, str, bool] | None = None
        try:
            if threads > 0:
                try:
                    import torch

                    torch.set_num_threads(threads)
                except ImportError:  # an embedder without torch
                    pass
            self.embedder = factory()
        except Exception as exc:
            self.error = (type(exc).__name__, _first_line(exc), isinstance(exc, TqaError))

    def describe(self) -> dict[str, Any]:
        import ray

        if self.error is not None:
            return {"error": self.error}
        e = self.embedder
        return {
            "name": e.name, "dim": int(e.dim), "max_tokens": int(e.max_tokens),
            "precision": getattr(e, "precision", None), "tqa": __version__, "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.embedder.encode(texts, batch_size=batch_size)

    def process(self, jobs: list[FileJob], extract: Callable[[str, bytes], Any], texts_of: Callable[[Any], list[str]],
                batch_size: int) -> list[FileResult]:
        results = [extract(job.source, job.data) for job in jobs]
        texts = [texts_of(r) for r in results]
        flat = [t for ts in texts for t in ts]
        vectors = self.embedder.encode(flat, batch_size=batch_size) if flat else None
        out, at = [], 0
        for job, result, ts in zip(jobs, results, texts, strict=True):
            if vectors is None:
                import numpy as np

                part = np.zeros((0, int(self.embedder.dim)), dtype=np.float32)
            else:
                part = vectors[at:at + len(ts)]
            out.append(FileResult(job.key, result, part))
            at += len(ts)
        return out


def _cluster_messages_to_stderr(ray: Any) -> None:
    """Ray's driver prints the cluster's messages (a worker died, a call is retried) to stdout; a build's stdout is
    its summary (``tqa index --json``), so they go to stderr. Ray offers no setting for it: its printing function is
    wrapped, when it is there to wrap."""
    worker: Any = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(worker, "print_to_stdstream", None)
    if worker is None or original is None or getattr(original, "_tqa_stderr", False):
        return

    def to_stderr(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return original({**data, "is_err": True}, *args, **kwargs)

    to_stderr._tqa_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail at once, in one line, when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for minutes)."""
    import socket

    if "://" in address:  # ray://HOST:PORT (Ray Client) and the like: left to ray.init
        return
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(
            f"The Ray address {address!r} is not HOST:PORT (the address `ray start --head` prints), nor auto."
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise DistributedError(
            f"No Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}). Start its head with "
            "`ray start --head`, pass the address it prints, or use --ray auto for a local cluster."
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# ---------------------------------------------------------------- the driver side


class RayPool:
    """Workers on a Ray cluster, each holding the model. Use as a context manager (or call ``close``): the workers
    are stopped, and a cluster this pool started is shut down.

    ``address``: ``"auto"`` starts a private local cluster with ``local_cpus`` CPUs (default: all of this machine's);
    anything else is passed to ``ray.init`` (``HOST:PORT`` of a running cluster's head). When Ray is already
    initialised in this process, that session is used as it is and left running.
    ``workers``: how many (default: the cluster's CPUs // ``cpus_per_worker``). ``embedder``: a picklable factory
    run once on each worker (default ``ModelFactory(model, precision)``, with ``precision`` resolved on the driver:
    ``TQA_PRECISION`` or ``auto`` for this CPU; a build passes the index's own), so that every worker encodes at the
    same one.
    ``call_texts``, ``call_files``, ``call_bytes``: how much one call carries (texts for ``encode``; files and their
    bytes for ``process``). ``on_call(done_calls)``: called on the driver after each finished call (progress; tests
    use it to act mid-build).
    """

    def __init__(self, address: str = LOCAL, *, model: str = DEFAULT_MODEL, precision: str | None = None,
                 workers: int | None = None, cpus_per_worker: int = 1, local_cpus: int | None = None,
                 max_restarts: int = MAX_RESTARTS, embedder: Callable[[], Any] | None = None,
                 start_seconds: float = START_SECONDS, stall_seconds: float = STALL_SECONDS,
                 call_texts: int = CALL_TEXTS, call_files: int = CALL_FILES, call_bytes: int = CALL_BYTES,
                 on_call: Callable[[int], None] | None = None) -> None:
        if not isinstance(address, str) or not address.strip():
            raise DistributedError("The Ray address must be HOST:PORT of a running cluster's head, or auto.")
        if isinstance(cpus_per_worker, bool) or not isinstance(cpus_per_worker, int) or cpus_per_worker < 1:
            raise DistributedError(f"cpus_per_worker must be a whole number of at least 1, not {cpus_per_worker!r}.")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise DistributedError(f"workers must be a whole number of at least 1, not {workers!r}.")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise DistributedError(f"max_restarts must be a whole number of at least 0, not {max_restarts!r}.")
        for label, value in (("call_texts", call_texts), ("call_files", call_files), ("call_bytes", call_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DistributedError(f"{label} must be a whole number of at least 1, not {value!r}.")
        self.call_texts, self.call_files, self.call_bytes = call_texts, call_files, call_bytes
        self.address = address.strip()
        self.stall_seconds = stall_seconds
        self.on_call = on_call
        self.calls_done = 0
        self._ray = ray = ray_module()
        self._owned = False
        self._actors: list[Any] = []
        self.default_model = embedder is None
        if embedder is None:
            from .embedding import resolve_precision

            # resolved here, once: workers on CPUs without native bfloat16 must still encode as the index records
            embedder = ModelFactory(model, resolve_precision(precision))
        factory = embedder
        self._connect(local_cpus)
        try:
            total = float(ray.cluster_resources().get("CPU", 0))
            if total < cpus_per_worker:
                raise DistributedError(
                    f"The Ray cluster at {self.address} has {total:g} CPUs; a worker needs {cpus_per_worker}. "
                    "Add a node (`ray start --address HEAD:PORT`) or lower the CPUs per worker."
                )
            n = workers or max(1, int(total // cpus_per_worker))
            if n * cpus_per_worker > total:
                raise DistributedError(
                    f"{n} Ray workers of {cpus_per_worker} CPU need {n * cpus_per_worker} CPUs; the cluster at "
                    f"{self.address} has {total:g}. Ask for fewer workers, or add nodes."
                )
            remote = ray.remote(_Worker).options(
                num_cpus=cpus_per_worker,
                max_restarts=max_restarts,
                max_task_retries=max_restarts,
                scheduling_strategy="SPREAD",  # one worker per node first, so that a lost node costs the fewest
            )
            self._actors = [remote.remote(factory, cpus_per_worker) for _ in range(n)]
            self.workers = self._describe(start_seconds)
        except BaseException:
            self.close()
            raise
        first = self.workers[0]
        self.name, self.dim, self.max_tokens = first["name"], first["dim"], first["max_tokens"]
        self.precision = first["precision"]

    # -- connection

    def _connect(self, local_cpus: int | None) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        # Nothing leaves this machine but what the build sends to the cluster: no usage statistics.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
        if self.address != LOCAL:
            _check_reachable(self.address)
        try:
            if self.address == LOCAL:
                ray.init(address="local", num_cpus=local_cpus or os.cpu_count() or 1, include_dashboard=False,
                         **kwargs)
            else:
                ray.init(address=self.address, **kwargs)
        except Exception as exc:
            if self.address == LOCAL:
                raise DistributedError(f"Could not start a local Ray cluster: {_first_line(exc)}") from None
            raise DistributedError(
                f"Could not connect to the Ray cluster at {self.address}: {_first_line(exc)}. Start its head with "
                "`ray start --head`, pass the address it prints, or use --ray auto for a local cluster."
            ) from None
        self._owned = True
        _cluster_messages_to_stderr(ray)

    def _describe(self, timeout: float) -> list[dict[str, Any]]:
        ray = self._ray
        refs = [a.describe.remote() for a in self._actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if len(ready) < len(refs):
            raise DistributedError(
                f"Only {len(ready)} of {len(refs)} Ray workers started within {timeout:.0f} s: the cluster lacks the "
                "CPUs for them, or cannot reach them. Check `ray status`, or ask for fewer workers."
            )
        infos = [self._get(r) for r in refs]
        for info in infos:
            if "error" in info:
                kind, message, is_tqa = info["error"]
                raise DistributedError(
                    f"A Ray worker could not load the embedding model: {message}"
                    if is_tqa else f"A Ray worker could not start: {kind}: {message}"
                )
            if info["tqa"] != __version__:
                raise DistributedError(
                    f"A Ray worker runs tqa {info['tqa']}, this driver tqa {__version__}: install the same tqa on "
                    "every node of the cluster."
                )
            keys = ("name", "dim", "max_tokens", "precision")
            if any(info[k] != infos[0][k] for k in keys):
                raise DistributedError(
                    "The Ray workers loaded different models or precisions "
                    f"({ {k: infos[0][k] for k in keys} } and { {k: info[k] for k in keys} }): install the same model "
                    "on every node, or pass the precision explicitly."
                )
        return infos

    def close(self) -> None:
        ray, actors, self._actors = self._ray, self._actors, []
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone with its cluster
                pass
        if self._owned:
            self._owned = False
            ray.shutdown()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """The process ids of the workers as they are now (a restarted worker has a new one)."""
        return [int(i["pid"]) for i in self._describe(self.stall_seconds)]

    # -- calls

    def _get(self, ref: Any) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, TqaError):
                raise cause from None
            what = f"{type(cause).__name__}: {_first_line(cause)}" if cause is not None else _first_line(exc)
            raise DistributedError(f"A Ray worker failed: {what}") from None
        except ray.exceptions.RayActorError as exc:
            raise DistributedError(
                "A Ray worker was lost more often than Ray restarts it "
                f"({_first_line(exc)}). Nothing was published; run the build again."
            ) from None
        except ray.exceptions.RayError as exc:
            raise DistributedError(f"The Ray cluster failed: {_first_line(exc)}. Nothing was published.") from None

    def _run(self, calls: Iterable[tuple[Any, str, tuple[Any, ...]]]) -> Iterator[tuple[Any, Any]]:
        """Run ``(tag, method, args)`` calls on the workers, at most ``IN_FLIGHT`` queued per worker, and yield
        ``(tag, result)`` as they finish."""
        ray = self._ray
        if not self._actors:
            raise DistributedError("This Ray pool is closed.")
        pending: dict[Any, tuple[Any, int]] = {}
        load = [0] * len(self._actors)
        source = iter(calls)
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            while not exhausted:
                i = min(range(len(load)), key=load.__getitem__)
                if load[i] >= IN_FLIGHT:
                    return
                try:
                    tag, method, args = next(source)
                except StopIteration:
                    exhausted = True
                    return
                ref = getattr(self._actors[i], method).remote(*args)
                pending[ref] = (tag, i)
                load[i] += 1

        try:
            fill()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.stall_seconds)
                if not ready:
                    raise DistributedError(
                        f"No Ray worker finished any work for {self.stall_seconds:.0f} s: workers were lost and cannot "
                        "be placed again (see `ray status`). Nothing was published."
                    )
                for ref in ready:
                    tag, i = pending.pop(ref)
                    load[i] -= 1
                    result = self._get(ref)
                    self.calls_done += 1
                    if self.on_call:
                        self.on_call(self.calls_done)
                    yield tag, result
                fill()
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:
                    pass

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Vectors for ``texts``, in their order. Texts are sorted longest first (as sentence-transformers sorts
        within one call) and cut into slices of whole batches, so that each batch holds the texts a local pass
        would put together."""
        import numpy as np

        out = np.zeros((len(texts), int(self.dim)), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        c = self.call_texts
        step = c if c < batch_size else c // batch_size * batch_size
        slices = [order[a:a + step] for a in range(0, len(order), step)]
        bar = _bar(len(texts)) if progress else None
        calls = ((rows, "encode", ([texts[i] for i in rows], batch_size)) for rows in slices)
        for rows, vectors in self._run(calls):
            out[rows] = vectors
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        return out

    def process(self, jobs: Iterable[FileJob], *, chunking: ChunkSettings | None = None,
                extract: Callable[[str, bytes], Any] | None = None,
                texts_of: Callable[[Any], list[str]] | None = None, batch_size: int = 32) -> Iterator[FileResult]:
        """Extract, chunk and embed each file on the workers; yield a ``FileResult`` per file as calls finish (in no
        particular order: ``key`` says which file). ``jobs`` is read lazily, so the driver holds the bytes of only
        the calls in flight. ``extract`` defaults to ``extract_and_chunk`` with ``chunking``."""
        if extract is None:
            extract = functools.partial(extract_and_chunk, chunking=chunking or ChunkSettings())
        texts_of = texts_of or texts_of_extracted
        calls = ((None, "process", (batch, extract, texts_of, batch_size)) for batch in
                 _batches(jobs, self.call_files, self.call_bytes))
        for _, results in self._run(calls):
            yield from results


def _batches(jobs: Iterable[FileJob], files: int, size_cap: int) -> Iterator[list[FileJob]]:
    batch: list[FileJob] = []
    size = 0
    for job in jobs:
        if batch and (len(batch) >= files or size + len(job.data) > size_cap):
            yield batch
            batch, size = [], 0
        batch.append(job)
        size += len(job.data)
    if batch:
        yield batch


def _bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="Embedding on Ray", unit="text")


class RayEmbedder:
    """The ``Embedder`` protocol over a ``RayPool``: ``build_index(embedder=RayEmbedder(pool))`` embeds on the
    cluster and publishes on the driver. ``inner`` is the same model loaded on the driver, only when something asks
    for it: the build exports it for questions (query_encoder.py). With a custom worker factory there is none."""

    def __init__(self, pool: RayPool) -> None:
        self.pool = pool
        self.name, self.dim, self.max_tokens = pool.name, pool.dim, pool.max_tokens
        self.precision = pool.precision
        self._inner: Any = None

    @property
    def inner(self) -> Any:
        if self._inner is None and self.pool.default_model:
            from .embedding import load_embedder

            self._inner = load_embedder(self.name, self.precision)
        return self._inner

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return self.pool.encode(texts, batch_size=batch_size, progress=progress)


__all__ = [
    "LOCAL", "Extracted", "FileJob", "FileResult", "ModelFactory", "RayEmbedder", "RayPool", "extract_and_chunk",
    "ray_module",
]
