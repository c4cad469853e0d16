"""The proof of a faithful import: the spec, built, holds the module's state_dict with
``strict=True`` and gives its outputs in float64, in eval and in train mode, with every
weight and BN statistic random (a BN at its initial values would hide a missing BN)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

import resdsl

#: float64 agrees to about 1e-14; the bound leaves room for summation order.
TOLERANCE = 1e-9


@dataclass
class Check:
    params: int
    macs: int
    keys: int
    eval_error: float
    train_error: float
    reference_params: int
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.problem is None
            and self.params == self.reference_params
            and self.eval_error < TOLERANCE
            and self.train_error < TOLERANCE
        )

    def __str__(self) -> str:
        if self.problem is not None:
            return f"verify: FAILED: {self.problem}"
        verdict = "verified" if self.ok else "FAILED"
        return (
            f"verify: {verdict}: {self.keys} state_dict keys load with strict=True; "
            f"{self.params:,} params (the module has {self.reference_params:,}), {self.macs / 1e9:.3f} GMACs; "
            f"float64 outputs: eval error {self.eval_error:.1e}, train error {self.train_error:.1e} "
            f"(bound {TOLERANCE:.0e})"
        )


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var") or (name.endswith("weight") and tensor.dim() == 1):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
    return model


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check(text: str, model: nn.Module, input_shape: tuple[int, ...], batch: int = 2) -> Check:
    """Compile `text`, load a randomised copy of `model`'s weights strictly, compare outputs."""
    network = resdsl.compile_text(text)
    reference = randomise(copy.deepcopy(model)).double()
    reference_params = sum(p.numel() for p in reference.parameters())
    try:
        built = resdsl.load(network, weights=reference.state_dict()).double()
    except Exception as error:  # a WeightsError lists the keys and shapes that differ
        return Check(network.num_params, network.macs, 0, 1.0, 1.0, reference_params, str(error).splitlines()[0])
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errors = []
    for training in (False, True):
        reference.train(training)
        built.train(training)
        with torch.no_grad():
            torch.manual_seed(2)  # dropout and drop path draw alike in both
            expected = reference(x)
            torch.manual_seed(2)
            got = built(x)
        errors.append(_error(got, expected))
    return Check(network.num_params, network.macs, len(built.state_dict()), errors[0], errors[1], reference_params)
