"""Helpers shared by the numeric tests: randomised weights, and the comparison of a
built module with the reference interpreter (resdsl.interpret)."""

from __future__ import annotations

import torch
from torch import nn

import resdsl
from resdsl import interpret


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic random, so that no layer is an identity by
    accident (a BN at weight 1, bias 0, mean 0, variance 1 would hide a missing BN)."""
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


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def compare_with_oracle(network: resdsl.Network, *, batch: int = 2, seed: int = 0, train: bool = True) -> dict:
    """Build, randomise, and run the module and the interpreter in float64, in eval
    and (optionally) train mode, and for_inference against eval. Returns the errors."""
    from resdsl.backends.torch import build, fold_for_inference

    model = randomise(build(network), seed).double()
    x = torch.randn(batch, *network.input_shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    errors = {}
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = interpret.run(network, state, x, training=False)
        errors["eval"] = relative_error(model(x), expected)
        if train:
            model.train()
            got = model(x)
            errors["train"] = relative_error(got, interpret.run(network, state, x, training=True))
            model.load_state_dict(state)  # train mode moved the running statistics
            model.eval()
        folded = fold_for_inference(model, network)
        errors["for_inference"] = relative_error(folded(x.contiguous(memory_format=torch.channels_last)), expected)
        # The folded model's network is what it computes: the interpreter runs it on its weights.
        folded_state = {k: v.clone() for k, v in folded.state_dict().items()}
        errors["for_inference_ir"] = relative_error(interpret.run(folded.network, folded_state, x), expected)
    return errors


def shape_mismatches(network: resdsl.Network, model: nn.Module | None = None) -> dict[str, tuple]:
    """Modules whose real output shape (seen by forward hooks) is not the IR's shape for
    them (``Table``'s layer rows), and the network's output: {name: (real, IR)}.

    The interpreter and the built module compute real tensors, so they agree even where
    the IR's shape rule is wrong; this compares the rule with what torch really does."""
    from resdsl.backends.torch import build

    if model is None:
        model = build(network)
    rows = {row.module: tuple(row.output_shape) for row in resdsl.Table.of(network, detail="layer").rows}
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:  # None: keeps the output
            seen.setdefault(name, tuple(output.shape[1:]))

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules() if name in rows]
    parameter = next(model.parameters(), None)
    x = torch.zeros(1, *network.input_shape, dtype=parameter.dtype if parameter is not None else torch.float32)
    try:
        with torch.no_grad():
            out = model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    if not seen:
        raise AssertionError("no module of the IR's table ran")
    wrong = {name: (shape, rows[name]) for name, shape in seen.items() if shape != rows[name]}
    if tuple(out.shape[1:]) != tuple(network.output_shape):
        wrong["<output>"] = (tuple(out.shape[1:]), tuple(network.output_shape))
    return wrong
