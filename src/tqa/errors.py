"""One exception hierarchy. Every message says what happened and what to do about it.

The CLI prints ``str(error)`` on one line and exits 1; the web app shows it in the page.
"""

from __future__ import annotations

# The fix for an index that is damaged or cannot be read as it is: what every such message ends with.
REBUILD_HINT = "Run `tqa index --rebuild` to build it again from the corpus."


def shown(value: object, limit: int | None = None) -> str:
    """A name or path for a one-line message: as it is when printable, else quoted with its control characters (a
    newline in a file name, a lone surrogate from a name that is not UTF-8) escaped; shortened past ``limit``."""
    text = str(value)
    text = text if text.isprintable() else repr(text)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (libraries raise multi-line ones), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class TqaError(Exception):
    """Base error; the message tells the user what to do."""


class CorpusError(TqaError):
    """The corpus folder cannot be read."""


class IndexNotFound(TqaError):
    """There is no index where one was expected."""


class IndexMismatch(TqaError):
    """The index was built with other settings (model, chunking) than the ones requested."""


class IndexCorrupt(TqaError):
    """An index artifact is missing, truncated or fails its checksum."""


class IndexLocationError(TqaError):
    """The index folder cannot be used as asked: it overlaps the corpus, or holds files that are not a tqa index."""


class IndexBusy(TqaError):
    """Another process is writing the index."""


class BadQuestion(TqaError):
    """The question cannot be answered as asked (empty, not text)."""


class ModelError(TqaError):
    """The embedding model cannot be loaded."""


class EvalError(TqaError):
    """An evaluation set is malformed (for example evidence that is not in the corpus)."""


class SettingsError(TqaError):
    """A setting (a ``TQA_*`` variable or a ``Settings`` field) is out of its range."""


class AuthError(TqaError):
    """The auth file, a user name or a password is unusable (missing, damaged, empty, unsafe)."""


class AuthRequired(TqaError):
    """Serving on a non-local address was asked for without a login."""


class DistributedError(TqaError):
    """A build on a Ray cluster cannot go on: Ray is missing, the cluster cannot be reached, or its workers were lost
    beyond what Ray retries. Nothing is published."""
