"""Runtime of resdsl's torch models against torchvision's, side by side in one process.

  python bench/torch_runtime.py [--quick] [--device cpu|cuda] [--variants]

Each pair of models shares its weights; every figure comes from
:func:`bench.timing.paired` (alternating rounds, median of per-round ratios, 95%
interval). Targets from the torch backend issue: eager forward and
forward+backward ratio <= 1.00, for_inference against torchvision's eager eval
model <= 0.85, resdsl.load of resnet152 against torchvision.models.resnet152()
<= 1.10 (and likewise loading a checkpoint), and training throughput at least
torchvision's.

On a GPU the table adds the settings people train with (``--variants`` adds them
on the CPU too): channels_last, autocast bf16, torch.compile, training
throughput under them, and the peak GPU memory of a training step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import resdsl  # noqa: E402
from bench.timing import Paired, paired  # noqa: E402


@dataclass(frozen=True)
class Setup:
    device: str = "cpu"
    model: str = "resnet50"  # torchvision's name; resdsl builds specs/torchvision/<model>.res
    batch: int = 8
    size: int = 224
    rounds: int = 21
    variants: bool = False  # channels_last, autocast bf16, torch.compile, throughput under them
    compile_backend: str = "inductor"
    compile_training: bool = True  # also compile the training step (minutes of compilation)
    load_time: bool = True  # resdsl.load('resnet152') against torchvision's constructor


def setup_for(device: str, quick: bool) -> Setup:
    if device == "cuda":
        return Setup("cuda", batch=128, rounds=7 if quick else 21, variants=True, compile_training=not quick)
    if quick:
        return Setup("cpu", batch=4, size=160, rounds=5)
    return Setup("cpu")


def _row(figure: str, result: Paired, target: str, unit: str = "") -> dict:
    return dict(
        figure=figure,
        resdsl=f"{result.ours * 1000:.1f} ms",
        reference=f"{result.reference * 1000:.1f} ms",
        ratio=result.ratio,
        low=result.low,
        high=result.high,
        target=target,
        unit=unit,
    )


def _throughput_row(figure: str, result: Paired, batch: int) -> dict:
    """Images per second; the ratio is ours over torchvision's, so higher is better."""
    return dict(
        figure=figure,
        resdsl=f"{batch / result.ours:.1f} img/s",
        reference=f"{batch / result.reference:.1f} img/s",
        ratio=1 / result.ratio,
        low=1 / result.high,
        high=1 / result.low,
        target=">=1.00",
    )


def _pair(setup: Setup) -> tuple[torch.nn.Module, torch.nn.Module]:
    """torchvision's model and resdsl's, with the same weights, on the device."""
    reference = getattr(torchvision.models, setup.model)()
    ours = resdsl.load(f"torchvision/{setup.model}", weights=reference.state_dict())
    return ours.to(setup.device), reference.to(setup.device)


def _train_step(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: bool, forward: Callable | None = None
) -> Callable[[], None]:
    """One SGD step (forward, loss, backward, update), as a training loop runs it.

    `forward` replaces the model's own call (a torch.compile wrapper of it).
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    forward = forward if forward is not None else model

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(x, autocast):
            loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()

    return run


def _forward_backward(model: torch.nn.Module, x: torch.Tensor, autocast: bool = False) -> Callable[[], None]:
    def run() -> None:
        model.zero_grad(set_to_none=True)
        with _autocast(x, autocast):
            out = model(x)
        out.float().sum().backward()

    return run


def _autocast(x: torch.Tensor, enabled: bool):
    return torch.autocast(x.device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def rows(quick: bool = False, device: str = "cpu", setup: Setup | None = None) -> list[dict]:
    setup = setup or setup_for(device, quick)
    torch.manual_seed(0)
    if setup.device == "cpu":
        torch.set_flush_denormal(True)  # slowly drifting weights must not fall into slow denormal arithmetic
    else:
        torch.backends.cudnn.benchmark = True  # fixed input sizes, as in a training run; both sides alike
    sync = torch.cuda.synchronize if setup.device == "cuda" else None
    ours, reference = _pair(setup)
    x = torch.randn(setup.batch, 3, setup.size, setup.size, device=setup.device)
    y = torch.randint(0, 1000, (setup.batch,), device=setup.device)
    shape = f"batch {setup.batch}, {setup.size}x{setup.size}"
    name = setup.model
    out = []

    def compare(a: Callable[[], object], b: Callable[[], object], rounds: int | None = None) -> Paired:
        return paired(a, b, rounds=rounds or setup.rounds, sync=sync)

    ours.eval(), reference.eval()
    with torch.no_grad():
        out.append(
            _row(f"{name} eager forward, eval ({shape})", compare(lambda: ours(x), lambda: reference(x)), "<=1.00")
        )

    ours.train(), reference.train()

    train_rounds = max(3, setup.rounds // 2)
    result = compare(_forward_backward(ours, x), _forward_backward(reference, x), train_rounds)
    out.append(_row(f"{name} eager forward+backward ({shape})", result, "<=1.00"))
    result = compare(_train_step(ours, x, y, False), _train_step(reference, x, y, False), train_rounds)
    out.append(_throughput_row(f"{name} training throughput, SGD step, fp32 ({shape})", result, setup.batch))

    reference.eval()
    # engine="eager": this row is the folded module's own speed; bench/inference.py compares the engines.
    fast = resdsl.load(
        f"torchvision/{name}", weights=reference.state_dict(), for_inference=True, engine="eager", device=setup.device
    )
    with torch.no_grad():
        result = compare(lambda: fast(x), lambda: reference(x))
    out.append(_row(f"{name} for_inference, engine='eager', vs torchvision eager eval ({shape})", result, "<=0.85"))

    if setup.variants:
        out.extend(_variant_rows(setup, x, y, compare, train_rounds))
    if setup.device == "cuda":
        out.append(_cuda_memory_row(setup, x, y))
    if setup.load_time:
        out.extend(_load_rows(3 if quick else 9))
    return out


def _load_rows(rounds: int) -> list[dict]:
    """Building a model, and building it from a checkpoint, against torchvision's constructor."""
    result = paired(lambda: resdsl.load("resnet152"), lambda: torchvision.models.resnet152(), rounds=rounds)
    out = [_row("resdsl.load('resnet152') vs torchvision.models.resnet152()", result, "<=1.10")]
    state = torchvision.models.resnet50().state_dict()

    def reference() -> None:
        torchvision.models.resnet50().load_state_dict(state)

    result = paired(lambda: resdsl.load("torchvision/resnet50", weights=state), reference, rounds=rounds)
    out.append(_row("resdsl.load(resnet50, weights=) vs resnet50() + load_state_dict", result, "<=1.10"))
    return out


def _variant_rows(setup: Setup, x: torch.Tensor, y: torch.Tensor, compare: Callable, train_rounds: int) -> list[dict]:
    """channels_last, autocast bf16 and torch.compile: the settings a GPU training run uses."""
    out = []
    shape = f"batch {setup.batch}, {setup.size}x{setup.size}"
    ours, reference = (m.to(memory_format=torch.channels_last).train() for m in _pair(setup))
    x_last = x.contiguous(memory_format=torch.channels_last)

    result = compare(_forward_backward(ours, x_last), _forward_backward(reference, x_last), train_rounds)
    out.append(_row(f"{setup.model} forward+backward, channels_last ({shape})", result, "<=1.00"))
    result = compare(_forward_backward(ours, x_last, True), _forward_backward(reference, x_last, True), train_rounds)
    out.append(_row(f"{setup.model} forward+backward, channels_last + autocast bf16 ({shape})", result, "<=1.00"))
    result = compare(_train_step(ours, x_last, y, True), _train_step(reference, x_last, y, True), train_rounds)
    out.append(
        _throughput_row(
            f"{setup.model} training throughput, channels_last + autocast bf16 ({shape})", result, setup.batch
        )
    )

    # torch.compile: each model compiled with the same backend; compilation itself timed once.
    ours.eval(), reference.eval()
    compiled_ours = torch.compile(ours, backend=setup.compile_backend)
    compiled_reference = torch.compile(reference, backend=setup.compile_backend)
    with torch.no_grad():
        first_ours, first_reference = _first_call(compiled_ours, x_last), _first_call(compiled_reference, x_last)
        result = compare(lambda: compiled_ours(x_last), lambda: compiled_reference(x_last))
    out.append(
        _row(
            f"{setup.model} torch.compile ({setup.compile_backend}) forward, eval, channels_last ({shape})",
            result,
            "<=1.00",
            unit=f"compile {first_ours:.0f} s vs {first_reference:.0f} s",
        )
    )
    if setup.compile_training:
        ours.train(), reference.train()
        step_ours = _train_step(ours, x_last, y, True, torch.compile(ours, backend=setup.compile_backend))
        step_reference = _train_step(
            reference, x_last, y, True, torch.compile(reference, backend=setup.compile_backend)
        )
        result = compare(step_ours, step_reference, train_rounds)
        out.append(
            _throughput_row(
                f"{setup.model} training throughput, torch.compile + channels_last + autocast bf16 ({shape})",
                result,
                setup.batch,
            )
        )
    return out


def _first_call(model: Callable, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _cuda_memory_row(setup: Setup, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Peak GPU memory of one fp32 training step above the model's own, each model alone on the device."""
    peaks = []
    for which in (0, 1):
        model = _pair(setup)[which].train()
        step = _train_step(model, x, y, False)
        step()  # optimizer state exists from here on, as in a training loop
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peaks.append((torch.cuda.max_memory_allocated() - before) / 2**20)
        del model, step
        torch.cuda.empty_cache()
    return dict(
        figure=f"{setup.model} peak GPU memory of a training step (batch {setup.batch}, {setup.size}x{setup.size})",
        resdsl=f"{peaks[0]:.0f} MB",
        reference=f"{peaks[1]:.0f} MB",
        ratio=peaks[0] / peaks[1],
        target="<=1.00",
    )


def gpu_rows(quick: bool = False) -> list[dict]:
    """The runtime table on the GPU, or one row that says plainly that none was measured."""
    if not torch.cuda.is_available():
        return [
            dict(
                figure="runtime table on a GPU (channels_last, autocast bf16, torch.compile, throughput)",
                resdsl="not measured: no GPU here (torch.cuda.is_available() is False)",
            )
        ]
    setup = replace(setup_for("cuda", quick), load_time=False)
    device = torch.cuda.get_device_name(0)
    return [dict(row, figure=f"[{device}] {row['figure']}") for row in rows(quick, "cuda", setup)]


if __name__ == "__main__":
    import argparse

    from bench.report import Row, print_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--variants", action="store_true", help="channels_last, bf16 and torch.compile rows on the CPU")
    args = parser.parse_args()
    chosen = setup_for(args.device, args.quick)
    if args.variants:
        chosen = replace(chosen, variants=True)
    print_report([Row(**row) for row in rows(args.quick, args.device, chosen)])
