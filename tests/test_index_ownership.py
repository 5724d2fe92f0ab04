"""The index folder owns only what tqa made: a build never deletes or overwrites anything it did not create
(look-alike names included); an index folder equal to, inside or above the corpus is refused; a non-empty folder
that is not an index needs ``force``; README files and dotfiles count as empty; an index written by the previous
tqa is adopted and keeps its checks."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tqa import Assistant, build_index, store
from tqa.errors import IndexCorrupt, IndexLocationError
from tqa.manifest import MANIFEST
from tqa.store import CURRENT, current_generation, load_index

from .index_helpers import ROOT, change, cli, generations, make_legacy, tree

# ---------------------------------------------------------------- what tqa may touch in the index folder


@pytest.mark.parametrize("where", ["equal", "inside", "above"])
def test_an_index_folder_equal_to_inside_or_above_the_corpus_is_refused(tmp_path, fake_embedder, where):
    home = tmp_path / "home"
    docs = home / "docs"
    docs.mkdir(parents=True)
    (docs / "a.md").write_text("# Shelters\n\nShelters give survivors a bed.\n")
    (docs / "g-2024-board").mkdir()
    (docs / "g-2024-board" / "minutes.txt").write_text("Board minutes.\n")
    (home / "g-photos").mkdir()
    (home / "g-photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a cat")
    index = {"equal": docs, "inside": docs / "index", "above": home}[where]
    before = tree(home)
    with pytest.raises(IndexLocationError) as exc:
        build_index(docs, index, embedder=fake_embedder)
    assert "\n" not in str(exc.value) and "--index" in str(exc.value)
    assert tree(home) == before  # nothing written, nothing deleted
    assert fake_embedder.embedded == 0


def test_the_cli_refuses_to_index_a_folder_into_itself(tmp_path):
    notes = tmp_path / "notes"
    (notes / "g-2024-board").mkdir(parents=True)
    (notes / "todo.md").write_text("# Todo\n\nCall the shelter.\n")
    before = tree(notes)
    r = cli("index", str(notes), "--index", str(notes))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert tree(notes) == before


def test_a_build_never_deletes_what_it_did_not_create(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    # A user's folders and files whose names look like tqa's own, and a generation of another index.
    lookalikes = ["g-2024-board", "g-photos", "g-20240101T000000-deadbeef", ".tmp-g-20240101T000000-deadbeef",
                  ".retired-g-20240101T000000-deadbeef"]
    for name in lookalikes:
        (index / name).mkdir()
        (index / name / "notes.txt").write_text(f"mine: {name}\n")
    (index / ".CURRENT.notes").write_text("mine\n")
    (index / ".CURRENT.g-20240101T000000-deadbeef").write_text("mine, not a pointer\n")
    other = tmp_path / "other-index"
    build_index(small_corpus, other, embedder=fake_embedder)
    foreign_gen = current_generation(other)
    shutil.copytree(foreign_gen, index / foreign_gen.name)  # a generation made by tqa, but for another index
    # A file the user left inside one of tqa's own generations.
    first = current_generation(index)
    (first / "my-notes.txt").write_text("written by hand\n")
    # A symlink with a generation's name, to a folder of the user's that even holds a matching owner file.
    photos = tmp_path / "photos"
    shutil.copytree(first, photos)
    owner = (first / store.OWNER).read_text().replace(first.name, "g-20240101T000000-0000beef")
    (photos / store.OWNER).write_text(owner)
    (index / "g-20240101T000000-0000beef").symlink_to(photos)
    photos_before = tree(photos)
    theirs = {k: v for k, v in tree(index).items() if k.split("/")[0] in {*lookalikes, foreign_gen.name}
              or k in {".CURRENT.notes", ".CURRENT.g-20240101T000000-deadbeef", "g-20240101T000000-0000beef"}}

    for i in range(4):  # four publishes: everything tqa made here but the live and the previous generation goes
        change(small_corpus, i)
        assert build_index(small_corpus, index, embedder=fake_embedder).published
    after = tree(index)
    assert {k: after.get(k) for k in theirs} == theirs and tree(photos) == photos_before
    assert [p for p in index.rglob("my-notes.txt") if p.read_text() == "written by hand\n"]
    ours = [g for g in generations(index) if (index / g / store.OWNER).exists() and g != foreign_gen.name
            and not (index / g / "my-notes.txt").exists() and not (index / g).is_symlink()]
    assert len(ours) == 2 and current_generation(index).name in ours
    load_index(index).close()


def test_a_folder_that_is_not_an_index_is_written_only_with_force(small_corpus, tmp_path, fake_embedder):
    folder = tmp_path / "notes"
    (folder / "g-2024-board").mkdir(parents=True)
    (folder / "todo.txt").write_text("buy milk\n")
    (folder / ".tmp-g-20240101T000000-deadbeef").mkdir()
    before = tree(folder)
    with pytest.raises(IndexLocationError) as exc:
        build_index(small_corpus, folder, embedder=fake_embedder)
    assert "--force" in str(exc.value) and "\n" not in str(exc.value)
    assert tree(folder) == before  # not even a lock file
    assert build_index(small_corpus, folder, embedder=fake_embedder, force=True).published
    for i in range(3):  # now it is an index: later builds need no force, and leave the user's things alone
        change(small_corpus, i)
        build_index(small_corpus, folder, embedder=fake_embedder)
    after = tree(folder)
    assert {k: after.get(k) for k in before} == before
    assert Assistant.load(folder, embedder=fake_embedder).ask("Sweden").passages


def test_force_never_replaces_a_current_file_tqa_did_not_write(small_corpus, tmp_path, fake_embedder):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / CURRENT).write_text("my current thoughts\n")
    before = tree(folder)
    with pytest.raises(IndexLocationError, match="CURRENT") as exc:
        build_index(small_corpus, folder, embedder=fake_embedder, force=True)
    assert "\n" not in str(exc.value)
    assert tree(folder) == before


def test_the_cli_asks_for_force_and_takes_it(small_corpus, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("buy milk\n")
    r = cli("index", str(small_corpus), "--index", str(folder))
    assert r.returncode == 1 and "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(folder)) == ["todo.txt"]
    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    r = cli("index", str(empty), "--index", str(folder), "--force")
    assert r.returncode == 1 and "No documents" in r.stderr  # past the folder check, to the (empty) corpus
    assert (folder / "todo.txt").read_text() == "buy milk\n"


def test_readme_files_and_dotfiles_count_as_empty(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    index.mkdir()
    shutil.copy(ROOT / "index" / "README.md", index / "README.md")  # the repository's own index/ ships with it
    (index / ".gitignore").write_text("*\n!README.md\n")
    before = tree(index)
    build_index(small_corpus, index, embedder=fake_embedder)
    for i in range(3):
        change(small_corpus, i)
        build_index(small_corpus, index, embedder=fake_embedder)
    after = tree(index)
    assert {k: after.get(k) for k in before} == before
    assert Assistant.load(index, embedder=fake_embedder).ask("Sweden").passages


def test_an_index_written_by_the_previous_tqa_is_adopted(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    index.mkdir()
    shutil.copy(ROOT / "index" / "README.md", index / "README.md")
    build_index(small_corpus, index, embedder=fake_embedder)
    change(small_corpus, 0)
    build_index(small_corpus, index, embedder=fake_embedder)
    (index / "g-photos").mkdir()  # a user's folder that was there all along
    make_legacy(index)
    legacy = generations(index)
    assert len(legacy) == 2
    data = load_index(index)  # the previous format still loads, with its checks
    assert data.manifest.format_version == 1 and data.document_text("sweden.md").startswith("# Sweden")
    data.close()
    assert Assistant.load(index, embedder=fake_embedder).ask("Sweden").passages

    change(small_corpus, 1)
    embedded = fake_embedder.embedded
    s = build_index(small_corpus, index, embedder=fake_embedder)  # no force needed: it is tqa's index
    assert s.published and s.files_changed == ["changing.txt"] and s.chunks_embedded == 1
    assert fake_embedder.embedded - embedded < 5 + 40  # the changed file (and the calibration probes) only
    assert (index / store.MARKER).is_file()
    for i in range(2, 4):
        change(small_corpus, i)
        build_index(small_corpus, index, embedder=fake_embedder)
    assert not set(legacy) & set(generations(index))  # the old generations were tqa's: retired in turn
    assert (index / "g-photos").is_dir() and (index / "README.md").is_file()
    assert len(generations(index)) == 2


def test_a_previous_format_index_keeps_its_checks(small_corpus, tmp_path, fake_embedder):
    index = tmp_path / "index"
    build_index(small_corpus, index, embedder=fake_embedder)
    make_legacy(index)
    gen = current_generation(index)
    m = json.loads((gen / MANIFEST).read_text())
    del m["artifacts"]["chunks.jsonl"]  # the old tqa read the list of files to check from the manifest
    (gen / MANIFEST).write_text(json.dumps(m))
    (gen / "chunks.jsonl").write_text((gen / "chunks.jsonl").read_text().replace('"start": 0', '"start": 7', 1))
    with pytest.raises(IndexCorrupt, match="rebuild"):
        load_index(index)
