"""Inference engines side by side: `python bench/inference.py [--quick] [--batch 8]`.

One process, one input, one set of weights (torchvision's resnet50, randomly
initialised). The peers a user would pick for fast CPU inference of torchvision's
model: its eager eval module, ONNX Runtime on its ONNX export, and inductor with
weight freezing on its channels_last module. resdsl's side is
``resdsl.load("torchvision/resnet50", weights=..., for_inference=True, engine=E)``
for each engine. First the peers are timed against torchvision's eager module
(which of them is fastest here), then each resdsl engine against that fastest peer:
the target is a ratio of at most 1.00 for ``engine="auto"``. Compile and export
times are reported separately; they are paid once per process.

Also in `python bench/run.py --only inference`.
"""

from __future__ import annotations

import io
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import resdsl  # noqa: E402
from bench.timing import Paired, paired  # noqa: E402
from resdsl.backends.inference import ONNX_LEGACY_WARNING, ONNX_SLICE_WARNING, installed  # noqa: E402

Model = Callable[[torch.Tensor], torch.Tensor]


def _row(figure: str, result: Paired, target: str = "", reference: str = "") -> dict:
    # Each row as it is measured, on stderr: a long run that is cut short keeps what it had.
    print(
        f"{figure}: {result.ours * 1000:.1f} ms vs {result.reference * 1000:.1f} ms, {result.ratio:.2f}",
        file=sys.stderr,
    )
    return {
        "figure": figure,
        "resdsl": f"{result.ours * 1000:.1f} ms",
        "reference": f"{result.reference * 1000:.1f} ms" + (f" ({reference})" if reference else ""),
        "ratio": result.ratio,
        "target": target,
        "low": result.low,
        "high": result.high,
    }


def _onnxruntime_peer(model: torch.nn.Module, x: torch.Tensor) -> Model:
    """torchvision's model as a user would run it in ONNX Runtime: exported, then a session."""
    import onnxruntime

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ONNX_SLICE_WARNING, category=UserWarning)
        warnings.filterwarnings("ignore", message=ONNX_LEGACY_WARNING, category=DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            buffer,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}},
            dynamo=False,
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    return lambda inputs: torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])


def _inductor_peer(model: torch.nn.Module) -> Model:
    """torchvision's model as the PyTorch docs suggest for CPU inference: channels_last, frozen, compiled."""
    model = model.to(memory_format=torch.channels_last)
    compiled = torch.compile(model, options={"freezing": True})
    return lambda inputs: compiled(inputs.contiguous(memory_format=torch.channels_last))


def _timed_first_call(model: Model, x: torch.Tensor) -> tuple[Model, float]:
    start = time.perf_counter()
    model(x)
    return model, time.perf_counter() - start


def rows(quick: bool = False, batch: int = 8, engines: tuple[str, ...] | None = None) -> list[dict]:
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    rounds = 5 if quick else 15
    reference = torchvision.models.resnet50().eval()
    state = reference.state_dict()
    x = torch.randn(batch, 3, 224, 224)
    shape = f"resnet50, batch {batch}, CPU"
    out: list[dict] = []
    with torch.no_grad():
        peers: dict[str, Model] = {"torchvision eager": reference}
        if installed("onnxruntime"):
            peers["ONNX Runtime"] = _onnxruntime_peer(reference, x)
        # A copy of its own: channels_last conversion and freezing change the module in place.
        copy = torchvision.models.resnet50().eval()
        copy.load_state_dict(state)
        peers["inductor (freezing, channels_last)"], compile_seconds = _timed_first_call(_inductor_peer(copy), x)
        out.append(
            {
                "figure": f"inductor compile, first call ({shape})",
                "resdsl": "",
                "reference": f"{compile_seconds:.0f} s",
            }
        )
        peer_times: dict[str, float] = {}
        for name, peer in peers.items():
            if name == "torchvision eager":
                continue
            result = paired(lambda peer=peer: peer(x), lambda: reference(x), rounds=rounds)
            peer_times[name] = result.ours
            out.append(
                _row(f"peer: {name} vs torchvision eager ({shape})", result)
                | {"resdsl": f"{result.ours * 1000:.1f} ms"}
            )
        fastest = min(peer_times, key=peer_times.get) if peer_times else "torchvision eager"
        fastest_model = peers[fastest]
        for engine in engines or ("auto", "eager", "onnxruntime", "inductor"):
            if engine == "onnxruntime" and not installed("onnxruntime"):
                continue
            start = time.perf_counter()
            ours = resdsl.load("torchvision/resnet50", weights=state, for_inference=True, engine=engine)
            ours(x)
            ready = time.perf_counter() - start
            result = paired(lambda ours=ours: ours(x), lambda: fastest_model(x), rounds=rounds)
            figure = f"for_inference engine={engine!r} ({ours.engine}) vs fastest peer ({shape})"
            row = _row(figure, result, "<=1.00" if engine == "auto" else "", reference=fastest)
            row["unit"] = f"load + first call {ready:.1f} s"
            out.append(row)
            eager = paired(lambda ours=ours: ours(x), lambda: reference(x), rounds=max(3, rounds // 2))
            out.append(_row(f"for_inference engine={engine!r} vs torchvision eager ({shape})", eager))
    return out


if __name__ == "__main__":
    import argparse

    from bench.report import Row, print_report

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    print_report([Row(**row) for row in rows(args.quick, args.batch)])
