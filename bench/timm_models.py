"""resdsl's generated modules against timm's own, side by side in one process.

  python bench/timm_models.py [--quick] [--batch N] [--size S] [--rounds R] [--models NAME ...]

For seresnet50, resnet50d and resnetv2_50 (issue 10's speed rows): timm builds its
module (``pretrained=False``, nothing is downloaded), resdsl builds
``specs/timm/<name>.res`` and loads timm's weights into it with ``strict=True``, and
:func:`bench.timing.paired` times the two in alternating rounds: the eager forward
in eval mode, and a forward+backward in train mode. Ratios are resdsl over timm
(below 1 is faster) with their 95% interval; the target is at most 1.00, and the
verdict reads the interval (``ok``, ``MISSED``, ``within noise``), as bench/run.py's
tables do. Results are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import timm
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import resdsl  # noqa: E402
from bench.timing import Paired, paired  # noqa: E402

MODELS = ("seresnet50", "resnet50d", "resnetv2_50")
TARGET = 1.00


@dataclass(frozen=True)
class Setup:
    batch: int = 8
    size: int = 224
    rounds: int = 15  # forward rounds; forward+backward takes half as many, at least 3
    models: tuple[str, ...] = MODELS


def pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """resdsl's module and timm's, with timm's weights in both."""
    reference = timm.create_model(name, pretrained=False)
    ours = resdsl.load(f"timm/{name}", weights=reference.state_dict())
    return ours, reference


def forward_backward(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return run


def verdict(result: Paired) -> str:
    if result.high <= TARGET:
        return "ok"
    if result.low > TARGET:
        return "MISSED"
    return "within noise"


def measure(setup: Setup) -> Iterator[dict]:
    """The table's rows, each as soon as it is measured."""
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # as bench/torch_runtime.py: no slow denormal arithmetic on either side
    x = torch.randn(setup.batch, 3, setup.size, setup.size)
    for name in setup.models:
        yield from model_rows(name, x, setup.rounds)


def model_rows(name: str, x: torch.Tensor, rounds: int) -> Iterator[dict]:
    """timm's `name` against specs/timm/<name>.res with its weights: the eager forward in
    eval mode (`rounds` rounds), then a forward+backward in train mode (half as many, at least 3)."""
    shape = f"batch {x.shape[0]}, {x.shape[2]}x{x.shape[3]}"
    ours, reference = pair(name)
    ours.eval(), reference.eval()
    with torch.no_grad():
        result = paired(partial(ours, x), partial(reference, x), rounds=rounds)
    yield _row(f"{name} eager forward, eval ({shape})", result)
    ours.train(), reference.train()
    result = paired(forward_backward(ours, x), forward_backward(reference, x), rounds=max(3, rounds // 2))
    yield _row(f"{name} eager forward+backward ({shape})", result)


def _row(figure: str, result: Paired) -> dict:
    return dict(
        figure=figure,
        resdsl=f"{result.ours * 1000:.1f} ms",
        timm=f"{result.reference * 1000:.1f} ms",
        ratio=f"{result.ratio:.3f} [{result.low:.3f}, {result.high:.3f}]",
        rounds=result.rounds,
        verdict=verdict(result),
    )


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), timm {timm.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 4 at 160x160, 7 rounds")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--models", nargs="+", choices=MODELS)
    args = parser.parse_args(argv)
    setup = Setup(4, 160, 7) if args.quick else Setup()
    setup = Setup(
        args.batch or setup.batch,
        args.size or setup.size,
        args.rounds or setup.rounds,
        tuple(args.models) if args.models else setup.models,
    )
    print_table(measure(setup))
    return 0


def print_table(rows: Iterable[dict]) -> None:
    """The machine, then a markdown row for each measurement as soon as it is made."""
    print(f"# {machine()}")
    print("| figure | resdsl | timm | ratio [95% interval] | rounds | target | verdict |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['figure']} | {row['resdsl']} | {row['timm']} | {row['ratio']} | {row['rounds']} "
            f"| <={TARGET:.2f} | {row['verdict']} |",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
