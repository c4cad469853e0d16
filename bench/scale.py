"""The largest network this machine can build and train for one step.

  python bench/scale.py [--budget-gb G] [--batch B] [--quick]

The CIFAR family of section 4.2 grows one knob, depth (6n+2 layers), so "largest"
is the largest n. A step's memory grows linearly in n (docs/performance.md), so
two small probes fit that line and predict the largest n under the budget; the
prediction is then checked by really building and training that network, in a
fresh process that may not grow past the budget (bench/memory.py). Each network
that trains refines the line; the search stops once one n trains and one at most
8% larger fails: the reported network is one that really trained, next to the
smallest one seen to fail.

The budget defaults to 80% of the memory available when the run starts.
Measured with activation checkpointing off and per block (`checkpoint block`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import memory  # noqa: E402

STEP = 1.08  # how much larger the failing network is than the one that trained
MAX_PROBES = 8

Measure = Callable[[int], dict]  # n -> a bench.memory.measure result


@dataclass
class Largest:
    fits: int | None  # the largest n that trained within the budget
    fits_result: dict | None
    fails: int | None  # the smallest n seen to exceed it
    predicted: int
    probes: list[tuple[int, bool]]


def available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def predict(points: list[tuple[int, float]], budget_mb: float) -> int:
    """The n at which the line through the two deepest measured (n, peak MB) points reaches the budget."""
    (n1, m1), (n2, m2) = sorted(points)[-2:]
    slope = (m2 - m1) / (n2 - n1)
    if slope <= 0:
        raise ValueError(f"memory did not grow with depth ({n1}: {m1:.0f} MB, {n2}: {m2:.0f} MB)")
    return max(1, math.floor(n2 + (budget_mb - m2) / slope))


def search(measure: Measure, points: list[tuple[int, float]], budget_mb: float) -> Largest:
    """Bracket the largest n that trains, to within STEP.

    Each network that trains adds a point to the line, and the next probe goes
    where the refitted line meets the budget (the small probes' line misjudges
    fixed costs); once one n trains and a larger one fails, bisect between them.
    """
    points = list(points)
    predicted = predict(points, budget_mb)
    fits: int | None = None
    fits_result: dict | None = None
    fails: int | None = None
    probes: list[tuple[int, bool]] = []
    n = predicted
    while len(probes) < MAX_PROBES:
        result = measure(n)
        probes.append((n, result["ok"]))
        if result["ok"]:
            fits, fits_result = n, result
            points.append((n, result["peak_mb"]))
        else:
            fails = n
        if fits is not None and fails is not None:
            if fails <= math.ceil(fits * STEP):
                break
            n = math.floor(math.sqrt(fits * fails))
        elif fits is not None:
            n = math.ceil(fits * STEP)
            with suppress(ValueError):  # noise can flatten the line; then step up
                n = max(n, predict(points, budget_mb))
        else:
            n = max(1, math.floor(n / STEP))
    return Largest(fits, fits_result, fails, predicted, probes)


def largest(checkpoint: str, batch: int, budget_mb: float, probe_depths: tuple[int, int]) -> Largest:
    def measure(n: int) -> dict:
        return memory.measure("cifar", str(n), batch, 32, checkpoint, budget_mb=budget_mb, threads=0)

    points = []
    for n in probe_depths:
        result = measure(n)
        if not result["ok"]:
            raise RuntimeError(f"n={n} does not fit in {budget_mb:.0f} MB; give a larger budget")
        points.append((n, result["peak_mb"]))
    return search(measure, points, budget_mb)


def rows(quick: bool = False, budget_gb: float | None = None, batch: int = 32) -> list[dict]:
    budget_mb = budget_gb * 1024 if budget_gb else (1536 if quick else 0.8 * available_mb())
    probe_depths = (4, 16) if quick else (100, 400)
    out = []
    for checkpoint in ("none", "block"):
        figure = (
            f"largest CIFAR ResNet that trains one step in {budget_mb / 1024:.1f} GiB "
            f"(batch {batch}, checkpoint {checkpoint})"
        )
        try:
            found = largest(checkpoint, batch, budget_mb, probe_depths)
        except RuntimeError as error:
            out.append(dict(figure=figure, resdsl=f"not measured: {error}"))
            continue
        if found.fits is None:
            out.append(dict(figure=figure, resdsl=f"not found: every probe failed ({found.probes})"))
            continue
        result = found.fits_result
        assert result is not None
        above = f"n={found.fails} ({6 * found.fails + 2:,} layers) fails" if found.fails else "no failing n reached"
        out.append(
            dict(
                figure=figure,
                resdsl=f"n={found.fits} ({6 * found.fits + 2:,} layers, {result['params'] / 1e6:.1f}M params)",
                reference=above,
                unit=(
                    f"peak {result['peak_mb'] / 1024:.1f} GiB, build {result['build_s']:.1f} s, "
                    f"step {result['step_s']:.0f} s; predicted n={found.predicted}"
                ),
            )
        )
    return out


if __name__ == "__main__":
    import argparse

    from bench.report import Row, print_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 1.5 GiB budget and small probes")
    parser.add_argument("--budget-gb", type=float, help="memory budget in GiB (default: 80%% of what is available)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    print_report([Row(**row) for row in rows(args.quick, args.budget_gb, args.batch)])
