"""A real Ray cluster on this machine for tests and the benchmark: a head node and worker nodes, each a separate
``ray start`` on loopback, and embedders the workers can import (this folder is on their PYTHONPATH).

Every ``ray start`` runs in a session of its own, so that all the processes it leaves behind (GCS, raylet, agents,
the workers a raylet starts) share its process group; ``stop`` ends exactly those groups (TERM, then KILL), never
other Ray processes on the machine (``ray stop`` would end every Ray on the machine).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .fakes import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")


_TOKEN: list[Path] = []


def token_file() -> Path:
    """One token for every cluster this process starts or joins (Ray's token loader keeps the first one it reads),
    made on first use (workers import this module too, and need none) and removed when the process ends."""
    if not _TOKEN:
        folder = Path(tempfile.mkdtemp(prefix="tqa-ray-token-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "auth_token"
        path.write_text(secrets.token_hex(32), encoding="ascii")
        path.chmod(0o600)
        _TOKEN.append(path)
    return _TOKEN[0]


def ray_environment() -> dict[str, str]:
    """What the cluster's processes and the driver need: token authentication with a token of this process's own
    (Ray's servers listen on every interface; without it, and since a local ``ray.init`` writes a token to
    ~/.ray/auth_token by default, the nodes of two clusters would disagree), and no usage statistics."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file()), "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process on the machine, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def _started_by(groups: list[int]) -> set[int]:
    """The processes in ``groups`` and all their descendants (Ray puts each worker in a process group of its own,
    under its node's raylet)."""
    table = _processes()
    found = {pid for pid, (_, pgid) in table.items() if pgid in groups}
    while True:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found and pid not in found}
        if not more:
            return found
        found |= more


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LocalRayCluster:
    """``workers`` worker nodes of ``cpus`` CPUs each, beside a head of ``head_cpus`` CPUs (0: the head only
    coordinates, so every worker actor runs in a worker node's process). ``gpus``: GPUs each worker node declares
    (Ray takes a node's word for them: actors asking for GPUs are placed there and given their ids, whether or not
    the machine has any). Use as a context manager."""

    def __init__(self, workers: int = 1, cpus: int = 1, head_cpus: int = 1, object_store_mb: int = 256,
                 gpus: int = 0) -> None:
        self.workers, self.cpus, self.head_cpus, self.gpus = workers, cpus, head_cpus, gpus
        self.object_store = object_store_mb * 1024 * 1024
        self.groups: list[int] = []
        self.ended: set[int] = set()  # every process ``stop`` ended
        # short: Ray puts Unix sockets under it (a socket path has at most 107 bytes)
        self.temp = Path(tempfile.mkdtemp(prefix="tqa-ray-", dir="/tmp"))
        self.port = 0
        self.start_seconds = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ, **ray_environment())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
        env.pop("RAY_ADDRESS", None)
        return env

    def _start(self, *args: str) -> None:
        common = ["--disable-usage-stats", "--object-store-memory", str(self.object_store)]
        proc = subprocess.Popen([str(RAY), "start", *args, *common], env=self.env(), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.groups.append(proc.pid)  # its session's process group: every process it starts stays in it
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"`ray start {' '.join(args)}` did not finish in 300 s") from None
        if proc.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-15:])
            raise RuntimeError(f"`ray start {' '.join(args)}` failed ({proc.returncode}):\n{tail}")

    def start(self) -> LocalRayCluster:
        t0 = time.perf_counter()
        for attempt in range(3):  # the port may be taken between choosing it and the head binding it
            self.port = _free_port()
            try:
                self._start("--head", "--port", str(self.port), "--node-ip-address", "127.0.0.1",
                            "--num-cpus", str(self.head_cpus), "--include-dashboard=false",
                            "--temp-dir", str(self.temp))
                break
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise
        for _ in range(self.workers):
            self._start("--address", self.address, "--num-cpus", str(self.cpus), "--num-gpus", str(self.gpus))
        self.start_seconds = time.perf_counter() - t0
        return self

    def stop(self) -> None:
        """End every process the cluster started (TERM, a grace period, then KILL) and remove its folder."""
        groups, self.groups = self.groups, []
        mine = _started_by(groups) if groups else set()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            mine |= _started_by(groups) if groups else set()
            for pid in mine:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + (3 if sig == signal.SIGTERM else 5)
            while time.monotonic() < deadline and any(_running(p) for p in mine):
                time.sleep(0.2)
        self.ended |= mine
        shutil.rmtree(self.temp, ignore_errors=True)

    def leftovers(self) -> set[int]:
        """Processes ``stop`` ended that still run (none, unless stopping failed)."""
        return {p for p in self.ended if _running(p)}

    def workers_running(self, call: str = "") -> set[int]:
        """The processes of this cluster's tqa workers (``_Worker`` actors); with ``call``, only those running it."""
        return {p for p in self.processes() if title(p).startswith(f"ray::_Worker{'.' + call if call else ''}")}

    def processes(self) -> set[int]:
        """The processes of this cluster that are still running (zombies awaiting their parent excluded)."""
        return {p for p in _started_by(self.groups) if _running(p)}

    def __enter__(self) -> LocalRayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HashEmbedder(FakeEmbedder):
    """The tests' fake embedder, from a module workers import without side effects."""

    precision = None


def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


class DeviceProbe:
    """A worker's embedder factory that records the device the worker would run a model on (``worker_device``)."""

    def __call__(self) -> HashEmbedder:
        from tqa.distributed import worker_device

        embedder = HashEmbedder()
        embedder.device = worker_device()  # type: ignore[attr-defined]
        return embedder


class PoisonEmbedder(HashEmbedder):
    """Fails on a worker for any text that holds the word "poison": a build that breaks mid-way."""

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if any("poison" in t.lower() for t in texts):
            raise ValueError("poisoned text\nsecond line")
        return super().encode(texts, batch_size=batch_size, progress=progress)


def title(pid: int) -> str:
    """A process's title (Ray names a worker ``ray::CLASS.METHOD`` while it runs a call, ``ray::CLASS`` idle)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode("utf-8", "replace")
    except OSError:
        return ""
