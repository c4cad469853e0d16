"""The intermediate representation: a network as a networkx DiGraph of layers.

Nodes are integers, numbered in creation order. Every node carries:

========== ===================================================================
key        meaning (and the pass that writes it)
========== ===================================================================
layer      the typed layer (:mod:`resdsl.layers`); ``layer.kind`` is the node kind
pos        the source position of the statement it came from (expand)
trace      the instantiation chain, outermost first: :class:`Frame` tuples for
           network aliases and the stage line that expanded a block (expand)
scope      :class:`Scope`: section, stage, block index and type (expand)
label      the user's label (``conv1: conv ...``) or None (expand)
branch     ``"main"`` or ``"shortcut"``: which path of its block it lies on (expand)
shape      the output shape, ``(C, H, W)`` or ``(F,)`` (infer_shapes)
shortcut   on ``add`` nodes: the :class:`~resdsl.passes.shortcuts.ShortcutPlan` (validate)
name       the qualified module name, e.g. ``layer1.0.conv1`` (assign_names)
params     the number of trainable parameters (count_cost)
macs       multiply-accumulates for one input (count_cost)
========== ===================================================================

Edges carry ``role`` (``"main"`` or ``"shortcut"``: the two inputs of an add) and
``shape`` (the tensor that flows along them, written by infer_shapes).

Backends read these keys; they never re-derive shapes or names.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from resdsl.errors import LimitError, Note, Pos, SpecError
from resdsl.layers import Layer, Shape


@dataclass(frozen=True)
class Frame:
    """One step of instantiation: ``network cifar110 = cifar_resnet(n=18)``, a stage line."""

    what: str
    pos: Pos


@dataclass(frozen=True)
class Scope:
    """Where a node lives. Nodes of one block instance share one Scope object."""

    section: str  # "stem", "stage", "head" or "body" (a layer written directly in the network)
    stage: str | None = None
    index: int | None = None  # the block's repetition within its stage
    block: str | None = None  # the block type's name
    args: tuple[tuple[str, Any], ...] = ()  # the block's bound arguments

    @property
    def prefix(self) -> str:
        """The module path of the block (``layer1.0``), or "" at the top level."""
        return f"{self.stage}.{self.index}" if self.stage is not None else ""


@dataclass(frozen=True)
class Settings:
    """A network's settings (``input``, ``shortcut``...), after overrides."""

    input_shape: Shape
    shortcut: str  # "A", "B", "C" or "none"
    zero_init_residual: bool = False
    checkpoint: str = "none"  # "none", "stage" or "block": activation checkpointing in the torch backend


@dataclass(frozen=True)
class StageSummary:
    """Per-stage figures: one row of the paper's Table 1."""

    name: str
    section: str
    blocks: int
    block: str | None
    args: tuple[tuple[str, Any], ...]
    output_shape: Shape
    params: int
    macs: int


@dataclass(frozen=True)
class Limits:
    """Bounds checked before work is done."""

    max_layers: int = 20_000
    max_params: int = 2_000_000_000  # checked by resdsl.load before any tensor is allocated
    max_use_depth: int = 32
    max_file_bytes: int = 4 * 1024 * 1024
    #: Tokens of a spec and the files it uses together (resdsl.parser.MAX_TOKENS).
    max_tokens: int = 20_000
    #: Bytes of the activations one forward pass holds at once, for a batch of one (float32),
    #: checked by resdsl.load and `resdsl build` before a tensor is allocated.
    max_activation_bytes: int = 4 * 1024**3


@dataclass
class Network:
    """A compiled network: the validated IR and its figures.

    The passes fill it in; after :func:`resdsl.compile` returns, every documented
    node key is present.
    """

    name: str
    graph: nx.DiGraph
    settings: Settings
    path: str
    pos: Pos
    limits: Limits = field(default_factory=Limits)
    input_shape: Shape = ()
    output_shape: Shape = ()
    num_params: int = 0
    macs: int = 0
    stages: tuple[StageSummary, ...] = ()
    # What the expand pass reads (the front end's resolved definition); not part of the result.
    instance: Any = field(default=None, repr=False)

    def order(self) -> list[int]:
        """The nodes in execution order: topological, ties broken by creation.

        Cached: every pass walks the graph in this order, and sorting dominated
        compile time on deep networks. Passes only add nodes and edges or remove
        them, so the node and edge counts and the next id tell a stale cache.
        """
        graph = self.graph
        key = (graph.number_of_nodes(), graph.number_of_edges(), graph.graph.get("next_id"))
        cached = graph.graph.get("order")
        if cached is None or cached[0] != key:
            cached = (key, list(nx.lexicographical_topological_sort(graph)))
            graph.graph["order"] = cached
        return cached[1]

    def nodes(self, kind: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(node, attributes) in execution order, optionally of one kind."""
        data = self.graph.nodes
        for node in self.order():
            if kind is None or data[node]["layer"].kind == kind:
                yield node, data[node]

    def layer_count(self) -> int:
        """Layers with weights (conv and fc, not shortcuts): the "34" of ResNet-34."""
        return sum(
            1
            for _, attrs in self.graph.nodes(data=True)
            if attrs["layer"].kind in ("conv", "fc") and attrs.get("branch") != "shortcut"
        )

    def summary(self) -> str:
        shape = "x".join(map(str, self.output_shape))
        return f"{self.name}: {self.num_params:,} params, {self.macs / 1e9:.3f} GMACs, output {shape}"


def new_node(graph: nx.DiGraph, layer: Layer, **attrs: Any) -> int:
    node = graph.graph.get("next_id", 0)
    graph.graph["next_id"] = node + 1
    graph.add_node(node, layer=layer, **attrs)
    return node


def node_error(graph: nx.DiGraph, node: int, message: str, hint: str | None = None, cls=SpecError) -> SpecError:
    """An error about a node, at the user's line that instantiated it.

    A layer written in a block is reported at the stage line that expanded the
    block, with the block's own line as a note; a layer written directly in the
    network is reported at its own line.
    """
    attrs = graph.nodes[node]
    pos: Pos = attrs["pos"]
    trace: tuple[Frame, ...] = attrs.get("trace", ())
    notes: list[Note] = []
    primary = pos
    if attrs["scope"].block is not None and trace:
        primary = trace[-1].pos
        notes.append(Note(f"in block '{attrs['scope'].block}', repetition {attrs['scope'].index}", pos))
        outer = trace[:-1]
    else:
        outer = trace
    for frame in reversed(outer):
        notes.append(Note(f"instantiated by {frame.what}", frame.pos))
    return cls(message, primary, hint, notes)


def activation_bytes(network: Network) -> int:
    """Bytes of every tensor one forward pass makes for one float32 input.

    What a training step keeps for backward; for an inference pass, which frees
    tensors as it goes, an upper bound. Read from the IR's shapes, so known before
    anything is allocated.
    """
    return 4 * sum(math.prod(attrs["shape"]) for _, attrs in network.graph.nodes(data=True))


#: Largest kernel, stride, padding or dilation a forward pass is run with: torch's CPU
#: kernels overflow their offsets near 2**63 (a stride of 2**63 - 1 fails for a batch of
#: two), and GPU kernels index with 32-bit integers.
MAX_KERNEL_SIZE = 2**31 - 1


def check_forward_pass(network: Network) -> None:
    """A LimitError if one forward pass would need more than ``limits.max_activation_bytes``,
    or a layer's sizes are past what torch's kernels index (MAX_KERNEL_SIZE)."""
    for node, attrs in network.graph.nodes(data=True):
        fields = getattr(attrs["layer"], "__dict__", {})  # the layer dataclass's fields
        for what in ("kernel", "stride", "padding", "dilation"):
            sizes = fields.get(what)
            if isinstance(sizes, tuple) and max(sizes) > MAX_KERNEL_SIZE:
                raise node_error(
                    network.graph,
                    node,
                    f"a {what} of {max(sizes):,} is past what torch's kernels take ({MAX_KERNEL_SIZE:,})",
                    "a stride or padding larger than the input does nothing a smaller one would not",
                    cls=LimitError,
                )
    needed, limit = activation_bytes(network), network.limits.max_activation_bytes
    if needed > limit:
        raise LimitError(
            f"one forward pass of {network.name} needs {needed / 2**30:,.3g} GiB of activations, "
            f"more than the limit of {limit / 2**30:,.3g} GiB",
            network.pos,
            "check the input shape and the strides and paddings; Limits(max_activation_bytes=...) raises the bound",
        )
