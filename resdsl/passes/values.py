"""Named values, lists and loops: the statements that give a block several paths.

``let NAME`` names the current value, ``from NAME`` makes a named value current,
``add``/``mul``/``cat`` over named values join any of them, ``split`` gives a list of
channel groups, ``weighted W, V`` sums ``W[i] * V[i]``, and ``for i in A .. B`` unrolls
its body. These live only in the front end: in the IR every value is one node with
ordered inputs (a split is one node per part), as in torch.fx.

Names are scoped to one block instance (each repetition of a stage has its own); a
loop's iteration has a scope of its own for the names it binds, except the elements
of a list (``let o[i]``), which belong to the block. Binding a name that is already
bound is an error (no shadowing), as is reading one before it is bound, and a value
that is named but never read, unless it is the block's result (a path written and
forgotten). Each is reported where it is written.

:class:`ValueStatements` is mixed into the expander (resdsl/passes/expand.py), whose
``_node``, ``body`` and ``graph`` it uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from resdsl import syntax as ast
from resdsl.errors import LimitError, Pos, SpecError, ValueNameError, closest
from resdsl.evaluate import as_int, describe, evaluate
from resdsl.layers import JOINS, Split, Weighted
from resdsl.parser import MAX_NAME_LENGTH
from resdsl.tokens import KEYWORDS

if TYPE_CHECKING:
    from resdsl.ir import Graph

#: Most iterations of one ``for`` loop (the network's layer bound applies as well).
MAX_LOOP_ITERATIONS = 1024
#: Most parts of one ``split``.
MAX_SPLIT_PARTS = 1024

#: Keywords a value or loop variable may not be named (`x` may: it is a keyword only in `3 x basic(64)`).
_RESERVED = frozenset(KEYWORDS) - {"x"}

#: ``{NAME}`` in a label.
_INTERPOLATION = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(eq=False)
class ValueList:
    """A list of values (a split's parts, ``[p0, p1]``, a list built by ``let o[i]``): front end only."""

    nodes: tuple[int, ...]
    pos: Pos


Current = int | ValueList


@dataclass(eq=False)
class Binding:
    """One name: a single value (``node``) or a list (``items``, index -> node)."""

    name: str
    pos: Pos
    node: int | None = None
    items: dict[int, int] | None = None
    item_pos: dict[int, Pos] = field(default_factory=dict)
    length: int | None = None  # a list of fixed length (a split's); None: built by `let NAME[i]`
    read: bool = False
    read_items: set[int] = field(default_factory=set)

    @property
    def is_list(self) -> bool:
        return self.items is not None

    def nodes(self) -> list[int]:
        if self.items is None:
            return [self.node] if self.node is not None else []
        return list(self.items.values())


class ValueScope:
    """The names of one block instance (or of one loop iteration within it)."""

    def __init__(self, parent: ValueScope | None, body: tuple = ()) -> None:
        self.parent = parent
        self.bindings: dict[str, Binding] = {}
        #: Values that an enclosing branch's join will read once the branch is expanded.
        self.pending: set[int] = set()
        self._body = body
        self._lets: dict[str, Pos] | None = None

    @property
    def root(self) -> ValueScope:
        scope = self
        while scope.parent is not None:
            scope = scope.parent
        return scope

    def find(self, name: str) -> Binding | None:
        scope: ValueScope | None = self
        while scope is not None:
            if name in scope.bindings:
                return scope.bindings[name]
            scope = scope.parent
        return None

    def visible(self) -> list[str]:
        names: list[str] = []
        scope: ValueScope | None = self
        while scope is not None:
            names += scope.bindings
            scope = scope.parent
        return names

    def names_node(self, node: int) -> bool:
        scope: ValueScope | None = self
        while scope is not None:
            if any(node in binding.nodes() for binding in scope.bindings.values()):
                return True
            scope = scope.parent
        return False

    def bound_later(self, name: str) -> Pos | None:
        """Where the block binds `name`, if anywhere: for "read before it is bound"."""
        root = self.root
        if root._lets is None:
            lets: dict[str, Pos] = {}
            stack = list(reversed(root._body))
            while stack:
                item = stack.pop()
                if isinstance(item, ast.Let):
                    lets.setdefault(item.name, item.name_pos)
                elif isinstance(item, ast.If):
                    stack += [*reversed(item.otherwise), *reversed(item.then)]
                elif isinstance(item, ast.For | ast.Branch):
                    stack += list(reversed(item.body))
            root._lets = lets
        return root._lets.get(name)


class ValueStatements:
    """The expander's statements over named values (mixed into resdsl.passes.expand.Expander)."""

    graph: Graph
    interpolated: dict[tuple[int, str], tuple[Pos, str]]
    loop_names: list[str]  # the loop variables of the loops being unrolled, outermost first

    #: Statements run so far (loop iterations and block instances included), against Limits.max_statements.
    statements_run = 0

    # Provided by the expander.
    def _node(self, layer, inputs, statement, context, *, label, written) -> int:  # pragma: no cover
        raise NotImplementedError

    def body(self, items: tuple, value: Any, context: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def count_statement(self, pos: Pos, count: int = 1) -> None:
        """`count` more statements run; past the bound, a LimitError where it was crossed."""
        self.statements_run += count
        limit = self.network.limits.max_statements  # type: ignore[attr-defined]
        if self.statements_run > limit:
            error = LimitError(
                f"expanding the network runs more than {limit:,} statements "
                "(each loop iteration and each repetition of a stage counts as one)",
                pos,
                "loops and stages repeat what they hold; make them shorter, "
                "or raise the bound with Limits(max_statements=N) in the API",
            )
            error._blamed = True  # type: ignore[attr-defined] # where it was crossed, not the stage's line
            raise error

    # let / from -------------------------------------------------------------------------

    def let_statement(self, item: ast.Let, value: Current, context: Any) -> Current:
        scope: ValueScope = context.values
        target = value if item.value is None else self.read_values(item.value, context)
        if item.name == "shortcut":
            raise ValueNameError(
                "'shortcut' names the residual (add shortcut, tap shortcut), not a value", item.name_pos
            )
        if item.name in _RESERVED:
            # `let for` would parse, but `from for` and `add for, x` read as the keyword.
            raise ValueNameError(
                f"'{item.name}' is a keyword of the language, not a name for a value",
                item.name_pos,
                f"choose another name, such as {item.name}_",
            )
        if item.index is None:
            existing = scope.find(item.name)
            if existing is not None:
                raise ValueNameError(
                    f"'{item.name}' is already bound: a name is bound once in a block",
                    item.name_pos,
                    "choose another name (a list built in a loop is written: let NAME[i])",
                ).with_note(f"'{item.name}' is bound here", existing.pos)
            if item.name in context.env:
                raise ValueNameError(
                    f"'{item.name}' is a parameter or loop variable of the block; a value needs a name of its own",
                    item.name_pos,
                    "choose another name",
                )
            if isinstance(target, ValueList):
                binding = Binding(
                    item.name,
                    item.name_pos,
                    items=dict(enumerate(target.nodes)),
                    item_pos=dict.fromkeys(range(len(target.nodes)), item.name_pos),
                    length=len(target.nodes),
                )
            else:
                binding = Binding(item.name, item.name_pos, node=target)
            scope.bindings[item.name] = binding
            return value
        # let NAME[i]: one element of a list that the block builds.
        if isinstance(target, ValueList):
            raise ValueNameError(
                f"'{item.name}[...]' holds one value, but this is a list of {len(target.nodes)}",
                item.pos,
                "name the list itself: let NAME",
            )
        index = as_int(evaluate(item.index, context.env), item.index.pos, "an index", minimum=None)
        if index < 0 or index >= MAX_SPLIT_PARTS:
            raise ValueNameError(
                f"index {index} is out of range: a list holds items 0 to {MAX_SPLIT_PARTS - 1}", item.index.pos
            )
        binding = scope.find(item.name)
        if binding is None:
            if item.name in context.env:
                raise ValueNameError(
                    f"'{item.name}' is a parameter or loop variable of the block; a value needs a name of its own",
                    item.name_pos,
                    "choose another name",
                )
            binding = Binding(item.name, item.name_pos, items={})
            scope.root.bindings[item.name] = binding
        elif not binding.is_list or binding.length is not None:
            raise ValueNameError(
                f"'{item.name}' is already bound: a name is bound once in a block",
                item.name_pos,
                "a list built element by element must not be bound otherwise",
            ).with_note(f"'{item.name}' is bound here", binding.pos)
        assert binding.items is not None
        if index in binding.items:
            raise ValueNameError(
                f"'{item.name}[{index}]' is already bound", item.pos, "each element of a list is bound once"
            ).with_note(f"'{item.name}[{index}]' is bound here", binding.item_pos[index])
        binding.items[index] = target
        binding.item_pos[index] = item.pos
        return value

    def from_statement(self, item: ast.From, value: Current, context: Any) -> Current:
        self.drop_current(value, context, item.pos, "'from'")
        return self.read_values(item.value, context)

    def drop_current(self, value: Current, context: Any, pos: Pos, what: str) -> None:
        """A statement replaces the current value without reading it: the value must
        have a reader or a name (else a path was written and forgotten)."""
        scope: ValueScope = context.values
        if isinstance(value, ValueList):
            if not any(b.is_list and set(value.nodes) <= set(b.nodes()) for b in _bindings(scope)):
                raise ValueNameError(
                    f"the list made here is never named, so {what} leaves it unread",
                    value.pos,
                    "name it: let NAME, and read its items as NAME[i]",
                )
            return
        block = context.block
        node = self.graph.node(value)
        if node.users or scope.names_node(value) or value in scope.root.pending:
            return
        if block is not None and value in (block.tap, block.entry):
            return
        if node.kind == "input":
            return
        raise ValueNameError(
            f"{what} replaces a value that nothing reads",
            pos,
            "name the value first (let NAME) and read it, or remove the layers that make it",
        ).with_note("the value is made here", node.pos)

    # Reading values ------------------------------------------------------------------------

    def read_values(self, expr: ast.Expr, context: Any) -> Current:
        """The value(s) `expr` names: a name, NAME[i], or a list [a, b, ...]."""
        if isinstance(expr, ast.ListExpr):
            nodes: list[int] = []
            for item in expr.items:
                got = self.read_values(item, context)
                nodes += got.nodes if isinstance(got, ValueList) else [got]
            return ValueList(tuple(nodes), expr.pos)
        if isinstance(expr, ast.Name):
            binding = self._binding(expr.id, expr.pos, context)
            if not binding.is_list:
                binding.read = True
                assert binding.node is not None
                return binding.node
            assert binding.items is not None
            count = binding.length if binding.length is not None else len(binding.items)
            for index in range(count):
                if index not in binding.items:
                    raise ValueNameError(
                        f"'{expr.id}' is read whole, but '{expr.id}[{index}]' is not bound yet",
                        expr.pos,
                        f"bind every element from 0 up (let {expr.id}[i] in a loop)",
                    ).with_note(f"'{expr.id}' is bound here", binding.pos)
            binding.read_items.update(binding.items)
            return ValueList(tuple(binding.items[index] for index in range(count)), expr.pos)
        if isinstance(expr, ast.Index) and isinstance(expr.target, ast.Name):
            name = expr.target.id
            binding = self._binding(name, expr.target.pos, context)
            if not binding.is_list:
                raise ValueNameError(f"'{name}' is one value, not a list: it cannot be indexed", expr.pos)
            assert binding.items is not None
            index = as_int(evaluate(expr.index, context.env), expr.index.pos, "an index", minimum=None)
            if binding.length is not None and not 0 <= index < binding.length:
                raise ValueNameError(
                    f"index {index} is out of range: '{name}' holds {binding.length} values "
                    f"({name}[0] to {name}[{binding.length - 1}])",
                    expr.index.pos,
                ).with_note(f"'{name}' is bound here", binding.pos)
            if index not in binding.items:
                error = ValueNameError(
                    f"'{name}[{index}]' is read before it is bound",
                    expr.pos,
                    f"bind it first: let {name}[{index}]" if index >= 0 else "indexes count from 0",
                )
                raise error.with_note(f"'{name}' is bound here", binding.pos)
            binding.read_items.add(index)
            return binding.items[index]
        what = describe(evaluate(expr, context.env)) if not isinstance(expr, ast.Index) else "an index of a list"
        raise ValueNameError(
            f"expected a named value (a name bound by 'let', or NAME[i]), got {what}",
            expr.pos,
            "name a value first: let NAME",
        )

    def _binding(self, name: str, pos: Pos, context: Any) -> Binding:
        scope: ValueScope = context.values
        binding = scope.find(name)
        if binding is not None:
            return binding
        later = scope.bound_later(name)
        if later is not None:
            raise ValueNameError(f"'{name}' is read before it is bound", pos, f"bind it first: let {name}").with_note(
                f"'{name}' is bound here", later
            )
        if name in context.env:
            raise ValueNameError(
                f"'{name}' is a number ({describe(context.env[name])}), not a named value",
                pos,
                "joins and 'from' take values bound by 'let'",
            )
        guess = closest(name, scope.visible())
        hint = f"did you mean '{guess}'?" if guess else "bind a value first: let NAME"
        raise ValueNameError(f"no value is named '{name}'", pos, hint)

    # Joins, split, weighted ---------------------------------------------------------------

    def value_join(self, statement: ast.Statement, value: Current, context: Any) -> Current:
        """``add p0, p1``, ``cat o, last``: a join over named values and lists."""
        _no_label(statement, f"'{statement.kind}' over named values")
        inputs: list[int] = []
        for arg in statement.args:
            if isinstance(arg, ast.Keyword):
                raise SpecError(f"'{statement.kind}' takes named values, not keywords", arg.name_pos)
            got = self.read_values(arg.value, context)
            inputs += got.nodes if isinstance(got, ValueList) else [got]
        if not inputs:
            raise SpecError(f"'{statement.kind}' of an empty list", statement.pos)
        self.drop_current(value, context, statement.pos, f"'{statement.kind}'")
        if len(inputs) == 1:
            return inputs[0]  # a join of one value is that value
        return self._node(
            JOINS[statement.kind](), tuple(inputs), statement, context, label=None, written=statement.kind
        )

    def weighted(self, statement: ast.Statement, value: Current, context: Any) -> Current:
        """``weighted WEIGHTS, VALUES``: the sum of WEIGHTS[i] * VALUES[i]."""
        _no_label(statement, "'weighted'")
        args = statement.args
        if len(args) != 2 or any(isinstance(arg, ast.Keyword) for arg in args):
            raise SpecError(
                "'weighted' takes a list of weights and a list of values",
                statement.pos,
                "write: weighted a, [p0, p1]",
            )
        weights, values = (self.read_values(arg.value, context) for arg in args)
        weights_nodes = weights.nodes if isinstance(weights, ValueList) else (weights,)
        values_nodes = values.nodes if isinstance(values, ValueList) else (values,)
        if len(weights_nodes) != len(values_nodes) or not values_nodes:
            raise ValueNameError(
                f"'weighted' needs as many weights as values: {len(weights_nodes)} weights, {len(values_nodes)} values",
                statement.pos,
            )
        self.drop_current(value, context, statement.pos, "'weighted'")
        return self._node(
            Weighted(len(values_nodes)),
            (*weights_nodes, *values_nodes),
            statement,
            context,
            label=None,
            written="weighted",
        )

    def split(self, statement: ast.Statement, value: Current, context: Any) -> ValueList:
        """``split N`` (equal channel groups) or ``split [SIZES]``: one node per part."""
        _no_label(statement, "'split'")
        args = statement.args
        if len(args) != 1 or isinstance(args[0], ast.Keyword):
            raise SpecError("'split' takes a number of parts or a list of sizes", statement.pos, _SPLIT_USAGE)
        written = args[0].value
        parts = evaluate(written, context.env)
        sizes: tuple[int, ...] = ()
        if isinstance(parts, tuple):
            sizes = parts
            count = len(sizes)
        else:
            count = as_int(parts, written.pos, "the number of parts of a split")
        if count < 1:
            raise SpecError("'split' of an empty list of sizes", written.pos, _SPLIT_USAGE)
        if count > MAX_SPLIT_PARTS:
            raise LimitError(f"a split into {count:,} parts; splits make at most {MAX_SPLIT_PARTS:,}", written.pos)
        nodes = tuple(
            self._node(Split(part, count, sizes), (value,), statement, context, label=None, written="split")
            for part in range(count)
        )
        return ValueList(nodes, statement.pos)

    # Loops and labels ---------------------------------------------------------------------

    def for_statement(self, item: ast.For, value: Current, context: Any) -> Current:
        start = as_int(evaluate(item.start, context.env), item.start.pos, "the start of a loop", minimum=None)
        stop = as_int(evaluate(item.stop, context.env), item.stop.pos, "the end of a loop", minimum=None)
        if stop - start > MAX_LOOP_ITERATIONS:
            error = LimitError(
                f"a loop of {stop - start:,} iterations ({start} .. {stop}); a loop runs at most "
                f"{MAX_LOOP_ITERATIONS:,} times",
                item.stop.pos,
                "loops unroll when the network is compiled; repeat blocks with a stage instead",
            )
            error._blamed = True  # type: ignore[attr-defined] # the loop's own line, not the stage's
            raise error
        if item.name in context.env:
            raise SpecError(
                f"the loop variable '{item.name}' hides a name the block already has",
                item.name_pos,
                "choose another name for the loop variable",
            )
        if item.name in _RESERVED:
            raise SpecError(
                f"'{item.name}' is a keyword of the language, not a name for a loop variable",
                item.name_pos,
                f"choose another name, such as {item.name}_",
            )
        bound = context.values.find(item.name)
        if bound is not None:
            # The reverse (`let i` inside `for i`) is refused too: a name means one thing in a block.
            raise ValueNameError(
                f"the loop variable '{item.name}' hides the value named '{item.name}'",
                item.name_pos,
                "choose another name for the loop variable",
            ).with_note(f"'{item.name}' is bound here", bound.pos)
        from dataclasses import replace

        self.loop_names.append(item.name)
        for index in range(start, stop):
            self.count_statement(item.pos)
            scope = ValueScope(context.values)
            inner = replace(context, env={**context.env, item.name: index}, values=scope)
            value = self.body(item.body, value, inner)
            finish_scope(scope, value, context.block, self.graph)
        self.loop_names.pop()
        return value

    def label(self, label: str | None, label_pos: Pos | None, context: Any) -> str | None:
        """The label with ``{NAME}`` replaced by its value; the same label twice in one scope is an error."""
        if label is not None and label.startswith(".."):
            _check_outer_label(label, label_pos, context)
        if label is None or "{" not in label:
            return label
        values: list[str] = []

        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name not in context.env:
                raise ValueNameError(
                    f"'{{{name}}}' in the label '{label}' names nothing",
                    label_pos,
                    "interpolate a loop variable or a parameter: convs.{i}",
                )
            value = context.env[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(
                    f"'{{{name}}}' in the label '{label}' is {describe(value)}; labels interpolate integers",
                    label_pos,
                )
            values.append(f"{name} = {value}")
            return str(value)

        result = _INTERPOLATION.sub(substitute, label)
        if len(result) > MAX_NAME_LENGTH:
            raise LimitError(
                f"this label gives a name of {len(result):,} characters ('{result[:40]}...'); "
                f"names are at most {MAX_NAME_LENGTH}",
                label_pos,
                "choose a shorter label",
            )
        key = (id(context.names), result)
        named = {value.split(" = ")[0] for value in values}
        # Only the loops of this block's own body: a block used inside a loop does not see its variable.
        values += [
            f"{name} = {context.env[name]}" for name in self.loop_names if name not in named and name in context.env
        ]
        where = ", ".join(values)
        if key in self.interpolated:
            first_pos, first = self.interpolated[key]
            raise ValueNameError(
                f"the label '{label}' gives '{result}' twice: with {first} and with {where}",
                label_pos,
                "interpolate every name that changes between the two (convs.{i}.{j})",
            ).with_note(f"'{result}' is first given here", first_pos)
        self.interpolated[key] = (label_pos, where)  # type: ignore[assignment]
        return result


def _bindings(scope: ValueScope) -> list[Binding]:
    found: list[Binding] = []
    current: ValueScope | None = scope
    while current is not None:
        found += current.bindings.values()
        current = current.parent
    return found


def _has_users(graph: Any, node: int | None) -> bool:
    return node is not None and node in graph and bool(graph.node(node).users)


def finish_scope(scope: ValueScope, result: Current, block: Any, graph: Any) -> None:
    """Every named value must be read, unless it is the result (of the block or iteration).

    A value counts as read when anything reads it: its name, or the layer after the
    `let` that named it while it was still the current value (``let x`` then ``bn``).
    """
    exempt = set(result.nodes) if isinstance(result, ValueList) else {result}
    if block is not None and block.tap is not None:
        exempt.add(block.tap)
    for binding in scope.bindings.values():
        if not binding.is_list:
            if not binding.read and binding.node not in exempt and not _has_users(graph, binding.node):
                raise ValueNameError(
                    f"'{binding.name}' is bound but nothing reads it",
                    binding.pos,
                    f"read it (from {binding.name}, add {binding.name}, ...) or remove the path that makes it",
                )
            continue
        assert binding.items is not None
        for index, node in sorted(binding.items.items()):
            if index not in binding.read_items and node not in exempt and not _has_users(graph, node):
                raise ValueNameError(
                    f"'{binding.name}[{index}]' is bound but nothing reads it",
                    binding.item_pos.get(index, binding.pos),
                    f"read it ({binding.name}[{index}], or the whole list {binding.name}) or remove it",
                )


def _check_outer_label(label: str, label_pos: Pos | None, context: Any) -> None:
    """``..NAME`` names a module of the scope around this one; a stage's block has none it may use."""
    names = context.names
    block = context.block
    outermost = names.parent is None or (
        names.parent.parent is None and block is not None and block.stage is not None and context.role != "shortcut"
    )
    if outermost:
        raise ValueNameError(
            f"the label '{label}' names a module outside the block, but only a projection or a block used "
            "inside another block has a scope around it",
            label_pos,
            f"write the label without '..': {label[2:]}",
        )


def _no_label(statement: ast.Statement, what: str) -> None:
    if statement.label is not None:
        raise SpecError(f"{what} makes no module, so it takes no label", statement.label_pos)


_SPLIT_USAGE = "write: split 2 (equal channel groups) or split [64, 32] (sizes)"


__all__ = [
    "MAX_LOOP_ITERATIONS",
    "MAX_SPLIT_PARTS",
    "Binding",
    "ValueList",
    "ValueScope",
    "ValueStatements",
    "finish_scope",
]
