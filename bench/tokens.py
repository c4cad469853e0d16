"""Token networks on the CPU, side by side with timm: `python bench/tokens.py [--quick] [--json]`.

For the shipped ``vit_tiny_patch16_224`` (and ``swin_tiny_patch4_window7_224`` where it
ships), with timm's randomised weights loaded into resdsl's module:

1. the eval forward, resdsl's generated module against timm's own (both use
   ``scaled_dot_product_attention``), no_grad, float32;
2. a training step (forward, cross-entropy, backward, SGD) against timm's, the same batch;
3. ``for_inference`` (engine ``"onnxruntime"``: BN and paths folded, exported and run by
   ONNX Runtime) against ONNX Runtime on timm's own export, the peer a user deploying
   timm's model on a CPU would pick.

Paired rounds (bench/timing.py); the ratio is resdsl's time over timm's, target at most
1.00. ``--quick`` is the test's mode: 64x64 inputs, one round. Not a test: nothing here
asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Row, machine, print_report  # noqa: E402
from bench.timing import paired  # noqa: E402

NETWORKS = ("vit_tiny_patch16_224", "swin_tiny_patch4_window7_224")
#: Swin's windows of 7 need every stage's size to divide by 7: 224 is the smallest input.
SIZES = {"swin_tiny_patch4_window7_224": 224}


def _pair(name: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    import timm

    import resdsl

    theirs = timm.create_model(name, pretrained=False, img_size=size)
    ours = resdsl.load(f"timm/{name}", weights=theirs.state_dict(), input=f"3x{size}x{size}")
    return ours, theirs


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def rows(quick: bool = False, batch: int = 8) -> list[Row]:
    import resdsl

    torch.manual_seed(0)
    rounds = 1 if quick else 10
    shipped = set(resdsl.shipped_specs())
    out: list[Row] = []
    for name in NETWORKS:
        size = SIZES.get(name, 64 if quick else 224)
        if quick and name in SIZES:
            continue  # --quick keeps to the small inputs
        shape = f"batch {batch}, {size}x{size}, fp32, {torch.get_num_threads()} threads"
        if f"timm/{name}" not in shipped:
            out.append(Row(f"{name} ({shape})", "not measured: no shipped spec of that name"))
            continue
        ours, theirs = _pair(name, size)
        x = torch.randn(batch, 3, size, size)
        y = torch.randint(0, 1000, (batch,))
        ours.eval(), theirs.eval()
        with torch.no_grad():
            result = paired(lambda ours=ours, x=x: ours(x), lambda theirs=theirs, x=x: theirs(x), rounds=rounds * 2)
        out.append(_row(f"{name} eval forward vs timm ({shape})", result, "ms"))
        ours.train(), theirs.train()
        result = paired(_step(ours, x, y), _step(theirs, x, y), rounds=rounds)
        out.append(_row(f"{name} training step vs timm ({shape})", result, "ms"))
        out.extend(_onnx_rows(name, ours, theirs, x, size, shape, rounds))
    return out


def _onnx_rows(name, ours, theirs, x, size, shape, rounds) -> list[Row]:
    try:
        import onnxruntime
    except ImportError:
        return [Row(f"{name} for_inference vs ONNX Runtime on timm's export", "not measured: onnxruntime missing")]
    import resdsl
    from resdsl.backends.inference import _session_options, export_onnx

    theirs.eval()
    folded = resdsl.load(
        f"timm/{name}", weights=ours.state_dict(), input=f"3x{size}x{size}", for_inference=True, engine="onnxruntime"
    )
    session = onnxruntime.InferenceSession(
        export_onnx(theirs, (3, size, size)), _session_options(onnxruntime), providers=["CPUExecutionProvider"]
    )
    array = x.numpy()
    with torch.no_grad():
        result = paired(lambda: folded(x), lambda: session.run(None, {"input": array}), rounds=rounds * 2)
    return [_row(f"{name} for_inference (onnxruntime) vs ONNX Runtime on timm's export ({shape})", result, "ms")]


def _row(figure: str, result, unit: str) -> Row:
    return Row(
        figure,
        f"{result.ours * 1000:.2f} {unit}",
        f"{result.reference * 1000:.2f} {unit}",
        result.ratio,
        "<=1.00",
        "time ratio",
        result.low,
        result.high,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64 inputs, one round (the test's mode)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    found = rows(quick=args.quick)
    if args.json:
        print(json.dumps({"machine": machine(), "rows": [asdict(row) for row in found]}, indent=2))
    else:
        print_report(found)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
