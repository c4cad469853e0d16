"""The training loop: one process or many (torchrun), resumable bit for bit on the CPU.

What makes a resumed run equal an uninterrupted one: the data stream is a pure
function of (seed, iteration, rank) (resdsl.train.data), and the checkpoint holds
everything else that changes as training goes: the weights and BN statistics, the
optimizer's momentum, the schedule's state (where the warm-up ended), the AMP
scaler, the global random generators (torch, CUDA, Python), the iteration, and the
partial sums of the training metrics since the last evaluation.

The loop never waits on the device between evaluations: losses and error counts are
summed on the device, and read once per ``eval_every``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import platform
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import resdsl
from resdsl.files import append_file, write_file
from resdsl.fingerprint import network_fingerprint
from resdsl.ir import Network
from resdsl.train.data import Normalizer, TrainingData, open_data
from resdsl.train.recipes import KEYS, Recipe, RecipeError, to_iterations
from resdsl.train.runfiles import (
    EVAL_FIELDS,
    RESUME_FIELDS,
    RunError,
    check_checkpoint,
    check_normalizer_fits,
    claim_run_folder,
    read_metrics_rows,
)
from resdsl.train.step import (
    GraphedStep,
    TrainingStep,
    autocast_for,
    float_lr,
    make_optimizer,
    resolve_speed,
    set_lr,
    tensor_lr,
    use_kernels,
)

CHECKPOINT_FORMAT = "resdsl-train/1"
METRICS = (
    "iteration",
    "epoch",
    "lr",
    "train_loss",
    "train_error",
    "val_loss",
    "val_error",
    "test_loss",
    "test_error",
    "images_per_s",
    "seconds",
)
#: The warm-up's end is judged on the training error of this many iterations.
WARMUP_WINDOW = 50
#: In a distributed run, how often the processes agree on whether a stop signal arrived.
STOP_CHECK_EVERY = 10


# ---------------------------------------------------------------------------
# The learning-rate schedule.


@dataclass
class Schedule:
    lr: float
    total: int
    kind: str
    milestones: list[int]
    gamma: float
    warmup: int
    warmup_lr: float | None
    warmup_end: int = 0  # where the warm-up ended (or will end): the state saved with a checkpoint

    def __post_init__(self) -> None:
        self.warmup_end = self.warmup_end or self.warmup

    def at(self, iteration: int) -> float:
        if iteration < self.warmup_end:
            if self.warmup_lr is not None:
                return self.warmup_lr
            return self.lr * (iteration + 1) / self.warmup
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup_end)
            progress = min(1.0, (iteration - self.warmup_end) / span)
            return self.lr * 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * self.gamma ** sum(iteration >= milestone for milestone in self.milestones)

    def in_warmup(self, iteration: int) -> bool:
        return iteration < self.warmup_end

    def state_dict(self) -> dict[str, int]:
        return {"warmup_end": self.warmup_end}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.warmup_end = int(state["warmup_end"])


# ---------------------------------------------------------------------------
# Processes.


@dataclass
class Processes:
    """This process's place in a torchrun launch (or the only process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """Values summed over the processes (as float64, so counts stay exact)."""
        # One tensor on this process's device (NCCL reduces only GPU tensors; gloo takes CPU ones).
        stacked = torch.stack([v.detach().to(self.device, torch.float64).reshape(()) for v in values])
        if self.distributed:
            dist.all_reduce(stacked)
        return list(stacked.cpu())

    def broadcast(self, value: Any) -> Any:
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


def start_processes(device_choice: str) -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device_choice == "auto" else device_choice == "cuda"
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise RecipeError("'device' is cuda but no GPU is visible", hint="set device: auto or cpu")
    if world <= 1:
        return Processes(device=torch.device("cuda" if cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return Processes(rank, world, local_rank, device)


def choose_threads(environ: Mapping[str, str], cores: int) -> tuple[int, str]:
    """How many threads torch runs ops with, and why (said in the log).

    torch's default is every core of the machine, whatever else runs there: on a busy
    CPU, or with several processes each taking every core, they wait on one another
    (one image a second where one thread gave eleven). An explicit OMP_NUM_THREADS is
    kept; under torchrun each process takes one thread (its processes share the cores);
    otherwise the cores this process may run on.
    """
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given), f"OMP_NUM_THREADS={int(given)}"
    local = environ.get("LOCAL_WORLD_SIZE") or environ.get("WORLD_SIZE") or "1"
    if local.isdigit() and int(local) > 1:
        return 1, f"one per process, {int(local)} processes here (torchrun)"
    return max(1, cores), "the cores this process may use"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on every platform (macOS)
        return os.cpu_count() or 1


def images_per_second(rate: float) -> str:
    """A rate for the log: whole numbers from 1 up, two figures below (0.42, never 0)."""
    if rate >= 1 or rate <= 0:
        return f"{rate:,.0f} img/s"
    return f"{rate:.2g} img/s"


# ---------------------------------------------------------------------------
# Files.


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a fresh temporary file beside `path`, flushed to disk, then renamed over it (resdsl.files)."""
    write_file(path, lambda handle: torch.save(obj, handle))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint, read without running code (tensors and plain containers only)."""
    if not path.is_file():
        raise RunError("no checkpoint here", file=str(path), hint="a run folder holds checkpoint.pt once it has run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RunError(f"cannot read the checkpoint: {type(error).__name__}: {error}", file=str(path)) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"not a resdsl training checkpoint (format {CHECKPOINT_FORMAT})", file=str(path))
    check_checkpoint(state, path, EVAL_FIELDS)
    return state


def spec_record(network: Network, params: dict[str, Any]) -> dict[str, Any]:
    try:
        text = Path(network.path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    return {
        "name": network.name,
        "path": str(network.path),
        "params": {k: v for k, v in params.items()},
        "num_params": network.num_params,
        "architecture_sha256": network_fingerprint(network),
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "text": text,
    }


def versions() -> dict[str, str]:
    found = {"resdsl": resdsl.__version__, "torch": str(torch.__version__), "python": platform.python_version()}
    with contextlib.suppress(ImportError):
        import torchvision

        found["torchvision"] = str(torchvision.__version__)
    return found


class MetricsFile:
    """metrics.csv: a row per evaluation; on resume, rows after the checkpoint are dropped.

    The kept rows are written to a new file renamed over the old one (a full disk
    loses nothing); rows are then appended, never through a link.
    """

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        rows = read_metrics_rows(path, keep_until, METRICS) if keep_until is not None else []
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, METRICS)
        writer.writeheader()
        writer.writerows(rows)
        write_file(path, buffer.getvalue())

    def append(self, row: dict[str, Any]) -> None:
        buffer = io.StringIO(newline="")
        csv.DictWriter(buffer, METRICS).writerow({k: _cell(row.get(k)) for k in METRICS})
        append_file(self.path, buffer.getvalue())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# ---------------------------------------------------------------------------
# Evaluation.


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    processes: Processes,
    autocast: Callable[[], Any],
    channels_last: bool = False,
) -> dict[str, float]:
    """Loss, top-1 and top-5 error (percent) over a split, summed over the processes.

    A batch of shape B x K x C x H x W holds K crops of each image: their softmax
    outputs are averaged (the paper's 10-crop testing).
    """
    was_training = model.training
    model.eval()
    device = processes.device
    loss = torch.zeros((), dtype=torch.float64, device=device)
    wrong1 = torch.zeros((), dtype=torch.float64, device=device)
    wrong5 = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    for inputs, labels in batches:
        crops = inputs.shape[1] if inputs.dim() == 5 else 0
        flat = inputs.flatten(0, 1) if crops else inputs
        if channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(flat).float()
        if crops:
            probabilities = logits.softmax(1).view(len(labels), crops, -1).mean(1)
            loss += nn.functional.nll_loss(probabilities.clamp_min(1e-12).log(), labels, reduction="sum").double()
            scores = probabilities
        else:
            loss += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
            scores = logits
        top = scores.topk(min(5, scores.shape[1]), dim=1).indices
        wrong1 += (top[:, 0] != labels).sum()
        wrong5 += (top != labels[:, None]).all(1).sum()
        count += len(labels)
    loss, wrong1, wrong5, count = processes.sum(loss, wrong1, wrong5, count)
    model.train(was_training)
    total = max(1.0, float(count))
    return {
        "loss": float(loss) / total,
        "error": 100 * float(wrong1) / total,
        "top5_error": 100 * float(wrong5) / total,
        "count": int(count),
    }


# ---------------------------------------------------------------------------
# The trainer.


@dataclass
class RunOptions:
    spec: str
    data: str
    recipe: Recipe
    out: Path
    params: dict[str, Any] = field(default_factory=dict)
    network: str | None = None
    resume: bool = False
    command: str = ""
    limits: Any = None  # resdsl.Limits, from --max-layers
    init: str | None = None  # weights to start from (--init), loaded strictly except the `skip` modules
    skip: tuple[str, ...] = ()
    allow_other_network: bool = False  # --init from a run checkpoint of another network


class Stop(Exception):
    """SIGINT or SIGTERM arrived: the loop saved a checkpoint and stops."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Trainer:
    def __init__(self, options: RunOptions, processes: Processes | None = None) -> None:
        self.options = options
        self.recipe = options.recipe
        self.processes = processes or start_processes(self.recipe["device"])
        self.out = options.out
        self.signal_received: int | None = None
        self.log_lines: list[str] = []

    # -- setting up ---------------------------------------------------------

    def setup(self) -> None:
        recipe, processes = self.recipe, self.processes
        device = processes.device
        if recipe["batch_size"] % processes.world:
            raise recipe.error(
                "batch_size",
                f"'batch_size' {recipe['batch_size']} is the global batch and must divide evenly over "
                f"{processes.world} processes",
                "choose a multiple of the number of processes",
            )
        if recipe["sync_batchnorm"] and device.type != "cuda" and processes.distributed:
            raise recipe.error("sync_batchnorm", "'sync_batchnorm' needs GPUs (NCCL); this run is on the CPU")
        self.speed = speed = resolve_speed(recipe, device, processes.world)
        if device.type == "cuda":
            # The batch's shape never changes: let cuDNN time its algorithms once and keep the fastest.
            torch.backends.cudnn.benchmark = True
        options = self.options
        self.network = resdsl.compile(options.spec, network=options.network, limits=options.limits, **options.params)
        self.spec = spec_record(self.network, self.options.params)

        saved = self._read_saved() if self.options.resume else None
        normalizer = None
        if saved is not None:
            normalizer = Normalizer(saved["normalizer"]["shift"], saved["normalizer"]["scale"])
        self.data: TrainingData = open_data(
            self.options.data, recipe, device=device, rank=processes.rank, world=processes.world, normalizer=normalizer
        )
        self._check_shapes()
        if saved is not None:
            check_normalizer_fits(saved["normalizer"], self.data.input_shape, self.out / "checkpoint.pt")
        steps_per_epoch = self.data.steps_per_epoch(recipe["batch_size"])
        self.steps_per_epoch = steps_per_epoch
        self.total = recipe.steps("iterations", steps_per_epoch)
        self.eval_every = recipe.steps("eval_every", steps_per_epoch)
        self.checkpoint_every = recipe.steps("checkpoint_every", steps_per_epoch)
        self.schedule = Schedule(
            recipe["lr"],
            self.total,
            recipe["lr_schedule"],
            [to_iterations(m, steps_per_epoch) for m in recipe["milestones"]],
            recipe["gamma"],
            recipe.steps("warmup", steps_per_epoch),
            recipe["warmup_lr"],
        )

        # The model: seeded, so that every process (and every rerun) starts from the same weights.
        torch.manual_seed(recipe["seed"])
        random.seed(recipe["seed"])
        mode = None if recipe["activation_checkpointing"] == "spec" else recipe["activation_checkpointing"]
        model = resdsl.load(
            self.network, device=device, checkpoint=mode, zero_init_residual=recipe["zero_init_residual"]
        )
        if options.init is not None and saved is None:
            self._load_init(model)
        if recipe["sync_batchnorm"] and processes.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if speed.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = make_optimizer(
            self._parameter_groups(model), recipe, speed, self.schedule.at(0), processes.device
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=speed.amp == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
        self.iteration = 0
        self.seconds = 0.0
        self.best: dict[str, Any] = {"error": None, "iteration": None, "split": self.data.splits[0]}
        self._reset_window()
        if saved is not None:
            try:
                self._restore(saved)
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
                # The structure was checked (runfiles.check_checkpoint); what is left is a state that
                # does not fit this model: tensors of other shapes, another optimizer's groups.
                reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
                raise RunError(
                    f"the checkpoint does not fit this run: {reason}", file=str(self.out / "checkpoint.pt")
                ) from None
        stepped: nn.Module = model
        if processes.distributed:
            stepped = nn.parallel.DistributedDataParallel(
                model, device_ids=[processes.local_rank] if device.type == "cuda" else None
            )
        if recipe["compile"]:
            stepped = torch.compile(stepped)
        self.stepped = stepped
        step = TrainingStep(
            stepped,
            self.optimizer,
            self.scaler,
            self.criterion,
            autocast_for(device, speed.amp, graph=speed.cuda_graph),
            speed.channels_last,
        )
        self.step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = (
            GraphedStep(step, model) if speed.cuda_graph else step
        )
        if processes.main:
            self._claim_folder()
            self._write_recipe_file()
            self.metrics = MetricsFile(self.out / "metrics.csv", self.iteration if saved else None)

    _folder_lock: Any = None

    def _claim_folder(self) -> None:
        """Lock the run folder for this run (a second run on it gets an error) and check its files are safe to write."""
        self._folder_lock = claim_run_folder(self.out, resume=self.options.resume)

    def release_folder(self) -> None:
        if self._folder_lock is not None:
            self._folder_lock.release()
            self._folder_lock = None

    def _parameter_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        if not self.recipe["no_bias_decay"]:
            return [{"params": list(model.parameters())}]
        decayed = [p for p in model.parameters() if p.dim() > 1]
        plain = [p for p in model.parameters() if p.dim() <= 1]
        return [{"params": decayed}, {"params": plain, "weight_decay": 0.0}]

    def _load_init(self, model: nn.Module) -> None:
        """--init: start from these weights (a state dict or another run's checkpoint), except the skipped modules."""
        from resdsl.backends.loading import load_weights, weights_for

        options = self.options
        shown = str(options.init)
        state, _ = weights_for(
            self.network, options.init, allow_other_network=options.allow_other_network, skip=options.skip, shown=shown
        )
        load_weights(model, state, skip=options.skip, file=shown)
        _refuse_non_finite(model, options.skip, shown)

    def _check_shapes(self) -> None:
        expected = tuple(self.network.input_shape)
        if tuple(self.data.input_shape) != expected:
            raise RecipeError(
                f"the data's images are {'x'.join(map(str, self.data.input_shape))} but {self.network.name} takes "
                f"{'x'.join(map(str, expected))}",
                file=self.options.data,
                hint="image folders: set crop_size; CIFAR specs take 3x32x32",
            )
        classes = self.network.output_shape[0]
        if classes != len(self.data.classes):
            raise RecipeError(
                f"the data has {len(self.data.classes)} classes but {self.network.name} outputs {classes}",
                file=self.options.data,
                hint=f"--param classes={len(self.data.classes)}",
            )

    # -- resume ---------------------------------------------------------------

    def _read_saved(self) -> dict[str, Any]:
        path = self.out / "checkpoint.pt"
        saved = read_checkpoint(path) if self.processes.main else None
        saved = self.processes.broadcast(saved)
        check_checkpoint(saved, path, (*EVAL_FIELDS, *RESUME_FIELDS))
        self._check_resume(saved, path)
        return saved

    def _check_resume(self, saved: dict[str, Any], path: Path) -> None:
        old_spec = saved["spec"]
        if old_spec["architecture_sha256"] != self.spec["architecture_sha256"]:
            raise RunError(
                f"the network changed since this run began: {old_spec['name']} ({old_spec['num_params']:,} params, "
                f"{old_spec['path']}) is now {self.spec['name']} ({self.spec['num_params']:,} params, "
                f"{self.spec['path']})",
                file=str(path),
                hint="resume with the spec and --param values the run began with, or start a new run",
            )
        changed = [
            f"{key} {_shown(saved['recipe'].get(key, KEYS[key].default))} -> {_shown(value)}"
            for key, value in self.recipe.values.items()
            if not KEYS[key].resume_safe and saved["recipe"].get(key, KEYS[key].default) != value
        ]
        if changed:
            safe = ", ".join(name for name, key in KEYS.items() if key.resume_safe)
            raise RunError(
                "the recipe changed since this run began: " + "; ".join(changed),
                file=str(path),
                hint=f"only these keys may change on resume: {safe}",
            )

    def _restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        # The kernels and learning rate as this run's step uses them: the checkpoint's optimizer state
        # carries those of the run that saved it (perhaps on another device, or without the graph).
        use_kernels(self.optimizer, self.speed.optimizer_kernels)
        if self.speed.cuda_graph:
            tensor_lr(self.optimizer, self.processes.device)
        else:
            float_lr(self.optimizer)
        self.schedule.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.iteration = int(saved["iteration"])
        self.seconds = float(saved["seconds"])
        self.best = dict(saved["best"])
        window = saved["window"]
        device = self.processes.device
        self.window = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in window.items()}
        rng = saved["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(_as_tuple(rng["python"]))
        if saved.get("world_size", 1) != self.processes.world:
            self.log(
                f"note: this run began with {saved.get('world_size', 1)} processes and continues with "
                f"{self.processes.world}: the data order is the same, BN statistics are not bit-identical"
            )

    # -- state ----------------------------------------------------------------

    def _reset_window(self) -> None:
        device = self.processes.device
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.window = {
            "loss": zero.clone(),
            "wrong": zero.clone(),
            "images": 0,
            "seconds": 0.0,
            "warm_wrong": zero.clone(),
            "warm_images": 0,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "epoch": self.iteration / self.steps_per_epoch,
            "seconds": self.seconds,
            "best": self.best,
            "window": {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in self.window.items()},
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": list(random.getstate()),
            },
            "recipe": dict(self.recipe.values),
            "recipe_name": self.recipe.name,
            "spec": self.spec,
            "normalizer": self.data.normalizer.state_dict(),
            "classes": list(self.data.classes),
            "world_size": self.processes.world,
            "versions": versions(),
        }

    def save_checkpoint(self) -> None:
        if self.processes.main:
            atomic_save(self.state_dict(), self.out / "checkpoint.pt")

    def _write_recipe_file(self) -> None:
        import yaml

        record = {
            "recipe_name": self.recipe.name,
            "recipe": dict(self.recipe.values),
            "seed": self.recipe["seed"],
            "iterations": self.total,
            "steps_per_epoch": self.steps_per_epoch,
            "spec": self.spec,
            "data": str(self.options.data),
            "train_images": self.data.train_size,
            "world_size": self.processes.world,
            "device": str(self.processes.device),
            "command": self.options.command,
            "versions": versions(),
        }
        text = yaml.safe_dump(record, sort_keys=False, allow_unicode=True)
        write_file(self.out / "recipe.yaml", text)

    # -- running ----------------------------------------------------------------

    def log(self, line: str) -> None:
        if self.processes.main:
            self.log_lines.append(line)
            if self._bar is not None:
                self._bar.write(line)
            else:
                print(line, flush=True)

    _bar: Any = None

    def autocast(self) -> Any:
        return autocast_for(self.processes.device, self.speed.amp)()

    def run(self) -> int:
        """Train to the end, or until a stop signal: 0, or 128 + the signal's number."""
        threads, reason = choose_threads(os.environ, available_cores())
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        self.threads = (threads, reason)
        try:
            return self._run()
        finally:
            torch.set_num_threads(previous_threads)  # an API caller's own setting, back as it was

    threads: tuple[int, str] = (0, "")

    def _run(self) -> int:
        self.setup()
        if self.options.resume and self.iteration >= self.total:
            self.log(
                f"the run in {self.out} is complete at iteration {self.iteration}: raise 'iterations' "
                "(--set iterations=N) to train further"
            )
            return 0
        self._announce()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self._bar = self._progress_bar()
        try:
            self.train_steps(self.iteration, self.total)
        except Stop as stop:
            self.save_checkpoint()
            self._close_bar()
            self.write_curves()
            self.log(
                f"stopped by {stop} at iteration {self.iteration}: saved {self.out / 'checkpoint.pt'}; "
                "continue with the same command and --resume"
            )
            return 128 + stop.signum
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._close_bar()
        if self._last_eval != self.iteration:
            self.evaluate_and_record()
        self.save_checkpoint()
        self.write_curves()
        self.log(self._summary())
        return 0

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signal_received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.signal_received = signum

    def _progress_bar(self) -> Any:
        if not (self.processes.main and sys.stderr.isatty()):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=self.total, initial=self.iteration, unit="it", dynamic_ncols=True, leave=True)

    def _announce(self) -> None:
        data = self.data
        sizes = ", ".join(f"{data.split_size(s):,} {s}" for s in data.splits)
        resumed = f", resuming at iteration {self.iteration}" if self.options.resume else ""
        self.log(
            f"training {self.network.name} ({self.network.num_params:,} params) with {self.recipe.name} on "
            f"{self.processes.device}"
            + (f" x {self.processes.world} processes" if self.processes.distributed else "")
            + f": {data.train_size:,} training images ({sizes}), {self.total:,} iterations of "
            f"{self.recipe['batch_size']}{resumed}; run folder {self.out}"
        )
        self.log(f"step: {self.speed.describe()}")
        threads, reason = self.threads
        if threads:
            self.log(f"threads: {threads} ({reason})")

    _last_eval: int = -1

    def train_steps(self, start: int, stop: int) -> None:
        """Iterations start..stop-1: the step, and the evaluations and checkpoints that fall in them."""
        recipe = self.recipe
        optimizer, step = self.optimizer, self.step
        threshold = recipe["warmup_until_error"]
        window = self.window
        window_start = time.perf_counter() - window["seconds"]
        log_every = recipe["log_every_seconds"] if self._bar is None and self.processes.main else 0
        self._progress_mark = (time.perf_counter(), start)
        lr = None
        self.model.train()
        for batch in self.data.batches(start, stop):
            iteration = batch.iteration
            new_lr = self.schedule.at(iteration)
            if new_lr != lr:
                lr = new_lr
                set_lr(optimizer, lr)
            loss, wrong = step(batch.inputs, batch.labels)
            if getattr(step, "note", ""):
                self.log(f"note: {step.note}")
                step.note = ""
            with torch.no_grad():
                count = len(batch.labels)
                window["loss"] += loss.double() * count
                window["wrong"] += wrong
                window["images"] += count
                if threshold is not None and self.schedule.in_warmup(iteration):
                    window["warm_wrong"] += wrong
                    window["warm_images"] += count
            self.iteration = done = iteration + 1
            if self._bar is not None:
                self._bar.update(1)
            if threshold is not None and self.schedule.in_warmup(iteration) and done % WARMUP_WINDOW == 0:
                self._judge_warmup(done, threshold)
            if log_every and time.perf_counter() - self._progress_mark[0] >= log_every and done < self.total:
                self.log(self._progress_line(done, lr))
            due_eval = self.eval_every and done % self.eval_every == 0 and done < self.total
            if due_eval:
                window["seconds"] = time.perf_counter() - window_start
                self.evaluate_and_record()
                window = self.window
                window_start = time.perf_counter()
                self.model.train()
            if self.checkpoint_every and done % self.checkpoint_every == 0 and done < self.total:
                window["seconds"] = time.perf_counter() - window_start
                self.save_checkpoint()
            if done < self.total and self._stop_requested(done):
                window["seconds"] = time.perf_counter() - window_start
                raise Stop(self.signal_received or signal.SIGTERM)
        window["seconds"] = time.perf_counter() - window_start

    _progress_mark: tuple[float, int] = (0.0, 0)

    def _progress_line(self, done: int, lr: float | None) -> str:
        """A line between evaluations where no progress bar shows: where the run is, how fast, the loss so far.

        Reads the window's sums from the device: one wait every `log_every_seconds`, not per step.
        """
        now = time.perf_counter()
        since, first = self._progress_mark
        self._progress_mark = (now, done)
        rate = (done - first) * self.recipe["batch_size"] / max(now - since, 1e-9)
        window = self.window
        parts = [f"iter {done}/{self.total}", f"epoch {done / self.steps_per_epoch:.2f}", f"lr {lr:.4g}"]
        if window["images"]:
            parts.append(
                f"train {float(window['loss']) / window['images']:.4f} "
                f"{100 * float(window['wrong']) / window['images']:.2f}%"
            )
        remaining = (self.total - done) * self.recipe["batch_size"] / max(rate, 1e-9)
        parts += [images_per_second(rate), f"{_duration(remaining)} to go"]
        return "  ".join(parts)

    def _stop_requested(self, done: int) -> bool:
        if not self.processes.distributed:
            return self.signal_received is not None
        if done % STOP_CHECK_EVERY:
            return False
        flag = torch.tensor(float(self.signal_received or 0), device=self.processes.device)
        (agreed,) = self.processes.sum(flag)
        if agreed and self.signal_received is None:
            self.signal_received = signal.SIGTERM
        return bool(agreed)

    def _judge_warmup(self, done: int, threshold: float) -> None:
        window = self.window
        wrong, images = self.processes.sum(window["warm_wrong"], torch.tensor(float(window["warm_images"])))
        window["warm_wrong"].zero_()
        window["warm_images"] = 0
        error = 100 * float(wrong) / max(1.0, float(images))
        if error < threshold:
            self.schedule.warmup_end = done
            self.log(f"warm-up ends at iteration {done}: training error {error:.1f}% < {threshold:g}%")

    def evaluate_and_record(self) -> dict[str, Any]:
        window, processes = self.window, self.processes
        self._sync_buffers()
        loss, wrong, images = processes.sum(window["loss"], window["wrong"], torch.tensor(float(window["images"])))
        row: dict[str, Any] = {
            "iteration": self.iteration,
            "epoch": round(self.iteration / self.steps_per_epoch, 4),
            "lr": self.schedule.at(max(0, self.iteration - 1)),
        }
        if float(images):
            row["train_loss"] = float(loss) / float(images)
            row["train_error"] = 100 * float(wrong) / float(images)
            row["images_per_s"] = float(images) / max(window["seconds"], 1e-9)
        evaluation_start = time.perf_counter()
        for split in self.data.splits:
            result = evaluate(
                self.model,
                self.data.eval_batches(split, self.recipe["eval_batch_size"]),
                processes,
                self.autocast,
                self.speed.channels_last,
            )
            row[f"{split}_loss"], row[f"{split}_error"] = result["loss"], result["error"]
        self.seconds += window["seconds"] + (time.perf_counter() - evaluation_start)
        row["seconds"] = round(self.seconds, 3)
        self._last_eval = self.iteration
        self._reset_window()
        if processes.main:
            self.metrics.append(row)
            split = self.best["split"]
            if self.best["error"] is None or row[f"{split}_error"] < self.best["error"]:
                self.best = {"error": row[f"{split}_error"], "iteration": self.iteration, "split": split}
                state = self.state_dict()
                best = {k: state[k] for k in ("format", "model", "iteration", "recipe", "recipe_name", "spec")}
                best.update(normalizer=state["normalizer"], classes=state["classes"], best=self.best)
                atomic_save(best, self.out / "best.pt")
            self.log(self._row_line(row))
            if self._bar is not None:
                self._bar.set_postfix_str(f"test {row['test_error']:.2f}%")
        return row

    def _sync_buffers(self) -> None:
        """Every process evaluates rank 0's model: BN statistics differ across processes without SyncBN."""
        if self.processes.distributed:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)

    def _row_line(self, row: dict[str, Any]) -> str:
        parts = [f"iter {row['iteration']}/{self.total}", f"epoch {row['epoch']:.2f}", f"lr {row['lr']:.4g}"]
        if "train_error" in row:
            parts.append(f"train {row['train_loss']:.4f} {row['train_error']:.2f}%")
        for split in self.data.splits:
            parts.append(f"{split} {row[f'{split}_loss']:.4f} {row[f'{split}_error']:.2f}%")
        if "images_per_s" in row:
            parts.append(images_per_second(row["images_per_s"]))
        return "  ".join(parts)

    def _summary(self) -> str:
        best = self.best
        best_text = (
            f"; best {best['split']} error {best['error']:.2f}% at iteration {best['iteration']} (best.pt)"
            if best["error"] is not None
            else ""
        )
        return f"done: {self.total} iterations in {self.seconds:.0f} s{best_text}; {self.out}"

    def write_curves(self) -> None:
        if not self.processes.main:
            return
        try:
            from resdsl.train.plot import plot_runs

            plot_runs([self.out], self.out / "curves.png")
        except ImportError:
            self.log("note: curves.png needs matplotlib (pip install 'resdsl[train]')")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def _refuse_non_finite(model: nn.Module, skip: Any, shown: str) -> None:
    """--init weights holding NaN or infinity would train to NaN without a word: refused, naming the tensor."""
    from resdsl.errors import WeightsError

    skipped = (skip,) if isinstance(skip, str) else tuple(skip or ())
    for key, tensor in model.state_dict().items():
        if any(key == name or key.startswith(f"{name}.") for name in skipped):
            continue  # left at its initialisation
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(
                f"'{key[:200]}' holds NaN or infinite values: training from it gives NaN",
                file=shown,
                hint=f"start from other weights, or leave this module at its initialisation with --skip "
                f"{key.rsplit('.', 1)[0][:200]}",
            )
