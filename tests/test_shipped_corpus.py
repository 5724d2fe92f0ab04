"""The tests and the `make test` gate measure exactly the shipped corpus, whatever a user adds to corpus/."""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .shipped_corpus import LISTING, ShippedCorpusError, copy_shipped_corpus, read_listing
from .support import CORPUS, ROOT

SHIPPED = "global-governance-and-human-trafficking.txt"


def files_under(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_tests_read_a_verified_copy_of_the_shipped_corpus_not_corpus_itself():
    assert CORPUS.resolve() != (ROOT / "corpus").resolve()
    assert ROOT / "corpus" not in CORPUS.resolve().parents
    assert files_under(CORPUS) == read_listing()


@pytest.fixture
def working_copy(tmp_path) -> Path:
    """corpus/ as a user may leave it: the shipped file, an upload made through the page, a file of their own."""
    src = tmp_path / "corpus"
    (src / "uploads").mkdir(parents=True)
    shutil.copyfile(ROOT / "corpus" / SHIPPED, src / SHIPPED)
    (src / "uploads" / "okapi-hotline.md").write_text("# Okapi\n\nThe okapi hotline.\n", encoding="utf-8")
    (src / "notes.txt").write_text("My own notes.\n", encoding="utf-8")
    return src


def test_the_copy_holds_only_the_listed_files_with_their_hashes(working_copy, tmp_path):
    dest = copy_shipped_corpus(tmp_path / "copy" / "corpus", source=working_copy)
    assert files_under(dest) == read_listing() and list(read_listing()) == [SHIPPED]


@pytest.mark.parametrize("damage", ["edited", "missing", "symlink to another file"])
def test_a_changed_or_missing_shipped_file_is_refused_with_the_fix(working_copy, tmp_path, damage):
    doc = working_copy / SHIPPED
    if damage == "edited":
        doc.write_bytes(doc.read_bytes() + b"\nOne more sentence.\n")
    elif damage == "missing":
        doc.unlink()
    else:
        doc.unlink()
        doc.symlink_to(working_copy / "notes.txt")
    with pytest.raises(ShippedCorpusError, match="git checkout") as err:
        copy_shipped_corpus(tmp_path / "copy", source=working_copy)
    assert SHIPPED in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "copy").exists()  # nothing half-written


@pytest.mark.parametrize("line", [
    "",  # lists nothing
    "abc  x.txt",
    f"{'0' * 64}  ../outside.txt",
    f"{'0' * 64}  /etc/passwd",
    f"{'0' * 64} x.txt",  # one space: not the sha256sum format
    f"{'0' * 64}  x.txt\n{'0' * 64}  x.txt",
])
def test_a_malformed_listing_is_refused(tmp_path, line):
    listing = tmp_path / "list.sha256"
    listing.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ShippedCorpusError):
        read_listing(listing)


def test_an_existing_destination_is_never_reused(working_copy, tmp_path):
    dest = tmp_path / "copy"
    dest.mkdir()
    (dest / "stale.md").write_text("left over\n")
    with pytest.raises(ShippedCorpusError, match="already exists"):
        copy_shipped_corpus(dest, source=working_copy)


def test_the_listing_names_every_file_the_repository_ships_in_corpus():
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    r = subprocess.run(["git", "ls-files", "-z", "--", "corpus"], cwd=ROOT, capture_output=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = sorted(p.removeprefix("corpus/") for p in r.stdout.decode().split("\0") if p)
    assert tracked == sorted(read_listing()), f"update {LISTING.name} to match the files tracked in corpus/"


def test_uploads_are_ignored_by_git():
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    r = subprocess.run(["git", "check-ignore", "-q", "--no-index", "corpus/uploads/okapi-hotline.md"], cwd=ROOT)
    if r.returncode == 128:
        pytest.skip("not a git checkout")
    assert r.returncode == 0, "corpus/uploads/ would show up as untracked files"


def test_the_command_line_writes_the_copy_and_refuses_an_existing_folder(tmp_path):
    dest = tmp_path / "eval-corpus"
    run = [sys.executable, "-m", "tests.shipped_corpus", str(dest)]
    r = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert files_under(dest) == read_listing()
    again = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and again.stderr.startswith("error: ") and "already exists" in again.stderr


def test_the_make_test_gate_evaluates_the_verified_copy():
    """The gate's `tqa eval` reads the folder that `tests.shipped_corpus` writes, not corpus/."""
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = make.split("\ntest:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")  # continued lines as one
    commands = [shlex.split(line.strip()) for line in recipe.splitlines()[1:] if line.startswith("\t")]
    copy = next((c for c in commands if c[1:3] == ["-m", "tests.shipped_corpus"]), None)
    gate = next((c for c in commands if c[0].endswith("/tqa") and c[1] == "eval"), None)
    assert copy is not None and gate is not None, recipe
    assert "--corpus" in gate and gate[gate.index("--corpus") + 1] == copy[3]
    assert commands.index(copy) < commands.index(gate)
    assert any(c[:2] == ["rm", "-rf"] and copy[3] in c for c in commands[:commands.index(copy)])
