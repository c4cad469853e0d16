"""The paper's CIFAR schedule on a GPU, measured: `python bench/gpu.py [--json] [--tiny] [--no-compile]`.

One command, at most 8 minutes on one GPU, installs nothing. It prints the machine, then:

1. `resdsl train`'s loop (resdsl.train.loop.Trainer on CIFAR-format files: the data on
   the GPU, each batch gathered, padded, cropped, flipped and mean-subtracted there) for
   ResNet-20, -56 and -110 under the paper's recipe (cifar10-paper: batch 128, SGD with
   momentum and weight decay), first in fp32 eager, then with each speed option added
   in turn: channels_last, bf16 autocast, the fused SGD kernel, the CUDA graph of the
   whole step. Beside each, the peer: the bare step of hand-written torchvision-style
   code (the paper's CIFAR ResNet with option A shortcuts, written out below as people
   write it) on one ready batch, under the same options, its graph captured as the
   PyTorch documentation shows. Paired rounds (bench/timing.py); the ratio is resdsl's
   time over the peer's for the same images, target at most 1.00: the pipeline costs
   nothing measurable. Then the projected wall time of the full 64k-iteration schedule
   (training at the measured speed, plus 64 evaluations of 15,000 images), the peak GPU
   memory, the host synchronisations inside the steps (expected 0), and how far a
   graphed step's weights are from an eager step's after the same steps.
2. resnet50 at 224x224: training images per second of resdsl's module against
   torchvision's, same weights and the same bare step, fp32 and then with every option.
3. resnet50 inference: ``for_inference`` with ``engine="inductor"`` (and "eager")
   against torchvision's eager eval module and torchvision's inductor compile.
4. The round-4 networks against timm's own modules (issue 25), each at 224x224 with the
   same weights: a bf16 channels_last training step and a bf16 channels_last eval
   forward (``vit_tiny_patch16_224``, ``swin_tiny_patch4_window7_224`` where it ships,
   ``skresnet18``, ``efficientnet_b0``, ``convnext_atto``; timm uses its fused attention
   too), and ``for_inference`` with ``engine="inductor"`` against timm's module under
   ``torch.compile``. Ratio: resdsl's time over timm's, target at most 1.00.

Targets (issue 20): ResNet-20's schedule under 5 minutes on one H100, ResNet-110's
under 20. Sections that would run past the time budget are listed as not measured.

``--tiny`` runs every section on the CPU at a tiny size in seconds (the test's mode):
the CUDA graph rows then run everything but the capture and replay. ``--no-compile``
leaves out the inductor rows (minutes of compiling on a CPU). Not a test: nothing here
asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Row, machine, table  # noqa: E402
from bench.timing import paired  # noqa: E402

#: The paper's schedule: 64k iterations of 128 images, an evaluation every 1k on 5k val + 10k test images.
SCHEDULE_ITERATIONS, SCHEDULE_BATCH, SCHEDULE_EVALUATIONS, EVALUATION_IMAGES = 64000, 128, 64, 15000

#: Each configuration adds one speed option to the one before (recipe keys, as `--set` takes them).
CONFIGURATIONS: list[tuple[str, dict[str, object]]] = [
    ("fp32 eager", {"amp": "none", "channels_last": False, "optimizer_kernels": "foreach", "cuda_graph": False}),
    ("+ channels_last", {"channels_last": True}),
    ("+ bf16 autocast", {"amp": "bf16"}),
    ("+ fused SGD", {"optimizer_kernels": "fused"}),
    ("+ CUDA graph", {"cuda_graph": True}),
]


#: Section 4's networks: the shipped timm specs that the issue names.
TIMM_MODELS = (
    "vit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224",
    "skresnet18",
    "efficientnet_b0",
    "convnext_atto",
)
#: Token networks: timm sizes their position tables by ``img_size``; the spec follows its input.
TOKEN_MODELS = ("vit_tiny_patch16_224", "swin_tiny_patch4_window7_224")
#: Swin's windows of 7 need every stage's size (a 4th, 8th, 16th and 32nd of the input) to
#: divide by 7: 224 is the smallest such input, so --tiny keeps it.
FIXED_SIZES = {"swin_tiny_patch4_window7_224": 224}


def timm_size(name: str, plan: Plan) -> int:
    return FIXED_SIZES.get(name, plan.timm_size)


@dataclass(frozen=True)
class Plan:
    device: str
    specs: tuple[str, ...] = ("cifar20", "cifar56", "cifar110")
    batch: int = SCHEDULE_BATCH
    rounds: int = 6
    steps: int = 30  # training steps per round and side
    train_images: int = 10000
    test_images: int = 2000
    imagenet_model: str = "resnet50"
    imagenet_size: int = 224
    imagenet_batch: int = 128
    imagenet_steps: int = 5
    compile: bool = True
    budget_s: float = 450.0  # of the 8 minutes: the rest is start-up, writing the data and the last section's end
    capture: bool = True  # CUDA graphs captured (False on the CPU: the graph rows run everything else)
    check_steps: int = 20  # steps of the graph-against-eager check
    timm_models: tuple[str, ...] = TIMM_MODELS
    timm_size: int = 224
    timm_batch: int = 64
    timm_steps: int = 5


def plan_for(tiny: bool, compile: bool = True) -> Plan:
    if tiny or not torch.cuda.is_available():
        return Plan(
            "cpu",
            specs=("cifar20",),
            batch=4,
            rounds=1,
            steps=1,
            train_images=64,
            test_images=32,
            imagenet_model="resnet18",
            imagenet_size=32,
            imagenet_batch=2,
            imagenet_steps=1,
            compile=compile,
            budget_s=300.0,
            capture=False,
            check_steps=2,
            timm_size=64,
            timm_batch=2,
            timm_steps=1,
        )
    return Plan("cuda", compile=compile)


# ---------------------------------------------------------------------------
# The peer: the paper's CIFAR ResNet as people write it by hand (torchvision's style).


class ShortcutA(nn.Module):
    """Option A: subsample by 2 and pad the new channels with zeros (parameter-free)."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return self.relu(out)


class CifarResNet(nn.Module):
    """He et al. 2015, section 4.2: 6n+2 layers, 16/32/64 filters, global average pooling, a 10-way fc."""

    def __init__(self, n: int, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for index in range(n):
                layers.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def bare_step(
    model: nn.Module, options: dict[str, object], x: torch.Tensor, y: torch.Tensor, capture: bool
) -> Callable[[int], None]:
    """`count` SGD steps on one ready batch, as a user writes them, under `options`; graphed as the docs show."""
    device = x.device
    graph = bool(options["cuda_graph"])
    if options["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    kernels = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=torch.tensor(0.1, device=device) if graph else 0.1,
        momentum=0.9,
        weight_decay=1e-4,
        **kernels["fused" if graph else str(options["optimizer_kernels"])],
    )
    bf16 = options["amp"] == "bf16"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16, cache_enabled=not graph):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    def eager(count: int) -> None:
        for _ in range(count):
            step()

    if not (graph and capture):
        return eager
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    optimizer.zero_grad(set_to_none=True)
    captured = torch.cuda.CUDAGraph()
    with torch.cuda.graph(captured):
        step()

    def replay(count: int) -> None:
        for _ in range(count):
            captured.replay()

    return replay


# ---------------------------------------------------------------------------
# Measuring.


class Clock:
    """The GPU's time budget. On the CPU (--tiny, the test's mode) it never runs out:
    every section must run there, however busy the machine, since that is what the test
    checks before GPU minutes are spent."""

    def __init__(self, budget_s: float, enforced: bool = True) -> None:
        self.start, self.budget_s, self.enforced = time.perf_counter(), budget_s, enforced

    def spent(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.spent() if self.enforced else float("inf")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mb() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _trainer(spec: str, data: Path, out: Path, options: dict[str, object], plan: Plan):
    from bench.train import make_trainer
    from resdsl.train.step import GraphedStep

    sets = [f"{key}={json.dumps(value)}" for key, value in options.items()]
    sets += [f"batch_size={plan.batch}", "log_every_seconds=0", "eval_batch_size=1000"]
    if options["cuda_graph"] and not plan.capture:
        # On the CPU: the graphed step's every part but the capture (the recipe key itself wants a GPU).
        sets = [s for s in sets if not s.startswith("cuda_graph=")] + ["cuda_graph=false"]
        trainer = make_trainer(spec, data, out, sets)
        trainer.step = GraphedStep(trainer.step, trainer.model, capture=False)
        return trainer
    return make_trainer(spec, data, out, sets)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def guarded(figure: str, measure: Callable[[], list[Row]]) -> list[Row]:
    """The rows `measure` makes, or one row saying why it failed: GPU minutes are too few to lose them all to one."""
    try:
        return measure()
    except Exception as error:  # a failed section must not end the run
        first = (str(error).splitlines() or [""])[0][:300]
        return [Row(figure, f"failed: {type(error).__name__}: {first}")]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def cifar_rows(plan: Plan, data: Path, clock: Clock) -> list[Row]:
    rows: list[Row] = []
    for spec in plan.specs:
        options: dict[str, object] = {}
        for name, added in CONFIGURATIONS:
            options = {**options, **added}
            figure = f"{spec} `resdsl train` vs hand-written bare step, {name}"
            if clock.left() < 20:
                rows.append(Row(figure, "not measured: past the time budget"))
                continue
            last = name == CONFIGURATIONS[-1][0]
            rows.extend(guarded(figure, partial(_cifar_configuration, spec, figure, options, last, plan, data)))
    return rows


def _cifar_configuration(
    spec: str, figure: str, options: dict[str, object], last: bool, plan: Plan, data: Path
) -> list[Row]:
    """One network under one configuration: `resdsl train` against the hand-written step, paired."""
    sync = _sync if plan.device == "cuda" else None
    images = plan.steps * plan.batch
    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(spec, data, Path(out), options, plan)
        torch.manual_seed(0)
        peer_model = CifarResNet((int(spec.removeprefix("cifar")) - 2) // 6).to(plan.device).train()
        x = torch.randn(plan.batch, 3, 32, 32, device=plan.device)
        y = torch.randint(0, 10, (plan.batch,), device=plan.device)
        peer = bare_step(peer_model, options, x, y, plan.capture)
        position = 0

        def ours() -> None:
            nonlocal position
            trainer.train_steps(position, position + plan.steps)
            position += plan.steps

        _reset_peak()
        result = paired(ours, lambda: peer(plan.steps), rounds=plan.rounds, sync=sync)
        ours_rate, peer_rate = images / result.ours, images / result.reference
        schedule = SCHEDULE_ITERATIONS * SCHEDULE_BATCH / ours_rate
        unit = f"64k iterations: {_minutes(schedule)} training"
        failure = getattr(trainer.step, "failure", "")
        if failure:
            unit += f"; {failure}"
        rows = [Row(figure, f"{ours_rate:,.0f} img/s", f"{peer_rate:,.0f} img/s", result.ratio, "<=1.00", unit,
                    result.low, result.high)]  # fmt: skip
        if last:
            rows.extend(_final_rows(spec, trainer, ours_rate))
        return rows


def _final_rows(spec: str, trainer, rate: float) -> list[Row]:
    """Under every option: the schedule's projected wall time, peak memory, host syncs."""
    from resdsl.train.loop import evaluate

    rows = []
    start = time.perf_counter()
    evaluate(trainer.model, trainer.data.eval_batches("test", 1000), trainer.processes, trainer.autocast, True)
    _sync()
    evaluation = (time.perf_counter() - start) * EVALUATION_IMAGES / trainer.data.split_size("test")
    total = SCHEDULE_ITERATIONS * SCHEDULE_BATCH / rate + SCHEDULE_EVALUATIONS * evaluation
    target = {"cifar20": "<5 min on one H100", "cifar110": "<20 min on one H100"}.get(spec, "")
    evaluations = f"{SCHEDULE_EVALUATIONS} evaluations: {_minutes(SCHEDULE_EVALUATIONS * evaluation)}"
    figure = f"{spec} projected 64k-iteration schedule, every option"
    rows.append(Row(figure, _minutes(total), target=target, unit=evaluations))
    rows.append(Row(f"{spec} peak GPU memory while measuring (both sides resident)", f"{_peak_mb():,.0f} MiB"))
    if torch.cuda.is_available() and trainer.steps_per_epoch > 21:
        # Start an epoch first: its order is uploaded once per epoch (a blocking copy, counted apart).
        start = trainer.steps_per_epoch * 1000
        trainer.train_steps(start, start + 1)
        _sync()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.train_steps(start + 1, start + 21)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        _sync()
        syncs = sum("synchroniz" in str(w.message).lower() for w in caught)
        rows.append(Row(f"{spec} host synchronisations in 20 steps of `resdsl train`", f"{syncs}", target="0"))
    return rows


def graph_check_rows(plan: Plan, data: Path, clock: Clock) -> list[Row]:
    """A graphed step's weights against an eager step's after the same steps, bf16 both (relative, max)."""
    figure = f"cifar20 CUDA-graph step vs eager step: largest weight difference after {plan.check_steps} steps (bf16)"
    if clock.left() < 20:
        return [Row(figure, "not measured: past the time budget")]
    return guarded(figure, partial(_graph_check, figure, plan, data))


def _graph_check(figure: str, plan: Plan, data: Path) -> list[Row]:
    options = {"amp": "bf16", "channels_last": True, "optimizer_kernels": "fused"}
    states, failure = [], ""
    for graph in (False, True):
        with tempfile.TemporaryDirectory() as out:
            trainer = _trainer("cifar20", data, Path(out), {**options, "cuda_graph": graph}, plan)
            trainer.train_steps(0, plan.check_steps)
            _sync()
            states.append({k: v.detach().double().cpu() for k, v in trainer.model.state_dict().items()})
            failure = getattr(trainer.step, "failure", "") or failure
    worst = max(
        ((states[0][k] - states[1][k]).abs().max() / (1 + states[0][k].abs().max())).item()
        for k in states[0]
        if states[0][k].is_floating_point()
    )
    shown = f"{worst:.2e}" + ("" if plan.capture else " (not captured: CPU)") + (f" ({failure})" if failure else "")
    return [Row(figure, shown, target="bf16 noise, <=2e-2")]


def imagenet_rows(plan: Plan, clock: Clock) -> list[Row]:
    import torchvision

    rows: list[Row] = []
    name, size, batch = plan.imagenet_model, plan.imagenet_size, plan.imagenet_batch
    reference_model = getattr(torchvision.models, name)()
    state = reference_model.state_dict()
    everything = {"amp": "bf16", "channels_last": True, "optimizer_kernels": "fused", "cuda_graph": True}
    for label, options in (("fp32 eager", CONFIGURATIONS[0][1]), ("every option", everything)):
        figure = f"{name} training vs torchvision's {name}, {label} (batch {batch}, {size}x{size})"
        if clock.left() < 30:
            rows.append(Row(figure, "not measured: past the time budget"))
            continue
        rows.extend(guarded(figure, partial(_imagenet_training, figure, options, state, plan)))
    rows.extend(_inference_rows(plan, clock, reference_model.eval().to(plan.device), state))
    return rows


def _imagenet_training(figure: str, options: dict[str, object], state: dict, plan: Plan) -> list[Row]:
    import torchvision

    import resdsl

    name, size, batch = plan.imagenet_model, plan.imagenet_size, plan.imagenet_batch
    x = torch.randn(batch, 3, size, size, device=plan.device)
    y = torch.randint(0, 1000, (batch,), device=plan.device)
    ours = resdsl.load(f"torchvision/{name}", weights=state, device=plan.device).train()
    theirs = getattr(torchvision.models, name)().to(plan.device).train()
    theirs.load_state_dict(state)
    step_ours = bare_step(ours, options, x, y, plan.capture)
    step_theirs = bare_step(theirs, options, x, y, plan.capture)
    result = paired(
        lambda: step_ours(plan.imagenet_steps),
        lambda: step_theirs(plan.imagenet_steps),
        rounds=plan.rounds,
        sync=_sync if plan.device == "cuda" else None,
    )
    images = plan.imagenet_steps * batch
    ours_rate, theirs_rate = f"{images / result.ours:,.0f} img/s", f"{images / result.reference:,.0f} img/s"
    return [Row(figure, ours_rate, theirs_rate, result.ratio, "<=1.00", "time ratio", result.low, result.high)]


def _inference_rows(plan: Plan, clock: Clock, reference: nn.Module, state: dict) -> list[Row]:
    from bench.inference import _inductor_peer

    rows: list[Row] = []
    name, size, batch = plan.imagenet_model, plan.imagenet_size, plan.imagenet_batch
    shape = f"batch {batch}, {size}x{size}, fp32"
    x = torch.randn(batch, 3, size, size, device=plan.device)
    peers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"torchvision eager": reference}
    if plan.compile and clock.left() > 120:
        figure = f"{name} torchvision inductor compile, first call ({shape})"

        def compile_peer() -> list[Row]:
            start = time.perf_counter()
            with torch.no_grad():
                inductor_peer = _inductor_peer(reference)
                inductor_peer(x)
            _sync()
            peers["torchvision inductor (freezing, channels_last)"] = inductor_peer
            return [Row(figure, f"{time.perf_counter() - start:.0f} s")]

        rows.extend(guarded(figure, compile_peer))
    for engine in ("eager", "inductor") if plan.compile else ("eager",):
        figure = f"{name} for_inference engine={engine!r} ({shape})"
        if clock.left() < (120 if engine == "inductor" else 20):
            rows.append(Row(figure, "not measured: past the time budget"))
            continue
        rows.extend(guarded(figure, partial(_inference_engine, engine, peers, x, state, shape, plan)))
    return rows


def _inference_engine(
    engine: str, peers: dict[str, Callable], x: torch.Tensor, state: dict, shape: str, plan: Plan
) -> list[Row]:
    import resdsl

    name = plan.imagenet_model
    start = time.perf_counter()
    model = resdsl.load(f"torchvision/{name}", weights=state, for_inference=True, engine=engine, device=plan.device)
    with torch.no_grad():
        model(x)
    _sync()
    first = time.perf_counter() - start
    rows = []
    for peer_name, peer in peers.items():
        with torch.no_grad():
            result = paired(
                lambda: model(x),
                lambda peer=peer: peer(x),
                rounds=plan.rounds * 2,
                sync=_sync if plan.device == "cuda" else None,
            )
        rows.append(
            Row(
                f"{name} for_inference engine={engine!r} vs {peer_name} ({shape})",
                f"{result.ours * 1000:.2f} ms",
                f"{result.reference * 1000:.2f} ms",
                result.ratio,
                "<=1.00",
                f"load + first call {first:.0f} s",
                result.low,
                result.high,
            )
        )
    return rows


def timm_rows(plan: Plan, clock: Clock) -> list[Row]:
    import resdsl

    shipped = set(resdsl.shipped_specs())
    rows: list[Row] = []
    for name in plan.timm_models:
        size = timm_size(name, plan)
        figure = f"timm/{name} vs timm's {name}, bf16 channels_last (batch {plan.timm_batch}, {size}x{size})"
        if f"timm/{name}" not in shipped:
            rows.append(Row(figure, "not measured: no shipped spec of that name"))
        elif clock.left() < 30:
            rows.append(Row(figure, "not measured: past the time budget"))
        else:
            rows.extend(guarded(figure, partial(_timm_pair, figure, name, plan)))
    if not plan.compile:
        return rows
    size = plan.timm_size
    figure = f"timm/vit_tiny_patch16_224 for_inference engine='inductor' vs timm under torch.compile ({size}x{size})"
    if clock.left() < 120:
        rows.append(Row(figure, "not measured: past the time budget"))
    else:
        rows.extend(guarded(figure, partial(_timm_inductor, figure, "vit_tiny_patch16_224", plan)))
    return rows


def _timm_models(name: str, plan: Plan) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    import timm

    import resdsl

    size = timm_size(name, plan)
    kwargs = {"img_size": size} if name in TOKEN_MODELS else {}
    theirs = timm.create_model(name, pretrained=False, **kwargs).to(plan.device)
    ours = resdsl.load(f"timm/{name}", weights=theirs.state_dict(), input=f"3x{size}x{size}", device=plan.device)
    x = torch.randn(plan.timm_batch, 3, size, size, device=plan.device)
    y = torch.randint(0, 1000, (plan.timm_batch,), device=plan.device)
    return ours, theirs, x, y


def _timm_pair(figure: str, name: str, plan: Plan) -> list[Row]:
    ours, theirs, x, y = _timm_models(name, plan)
    options = {"amp": "bf16", "channels_last": True, "optimizer_kernels": "fused", "cuda_graph": False}
    if plan.device == "cpu":
        options["optimizer_kernels"] = "foreach"
    sync = _sync if plan.device == "cuda" else None
    step_ours = bare_step(ours.train(), options, x, y, plan.capture)
    step_theirs = bare_step(theirs.train(), options, x, y, plan.capture)
    train = paired(
        lambda: step_ours(plan.timm_steps), lambda: step_theirs(plan.timm_steps), rounds=plan.rounds, sync=sync
    )
    images = plan.timm_steps * plan.timm_batch
    rows = [
        Row(
            f"{figure}: training step",
            f"{images / train.ours:,.0f} img/s",
            f"{images / train.reference:,.0f} img/s",
            train.ratio,
            "<=1.00",
            "time ratio",
            train.low,
            train.high,
        )
    ]
    ours.eval()
    theirs.eval()
    channels_last = x.contiguous(memory_format=torch.channels_last)

    def forward(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), torch.autocast(x.device.type, torch.bfloat16):
                model(channels_last)

        return run

    result = paired(forward(ours), forward(theirs), rounds=plan.rounds * 2, sync=sync)
    rows.append(
        Row(
            f"{figure}: eval forward",
            f"{result.ours * 1000:.2f} ms",
            f"{result.reference * 1000:.2f} ms",
            result.ratio,
            "<=1.00",
            "time ratio",
            result.low,
            result.high,
        )
    )
    return rows


def _timm_inductor(figure: str, name: str, plan: Plan) -> list[Row]:
    import resdsl

    _, theirs, x, _ = _timm_models(name, plan)
    theirs.eval()
    ours = resdsl.load(
        f"timm/{name}",
        weights=theirs.state_dict(),
        input=f"3x{timm_size(name, plan)}x{timm_size(name, plan)}",
        device=plan.device,
        for_inference=True,
        engine="inductor",
    )
    compiled = torch.compile(theirs)
    with torch.no_grad():
        ours(x)
        compiled(x)
        result = paired(
            lambda: ours(x), lambda: compiled(x), rounds=plan.rounds * 2, sync=_sync if plan.device == "cuda" else None
        )
    return [
        Row(
            figure,
            f"{result.ours * 1000:.2f} ms",
            f"{result.reference * 1000:.2f} ms",
            result.ratio,
            "<=1.00",
            "time ratio",
            result.low,
            result.high,
        )
    ]


def rows(plan: Plan) -> list[Row]:
    """Every section in order, within the plan's time budget."""
    from bench.train import write_cifar_sized

    clock = Clock(plan.budget_s, enforced=plan.device == "cuda")
    torch.manual_seed(0)
    if plan.device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes, as in a training run; both sides alike
    else:
        torch.set_flush_denormal(True)  # as bench/torch_runtime.py: drifting weights must not hit slow denormals
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        data = write_cifar_sized(Path(folder), plan.train_images, plan.test_images)
        out.extend(cifar_rows(plan, data, clock))
        out.extend(graph_check_rows(plan, data, clock))
    out.extend(imagenet_rows(plan, clock))
    out.extend(timm_rows(plan, clock))
    out.append(Row("time spent", f"{clock.spent():.0f} s", target=f"<= {plan.budget_s:.0f} s"))
    return out


def describe_machine(plan: Plan) -> str:
    info = machine()
    if plan.device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        info["gpu"] = "none: the CPU at a tiny size (--tiny); these are not GPU figures"
    return ", ".join(f"{k} {v}" for k, v in info.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the CPU at a tiny size, in seconds (the test's mode)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the inductor rows")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--budget-s", type=float, help="stop starting sections after this many seconds (default 450)")
    args = parser.parse_args(argv)
    plan = plan_for(args.tiny, compile=not args.no_compile)
    if args.budget_s:
        plan = replace(plan, budget_s=args.budget_s)
    if plan.device == "cpu" and not args.tiny:
        print("no GPU is visible: running the CPU at a tiny size (--tiny); these are not GPU figures", file=sys.stderr)
    measured = rows(plan)
    if args.json:
        records = [asdict(row) | {"verdict": row.verdict} for row in measured]
        print(json.dumps({"machine": describe_machine(plan), "rows": records}, indent=2))
        return 0
    print("machine: " + describe_machine(plan))
    print()
    print(table(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
