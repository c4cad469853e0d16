"""Side-by-side timing: paired rounds, alternating order, a ratio with its interval.

Every comparison in bench/ goes through :func:`paired`. Each round times both
contenders back to back, in the order ABBA over consecutive rounds, so that a
drift in the machine's speed (a neighbour on a shared VM, thermal limits) and
any advantage of running first or second fall on both alike. The ratio reported
is the median of the per-round ratios, which cancels slow drift better than a
ratio of two medians, and it comes with a 95% bootstrap interval: a ratio of
0.99 whose interval is 0.95-1.03 is parity, not a win, and the tables say so.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Paired:
    ours: float  # median seconds of resdsl's side
    reference: float  # median seconds of the reference's side
    ratio: float  # median of the per-round ratios ours / reference
    low: float  # 95% bootstrap interval of that median
    high: float
    rounds: int


def paired(
    ours: Callable[[], object],
    reference: Callable[[], object],
    *,
    rounds: int,
    warmup: int = 1,
    sync: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Paired:
    """Time `ours` against `reference` over `rounds` paired rounds.

    `sync` runs before each clock reading (``torch.cuda.synchronize`` on a GPU,
    where calls return before the work is done).
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    for _ in range(warmup):  # allocator, kernel selection, lazy initialisation
        ours(), reference()
    sync = sync or (lambda: None)

    def timed(fn: Callable[[], object]) -> float:
        sync()
        start = clock()
        fn()
        sync()
        return clock() - start

    a: list[float] = []
    b: list[float] = []
    for index in range(rounds):
        if index % 4 in (0, 3):
            a.append(timed(ours))
            b.append(timed(reference))
        else:
            b.append(timed(reference))
            a.append(timed(ours))
    ratios = [x / y for x, y in zip(a, b)]
    low, high = bootstrap_interval(ratios)
    return Paired(statistics.median(a), statistics.median(b), statistics.median(ratios), low, high, rounds)


def bootstrap_interval(values: list[float], *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median (seeded: the same data gives the same interval)."""
    if len(values) < 3:
        return min(values), max(values)
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]
