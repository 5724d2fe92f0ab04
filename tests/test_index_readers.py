"""A generation a reader holds is never deleted under it; released (closed or collected), a later publish retires
it. A reader racing with a retirement follows CURRENT again."""

from __future__ import annotations

import gc
import subprocess
import sys

from tqa import Assistant, build_index, store
from tqa.store import current_generation, load_index

from .index_helpers import change, generations

# ---------------------------------------------------------------- generations held by readers


def test_a_generation_a_reader_holds_is_not_deleted_under_it(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    data = load_index(index)
    held = data.path
    for i in range(3):
        change(small_corpus, i)
        build_index(small_corpus, index, embedder=fake_embedder)
    assert held.is_dir() and held != current_generation(index)
    assert data.document_text("sweden.md").startswith("# Sweden")  # read lazily, long after loading
    data.close()
    change(small_corpus, 9)
    build_index(small_corpus, index, embedder=fake_embedder)
    assert not held.exists()  # released: the next publish retires it
    assert len(generations(index)) == 2


def test_a_generation_is_released_when_its_reader_is_collected(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    qa = Assistant.load(index, embedder=fake_embedder)
    held = qa.index.path
    for i in range(2):
        change(small_corpus, i)
        build_index(small_corpus, index, embedder=fake_embedder)
    passage = qa.ask("Sweden purchase of sex").passages[0]
    assert qa.context(passage.source, passage.start, passage.end)["text"]  # the citation viewer still works
    del qa, passage
    gc.collect()
    change(small_corpus, 5)
    build_index(small_corpus, index, embedder=fake_embedder)
    assert not held.exists()


def test_a_reader_in_another_process_keeps_its_generation(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    code = ("import sys\nfrom tqa.store import load_index\nd = load_index(sys.argv[1])\nprint('ready', flush=True)\n"
            "sys.stdin.readline()\nprint(d.document_text('sweden.md').splitlines()[0], flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(index)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for i in range(3):
            change(small_corpus, i)
            build_index(small_corpus, index, embedder=fake_embedder)
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out.strip() == "# Sweden", err


def test_a_reader_that_follows_current_just_before_a_retirement_loads_the_new_generation(
        small_corpus, tmp_path, fake_embedder, monkeypatch):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    real = store.current_generation
    armed = [True]

    def racing(index_dir):
        gen = real(index_dir)
        if armed[0]:  # between reading CURRENT and taking the generation, two publishes retire it
            armed[0] = False
            for i in range(3):
                change(small_corpus, i)
                build_index(small_corpus, index, embedder=fake_embedder)
            assert gen is not None and not gen.exists()
        return gen

    monkeypatch.setattr(store, "current_generation", racing)
    data = load_index(index)
    assert data.path == real(index) and "changing.txt" in data.manifest.files
    assert data.document_text("changing.txt").startswith("Update 2")
    data.close()


def test_current_generation_is_cheap_and_names_the_live_generation(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    assert current_generation(index) is None
    build_index(small_corpus, index, embedder=fake_embedder)
    gen = current_generation(index)
    assert gen is not None and gen.parent == index and store.GEN_RE.fullmatch(gen.name)
    with load_index(index) as data:
        assert data.path == gen
