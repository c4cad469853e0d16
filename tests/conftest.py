from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write .res files into a temporary directory; returns the path of the last one."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(autouse=True)
def _restore_denormals():
    """bench/torch_runtime.py flushes denormals for speed, a process-wide setting that
    would leak into later tests (hypothesis refuses to generate floats under it)."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture(autouse=True, scope="session")
def _lint_the_ir_after_every_pass():
    """Every compile in the suite checks the IR's invariants after each pass (docs/ir.md, "Lint")."""
    from resdsl import passes

    passes.LINT = True
    yield
    passes.LINT = False
