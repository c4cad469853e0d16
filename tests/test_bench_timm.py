"""bench/timm_models.py runs and reports what it measured (no speed is asserted here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import timm_models  # noqa: E402
from bench.timing import Paired  # noqa: E402


def test_the_pair_shares_weights_and_outputs() -> None:
    ours, reference = timm_models.pair("resnet18")
    ours.eval(), reference.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_table_has_a_forward_and_a_training_row_per_model() -> None:
    setup = timm_models.Setup(batch=2, size=32, rounds=1, models=("resnet18",))
    rows = list(timm_models.measure(setup))
    assert [row["figure"] for row in rows] == [
        "resnet18 eager forward, eval (batch 2, 32x32)",
        "resnet18 eager forward+backward (batch 2, 32x32)",
    ]
    assert rows[1]["rounds"] == 3  # forward+backward takes at least three rounds
    for row in rows:
        assert row["verdict"] in ("ok", "MISSED", "within noise")


def test_verdicts_read_the_interval() -> None:
    def result(low: float, high: float) -> Paired:
        return Paired(1.0, 1.0, (low + high) / 2, low, high, 5)

    assert timm_models.verdict(result(0.90, 0.99)) == "ok"
    assert timm_models.verdict(result(1.01, 1.10)) == "MISSED"
    assert timm_models.verdict(result(0.95, 1.05)) == "within noise"


@pytest.mark.slow
def test_the_parallel_paths_table_has_the_folded_row_and_each_models_rows() -> None:
    from bench import parallel_paths

    setup = parallel_paths.Setup(batch=2, size=32, rounds=1, models=("skresnet18",))  # SK trains BN at 1x1
    rows = list(parallel_paths.measure(setup))  # measure() checks the folded pair's outputs agree
    assert [row["figure"] for row in rows] == [
        "repvgg_a0 folded, eval forward (batch 2, 32x32)",
        "skresnet18 eager forward, eval (batch 2, 32x32)",
        "skresnet18 eager forward+backward (batch 2, 32x32)",
    ]
    for row in rows:
        assert row["verdict"] in ("ok", "MISSED", "within noise")
