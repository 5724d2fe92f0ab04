"""tqa: answers questions about your documents with exact, cited passages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
