"""Measure resdsl against its peers: `python bench/run.py [--json] [--quick] [--only GROUP ...]`.

Every comparison runs side by side in one process (or, for whole-process and
peak-memory figures, in fresh child processes launched alternately), interleaved,
and reports the median of several runs. Prints the machine, then one table:
figure, resdsl, reference, ratio, target. Not a test: nothing here asserts.

Groups:
  frontend  `resdsl check` as a process against `import torch`; compile time per
            layer over the CIFAR family (n = 3 .. 2000); `resdsl draw` of resnet152
  runtime   eager forward / forward+backward / for_inference / load time against
            torchvision (bench/torch_runtime.py)
  memory    peak memory of a training step against torchvision, and of deep CIFAR
            networks with and without activation checkpointing (child processes)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Row:
    figure: str
    resdsl: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    unit: str = ""

    @property
    def verdict(self) -> str:
        if self.ratio is None or not self.target.startswith("<="):
            return ""
        return "ok" if self.ratio <= float(self.target[2:]) else "MISSED"


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch"] = "not installed"
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run_process(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def _interleaved(commands: list[list[str]], repeats: int) -> list[float]:
    """Median wall time of each command, run alternately so that load affects all alike."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(repeats):
        for index, argv in enumerate(commands):
            times[index].append(_run_process(argv))
    return [statistics.median(t) for t in times]


def bench_frontend(quick: bool) -> list[Row]:
    rows = []
    repeats = 3 if quick else 7
    check = [sys.executable, "-m", "resdsl", "check", "specs/resnet152.res"]
    torch_import = [sys.executable, "-c", "import torch"]
    check_s, torch_s = _interleaved([check, torch_import], repeats)
    rows.append(
        Row(
            "`resdsl check resnet152` process vs `import torch` process",
            f"{check_s * 1000:.0f} ms",
            f"{torch_s * 1000:.0f} ms",
            check_s / torch_s,
            "<=0.25",
        )
    )

    import resdsl

    per_layer: dict[int, float] = {}
    for n in (3, 18, 200, 1000) + (() if quick else (2000,)):
        layers = 6 * n + 2
        samples = []
        for _ in range(2 if n >= 1000 else 5):
            start = time.perf_counter()
            resdsl.compile(ROOT / "specs/lib/cifar.res", network="cifar_resnet", n=n)
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
    # Against the cheapest depth, not the shallowest: a small network's fixed costs
    # (imports aside, parsing the prelude) would flatter the ratio.
    deepest = max(per_layer)
    best = min(per_layer, key=per_layer.get)
    rows.append(
        Row(
            f"compile time per layer, n={deepest} vs the cheapest (n={best})",
            f"{per_layer[deepest] * 1e6:.1f} us",
            f"{per_layer[best] * 1e6:.1f} us",
            per_layer[deepest] / per_layer[best],
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
            svg_s, dot_s = _interleaved([svg, dot_source], repeats)
        except subprocess.CalledProcessError:
            return [Row("`resdsl draw resnet152` (layer detail, SVG)", "failed: see `resdsl draw --help`")]
    share = max(0.0, svg_s - dot_s) / svg_s
    return [
        Row(
            "`resdsl draw resnet152 -o x.svg --detail layer` process",
            f"{svg_s * 1000:.0f} ms",
            target="a few seconds",
            unit=f"dot's share {share:.0%}",
        )
    ]


def bench_runtime(quick: bool) -> list[Row]:
    try:
        from bench import torch_runtime
    except ImportError as error:
        return [Row("runtime against torchvision", f"not measured: {error}")]
    measure: Callable | None = getattr(torch_runtime, "rows", None)
    if measure is None:
        return [Row("runtime against torchvision", "see `python bench/torch_runtime.py`")]
    return [Row(**row) for row in measure(quick=quick)]


def bench_memory(quick: bool) -> list[Row]:
    from bench import memory

    return [Row(**row) for row in memory.rows(quick=quick)]


GROUPS = {"frontend": bench_frontend, "runtime": bench_runtime, "memory": bench_memory}


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


def table(rows: list[Row]) -> str:
    header = ("figure", "resdsl", "reference", "ratio", "target", "")
    cells = [header] + [
        (
            r.figure,
            r.resdsl + (f" ({r.unit})" if r.unit else ""),
            r.reference,
            f"{r.ratio:.2f}" if r.ratio is not None else "",
            r.target,
            r.verdict,
        )
        for r in rows
    ]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
