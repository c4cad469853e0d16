"""What the language server knows about one document, computed without any LSP types.

:func:`analyze` compiles a document's text (every network of it that needs no
arguments) and keeps what the editor asks about afterwards: the diagnostics, the
blocks and networks in scope with their definition sites, and the IR nodes by
source line. Positions here are the compiler's, 1-based; the server converts them.

Results are cached by (path, text): hovering, completing and re-publishing
diagnostics for an unchanged document costs a dictionary look-up.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from resdsl import syntax as ast
from resdsl import tokens, vocabulary
from resdsl.errors import CompilerBug, Pos, Source, SpecError
from resdsl.ir import BlockInstance, Network, Node
from resdsl.layers import Output, shape_text

PRELUDE = "<prelude>"

#: Analyses kept: a few open documents, each at its latest text.
CACHE_SIZE = 32


def prelude_path() -> Path:
    import resdsl.frontend

    return Path(resdsl.frontend.__file__).resolve().parent / "prelude.res"


@dataclass(frozen=True)
class Site:
    """A place in a file: absolute path, 1-based line and columns (end exclusive)."""

    path: Path
    line: int
    column: int
    end_line: int
    end_column: int


@dataclass(frozen=True)
class Definition:
    """A block or network in scope: its signature and where it is written."""

    name: str
    kind: str  # "block" or "network"
    signature: str
    params: tuple[str, ...]
    site: Site


@dataclass
class Analysis:
    path: Path
    text: str
    errors: list[SpecError] = field(default_factory=list)
    networks: list[Network] = field(default_factory=list)
    definitions: dict[str, Definition] = field(default_factory=dict)
    module: ast.Module | None = None
    # (absolute path, line) -> [(network name, node attributes)], nodes in execution order.
    nodes_by_line: dict[tuple[Path, int], list[tuple[str, Node]]] = field(default_factory=dict)
    # (absolute path, line) of a stage statement -> [(network, stage name)]
    stages_by_line: dict[tuple[Path, int], list[tuple[Network, str]]] = field(default_factory=dict)
    # (absolute path, line) of a block used inside a block -> [(network, its instances' paths and figures)]
    blocks_by_line: dict[tuple[Path, int], list[tuple[Network, BlockInstance]]] = field(default_factory=dict)
    # (absolute path, line) of a `tap shortcut` -> [(network, the block instance that taps)]
    taps_by_line: dict[tuple[Path, int], list[tuple[Network, BlockInstance]]] = field(default_factory=dict)
    # (absolute path, line) of a network's setting -> [(network, setting)]
    settings_by_line: dict[tuple[Path, int], list[tuple[Network, str]]] = field(default_factory=dict)
    _resolved: dict[str, Path] = field(default_factory=dict, repr=False)

    def site(self, pos: Pos) -> Site:
        return Site(self.resolve(pos.path), pos.line, pos.column, pos.end_line, pos.end_column)

    def resolve(self, shown: str | None) -> Path:
        """The absolute path of a file as a diagnostic names it."""
        if shown is None:
            return self.path
        # Every IR node asks: a few files, thousands of nodes.
        if shown not in self._resolved:
            self._resolved[shown] = self._resolve(shown)
        return self._resolved[shown]

    def _resolve(self, shown: str) -> Path:
        if shown == PRELUDE:
            return prelude_path()
        candidate = Path(shown)
        if not candidate.is_absolute():
            # The compiler names files relative to the directory it ran in: the document's.
            candidate = self.path.parent / candidate
        return Path(os.path.normpath(candidate))


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """compile_text resolves ``use`` paths from the current directory: make it the document's."""
    previous = Path.cwd()
    try:
        os.chdir(path)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        os.chdir(previous)


_cache: OrderedDict[tuple[str, str], Analysis] = OrderedDict()


# The latest analysis of each path, by its text less comments.
_by_code: dict[str, tuple[str, Analysis]] = {}

_COMMENT_OR_STRING = re.compile(r'("[^"\n]*")|[ \t]*#[^\n]*|[ \t]+$', re.MULTILINE)


def _without_comments(text: str) -> str:
    return _COMMENT_OR_STRING.sub(lambda match: match.group(1) or "", text)


def clear_cache() -> None:
    """Forget every analysis (a file on disk changed: what `use`s it must be compiled again)."""
    _cache.clear()
    _by_code.clear()


def analyze(text: str, path: str | Path) -> Analysis:
    """Compile `text` as the file at `path`; cached by (path, text)."""
    key = (str(path), text)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    code = _without_comments(text)
    previous = _by_code.get(str(path))
    if previous is not None and previous[0] == code:
        # Only comments changed, every token where it was: the compiled result stands.
        result = replace(previous[1], text=text)
    else:
        try:
            result = _analyze(text, Path(os.path.abspath(path)))
        except Exception as error:  # a compiler bug: shown as a diagnostic, and the server goes on
            result = Analysis(Path(os.path.abspath(path)), text)
            result.errors.append(_internal_error(error, Pos(Source(str(path), text), 1, 1, 1, 2)))
    _by_code[str(path)] = (code, result)
    _cache[key] = result
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return result


def _analyze(text: str, path: Path) -> Analysis:
    from resdsl.compiler import compile_text
    from resdsl.frontend import load_text
    from resdsl.parser import parse

    result = Analysis(path, text)
    shown = str(path)
    with _working_directory(path.parent):
        try:
            result.module = parse(text, shown)
            namespace = load_text(text, shown)
        except SpecError as error:
            result.errors.extend(error.errors)
            # Completion and hover on names still need the blocks in scope while the
            # user is typing: read them from the text without the offending line.
            _define_despite(result, text, shown, error)
            return result
        for name, (definition, _) in namespace.blocks.items():
            result.definitions[name] = _definition(result, "block", definition)
        for name, (definition, _) in namespace.networks.items():
            result.definitions[name] = _definition(result, "network", definition)
        seen: set[tuple] = set()
        for name in namespace.own_networks:
            definition, _ = namespace.networks[name]
            if isinstance(definition, ast.Network) and any(param.default is None for param in definition.params):
                continue  # a family: it compiles only where an instance gives its arguments
            try:
                network = compile_text(text, path=shown, network=name)
            except CompilerBug as error:
                # Shown where the network is named: the other networks and the blocks still serve hover.
                result.errors.append(_internal_error(error, definition.name_pos))
                continue
            except SpecError as error:
                if isinstance(definition, ast.NetworkAlias) and "needs a value for parameter" in error.message:
                    continue  # an alias that leaves a parameter free is a family too
                for each in error.errors:
                    key = (each.path, each.line, each.column, each.message)
                    if key not in seen:
                        seen.add(key)
                        result.errors.append(each)
                continue
            result.networks.append(network)
            for warning in network.warnings:  # published with severity 2 (SpecWarning)
                key = (warning.path, warning.line, warning.column, warning.message)
                if key not in seen:
                    seen.add(key)
                    result.errors.append(warning)
    for network in result.networks:
        _index(result, network)
    return result


def _internal_error(error: BaseException, pos: Pos) -> SpecError:
    """A compiler bug as a diagnostic (the command line exits 3 on it): the editor shows it and goes on."""
    what = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    return SpecError(
        f"resdsl failed inside the compiler here: {what}",
        pos,
        "this is a bug in resdsl, not in your spec: please report it",
    )


def _lines(text: str) -> list[str]:
    """Lines as the compiler counts them: at LF only (a lone CR inside a comment is comment text)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _define_despite(result: Analysis, text: str, shown: str, error: SpecError) -> None:
    from resdsl.frontend import load_text

    lines = _lines(text)
    attempts = []
    if error.path == shown and error.line is not None and 1 <= error.line <= len(lines):
        attempts.append("\n".join(line if number != error.line else "" for number, line in enumerate(lines, 1)))
    attempts.append("")  # the prelude alone
    for attempt in attempts:
        try:
            namespace = load_text(attempt, shown)
        except SpecError:
            continue
        for kind, table in (("block", namespace.blocks), ("network", namespace.networks)):
            for name, (definition, _) in table.items():
                result.definitions[name] = _definition(result, kind, definition)
        return


def _definition(result: Analysis, kind: str, definition: Any) -> Definition:
    source = definition.pos.source
    header = source.line(definition.pos.line).split("{", 1)[0].split("#", 1)[0].strip()
    params = tuple(param.name for param in getattr(definition, "params", ()))
    return Definition(definition.name, kind, header, params, result.site(definition.name_pos))


def _index(result: Analysis, network: Network) -> None:
    stage_lines: set[tuple[Path, int, str]] = set()
    for node in network.nodes():
        pos = node.pos
        if pos is None or isinstance(node.layer, Output):
            continue  # the output node stands for no statement of its own
        key = (result.resolve(pos.path), pos.line)
        result.nodes_by_line.setdefault(key, []).append((network.name, node))
        scope = node.scope
        for frame in node.trace:
            if frame.what.startswith("stage ") and scope is not None and scope.stage is not None:
                stage_lines.add((result.resolve(frame.pos.path), frame.pos.line, scope.stage))
    for stage_path, line, name in stage_lines:
        result.stages_by_line.setdefault((stage_path, line), []).append((network, name))
    for block in network.blocks:
        if block.parent is not None:  # a block used inside a block: its statement's line
            key = (result.resolve(block.pos.path), block.pos.line)
            result.blocks_by_line.setdefault(key, []).append((network, block))
        if block.tap is not None and block.tap_pos is not None:
            key = (result.resolve(block.tap_pos.path), block.tap_pos.line)
            result.taps_by_line.setdefault(key, []).append((network, block))
    definitions = result.module.definitions if result.module is not None else ()
    for definition in definitions:
        if isinstance(definition, ast.Network) and definition.name == network.name:
            for item in definition.body:
                if isinstance(item, ast.Statement) and item.kind in vocabulary.settings():
                    key = (result.resolve(item.pos.path), item.pos.line)
                    result.settings_by_line.setdefault(key, []).append((network, item.kind))


# Words under the cursor -------------------------------------------------------------

_WORD = re.compile(tokens.NAME)


def word_at(text: str, line: int, column: int) -> tuple[str, int, int] | None:
    """The name under 1-based (line, column): the word and its 1-based column span."""
    lines = _lines(text)
    if not 1 <= line <= len(lines):
        return None
    code = lines[line - 1]
    for match in _WORD.finditer(code):
        if match.start() + 1 <= column <= match.end() + 1:
            if "#" in code[: match.start()]:
                return None
            return match.group(), match.start() + 1, match.end() + 1
    return None


def use_path_at(text: str, line: int, column: int) -> str | None:
    """The path of a ``use "..."`` line when the cursor is on it."""
    lines = _lines(text)
    if not 1 <= line <= len(lines):
        return None
    match = re.match(r'\s*use\s+"([^"\n]*)"', lines[line - 1])
    return match.group(1) if match else None


# Hover ----------------------------------------------------------------------------------


def _shape(shape: tuple[int, ...]) -> str:
    # A token sequence says so: "197 x 192 tokens" (resdsl.layers.shape_text).
    return shape_text(shape) if shape else "-"


def hover(analysis: Analysis, line: int, column: int) -> str | None:
    """Markdown for the hover at 1-based (line, column), or None."""
    word = word_at(analysis.text, line, column)
    name = word[0] if word else None
    key = (analysis.path, line)
    if name in analysis.definitions and not _is_label(analysis.text, line, word):
        return _definition_hover(analysis.definitions[name])
    if key in analysis.stages_by_line:
        return _stage_hover(analysis.stages_by_line[key])
    if key in analysis.settings_by_line:
        return _setting_hover(analysis.settings_by_line[key])
    if key in analysis.taps_by_line:
        return _tap_hover(analysis.taps_by_line[key])
    if key in analysis.blocks_by_line:
        return _nested_block_hover(analysis.blocks_by_line[key])
    if key in analysis.nodes_by_line:
        entries = analysis.nodes_by_line[key]
        # A statement's own nodes, not those the compiler added for it (the flatten
        # before the first fc) nor a joined branch's.
        written = _statement_kind(analysis.text, line)
        own = [entry for entry in entries if entry[1].written == written]
        return _layer_hover(own or entries, len(analysis.networks) > 1)
    if name in vocabulary.layer_kinds():
        return f"```resdsl\n{vocabulary.layer_usage(name)}\n```\nlayer kind"
    if name in vocabulary.settings():
        values = vocabulary.SETTING_VALUES.get(name)
        suffix = f": {', '.join(values)}" if values else ""
        return f"network setting `{name}`{suffix}"
    return None


def _statement_kind(text: str, line: int) -> str | None:
    """The kind a statement line writes: its first word after an optional label."""
    # A label may start with a number (`0: conv`), an interpolation (`{k}.0`) or `..`.
    match = re.match(r"\s*(?:[\w.{}]+\s*:(?!=)\s*)?([A-Za-z_]\w*)", text.splitlines()[line - 1])
    return match.group(1) if match else None


def _setting_hover(entries: list[tuple[Network, str]]) -> str:
    lines = []
    for network, setting in entries:
        if setting == "input":
            value = _shape(network.input_shape)
        else:
            value = vars(network.settings).get(setting)
            value = value if isinstance(value, str) else str(value).lower() if value is not None else "-"
        lines.append(f"**{setting}** {value} (network {network.name})")
    values = vocabulary.SETTING_VALUES.get(entries[0][1])
    if values and entries[0][1] != "input":
        lines.append(f"values: {', '.join(values)}")
    return "\n\n".join(lines)


def _block_figures(network: Network, block: BlockInstance) -> tuple[tuple[int, ...], int, int]:
    graph = network.graph
    members = [network.node(node) for node in block.nodes if node in graph]
    params = sum(node.params for node in members)
    macs = sum(node.macs for node in members)
    return tuple(network.node(block.exit).shape) if block.exit in graph else (), params, macs


def _nested_block_hover(entries: list[tuple[Network, BlockInstance]]) -> str:
    several = len({network.name for network, _ in entries}) > 1
    rows = [
        f"**{entries[0][1].type}**: {len(entries)} instance{'s' if len(entries) > 1 else ''}",
        "",
        "| module | output | params | MACs |",
        "| --- | --- | ---: | ---: |",
    ]
    for network, block in entries[:HOVER_ROWS]:
        shape, params, macs = _block_figures(network, block)
        module = f"{network.name}: {block.path}" if several else block.path
        rows.append(f"| `{module}` | {_shape(shape)} | {params:,} | {macs:,} |")
    if len(entries) > HOVER_ROWS:
        rows.append(f"| ... and {len(entries) - HOVER_ROWS} more | | | |")
    return "\n".join(rows)


def _tap_hover(entries: list[tuple[Network, BlockInstance]]) -> str:
    network, block = entries[0]
    shape = tuple(network.node(block.tap).shape) if block.tap is not None and block.tap in network.graph else ()
    kinds = sorted({other.plan.kind for _, other in entries if other.plan is not None})
    return (
        f"**tap shortcut** in `{block.type}`: the shortcut reads {_shape(shape)} here "
        f"({len(entries)} instance{'s' if len(entries) > 1 else ''}; {', '.join(kinds) or 'no'} shortcut)"
    )


def _is_label(text: str, line: int, word: tuple[str, int, int] | None) -> bool:
    """Whether the word is a statement's label (`se: se(...)`): a label is not the block."""
    if word is None:
        return False
    rest = _lines(text)[line - 1][word[2] - 1 :]
    return rest.lstrip().startswith(":") and not rest.lstrip().startswith(":=")


def _definition_hover(definition: Definition) -> str:
    where = f"{definition.site.path.name}:{definition.site.line}"
    if definition.site.path == prelude_path():
        where = f"the prelude ({where})"
    return f"```resdsl\n{definition.signature}\n```\n{definition.kind} defined in {where}"


def _stage_hover(entries: list[tuple[Network, str]]) -> str:
    rows = ["| network | stage | blocks | output | params | MACs |", "| --- | --- | --- | --- | ---: | ---: |"]
    for network, name in entries:
        for stage in network.stages:
            if stage.name == name:
                blocks = f"{stage.blocks} x {stage.block}" if stage.block else str(stage.blocks)
                rows.append(
                    f"| {network.name} | {stage.name} | {blocks} | {_shape(stage.output_shape)} "
                    f"| {stage.params:,} | {stage.macs:,} |"
                )
    return "\n".join(rows)


#: Instances listed one by one in a hover before the rest are summed up.
HOVER_ROWS = 8


def _layer_hover(entries: list[tuple[str, Node]], several_networks: bool) -> str:
    first = entries[0][1]
    kind = first.kind
    if len(entries) == 1:
        network, node = entries[0]
        owner = f" (network {network})" if several_networks else ""
        return (
            f"**{kind}** `{node.name}`{owner}\n\n"
            f"output {_shape(node.shape)} · {node.params:,} params · {node.macs:,} MACs"
        )
    total_params = sum(node.params for _, node in entries)
    total_macs = sum(node.macs for _, node in entries)
    lines = [
        f"**{kind}**: {len(entries)} instances · {total_params:,} params · {total_macs:,} MACs in all",
        "",
        "| module | output | params | MACs |",
        "| --- | --- | ---: | ---: |",
    ]
    for network, node in entries[:HOVER_ROWS]:
        module = f"{network}: {node.name}" if several_networks else node.name
        lines.append(f"| `{module}` | {_shape(node.shape)} | {node.params:,} | {node.macs:,} |")
    if len(entries) > HOVER_ROWS:
        lines.append(f"| ... and {len(entries) - HOVER_ROWS} more | | | |")
    return "\n".join(lines)


# Definition -----------------------------------------------------------------------------


def definition(analysis: Analysis, line: int, column: int) -> Site | None:
    """Where the name (or ``use`` path) under 1-based (line, column) is defined."""
    used = use_path_at(analysis.text, line, column)
    if used is not None:
        from resdsl.shipped import USE_PREFIX, specs_dir

        if used.startswith(USE_PREFIX):
            target = specs_dir() / (used.removeprefix(USE_PREFIX).removesuffix(".res") + ".res")
        else:
            target = Path(os.path.normpath(analysis.path.parent / used))
        try:
            return Site(target, 1, 1, 1, 1) if target.is_file() else None
        except (OSError, ValueError):  # a name too long for the OS, a NUL
            return None
    word = word_at(analysis.text, line, column)
    if word is None or _is_label(analysis.text, line, word):
        return None
    bound = _value_binding(analysis, word[0], line)
    if bound is not None:
        return bound
    found = analysis.definitions.get(word[0])
    return found.site if found else None


def _value_binding(analysis: Analysis, name: str, line: int) -> Site | None:
    """Where the block (or network) around `line` binds `name` with ``let`` or as a loop variable."""
    if analysis.module is None:
        return None
    around = None
    for each in analysis.module.definitions:
        if isinstance(each, ast.Block | ast.Network) and each.pos.line <= line:
            around = each  # definitions come in the file's order: the last to start before the line holds it
    if around is None:
        return None
    stack = list(reversed(around.body))
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Let | ast.For) and item.name == name:
            return analysis.site(item.name_pos)
        if isinstance(item, ast.If):
            stack += [*reversed(item.otherwise), *reversed(item.then)]
        elif isinstance(item, ast.For | ast.Branch | ast.Section):
            stack += list(reversed(item.body))
    return None


# Completion -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # "keyword", "layer", "block", "network", "setting", "value", "parameter", "file", "function"
    detail: str = ""
    insert: str | None = None


_KEYWORD_ARGUMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(([^()]*)$")


def complete(analysis: Analysis, line: int, column: int) -> list[Completion]:
    """What may be written at 1-based (line, column)."""
    lines = _lines(analysis.text)
    current = lines[line - 1] if 1 <= line <= len(lines) else ""
    prefix = current[: column - 1]
    statement = re.split(r";", prefix)[-1]
    context = _enclosing(analysis.text, line, column)
    blocks = [d for d in analysis.definitions.values() if d.kind == "block"]
    networks = [d for d in analysis.definitions.values() if d.kind == "network"]

    if re.match(r'\s*use\s+"[^"]*$', statement):
        return _files(analysis.path.parent)
    if match := _KEYWORD_ARGUMENT.search(statement):
        callee = analysis.definitions.get(match.group(1))
        if callee is not None:
            return [Completion(f"{param}=", "parameter", callee.signature) for param in callee.params]
    if re.match(r"\s*stage\s+[A-Za-z0-9_.]+\s*:\s*(?:.*\bx\s+)?[A-Za-z_0-9]*$", statement):
        return [Completion(d.name, "block", d.signature) for d in blocks]
    if re.match(r"\s*network\s+[A-Za-z_][A-Za-z0-9_]*\s*=\s*[A-Za-z_0-9]*$", statement):
        return [Completion(d.name, "network", d.signature) for d in networks]
    if re.search(r"\bwith\s+(?:.*,\s*)?[A-Za-z_0-9]*$", statement):
        return [Completion(name, "setting") for name in vocabulary.settings()]
    if match := re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s+[A-Za-z_0-9]*$", statement):
        values = vocabulary.SETTING_VALUES.get(match.group(1))
        if values and context == "network":
            return [Completion(value, "value", f"{match.group(1)} {value}") for value in values]
    layer = re.match(r"\s*(?:[A-Za-z_][A-Za-z0-9_.]*\s*:\s*)?([A-Za-z_][A-Za-z0-9_]*)\s+(.*)$", statement)
    if re.match(r"\s*(?:[A-Za-z_][A-Za-z0-9_.]*\s*:\s*)?[A-Za-z_0-9]*$", statement):
        return _statement_starts(context, blocks)
    items: list[Completion] = []
    if layer and "," in layer.group(2) and re.search(r",\s*[A-Za-z_0-9]*$", statement):
        items += [
            Completion(f"{name}=", "parameter", vocabulary.layer_usage(layer.group(1)))
            for name in vocabulary.layer_keywords(layer.group(1))
        ]
    items += [Completion(name, "parameter") for name in _parameters_in_scope(analysis.text, line)]
    items += [Completion(name, "function", insert=f"{name}(") for name in vocabulary.FUNCTIONS]
    items += [Completion(name, "value") for name in vocabulary.CONSTANTS]
    return items


def _statement_starts(context: str, blocks: list[Definition]) -> list[Completion]:
    if context == "top":
        return [Completion(word, "keyword") for word in ("use", "block", "network")]
    layers = [Completion(kind, "layer", vocabulary.layer_usage(kind)) for kind in vocabulary.layer_kinds()]
    if context == "network":
        return [
            *(Completion(name, "setting") for name in vocabulary.settings()),
            *(Completion(word, "keyword") for word in ("stage", "stem", "head")),
            *layers,
        ]
    return [
        *layers,
        *(Completion(f"{word} shortcut", "keyword") for word in vocabulary.SHORTCUT_STATEMENTS),
        *(Completion(f"{word} {{", "keyword", insert=f"{word} {{") for word in vocabulary.joins()),
        Completion("if", "keyword"),
        *(Completion(word, "keyword") for word in ("for", *vocabulary.VALUE_KEYWORDS)),
        *(Completion(word, "keyword") for word in vocabulary.VALUE_STATEMENTS),
        *(Completion(d.name, "block", d.signature) for d in blocks),
    ]


def _enclosing(text: str, line: int, column: int) -> str:
    """What the cursor stands in: "top", "network" (a network body) or "block" (layers)."""
    lines = _lines(text)
    before = "\n".join([*lines[: line - 1], (lines[line - 1] if line <= len(lines) else "")[: column - 1]])
    stack: list[str] = []
    for code in before.split("\n"):
        code = re.sub(r'"[^"\n]*"', '""', code).split("#", 1)[0]
        statement_start = 0
        for index, char in enumerate(code):
            if char == ";":
                statement_start = index + 1
            elif char == "{":
                words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", code[statement_start:index])
                stack.append(words[0] if words else "")
                statement_start = index + 1
            elif char == "}" and stack:
                stack.pop()
                statement_start = index + 1
    if not stack:
        return "top"
    if "block" in stack or stack[-1] in ("stem", "head") or stack[-1] in vocabulary.joins():
        return "block"
    if stack[-1] in ("if", "else") and stack[0] == "block":
        return "block"
    return "network"


def _parameters_in_scope(text: str, line: int) -> list[str]:
    """The parameters of the block or network whose header is the nearest above `line`."""
    for code in reversed(_lines(text)[:line]):
        match = re.match(r"\s*(?:block|network)\s+[A-Za-z_][A-Za-z0-9_]*\s*\(([^)]*)\)", code)
        if match:
            return [part.split("=")[0].strip() for part in match.group(1).split(",") if part.strip()]
        if re.match(r"\s*(?:block|network)\b", code):
            return []
    return []


#: At most this many entries of the document's folder are looked at for ``use "`` completion.
MAX_FOLDER_ENTRIES = 2000
#: At most this many file names are offered.
MAX_FILE_COMPLETIONS = 200


def _files(folder: Path) -> list[Completion]:
    """The shipped specs (``resdsl:NAME``) and the .res files of the document's own folder, not below it.

    Bounded: a document in a folder of a million entries (or in /) must not keep the
    server from answering while it walks them.
    """
    from resdsl.shipped import USE_PREFIX, shipped_specs

    found = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_FOLDER_ENTRIES:
                break
            if entry.name.endswith(".res") and entry.is_file():
                found.append(entry.name)
    items = [Completion(name, "file") for name in sorted(found)[:MAX_FILE_COMPLETIONS]]
    items += [Completion(f"{USE_PREFIX}{name}", "file") for name in shipped_specs()]
    return items[:MAX_FILE_COMPLETIONS]
