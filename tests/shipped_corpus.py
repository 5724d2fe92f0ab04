"""The shipped corpus as the tests and the `make test` gate measure it: a verified copy of exactly the files
listed in ``tests/shipped-corpus.sha256`` (``sha256sum`` format, paths relative to ``corpus/``), never whatever
else sits in ``corpus/``: documents added through the web page (``corpus/uploads/``) or by hand change what
``make run`` serves, not what the tests and the gate measure.

    python -m tests.shipped_corpus DEST    # write DEST (which must not exist) as a verified copy

A listed file that is missing or differs from the shipped version stops the run with one line saying how to
restore it. The copy is written from the bytes that were checked.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "corpus"
LISTING = Path(__file__).resolve().with_name("shipped-corpus.sha256")


class ShippedCorpusError(Exception):
    """The shipped corpus can't be copied as listed (a file is missing, differs, or the list is malformed)."""


def read_listing(listing: Path = LISTING) -> dict[str, str]:
    """{relative path: SHA-256} from a ``sha256sum``-format list."""
    files: dict[str, str] = {}
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        rel = PurePosixPath(name)
        if (not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name
                or rel.is_absolute() or ".." in rel.parts or name in files):
            raise ShippedCorpusError(f"{listing.name} line {n} is not `<sha256>  <relative path>`: {line!r}")
        files[name] = digest
    if not files:
        raise ShippedCorpusError(f"{listing.name} lists no files")
    return files


def copy_shipped_corpus(dest: Path, source: Path = SOURCE, listing: Path = LISTING) -> Path:
    """Create ``dest`` holding exactly the listed files of ``source``, each checked against its SHA-256."""
    files = read_listing(listing)
    contents = {}
    for name, digest in files.items():
        path = source / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ShippedCorpusError(f"{path} is missing ({exc.strerror}); restore the shipped corpus "
                                     f"(`git checkout -- {source.name}/`)") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ShippedCorpusError(f"{path} is not the shipped version listed in {listing.name}; restore it "
                                     f"(`git checkout -- {source.name}/{name}`) or, if the change is meant to "
                                     f"ship, update {listing.name}")
        contents[name] = data
    if dest.exists() or dest.is_symlink():
        raise ShippedCorpusError(f"{dest} already exists; remove it first (the copy holds the listed files only)")
    dest.mkdir(parents=True)
    for name, data in contents.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.shipped_corpus DEST", file=sys.stderr)
        return 2
    try:
        dest = copy_shipped_corpus(Path(argv[0]))
    except ShippedCorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"shipped corpus: {len(read_listing())} file(s) verified and copied to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
