"""Faults: a build killed at any moment, a damaged index, a full disk or a read-only folder.

The promise under test: a reader always gets the complete old index or the complete new one, and every
failure is one line that names the problem and the fix.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tqa import Assistant, build_index
from tqa.errors import TqaError
from tqa.manifest import MANIFEST, UNITS, VECTORS
from tqa.store import CURRENT, current_generation, read_manifest

from .support import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["shelters", "hotlines", "border checks", "labour audits", "court cases", "online adverts"]


def write_corpus(root: Path, names: range, version: str) -> set[str]:
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.txt"):
        old.unlink()
    for i in names:
        topic = TOPICS[i % len(TOPICS)]
        paragraphs = [f"Report {i} on {topic}, {version} edition. Paragraph {j} describes {topic} in region {i}."
                      for j in range(6)]
        (root / f"report-{i:03d}.txt").write_text(f"Report {i}\n" + "\n".join(paragraphs) + "\n")
    return {f"report-{i:03d}.txt" for i in names}


def check_complete(index: Path, expected: list[set[str]]) -> set[str]:
    """The index loads, checks out, and is exactly one of the expected corpora."""
    qa = Assistant.load(index, embedder=FakeEmbedder())
    files = set(qa.index.manifest.files)
    assert files in expected, "a mix of two builds"
    assert {c.source for c in qa.index.chunks} == files
    answer = qa.ask("shelters in region 12", k=3)
    assert answer.passages and all(p.source in files for p in answer.passages)
    return files


def run_crash(corpus: Path, index: Path, step: str, nth: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.crash_build", str(corpus), str(index), step, str(nth)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_killed_builds_leave_the_old_or_the_new_index_never_a_mix(tmp_path):
    # One corpus folder (an index belongs to one), whose contents alternate between two versions, a and b.
    corpus, index = tmp_path / "corpus", tmp_path / "index"
    versions = {"a": (range(0, 120), "old"), "b": (range(10, 130), "new")}
    files_b = write_corpus(corpus, *versions["b"])
    files_a = write_corpus(corpus, *versions["a"])  # the first build indexes version a
    build_index(corpus, index, embedder=FakeEmbedder())
    expected = [files_a, files_b]

    def switch(current: set[str]) -> Path:
        """Write the other version into the corpus folder."""
        write_corpus(corpus, *versions["b" if current == files_a else "a"])
        return corpus

    steps = [("encode", 1), ("write_chunks", 1), ("write_chunks", 200), ("save_vectors", 1), ("save_vectors", 2),
             ("save_keywords", 1), ("checksum", 1), ("checksum", 4), ("fsync", 1), ("rename", 1), ("fsync_dir", 1),
             ("replace", 1), ("fsync_dir", 2), ("retire", 1)]
    outcomes = []
    for step, nth in steps:
        current = check_complete(index, expected)
        target = switch(current)
        r = run_crash(target, index, step, nth)
        assert r.returncode == -signal.SIGKILL, (step, nth, r.stdout, r.stderr)
        outcomes.append((step, check_complete(index, expected) == current))

    rng = random.Random(2026)
    t0 = time.perf_counter()
    r = run_crash(switch(check_complete(index, expected)), index, "none")
    full = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    killed = 0
    for _ in range(10):
        current = check_complete(index, expected)
        target = switch(current)
        proc = subprocess.Popen([sys.executable, "-m", "tests.crash_build", str(target), str(index), "none"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, full))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        check_complete(index, expected)
    assert killed >= 5  # most of the random kills landed mid-build

    # Kills before the switch keep the old index; a kill after it leaves the new one.
    assert dict(outcomes)["encode"] and dict(outcomes)["save_vectors"] and dict(outcomes)["replace"]
    assert not dict(outcomes)["retire"]

    # Then a normal run completes and cleans up what the killed builds left behind.
    write_corpus(corpus, *versions["b"])
    build_index(corpus, index, embedder=FakeEmbedder())
    assert check_complete(index, expected) == files_b
    leftovers = [p.name for p in index.iterdir() if p.name.startswith((".tmp-", f".{CURRENT}."))]
    assert leftovers == []
    assert len([p for p in index.iterdir() if p.name.startswith("g-")]) <= 2


# ---- a damaged index: one line naming the problem and the fix, exit 1, never a traceback


def _damage(gen: Path, how: str) -> None:
    vec = gen / VECTORS
    data = vec.read_bytes()
    if how == "truncated vectors":
        vec.write_bytes(data[: len(data) // 3])
    elif how == "flipped byte":
        vec.write_bytes(data[:200] + bytes([data[200] ^ 0x01]) + data[201:])
    elif how == "junk appended":
        vec.write_bytes(data + b"\0junk")
    elif how == "missing chunk table":
        (gen / "chunks.jsonl").unlink()
    elif how == "edited chunk table":
        text = (gen / "chunks.jsonl").read_text()
        (gen / "chunks.jsonl").write_text(text.replace("Sweden", "Norway", 1))
    elif how == "missing unit vectors":
        (gen / UNITS).unlink()
    elif how == "newer format":
        m = json.loads((gen / MANIFEST).read_text())
        m["format_version"] = 999
        (gen / MANIFEST).write_text(json.dumps(m))
    elif how == "manifest disagrees":
        m = json.loads((gen / MANIFEST).read_text())
        m["counts"]["chunks"] += 1
        (gen / MANIFEST).write_text(json.dumps(m))
    elif how == "manifest not json":
        (gen / MANIFEST).write_text("{not json")
    elif how == "dangling pointer":
        (gen.parent / CURRENT).write_text("g-does-not-exist\n")
    else:
        raise AssertionError(how)


DAMAGES = ["truncated vectors", "flipped byte", "junk appended", "missing chunk table", "edited chunk table",
           "missing unit vectors", "newer format", "manifest disagrees", "manifest not json", "dangling pointer"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_index_gives_one_line_and_exit_1(small_corpus, tmp_path, how):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=FakeEmbedder())
    _damage(current_generation(index), how)
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    r = subprocess.run([sys.executable, "-m", "tqa", "ask", "Sweden", "--index", str(index)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "rebuild" in lines[0] or "Upgrade" in lines[0]


def test_the_web_app_reports_a_damaged_index_instead_of_dying(small_corpus, tmp_path):
    from tqa.web import build_app  # noqa: F401  (the page's callbacks go through the same checks)

    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=FakeEmbedder())
    qa = Assistant.load(index, embedder=FakeEmbedder())
    qa.index.raise_if_damaged()  # loaded whole (its vector indexes are read in the background until then)
    _damage(current_generation(index), "flipped byte")
    (small_corpus / "new.md").write_text("# New\n\nA new report.\n")
    with pytest.raises(TqaError, match="rebuild"):
        qa.add_documents([("more.md", b"# More\n\nMore text.\n")])
    assert qa.ask("Sweden").passages  # the loaded index keeps answering


# ---- a full disk, a read-only folder


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, "600k"):
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_during_a_build_keeps_the_previous_index(small_corpus, small_disk):
    index = small_disk / "index"
    build_index(small_corpus, index, embedder=FakeEmbedder())
    before = read_manifest(index).files
    big = "\n".join(f"Paragraph {i} about shelters and survivors in many regions." for i in range(4000))
    (small_corpus / "big.txt").write_text(big)
    with pytest.raises(TqaError, match="disk is full") as exc:
        build_index(small_corpus, index, embedder=FakeEmbedder())
    assert "previous index" in str(exc.value) and "\n" not in str(exc.value)
    assert read_manifest(index).files == before
    Assistant.load(index, embedder=FakeEmbedder()).ask("Sweden")
    assert not [p for p in index.iterdir() if p.name.startswith(".tmp-")]


def test_read_only_index_folder_keeps_the_previous_index(small_corpus, small_disk):
    index = small_disk / "index"
    build_index(small_corpus, index, embedder=FakeEmbedder())
    r = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot remount read-only")
    try:
        (small_corpus / "new.md").write_text("# New\n\nA new report about hotlines.\n")
        with pytest.raises(TqaError, match="not writable|Read-only") as exc:
            build_index(small_corpus, index, embedder=FakeEmbedder())
        assert "\n" not in str(exc.value)
        Assistant.load(index, embedder=FakeEmbedder()).ask("Sweden")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], capture_output=True)
