"""Building on a Ray cluster: the build's stages 2 and 3 (extract and chunk, embed: indexing.py) run on Ray workers;
the driver plans, assembles and publishes, as a local build does. ``build_index(..., ray=ADDRESS)`` and
``tqa index --ray ADDRESS`` use it; there is one pipeline, and this module holds none of its logic, only the running.

Install with ``pip install 'tqa[ray]'`` (on the driver and on every node). Ray is imported only when a build asks for
it, so ``import tqa`` and ``tqa --help`` never load it.

Who does what. The driver runs stage 1 (``plan_build``: which files changed), reads each file to extract (within its
size cap) and sends its bytes with its ``FileTask``: workers need no shared file system and never write the index
folder. Each worker is a Ray actor that loads the model once and then takes calls: a batch of ``(FileTask, bytes)``
in; ``indexing.extract_and_chunk`` on each file and ``indexing.embed`` on the batch's extracted files (one batched
pass of the model); an ``Embedded`` or ``Skipped`` per file out. Results stream back as calls finish (at most
``IN_FLIGHT`` queued per worker, so the driver holds the bytes of those calls only) and are put back in corpus order
by the build, which then assembles the index (calibrating it with the model loaded on the driver) and publishes it
under its write lock, atomically.

Why Ray Core (a pool of actors) and not Ray Data. Extraction and chunking run in the same call as embedding, in the
worker that holds the model, rather than as tasks of their own: on CPU workers a separate extraction task would
compete with the embedding actors for the same CPUs (each actor reserves its CPUs for as long as it lives) and would
send every text through the object store twice; extraction of text formats is a few percent of embedding time, and
files are independent. Ray Data (``map_batches`` over an actor pool) would do the same with more machinery: the
``ray[data]`` extra (pyarrow, pandas), our dataclasses turned into Arrow rows, its own streaming scheduler, and the
retry of one call hidden behind it. Plain actor calls keep the results keyed by file, streamed, bounded in flight,
and retried by Ray itself: a worker process that dies is restarted (``max_restarts``: the model is loaded again) and
the calls it held are run again (``max_task_retries``); each call is a pure function of its input, so running it
twice is safe. When Ray cannot restart a worker any more, the build stops with one line (``DistributedError``)
before anything is published.

GPU workers (``gpus_per_worker``, ``tqa index --ray-gpus N``): each actor asks Ray for N GPUs (a fraction shares
one GPU between workers) besides its CPUs, and a worker Ray gave a GPU loads the model on it (``worker_device``).
The precision is the one the driver resolved for the index, so GPU and CPU workers write vectors of the same kind
(bf16 or fp32) and an update may mix them within that precision's tolerance.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import DEFAULT_MODEL
from .errors import DistributedError, ModelError, TqaError

if TYPE_CHECKING:
    from .indexing import Embedded, FileTask, Plan, Progress, Skipped

log = logging.getLogger("tqa")

LOCAL = "auto"  # the address that starts a private local cluster
MAX_RESTARTS = 3  # times Ray restarts a lost worker (and runs again the calls it held) before the build gives up
CALL_FILES = 256  # files per call at most
CALL_BYTES = 1 << 20  # and at most this many bytes of file data per call (one large file is a call of its own)
IN_FLIGHT = 2  # calls queued per worker: the next call's input reaches the worker while it runs the current one
START_SECONDS = 600.0  # workers must have loaded the model within this
MIN_GPU_SHARE = 0.01  # the smallest share of a GPU a worker may ask for (Ray counts GPUs in 1/10,000ths)
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


def check_ray(address: object, workers: object = None, gpus: object = None) -> None:
    """What can be refused before a build reads anything: no ray extra, an address that is not ``auto`` nor
    ``HOST:PORT``, or one where nothing answers, a worker count that is not a whole number of at least 1, a GPU
    share that Ray cannot grant (``_check_gpus``), or more workers than this machine has CPUs for a local cluster."""
    if not isinstance(address, str) or not address.strip():
        raise DistributedError("The Ray address must be HOST:PORT of a running cluster's head, or auto.")
    _check_workers(workers)
    _check_gpus(gpus)
    cpus = os.cpu_count() or 1
    if address.strip() == LOCAL and isinstance(workers, int) and workers > cpus:
        raise DistributedError(
            f"{workers} Ray workers of 1 CPU need {workers} CPUs; this machine has {cpus}. Ask for fewer workers "
            "(--ray-workers), or pass the address of a larger cluster."
        )
    ray_module()
    if address.strip() != LOCAL:
        _check_reachable(address.strip())


def _check_workers(workers: object) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DistributedError(f"The number of Ray workers must be a whole number of at least 1, not {workers!r}.")


def _check_gpus(gpus: object) -> None:
    """GPUs per worker: None (none), a share of one GPU from ``MIN_GPU_SHARE`` to 1 (workers share a GPU), or a
    whole number (Ray grants fractions of one GPU only)."""
    if gpus is None:
        return
    ok = isinstance(gpus, (int, float)) and not isinstance(gpus, bool) and math.isfinite(gpus) and (
        MIN_GPU_SHARE <= gpus <= 1 or (gpus > 1 and float(gpus).is_integer()))
    if not ok:
        raise DistributedError(f"GPUs per Ray worker must be a share of one GPU from {MIN_GPU_SHARE} to 1 (such as "
                               f"0.5) or a whole number of GPUs, not {gpus!r}.")


def worker_device() -> str:
    """Where a worker runs its model: ``cuda`` when Ray gave this worker a GPU (it then sets CUDA_VISIBLE_DEVICES to
    it), else ``cpu``. Outside a Ray worker: ``cpu``."""
    import ray

    return "cuda" if ray.is_initialized() and ray.get_gpu_ids() else "cpu"


# ---------------------------------------------------------------- the worker


@dataclass(frozen=True)
class ModelFactory:
    """Loads ``load_embedder(name, precision)`` on a worker (picklable, so that it can travel to the cluster).

    ``files``: the model's folder sent with it, as (relative path, bytes), for a model no node can load by name (an
    index's tuned model, tuning.py); the worker checks them against ``sha256`` (``tuning.files_digest``), writes
    them to a temporary folder, loads the model from it and removes it."""

    name: str = DEFAULT_MODEL
    precision: str | None = None
    files: tuple[tuple[str, bytes], ...] | None = dataclasses.field(default=None, repr=False)
    sha256: str | None = None

    def __call__(self) -> Any:
        from .embedding import load_embedder

        if self.files is None:
            return load_embedder(self.name, self.precision, device=worker_device())
        from .tuning import files_digest

        if files_digest(self.files) != self.sha256:
            raise ModelError(f"The model {self.name} reached this worker damaged (its checksum differs); run the "
                             "build again.")
        with tempfile.TemporaryDirectory(prefix="tqa-model-") as folder:
            for rel, data in self.files:
                path = Path(folder, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            return load_embedder(self.name, self.precision, source=folder, device=worker_device())


@dataclass(frozen=True)
class SameEmbedder:
    """Gives a worker the embedder the driver was given (pickled with its state: a test's fake, a custom model)."""

    embedder: Any

    def __call__(self) -> Any:
        return self.embedder


class _Worker:
    """A Ray actor: the model, loaded once, and the build's stages 2 and 3 that use it. An error while loading is
    kept and reported by ``describe`` (a failed ``__init__`` would only surface as a dead actor)."""

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

        from .embedding import precision_of

        if self.error is not None:
            return {"error": self.error}
        e = self.embedder
        return {
            "name": e.name, "dim": int(e.dim), "max_tokens": int(e.max_tokens),
            "precision": precision_of(e), "tqa": __version__, "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "device": getattr(e, "device", "cpu"), "gpus": [str(g) for g in ray.get_gpu_ids()],
        }

    def stages(self, batch: list[tuple[FileTask, bytes]], batch_size: int) -> list[Embedded | Skipped]:
        """Stages 2 and 3 of the build for a batch of files: each extracted and chunked, then all of them embedded
        in one pass; an ``Embedded`` or ``Skipped`` per file, in the batch's order."""
        from .indexing import Extracted, embed, extract_and_chunk

        results = [extract_and_chunk(task, raw) for task, raw in batch]
        embedded = iter(embed([r for r in results if isinstance(r, Extracted)], self.embedder, batch_size=batch_size))
        return [next(embedded) if isinstance(r, Extracted) else r for r in results]


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


# ---------------------------------------------------------------- the driver side


class RayPool:
    """Workers on a Ray cluster, each holding the model. Use as a context manager (or call ``close``): the workers
    are stopped, and a cluster this pool started is shut down.

    ``address``: ``"auto"`` starts a private local cluster with ``local_cpus`` CPUs (default: all of this machine's);
    anything else is passed to ``ray.init`` (``HOST:PORT`` of a running cluster's head). When Ray is already
    initialised in this process, that session is used as it is and left running.
    ``workers``: how many (default: the cluster's CPUs // ``cpus_per_worker``, and no more than its GPUs //
    ``gpus_per_worker`` when workers ask for GPUs: see the module's "GPU workers"). ``embedder``: a picklable factory
    run once on each worker (default ``ModelFactory(model, precision)``, with ``precision`` resolved on the driver:
    ``TQA_PRECISION`` or ``auto`` for this CPU; a build passes the index's own), so that every worker encodes at the
    same one.
    ``call_files``, ``call_bytes``: how much one call carries at most (default: ``CALL_FILES`` files, ``CALL_BYTES``
    bytes of them). ``on_call(done_calls)``: called on the driver after each finished call.
    """

    def __init__(self, address: str = LOCAL, *, model: str = DEFAULT_MODEL, precision: str | None = None,
                 workers: int | None = None, cpus_per_worker: int = 1, gpus_per_worker: float | None = None,
                 local_cpus: int | None = None,
                 max_restarts: int | None = None, embedder: Callable[[], Any] | None = None,
                 start_seconds: float = START_SECONDS, stall_seconds: float = STALL_SECONDS,
                 call_files: int | None = None, call_bytes: int | None = None,
                 on_call: Callable[[int], None] | None = None) -> None:
        if not isinstance(address, str) or not address.strip():
            raise DistributedError("The Ray address must be HOST:PORT of a running cluster's head, or auto.")
        if isinstance(cpus_per_worker, bool) or not isinstance(cpus_per_worker, int) or cpus_per_worker < 1:
            raise DistributedError(f"cpus_per_worker must be a whole number of at least 1, not {cpus_per_worker!r}.")
        _check_workers(workers)
        _check_gpus(gpus_per_worker)
        max_restarts = MAX_RESTARTS if max_restarts is None else max_restarts
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise DistributedError(f"max_restarts must be a whole number of at least 0, not {max_restarts!r}.")
        call_files = CALL_FILES if call_files is None else call_files
        call_bytes = CALL_BYTES if call_bytes is None else call_bytes
        for label, value in (("call_files", call_files), ("call_bytes", call_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DistributedError(f"{label} must be a whole number of at least 1, not {value!r}.")
        self.call_files, self.call_bytes = call_files, call_bytes
        self.address = address.strip()
        self.stall_seconds = stall_seconds
        self.on_call = on_call
        self.calls_done = 0
        self._ray = ray = ray_module()
        self._owned = False
        self._actors: list[Any] = []
        self._factory: Any = None
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
                    f"{self.address} has {total:g}. Ask for fewer workers (--ray-workers), or add nodes."
                )
            if gpus_per_worker:
                n = self._fit_gpus(n, workers, gpus_per_worker, float(ray.cluster_resources().get("GPU", 0)))
            remote = ray.remote(_Worker).options(
                num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker or 0,
                max_restarts=max_restarts,
                max_task_retries=max_restarts,
                scheduling_strategy="SPREAD",  # one worker per node first, so that a lost node costs the fewest
            )
            try:
                # in the object store once, not once per worker (a model sent with the build is large), and kept
                # referenced while the pool lives: a restarted worker is given it again
                self._factory = ray.put(factory)
                self._actors = [remote.remote(self._factory, cpus_per_worker) for _ in range(n)]
            except Exception as exc:  # the embedder given cannot be sent (it does not pickle)
                raise DistributedError(f"The embedder cannot be sent to the Ray workers: {_first_line(exc)}") from None
            self.workers = self._describe(start_seconds)
        except BaseException:
            self.close()
            raise
        first = self.workers[0]
        self.name, self.dim, self.max_tokens = first["name"], first["dim"], first["max_tokens"]
        self.precision = first["precision"]

    def _fit_gpus(self, n: int, asked: int | None, per_worker: float, total: float) -> int:
        """How many workers of ``per_worker`` GPUs the cluster's ``total`` GPUs hold: ``n`` (those its CPUs hold),
        fewer when its GPUs hold fewer and no number was asked for; a cluster short of GPUs is refused."""
        fit = int(total / per_worker + 1e-9)
        if fit < 1 or (asked is not None and asked > fit):
            workers = asked or 1
            cluster = "This machine's local Ray cluster" if self.address == LOCAL else f"The cluster at {self.address}"
            raise DistributedError(
                f"{cluster} has {total:g} GPUs; {workers} Ray worker{'s' if workers > 1 else ''}"
                f" with {per_worker:g} GPU{'s' if per_worker > 1 else ''} each need{'' if workers > 1 else 's'} "
                f"{workers * per_worker:g}. Start nodes with GPUs (`ray start --num-gpus N`), ask for fewer workers "
                "(--ray-workers), or build without --ray-gpus."
            )
        return min(n, fit)

    def check_model(self, name: str, precision: str | None) -> None:
        """Refuse workers that loaded another model or precision than the index is built with."""
        if self.name != name or (precision is not None and self.precision != precision):
            raise DistributedError(
                f"The Ray workers loaded {self.name!r} at {self.precision}, the index is built with {name!r} at "
                f"{precision}: install the same model on every node."
            )

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
                "CPUs (or GPUs) for them, or cannot reach them. Check `ray status`, or ask for fewer workers."
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
            raise DistributedError(f"A Ray worker failed: {what}. Nothing was published.") from None
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

    def stages(self, tasks: Iterable[FileTask], batch_size: int = 32) -> Iterator[tuple[str, Embedded | Skipped]]:
        """Stages 2 and 3 of the build for each task, on the workers: ``(source, result)`` per task as calls finish
        (in no particular order). ``tasks`` is read lazily and each file read here only when its
        call is about to be sent, so the driver holds the bytes of the calls in flight only. A file that cannot be
        read here comes back ``Skipped`` without travelling."""
        from .indexing import Embedded, Skipped, read_task

        unread: list[tuple[str, Skipped]] = []

        def batches() -> Iterator[tuple[list[str], str, tuple[Any, ...]]]:
            batch: list[tuple[FileTask, bytes]] = []
            size = 0
            for task in tasks:
                raw = read_task(task)
                if isinstance(raw, Skipped):
                    unread.append((task.source, raw))
                    continue
                if batch and (len(batch) >= self.call_files or size + len(raw) > self.call_bytes):
                    yield [t.source for t, _ in batch], "stages", (batch, batch_size)
                    batch, size = [], 0
                batch.append((task, raw))
                size += len(raw)
            if batch:
                yield [t.source for t, _ in batch], "stages", (batch, batch_size)

        for sources, results in self._run(batches()):
            yield from unread
            unread.clear()
            for source, r in zip(sources, results, strict=True):
                # own copies: what ray.get returns may point into the object store, which ends with the pool
                yield source, (dataclasses.replace(r, vectors=r.vectors.copy(), units=r.units.copy())
                               if isinstance(r, Embedded) else r)
        yield from unread


def run_stages(plan: Plan, address: str, *, workers: int | None = None, embedder: Any = None, batch_size: int = 32,
               on_progress: Progress | None = None, progress: bool = False,
               **pool_options: Any) -> dict[str, Embedded | Skipped]:
    """Stages 2 and 3 of ``plan``'s tasks on the Ray cluster at ``address``: ``Embedded`` or ``Skipped`` by source.
    The workers load ``plan.model`` at ``plan.precision`` (or are sent ``embedder``); no cluster is reached when
    the plan has no task. ``progress``: a progress bar of files on stderr. ``pool_options`` go to ``RayPool``."""
    from .embedding import SentenceTransformerEmbedder, precision_of

    tasks = plan.tasks
    if not tasks:
        return {}
    if embedder is None or isinstance(embedder, SentenceTransformerEmbedder):  # loaded on each worker, not sent
        files = None
        if plan.tuning is not None:  # a tuned model lives in the index folder, which workers cannot read: sent
            from .tuning import tuned_model_files

            files = tuned_model_files(plan.index_dir, plan.tuning)
        factory: Callable[[], Any] = ModelFactory(plan.model, plan.precision, files,
                                                  plan.tuning.model_sha256 if plan.tuning else None)
        precision: str | None = plan.precision
    else:
        factory, precision = SameEmbedder(embedder), precision_of(embedder)
    done: dict[str, Embedded | Skipped] = {}
    with RayPool(address, workers=workers, embedder=factory, **pool_options) as pool:
        pool.check_model(plan.model, precision)
        bar = _bar(len(tasks)) if progress else None
        for source, result in pool.stages(tasks, batch_size):
            done[source] = result
            if bar is not None:
                bar.update(1)
            if on_progress:
                on_progress("embedding on Ray", len(done), len(tasks))
        if bar is not None:
            bar.close()
    return done


def _bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="Extracting and embedding on Ray", unit="file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


__all__ = ["LOCAL", "ModelFactory", "RayPool", "SameEmbedder", "check_ray", "ray_module", "run_stages"]
