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


@pytest.fixture
def train_workspace(tmp_path: Path, monkeypatch):
    """A folder for training runs, made the working directory: a small learnable data set
    in CIFAR-10's format in data/, a tiny network in tiny.res, torch on one thread."""
    import torch
    from cifar_fixtures import TINY_SPEC, write_learnable

    write_learnable(tmp_path / "data", train=256, test=64)
    (tmp_path / "tiny.res").write_text(TINY_SPEC)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


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
