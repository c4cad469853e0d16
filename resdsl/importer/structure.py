"""Recover the structure a person would write from the importer's flat graph, as text.

The module hierarchy gives the nesting: a ``nn.Sequential`` of block modules is a
stage, a module with a join of its own is a block (one ``block`` definition per
distinct structure, its parameters found by anti-unifying the instances'
constants), and every other module is transparent (its layers are written where they
run, labelled by their module paths). Within a region, a join whose other operand is
computed from the current value alone is a side branch (``mul { ... }``), a block's
sum with its input (or with a projection of it) is ``add shortcut``, and ``let`` /
``from`` name values only where several paths read them. It imports nothing of torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from resdsl.importer.ops import Graph, ImportFailure, Op, Size

# Statements -------------------------------------------------------------------------


class Const:
    """A constant in a statement: what anti-unification may turn into a parameter.
    ``default`` is the value that lets a keyword argument be left out (None: never)."""

    __slots__ = ("default", "role", "value")

    def __init__(self, value: Any, role: str, default: Any = None) -> None:
        self.value = value
        self.role = role
        self.default = default


@dataclass
class Stmt:
    parts: list[Any]  # text and Consts; a keyword Const is preceded by its ", name=" text
    body: list[Stmt] | None = None  # a branch's statements (`mul { ... }`)

    def key(self) -> tuple:
        shape = tuple(
            p if isinstance(p, str) else p.key() if isinstance(p, CallPart) else ("#", p.role) for p in self.parts
        )
        return (shape, None if self.body is None else tuple(s.key() for s in self.body))

    def consts(self) -> Iterator[Const]:
        for part in self.parts:
            if isinstance(part, Const):
                yield part
            elif isinstance(part, CallPart):
                yield from part.consts()
        for stmt in self.body or ():
            yield from stmt.consts()


class CallPart:
    """A block used in a statement: its arguments are the used block's parameters, known
    once its type is solved; they are slots of the statement's own block."""

    def __init__(self, recovery: Recovery, block_type: BlockType, use: BlockUse) -> None:
        self.recovery = recovery
        self.type = block_type
        self.use = use
        self._consts: list[Const] | None = None

    def key(self) -> tuple:
        return ("call", self.type.name)

    def consts(self) -> list[Const]:
        if self._consts is None:
            self.recovery.solve(self.type)
            values = self.recovery.arg_values(self.type, self.use)
            self._consts = [
                Const(values[name], name if name != "stride" else "stride", Size((1, 1)) if name == "stride" else None)
                for name in self.type.params
            ]
        return self._consts

    def render(self, values: Callable[[Const], str]) -> str:
        texts = []
        for name, const in zip(self.type.params, self.consts()):
            shown = values(const)
            if name in self.type.defaults:
                if shown:
                    texts.append(f"{name}={shown}")
            else:
                texts.append(shown or _text(const.value))
        return f"{self.type.name}({', '.join(texts)})"


def _text(value: Any, kernel: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Size):
        if not kernel and len(set(value)) == 1:
            return str(value[0])
        return "x".join(map(str, value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def _same(kernel: Size, dilation: Size) -> Size:
    return Size(tuple(d * (k // 2) for k, d in zip(kernel, dilation)))


def _kw(parts: list[Any], name: str, value: Any, role: str, default: Any) -> None:
    parts.append(f", {name}=")
    parts.append(Const(value, role, default))


def statement(op: Op, label: str | None) -> Stmt:
    """The statement of one layer op, its label given relative to its scope."""
    if label and label[0].isdigit():
        raise ImportFailure(
            f"cannot import the module {op.label}: a label that starts with a number (a top-level nn.Sequential's "
            "layers): the language's labels start with a name",
            hint="wrap the Sequential in a module that names it",
            file=op.where,
        )
    parts: list[Any] = [f"{label}: " if label else "", op.kind]
    kw = dict(op.kwargs)
    kind = op.kind
    if kind == "conv":
        kernel, out = op.args
        stride = kw.get("stride", Size((1, 1)))
        dilation = kw.get("dilation", Size((1, 1)))
        parts += [" ", Const(kernel, "kernel"), ", ", Const(out, "width")]
        _kw(parts, "stride", stride, "stride", Size((1, 1)))
        _kw(parts, "padding", kw.get("padding", _same(kernel, dilation)), "padding", _same(kernel, dilation))
        _kw(parts, "dilation", dilation, "dilation", Size((1, 1)))
        _kw(parts, "groups", kw.get("groups", 1), "groups", 1)
        for flag in ("bias", "standardize"):
            if kw.get(flag):
                parts.append(f", {flag}=true")
        if "gamma" in kw:
            _kw(parts, "gamma", kw["gamma"], "gamma", None)
            _kw(parts, "eps", kw.get("eps", 1e-5), "eps", 1e-5)
    elif kind in ("maxpool", "avgpool") and op.args:
        (kernel,) = op.args
        parts += [" ", Const(kernel, "kernel")]
        _kw(parts, "stride", kw.get("stride", Size((1, 1))), "stride", Size((1, 1)))
        default_padding = _same(kernel, Size((1, 1))) if kind == "maxpool" else Size((0, 0))
        _kw(parts, "padding", kw.get("padding", default_padding), "padding", default_padding)
        for flag in ("ceil_mode",):
            if kw.get(flag):
                parts.append(f", {flag}=true")
        if kw.get("count_include_pad") is False:
            parts.append(", count_include_pad=false")
    elif kind == "fc":
        parts += [" ", Const(op.args[0], "width")]
        if kw.get("bias") is False:
            parts.append(", bias=false")
    elif kind == "gn":
        parts += [" ", Const(op.args[0], "groups")]
        _kw(parts, "eps", kw.get("eps", 1e-5), "eps", 1e-5)
    elif kind == "ln":
        parts.append(" ")
        parts.append("")
        _kw(parts, "eps", kw.get("eps", 1e-6), "eps", 1e-6)
    elif kind == "softmax":
        parts.append(" ")
        _kw(parts, "groups", kw.get("groups", 1), "groups", 1)
        _kw(parts, "cardinality", kw.get("cardinality", 1), "cardinality", 1)
    elif kind == "split":
        (n,) = op.args
        parts += [" ", _text(n) if isinstance(n, list) else Const(n, "groups")]
    elif kind == "hardtanh":
        parts += [" ", Const(op.args[0], "low"), ", ", Const(op.args[1], "high")]
    elif kind in ("leaky_relu", "dropout", "drop_path", "scale", "layerscale", "channel_conv"):
        role = {"channel_conv": "kernel", "leaky_relu": "slope", "layerscale": "init"}.get(kind, "p")
        parts += [" ", Const(op.args[0], role)]
    return Stmt(parts)


def render(stmts: list[Stmt], values: Callable[[Const], str], indent: str = "    ") -> list[str]:
    """Statements as lines; `values` renders a Const (a literal or a parameter's name),
    returning "" where a keyword argument is left out."""
    lines: list[str] = []
    for stmt in stmts:
        text = ""
        pending = ""
        for part in stmt.parts:
            if isinstance(part, CallPart):
                text += pending + part.render(values)
                pending = ""
            elif isinstance(part, str):
                if part.startswith(", ") and part.endswith("="):
                    pending = part
                else:
                    text += pending + part
                    pending = ""
            else:
                shown = values(part)
                if shown:
                    text += (pending.lstrip(",") if text.endswith(" ") and pending else pending) + shown
                pending = ""
        text = text.rstrip()
        if stmt.body is not None:
            lines.append(f"{indent}{text} {{")
            lines += render(stmt.body, values, indent + "    ")
            lines.append(f"{indent}}}")
        else:
            lines.append(f"{indent}{text}")
    return lines


def literal(const: Const) -> str:
    if const.default is not None and _hashable(const.value) == _hashable(const.default):
        return ""
    return _text(const.value, kernel=const.role == "kernel")


# Units: what one statement (or one stage) of a region computes -----------------------


@dataclass
class Unit:
    out: int  # the value it gives (an op id)
    inputs: list[int]  # the values it reads
    single: bool  # reads its one input as the current value
    stmts: Callable[[Callable[[int], str]], list[Stmt]]  # its statements, given names of values
    ops: list[int] = field(default_factory=list)  # the ops it stands for
    kind: str = "op"
    tap: bool = False  # `tap shortcut` follows it


@dataclass
class BlockUse:
    """One instance of a block: its path, statements and where it stands."""

    path: str
    cls: str
    stmts: list[Stmt]
    entry: int
    exit: int
    shortcut: str  # "identity", "projection", "zeropad", "" (none)
    projection: list[Op] = field(default_factory=list)
    type: BlockType | None = None


@dataclass
class BlockType:
    name: str
    key: tuple
    uses: list[BlockUse] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    slot_params: dict[int, str] = field(default_factory=dict)  # slot index -> parameter name
    defaults: dict[str, str] = field(default_factory=dict)


def snake(name: str) -> str:
    name = name.rsplit(".", 1)[-1]
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    name = re.sub(r"[^a-z0-9_]", "_", name).strip("_") or "block"
    return name if not name[0].isdigit() else f"b_{name}"


class Recovery:
    """Builds the spec's text from a traced :class:`Graph`."""

    def __init__(self, graph: Graph, name: str) -> None:
        self.g = graph
        self.ops = graph.ops
        self.name = name
        self.users = graph.users()
        self.types: dict[tuple, BlockType] = {}
        self.type_names: set[str] = set()
        self.shortcut_kinds: set[str] = set()
        self.projections: list[BlockUse] = []

    # Regions ----------------------------------------------------------------------

    def child(self, op: Op, path: str) -> str | None:
        """The module directly below `path` whose forward made `op` (None: `path`'s own)."""
        scope = op.scope
        if path == "":
            return scope[0] if scope else None
        if path in scope:
            index = scope.index(path)
            return scope[index + 1] if index + 1 < len(scope) else None
        return None

    def boundary(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """The values a set of ops reads from outside, and its values read outside."""
        inside = set(ids)
        entries: list[int] = []
        exits: list[int] = []
        for i in ids:
            for source in self.ops[i].inputs:
                if source not in inside and source not in entries:
                    entries.append(source)
            if any(u not in inside for u in self.users[i]) or i == self.g.output:
                exits.append(i)
        return entries, exits

    def groups(self, path: str, ids: list[int]) -> list[tuple[str | None, list[int]]]:
        out: list[tuple[str | None, list[int]]] = []
        for i in ids:
            child = self.child(self.ops[i], path)
            if child is not None and out and out[-1][0] == child:
                out[-1][1].append(i)
            else:
                out.append((child, [i]))
        return out

    def is_block(self, path: str, ids: list[int]) -> bool:
        if path in self.g.sequential:
            return False
        entries, exits = self.boundary(ids)
        if len(entries) != 1 or len(exits) != 1:
            return False
        return any(self.ops[i].is_join and self.child(self.ops[i], path) is None for i in ids)

    def stage_blocks(self, path: str, ids: list[int]) -> list[tuple[str, list[int]]] | None:
        """The blocks of a stage: a Sequential whose numbered children are blocks in a chain."""
        if path not in self.g.sequential:
            return None
        groups = self.groups(path, ids)
        if any(child is None for child, _ in groups):
            return None
        names = [child for child, _ in groups]
        if names != [f"{path}.{i}" for i in range(len(names))]:
            return None
        previous = None
        for child, members in groups:
            entries, exits = self.boundary(members)
            if len(entries) != 1 or len(exits) != 1 or (previous is not None and entries[0] != previous):
                return None
            if child in self.g.sequential or not self.is_block_module(child, members):
                return None
            previous = exits[0]
        return [(child, members) for child, members in groups if child is not None]

    def is_block_module(self, path: str, ids: list[int]) -> bool:
        # A stage's block: a module with a join of its own, or one that holds layers and
        # blocks but no containers of its own (a ConvNeXt stage, holding a stage, is not).
        if any(self.ops[i].is_join and self.child(self.ops[i], path) is None for i in ids):
            return True
        inner = {p for i in ids for p in self.ops[i].scope if p.startswith(path + ".")}
        return not inner & self.g.sequential

    # Units ------------------------------------------------------------------------

    def units(self, path: str, ids: list[int], prefix: str) -> list[Unit]:
        """The units of a region: stages, blocks used, and layers (transparent modules inlined)."""
        result: list[Unit] = []
        for child, members in self.groups(path, ids):
            if child is None:
                result += [self.op_unit(i, prefix) for i in members]
                continue
            try:
                blocks = self.stage_blocks(child, members) if prefix == "" else None
                if blocks is not None:
                    result.append(self.stage_unit(child, blocks))
                    continue
                if self.is_block(child, members):
                    result.append(self.use_unit(child, members, prefix))
                    continue
            except _NotBlock:
                pass
            result += self.units(child, members, prefix)
        return result

    def relative(self, label: str | None, prefix: str) -> str | None:
        if label is None:
            return None
        if not prefix:
            return label
        if label.startswith(prefix + "."):
            return label[len(prefix) + 1 :]
        raise _NotBlock(label)

    def op_unit(self, i: int, prefix: str) -> Unit:
        op = self.ops[i]
        if op.kind == "item":
            return Unit(i, op.inputs, False, lambda name: [], [i], kind="item")
        if op.is_join:
            kind = op.kind

            def join(name: Callable[[int], str], op: Op = op, kind: str = kind) -> list[Stmt]:
                return [Stmt([f"{kind} " + ", ".join(name(v) for v in op.inputs)])]

            return Unit(i, list(op.inputs), False, join, [i], kind="join")
        if op.kind == "zeropad":

            def refuse(name: Callable[[int], str], op: Op = op) -> list[Stmt]:
                raise ImportFailure(
                    f"cannot import {op.label}: a zero-padding shortcut the language writes only as shortcut A "
                    "(a block's sum with its input)",
                    file=op.where,
                )

            return Unit(i, list(op.inputs), True, refuse, [i], kind="zeropad")
        label = self.relative(op.label, prefix)
        stmt = statement(op, label)
        return Unit(i, list(op.inputs), True, lambda name, stmt=stmt: [stmt], [i], kind=op.kind)

    # Blocks -----------------------------------------------------------------------

    def block_use(self, path: str, ids: list[int]) -> BlockUse:
        entries, exits = self.boundary(ids)
        entry, exit = entries[0], exits[0]
        units = self.units(path, ids, path)
        shortcut, projection = "", []
        units, shortcut, projection = self.residual(units, entry, exit, path)
        units = self.branches(units)
        stmts = emit(units, entry, exit, self.ops)
        cls = self.g.classes.get(path, "block")
        return BlockUse(path, cls, stmts, entry, exit, shortcut, projection)

    def residual(self, units: list[Unit], entry: int, exit: int, path: str) -> tuple[list[Unit], str, list[Op]]:
        """`add shortcut` where the block adds its input, or a projection of it, to its main path."""
        for index, unit in enumerate(units):
            if unit.kind != "join" or self.ops[unit.out].kind != "add" or len(unit.inputs) != 2:
                continue
            for side in (1, 0):
                short, main = unit.inputs[side], unit.inputs[1 - side]
                chain = self.projection_chain(units[:index], short, entry)
                if chain is None:
                    continue
                chain_units, source = chain
                entry_shape, out_shape = self.ops[entry].shape, self.ops[unit.out].shape
                if not chain_units and entry_shape != out_shape:
                    continue
                if chain_units and self.ops[source].shape == out_shape:
                    continue  # a projection where the identity fits: option B would not project
                if source != entry and not any(u.out == source for u in units[:index]):
                    continue
                kinds = [self.ops[u.out].kind for u in chain_units]
                kind = "zeropad" if kinds == ["zeropad"] else "projection" if chain_units else "identity"
                if "zeropad" in kinds and kind != "zeropad":
                    continue
                projection = [self.ops[u.out] for u in chain_units]
                if kind == "projection" and not all(op.label and op.label.startswith(path + ".") for op in projection):
                    continue
                kept = [u for u in units if u not in chain_units]
                if source != entry:
                    for u in kept:
                        if u.out == source:
                            u.tap = True

                def add(name: Callable[[int], str]) -> list[Stmt]:
                    return [Stmt(["add shortcut"])]

                replaced = Unit(unit.out, [main], True, add, [unit.out], kind="shortcut")
                kept[kept.index(unit)] = replaced
                return kept, kind, projection
        return units, "", []

    def projection_chain(self, units: list[Unit], value: int, entry: int) -> tuple[list[Unit], int] | None:
        """The units computing `value` from one source in a chain nothing else reads."""
        chain: list[Unit] = []
        by_out = {u.out: u for u in units}
        while value != entry and value in by_out:
            unit = by_out[value]
            if not unit.single or unit.kind in ("stage", "use", "join", "item"):
                break
            if len(self.users[value]) != 1:
                break
            chain.insert(0, unit)
            value = unit.inputs[0]
        if not chain:
            return ([], entry) if value == entry else None
        return chain, value

    def branches(self, units: list[Unit]) -> list[Unit]:
        """Side branches: `mul { ... }` where a join's other operand comes from its first alone."""
        changed = True
        while changed:
            changed = False
            for index, unit in enumerate(units):
                if unit.kind != "join" or len(unit.inputs) != 2:
                    continue
                kind = self.ops[unit.out].kind
                options = [(0, 1)] if kind == "cat" else [(0, 1), (1, 0)]
                for a_side, b_side in options:
                    a, b = unit.inputs[a_side], unit.inputs[b_side]
                    span = self.branch_span(units, index, a, b)
                    if span is None:
                        continue
                    body_units = units[span:index]
                    body = emit(self.branches(body_units), a, b, self.ops)
                    if kind == "mul" and a_side == 1 and self.ops[a].shape != self.ops[unit.out].shape:
                        continue

                    def stmts(name: Callable[[int], str], kind: str = kind, body: list[Stmt] = body) -> list[Stmt]:
                        return [Stmt([kind], body)]

                    ops = [o for u in body_units for o in u.ops] + [unit.out]
                    units = [*units[:span], Unit(unit.out, [a], True, stmts, ops, kind="branch"), *units[index + 1 :]]
                    changed = True
                    break
                if changed:
                    break
        return units

    def branch_span(self, units: list[Unit], index: int, a: int, b: int) -> int | None:
        """Where the branch computing `b` from `a` starts: units just before the join."""
        needed = {b}
        start = index
        for position in range(index - 1, -1, -1):
            unit = units[position]
            if unit.out in needed:
                needed.discard(unit.out)
                needed.update(v for v in unit.inputs if v != a)
                start = position
            if not needed:
                break
        if needed or start == index:
            return None
        body = units[start:index]
        if not body or body[0].inputs != [a] or not body[0].single:
            return None
        if start > 0 and units[start - 1].out != a:
            return None  # the branch must start from the current value
        outs = {u.out for u in body}
        for u in body:
            if any(i not in outs and i != a for i in u.inputs) or u.kind in ("stage",):
                return None
            readers = set(self.users[u.out])
            allowed = {o for v in body for o in v.ops} | {units[index].out}
            if not readers <= allowed:
                return None
        return start

    def use_unit(self, path: str, ids: list[int], prefix: str) -> Unit:
        use = self.block_use(path, ids)
        block_type = self.register(use)
        label = self.relative(path, prefix)

        call = CallPart(self, block_type, use)

        def stmts(name: Callable[[int], str]) -> list[Stmt]:
            return [Stmt([f"{label}: ", call])]

        return Unit(use.exit, [use.entry], True, stmts, ids, kind="use")

    def stage_unit(self, path: str, blocks: list[tuple[str, list[int]]]) -> Unit:
        uses = [self.block_use(child, members) for child, members in blocks]
        types = [self.register(use) for use in uses]
        entry, exit = uses[0].entry, uses[-1].exit
        ids = [i for _, members in blocks for i in members]

        calls = [CallPart(self, t, u) for t, u in zip(types, uses)]

        def stmts(name: Callable[[int], str]) -> list[Stmt]:
            first = types[0]
            if all(t is first for t in types) and self.stage_args_agree(first, uses):
                return [Stmt([f"stage {path}: {len(uses)} x ", calls[0]])]
            # Blocks a stage cannot repeat (their arguments differ): each under its own path.
            return [Stmt([f"{u.path}: ", c]) for u, c in zip(uses, calls)]

        return Unit(exit, [entry], True, stmts, ids, kind="stage")

    def register(self, use: BlockUse) -> BlockType:
        key = (use.cls, tuple(s.key() for s in use.stmts))
        block_type = self.types.get(key)
        if block_type is None and use.shortcut == "identity":
            # An identity shortcut carries the block's input wherever `tap shortcut` stands:
            # the instance joins a type that taps (a stage's projected first block).
            tap = Stmt(["tap shortcut"]).key()
            for other_key, other in self.types.items():
                taps = [i for i, k in enumerate(other_key[1]) if k == tap]
                untapped = other_key[1][: taps[0]] + other_key[1][taps[0] + 1 :] if len(taps) == 1 else None
                if other_key[0] == use.cls and untapped == key[1]:
                    use.stmts.insert(taps[0], Stmt(["tap shortcut"]))
                    key, block_type = other_key, other
                    break
        if block_type is None:
            base = snake(use.cls)
            name, n = base, 2
            while name in self.type_names:
                name, n = f"{base}_{n}", n + 1
            self.type_names.add(name)
            block_type = self.types[key] = BlockType(name, key)
        block_type.uses.append(use)
        use.type = block_type
        if use.shortcut:
            self.shortcut_kinds.add(use.shortcut)
        if use.shortcut in ("projection", "zeropad"):
            self.projections.append(use)
        return block_type

    # Parameters (anti-unification) -------------------------------------------------

    def slots(self, use: BlockUse) -> list[Const]:
        return [c for s in use.stmts for c in s.consts()]

    def solve(self, block_type: BlockType) -> None:
        """One parameter per distinct vector of a slot's values over the instances."""
        if block_type.params or block_type.slot_params:
            return
        vectors = list(zip(*(self.slots(u) for u in block_type.uses))) if block_type.uses else []
        by_vector: dict[tuple, str] = {}
        names: set[str] = set()
        for index, consts in enumerate(vectors):
            values = tuple(_hashable(c.value) for c in consts)
            if len(set(values)) == 1 or all(c.default is not None and c.value == c.default for c in consts):
                continue  # one value, or each instance's default ("same" padding for its kernel)
            role = consts[0].role
            key = (role in ("kernel",), values)
            if key not in by_vector:
                base = role
                name, n = base, 2
                while name in names:
                    name, n = f"{base}{n}", n + 1
                names.add(name)
                by_vector[key] = name
                block_type.params.append(name)
            block_type.slot_params[index] = by_vector[key]
        if "stride" in block_type.params:
            block_type.params.remove("stride")
            block_type.params.append("stride")
            block_type.defaults["stride"] = "1"

    def arg_values(self, block_type: BlockType, use: BlockUse) -> dict[str, Any]:
        self.solve(block_type)
        slots = self.slots(use)
        return {name: slots[index].value for index, name in block_type.slot_params.items()}

    def stage_args_agree(self, block_type: BlockType, uses: list[BlockUse]) -> bool:
        first = {k: _hashable(v) for k, v in self.arg_values(block_type, uses[0]).items()}
        for use in uses[1:]:
            args = {k: _hashable(v) for k, v in self.arg_values(block_type, use).items()}
            for name in block_type.params:
                if name == "stride":
                    if args[name] not in (1, Size((1, 1))):
                        return False
                elif args[name] != first[name]:
                    return False
        return True

    def definition(self, block_type: BlockType) -> list[str]:
        self.solve(block_type)
        use = block_type.uses[0]
        slot_index = {id(c): i for i, c in enumerate(self.slots(use))}

        def values(const: Const) -> str:
            name = block_type.slot_params.get(slot_index[id(const)])
            if name is None:
                return literal(const)
            return name

        params = [p if p not in block_type.defaults else f"{p}={block_type.defaults[p]}" for p in block_type.params]
        head = f"block {block_type.name}({', '.join(params)}) {{" if params else f"block {block_type.name} {{"
        return [head, *render(use.stmts, values), "}"]

    # The network ------------------------------------------------------------------

    def network(self) -> str:
        ids = [i for i, op in self.ops.items() if op.kind != "input"]
        entry = next(i for i, op in self.ops.items() if op.kind == "input")
        units = self.units("", ids, "")
        units = self.branches(units)
        body = emit(units, entry, self.g.output, self.ops, network=True)
        settings = [f"    input {'x'.join(map(str, self.g.input_shape))}"]
        if "zeropad" in self.shortcut_kinds:
            settings.append("    shortcut A")
        elif not self.shortcut_kinds - {""}:
            settings.append("    shortcut none")
        projection = self.projection_setting()
        definitions: list[str] = []
        if projection is not None:
            definitions += projection[1] + [""]
            settings.append(f"    projection {projection[0]}")
        for block_type in sorted(self.types.values(), key=lambda t: min(u.exit for u in t.uses)):
            definitions += [*self.definition(block_type), ""]
        lines = render(body, literal)
        stemmed = _sections(body, lines)
        return "\n".join([*definitions, f"network {self.name} {{", *settings, *stemmed, "}", ""])

    def projection_setting(self) -> tuple[str, list[str]] | None:
        """The `projection` block where the projections are not the default 1x1 conv and BN."""
        if not self.projections or "zeropad" in self.shortcut_kinds:
            return None
        shapes = []
        for use in self.projections:
            labels = [op.label[len(use.path) + 1 :] for op in use.projection]  # type: ignore[index]
            stmts = [statement(op, label) for op, label in zip(use.projection, labels)]
            shapes.append((use, labels, stmts))
        default = all(
            [op.kind for op in use.projection] == ["conv", "bn"]
            and labels == ["downsample.0", "downsample.1"]
            and use.projection[0].args[0] == Size((1, 1))
            and set(dict(use.projection[0].kwargs)) <= {"stride"}
            for use, labels, _ in shapes
        )
        if default:
            return None
        keys = {tuple(s.key() for s in stmts) for _, _, stmts in shapes}
        if len(keys) != 1:
            raise _NoProjection()
        _, labels0, stmts0 = shapes[0]
        vectors = list(zip(*([c for s in stmts for c in s.consts()] for _, _, stmts in shapes)))
        names: dict[int, str] = {}
        for index, consts in enumerate(vectors):
            values = [c.value for c in consts]
            if len({_hashable(v) for v in values}) == 1 and consts[0].role not in ("width", "stride"):
                continue
            outs = [self.ops[u.exit].shape[0] for u, _, _ in shapes]
            strides = [_stride(self.ops[u.entry].shape, self.ops[u.exit].shape) for u, _, _ in shapes]
            if values == outs:
                names[index] = "out"
            elif [_hashable(v) for v in values] == [_hashable(Size((s, s))) for s in strides]:
                names[index] = "stride"
            elif len({_hashable(v) for v in values}) == 1:
                continue
            else:
                raise _NoProjection()
        slot_index = {id(c): i for i, c in enumerate(c for s in stmts0 for c in s.consts())}

        def values(const: Const) -> str:
            name = names.get(slot_index[id(const)])
            return name if name is not None else literal(const)

        fixed = []
        for position, (stmt, label) in enumerate(zip(stmts0, labels0)):
            inner = label[len("downsample.") :] if label.startswith("downsample.") else None
            if inner == str(position):
                stmt.parts[0] = ""  # numbered by position under `downsample`, as nn.Sequential
            elif inner is not None and not inner[0].isdigit():
                stmt.parts[0] = f"{inner}: "
            elif inner is None:
                stmt.parts[0] = f"..{label}: "
            else:
                raise _NoProjection()
            fixed.append(stmt)
        return "projection", ["block projection(out, stride) {", *render(fixed, values), "}"]


class _NotBlock(Exception):
    """A label outside the block's module: the block is written inline instead."""


class _NoProjection(Exception):
    """Projections that no one `projection` block writes."""


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _stride(before: tuple[int, ...], after: tuple[int, ...]) -> int:
    if len(before) != 3 or len(after) != 3 or after[1] == 0:
        return 1
    return max(1, -(-before[1] // after[1]))


def _sections(body: list[Stmt], lines: list[str]) -> list[str]:
    """The network body with its leading layers in `stem { }` and trailing ones in `head { }`."""
    kinds = [
        "stage" if s.parts and isinstance(s.parts[0], str) and s.parts[0].startswith("stage ") else "x" for s in body
    ]
    if "stage" not in kinds:
        return lines
    counts = [len(render([s], literal)) for s in body]
    first = kinds.index("stage")
    last = len(kinds) - 1 - kinds[::-1].index("stage")
    start = sum(counts[:first])
    end = sum(counts[: last + 1])
    stem, middle, head = lines[:start], lines[start:end], lines[end:]
    out: list[str] = []
    if stem and all(_plain(s) for s in body[:first]):
        out += ["    stem {", *["    " + line for line in stem], "    }"]
    else:
        out += stem
    out += middle
    if head and all(_plain(s) for s in body[last + 1 :]):
        out += ["    head {", *["    " + line for line in head], "    }"]
    else:
        out += head
    return out


def _plain(stmt: Stmt) -> bool:
    first = stmt.parts[0] if stmt.parts else ""
    return isinstance(first, str) and not first.startswith(("let ", "from ", "stage "))


# Emission: let and from only where several paths read a value ------------------------


def emit(units: list[Unit], entry: int, exit: int, ops: dict[int, Op], network: bool = False) -> list[Stmt]:
    """The statements of a region whose current value starts as `entry` and ends as `exit`."""
    statements_units = [u for u in units if u.kind != "item"]
    named: set[int] = set()
    current = entry
    for unit in statements_units:
        if unit.single and unit.inputs and unit.inputs[0] == current:
            pass
        else:
            named.update(_source(v, ops) for v in unit.inputs)
        current = unit.out
    if current != exit:
        named.add(_source(exit, ops))
    for unit in statements_units:
        if ops[unit.out].kind == "split":
            named.add(unit.out)
    names: dict[int, str] = {}

    def name(value: int) -> str:
        op = ops[value]
        if op.kind == "item":
            return f"{name(op.inputs[0])}[{op.args[0]}]"
        return names[value]

    counter = 0

    def bind(value: int) -> list[Stmt]:
        nonlocal counter
        if value not in named or value in names:
            return []
        base = "x" if value == entry else "v"
        counter += 1
        names[value] = base if (base == "x" and "x" not in names.values()) else f"v{counter}"
        return [Stmt([f"let {names[value]}"])]

    out: list[Stmt] = list(bind(entry))
    current = entry
    for unit in statements_units:
        if not (unit.single and unit.inputs and unit.inputs[0] == current) and unit.single:
            out.append(Stmt([f"from {name(unit.inputs[0])}"]))
        out += unit.stmts(name)
        if unit.tap:
            out.append(Stmt(["tap shortcut"]))
        out += bind(unit.out)
        current = unit.out
    if current != exit:
        out.append(Stmt([f"from {name(exit)}"]))
    return out


def _source(value: int, ops: dict[int, Op]) -> int:
    op = ops[value]
    return op.inputs[0] if op.kind == "item" else value


def recover(graph: Graph, name: str) -> str:
    """The spec's text (not yet formatted) for a traced graph."""
    recovery = Recovery(graph, name)
    try:
        return recovery.network()
    except _NoProjection:
        pass
    # Projections that no one `projection` block writes: every block joins its paths by name.
    recovery = Recovery(graph, name)
    recovery.residual = lambda units, entry, exit, path: (units, "", [])  # type: ignore[method-assign]
    return recovery.network()
