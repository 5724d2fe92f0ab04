"""Stand-ins for ``tqa tune``'s two heavy parts, so that its index side (keep or refuse, publish, revert, kills) is
tested in seconds: a trainer that writes a small model folder and reports chosen figures, and a loader that gives a
fake embedder by name (a tuned one encodes differently from the base)."""

from __future__ import annotations

import os
import signal
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tests.fakes import FakeEmbedder
from tqa.tune import TuneReport


class NamedFake(FakeEmbedder):
    """The fake embedder under another name (a tuned model's folder); ``salt`` words shift its vectors,
    ``useless`` gives each text a random vector (a model that learned nothing but harm)."""

    def __init__(self, name: str, salt: str = "tuned", useless: bool = False) -> None:
        super().__init__()
        self.name, self.salt, self.useless = name, salt, useless

    def encode(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if self.useless:  # a vector drawn at random for each text: the meaning is gone
            out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts])
            return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)
        return super().encode([f"{t} {self.salt}" for t in texts], batch_size=batch_size, progress=progress)


class Loader:
    """``load_embedder``'s stand-in: the base fake for its own name, a ``NamedFake`` for any other (recording
    the folders it was asked to read from)."""

    def __init__(self, useless: bool = False, kill_on_encode: bool = False) -> None:
        self.useless, self.kill_on_encode = useless, kill_on_encode
        self.sources: list[str | None] = []

    def __call__(self, name: str, precision: str | None = None, source: str | None = None) -> Any:
        self.sources.append(source)
        if name == FakeEmbedder.name:
            return FakeEmbedder()
        fake = NamedFake(name, useless=self.useless)
        if self.kill_on_encode:
            fake.encode = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # type: ignore[method-assign]
        return fake


class Trainer:
    """``tune.tune``'s stand-in: keeps (writes ``out_dir`` with a few files) or refuses, as told; ``content``
    varies the saved files (and so their hash); ``kill`` kills the process half way through saving."""

    def __init__(self, keep: bool = True, content: str = "weights", kill: bool = False) -> None:
        self.keep, self.content, self.kill = keep, content, kill
        self.calls: list[dict[str, Any]] = []

    def __call__(self, passages: list[str], base: str, out_dir: Path, *, on_progress: Any = None,
                 **kw: Any) -> TuneReport:
        self.calls.append({"passages": passages, "base": base, **kw})
        report = TuneReport(False, "", pairs=len(passages), held_out=3, passages=len(passages), mrr_before=0.2,
                            mrr_after=0.5 if self.keep else 0.19, base_model=base,
                            settings={"epochs": kw.get("epochs", 2), "min_gain": kw.get("min_gain", 0.01)})
        if on_progress:
            on_progress("training", 1, 1)
        if not self.keep:
            report.reason = "held-out sentences did not find their passages better: the model is kept as it is"
            return report
        out = Path(out_dir)
        out.mkdir()
        (out / "config.json").write_text('{"fake": true}\n', encoding="utf-8")
        if self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        (out / "sub").mkdir()
        (out / "sub" / "weights.bin").write_text(self.content, encoding="utf-8")
        report.kept, report.model_dir, report.reason = True, str(out), "held-out sentences found them better"
        return report
