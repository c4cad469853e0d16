"""Pass 1: unroll a bound network into the layer graph.

Settings are evaluated and overrides applied; stages repeat their block, a
``stride`` argument reaching only the first repetition (the paper's conv3_1,
conv4_1, conv5_1); each block's statements become nodes, and ``add shortcut``
becomes an ``add`` node fed by the main branch and by the block's input. Under
``shortcut none`` the add stays for now: the shortcut pass removes it once shapes
are known, so validation sees every block the same way.

The size bound is checked from the definitions before a single node exists.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx

from resdsl import syntax as ast
from resdsl.errors import LimitError, Note, Pos, SpecError, UnknownNameError, unknown
from resdsl.evaluate import Value, as_bool, as_int, describe, evaluate
from resdsl.frontend import Instance, _bind
from resdsl.ir import Frame, Network, Scope, Settings, new_node
from resdsl.layers import ADD_SHORTCUT, LAYER_KINDS, SYNONYMS, Add, Flatten, Input, Linear, Output, build_layer

SHORTCUT_OPTIONS = ("A", "B", "C", "none")
CHECKPOINT_OPTIONS = ("none", "stage", "block")
SETTINGS = ("input", "shortcut", "zero_init_residual", "checkpoint")


def expand(network: Network) -> None:
    instance: Instance = network.instance
    definition = instance.definition
    env = dict(instance.params)
    for item in definition.body:
        # A network's own lines are mostly settings, so a misspelt word here
        # ('shortcuts B', 'inptu 3x32x32') is more likely a setting than a layer;
        # checked first, so that 'inptu' is not reported as a missing input.
        if isinstance(item, ast.Statement) and item.kind not in (*SETTINGS, *LAYER_KINDS, ADD_SHORTCUT):
            raise unknown(
                "setting or layer kind",
                item.kind,
                [*SETTINGS, *LAYER_KINDS],
                item.kind_pos,
                guess=SYNONYMS.get(item.kind.lower()),
            )
    network.settings = _settings(definition, instance, env)
    stages = [item for item in definition.body if isinstance(item, ast.Stage)]
    first_stage: dict[str, ast.Stage] = {}
    for stage in stages:
        # Two stages of one name would share module scopes (both hold 'S.0'), merging
        # their blocks' layers into one module instead of failing at load time.
        if stage.name in first_stage:
            raise SpecError(
                f"two stages are named '{stage.name}'", stage.name_pos, "give each stage its own name"
            ).with_note("the other one", first_stage[stage.name].name_pos)
        first_stage[stage.name] = stage
    plans = [_plan_stage(stage, instance, env) for stage in stages]
    _check_size(network, definition, plans)

    graph = network.graph
    trace = instance.trace
    top = {"stem": Scope("stem"), "head": Scope("head"), "body": Scope("body")}
    last = new_node(
        graph,
        Input(network.settings.input_shape),
        pos=instance.pos,
        trace=trace,
        scope=top["body"],
        label=None,
        branch="main",
    )
    builder = _Builder(graph, trace)
    plan_of = dict(zip(map(id, stages), plans, strict=True))
    for item in definition.body:
        if isinstance(item, ast.Statement):
            if item.kind in SETTINGS:
                continue
            last = builder.layer(item, env, last, top["body"], trace)
        elif isinstance(item, ast.Section):
            for statement in item.body:
                last = builder.layer(statement, env, last, top[item.kind], trace)
        else:
            last = builder.stage(item, plan_of[id(item)], last)
    new_node(graph, Output(), pos=definition.pos, trace=trace, scope=top["body"], label=None, branch="main")
    graph.add_edge(last, graph.graph["next_id"] - 1, role="main")


def _settings(definition: ast.Network, instance: Instance, env: Mapping[str, Value]) -> Settings:
    written: dict[str, tuple[ast.Expr, Pos]] = {}
    for item in definition.body:
        if isinstance(item, ast.Statement) and item.kind in SETTINGS:
            if item.label is not None:
                raise SpecError(f"the setting '{item.kind}' cannot have a label", item.label_pos)
            if len(item.args) != 1 or not isinstance(item.args[0], ast.Positional):
                raise SpecError(f"the setting '{item.kind}' takes one value", item.pos, _SETTING_USAGE[item.kind])
            if item.kind in written:
                raise SpecError(f"'{item.kind}' is set twice", item.pos).with_note(
                    "first set here", written[item.kind][1]
                )
            written[item.kind] = (item.args[0].value, item.pos)
    for override in instance.overrides:
        if override.name not in SETTINGS:
            raise unknown("setting", override.name, SETTINGS, override.pos)
        written[override.name] = (override.value, override.pos)

    if "input" not in written:
        raise SpecError(
            f"network '{definition.name}' has no input shape", definition.name_pos, "add a line: input 3x224x224"
        )
    expr, _ = written["input"]
    shape = evaluate(expr, env)
    if not (isinstance(shape, tuple) and len(shape) == 3):
        raise SpecError(f"input takes C x H x W, such as 3x224x224; got {describe(shape)}", expr.pos)
    for size in shape:
        as_int(size, expr.pos, "every input size")

    # B is torchvision's choice, and the paper's for its deeper networks.
    shortcut = _choice(written, "shortcut", SHORTCUT_OPTIONS, "B", env)
    checkpoint = _choice(written, "checkpoint", CHECKPOINT_OPTIONS, "none", env)
    zero_init = False
    if "zero_init_residual" in written:
        expr, _ = written["zero_init_residual"]
        zero_init = as_bool(evaluate(expr, env), expr.pos, "zero_init_residual")
    return Settings(shape, shortcut, zero_init, checkpoint)


def _choice(
    written: Mapping[str, tuple[ast.Expr, Pos]], name: str, options: tuple[str, ...], default: str, env
) -> str:
    """A setting whose value is one of a few words (shortcut A/B/C/none, checkpoint ...)."""
    if name not in written:
        return default
    expr, _ = written[name]
    if not isinstance(expr, ast.Name) or expr.id not in options:
        word = expr.id if isinstance(expr, ast.Name) else describe(evaluate(expr, env))
        raise unknown(f"{name} option", word, options, expr.pos)
    return expr.id


_SETTING_USAGE = {
    "input": "write: input 3x224x224",
    "shortcut": "write: shortcut A, B, C or none",
    "zero_init_residual": "write: zero_init_residual true",
    "checkpoint": "write: checkpoint none, stage or block",
}


class _StagePlan:
    """A stage's block, repeat count and per-repetition bindings, before any node exists."""

    def __init__(
        self, stage: ast.Stage, block: ast.Block, repeat: int, first: dict[str, Value], rest: dict[str, Value]
    ) -> None:
        self.stage, self.block, self.repeat, self.first, self.rest = stage, block, repeat, first, rest

    @property
    def layers(self) -> int:
        return self.repeat * (len(self.block.body) + 1)  # + 1: a shortcut layer per block, at most


def _plan_stage(stage: ast.Stage, instance: Instance, env: Mapping[str, Value]) -> _StagePlan:
    if stage.block not in instance.namespace.blocks:
        raise unknown("block", stage.block, instance.namespace.blocks, stage.block_pos)
    block, _ = instance.namespace.blocks[stage.block]
    repeat = 1
    if stage.repeat is not None:
        repeat = as_int(evaluate(stage.repeat, env), stage.repeat.pos, "a stage's repeat count")
    given: dict[str, tuple[Value, Pos | None]] = {}
    params = [p.name for p in block.params]
    positional = 0
    for arg in stage.args:
        if isinstance(arg, ast.Positional):
            if positional >= len(params):
                raise SpecError(
                    f"too many arguments for block '{block.name}': it takes {len(params)}",
                    arg.pos,
                ).with_note(f"block '{block.name}' is defined here", block.pos)
            key = params[positional]
            positional += 1
        else:
            key = arg.name
            if key not in params:
                raise unknown("parameter", key, params, arg.name_pos, of=f"block '{block.name}'")
        if key in given:
            raise SpecError(f"parameter '{key}' is given twice", arg.pos)
        given[key] = (evaluate(arg.value, env), arg.pos)
    try:
        first = _bind(block.params, given, block, f"block '{block.name}'")
    except SpecError as error:
        if error.pos == block.name_pos:  # a missing argument: point at the stage that omitted it
            error.notes.insert(0, _note_defined(block))
            error.pos = stage.block_pos
        raise
    rest = first
    if "stride" in given:
        rest = _bind(block.params, {**given, "stride": (1, None)}, block, f"block '{block.name}'")
    return _StagePlan(stage, block, repeat, first, rest)


def _note_defined(block: ast.Block) -> Note:
    return Note(f"block '{block.name}' is defined here", block.pos)


def _check_size(network: Network, definition: ast.Network, plans: list[_StagePlan]) -> None:
    limit = network.limits.max_layers
    total = 0
    for plan in plans:
        total += plan.layers
        if total > limit:
            raise LimitError(
                f"the network would have more than {limit:,} layers (this stage alone adds {plan.layers:,})",
                plan.stage.pos,
                "raise the bound with --max-layers N (Limits(max_layers=N) in the API) if this is intended",
            )


class _Builder:
    """Turns statements into nodes and edges, one block instance at a time."""

    def __init__(self, graph: nx.DiGraph, trace: tuple[Frame, ...]) -> None:
        self.graph = graph
        self.trace = trace
        self.seen_fc = False
        self.cache: dict[tuple[int, tuple], list] = {}

    def layer(self, statement: ast.Statement, env: Mapping[str, Value], last: int, scope: Scope, trace) -> int:
        if statement.kind == "add":
            raise SpecError(
                "'add shortcut' is only allowed inside a block", statement.pos, "define a block and use it in a stage"
            )
        layer = build_layer(statement, env)
        return self._append(layer, statement, last, scope, trace)

    def _append(self, layer, statement: ast.Statement, last: int, scope: Scope, trace, branch: str = "main") -> int:
        graph = self.graph
        if isinstance(layer, Flatten):
            self.seen_fc = True
        if isinstance(layer, Linear) and not self.seen_fc:
            # The first fc flattens what comes before it, as torchvision's forward does.
            self.seen_fc = True
            flat = new_node(graph, Flatten(), pos=statement.pos, trace=trace, scope=scope, label=None, branch=branch)
            graph.add_edge(last, flat, role="main")
            last = flat
        node = new_node(graph, layer, pos=statement.pos, trace=trace, scope=scope, label=statement.label, branch=branch)
        graph.add_edge(last, node, role="main")
        return node

    def stage(self, stage: ast.Stage, plan: _StagePlan, last: int) -> int:
        trace = (*self.trace, Frame(f"stage '{stage.name}'", stage.pos))
        block = plan.block
        for index in range(plan.repeat):
            bound = plan.first if index == 0 else plan.rest
            scope = Scope("stage", stage.name, index, block.name, tuple(bound.items()))
            try:
                layers = self._block_layers(block, bound)
            except SpecError as error:
                raise _blame_stage(error, stage, block) from None
            block_input = last
            added: ast.Statement | None = None
            for statement, layer in layers:
                if isinstance(layer, Add):
                    if added is not None:
                        raise (
                            SpecError(
                                f"block '{block.name}' has two 'add shortcut' joins; a block has one shortcut",
                                statement.pos,
                            )
                            .with_note("the first is here", added.pos)
                            .with_note(f"used by stage '{stage.name}'", stage.pos)
                        )
                    added = statement
                    if last == block_input:
                        raise SpecError(
                            "'add shortcut' needs a layer before it: it joins the block's output with its input",
                            statement.pos,
                        ).with_note(f"used by stage '{stage.name}'", stage.pos)
                    node = new_node(
                        self.graph,
                        layer,
                        pos=statement.pos,
                        trace=trace,
                        scope=scope,
                        label=statement.label,
                        branch="main",
                    )
                    self.graph.add_edge(last, node, role="main")
                    self.graph.add_edge(block_input, node, role="shortcut")
                    last = node
                else:
                    last = self._append(layer, statement, last, scope, trace)
        return last

    def _block_layers(self, block: ast.Block, bound: dict[str, Value]) -> list:
        key = (id(block), tuple(bound.items()))
        if key not in self.cache:
            self.cache[key] = [(statement, _build_block_layer(block, statement, bound)) for statement in block.body]
        return self.cache[key]


def _build_block_layer(block: ast.Block, statement: ast.Statement, env: Mapping[str, Value]):
    if statement.kind in SETTINGS:
        raise SpecError(f"the setting '{statement.kind}' belongs in a network, not in a block", statement.kind_pos)
    return build_layer(statement, env)


def _blame_stage(error: SpecError, stage: ast.Stage, block: ast.Block) -> SpecError:
    """Report a block's bad value at the stage that passed it; a bad name stays in the block."""
    if isinstance(error, UnknownNameError):
        return error.with_note(f"block '{block.name}' is used by stage '{stage.name}'", stage.pos)
    error.notes.insert(0, Note(f"in block '{block.name}'", error.pos))
    error.pos = stage.pos
    return error
