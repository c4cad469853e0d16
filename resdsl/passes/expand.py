"""Elaboration, the front end's last step: a bound network instance becomes the IR.

Not a pass: it is the one step that reads the front end's definitions, and every
pass after it (resdsl.passes) is a function from IR to IR.

Settings are evaluated and overrides applied; stages repeat their block, a
``stride`` argument reaching only the first repetition (the paper's conv3_1,
conv4_1, conv5_1); each block's statements become nodes with ordered inputs:

- a layer reads the current value and becomes it;
- a block used inside a block (``se: se(256)``) expands in place, its modules under
  its label;
- a branch (``mul { ... }``) reads the current value, and a join node (``mul``,
  ``add``, ``cat``) combines the current value with the branch's output;
- ``if`` picks its statements now, at compile time;
- ``tap shortcut`` records where the shortcut will read; at ``add shortcut`` the
  shortcut is decided from the shapes both sides have by then
  (:func:`~resdsl.passes.shortcuts.plan_shortcut`, as timm's ``create_shortcut``
  decides from channels and stride), built (the block's input, a zero-pad, or the
  projection block, ``projection avg_down``, expanded with the same rules as any
  block) and joined to the current value by an ``add`` node; under ``shortcut none``
  there is no join.

Every node's shape is inferred as it is made (:func:`~resdsl.passes.shapes.infer_node`),
so a shape error points at the first statement that cannot be.
Every block instance is recorded in :attr:`Network.blocks`. The size bound is
checked from the definitions before a single node exists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resdsl import syntax as ast
from resdsl.errors import (
    MAX_ERRORS,
    LimitError,
    Note,
    Pos,
    ShapeError,
    SpecError,
    SpecWarning,
    UnknownNameError,
    ValueNameError,
    unknown,
)
from resdsl.evaluate import Value, as_bool, as_int, describe, evaluate, names_in
from resdsl.frontend import Instance, Namespace
from resdsl.ir import (
    BlockInstance,
    Frame,
    Graph,
    Limits,
    NameScope,
    Network,
    Scope,
    Settings,
    located_error,
    new_node,
)
from resdsl.layers import (
    ADD_SHORTCUT,
    JOINS,
    LAYER_KINDS,
    SYNONYMS,
    TAP_SHORTCUT,
    Add,
    Flatten,
    Input,
    Layer,
    Linear,
    Output,
    ShapeProblem,
    ZeroPad,
    build_layer,
    layer_kind,
    layout,
)
from resdsl.passes.shapes import infer_node
from resdsl.passes.shortcuts import DEFAULT_PROJECTION, ShortcutPlan, plan_shortcut
from resdsl.passes.values import POISON, ValueList, ValueScope, ValueStatements, finish_scope

SHORTCUT_OPTIONS = ("A", "B", "C", "none")
CHECKPOINT_OPTIONS = ("none", "stage", "block")
SETTINGS = ("input", "shortcut", "zero_init_residual", "checkpoint", "projection", "norm", "act", "features")

#: Names every block may read: where it stands in its network (LANGUAGE-2, section 4).
POSITION_NAMES = ("block_index", "block_count", "stage_index", "stage_count", "repeat")
#: Where a block used outside a stage (in a stem, head or network body) stands: as the
#: one block of a stage of its own, so that `if repeat == 0` takes a stage's first branch.
OUTSIDE_STAGE: dict[str, Value] = {"block_index": 0, "block_count": 1, "stage_index": 0, "stage_count": 1, "repeat": 0}
#: Statements over named values that a network's body, stem and head may hold as a block's may.
VALUE_STATEMENTS = (*JOINS, "split", "weighted")


#: Deepest chain of blocks used inside blocks.
MAX_BLOCK_NESTING = 32


@dataclass
class _Context:
    """Where statements are being expanded."""

    env: dict[str, Value]
    names: NameScope
    scope: Scope
    block: BlockInstance | None
    trace: tuple[Frame, ...]
    role: str = "main"
    top_level: bool = True  # not inside a block or branch: the first fc flattens
    nesting: tuple[str, ...] = ()  # the block types being expanded, outermost first
    blame: Any = None  # the stage (or statement) that instantiated the block, for errors
    values: Any = None  # the ValueScope of named values (per block instance; per loop iteration)


def elaborate(instance: Instance, *, name: str, path: str, pos: Pos, limits: Limits) -> Network:
    """The IR of a bound network instance: every node made, its shape inferred as it is
    made, every block instance recorded. A SpecError for anything the spec gets wrong."""
    network = Network(name=name, graph=Graph(), settings=Settings((), "B"), path=path, pos=pos, limits=limits)
    definition = instance.definition
    env = dict(instance.params)
    misspelt = []
    for item in definition.body:
        # A network's own lines are mostly settings, so a misspelt word here
        # ('shortcuts B', 'inptu 3x32x32') is more likely a setting than a layer;
        # checked first, so that 'inptu' is not reported as a missing input.
        if (
            isinstance(item, ast.Statement)
            and item.kind not in (*SETTINGS, *LAYER_KINDS, *VALUE_STATEMENTS, ADD_SHORTCUT, TAP_SHORTCUT)
            and item.kind not in instance.namespace.blocks
        ):
            misspelt.append(
                unknown(
                    "setting or layer kind",
                    item.kind,
                    [*SETTINGS, *LAYER_KINDS],
                    item.kind_pos,
                    guess=SYNONYMS.get(item.kind.lower()),
                )
            )
    if misspelt:
        raise SpecError.several(misspelt)
    expander = Expander(network, instance)
    # A bad setting is reported with the errors after it: the default stands in for it.
    network.settings = expander.settings = _settings(definition, instance, env, expander.errors)
    expander.run(env)
    return network


class Expander(ValueStatements):
    """Turns statements into nodes, one block instance at a time."""

    def __init__(self, network: Network, instance: Instance) -> None:
        self.network = network
        self.instance = instance
        self.namespace: Namespace = instance.namespace
        self.graph: Graph = network.graph
        self.settings: Settings
        self.seen_flatten = False
        # Layers built from one statement under the same values of the names it reads:
        # blocks repeat, and evaluating each statement once per distinct binding keeps
        # compile time linear in the network's size.
        self.layer_cache: dict[tuple, Layer] = {}
        self.free_names: dict[int, frozenset[str]] = {}
        self.projection_size = 2  # nodes a projection can add (set by _check_size)
        self.interpolated: dict[tuple[int, str], tuple[Pos, str]] = {}  # labels made by {NAME}
        self.loop_names: list[str] = []
        #: Independent errors so far, in the order found: a failed statement is reported here
        #: and its value poisoned (values.POISON), and expansion goes on after it.
        self.errors: list[SpecError] = []
        self.read_names: dict[str, frozenset[str]] = {}  # block -> every name its definition reads
        self.warned: set[tuple] = set()

    def report(self, error: SpecError) -> None:
        self.errors.append(error)
        if len(self.errors) >= MAX_ERRORS:
            raise _TooManyErrors

    # The network ------------------------------------------------------------------

    def run(self, env: dict[str, Value]) -> None:
        definition = self.instance.definition
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
        # Independent errors are collected, each top-level statement and each stage on
        # its own (the first error of a stage stops that stage): a failed one leaves the
        # value as it was, and nothing after expansion runs on a network with errors.
        # Leaving the value as it was makes its shape a guess from then on, so a shape
        # error after a failure is a cascade of it and is not reported: fixing the first
        # error shows it again if it is real.
        errors = self.errors

        def collect(error: SpecError) -> None:
            if not (errors and isinstance(error, ShapeError)):
                errors.append(error)

        repeats = []
        failed: set[int] = set()
        for index, stage in enumerate(stages):
            try:
                repeats.append(self._repeat(stage, env))
            except LimitError:
                raise
            except SpecError as error:
                errors.append(error)
                repeats.append(0)
                failed.add(index)
        self._check_size(definition, stages, repeats)
        with contextlib.suppress(_TooManyErrors):  # MAX_ERRORS found: report those
            self._expand_network(definition, stages, repeats, failed, env, collect)
        if errors:
            raise SpecError.several(errors)

    def _expand_network(self, definition, stages, repeats, failed, env, collect) -> None:
        errors = self.errors
        trace = self.instance.trace
        root = NameScope(None)
        top = {"stem": Scope("stem"), "head": Scope("head"), "body": Scope("body")}
        value = new_node(
            self.graph,
            Input(self.settings.input_shape),
            pos=self.instance.pos,
            trace=trace,
            scope=top["body"],
            block=None,
            names=root,
            label=None,
            written="input",
            role="main",
        )
        if self.settings.input_shape:
            infer_node(self.graph, value)
        else:  # a bad input setting, reported: nothing has a shape to infer from
            value = POISON
        context = _Context(env, root, top["body"], None, trace, values=ValueScope(None, definition.body))
        block_count = sum(repeats)
        block_index = 0
        stage_index = 0
        for item in definition.body:
            if len(errors) >= MAX_ERRORS:
                break
            if isinstance(item, ast.Statement) and item.kind in SETTINGS:
                continue
            try:
                if isinstance(item, ast.Section):
                    section = _replace(context, scope=top[item.kind])
                    for statement in item.body:
                        try:
                            value = self.body((statement,), value, section)
                        except LimitError:
                            raise
                        except SpecError as error:
                            collect(error)
                            value = POISON
                elif isinstance(item, ast.Stage):
                    repeat, start = repeats[stage_index], block_index
                    block_index += repeat
                    stage_index += 1
                    if stage_index - 1 not in failed:
                        value = self.stage(
                            item, repeat, value, context, start, block_count, stage_index - 1, len(stages)
                        )
                    else:
                        value = POISON
                else:
                    value = self.body((item,), value, context)
            except LimitError:
                raise
            except SpecError as error:
                collect(error)
                value = POISON
        if errors:
            return
        value = _single(value, "the network's output")
        finish_scope(context.values, value, None, self.graph)
        output = new_node(
            self.graph,
            Output(),
            (value,),
            pos=definition.pos,
            trace=trace,
            scope=top["body"],
            block=None,
            names=root,
            label=None,
            written="output",
            role="main",
        )
        self.network.input_shape = self.settings.input_shape
        self.network.output_shape = infer_node(self.graph, output)

    def _repeat(self, stage: ast.Stage, env: Mapping[str, Value]) -> int:
        if stage.block not in self.namespace.blocks:
            raise unknown("block", stage.block, self.namespace.blocks, stage.block_pos)
        if stage.repeat is None:
            return 1
        return as_int(evaluate(stage.repeat, env), stage.repeat.pos, "a stage's repeat count")

    def stage(
        self,
        stage: ast.Stage,
        repeat: int,
        value: int,
        context: _Context,
        block_index: int,
        block_count: int,
        stage_index: int,
        stage_count: int,
    ) -> int:
        block, _ = self.namespace.blocks[stage.block]
        trace = (*context.trace, Frame(f"stage '{stage.name}'", stage.pos))
        self.count_statement(stage.pos, repeat)  # before the work: a block of no statements, repeated, is work too
        for index in range(repeat):
            position = {
                "block_index": block_index + index,
                "block_count": block_count,
                "stage_index": stage_index,
                "stage_count": stage_count,
                "repeat": index,
            }
            stage_env = {**context.env, **position}
            given = self._arguments(block, stage.args, stage_env, stage)
            if index == 0:
                self._warn_unread(block, given)
            if index > 0 and "stride" in given:
                # The paper's rule: only a stage's first block changes the resolution.
                given["stride"] = (1, None)
            try:
                bound = self._bind(block, given, position)
            except SpecError as error:
                if error.pos == block.name_pos:  # a missing argument: point at the stage that omitted it
                    error.notes.insert(0, _note_defined(block))
                    error.pos = stage.block_pos
                raise
            scope = Scope(
                "stage",
                stage.name,
                index,
                block.name,
                tuple((k, v) for k, v in bound.items() if k not in POSITION_NAMES),
            )
            names = NameScope(context.names, f"{stage.name}.{index}", block.name, pos=stage.name_pos)
            instance_context = _replace(
                context,
                env=bound,
                names=names,
                scope=scope,
                trace=trace,
                top_level=False,
                nesting=(block.name,),
                blame=stage,
            )
            first_error = len(self.errors)
            try:
                value = self.block_instance(
                    block, bound, value, instance_context, stage.name, index, block_index + index, stage.pos
                )
            except SpecError as error:
                raise _blame_stage(error, stage, block) from None
            finally:
                for number in range(first_error, len(self.errors)):
                    self.errors[number] = _blame_stage(self.errors[number], stage, block)
        return value

    # Blocks -----------------------------------------------------------------------

    def block_instance(
        self,
        block: ast.Block,
        bound: dict[str, Value],
        value: int,
        context: _Context,
        stage: str | None,
        index: int | None,
        block_index: int | None,
        pos: Pos,
    ) -> int:
        instance = BlockInstance(
            id=len(self.network.blocks),
            type=block.name,
            path="",  # the naming pass writes it
            parent=context.block.id if context.block is not None else None,
            stage=stage,
            index=index,
            block_index=block_index,
            args=tuple((k, v) for k, v in bound.items() if k not in POSITION_NAMES),
            pos=pos,
            entry=value,
        )
        instance.names = context.names
        self.network.blocks.append(instance)
        inner = _replace(
            context,
            block=instance,
            role="main" if context.role != "shortcut" else "shortcut",
            values=ValueScope(None, block.body),
        )
        exit_value = _single(self.body(block.body, value, inner), f"block '{block.name}''s result")
        finish_scope(inner.values, exit_value, instance, self.graph)
        if instance.tap is not None and instance.join_pos is None and exit_value is not POISON:
            raise SpecError(
                f"block '{block.name}' taps its shortcut but never adds it",
                self._tap_pos(instance),
                "end the block's residual branch with: add shortcut",
            )
        instance.exit = exit_value
        return exit_value

    def _tap_pos(self, instance: BlockInstance) -> Pos:
        return instance.tap_pos or instance.pos

    def _arguments(
        self, block: ast.Block, args: tuple[ast.Arg, ...], env: Mapping[str, Value], where: Any
    ) -> dict[str, tuple[Value, Pos | None]]:
        given: dict[str, tuple[Value, Pos | None]] = {}
        params = [p.name for p in block.params]
        positional = 0
        for arg in args:
            # An argument the block cannot take is reported and left out, so that the block's
            # own statements are still checked with the others.
            if isinstance(arg, ast.Positional):
                if positional > len(params):
                    continue  # reported at the first one too many
                if positional == len(params):
                    positional += 1
                    self.report(
                        SpecError(
                            f"too many arguments for block '{block.name}': it takes {len(params)}",
                            arg.pos,
                        ).with_note(f"block '{block.name}' is defined here", block.pos)
                    )
                    continue
                key = params[positional]
                positional += 1
            else:
                key = arg.name
                if key not in params:
                    self.report(unknown("parameter", key, params, arg.name_pos, of=f"block '{block.name}'"))
                    continue
            if key in given:
                self.report(SpecError(f"parameter '{key}' is given twice", arg.pos))
                continue
            given[key] = (evaluate(arg.value, env), arg.pos)
        return given

    def _warn_unread(self, block: ast.Block, given: Mapping[str, tuple[Value, Pos | None]]) -> None:
        """A warning for each argument a caller passes to a parameter the block never reads
        (`r(8, stride=2)` to a block that never uses its stride: it does not downsample)."""
        read = self.read_names.get(block.name)
        if read is None:
            read = self.read_names[block.name] = _names_read(block)
        for param in block.params:
            if param.name in read or param.name not in given:
                continue
            pos = given[param.name][1]
            if pos is None or (pos, param.name) in self.warned:
                continue
            self.warned.add((pos, param.name))
            self.network.warnings.append(
                SpecWarning(
                    f"block '{block.name}' never reads its parameter '{param.name}', so this argument does nothing",
                    pos,
                    f"use '{param.name}' in the block, or leave the argument out",
                ).with_note(f"'{param.name}' is declared here", param.pos)
            )

    def _bind(
        self, block: ast.Block, given: Mapping[str, tuple[Value, Pos | None]], position: Mapping[str, Value]
    ) -> dict[str, Value]:
        # Defaults may read earlier parameters and where the block stands (block_index...).
        env: dict[str, Value] = dict(position)
        for param in block.params:
            if param.name in given:
                env[param.name] = given[param.name][0]
            elif param.default is not None:
                env[param.name] = evaluate(param.default, env)
            else:
                raise SpecError(
                    f"block '{block.name}' needs a value for parameter '{param.name}'",
                    block.name_pos,
                    f"give it, e.g. {param.name}=...",
                )
        return env

    # Statements ---------------------------------------------------------------------

    def body(self, items: tuple, value: Any, context: _Context) -> Any:
        for item in items:
            self.count_statement(item.pos)
            try:
                value = self.item(item, value, context)
            except LimitError:
                raise
            except SpecError as error:
                # Reported, and the statement's value poisoned: the statements after it are
                # still checked, and nothing computed from it reports again.
                _mark_read(item, context)
                self.report(error)
                value = POISON
        return value

    def item(self, item: Any, value: Any, context: _Context) -> Any:
        """One statement (an `if`, a loop or a branch with what it holds): the value after it."""
        if isinstance(item, ast.If):
            condition = evaluate(item.condition, context.env)
            chosen = as_bool(condition, item.condition.pos, "the condition of 'if'")
            return self.body(item.then if chosen else item.otherwise, value, context)
        if isinstance(item, ast.Let):
            return self.let_statement(item, value, context)
        if isinstance(item, ast.From):
            return self.from_statement(item, value, context)
        if isinstance(item, ast.For):
            return self.for_statement(item, value, context)
        if isinstance(item, ast.Branch):
            return self.branch(item, _single(value, f"a '{item.join}' branch", item.pos), context)
        return self.statement(item, value, context)

    def branch(self, branch: ast.Branch, value: int, context: _Context) -> int:
        join = JOINS.get(branch.join)
        if join is None:
            raise unknown("branch join", branch.join, JOINS, branch.join_pos, guess=SYNONYMS.get(branch.join))
        names = context.names
        if branch.label is not None:
            label = self.label(branch.label, branch.label_pos, context)
            names = NameScope(context.names, label, "branch", pos=branch.label_pos)
        inner = _replace(
            context, names=names, role="branch" if context.role == "main" else context.role, top_level=False
        )
        # The join reads the branch's input after the branch: a `from` inside it drops nothing.
        pending = context.values.root.pending
        fresh = value not in pending
        pending.add(value)
        result = self.body(branch.body, value, inner)
        if fresh:
            pending.discard(value)
        if value is POISON or result is POISON:
            return POISON
        if result == value:
            raise SpecError(
                f"this '{branch.join}' branch has no layers: it would join the value with itself",
                branch.pos,
                "write the branch's layers inside the braces",
            )
        return self._node(join(), (value, result), branch, context, label=None, written=branch.join)

    def statement(self, statement: ast.Statement, value: Any, context: _Context) -> Any:
        kind = statement.kind
        if kind in SETTINGS and context.block is not None:
            raise SpecError(f"the setting '{kind}' belongs in a network, not in a block", statement.kind_pos)
        if not statement.called and kind not in self.namespace.blocks:
            if kind in JOINS and statement.args and not _names_shortcut(statement, context.values):
                return self.value_join(statement, value, context)
            if kind == "weighted":
                return self.weighted(statement, value, context)
        value = _single(value, f"'{kind}'", statement.pos)
        if kind in (ADD_SHORTCUT, TAP_SHORTCUT) and not statement.called:
            return self.shortcut_statement(statement, value, context)
        if kind == "split" and not statement.called and kind not in self.namespace.blocks:
            return self.split(statement, value, context)
        if kind in self.namespace.blocks and kind not in LAYER_KINDS:
            return self.nested_block(statement, value, context)
        layer = self._layer(statement, context)
        if value is POISON:
            self.label(statement.label, statement.label_pos, context)
            return POISON  # the layer's arguments are checked; its shape would be a guess
        if isinstance(layer, Flatten):
            self.seen_flatten = True
        if (
            isinstance(layer, Linear)
            and not self.seen_flatten
            and context.top_level
            and layout(self.graph.node(value).shape) == "map"  # on tokens an fc is one per token
        ):
            # The first fc flattens what comes before it, as torchvision's forward does.
            self.seen_flatten = True
            value = self._node(Flatten(), (value,), statement, context, label=None, written="flatten")
        label = self.label(statement.label, statement.label_pos, context)
        layer = layer.for_input(self.graph.node(value).shape)
        return self._node(layer, (value,), statement, context, label=label, written=kind)

    def _layer(self, statement: ast.Statement, context: _Context) -> Layer:
        kind_name = statement.kind
        settings = self.settings
        norm = settings.norm_layer if kind_name == "bn" else None
        if norm is not None and not statement.args:
            return norm
        if kind_name == "relu" and settings.act_layer is not None and not statement.args:
            return settings.act_layer
        kind = layer_kind(kind_name, statement.kind_pos, (ADD_SHORTCUT, TAP_SHORTCUT, *self.namespace.blocks))
        names = self._free_names(statement)
        key = (id(statement), tuple((name, context.env.get(name)) for name in names))
        layer = self.layer_cache.get(key)
        if layer is None:
            layer = build_layer(kind, statement.args, context.env, statement.pos)
            self.layer_cache[key] = layer
        if norm is not None:
            # `bn eps=1e-3` under `norm bn(momentum=0.01)`: the statement's own options
            # win over the setting's; another norm (gn, ln) keeps the setting's options.
            if type(norm) is type(layer):
                written = {arg.name for arg in statement.args if isinstance(arg, ast.Keyword)}
                fields = vars(layer)  # the layer dataclass's fields, read by the keywords written
                return dataclasses.replace(norm, **{name: fields[name] for name in written})
            return norm
        return layer

    def _free_names(self, statement: ast.Statement) -> frozenset[str]:
        names = self.free_names.get(id(statement))
        if names is None:
            found = names_in(*(arg.value for arg in statement.args))
            names = self.free_names[id(statement)] = frozenset(sorted(found))
        return names

    def shortcut_statement(self, statement: ast.Statement, value: int, context: _Context) -> int:
        kind = statement.kind
        written = f"{kind} shortcut"
        args = statement.args
        target = args[0].value if len(args) == 1 and isinstance(args[0], ast.Positional) else None
        if not (isinstance(target, ast.Name) and target.id == "shortcut"):
            if kind == ADD_SHORTCUT:
                raise SpecError(
                    "the residual join is written 'add shortcut'",
                    statement.pos,
                    "write: add shortcut (or add { LAYERS } for a branch added in place)",
                )
            raise SpecError("where the shortcut starts is written 'tap shortcut'", statement.pos, "write: tap shortcut")
        if statement.label is not None:
            raise SpecError(f"'{written}' cannot have a label", statement.label_pos)
        block = context.block
        if block is None or context.role == "shortcut":
            raise SpecError(
                f"'{written}' is only allowed inside a block", statement.pos, "define a block and use it in a stage"
            )
        if kind == TAP_SHORTCUT:
            if block.join_pos is not None:
                raise SpecError(
                    "'tap shortcut' after 'add shortcut': the shortcut has already been added", statement.pos
                ).with_note("added here", block.join_pos)
            if block.tap is not None:
                raise SpecError(
                    "the block taps its shortcut twice", statement.pos, "a block's shortcut starts at one place"
                ).with_note(
                    "first tapped here",
                    block.tap_pos,  # type: ignore[attr-defined]
                )
            if context.role != "main":
                raise SpecError(
                    "'tap shortcut' must stand on the block's main path, not inside a branch", statement.pos
                )
            block.tap = value
            block.tap_pos = statement.pos
            return value
        if block.join_pos is not None:
            raise (
                SpecError(
                    f"block '{block.type}' has two 'add shortcut' joins; a block has one shortcut",
                    statement.pos,
                ).with_note("the first is here", block.join_pos)
            )
        if context.role != "main":
            raise SpecError("'add shortcut' must stand on the block's main path, not inside a branch", statement.pos)
        if value == block.entry and value is not POISON:
            raise SpecError(
                "'add shortcut' needs a layer before it: it joins the block's output with its input",
                statement.pos,
            )
        block.join_pos = statement.pos
        if POISON in (value, block.entry, block.tap):
            return POISON
        return self.add_shortcut(statement, value, context, block)

    def add_shortcut(self, statement: ast.Statement, value: int, context: _Context, block: BlockInstance) -> int:
        """``add shortcut``: what carries the block's input to its join is decided here,
        where the shapes of both sides are known (:func:`plan_shortcut`, as timm's
        ``create_shortcut`` decides from channels and stride), built, and joined."""
        graph = self.graph
        tapped = graph.node(block.tap).shape if block.tap is not None else None
        try:
            plan = plan_shortcut(self.settings.shortcut, graph.node(block.entry).shape, graph.node(value).shape, tapped)
        except ShapeProblem as problem:
            raise _located(
                located_error(statement.pos, context.trace, context.scope, str(problem), problem.hint, ShapeError)
            ) from None
        if plan.kind == "projection":
            plan = dataclasses.replace(plan, projection=self.settings.projection or DEFAULT_PROJECTION)
        block.plan = plan
        if plan.kind == "none":
            return value  # the plain network: no join
        if plan.kind == "identity":
            shortcut = block.entry
        elif plan.kind == "zeropad":
            shortcut = self._node(
                ZeroPad(plan.stride, plan.out_shape[0] - plan.in_shape[0]),
                (block.shortcut_source,),
                statement,
                _replace(context, role="shortcut"),
                label="downsample",
                written="zeropad",
            )
            block.shortcut_nodes = (shortcut,)
        else:
            shortcut = self._projection(statement, context, block, plan)
        node = self._node(Add(), (value, shortcut), statement, context, label=None, written="add")
        block.join = node
        return node

    def _projection(self, statement: ast.Statement, context: _Context, block: BlockInstance, plan: ShortcutPlan) -> int:
        """Expand the projection block for `block`'s shortcut and check that it gives the
        block's output shape; returns its output node."""
        assert plan.projection is not None
        source = block.shortcut_source
        definition, _ = self.namespace.blocks[plan.projection]
        first = self.graph.next_id
        first_error = len(self.errors)
        try:
            env = self._bind(
                definition,
                {"out": (plan.out_shape[0], None), "stride": (_stride_value(plan.stride), None)},
                {},
            )
            inner = _replace(
                context,
                env=env,
                names=NameScope(block.names, "downsample", definition.name, by_position=True),
                role="shortcut",
                top_level=False,
                trace=(*context.trace, Frame(f"projection '{definition.name}'", definition.pos)),
                values=ValueScope(None, definition.body),
            )
            node = _single(self.body(definition.body, source, inner), f"projection '{definition.name}''s result")
            finish_scope(inner.values, node, None, self.graph)
        except SpecError as error:
            raise _located(error.with_note(f"in the projection of block '{block.type}'", block.pos)) from None
        finally:
            for error in self.errors[first_error:]:
                _located(error.with_note(f"in the projection of block '{block.type}'", block.pos))
        if node is POISON:
            return POISON
        block.shortcut_nodes = tuple(range(first, self.graph.next_id))
        shape = self.graph.node(node).shape if node != source else plan.in_shape
        if node == source or shape != plan.out_shape:
            got = "nothing" if node == source else "x".join(map(str, shape))
            raise _located(
                located_error(
                    statement.pos,
                    context.trace,
                    context.scope,
                    f"projection '{plan.projection}' gives {got} for this shortcut, but the block outputs "
                    f"{'x'.join(map(str, plan.out_shape))}",
                    "a projection block must map its input to (out, H / stride, W / stride)",
                    ShapeError,
                ).with_note(f"projection '{plan.projection}' is defined here", definition.pos)
            )
        return node

    def nested_block(self, statement: ast.Statement, value: int, context: _Context) -> int:
        block, _ = self.namespace.blocks[statement.kind]
        if block.name in context.nesting:
            chain = " -> ".join([*context.nesting, block.name])
            raise SpecError(f"block '{block.name}' uses itself: {chain}", statement.kind_pos)
        if len(context.nesting) >= MAX_BLOCK_NESTING:
            raise LimitError(f"blocks nested deeper than {MAX_BLOCK_NESTING} levels", statement.kind_pos)
        given = self._arguments(block, statement.args, context.env, statement)
        self._warn_unread(block, given)
        if context.block is None and context.role != "shortcut":
            position = dict(OUTSIDE_STAGE)
        else:
            position = {name: context.env[name] for name in POSITION_NAMES if name in context.env}
        try:
            bound = self._bind(block, given, position)
        except SpecError as error:
            if error.pos == block.name_pos:
                error.notes.insert(0, _note_defined(block))
                error.pos = statement.kind_pos
            raise
        label = self.label(statement.label, statement.label_pos, context)
        names = NameScope(context.names, label, block.name, pos=statement.label_pos or statement.kind_pos)
        inner = _replace(
            context,
            env=bound,
            names=names,
            trace=(*context.trace, Frame(f"block '{block.name}'", statement.pos)),
            top_level=False,
            nesting=(*context.nesting, block.name),
        )
        return self.block_instance(block, bound, value, inner, None, None, None, statement.pos)

    def _node(
        self,
        layer: Layer,
        inputs: tuple[int, ...],
        statement: Any,
        context: _Context,
        *,
        label: str | None,
        written: str,
    ) -> int:
        limit = self.network.limits.max_layers
        if self.graph.number_of_nodes() > limit + 2:  # loops unroll past what _check_size can bound
            raise LimitError(
                f"the network would have more than {limit:,} layers",
                statement.pos,
                "raise the bound with --max-layers N (Limits(max_layers=N) in the API) if this is intended",
            )
        node = new_node(
            self.graph,
            layer,
            inputs,
            pos=statement.pos,
            trace=context.trace,
            scope=context.scope,
            block=context.block.id if context.block is not None else None,
            names=context.names,
            label=label,
            label_pos=getattr(statement, "label_pos", None),
            written=written,
            role=context.role,
        )
        try:
            infer_node(self.graph, node)
        except ShapeError as error:
            raise _located(error) from None
        block_id = context.block.id if context.block is not None else None
        while block_id is not None:
            enclosing = self.network.blocks[block_id]
            enclosing.nodes.append(node)
            block_id = enclosing.parent
        return node

    # The size bound ------------------------------------------------------------------

    def _check_size(self, definition: ast.Network, stages: list[ast.Stage], repeats: list[int]) -> None:
        """An upper bound on the layers the network expands to, from the definitions
        alone: each statement counts once (both sides of an `if`), a block used inside
        a block counts its own size, and each block may add a projection."""
        limit = self.network.limits.max_layers
        sizes: dict[str, int] = {}
        projection = self.settings.projection or DEFAULT_PROJECTION
        self.projection_size = 2
        if projection in self.namespace.blocks:
            self.projection_size = self._items_size(self.namespace.blocks[projection][0].body, sizes, ())
        total = 0
        stage_iter = iter(zip(stages, repeats, strict=True))
        for item in definition.body:
            if isinstance(item, ast.Stage):
                stage, repeat = next(stage_iter)
                if stage.block not in self.namespace.blocks:
                    continue  # an unknown block, reported with the other errors
                block = self.namespace.blocks[stage.block][0]
                added = repeat * self._items_size(block.body, sizes, ())
                where = stage.pos
            elif isinstance(item, ast.Section):
                added = self._items_size(item.body, sizes, ())
                where = item.pos
            elif isinstance(item, ast.Statement) and item.kind in SETTINGS:
                continue
            else:
                added = self._items_size((item,), sizes, ())
                where = item.pos
            total += added
            if total > limit:
                raise LimitError(
                    f"the network would have more than {limit:,} layers (this line alone adds up to {added:,})",
                    where,
                    "raise the bound with --max-layers N (Limits(max_layers=N) in the API) if this is intended",
                )

    def _items_size(self, items: tuple, sizes: dict[str, int], nesting: tuple[str, ...]) -> int:
        """Nodes that `items` can expand to, at most (a projection counted where a block joins its shortcut)."""
        total = 0
        for item in items:
            if isinstance(item, ast.Let | ast.From):
                continue
            if isinstance(item, ast.For):
                # Counted once: its iterations are known only once expanded, where _node bounds them.
                total += self._items_size(item.body, sizes, nesting)
            elif isinstance(item, ast.If):
                total += self._items_size(item.then, sizes, nesting) + self._items_size(item.otherwise, sizes, nesting)
            elif isinstance(item, ast.Branch):
                total += 1 + self._items_size(item.body, sizes, nesting)
            elif item.kind in self.namespace.blocks and item.kind not in LAYER_KINDS:
                if item.kind in nesting or len(nesting) >= MAX_BLOCK_NESTING:
                    continue  # reported when it is expanded
                if item.kind not in sizes:
                    block = self.namespace.blocks[item.kind][0]
                    sizes[item.kind] = self._items_size(block.body, sizes, (*nesting, item.kind))
                total += sizes[item.kind]
            elif item.kind == ADD_SHORTCUT:
                total += 1 + self.projection_size
            else:
                total += 2 if item.kind == "fc" else 1  # an fc may bring a flatten
        return total


_LABEL_NAME = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _names_read(block: ast.Block) -> frozenset[str]:
    """Every name the block's definition reads: in its statements' arguments, conditions,
    loop bounds, indexes, labels' {NAME}s and its parameters' defaults."""
    found: set[str] = set()
    exprs: list[Any] = [param.default for param in block.params if param.default is not None]
    stack: list[Any] = list(block.body)
    while stack:
        item = stack.pop()
        label = getattr(item, "label", None)
        if isinstance(label, str):
            found.update(_LABEL_NAME.findall(label))
        if isinstance(item, ast.Statement):
            exprs += [arg.value for arg in item.args]
        elif isinstance(item, ast.Branch):
            stack += item.body
        elif isinstance(item, ast.If):
            exprs.append(item.condition)
            stack += [*item.then, *item.otherwise]
        elif isinstance(item, ast.For):
            exprs += [item.start, item.stop]
            stack += item.body
        elif isinstance(item, ast.Let):
            exprs += [expr for expr in (item.index, item.value) if expr is not None]
        elif isinstance(item, ast.From):
            exprs.append(item.value)
    return frozenset(found | names_in(*exprs))


class _TooManyErrors(Exception):
    """MAX_ERRORS reached: expansion stops and reports what it has."""


def _mark_read(item: Any, context: _Context) -> None:
    """Every named value a failed statement names counts as read: it was meant to be, and
    "bound but nothing reads it" would only repeat the statement's own error."""
    exprs: list[Any] = []
    if isinstance(item, ast.Statement):
        exprs = [arg.value for arg in item.args]
    elif isinstance(item, ast.Let | ast.From) and item.value is not None:
        exprs = [item.value]
    values = context.values
    if values is None:
        return
    try:
        names = names_in(*exprs)
    except SpecError:
        return
    for name in names:
        binding = values.find(name)
        if binding is not None:
            binding.read = True
            if binding.items is not None:
                binding.read_items.update(binding.items)


def _replace(context: _Context, **changes: Any) -> _Context:
    return dataclasses.replace(context, **changes)


def _names_shortcut(statement: ast.Statement, values: ValueScope) -> bool:
    """``add shortcut`` (or a misspelling of it): the residual join, not a join over named values."""
    args = statement.args
    if statement.kind != ADD_SHORTCUT or len(args) != 1 or not isinstance(args[0], ast.Positional):
        return False
    name = getattr(args[0].value, "id", None)
    return name == "shortcut" or (isinstance(name, str) and values.find(name) is None)


def _single(value: Any, reader: str, pos: Pos | None = None) -> int:
    """The current value where one value is read: a list (a split's parts) must be named and indexed."""
    if isinstance(value, ValueList):
        raise ValueNameError(
            f"{reader} reads one value, but the current value is a list of {len(value.nodes)}",
            pos or value.pos,
            "name the list (let NAME) and read one of its values: from NAME[0]",
        ).with_note("the list is made here", value.pos)
    return value


def _stride_value(stride: tuple[int, int]) -> Value:
    """A projection's stride argument: one number where both directions agree."""
    return stride[0] if stride[0] == stride[1] else stride


# Settings -------------------------------------------------------------------------------


def _settings(
    definition: ast.Network, instance: Instance, env: Mapping[str, Value], errors: list[SpecError] | None = None
) -> Settings:
    """The network's settings. With `errors`, a bad one is reported there and its default
    stands in (an unusable input shape: none, and nothing is inferred), so that the errors
    after it are found in the same run."""

    def attempt(compute, default):
        if errors is None:
            return compute()
        try:
            return compute()
        except LimitError:
            raise
        except SpecError as error:
            errors.append(error)
            return default

    written: dict[str, tuple[ast.Expr, Pos]] = {}
    for item in definition.body:
        if isinstance(item, ast.Statement) and item.kind in SETTINGS:
            attempt(lambda item=item: _written_setting(item, written), None)
    for override in instance.overrides:
        if override.name not in SETTINGS:
            attempt(lambda override=override: _raise(unknown("setting", override.name, SETTINGS, override.pos)), None)
            continue
        written[override.name] = (override.value, override.pos)

    if "input" not in written:
        attempt(
            lambda: _raise(
                SpecError(
                    f"network '{definition.name}' has no input shape",
                    definition.name_pos,
                    "add a line: input 3x224x224",
                )
            ),
            None,
        )
    shape = attempt(lambda: _input_shape(written, env), ()) if "input" in written else ()

    # B is torchvision's choice, and the paper's for its deeper networks.
    shortcut = attempt(lambda: _choice(written, "shortcut", SHORTCUT_OPTIONS, "B", env), "B")
    checkpoint = attempt(lambda: _choice(written, "checkpoint", CHECKPOINT_OPTIONS, "none", env), "none")
    zero_init = False
    if "zero_init_residual" in written:
        expr, _ = written["zero_init_residual"]
        zero_init = attempt(lambda: as_bool(evaluate(expr, env), expr.pos, "zero_init_residual"), False)
    projection = None
    if "projection" in written:
        projection = attempt(lambda: _projection(written["projection"][0], instance.namespace), None)
    norm_layer = attempt(
        lambda: _replacement(written, "norm", env, lambda kind: kind.is_norm, "a norm: bn, gn(32) or ln"), None
    )
    act_layer = attempt(
        lambda: _replacement(
            written,
            "act",
            env,
            lambda kind: kind.is_activation,
            "an activation: relu, silu, gelu, leaky_relu(0.1)...",
        ),
        None,
    )
    features = attempt(lambda: _features(written["features"][0]), ()) if "features" in written else ()
    return Settings(
        shape,
        shortcut,
        zero_init,
        checkpoint,
        projection,
        norm_layer.kind if norm_layer is not None else "bn",
        act_layer.kind if act_layer is not None else "relu",
        norm_layer,
        act_layer,
        features,
    )


def _features(expr: ast.Expr) -> tuple[str, ...]:
    """``features [act1, layer1, ...]``: module names, as timm's feature_info lists them."""
    items = expr.items if isinstance(expr, ast.ListExpr) else ()
    if not items or not all(isinstance(item, ast.Name) for item in items):
        raise SpecError("the setting 'features' takes a list of module names", expr.pos, _SETTING_USAGE["features"])
    names = tuple(item.id for item in items)  # type: ignore[union-attr]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise SpecError(f"the feature '{name}' is listed twice", items[index].pos)
    return names


def _raise(error: SpecError) -> None:
    raise error


def _written_setting(item: ast.Statement, written: dict[str, tuple[ast.Expr, Pos]]) -> None:
    if item.label is not None:
        raise SpecError(f"the setting '{item.kind}' cannot have a label", item.label_pos)
    if len(item.args) != 1 or not isinstance(item.args[0], ast.Positional):
        raise SpecError(f"the setting '{item.kind}' takes one value", item.pos, _SETTING_USAGE[item.kind])
    if item.kind in written:
        raise SpecError(f"'{item.kind}' is set twice", item.pos).with_note("first set here", written[item.kind][1])
    written[item.kind] = (item.args[0].value, item.pos)


def _input_shape(written: Mapping[str, tuple[ast.Expr, Pos]], env: Mapping[str, Value]) -> tuple:
    expr, _ = written["input"]
    shape = evaluate(expr, env)
    if not (isinstance(shape, tuple) and len(shape) == 3):
        raise SpecError(f"input takes C x H x W, such as 3x224x224; got {describe(shape)}", expr.pos)
    for size in shape:
        as_int(size, expr.pos, "every input size")
    return shape


def _replacement(
    written: Mapping[str, tuple[ast.Expr, Pos]], name: str, env: Mapping[str, Value], accepts, usage: str
) -> Layer | None:
    """The layer that every `bn` (for `norm`) or `relu` (for `act`) statement builds."""
    if name not in written:
        return None
    expr, _ = written[name]
    if isinstance(expr, ast.Name):
        kind_name, args, kind_pos = expr.id, (), expr.pos
    elif isinstance(expr, ast.Call):
        kind_name, args, kind_pos = expr.name, expr.args, expr.name_pos
    else:
        raise SpecError(
            f"the setting '{name}' takes a layer kind, got {describe(evaluate(expr, env))}",
            expr.pos,
            f"write: {name} {usage.split(': ')[1].split(',')[0]}",
        )
    kind = layer_kind(kind_name, kind_pos)
    if not accepts(kind):
        raise SpecError(f"'{kind_name}' cannot be the network's {name}", kind_pos, f"{name} takes {usage}")
    layer = build_layer(kind, args, env, expr.pos)
    if type(layer).kind == ("bn" if name == "norm" else "relu") and not args:
        return None
    return layer


def _projection(expr: ast.Expr, namespace: Namespace) -> str:
    if not isinstance(expr, ast.Name):
        raise SpecError("the setting 'projection' names a block type", expr.pos, "write: projection avg_down")
    if expr.id not in namespace.blocks:
        raise unknown("block", expr.id, namespace.blocks, expr.pos)
    block, _ = namespace.blocks[expr.id]
    names = [p.name for p in block.params]
    required = [p.name for p in block.params if p.default is None]
    if names[:2] != ["out", "stride"] or any(name not in ("out", "stride") for name in required):
        raise SpecError(
            f"a projection block takes (out, stride), but block '{block.name}' takes ({', '.join(names)})",
            expr.pos,
            f"define it as: block {block.name}(out, stride) {{ ... }}",
        ).with_note(f"block '{block.name}' is defined here", block.name_pos)
    return expr.id


def _choice(written: Mapping[str, tuple[ast.Expr, Pos]], name: str, options: tuple[str, ...], default: str, env) -> str:
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
    "projection": "write: projection BLOCK, a block taking (out, stride)",
    "norm": "write: norm gn(32) (every bn becomes that norm)",
    "act": "write: act silu (every relu becomes that activation)",
    "features": "write: features [act1, layer1, layer2, layer3, layer4] (the modules features_only returns)",
}


def _note_defined(block: ast.Block) -> Note:
    return Note(f"block '{block.name}' is defined here", block.pos)


def _located(error: SpecError) -> SpecError:
    """An error already placed at the user's line with its instantiation notes (located_error,
    node_error), which the stage that expanded the block must leave as it is."""
    error._blamed = True  # type: ignore[attr-defined]
    return error


def _blame_stage(error: SpecError, stage: ast.Stage, block: ast.Block) -> SpecError:
    """Report a block's bad value at the stage that passed it; a bad name stays in the block."""
    if isinstance(error, UnknownNameError | ValueNameError) or getattr(error, "_blamed", False):
        if not getattr(error, "_blamed", False):
            error.with_note(f"block '{block.name}' is used by stage '{stage.name}'", stage.pos)
        error._blamed = True  # type: ignore[attr-defined]
        return error
    error.notes.insert(0, Note(f"in block '{block.name}'", error.pos))
    error.pos = stage.pos
    error._blamed = True  # type: ignore[attr-defined]
    return error


__all__ = ["SETTINGS", "Expander", "NameScope", "elaborate"]
