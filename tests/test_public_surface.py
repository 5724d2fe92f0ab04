"""Adapters go through public calls: the benchmark and the evaluation use no underscore name of another module or
object, and nothing outside the manifest module indexes a manifest by its JSON keys."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tqa

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = sorted((ROOT / "bench").glob("*.py")) + [ROOT / "src" / "tqa" / "evaluation.py"]


def private_uses(path: Path) -> list[str]:
    """``obj._name`` where obj is not ``self``/``cls``, and ``from module import _name``, with line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tqa"):
            found += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: p.name)
def test_the_benchmark_and_the_evaluation_use_only_public_names(path):
    assert private_uses(path) == []


def test_the_check_sees_a_private_use(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from tqa.evaluation import _safe_name\nx = data.vectors._index\ny = self._cache\n")
    assert private_uses(sample) == ["sample.py:1 import _safe_name", "sample.py:2 ._index"]


def test_no_module_reads_a_manifest_by_its_json_keys():
    """A Manifest has no item access: code that indexed one with a string would fail at once, not misread."""
    from tqa.manifest import Manifest

    assert not hasattr(Manifest, "__getitem__") and not hasattr(Manifest, "get")


def test_the_public_names():
    assert set(tqa.__all__) == {"Answer", "Assistant", "Passage", "TqaError", "build_index", "__version__"}
    for name in tqa.__all__:
        assert getattr(tqa, name) is not None


def test_importing_tqa_shortens_openmps_spin_unless_the_user_set_it():
    """Set before torch or FAISS loads OpenMP (each reads it once, then): idle threads sleep sooner instead of
    taking a core from the search that follows an encoding. A user's own value is kept."""
    import os
    import subprocess
    import sys

    code = "import os, tqa, sys; print(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules, 'faiss' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["10000", "False", "False"]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "5"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["5", "False", "False"]
