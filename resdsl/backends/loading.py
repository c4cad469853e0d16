"""Loading: weights into a built model, and ``resdsl.load``'s pipeline.

A spec is compiled, built (resdsl.backends.torch), given its weights (a state dict, a
file, or a run's checkpoint, each read once and checked: the other-network check, the
hint when keys do not fit), and for inference handed to resdsl.backends.inference.
A module of its own so that the backend that builds modules imports neither the
trainer nor the inference engines: each of those imports this, never the reverse.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resdsl.backends.torch import build
from resdsl.backends.weights import mismatch_hint
from resdsl.errors import WeightsError
from resdsl.fingerprint import network_fingerprint
from resdsl.ir import Network

#: The ``format`` entry of `resdsl train`'s checkpoints (best.pt, checkpoint.pt).
RUN_CHECKPOINT_FORMAT = "resdsl-train/1"


def is_run_checkpoint(state: Any) -> bool:
    """Whether a loaded file is a checkpoint of `resdsl train`: its weights are under 'model'."""
    return (
        isinstance(state, Mapping)
        and state.get("format") == RUN_CHECKPOINT_FORMAT
        and isinstance(state.get("model"), Mapping)
    )


def read_weights_and_run(weights: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The state dict in `weights` (as :func:`read_weights` reads it, the file read once),
    and, where it is a `resdsl train` checkpoint (best.pt, checkpoint.pt), the whole
    checkpoint (its spec, normaliser, recipe...); None for other weights."""
    state, shown = _read_weights_object(weights)
    if is_run_checkpoint(state):
        return _tensors_only(dict(state["model"]), shown), dict(state)
    if not isinstance(state, Mapping):
        raise WeightsError(f"expected a state dict, found {type(state).__name__}", file=shown)
    return _tensors_only(dict(state), shown), None


def weights_for(
    network: Network, weights: Any, *, allow_other_network: bool = False, skip: Any = (), shown: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The state dict to load into `network`'s module, and the run checkpoint it came from (or None).

    A run's checkpoint names the network it trained: another network is refused unless
    ``allow_other_network`` (with ``skip``, a fine-tuned network differs in the skipped
    modules by design).
    """
    state, run = read_weights_and_run(weights)
    if run is not None and not (allow_other_network or skip):
        check_same_network(network, run, shown)
    return state, run


def check_same_network(network: Network, record: Mapping[str, Any], shown: str | None) -> None:
    """A run checkpoint's recorded network must be `network` (every layer's name, kind, shape, inputs).

    Option A's plain and residual twins have the same keys and shapes, so a strict load
    alone would score one network's weights as the other's without a word.
    """

    spec = record.get("spec")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("architecture_sha256"), str):
        raise WeightsError(
            "this run checkpoint records no network to compare with",
            file=shown,
            hint="allow_other_network=True (--allow-other-network) loads it without the check",
        )
    if spec["architecture_sha256"] == network_fingerprint(network):
        return
    params = spec.get("params") or {}
    given = ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, Mapping) else ""
    trained = f"{spec.get('name')}" + (f" ({given})" if given else "") + f" from {spec.get('path')}"
    raise WeightsError(
        f"these weights were trained as {trained}, not as {network.name} from {network.path}",
        file=shown,
        hint=f"give the spec the run trained ({spec.get('name')}), or allow_other_network=True "
        "(--allow-other-network) to load them into this network anyway",
    )


class NormalizedInput(nn.Module):
    """A trained model behind its run's input normalisation: it takes pixels in 0..255.

    What ``resdsl build --weights RUN/best.pt --bake-normalization`` exports.
    """

    def __init__(self, model: nn.Module, shift: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("shift", shift.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.shift) * self.scale)


def read_weights(weights: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a .safetensors file or a torch.save file (weights only).

    Whatever the file holds, the result is a dict of str to tensor or a WeightsError
    naming the file: empty, truncated and foreign files, headers that lie about their
    size, and pickles of other objects are all refused. A `resdsl train` checkpoint
    gives its weights (its 'model').
    """
    return read_weights_and_run(weights)[0]


def _read_weights_object(weights: Any) -> tuple[Any, str | None]:
    """What a weights mapping or file holds (read once, tensors and plain containers only), and the
    file's name for messages; a checkpoint's 'state_dict' entry is taken as its state dict."""
    if isinstance(weights, Mapping):
        return weights, None
    path = Path(weights)
    shown = str(path)
    try:
        exists, regular = path.exists(), path.is_file()
    except (OSError, ValueError) as error:  # a name too long, a NUL in the path
        raise WeightsError(f"cannot read weights: {error}", file=shown) from None
    if not exists:
        raise WeightsError(f"no such weights file: {shown}", file=shown)
    if not regular:  # a FIFO would block, /dev/zero would never end
        raise WeightsError("the weights are not a regular file", file=shown)
    if path.stat().st_size == 0:
        raise WeightsError("the weights file is empty", file=shown)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(
                "reading .safetensors needs the safetensors package: pip install safetensors", file=shown
            ) from None
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors' own error: a truncated file, a header too large
            raise WeightsError(f"cannot read weights: {_first_line(error)}", file=shown) from None
        return state, shown
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            "refused to load: the file holds Python objects other than tensors, which could run code "
            f"({_first_line(error)})",
            file=shown,
            hint="save plain state dicts (torch.save(model.state_dict(), path)) or use .safetensors",
        ) from None
    except Exception as error:  # a truncated or foreign file
        raise WeightsError(f"cannot read weights: {type(error).__name__}: {_first_line(error)}", file=shown) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return state, shown


def _first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0][:200] if lines else type(error).__name__


def _tensors_only(state: dict, shown: str | None) -> dict[str, torch.Tensor]:
    """The state dict itself if it maps names to real tensors, else a WeightsError saying which entry is not."""
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsError(f"a state dict's keys are names; found the key {_first_line(repr(key))}", file=shown)
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"'{key[:200]}' holds a {type(value).__name__}, not a tensor", file=shown)
        if value.is_meta:
            raise WeightsError(f"'{key[:200]}' is a meta tensor: it has a shape but no values", file=shown)
    return state


def load_weights(
    model: nn.Module,
    weights: Any,
    *,
    source: str = "weights",
    skip: tuple[str, ...] | list[str] = (),
    file: str | None = None,
) -> None:
    """Load a checkpoint strictly: every key fits, or a WeightsError says which do not.

    ``skip`` names modules (``"fc"``, ``"layer4.2"``) whose weights are left as they
    are (for fine-tuning: a new head); their keys may be missing from the checkpoint,
    of other shapes, or absent from the model. Every other key must fit.
    """
    state = read_weights(weights)
    shown = file or (str(weights) if isinstance(weights, str | Path) else None)
    skipped = (skip,) if isinstance(skip, str) else tuple(skip)
    modules = dict(model.named_modules())
    for name in skipped:
        if name not in modules or not name:
            from resdsl.errors import unknown

            error = unknown("module", name, [n for n in modules if n], None)
            raise WeightsError(f"skip: {error.message}", hint=error.hint)

    def kept(key: str) -> bool:
        return not any(key == name or key.startswith(f"{name}.") for name in skipped)

    expected = {k: v for k, v in model.state_dict().items() if kept(k)}
    state = {k: v for k, v in state.items() if kept(k)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    # Loading would cast silently: complex values lose their imaginary part.
    wrong += [
        f"{k} (checkpoint {state[k].dtype}, model {expected[k].dtype})"
        for k in expected
        if k in state and state[k].is_complex() != expected[k].is_complex()
    ]
    if missing or unexpected or wrong:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong)):
            if keys:
                listed = ", ".join(keys[:5]) + (f", ... ({len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {what}: {listed}")
        raise WeightsError(
            "the weights do not fit the network: " + "; ".join(parts),
            file=shown,
            hint=mismatch_hint(state, missing, unexpected, wrong),
        )
    try:
        model.load_state_dict(state, strict=not skipped)
    except (RuntimeError, TypeError) as error:  # a dtype that cannot become the model's (complex, say)
        raise WeightsError(f"cannot load the weights: {_first_line(error)}", file=shown) from None


def load(
    spec: Any,
    *,
    network: str | None = None,
    weights: Any = None,
    skip: tuple[str, ...] | list[str] = (),
    for_inference: bool = False,
    engine: str = "auto",
    zero_init_residual: bool | None = None,
    checkpoint: str | None = None,
    device: torch.device | str | None = None,
    limits: Any = None,
    input: Any = None,
    allow_other_network: bool = False,
    **params: Any,
) -> nn.Module:
    """Compile `spec` (a path, a shipped name, or a compiled Network) and build it on `device`.

    The arguments are documented on :func:`resdsl.load`.
    """
    if isinstance(spec, Network):
        compiled = spec
    else:
        from resdsl.compiler import compile

        compiled = compile(spec, network=network, limits=limits, input=input, **params)
    # With weights, a strict load sets every tensor, so initialising them first is wasted;
    # skipped modules keep their initialisation.
    model = build(
        compiled,
        checkpoint=checkpoint,
        zero_init_residual=zero_init_residual,
        device=device,
        initialise=weights is None or bool(skip),
    )
    model.network = compiled
    if weights is not None:
        shown = str(weights) if isinstance(weights, str | Path) else None
        state, _ = weights_for(compiled, weights, allow_other_network=allow_other_network, skip=skip, shown=shown)
        load_weights(model, state, skip=skip, file=shown)
    if for_inference:
        from resdsl.backends.inference import prepare

        model = prepare(model, compiled, engine)
    return model
