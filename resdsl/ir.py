"""The intermediate representation: a network as a dataflow graph of typed nodes.

As in torch.fx, every node is one typed object, a :class:`Node`: its layer (the
kind, :data:`resdsl.layers.NODE_KINDS`), its ordered inputs (node ids; a join's
first input is the value it joins onto), the nodes that read it (``users``), and
typed fields for what the passes write (position, scope, shape, name, parameters,
MACs). The graph is a :class:`Graph`, a ``networkx.DiGraph`` whose node ids
(integers, in creation order) map to their :class:`Node` (``graph.node(id)``, or
``graph.nodes[id]["node"]`` from plain networkx). One class owns every change:
:meth:`Graph.create`, :meth:`Graph.set_inputs`, :meth:`Graph.replace_input`,
:meth:`Graph.replace_all_uses_with` and :meth:`Graph.erase` derive the edges and the
users from the inputs, so the three never disagree, and :meth:`Graph.lint` checks
that they do not (tests run it after every pass).

Block structure (where each block starts, where its shortcut is tapped and joined,
its stride and shortcut plan) is computed once, in :attr:`Network.blocks`, and
backends read it from there. Backends read the typed fields; they never re-derive
shapes, block structure or names. docs/ir.md documents every field.
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


@dataclass(eq=False)
class NameScope:
    """Where a node's module name is rooted. The naming pass resolves it to a path:
    ``label`` when given (a dotted path, relative to the parent), else the block
    type numbered within the parent (``se1``). A projection's scope numbers its
    unlabelled layers by position, as ``nn.Sequential`` does."""

    parent: NameScope | None
    label: str | None = None
    written: str = ""
    by_position: bool = False
    pos: Pos | None = None


class Node:
    """One node of the IR: a layer applied to ordered inputs, and what the passes know of it.

    ``inputs`` and ``users`` are read-only here: :class:`Graph` changes them, keeping
    the graph's edges in step. The other fields are plain attributes, written by the
    pass named beside each (docs/ir.md, "Node fields").
    """

    __slots__ = (
        "_inputs",
        "_users",
        "block",
        "id",
        "label",
        "label_pos",
        "layer",
        "macs",
        "name",
        "names",
        "params",
        "pos",
        "role",
        "scope",
        "shape",
        "trace",
        "written",
    )

    def __init__(
        self,
        id: int,
        layer: Layer,
        inputs: tuple[int, ...] = (),
        *,
        pos: Pos | None = None,
        trace: tuple[Frame, ...] = (),
        scope: Scope | None = None,
        block: int | None = None,
        names: NameScope | None = None,
        label: str | None = None,
        label_pos: Pos | None = None,
        written: str = "",
        role: str = "main",
        shape: Shape | None = None,
        name: str | None = None,
        params: int | None = None,
        macs: int | None = None,
    ) -> None:
        self.id = id
        self.layer = layer  # the typed layer; its class is the node's kind (expand)
        self._inputs = tuple(inputs)  # ordered input ids (Graph)
        self._users: dict[int, None] = {}  # the nodes reading this one, in the order they began to (Graph)
        self.pos = pos  # the statement it came from (expand)
        self.trace = trace  # the instantiation chain, outermost first (expand)
        self.scope = scope  # the stage-level block it belongs to (expand)
        self.block = block  # id of the innermost BlockInstance holding it, or None (expand)
        self.names = names  # the naming scope its module name is rooted in (expand)
        self.label = label  # the user's label, possibly a dotted path (expand)
        self.label_pos = label_pos  # where the label is written (expand)
        self.written = written  # the kind as written: unlabelled names count by it (expand)
        self.role = role  # "main", "branch" or "shortcut" (expand)
        self.shape = shape  # output shape, (C, H, W) or (F,) (expand, as each node is made)
        self.name = name  # qualified module name, e.g. layer1.0.conv1 (assign_names)
        self.params = params  # trainable parameters (count_cost)
        self.macs = macs  # multiply-accumulates for one input (count_cost)

    @property
    def kind(self) -> str:
        return self.layer.kind

    @property
    def inputs(self) -> tuple[int, ...]:
        return self._inputs

    @property
    def users(self) -> tuple[int, ...]:
        return tuple(self._users)

    def __repr__(self) -> str:
        inputs = ", ".join(f"%{source}" for source in self._inputs)
        return f"<Node %{self.id} {self.name or self.kind} = {self.kind}({inputs})>"


#: The fields lint can ask for, and how each is read.
_FIELD_READERS = {
    "shape": lambda node: node.shape,
    "name": lambda node: node.name,
    "params": lambda node: node.params,
    "macs": lambda node: node.macs,
}

#: The fields a node must have once the pass that writes them has run (checked by lint).
WRITTEN_BY = {"elaborate": ("shape",), "assign_names": ("name",), "count_cost": ("params", "macs")}


class IRError(AssertionError):
    """The IR broke an invariant (raised by lint): a compiler bug, never the user's."""


class Graph(nx.DiGraph):
    """The IR's graph: node ids map to typed :class:`Node` objects, and this class owns
    every change to inputs, so that edges (networkx's) and users (the nodes') are
    derived from them and never disagree.

    It is a ``networkx.DiGraph``, so networkx's algorithms read it directly; each
    networkx node's data holds one key, ``"node"``, the typed node, and is the only
    map from ids to nodes (a networkx copy reads the same nodes). Change the graph
    only through the methods below (networkx's own ``add_edge`` and ``remove_node``
    would bypass them; :meth:`lint` reports it).
    """

    def __init__(self, incoming_graph_data: Any = None, **attr: Any) -> None:
        super().__init__(incoming_graph_data, **attr)
        self._next_id = 0
        self._version = 0
        self._order: tuple[int, list[int]] | None = None

    # Reading ------------------------------------------------------------------------

    def node(self, node: int) -> Node:
        """The typed node of an id."""
        return self._node[node]["node"]

    @property
    def next_id(self) -> int:
        """The id the next created node will have (ids count up from 0)."""
        return self._next_id

    def users(self, node: int) -> tuple[int, ...]:
        """The nodes that read `node`'s value."""
        return self._node[node]["node"].users

    def execution_order(self) -> list[int]:
        """The node ids in execution order: topological, ties broken by creation.

        Cached under a version that every change bumps: every pass walks the graph in
        this order, and sorting dominated compile time on deep networks.
        """
        if self._order is None or self._order[0] != self._version:
            pending = {node: len(set(data["node"]._inputs)) for node, data in self._node.items()}
            ready = [node for node, count in pending.items() if count == 0]
            heapq.heapify(ready)
            order: list[int] = []
            while ready:
                node = heapq.heappop(ready)
                order.append(node)
                for reader in self._node[node]["node"]._users:
                    pending[reader] -= 1
                    if pending[reader] == 0:
                        heapq.heappush(ready, reader)
            if len(order) != len(pending):
                raise IRError("the IR has a cycle")
            self._order = (self._version, order)
        return self._order[1]

    def walk(self, kind: str | None = None) -> Iterator[Node]:
        """The typed nodes in execution order, optionally of one kind."""
        data = self._node
        for node in self.execution_order():
            typed = data[node]["node"]
            if kind is None or typed.layer.kind == kind:
                yield typed

    # Changing -----------------------------------------------------------------------

    def create(self, layer: Layer, inputs: tuple[int, ...] = (), **fields: Any) -> Node:
        """A new node reading `inputs` (ids of existing nodes), with the given fields."""
        node = Node(self._next_id, layer, tuple(inputs), **fields)
        for source in node._inputs:
            if source not in self._node:
                raise IRError(f"node {node.id} reads node {source}, which is not in the graph")
        self._next_id += 1
        self._version += 1
        self.add_node(node.id, node=node)
        for source in node._inputs:
            self._link(source, node.id)
        return node

    def set_inputs(self, node: int, inputs: tuple[int, ...]) -> None:
        """Rewire a node's ordered inputs; edges and users follow."""
        typed = self._node[node]["node"]
        inputs = tuple(inputs)
        for source in inputs:
            if source not in self._node:
                raise IRError(f"node {node} would read node {source}, which is not in the graph")
        self._version += 1
        for source in set(typed._inputs) - set(inputs):
            self.remove_edge(source, node)
            del self._node[source]["node"]._users[node]
        typed._inputs = inputs
        for source in inputs:
            if not self.has_edge(source, node):
                self._link(source, node)

    def replace_input(self, node: int, old: int, new: int) -> None:
        """Every use of `old` among `node`'s inputs becomes `new`."""
        self.set_inputs(node, tuple(new if source == old else source for source in self._node[node]["node"]._inputs))

    def replace_all_uses_with(self, node: int, replacement: int) -> list[int]:
        """Every node reading `node` reads `replacement` instead; returns those nodes."""
        changed = list(self._node[node]["node"]._users)
        for user in changed:
            self.replace_input(user, node, replacement)
        return changed

    def erase(self, node: int) -> None:
        """Remove a node that nothing reads."""
        typed = self._node[node]["node"]
        if typed._users:
            raise IRError(f"cannot erase node {node}: nodes {sorted(typed._users)} still read it")
        self._version += 1
        for source in set(typed._inputs):
            del self._node[source]["node"]._users[node]
        self.remove_node(node)

    def _link(self, source: int, node: int) -> None:
        self.add_edge(source, node)
        self._node[source]["node"]._users[node] = None

    # Checking -----------------------------------------------------------------------

    def lint(self, fields: tuple[str, ...] = ()) -> None:
        """Check every invariant of the graph; an :class:`IRError` names the first broken one.

        Edges, inputs and users agree; execution order is topological and complete;
        each node's data is its typed node alone (no pass scaffolding); every node has
        `fields` set and as many inputs as its kind takes.
        """
        typed: dict[int, Node] = {}
        for node_id, data in self._node.items():
            node = data.get("node")
            if len(data) != 1 or not isinstance(node, Node) or node.id != node_id:
                raise IRError(f"node {node_id} carries {sorted(data)}, not its typed node alone")
            typed[node_id] = node
        if self.graph:
            raise IRError(f"the graph carries attributes {sorted(self.graph)}")
        need_shape, need_name = "shape" in fields, "name" in fields
        need_cost = "params" in fields or "macs" in fields
        edges = set()
        for node_id, node in typed.items():
            for source in node._inputs:
                if source not in typed:
                    raise IRError(f"node {node_id} reads node {source}, which is not in the graph")
                edges.add((source, node_id))
                if node_id not in typed[source]._users:
                    raise IRError(f"node {node_id} reads node {source} but is not among its users")
            for user in node._users:
                if user not in typed or node_id not in typed[user]._inputs:
                    raise IRError(f"node {user} is a user of node {node_id} but does not read it")
            if (
                (need_shape and node.shape is None)
                or (need_name and node.name is None)
                or (need_cost and (node.params is None or node.macs is None))
            ):
                missing = [name for name in fields if _FIELD_READERS[name](node) is None]
                raise IRError(f"node {node_id} ({node.kind}) has no {', '.join(missing)}")
            arity = node.layer.arity
            count = len(node._inputs)
            if count != arity if arity is not None else count < 2:
                wanted = arity if arity is not None else "two or more"
                raise IRError(f"node {node_id} ({node.kind}) has {count} inputs; the kind takes {wanted}")
        actual = set()
        for source, targets in self._succ.items():
            for target, data in targets.items():
                actual.add((source, target))
                if data:
                    raise IRError(f"the edge {source} -> {target} carries attributes")
        if edges != actual:
            raise IRError(f"edges and inputs differ: {sorted(edges ^ actual)}")
        order = self.execution_order()
        position = {node: index for index, node in enumerate(order)}
        if len(position) != len(typed):
            raise IRError("the execution order misses nodes")
        for node_id, node in typed.items():
            if any(position[source] >= position[node_id] for source in node._inputs):
                raise IRError(f"node {node_id} runs before one of its inputs")


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
    features: tuple[str, ...] = ()  # the `features` setting: the modules features_only returns (timm's)


@dataclass
class BlockInstance:
    """One instance of a block type in the network: a stage's repetition, or a block
    used inside another block. Written by expand (entry, tap, join, plan, shortcut
    nodes, nodes), block_structure (stride) and assign_names (path); backends read it.
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
    join: int | None = None  # the `add shortcut` node (None under shortcut none)
    plan: Any = None  # the ShortcutPlan of `add shortcut`, decided where it is expanded
    shortcut_nodes: tuple[int, ...] = ()  # the projection's or zero-pad's nodes
    nodes: list[int] = field(default_factory=list)  # every node of the block, nested ones included
    stride: tuple[int, int] = (1, 1)  # the spatial reduction from entry to exit (structure pass)
    names: Any = field(default=None, repr=False)  # its naming scope (expand; resolved by assign_names)
    tap_pos: Pos | None = field(default=None, repr=False)
    join_pos: Pos | None = field(default=None, repr=False)  # where `add shortcut` stands

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
    #: Statements the expander runs, each loop iteration and each block instance counting one
    #: more: the work of unrolling, which a loop whose body makes no layer does not show in layers.
    max_statements: int = 100_000
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

    The passes fill it in; after :func:`resdsl.compile` returns, every node has every
    field documented in docs/ir.md (``Network.lint`` checks it).
    """

    name: str
    graph: Graph
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
    #: The records of the IR rewrites that made this network from the compiled one, in
    #: order (resdsl.passes.rewrite): what a backend does to the compiled network's weights.
    rewrites: tuple[Any, ...] = ()
    #: resdsl.errors.SpecWarning: what compiles but is likely not meant, in the order of the file.
    warnings: list = field(default_factory=list)

    def order(self) -> list[int]:
        """The node ids in execution order: topological, ties broken by creation."""
        return self.graph.execution_order()

    def nodes(self, kind: str | None = None) -> Iterator[Node]:
        """The typed nodes in execution order, optionally of one kind."""
        return self.graph.walk(kind)

    def node(self, node: int) -> Node:
        """The typed node of an id."""
        return self.graph.node(node)

    def layer_count(self) -> int:
        """Layers with weights on the main path (the kinds that count as layers, not
        shortcuts or side branches): the "34" of ResNet-34."""
        return sum(1 for node in self.graph.walk() if node.layer.counts_as_layer and node.role == "main")

    def lint(self, fields: tuple[str, ...] = ()) -> None:
        """:meth:`Graph.lint`, and the block records against the graph: every node a
        block names exists, each node's block holds it, shortcut nodes are the block's
        own, a block with a plan other than ``none`` has its join, and the expander
        left nothing on the network."""
        graph = self.graph
        graph.lint(fields)
        if "params" in fields or "macs" in fields:
            self._lint_totals()
        by_id = {block.id: block for block in self.blocks}
        members = {block.id: set(block.nodes) for block in self.blocks}
        present = set(graph)
        for block in self.blocks:
            for what, node in (("entry", block.entry), ("exit", block.exit), ("tap", block.tap), ("join", block.join)):
                if node is not None and node not in present:
                    raise IRError(f"block {block.id} ({block.type}) names node {node} as its {what}, not in the graph")
            missing = members[block.id] - present
            if missing:
                raise IRError(f"block {block.id} ({block.type}) holds nodes {sorted(missing)}, not in the graph")
            if not set(block.shortcut_nodes) <= members[block.id]:
                raise IRError(f"block {block.id} ({block.type}) has shortcut nodes outside it")
            if block.parent is not None and not members[block.id] <= members[block.parent]:
                raise IRError(f"block {block.id} ({block.type}) has nodes its parent {block.parent} lacks")
            if block.join is not None:
                join = graph.node(block.join)
                if not join.layer.is_join:
                    raise IRError(f"block {block.id} ({block.type}) joins its shortcut at a {join.kind} node")
            if block.plan is not None and (block.plan.kind == "none") != (block.join is None):
                raise IRError(f"block {block.id} ({block.type}) has a {block.plan.kind} shortcut but join {block.join}")
        for node in graph.walk():
            if node.block is not None and (node.block not in by_id or node.id not in members[node.block]):
                raise IRError(f"node {node.id} ({node.kind}) names block {node.block}, which does not hold it")

    def _lint_totals(self) -> None:
        """The network's totals are its nodes' sums, and its stages partition them: a
        rewrite that changed the graph without recomputing the analyses fails here."""
        nodes = list(self.graph.walk())
        sums = (
            ("params", self.num_params, sum(node.params for node in nodes), sum(stage.params for stage in self.stages)),
            ("macs", self.macs, sum(node.macs for node in nodes), sum(stage.macs for stage in self.stages)),
        )
        for what, total, summed, staged in sums:
            if summed != total:
                raise IRError(f"the network's {what} total is {total:,} but its nodes sum to {summed:,}")
            if staged != total:
                raise IRError(f"the network's stages sum to {staged:,} {what}, its total is {total:,}")
        stage_level = {}
        for block in self.stage_blocks():
            stage_level.setdefault(block.stage, set()).add(block.index)
        for stage in self.stages:
            if stage.section == "stage" and stage.blocks != len(stage_level.get(stage.name, ())):
                raise IRError(
                    f"stage {stage.name} counts {stage.blocks} blocks; the network has "
                    f"{len(stage_level.get(stage.name, ()))} there"
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

    def summary(self) -> str:
        shape = "x".join(map(str, self.output_shape))
        return f"{self.name}: {self.num_params:,} params, {self.macs / 1e9:.3f} GMACs, output {shape}"


# Module-level forms of the Graph methods, for code written before Graph had them.


def new_node(graph: Graph, layer: Layer, inputs: tuple[int, ...] = (), **fields: Any) -> int:
    """:meth:`Graph.create`, returning the new node's id."""
    return graph.create(layer, inputs, **fields).id


def set_inputs(graph: Graph, node: int, inputs: tuple[int, ...]) -> None:
    """:meth:`Graph.set_inputs`."""
    graph.set_inputs(node, inputs)


def remove_node(graph: Graph, node: int) -> None:
    """:meth:`Graph.erase`."""
    graph.erase(node)


def readers(graph: Graph, node: int) -> list[int]:
    """The nodes that read `node`'s value (:meth:`Graph.users`)."""
    return list(graph.users(node))


def node_error(graph: Graph, node: int, message: str, hint: str | None = None, cls=SpecError) -> SpecError:
    """An error about a node, at the user's line that instantiated it (:func:`located_error`)."""
    typed = graph.node(node)
    return located_error(typed.pos, typed.trace, typed.scope, message, hint, cls)


def located_error(
    pos: Pos, trace: tuple[Frame, ...], scope: Scope | None, message: str, hint: str | None = None, cls=SpecError
) -> SpecError:
    """An error about a statement expanded at `trace` in `scope`, at the user's line.

    A layer written in a block is reported at the stage line that expanded the
    block, with the block's own line as a note; a layer written directly in the
    network is reported at its own line.
    """
    notes: list[Note] = []
    primary = pos
    if scope is not None and scope.block is not None and trace:
        primary = trace[-1].pos
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
    return 4 * sum(math.prod(node.shape) for node in network.graph.walk())


#: Largest kernel, stride, padding or dilation a forward pass is run with: torch's CPU
#: kernels overflow their offsets near 2**63 (a stride of 2**63 - 1 fails for a batch of
#: two), and GPU kernels index with 32-bit integers.
MAX_KERNEL_SIZE = 2**31 - 1


def check_forward_pass(network: Network) -> None:
    """A LimitError if one forward pass would need more than ``limits.max_activation_bytes``,
    or a layer's sizes are past what torch's kernels index (MAX_KERNEL_SIZE)."""
    for node in network.graph.walk():
        fields = getattr(node.layer, "__dict__", {})  # the layer dataclass's fields
        for what in ("kernel", "stride", "padding", "dilation"):
            sizes = fields.get(what)
            if isinstance(sizes, tuple) and max(sizes) > MAX_KERNEL_SIZE:
                raise node_error(
                    network.graph,
                    node.id,
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
