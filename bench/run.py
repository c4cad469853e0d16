"""Measure resdsl against its peers: `python bench/run.py [--json] [--quick] [--only GROUP ...]`.

Every comparison runs side by side in one process (or, for whole-process and
peak-memory figures, in fresh child processes launched alternately), in paired
rounds of alternating order (bench/timing.py): the ratio is the median of the
per-round ratios, with its 95% interval in brackets. Prints the machine, then one
table: figure, resdsl, reference, ratio, target, verdict. A verdict is "ok" or
"MISSED" only where the whole interval is on one side of the target, and "within
noise" where the interval holds the target. Not a test: nothing here asserts.

Groups:
  frontend  `resdsl check` as a process against `import torch`; compile time per
            layer over the CIFAR family (n = 3 .. 2000); `resdsl draw` of resnet152
  runtime   eager forward / forward+backward / for_inference / load time against
            torchvision (bench/torch_runtime.py)
  memory    peak memory of a training step against torchvision, and of deep CIFAR
            networks with and without activation checkpointing (child processes)
  scale     the largest CIFAR ResNet that trains one step in 80% of the free memory,
            with and without checkpointing (bench/scale.py; the longest group)
  inference for_inference with each engine (eager, onnxruntime, inductor, auto) beside
            torchvision eager, ONNX Runtime and inductor, resnet50 batch 8 (bench/inference.py)
  gpu       bench/gpu.py: `resdsl train` for ResNet-20/56/110 under the paper's recipe
            on a GPU, fp32 eager and then each speed option added, against
            hand-written code; the 64k-iteration schedule's projected time; resnet50
            training and inference against torchvision; says so when there is no GPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Row, machine, table  # noqa: E402
from bench.timing import paired  # noqa: E402


def _process(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)

    return run


def frontend_depths(quick: bool) -> tuple[int, ...]:
    """The CIFAR family's n the frontend group compiles (6n + 2 layers each)."""
    return (3, 18, 200, 1000) + (() if quick else (2000,))


def compile_cifar(n: int):
    """The CIFAR ResNet of depth 6n + 2, with the layer bound raised to fit it: the
    default Limits stop at 20,000 nodes (BN, ReLU and the additions included), which
    n = 1000 passes."""
    import resdsl

    limits = resdsl.Limits(max_layers=max(resdsl.Limits().max_layers, 12 * (6 * n + 2)))
    return resdsl.compile(ROOT / "specs/lib/cifar.res", network="cifar_resnet", n=n, limits=limits)


def bench_frontend(quick: bool) -> list[Row]:
    rows = []
    repeats = 3 if quick else 7
    check = [sys.executable, "-m", "resdsl", "check", "specs/resnet152.res"]
    torch_import = [sys.executable, "-c", "import torch"]
    result = paired(_process(check), _process(torch_import), rounds=repeats)
    rows.append(
        Row(
            "`resdsl check resnet152` process vs `import torch` process",
            f"{result.ours * 1000:.0f} ms",
            f"{result.reference * 1000:.0f} ms",
            result.ratio,
            "<=0.10",
            low=result.low,
            high=result.high,
        )
    )

    import resdsl

    per_layer: dict[int, float] = {}
    for n in frontend_depths(quick):
        layers = 6 * n + 2
        samples = []
        for _ in range(2 if n >= 1000 else 5):
            start = time.perf_counter()
            compile_cifar(n)
            samples.append(time.perf_counter() - start)
        seconds = statistics.median(samples)
        per_layer[n] = seconds / layers
        rows.append(
            Row(
                f"compile cifar n={n} ({layers:,} layers)",
                f"{seconds * 1000:.1f} ms",
                unit=f"{per_layer[n] * 1e6:.1f} us/layer",
            )
        )
    # The figure is deepest against shallowest; a small network's fixed costs
    # (parsing the prelude) flatter that ratio, so the cheapest depth is shown too.
    deepest, shallowest = max(per_layer), min(per_layer)
    others = {shallowest: "the shallowest"}
    others.setdefault(min(per_layer, key=per_layer.get), "the cheapest")
    for other, label in others.items():
        if other == deepest:
            continue
        rows.append(
            Row(
                f"compile time per layer, n={deepest} vs {label} (n={other})",
                f"{per_layer[deepest] * 1e6:.1f} us",
                f"{per_layer[other] * 1e6:.1f} us",
                per_layer[deepest] / per_layer[other],
                "<=1.50",
            )
        )
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        resdsl.compile("cifar1202")
        samples.append(time.perf_counter() - start)
    rows.append(Row("compile cifar1202", f"{statistics.median(samples) * 1000:.0f} ms", target="well under 1 s"))
    rows.extend(_bench_draw(repeats))
    return rows


def _bench_draw(repeats: int) -> list[Row]:
    if shutil.which("dot") is None:
        return [Row("`resdsl draw resnet152` (layer detail, SVG)", "not measured: Graphviz's dot is not installed")]
    with tempfile.TemporaryDirectory() as tmp:
        svg = [sys.executable, "-m", "resdsl", "draw", "specs/resnet152.res", "-o", f"{tmp}/r.svg", "--detail", "layer"]
        dot_source = [*svg[:-3], f"{tmp}/r.dot", "--detail", "layer"]
        try:
            result = paired(_process(svg), _process(dot_source), rounds=repeats)
        except subprocess.CalledProcessError:
            return [Row("`resdsl draw resnet152` (layer detail, SVG)", "failed: see `resdsl draw --help`")]
    # Writing .dot runs everything but Graphviz, so the difference is dot's own time.
    share = max(0.0, 1 - 1 / result.ratio)
    return [
        Row(
            "`resdsl draw resnet152 -o x.svg --detail layer` process",
            f"{result.ours * 1000:.0f} ms",
            target="a few seconds",
            unit=f"dot's share {share:.0%}",
        )
    ]


def bench_runtime(quick: bool) -> list[Row]:
    from bench import torch_runtime

    return [Row(**row) for row in torch_runtime.rows(quick=quick)]


def bench_memory(quick: bool) -> list[Row]:
    from bench import memory

    return [Row(**row) for row in memory.rows(quick=quick)]


def bench_scale(quick: bool) -> list[Row]:
    from bench import scale

    return [Row(**row) for row in scale.rows(quick=quick)]


def bench_gpu(quick: bool) -> list[Row]:
    import torch

    from bench import gpu

    if not torch.cuda.is_available():
        return [
            Row(
                "bench/gpu.py: `resdsl train` and resnet50 on a GPU",
                "not measured: no GPU here (torch.cuda.is_available() is False); "
                "`python bench/gpu.py --tiny` runs its code on the CPU at a tiny size",
            )
        ]
    return gpu.rows(gpu.plan_for(tiny=False))


def bench_inference(quick: bool) -> list[Row]:
    from bench import inference

    return [Row(**row) for row in inference.rows(quick=quick)]


def bench_train(quick: bool) -> list[Row]:
    """`resdsl train`'s loop against the bare training step (bench/train.py), and peak memory."""
    import tempfile
    from pathlib import Path

    from bench import train

    rounds, steps, images = (4, 4, 10_000) if quick else (8, 10, 50_000)
    with tempfile.TemporaryDirectory() as folder:
        data = train.write_cifar_sized(Path(folder), images, 2000)
        speed = train.throughput("cifar20", data, rounds, steps, [])
        memory = train.peaks("cifar20", data, 5)
    loop_mb, bare_mb = (memory[kind]["peak_bytes"] / 2**20 for kind in ("loop", "bare"))
    data_mb = memory["loop"]["dataset_bytes"] / 2**20
    return [
        Row(
            "train loop images/s vs bare step (cifar20)",
            f"{speed['loop_images_per_s']:.0f}",
            f"{speed['bare_images_per_s']:.0f}",
            speed["ratio"],
            ">=0.97",
            "img/s",
            speed["ratio_low"],
            speed["ratio_high"],
        ),
        Row(
            "train loop peak memory vs data + bare step",
            f"{loop_mb:.0f}",
            f"{bare_mb + data_mb:.0f}",
            loop_mb / (bare_mb + data_mb),
            "<=1.00",
            "MiB",
        ),
    ]


GROUPS = {
    "frontend": bench_frontend,
    "runtime": bench_runtime,
    "memory": bench_memory,
    "scale": bench_scale,
    "gpu": bench_gpu,
    "inference": bench_inference,
    "train": bench_train,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes")
    parser.add_argument("--only", nargs="+", choices=sorted(GROUPS), help="run only these groups")
    args = parser.parse_args()
    info = machine()
    rows: list[Row] = []
    for name in args.only or GROUPS:
        rows.extend(GROUPS[name](args.quick))
    if args.json:
        print(json.dumps({"machine": info, "rows": [asdict(r) | {"verdict": r.verdict} for r in rows]}, indent=2))
        return 0
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
