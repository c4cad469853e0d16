"""Runtime of resdsl's torch models against torchvision's, side by side in one process.

  python bench/torch_runtime.py [--quick]

Each pair of models shares its weights; timings alternate between the two
(interleaved) and the median of the runs is reported. Targets from the torch
backend issue: eager forward and forward+backward ratio <= 1.00, for_inference
against torchvision's eager eval model <= 0.85, resdsl.load of resnet152 against
torchvision.models.resnet152() <= 1.10.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import resdsl  # noqa: E402


def _interleaved(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    first(), second()  # warm up: allocator, kernels, lazy initialisation
    a, b = [], []
    for _ in range(repeats):
        for fn, samples in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def _row(figure: str, ours: float, theirs: float, target: str) -> dict:
    return dict(
        figure=figure,
        resdsl=f"{ours * 1000:.1f} ms",
        reference=f"{theirs * 1000:.1f} ms",
        ratio=ours / theirs,
        target=target,
    )


def rows(quick: bool = False) -> list[dict]:
    torch.manual_seed(0)
    batch, size = (4, 160) if quick else (8, 224)
    repeats = 5 if quick else 11
    reference = torchvision.models.resnet50()
    ours = resdsl.load("specs/torchvision/resnet50.res", weights=reference.state_dict())
    x = torch.randn(batch, 3, size, size)
    out = []

    reference.eval(), ours.eval()
    with torch.no_grad():
        a, b = _interleaved(lambda: ours(x), lambda: reference(x), repeats)
    out.append(_row(f"resnet50 eager forward, eval (batch {batch}, {size}x{size})", a, b, "<=1.00"))

    reference.train(), ours.train()

    def step(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()

        return run

    a, b = _interleaved(step(ours), step(reference), max(3, repeats // 2))
    out.append(_row(f"resnet50 eager forward+backward (batch {batch})", a, b, "<=1.00"))

    reference.eval()
    fast = resdsl.load("specs/torchvision/resnet50.res", weights=reference.state_dict(), for_inference=True)
    with torch.no_grad():
        a, b = _interleaved(lambda: fast(x), lambda: reference(x), repeats)
    out.append(_row(f"resnet50 for_inference vs torchvision eager eval (batch {batch})", a, b, "<=0.85"))

    a, b = _interleaved(lambda: resdsl.load("resnet152"), lambda: torchvision.models.resnet152(), 3 if quick else 5)
    out.append(_row("resdsl.load('resnet152') vs torchvision.models.resnet152()", a, b, "<=1.10"))
    return out


if __name__ == "__main__":
    from bench.run import Row, machine, table

    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    print(table([Row(**row) for row in rows(quick="--quick" in sys.argv)]))
