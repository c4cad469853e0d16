"""The front end: files, imports, namespaces, and which network a file stands for.

:func:`load` reads a spec and everything it ``use``s (each file once, cycles and
depth checked), giving every file a namespace: the prelude, then its imports,
then its own definitions. :func:`instantiate` picks the network a file stands for,
follows ``network X = Y(args) with ...`` aliases down to a network body, and binds
every parameter, so that the expand pass only has to evaluate and unroll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from resdsl import syntax as ast
from resdsl.errors import CompilerBug, LimitError, Pos, Source, SpecError, UnknownNameError, UseError, unknown
from resdsl.evaluate import CONSTANTS, MAX_LITERAL_DIGITS, Value, bounded, describe, evaluate
from resdsl.files import NotRegularFile, TooLarge, read_regular_file
from resdsl.ir import Frame, Limits
from resdsl.parser import TokenBudget, parse
from resdsl.shipped import USE_PREFIX, shipped_use_target

PRELUDE_PATH = "<prelude>"

#: Longest chain of network aliases (``network a = b``, ``network b = c``...) followed.
MAX_ALIAS_DEPTH = 64


@dataclass
class Namespace:
    """The blocks and networks visible in one file."""

    path: str
    blocks: dict[str, tuple[ast.Block, Namespace]] = field(default_factory=dict)
    networks: dict[str, tuple[ast.Network | ast.NetworkAlias, Namespace]] = field(default_factory=dict)
    own_networks: list[str] = field(default_factory=list)  # defined in this file, in order

    def merge(self, other: Namespace) -> None:
        self.blocks.update(other.blocks)
        self.networks.update(other.networks)


@dataclass
class Instance:
    """A network definition with every parameter bound: what the expand pass unrolls."""

    name: str
    definition: ast.Network
    namespace: Namespace  # where the definition's blocks are looked up
    params: dict[str, Value]
    overrides: list[ast.Override]  # applied after the body's settings, in order
    trace: tuple[Frame, ...]  # alias lines, outermost first
    pos: Pos  # where the chosen network is named


# Files -------------------------------------------------------------------------


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_spec(path: Path, limits: Limits, used_at: Pos | None = None) -> Source:
    """Read a spec file; every way it can fail is a UseError naming the file."""
    shown = _display(path)

    # Where a `use` line is quoted, the message must name the file; where the
    # diagnostic is headed by the file itself, naming it again reads as a stutter.
    named = shown if used_at else "this"

    def fail(message: str, hint: str | None = None) -> UseError:
        return UseError(message, used_at, hint, file=None if used_at else shown)

    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as error:  # ENAMETOOLONG and the like: exists() only swallows "not found"
        reason = error.strerror or str(error)
        raise fail(f"cannot read {shown}: {reason}" if used_at else f"cannot read: {reason}") from None
    if not exists:
        hint = "give a path to a .res file, or the name of a shipped spec (resnet50)"
        if used_at is not None:
            hint = "'use' paths are relative to the file that contains the 'use' line"
        raise fail(f"no such file: {shown}" if used_at else "no such file", hint)
    if is_dir:
        raise fail(f"{named} is a directory, not a .res file")
    try:
        data = read_regular_file(path, limits.max_file_bytes)
    except TooLarge:
        data = b"\0" * (limits.max_file_bytes + 1)  # reported below, as every oversized spec is
    except NotRegularFile as error:
        raise fail(f"{named} is {error.kind}, not a regular file", "give the path of a .res file") from None
    except PermissionError:
        raise fail(f"permission denied: cannot read {shown}" if used_at else "permission denied") from None
    except OSError as error:
        raise fail(
            f"cannot read {shown}: {error.strerror or error}" if used_at else f"cannot read: {error.strerror or error}"
        ) from None
    if len(data) > limits.max_file_bytes:
        raise LimitError(
            f"{shown} is larger than the limit of {limits.max_file_bytes:,} bytes for a spec",
            used_at,
            file=None if used_at else shown,
        )
    return Source(shown, decode_spec(data, shown))


def decode_spec(data: bytes, shown: str) -> str:
    """A spec's text from its bytes: the one decoding the compiler, fmt and the language server share.

    Strict UTF-8, line ends kept as they are (a lone CR stays a CR: inside a comment it
    is comment text, elsewhere the parser reports it), no NUL. Errors point at the byte.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        prefix = data[: error.start]
        line = prefix.count(b"\n") + 1
        column = error.start - (prefix.rfind(b"\n") + 1) + 1
        source = Source(shown, data.decode("utf-8", errors="replace"))
        raise UseError(
            f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})",
            Pos(source, line, column, line, column + 1),
            "save the spec as UTF-8",
        ) from None
    if "\x00" in text:
        offset = text.index("\x00")
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        raise UseError(
            "the file contains a NUL byte; is it a binary file?",
            Pos(Source(shown, text), line, column, line, column + 1),
        )
    return text


@cache
def prelude_text() -> str:
    return (Path(__file__).resolve().parent / "prelude.res").read_text(encoding="utf-8")


@cache
def _prelude() -> Namespace:
    namespace = Namespace(PRELUDE_PATH)
    module = parse(prelude_text(), PRELUDE_PATH)
    errors: list[SpecError] = []
    _define(module, namespace, errors)
    if errors:  # pragma: no cover - the prelude is tested
        raise CompilerBug(f"the prelude: {errors[0]}")
    return namespace


def load(path: str | Path, limits: Limits | None = None) -> Namespace:
    """Parse a spec and its imports; return the spec file's namespace."""
    return _Loader(limits or Limits()).load(Path(path), None, ())


def load_text(text: str, path: str = "<string>", limits: Limits | None = None) -> Namespace:
    """Like :func:`load` for text in memory; ``use`` paths resolve from the current directory."""
    limits = limits or Limits()
    if len(text.encode("utf-8", errors="replace")) > limits.max_file_bytes:
        raise LimitError(f"the spec is larger than the limit of {limits.max_file_bytes:,} bytes")
    loader = _Loader(limits)
    return loader.load_module(parse(text, path, loader.budget), Path.cwd() / "_", ())


class _Loader:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.done: dict[Path, Namespace] = {}
        # Shared by every file of the spec: a hundred used files of the bound each would
        # take a hundred times the time the bound promises.
        self.budget = TokenBudget(limits.max_tokens, limits.max_tokens)

    def load(self, path: Path, used_at: Pos | None, chain: tuple[Path, ...]) -> Namespace:
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as error:  # a symlink loop, a name too long for the OS
            shown = _display(path)
            raise UseError(
                f"cannot read {shown}: {getattr(error, 'strerror', None) or error}", used_at, file=shown
            ) from None
        if resolved in chain:
            cycle = " -> ".join(_display(p) for p in (*chain[chain.index(resolved) :], resolved))
            raise UseError(f"cyclic use: {cycle}", used_at)
        if resolved in self.done:
            return self.done[resolved]
        if len(chain) >= self.limits.max_use_depth:
            raise LimitError(f"'use' files nest more than {self.limits.max_use_depth} deep", used_at)
        source = read_spec(path, self.limits, used_at)
        namespace = self.load_module(parse(source.text, source.path, self.budget), resolved, (*chain, resolved))
        self.done[resolved] = namespace
        return namespace

    def load_module(self, module: ast.Module, path: Path, chain: tuple[Path, ...]) -> Namespace:
        namespace = Namespace(module.source.path)
        namespace.merge(_prelude())
        # Each `use` and each definition is checked on its own: every independent error
        # of the file is reported (a limit stops at once).
        errors: list[SpecError] = []
        for definition in module.definitions:
            if isinstance(definition, ast.Use):
                try:
                    namespace.merge(self._use(definition, path, chain))
                except LimitError:
                    raise
                except SpecError as error:
                    errors.append(error)
        _define(module, namespace, errors)
        if errors:
            raise SpecError.several(errors)
        return namespace

    def _use(self, definition: ast.Use, path: Path, chain: tuple[Path, ...]) -> Namespace:
        """The namespace of one `use`d file (a shipped spec, or a path beside this file)."""
        target = path.parent / definition.path
        if "\x00" in definition.path:
            # The OS cannot even look such a path up (Python raises ValueError).
            raise UseError("a 'use' path cannot contain a NUL character", definition.pos)
        if definition.path.startswith(USE_PREFIX):  # a shipped spec: use "resdsl:torchvision/resnet50"
            target = shipped_use_target(definition.path.removeprefix(USE_PREFIX), definition.pos)
        if target.suffix != ".res":
            raise UseError(
                f"'use' imports .res files; {definition.path!r} is not one",
                definition.pos,
                "name a spec file ending in .res",
            )
        return self.load(target, definition.pos, chain)


def _define(module: ast.Module, namespace: Namespace, errors: list[SpecError]) -> None:
    seen: dict[str, Pos] = {}
    for definition in module.definitions:
        if isinstance(definition, ast.Use):
            continue
        if definition.name in seen:
            errors.append(
                SpecError(f"'{definition.name}' is defined twice in this file", definition.name_pos).with_note(
                    "first defined here", seen[definition.name]
                )
            )
            continue
        seen[definition.name] = definition.name_pos
        try:
            if isinstance(definition, ast.NetworkAlias):
                _refuse_repeats(
                    definition.overrides, "the setting '{}' is given twice in this 'with'", "first given here"
                )
            else:
                _refuse_repeats(definition.params, "two parameters are named '{}'", "the first one")
        except SpecError as error:
            errors.append(error)
            continue
        if isinstance(definition, ast.Block):
            namespace.blocks[definition.name] = (definition, namespace)
        else:
            namespace.networks[definition.name] = (definition, namespace)
            namespace.own_networks.append(definition.name)


def _refuse_repeats(items: tuple[ast.Param, ...] | tuple[ast.Override, ...], message: str, note: str) -> None:
    """An error at the second of two items (parameters, overrides) sharing one name."""
    first: dict[str, Pos] = {}
    for item in items:
        if item.name in first:
            raise SpecError(message.format(item.name), item.pos, "remove one of them").with_note(note, first[item.name])
        first[item.name] = item.pos


# Choosing and binding a network -------------------------------------------------------


def _free_params(name: str, namespace: Namespace) -> list[ast.Param]:
    """The parameters a network still takes: an alias's base's, less those it binds.

    Iterative, and bounded by MAX_ALIAS_DEPTH: a chain of a thousand aliases must
    be refused, not recursed through.
    """
    chain: list[ast.NetworkAlias] = []
    seen: set[str] = set()
    home = namespace
    params: list[ast.Param] = []
    while name in home.networks and name not in seen:
        seen.add(name)
        definition, home = home.networks[name]
        if isinstance(definition, ast.Network):
            params = list(definition.params)
            break
        chain.append(definition)
        if len(chain) > MAX_ALIAS_DEPTH:
            raise _alias_depth_error(chain[0])
        name = definition.base
    for alias in reversed(chain):
        bound = _alias_arg_names(alias, params)
        params = [p for p in params if p.name not in bound]
    return params


def _alias_depth_error(alias: ast.NetworkAlias) -> LimitError:
    return LimitError(
        f"network aliases are chained more than {MAX_ALIAS_DEPTH} deep",
        alias.name_pos,
        "alias the network that has a body directly rather than through a chain of aliases",
    )


def _alias_arg_names(alias: ast.NetworkAlias, base_params: list[ast.Param]) -> set[str]:
    names = set()
    index = 0
    for arg in alias.args:
        if isinstance(arg, ast.Keyword):
            names.add(arg.name)
        elif index < len(base_params):
            names.add(base_params[index].name)
            index += 1
    return names


def choose(namespace: Namespace, file_stem: str, network: str | None, params: Mapping[str, Value], pos: Pos) -> str:
    """The name of the network a file stands for (LANGUAGE.md, "Families")."""
    if network is not None:
        if network not in namespace.networks:
            raise unknown("network", network, namespace.networks, pos)
        return network
    own = namespace.own_networks
    if file_stem in own:
        return file_stem
    ready = [
        name for name in own if all(p.default is not None or p.name in params for p in _free_params(name, namespace))
    ]
    if len(ready) == 1:
        return ready[0]
    if not own:
        raise SpecError("this file defines no network", pos, "define one with: network NAME { ... }")
    listed = ", ".join(own)
    if not ready:
        raise SpecError(
            f"every network in this file needs arguments: {listed}",
            pos,
            "choose one and give its parameters, e.g. --network NAME --param n=3",
        )
    raise SpecError(
        f"this file defines several networks ({', '.join(ready)}) and none is named like the file",
        pos,
        "choose one with --network NAME (network= in the API)",
    )


def instantiate(namespace: Namespace, name: str, params: Mapping[str, Value], pos: Pos) -> Instance:
    """Follow aliases from `name` down to a network body and bind all its parameters."""
    given: dict[str, tuple[Value, Pos | None]] = {
        key: (_outside_value(key, value, pos), None) for key, value in params.items()
    }
    overrides: list[ast.Override] = []
    trace: list[Frame] = []
    seen: list[str] = []
    home = namespace
    current = name
    while True:
        if current in seen:
            chain = " -> ".join([*seen, current])
            raise SpecError(f"network aliases form a cycle: {chain}", home.networks[current][0].name_pos)
        seen.append(current)
        definition, home = home.networks[current]
        if len(seen) > MAX_ALIAS_DEPTH + 1:
            raise _alias_depth_error(namespace.networks[name][0])
        if isinstance(definition, ast.Network):
            bound = _bind(definition.params, given, definition, f"network '{definition.name}'")
            # Overrides written further out win: they were collected outermost first.
            return Instance(name, definition, home, bound, list(reversed(overrides)), tuple(trace), pos)
        if definition.base not in home.networks:
            raise unknown("network", definition.base, home.networks, definition.base_pos)
        base_params = _free_params(definition.base, home)
        free = [p.name for p in _free_params(current, home)]
        for key, (_, where) in given.items():
            if key not in free:
                bound_names = _alias_arg_names(definition, base_params)
                if key in bound_names:
                    raise SpecError(
                        f"parameter '{key}' is fixed by network '{definition.name}'",
                        where or definition.pos,
                        f"use '{definition.base}' to choose {key}",
                    )
                raise unknown("parameter", key, free, where or definition.name_pos, of=f"network '{definition.name}'")
        positional = iter(base_params)
        for arg in definition.args:
            value = evaluate(arg.value, CONSTANTS)
            if isinstance(arg, ast.Keyword):
                key = arg.name
            else:
                param = next(positional, None)
                if param is None:
                    raise SpecError(f"too many arguments for network '{definition.base}'", arg.pos)
                key = param.name
            if key in given and given[key][1] is not None:
                raise SpecError(f"parameter '{key}' is given twice", arg.pos)
            given[key] = (value, arg.pos)
        overrides.extend(reversed(definition.overrides))
        trace.append(Frame(f"network '{definition.name}'", definition.pos))
        current = definition.base


def _bind(
    params: tuple[ast.Param, ...],
    given: Mapping[str, tuple[Value, Pos | None]],
    owner: ast.Network | ast.Block,
    what: str,
) -> dict[str, Value]:
    names = [p.name for p in params]
    for key, (_, where) in given.items():
        if key not in names:
            raise unknown("parameter", key, names, where or owner.name_pos, of=what)
    env: dict[str, Value] = {}
    for param in params:
        if param.name in given:
            env[param.name] = given[param.name][0]
        elif param.default is not None:
            env[param.name] = evaluate(param.default, env)
        else:
            raise SpecError(
                f"{what} needs a value for parameter '{param.name}'",
                owner.name_pos,
                f"give it, e.g. {param.name}=... (--param {param.name}=... on the command line)",
            )
    return env


def _outside_value(key: str, value: object, pos: Pos) -> Value:
    """A parameter given from outside the spec (the API, --param), held to the spec's own rules."""
    sizes = isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not (isinstance(value, int | float) or sizes):
        raise SpecError(
            f"parameter '{key}' must be a number, true, false or sizes such as 3x3, got {type(value).__name__}", pos
        )
    try:
        return bounded(value, pos)  # type: ignore[arg-type]
    except SpecError as error:
        error.message = f"parameter '{key}': {error.message}"
        raise


def parse_param(text: str) -> tuple[str, Value]:
    """``NAME=VALUE`` from the command line; the value is a number, true or false, or sizes (3x32x32)."""
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    if raw in CONSTANTS:
        return name, CONSTANTS[raw]
    if sum(char.isdigit() for char in raw) > MAX_LITERAL_DIGITS:
        raise ValueError(f"the value of {name} has more digits than any 64-bit number")
    value: Value | None = None
    for convert in (int, float):
        try:
            value = convert(raw)
            break
        except ValueError:
            pass
    if value is None and "x" in raw and all(part.isdigit() for part in raw.split("x")):
        value = tuple(int(part) for part in raw.split("x"))
    if value is None:
        raise ValueError(f"the value of {name} must be a number, true or false, got {raw!r}")
    try:
        return name, bounded(value, None)
    except SpecError as error:
        raise ValueError(f"the value of {name}: {error.message}") from None


__all__ = [
    "Instance",
    "Namespace",
    "UnknownNameError",
    "choose",
    "describe",
    "instantiate",
    "load",
    "load_text",
    "parse_param",
]
