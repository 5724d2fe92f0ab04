"""The Ray runner (distributed.py): what it promises without a cluster (light imports, one-line errors, the same
per-file stage as a local build), and on a real local cluster of separate node processes (the same index as a local
build, a worker killed mid-build, errors on workers, nothing published when workers are lost for good)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tqa.config import ChunkSettings
from tqa.errors import DistributedError

from .conftest import CORPUS, ROOT
from .ray_cluster import LocalRayCluster, broken_model, crashing_extract, hash_embedder, ray_environment

# Ray reads its authentication mode once, when it is imported: the driver side of these tests (this process) uses
# the same token as the clusters they start.
os.environ.update(ray_environment())
ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")

from tqa.distributed import (  # noqa: E402
    Extracted,
    FileJob,
    RayEmbedder,
    RayPool,
    _batches,
    extract_and_chunk,
)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# ---------------------------------------------------------------- without a cluster


def test_import_and_help_do_not_load_ray():
    code = (
        "import sys, tqa.distributed\nfrom tqa.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('ray', 'torch', 'numpy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]"), out


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(DistributedError) as err:
        RayPool("auto")
    assert "pip install 'tqa[ray]'" in one_line(err.value)


@pytest.mark.parametrize("kwargs", [
    {"address": ""}, {"address": "   "}, {"cpus_per_worker": 0}, {"workers": 0}, {"workers": True},
    {"call_texts": 0}, {"call_files": -1}, {"call_bytes": 1.5}, {"max_restarts": -1},
])
def test_bad_arguments_are_refused_before_anything_starts(kwargs):
    with pytest.raises(DistributedError) as err:
        RayPool(**kwargs)
    one_line(err.value)
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["nohost", "host:", ":6379", "host:99999", "host:port"])
def test_an_address_that_is_not_host_port_is_refused(address):
    with pytest.raises(DistributedError) as err:
        RayPool(address)
    assert "HOST:PORT" in one_line(err.value)
    assert not ray.is_initialized()


def test_no_cluster_at_the_address_fails_at_once_in_one_line():
    from .conftest import free_port

    with pytest.raises(DistributedError) as err:
        RayPool(f"127.0.0.1:{free_port()}")  # nothing listens: ray.init itself would retry for minutes
    assert "No Ray cluster answers" in one_line(err.value)
    assert not ray.is_initialized()


def _local_stage(corpus: Path, chunking: ChunkSettings) -> dict[str, Extracted]:
    return {p.name: extract_and_chunk(p.name, p.read_bytes(), chunking) for p in sorted(corpus.iterdir())}


def test_the_file_stage_gives_what_a_local_build_indexes(small_corpus, fake_embedder, tmp_path):
    from tqa import build_index
    from tqa.store import load_index

    (small_corpus / "empty.md").write_text("   \n\n", encoding="utf-8")
    (small_corpus / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    summary = build_index(small_corpus, tmp_path / "index", embedder=fake_embedder)
    stage = _local_stage(small_corpus, ChunkSettings())
    with load_index(tmp_path / "index") as data:
        for source, result in stage.items():
            assert result.source == source
            assert list(result.chunks) == [c for c in data.chunks if c.source == source]
            if result.chunks:
                assert result.document is not None and result.document.text == data.document_text(source)
                assert result.texts()[:len(result.chunks)] == [c.search_text for c in result.chunks]
                assert result.texts()[len(result.chunks):] == [t for c in result.chunks for t in c.unit_search_texts()]
    skipped = {s["path"]: s["reason"] for s in summary.skipped}
    assert skipped and {s: r.skipped for s, r in stage.items() if r.skipped} == skipped


def test_files_are_cut_into_calls_by_count_and_bytes():
    jobs = [FileJob(i, f"f{i}", b"x" * n) for i, n in enumerate([10, 10, 10, 500, 10, 10, 10, 10])]
    batches = list(_batches(jobs, files=3, size_cap=100))
    assert [[j.key for j in b] for b in batches] == [[0, 1, 2], [3], [4, 5, 6], [7]]
    assert list(_batches([], 3, 100)) == []


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
        return ([c.to_dict() for c in data.chunks], data.vectors.vectors(), data.units.vectors(), data.manifest)


@pytest.mark.slow
def test_a_build_on_the_cluster_is_the_local_build(cluster, small_corpus, tmp_path):
    from tqa import build_index

    local = build_index(small_corpus, tmp_path / "local", embedder=hash_embedder())
    with RayPool(cluster.address, embedder=hash_embedder, call_texts=2) as pool:
        assert len(pool.workers) == 2 and len({w["node"] for w in pool.workers}) == 2  # one on each node
        on_ray = build_index(small_corpus, tmp_path / "ray", embedder=RayEmbedder(pool))
        assert pool.calls_done > 2
    assert not ray.is_initialized()
    assert on_ray.chunks_total == local.chunks_total and on_ray.skipped == local.skipped
    (a_chunks, a_vec, a_units, a_man), (b_chunks, b_vec, b_units, b_man) = _index(tmp_path / "local"), _index(
        tmp_path / "ray")
    assert a_chunks == b_chunks
    np.testing.assert_allclose(a_vec, b_vec, atol=1e-6)
    np.testing.assert_allclose(a_units, b_units, atol=1e-6)
    assert a_man["files"] == b_man["files"] and a_man["model"] == b_man["model"]


@pytest.mark.slow
def test_files_processed_on_the_cluster_match_the_local_stage(cluster, small_corpus):
    (small_corpus / "empty.md").write_text("\n", encoding="utf-8")
    for i in range(6):
        (small_corpus / f"note{i}.md").write_text(f"# Note {i}\n\nShelters need funding {i}.\n\nSecond {i}.\n",
                                                   encoding="utf-8")
    files = sorted(small_corpus.iterdir())
    jobs = [FileJob(i, p.name, p.read_bytes()) for i, p in enumerate(files)]
    local = _local_stage(small_corpus, ChunkSettings())
    with RayPool(cluster.address, embedder=hash_embedder, call_files=2) as pool:
        results = list(pool.process(iter(jobs), chunking=ChunkSettings()))
    assert sorted(r.key for r in results) == list(range(len(files)))
    for r in results:
        expected = local[files[r.key].name]
        assert r.extracted == expected
        texts = expected.texts()
        assert r.vectors.shape == (len(texts), 64) and r.vectors.dtype == np.float32
        np.testing.assert_allclose(r.vectors, hash_embedder().encode(texts), atol=1e-6)
    empty = next(r for r in results if files[r.key].name == "empty.md").extracted
    assert empty.skipped and not empty.chunks and not len(empty.texts())


@pytest.mark.slow
def test_errors_on_workers_are_one_line(cluster):
    with pytest.raises(DistributedError) as err:
        RayPool(cluster.address, embedder=broken_model)
    assert "could not load the embedding model" in one_line(err.value) and "'missing'" in str(err.value)
    assert not ray.is_initialized()
    with pytest.raises(DistributedError) as err:
        RayPool(cluster.address, embedder=hash_embedder, workers=3)  # the cluster has 2 CPUs
    assert "need 3 CPUs" in one_line(err.value)
    assert not ray.is_initialized()
    with RayPool(cluster.address, embedder=hash_embedder) as pool:
        with pytest.raises(DistributedError) as err:
            list(pool.process([FileJob(0, "a.txt", b"text")], extract=crashing_extract))
        assert "A Ray worker failed: ValueError: cannot read a.txt" == one_line(err.value)


@pytest.mark.slow
def test_workers_lost_for_good_fail_in_one_line_and_publish_nothing(cluster, small_corpus, tmp_path):
    from tqa import build_index

    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=hash_embedder())
    before = ((index / "CURRENT").read_bytes(), sorted(p.name for p in index.iterdir()))
    (small_corpus / "more.md").write_text("# More\n\n" + "Another paragraph of text.\n\n" * 30, encoding="utf-8")
    killed: list[int] = []

    def kill_once(done: int) -> None:
        if not killed:
            killed.append(pool.workers[0]["pid"])
            os.kill(killed[0], signal.SIGKILL)

    with RayPool(cluster.address, embedder=hash_embedder, max_restarts=0, call_texts=1, on_call=kill_once) as pool:
        with pytest.raises(DistributedError) as err:
            build_index(small_corpus, index, embedder=RayEmbedder(pool))
    assert killed and "lost" in one_line(err.value) and "Nothing was published" in str(err.value)
    assert ((index / "CURRENT").read_bytes(), sorted(p.name for p in index.iterdir())) == before


@pytest.mark.slow
def test_auto_starts_a_private_local_cluster_and_stops_it(monkeypatch):
    temp = tempfile.mkdtemp(prefix="tqa-ray-", dir="/tmp")  # short: Ray's sockets live under it
    try:
        for key, value in ray_environment().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("RAY_TMPDIR", temp)
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        with RayPool("auto", local_cpus=1, embedder=hash_embedder) as pool:
            assert len(pool.workers) == 1
            vectors = pool.encode(["one text", "another, longer text"], batch_size=1)
            np.testing.assert_allclose(vectors, hash_embedder().encode(["one text", "another, longer text"]))
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.model
def test_a_worker_killed_mid_build_is_restarted_and_the_index_is_the_local_one(cluster, default_index,
                                                                               real_embedder, tmp_path, capfd):
    """The acceptance test: the real model on a head and a worker node, one worker process SIGKILLed after the
    first call of the build has finished; Ray restarts it and runs its calls again; the index has the local build's
    chunk table, vectors within bf16 tolerance, and gives the same answers to the project's questions."""
    from tqa import Assistant, build_index
    from tqa.embedding import precision_of

    killed: list[int] = []

    def kill_once(done: int) -> None:
        if not killed:
            killed.append(pool.workers[0]["pid"])
            os.kill(killed[0], signal.SIGKILL)

    with RayPool(cluster.address, precision=precision_of(real_embedder), call_texts=8, on_call=kill_once) as pool:
        summary = build_index(CORPUS, tmp_path / "index", embedder=RayEmbedder(pool))
        after = pool.worker_pids()
    assert summary.published and killed
    assert killed[0] not in after and len(after) == 2  # the killed worker was restarted in a new process
    out, err = capfd.readouterr()
    assert "raylet" not in out and "died" in err  # Ray's report of the lost worker, on stderr (stdout: the summary)

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

