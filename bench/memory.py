"""Peak memory of one training step, measured in fresh child processes.

Each configuration runs in its own process, which builds the model, allocates the
batch, records its resident set size (RSS), runs one forward+backward+SGD step and
reports how far the peak RSS rose above that baseline: the memory the step itself
needs (activations, gradients, optimizer state), free of the torch library's own
footprint. Configurations are launched alternately and the median is reported.
bench/scale.py runs the same child under a memory budget to find the largest
network that trains.

  python bench/memory.py            # the table alone
  python bench/run.py --only memory # the same rows inside the full table
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# glibc raises its mmap threshold as large blocks are freed, after which freed
# activations may stay in the heap: the peak RSS then depends on allocation
# history (resnet50 steps measured 1603-1910 MB run to run). A fixed threshold
# maps every tensor of 128 KiB or more on its own and returns it on free, so the
# peak tracks live tensors (1369-1370 MB over the same runs).
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}

CHILD = r"""
import json, resource, sys, time
import torch
sys.path.insert(0, {root!r})
torch.manual_seed(0)
if {threads}:
    torch.set_num_threads({threads})

def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def reset_peak():
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a
    # child of a parent holding gigabytes would report the parent's peak.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)
    except OSError:
        pass

kind, spec, batch, size, checkpoint, budget = {args!r}
import resdsl, torchvision  # imported before the budget applies: it bounds the model and the step
if budget:
    # A hard ceiling instead of the kernel's OOM killer: past it, allocation fails
    # with an error this process reports. RLIMIT_DATA counts private writable
    # memory, which is what tensors and Python objects take.
    headroom = budget - status_kb("VmRSS")
    if headroom <= 0:
        print(json.dumps(dict(ok=False, error="the budget is below the footprint of torch itself", peak_mb=0)))
        sys.exit(0)
    ceiling = status_kb("VmData") + headroom
    resource.setrlimit(resource.RLIMIT_DATA, (ceiling, ceiling))
start = time.perf_counter()
try:
    if kind == "torchvision":
        model = getattr(torchvision.models, spec)()
    else:
        params = dict(network="cifar_resnet", n=int(spec)) if kind == "cifar" else dict()
        path = "specs/lib/cifar.res" if kind == "cifar" else spec
        # The question is the machine's limit, not the compiler's default bound
        # (100,000 layers), which per-block checkpointing reaches first.
        limits = resdsl.Limits(max_layers=10**7)
        model = resdsl.load(path, checkpoint=checkpoint, limits=limits, **params)
    model.train()
    built = time.perf_counter()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    baseline = status_kb("VmRSS")
    reset_peak()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
except (MemoryError, RuntimeError) as error:
    if not isinstance(error, MemoryError) and "allocate" not in str(error):
        raise
    peak = status_kb("VmHWM")
    reason = str(error).splitlines()[0].split("DefaultCPUAllocator: ")[-1][:160]
    print(json.dumps(dict(ok=False, error=reason, peak_mb=peak / 2**20)))
    sys.exit(0)
stepped = time.perf_counter()
peak = status_kb("VmHWM")
print(json.dumps(dict(
    ok=True,
    step_mb=(peak - baseline) / 2**20,
    peak_mb=peak / 2**20,  # the process's peak from the step's start (imports and build before it are lower)
    build_s=built - start,
    step_s=stepped - built,
    params=sum(p.numel() for p in model.parameters()),
)))
"""


def measure(
    kind: str,
    spec: str,
    batch: int,
    size: int,
    checkpoint: str | None,
    *,
    budget_mb: float | None = None,
    threads: int = 1,
) -> dict:
    """One training step in a fresh process: its memory (MB), build and step time, params.

    With `budget_mb` the process may not grow past that much memory in all; a
    network that needs more comes back as ``ok=False`` with the allocation error.
    `threads` 0 leaves torch's default (all cores).
    """
    budget = int(budget_mb * 2**20) if budget_mb else 0
    code = CHILD.format(root=str(ROOT), threads=threads, args=(kind, spec, batch, size, checkpoint, budget))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=CHILD_ENV)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "child failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median_step(configs: list[tuple], repeats: int) -> list[float]:
    samples: list[list[float]] = [[] for _ in configs]
    for _ in range(repeats):
        for index, config in enumerate(configs):
            samples[index].append(measure(*config)["step_mb"])
    return [statistics.median(s) for s in samples]


def rows(quick: bool = False) -> list[dict]:
    out = []
    repeats = 1 if quick else 3
    batch = 8 if quick else 16
    try:
        ours, theirs = _median_step(
            [
                ("resdsl", "specs/torchvision/resnet50.res", batch, 224, None),
                ("torchvision", "resnet50", batch, 224, None),
            ],
            repeats,
        )
        out.append(
            dict(
                figure=f"peak memory of a resnet50 training step (batch {batch}, 224x224)",
                resdsl=f"{ours:.0f} MB",
                reference=f"{theirs:.0f} MB",
                ratio=ours / theirs,
                target="<=1.00",
            )
        )
    except RuntimeError as error:
        out.append(dict(figure="peak memory of a resnet50 training step", resdsl=f"not measured: {error}"))
    for n in (18, 200) + (() if quick else (1000,)):
        try:
            plain, per_block = _median_step(
                [("cifar", str(n), 32, 32, "none"), ("cifar", str(n), 32, 32, "block")], 1 if n >= 200 else repeats
            )
            per_stage = _median_step([("cifar", str(n), 32, 32, "stage")], 1)[0]
        except RuntimeError as error:
            out.append(dict(figure=f"cifar n={n} step memory", resdsl=f"not measured: {error}"))
            continue
        out.append(
            dict(
                figure=f"cifar n={n} ({6 * n + 2} layers) step memory, batch 32: checkpoint block / none",
                resdsl=f"{per_block:.0f} MB",
                reference=f"{plain:.0f} MB",
                ratio=per_block / plain,
                unit=f"per stage {per_stage:.0f} MB",
            )
        )
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.report import Row, print_report

    print_report([Row(**row) for row in rows(quick="--quick" in sys.argv)])
