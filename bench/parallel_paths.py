"""Several paths through a block: resdsl's modules against timm's, side by side in one process.

  python bench/parallel_paths.py [--quick] [--batch N] [--size S] [--rounds R] [--models NAME ...]

Two tables, each resdsl over timm (below 1 is faster) with its 95% interval from
:func:`bench.timing.paired`'s alternating rounds, and the verdict read from the
interval against a target of at most 1.00:

- ``repvgg_a0`` for inference: ``resdsl.load("timm/repvgg_a0", weights=...,
  for_inference=True, engine="eager")``, whose every block the parallel-path pass
  folded into one 3x3 convolution (resdsl/passes/parallel_paths.py), against timm's
  model after ``timm.utils.model.reparameterize_model``, its hand-written folding;
  eval forward, without autograd.
- ``skresnet18``, ``resnest14d`` and ``res2net50_26w_4s``: the generated forward of
  ``specs/timm/<name>.res`` holding timm's weights, against timm's module: the eager
  forward in eval mode and a forward+backward in train mode, as bench/timm_models.py
  times its models.

Results are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import timm
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import resdsl  # noqa: E402
from bench.timing import paired  # noqa: E402
from bench.timm_models import _row, model_rows, print_table  # noqa: E402

MODELS = ("skresnet18", "resnest14d", "res2net50_26w_4s")


@dataclass(frozen=True)
class Setup:
    batch: int = 8
    size: int = 224
    rounds: int = 15  # forward rounds; forward+backward takes half as many, at least 3
    models: tuple[str, ...] = MODELS
    folded: bool = True  # the repvgg_a0 row


def folded_pair(size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """repvgg_a0 folded by resdsl's pass and by timm's reparameterisation, same weights."""
    from timm.utils.model import reparameterize_model

    reference = timm.create_model("repvgg_a0", pretrained=False).eval()
    ours = resdsl.load(
        "timm/repvgg_a0", weights=reference.state_dict(), for_inference=True, engine="eager", input=(3, size, size)
    )
    return ours, reparameterize_model(reference)


def measure(setup: Setup) -> Iterator[dict]:
    """The table's rows, each as soon as it is measured."""
    torch.manual_seed(0)
    torch.set_flush_denormal(True)  # as bench/timm_models.py
    x = torch.randn(setup.batch, 3, setup.size, setup.size)
    shape = f"batch {setup.batch}, {setup.size}x{setup.size}"
    if setup.folded:
        ours, reference = folded_pair(setup.size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x), rtol=1e-3, atol=1e-3)
            result = paired(partial(ours, x), partial(reference, x), rounds=setup.rounds)
        yield _row(f"repvgg_a0 folded, eval forward ({shape})", result)
    for name in setup.models:
        yield from model_rows(name, x, setup.rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 4 at 160x160, 7 rounds")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--models", nargs="*", choices=MODELS, help="the unfolded models (none: only repvgg_a0)")
    parser.add_argument("--no-folded", action="store_true", help="leave out the repvgg_a0 row")
    args = parser.parse_args(argv)
    setup = Setup(4, 160, 7) if args.quick else Setup()
    setup = Setup(
        args.batch or setup.batch,
        args.size or setup.size,
        args.rounds or setup.rounds,
        tuple(args.models) if args.models is not None else setup.models,
        not args.no_folded,
    )
    print_table(measure(setup))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
