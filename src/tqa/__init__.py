"""tqa: answers questions about your documents with exact, cited passages."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# OpenMP's threads (torch's and FAISS's, each loaded on first use) spin 300,000 times before they sleep. After a
# question was encoded, torch's second thread spun on through the search that followed it, which then had one of the
# two cores: at 10M chunks an ask took 18.6 ms, 15.7 ms with this (bench/results-scale.md), embedding as fast. A
# setting of the user's own is kept; set after torch or FAISS is loaded, it has no effect.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
__all__ = ["Answer", "Assistant", "Passage", "TqaError", "build_index", "__version__"]

if TYPE_CHECKING:
    from .assistant import Answer, Assistant, Passage
    from .errors import TqaError
    from .indexing import build_index


def __getattr__(name: str) -> Any:
    # Lazy: `import tqa` must stay fast (no numpy, torch or faiss until something is used).
    if name in ("Answer", "Assistant", "Passage"):
        from . import assistant

        return getattr(assistant, name)
    if name == "build_index":
        from .indexing import build_index

        return build_index
    if name == "TqaError":
        from .errors import TqaError

        return TqaError
    raise AttributeError(f"module 'tqa' has no attribute {name!r}")
