"""What `resdsl train` costs beyond the training step: `python bench/train.py [--spec cifar20] [--quick]`.

Throughput: images per second of `resdsl train`'s loop (resdsl.train.loop.Trainer,
reading CIFAR-format files, gathering, padding, cropping, flipping and normalising
each batch on the device, setting the learning rate, summing the metrics) against the
bare training step of the same model on one ready batch (forward, loss, backward,
SGD step), side by side in one process, in alternating rounds. The ratio is the
median of the rounds' ratios, with their range. Target: the loop at least 0.97 of
the bare step (the data pipeline and bookkeeping cost at most 3%).

Memory: the peak of each in a fresh child process (VmHWM on the CPU, the CUDA
allocator's peak on a GPU), against the data set's size. Target: the loop's peak at
most the data set plus the bare step's.

On a GPU it also prints ResNet-20's and ResNet-110's images per second under the
paper's recipe with bf16 autocast and channels_last, and the projected time of the
64k-iteration schedule. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # cifar_fixtures writes the published CIFAR layout


def write_cifar_sized(root: Path, train: int, test: int) -> Path:
    import numpy as np
    from cifar_fixtures import write_cifar

    rng = np.random.default_rng(0)

    def images(count: int):
        return rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, size=count)

    return write_cifar(root, "cifar10", images(train), images(test), [f"c{i}" for i in range(10)])


def make_trainer(spec: str, data: Path, out: Path, sets: list[str]):
    import torch

    from resdsl.train.loop import RunOptions, Trainer, start_processes
    from resdsl.train.recipes import load_recipe

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # The bare step's settings unless `sets` says otherwise: fp32, NCHW, torch's default SGD kernels
    # (foreach on a GPU, a loop on the CPU), no graph; the recipe's 'auto' would choose others on a GPU.
    same_as_bare = ["amp=none", "channels_last=false", "cuda_graph=false"]
    same_as_bare.append(f"optimizer_kernels={'foreach' if device == 'cuda' else 'for_loop'}")
    recipe = load_recipe(
        "cifar10-paper",
        ["holdout=0", "eval_every=0", "checkpoint_every=0", "log_every_seconds=0", f"device={device}", *same_as_bare,
         *sets],
    )  # fmt: skip
    trainer = Trainer(RunOptions(spec=spec, data=str(data), recipe=recipe, out=out), start_processes(device))
    trainer.setup()
    return trainer


def make_bare(spec: str, sets: list[str]):
    """The same model and optimiser, stepping on one ready batch: the peer a user would write."""
    import torch

    import resdsl

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    channels_last = "channels_last=true" in sets
    amp = next((s.split("=")[1] for s in sets if s.startswith("amp=")), "none")
    torch.manual_seed(0)
    model = resdsl.load(spec, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    inputs = torch.randn(128, 3, 32, 32, device=device)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (128,), device=device)
    criterion = torch.nn.CrossEntropyLoss()

    def steps(count: int) -> None:
        for _ in range(count):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
                loss = criterion(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return steps


def synchronise() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def throughput(spec: str, data: Path, rounds: int, steps: int, sets: list[str]) -> dict:
    """Paired rounds in alternating order: images/s of each and the per-round ratio loop/bare."""
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(spec, data, Path(out), sets)
        bare = make_bare(spec, sets)
        position = 0

        def loop(count: int) -> None:
            nonlocal position
            trainer.train_steps(position, position + count)
            position += count

        loop(2)  # warm-up: allocator, kernels selection
        bare(2)
        synchronise()
        loop_rates, bare_rates, ratios = [], [], []
        for index in range(rounds):
            timed = {}
            for name, run in (("loop", loop), ("bare", bare)) if index % 2 == 0 else (("bare", bare), ("loop", loop)):
                synchronise()
                start = time.perf_counter()
                run(steps)
                synchronise()
                timed[name] = steps * 128 / (time.perf_counter() - start)
            loop_rates.append(timed["loop"])
            bare_rates.append(timed["bare"])
            ratios.append(timed["loop"] / timed["bare"])
    return {
        "loop_images_per_s": statistics.median(loop_rates),
        "bare_images_per_s": statistics.median(bare_rates),
        "ratio": statistics.median(ratios),
        "ratio_low": min(ratios),
        "ratio_high": max(ratios),
        "rounds": rounds,
        "steps_per_round": steps,
    }


def child_peak(kind: str, spec: str, data: Path, steps: int) -> dict:
    """Run `steps` steps of one kind in this (fresh) process and report its peak memory."""
    import torch

    with tempfile.TemporaryDirectory() as out:
        if kind == "loop":
            trainer = make_trainer(spec, data, Path(out), [])
            trainer.train_steps(0, steps)
            dataset_bytes = trainer.data.train_images.nbytes + sum(
                images.nbytes for images, _ in trainer.data.eval_sets.values()
            )
        else:
            make_bare(spec, [])(steps)
            dataset_bytes = 0
    synchronise()
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = next(
            int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )  # fmt: skip
    return {"peak_bytes": peak, "dataset_bytes": dataset_bytes}


def peaks(spec: str, data: Path, steps: int) -> dict:
    result = {}
    for kind in ("bare", "loop"):
        command = [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--spec",
            spec,
            "--data",
            str(data),
            "--steps",
            str(steps),
        ]
        # A fixed mmap threshold (as bench/memory.py): glibc's dynamic one keeps freed blocks in the
        # heap depending on allocation history, which made the peak vary by tens of MB run to run.
        environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        output = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
        result[kind] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"CPU only, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    versions = f"torch {torch.__version__}, Python {platform.python_version()}"
    return f"{platform.processor() or platform.machine()}, {device}; {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="cifar20")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a smaller data set")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, help="paired rounds (default 8; 4 with --quick)")
    parser.add_argument("--steps", type=int, help="training steps per round and side (default 10; 4 with --quick)")
    parser.add_argument("--threads", type=int, help="torch threads (default torch's)")
    parser.add_argument("--child", choices=("loop", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_peak(args.child, args.spec, args.data, args.steps or 5)))
        return

    gpu = torch.cuda.is_available()
    train_images = 10000 if args.quick or not gpu else 50000
    rounds, steps = (4, 4) if args.quick else (8, 10)
    if gpu:
        rounds, steps = 10, 50
    rounds, steps = args.rounds or rounds, args.steps or steps
    report: dict = {"machine": machine(), "spec": args.spec, "train_images": train_images}
    with tempfile.TemporaryDirectory() as folder:
        data = write_cifar_sized(Path(folder), train_images, 2000)
        report["throughput"] = throughput(args.spec, data, rounds, steps, [])
        report["memory"] = peaks(args.spec, data, 5)
        if gpu:
            report["gpu"] = {}
            for spec in ("cifar20", "cifar110"):
                measured = throughput(spec, data, 5, 50, ["amp=bf16", "channels_last=true"])
                measured["projected_64k_minutes"] = 64000 * 128 / measured["loop_images_per_s"] / 60
                report["gpu"][spec] = measured
    if args.json:
        print(json.dumps(report, indent=2))
        return
    t, m = report["throughput"], report["memory"]
    print(f"machine: {report['machine']}")
    print(f"{args.spec}, batch 128, 3x32x32, {train_images:,} training images on the device")
    print(
        f"images/s: resdsl train {t['loop_images_per_s']:,.0f}, bare step {t['bare_images_per_s']:,.0f}; "
        f"ratio {t['ratio']:.3f} [{t['ratio_low']:.3f}, {t['ratio_high']:.3f}] over {t['rounds']} rounds of "
        f"{t['steps_per_round']} steps (target >= 0.97)"
    )
    loop_peak, bare_peak, dataset = m["loop"]["peak_bytes"], m["bare"]["peak_bytes"], m["loop"]["dataset_bytes"]
    print(
        f"peak memory: resdsl train {loop_peak / 2**20:,.0f} MiB, bare step {bare_peak / 2**20:,.0f} MiB, data set "
        f"{dataset / 2**20:,.0f} MiB; loop - bare - data = {(loop_peak - bare_peak - dataset) / 2**20:+,.0f} MiB "
        "(target <= 0)"
    )
    if "gpu" in report:
        for spec, measured in report["gpu"].items():
            print(
                f"{spec} bf16 + channels_last: {measured['loop_images_per_s']:,.0f} images/s, 64k iterations in "
                f"{measured['projected_64k_minutes']:.1f} min (bare step {measured['bare_images_per_s']:,.0f})"
            )
    else:
        print("no GPU: the GPU figures (ResNet-20/110 with bf16 and channels_last, 64k-iteration time) not taken")


if __name__ == "__main__":
    main()
