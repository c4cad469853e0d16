"""The training step, and what makes it fast: the speed keys of a recipe resolved for a device.

A step is forward, loss, backward and the SGD update, plus two sums the loop reports
at evaluation time (the batch's loss and its count of wrong answers), all left on the
device: nothing in a step waits for the GPU.

On one GPU the whole step is captured once as a CUDA graph and replayed
(:class:`GraphedStep`): a CIFAR ResNet at batch 128 launches hundreds of small kernels
per step, and replaying them as one graph removes the CPU's launch cost, which
otherwise bounds the step. What a graph needs, and how it is met:

- static tensors: the batch is copied into the graph's own input tensors, and the
  step's loss and error count are read from its own output tensors;
- no value baked in that changes: the learning rate is a tensor on the device, which
  the fused SGD kernel reads (a float would be captured once and never change);
- nothing allocated lazily inside the graph: SGD's momentum buffers exist (as zeros,
  which gives the same first update as SGD's own first step) before the capture;
- warm-up iterations before the capture (cuDNN's and cuBLAS's workspaces, autograd's
  buffers), whose effect on the weights, BN statistics and momentum is undone, so
  that a graphed run trains exactly the steps an eager run does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: Iterations run before the capture, on a side stream, then undone.
GRAPH_WARMUP = 3


@dataclass(frozen=True)
class Speed:
    """The speed keys as they apply on this device: each 'auto' decided, with the reason for the graph's choice."""

    amp: str  # none, bf16, fp16
    channels_last: bool
    optimizer_kernels: str  # fused, foreach, for_loop
    cuda_graph: bool
    compile: bool
    graph_note: str = ""  # why the graph is off where 'auto' left it off

    def describe(self) -> str:
        parts = [
            "fp32" if self.amp == "none" else f"{self.amp} autocast",
            "channels_last" if self.channels_last else "NCHW",
            f"{self.optimizer_kernels.replace('_', ' ')} SGD",
        ]
        if self.compile:
            parts.append("torch.compile")
        parts.append("CUDA graph" if self.cuda_graph else "eager step")
        return ", ".join(parts)


def resolve_speed(recipe: Any, device: torch.device, world: int) -> Speed:
    """The recipe's amp, channels_last, optimizer_kernels and cuda_graph on `device`, each 'auto' decided."""
    cuda = device.type == "cuda"
    amp = recipe["amp"]
    if amp == "auto":
        amp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "none"
    channels_last = recipe["channels_last"]
    if channels_last == "auto":
        channels_last = cuda
    kernels = recipe["optimizer_kernels"]
    if kernels == "auto":
        kernels = "fused" if cuda else "foreach"
    blockers = []
    if not cuda:
        blockers.append("CUDA graphs need a GPU")
    if world > 1:
        blockers.append("a distributed run (DDP's gradient hooks) is not captured")
    if amp == "fp16":
        blockers.append("fp16's gradient scaler reads the gradients on the host")
    if recipe["compile"]:
        blockers.append("'compile' makes its own graphs")
    if recipe["activation_checkpointing"] not in ("spec", "none"):
        blockers.append("activation checkpointing recomputes outside the graph")
    if recipe["sync_batchnorm"] and world > 1:
        blockers.append("SyncBatchNorm communicates")
    graph = recipe["cuda_graph"]
    if graph is True and blockers:
        raise recipe.error("cuda_graph", "'cuda_graph' is true but this run cannot capture its step: " + blockers[0])
    if graph == "auto":
        graph = not blockers
    if graph and kernels != "fused":
        # Only the fused kernel reads a tensor learning rate without a host read; foreach calls .item().
        kernels = "fused"
    return Speed(amp, bool(channels_last), kernels, bool(graph), bool(recipe["compile"]), "; ".join(blockers))


def make_optimizer(parameter_groups: list[dict[str, Any]], recipe: Any, speed: Speed, lr: float, device: torch.device):
    """The paper's SGD with the chosen kernels; under a CUDA graph the learning rate is a tensor on the device."""
    fused, foreach = KERNEL_FLAGS[speed.optimizer_kernels]
    return torch.optim.SGD(
        parameter_groups,
        lr=torch.tensor(lr, device=device) if speed.cuda_graph else lr,
        momentum=recipe["momentum"],
        nesterov=recipe["nesterov"] and recipe["momentum"] > 0,
        weight_decay=recipe["weight_decay"],
        fused=fused,
        foreach=foreach,
    )


KERNEL_FLAGS = {"fused": (True, False), "foreach": (False, True), "for_loop": (False, False)}


def use_kernels(optimizer: torch.optim.Optimizer, kernels: str) -> None:
    """Every group's `fused` and `foreach` flags as `kernels` says.

    A checkpoint's optimizer state carries the flags of the run that saved it, and
    loading it replaces the groups' settings: a run resumed with other kernels (or
    under a CUDA graph, which needs the fused kernel) sets them again after the load.
    """
    fused, foreach = KERNEL_FLAGS[kernels]
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = fused, foreach
    if fused:
        optimizer._need_device_dtype_check_for_fused = True  # as SGD's constructor does for fused=True


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate: in place where it is a tensor (a captured graph reads that tensor)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def tensor_lr(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Make every group's learning rate a tensor on `device` (after loading a state saved with floats)."""
    for group in optimizer.param_groups:
        value = group["lr"]
        if not (isinstance(value, torch.Tensor) and value.device == device):
            group["lr"] = torch.tensor(float(value), device=device)


def float_lr(optimizer: torch.optim.Optimizer) -> None:
    """Every group's learning rate as a float (after loading a state saved with tensors)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = float(group["lr"])


class TrainingStep:
    """One eager step: forward, loss, backward, update; returns the loss and the wrong count, on the device."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any,
        criterion: nn.Module,
        autocast: Callable[[], Any],
        channels_last: bool,
    ) -> None:
        self.model, self.optimizer, self.scaler, self.criterion = model, optimizer, scaler, criterion
        self.autocast, self.channels_last = autocast, channels_last

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            logits = self.model(inputs)
            loss = self.criterion(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            wrong = (logits.argmax(1) != labels).sum()
        return loss.detach(), wrong


class GraphedStep:
    """The same step captured once as a CUDA graph and replayed on each batch.

    ``capture=False`` runs everything the graphed step does except the capture and
    replay (static tensors, the tensor learning rate read by the fused kernel, the
    momentum buffers made before the first step, the warm-up iterations and their
    undoing), calling the eager step instead: how the tests check those parts on the CPU.
    """

    def __init__(self, step: TrainingStep, model: nn.Module, *, capture: bool = True) -> None:
        self.step, self.model, self.capture = step, model, capture
        self.optimizer = step.optimizer
        self.graph: Any = None
        self.inputs: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.note = ""  # why the graph is not used, once the capture was tried (the loop logs it once)
        self.failure = ""  # the same, kept

    def _prepare(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        device = inputs.device
        tensor_lr(self.optimizer, device)
        momentum_buffers(self.optimizer)
        memory_format = torch.channels_last if self.step.channels_last else torch.contiguous_format
        self.inputs = torch.empty_like(inputs, memory_format=memory_format)
        self.labels = torch.empty_like(labels)
        self.inputs.copy_(inputs)
        self.labels.copy_(labels)
        saved = _snapshot(self.model, self.optimizer)
        if not self.capture:
            for _ in range(GRAPH_WARMUP):
                self.step(self.inputs, self.labels)
            _restore(saved)
            return
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(GRAPH_WARMUP):
                    self.step(self.inputs, self.labels)
            torch.cuda.current_stream(device).wait_stream(side)
            _restore(saved)
            # Gradients set to None: the captured backward allocates them from the graph's own pool.
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.outputs = self.step(self.inputs, self.labels)
            self.graph = graph
        except RuntimeError as error:
            # A model the graph cannot hold (an op that syncs or allocates on the host): train eagerly instead.
            torch.cuda.synchronize(device)
            _restore(saved)
            self.optimizer.zero_grad(set_to_none=True)
            self.graph, self.outputs = None, None
            self.failure = f"the CUDA graph capture failed ({str(error).splitlines()[0][:200]}); training eagerly"
            self.note = self.failure

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inputs is None:
            self._prepare(inputs, labels)
        elif inputs.shape != self.inputs.shape or labels.shape != self.labels.shape:
            return self.step(inputs, labels)  # a batch of another size: the graph's shapes are fixed
        else:
            self.inputs.copy_(inputs)
            self.labels.copy_(labels)
        if self.graph is None:
            return self.step(self.inputs, self.labels)
        self.graph.replay()
        assert self.outputs is not None
        return self.outputs


def momentum_buffers(optimizer: torch.optim.Optimizer) -> None:
    """SGD's momentum buffers, made now as zeros where SGD would make them at its first step.

    SGD's first step sets the buffer to the gradient; zeros then ``buf * momentum + grad``
    give the same (dampening is 0). A graph must not allocate state that outlives it.
    """
    for group in optimizer.param_groups:
        if not group.get("momentum"):
            continue
        for parameter in group["params"]:
            state = optimizer.state[parameter]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of every tensor a step changes: parameters, buffers (BN statistics), optimizer state."""
    tensors = [*model.parameters(), *model.buffers()]
    for state in optimizer.state.values():
        tensors.extend(value for value in state.values() if isinstance(value, torch.Tensor))
    with torch.no_grad():
        return [(tensor, tensor.detach().clone()) for tensor in tensors]


def _restore(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for tensor, copy in saved:
            tensor.copy_(copy)


def autocast_for(device: torch.device, amp: str, *, graph: bool = False) -> Callable[[], Any]:
    """The autocast context of a step; inside a CUDA graph without the weight-cast cache (graphs forbid it)."""

    def context() -> Any:
        if amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype, cache_enabled=not graph)

    return context
