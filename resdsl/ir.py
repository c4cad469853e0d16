"""The intermediate representation: a network as a networkx DiGraph of layers.

Nodes are integers, numbered in creation order. As in torch.fx, every node has
ordered inputs (``inputs``, a tuple of node ids: a join's first input is the value it
joins onto) and one of a small set of kinds (:data:`resdsl.layers.NODE_KINDS`).
Graph edges mirror ``inputs`` for networkx's algorithms; :func:`new_node` and
:func:`set_inputs` keep the two in step. Every node carries:

========== ===================================================================
key        meaning (and the pass that writes it)
========== ===================================================================
layer      the typed layer (:mod:`resdsl.layers`); ``layer.kind`` is the node kind
inputs     the ordered input node ids (expand; insert_shortcuts rewires joins)
pos        the source position of the statement it came from (expand)
trace      the instantiation chain, outermost first: :class:`Frame` tuples for
           network aliases, stage lines and blocks used inside blocks (expand)
scope      :class:`Scope`: section, stage, block index and type of the stage-level
           block the node belongs to (expand)
block      the :class:`BlockInstance` (innermost) the node belongs to, or None (expand)
path       the module path of its naming scope, e.g. ``layer1.0.se`` (expand)
label      the user's label (``conv1: conv ...``), possibly a dotted path, or None (expand)
written    the kind as the statement wrote it (``bn`` under ``norm gn(32)``): names
           count by it (expand)
role       ``"main"``, ``"branch"`` (inside a side branch) or ``"shortcut"`` (a
           projection's or zero-pad's layers) (expand, insert_shortcuts)
shape      the output shape, ``(C, H, W)`` or ``(F,)`` (infer_shapes)
name       the qualified module name, e.g. ``layer1.0.conv1`` (assign_names)
params     the number of trainable parameters (count_cost)
macs       multiply-accumulates for one input (count_cost)
========== ===================================================================

Edges carry ``shape`` (the tensor that flows along them, written by infer_shapes).
Block structure (where each block starts, where its shortcut is tapped and joined,
its stride and shortcut plan) is computed once, in :attr:`Network.blocks`, and
backends read it from there.

Backends read these keys; they never re-derive shapes, block structure or names.
"""

from __future__ import annotations

import heapq
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
    projection: str | None = None  # the block type that projects shortcuts; None: 1x1 conv + bn
    norm: str = "bn"  # the kind every `bn` statement builds (the `norm` setting)
    act: str = "relu"  # the kind every `relu` statement builds (the `act` setting)
    norm_layer: Any = None  # the layer `bn` statements build instead, or None
    act_layer: Any = None  # the layer `relu` statements build instead, or None


@dataclass
class BlockInstance:
    """One instance of a block type in the network: a stage's repetition, or a block
    used inside another block. Written by expand (entry, tap, join, nodes) and by
    the shortcut passes (plan, shortcut_nodes, stride); backends read it.
    """

    id: int
    type: str  # the block type's name
    path: str  # its module path, e.g. "layer1.0" or "layer1.0.se"
    parent: int | None  # the enclosing block instance's id
    stage: str | None
    index: int | None  # the repetition within its stage (stage-level blocks)
    block_index: int | None  # 0-based over the network's stage-level blocks
    args: tuple[tuple[str, Any], ...]
    pos: Pos  # the statement or stage line that instantiated it
    entry: int = -1  # the node whose value enters the block
    exit: int = -1  # the node whose value leaves it
    tap: int | None = None  # where `tap shortcut` reads; None: the entry
    join: int | None = None  # the `add shortcut` node (removed under shortcut none)
    plan: Any = None  # the ShortcutPlan of the join (validate)
    shortcut_nodes: tuple[int, ...] = ()  # the projection's or zero-pad's nodes (insert_shortcuts)
    nodes: list[int] = field(default_factory=list)  # every node of the block, nested ones included
    stride: tuple[int, int] = (1, 1)  # the spatial reduction from entry to exit (structure pass)
    names: Any = field(default=None, repr=False)  # its naming scope (expand; resolved by assign_names)
    tap_pos: Pos | None = field(default=None, repr=False)

    @property
    def shortcut_source(self) -> int:
        """Where a projection or zero-pad reads: the tap, else the block's input."""
        return self.tap if self.tap is not None else self.entry


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

    max_layers: int = 20_000  # layers of the whole network, stem and head included
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
    blocks: list[BlockInstance] = field(default_factory=list)
    # What the expand pass reads (the front end's resolved definition); not part of the result.
    instance: Any = field(default=None, repr=False)

    def order(self) -> list[int]:
        """The nodes in execution order: topological, ties broken by creation.

        Cached under the graph's version, which every change through this module
        (:func:`new_node`, :func:`set_inputs`, :func:`remove_node`) bumps: every pass
        walks the graph in this order, and sorting dominated compile time on deep
        networks.
        """
        graph = self.graph
        key = graph.graph.get("version", 0)
        cached = graph.graph.get("order")
        if cached is None or cached[0] != key:
            successors = graph.succ
            pending = {node: len(predecessors) for node, predecessors in graph.pred.items()}
            ready = [node for node, count in pending.items() if count == 0]
            heapq.heapify(ready)
            order: list[int] = []
            while ready:
                node = heapq.heappop(ready)
                order.append(node)
                for reader in successors[node]:
                    pending[reader] -= 1
                    if pending[reader] == 0:
                        heapq.heappush(ready, reader)
            if len(order) != len(pending):  # pragma: no cover - expand builds no cycles
                raise ValueError("the IR has a cycle")
            cached = (key, order)
            graph.graph["order"] = cached
        return cached[1]

    def nodes(self, kind: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(node, attributes) in execution order, optionally of one kind."""
        data = self.graph.nodes
        for node in self.order():
            if kind is None or data[node]["layer"].kind == kind:
                yield node, data[node]

    def layer_count(self) -> int:
        """Layers with weights on the main path (conv and fc, not shortcuts or side
        branches): the "34" of ResNet-34."""
        return sum(
            1
            for _, attrs in self.graph.nodes(data=True)
            if attrs["layer"].kind in ("conv", "fc") and attrs.get("role") == "main"
        )

    def stage_blocks(self) -> list[BlockInstance]:
        """The stage-level block instances, in order."""
        return [block for block in self.blocks if block.parent is None and block.stage is not None]

    def __repr__(self) -> str:
        # One line: the dataclass's repr would print the whole graph.
        shape = "x".join(map(str, self.input_shape))
        return (
            f"<Network {self.name}: {self.layer_count()} layers, {self.num_params:,} params, "
            f"{self.macs / 1e9:.3f} GMACs, input {shape}>"
        )

    def _repr_svg_(self) -> str | None:
        """Jupyter draws the network inline (block detail); None where Graphviz's dot is missing."""
        import shutil

        from resdsl.backends.draw import to_dot

        if shutil.which("dot") is None:
            return None
        return to_dot([self], detail="block").pipe(format="svg").decode("utf-8")

    def summary(self) -> str:
        shape = "x".join(map(str, self.output_shape))
        return f"{self.name}: {self.num_params:,} params, {self.macs / 1e9:.3f} GMACs, output {shape}"


def new_node(graph: nx.DiGraph, layer: Layer, inputs: tuple[int, ...] = (), **attrs: Any) -> int:
    node = graph.graph.get("next_id", 0)
    graph.graph["next_id"] = node + 1
    _touch(graph)
    graph.add_node(node, layer=layer, inputs=tuple(inputs), **attrs)
    for source in inputs:
        graph.add_edge(source, node)
    return node


def set_inputs(graph: nx.DiGraph, node: int, inputs: tuple[int, ...]) -> None:
    """Rewire a node's ordered inputs, keeping the graph's edges in step."""
    _touch(graph)
    for source in set(graph.nodes[node]["inputs"]) - set(inputs):
        graph.remove_edge(source, node)
    graph.nodes[node]["inputs"] = tuple(inputs)
    for source in inputs:
        if not graph.has_edge(source, node):
            shape = graph.nodes[source].get("shape")
            graph.add_edge(source, node, **({"shape": shape} if shape is not None else {}))


def remove_node(graph: nx.DiGraph, node: int) -> None:
    _touch(graph)
    graph.remove_node(node)


def _touch(graph: nx.DiGraph) -> None:
    graph.graph["version"] = graph.graph.get("version", 0) + 1


def readers(graph: nx.DiGraph, node: int) -> list[int]:
    """The nodes that read `node`'s value."""
    return list(graph.successors(node))


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
        scope = attrs["scope"]
        where = f"in block '{scope.block}', repetition {scope.index}"
        if trace[-1].what.startswith("block "):
            # The layer is in a block used inside the stage's block: name the one it is in.
            where = f"in {trace[-1].what}, used by block '{scope.block}', repetition {scope.index}"
        notes.append(Note(where, pos))
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
