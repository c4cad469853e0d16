"""Fuzzing the front end: whatever the text, the result is a network or a SpecError.

(a) A mutation fuzzer takes the shipped specs and LANGUAGE.md's examples and breaks
them (tokens and lines deleted, inserted and swapped, numbers replaced by 0,
negatives and 10**30, stray bytes, unbalanced braces). Every case must end in a
compiled network or a SpecError: never CompilerBug, RecursionError, TypeError...,
and never a hang.

(b) A generator writes *valid* specs (blocks written in the spec itself, random
widths, strides, shortcut options, families and aliases) and checks the compiled
network against figures computed here from first principles.

Cases that once crashed the compiler live in tests/fixtures/fuzz_regressions/ and
are compiled on every run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resdsl
from resdsl.errors import SpecError
from resdsl.ir import Limits, Network

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
REGRESSIONS = ROOT / "tests" / "fixtures" / "fuzz_regressions"

#: Small enough that a mutated cifar1202 is refused quickly rather than compiled.
LIMITS = Limits(max_layers=3000)

#: Seconds one case may take before it counts as a hang.
HANG_SECONDS = 20

FUZZ = settings(
    max_examples=int(os.environ.get("RESDSL_FUZZ_EXAMPLES", "300")),
    deadline=None,
    # The same cases on every run keep CI stable; RESDSL_FUZZ_EXPLORE=1 draws new ones
    # (with RESDSL_FUZZ_EXAMPLES=10000, say) to hunt for crashes to add to the corpus.
    derandomize=os.environ.get("RESDSL_FUZZ_EXPLORE") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _corpus() -> list[str]:
    texts = [path.read_text(encoding="utf-8") for path in sorted(SPECS.rglob("*.res"))]
    language = (ROOT / "tests" / "fixtures" / "LANGUAGE.md").read_text(encoding="utf-8")
    texts += re.findall(r"```\n(.*?)```", language, flags=re.S)
    return texts


CORPUS = _corpus()


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Turn a case that runs too long into a failure instead of a stuck test run."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"compiling took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def in_directory(path: Path) -> Iterator[None]:
    # compile_text resolves `use` from the current directory; the shipped specs'
    # imports (lib/cifar.res, resnet34.res) must resolve as they do on disk.
    cwd = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def compile_or_spec_error(text: str, path: str = "fuzz.res", network: str | None = None) -> Network | SpecError:
    """Compile; return the network or the SpecError. Anything else propagates and fails the test."""
    with in_directory(SPECS), time_limit(HANG_SECONDS):
        try:
            return resdsl.compile_text(text, path=path, network=network, limits=LIMITS)
        except SpecError as error:
            str(error)  # rendering the diagnostic must not crash either
            return error


# (a) Mutations ---------------------------------------------------------------------

TOKEN = re.compile(r"\s+|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:x[0-9]+)*|//|\"[^\"\n]*\"|.", re.S)

VOCABULARY = [
    "network", "block", "stage", "stem", "head", "use", "with", "x", "shortcut", "input",
    "conv", "bn", "relu", "fc", "add", "maxpool", "avgpool", "dropout", "basic", "bottleneck",
    "stride", "groups", "padding", "dilation", "bias", "true", "false", "A", "B", "C", "none",
    "{", "}", "(", ")", ",", ":", "=", ";", "+", "-", "*", "//", "/", "\n", " ", "#",
    "0", "1", "-1", "3x3", "0x0", "3x0x0", "1x1x1x1", "10" * 15, "1e309", "0.5", ".", '"x.res"',
    '"lib/cifar.res"', '"resnet34.res"', '"../specs"', '"/dev/null.res"', "\x00", "\ufeff", "\u202e", "é", "🙂",
    "\r", "\t", "\\\n", "\x0c", "\udcff"[:0] + "\x7f",
]  # fmt: skip

NUMBERS = ["0", "-1", "-64", str(10**30), "1.5", "1e-9", "00", "2147483648", "0x0"]


@st.composite
def mutated_spec(draw: st.DrawFn) -> str:
    tokens = TOKEN.findall(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            tokens = [""]
        op = draw(st.sampled_from(["delete", "insert", "swap", "number", "lines", "stray", "brace", "repeat"]))
        i = draw(st.integers(0, len(tokens) - 1))
        j = draw(st.integers(0, len(tokens) - 1))
        if op == "delete":
            del tokens[i : i + draw(st.integers(1, 3))]
        elif op == "insert":
            tokens.insert(i, draw(st.sampled_from(VOCABULARY)))
        elif op == "swap":
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "number":
            numbers = [k for k, token in enumerate(tokens) if token[:1].isdigit()]
            if numbers:
                tokens[draw(st.sampled_from(numbers))] = draw(st.sampled_from(NUMBERS))
        elif op == "lines":
            lines = "".join(tokens).split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            action = draw(st.sampled_from(["delete", "duplicate", "swap"]))
            if action == "delete":
                del lines[a]
            elif action == "duplicate":
                lines.insert(a, lines[b])
            else:
                lines[a], lines[b] = lines[b], lines[a]
            tokens = TOKEN.findall("\n".join(lines))
        elif op == "stray":
            tokens.insert(i, draw(st.text(min_size=1, max_size=3)))
        elif op == "brace":
            tokens.insert(i, draw(st.sampled_from(["{", "}", "(", ")", "{{", "}}"])))
        else:
            tokens[i:i] = tokens[i : i + draw(st.integers(1, 8))] * draw(st.integers(2, 5))
    return "".join(tokens)


@pytest.mark.slow
@FUZZ
@given(mutated_spec())
def test_mutated_specs_compile_or_give_spec_errors(text: str) -> None:
    result = compile_or_spec_error(text)
    assert isinstance(result, (Network, SpecError))
    if isinstance(result, SpecError) and result.pos is not None:
        assert result.pos.line >= 1 and result.pos.column >= 1


NAMES = ["width", "stride", "n", "classes", "expansion", "groups", "shortcut", "basic", "bottleneck",
         "bottleneck_v1_5", "conv", "bn", "relu", "fc", "A", "B", "C", "none", "true", "false", "x",
         "input"]  # fmt: skip
WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:x[0-9]+)*")


@st.composite
def reworded_spec(draw: st.DrawFn) -> str:
    """Mostly still grammatical: numbers and names swapped, so that later passes see the damage."""
    parts = re.split(f"({WORDS.pattern})", draw(st.sampled_from(CORPUS)))
    words = [k for k in range(1, len(parts), 2) if parts[k] not in ("network", "block", "stage", "use", "stem", "head")]
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.sampled_from(words))
        if parts[k][0].isdigit():
            parts[k] = draw(st.sampled_from([*NUMBERS, "1", "2", "3", "7", "0x3", "3x0", "1x1", "5x5", "64x64"]))
        else:
            parts[k] = draw(st.sampled_from(NAMES))
    return "".join(parts)


@pytest.mark.slow
@FUZZ
@given(reworded_spec())
def test_reworded_specs_compile_or_give_spec_errors(text: str) -> None:
    assert isinstance(compile_or_spec_error(text), (Network, SpecError))


@pytest.mark.slow
@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_compiles_or_gives_spec_errors(text: str) -> None:
    assert isinstance(compile_or_spec_error(text), (Network, SpecError))


def test_corpus_is_not_empty() -> None:
    # The mutation fuzzer is only as good as its seeds: every shipped spec and the
    # language sketch's examples, which all compile unmutated.
    assert len(CORPUS) >= 20
    assert isinstance(compile_or_spec_error(CORPUS[0]), (Network, SpecError))


# Regression corpus ---------------------------------------------------------------


def _regressions() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.res"))


@pytest.mark.parametrize("path", _regressions(), ids=lambda path: path.name)
def test_fuzz_regression(path: Path) -> None:
    text = path.read_bytes().decode("utf-8", errors="replace")
    assert isinstance(compile_or_spec_error(text, path=path.name), (Network, SpecError))
    # Through the file reader too: the case may need its bytes, not a decoded string.
    with time_limit(HANG_SECONDS), contextlib.suppress(SpecError):
        resdsl.compile(path, limits=LIMITS)


def test_regression_corpus_exists() -> None:
    assert _regressions(), "tests/fixtures/fuzz_regressions/ holds the cases that once crashed"


# (b) Valid specs, checked from first principles ----------------------------------------


@dataclass
class Layer:
    text: str
    kind: str  # conv, bn, relu, add
    out: int = 0  # conv output channels, as a multiple of the block's width
    kernel: int = 3
    stride: bool = False  # carries the block's stride
    groups: int = 1


@dataclass
class Spec:
    text: str
    name: str
    params: int  # computed here, not by resdsl
    output: tuple[int, ...]
    features: tuple[int, int, int]  # the last stage's output, C x H x W


@st.composite
def block_layers(draw: st.DrawFn) -> list[Layer]:
    """A block: convs with bn/relu between, the stride on one of them, one `add shortcut`."""
    convs = draw(st.integers(1, 3))
    strided = draw(st.integers(0, convs - 1))
    layers: list[Layer] = []
    for index in range(convs):
        kernel = draw(st.sampled_from([1, 3, 5]))
        multiple = draw(st.sampled_from([1, 2])) if index == convs - 1 else 1
        groups = draw(st.sampled_from([1, 2])) if kernel == 3 and multiple == 1 else 1
        out = "width" if multiple == 1 else f"width * {multiple}"
        stride = ", stride=stride" if index == strided else ""
        group_text = f", groups={groups}" if groups > 1 else ""
        layers.append(Layer(f"conv {kernel}x{kernel}, {out}{stride}{group_text}", "conv", multiple, kernel,
                            index == strided, groups))  # fmt: skip
        layers.append(Layer("bn", "bn"))
        if index < convs - 1 or draw(st.booleans()):
            layers.append(Layer("relu", "relu"))
    layers.append(Layer("add shortcut", "add"))
    if draw(st.booleans()):
        layers.append(Layer("relu", "relu"))
    return layers


@st.composite
def valid_spec(draw: st.DrawFn) -> Spec:
    layers = draw(block_layers())
    shortcut = draw(st.sampled_from(["A", "B", "C", "none"]))
    side = draw(st.sampled_from([8, 12, 16, 32]))
    stem = draw(st.sampled_from([4, 8, 16]))
    classes = draw(st.integers(1, 20))
    stage_count = draw(st.integers(1, 3))
    # Widths never shrink a block's output below its input, so option A always applies.
    widths = [stem]
    for _ in range(stage_count):
        widths.append(widths[-1] * draw(st.sampled_from([1, 2])))
    widths = widths[1:]
    stages = [(draw(st.integers(1, 3)), width, draw(st.sampled_from([1, 2]))) for width in widths]

    params = 3 * 3 * 3 * stem + 2 * stem  # stem: conv 3x3, stem + bn
    channels, size = stem, side
    for repeat, width, stage_stride in stages:
        for index in range(repeat):
            stride = stage_stride if index == 0 else 1
            inputs, block_in, block_size = channels, channels, size
            for layer in layers:
                if layer.kind == "conv":
                    out = width * layer.out
                    params += layer.kernel * layer.kernel * (inputs // layer.groups) * out
                    inputs = out
                    if layer.stride:
                        size = (size - 1) // stride + 1
                elif layer.kind == "bn":
                    params += 2 * inputs
            changed = block_in != inputs or block_size != size
            if shortcut == "C" or (shortcut == "B" and changed):
                params += block_in * inputs + 2 * inputs  # 1x1 projection and its BN
            channels = inputs
    params += channels * classes + classes  # fc with bias

    body = "\n".join(f"    {layer.text}" for layer in layers)
    stage_text = "\n".join(
        f"    stage s{k}: {repeat} x custom({width}{', stride=2' if s == 2 else ''})"
        for k, (repeat, width, s) in enumerate(stages)
    )
    style = draw(st.sampled_from(["plain", "family", "alias"]))
    block = f"block custom(width, stride=1) {{\n{body}\n}}\n"
    head = "    head {\n        avgpool\n        fc classes\n    }\n"
    stem_text = f"    stem {{\n        conv 3x3, {stem}\n        bn\n        relu\n    }}\n"
    if style == "plain":
        text = (f"{block}network fuzzed(classes={classes}) {{\n    input 3x{side}x{side}\n    shortcut {shortcut}\n"
                f"{stem_text}{stage_text}\n{head}}}\n")  # fmt: skip
    else:
        # The family's own settings differ, so the alias's overrides must win.
        other = draw(st.sampled_from(["A", "B", "C", "none"]))
        text = (f"{block}network family(classes, wide=1) {{\n    input 3x9x9\n    shortcut {other}\n"
                f"{stem_text}{stage_text}\n{head}}}\n")  # fmt: skip
        if style == "family":
            text += f"network fuzzed = family(classes={classes}) with shortcut {shortcut}, input 3x{side}x{side}\n"
        else:
            text += f"network middle = family({classes}) with input 3x{side}x{side}\n"
            text += f"network fuzzed = middle with shortcut {shortcut}\n"
    return Spec(text, "fuzzed", params, (classes,), (channels, size, size))


@pytest.mark.slow
@FUZZ
@given(valid_spec())
def test_generated_specs_compile_with_the_expected_figures(spec: Spec) -> None:
    result = compile_or_spec_error(spec.text, network=spec.name)
    assert isinstance(result, Network), f"{result}\n\n{spec.text}"
    network = result
    assert network.name == spec.name
    assert tuple(network.output_shape) == spec.output
    # Each stride s maps a side H to (H - 1) // s + 1 under "same" padding.
    last_stage = [stage for stage in network.stages if stage.block is not None][-1]
    assert tuple(last_stage.output_shape) == spec.features
    assert network.num_params == spec.params, spec.text
    assert network.num_params == sum(node.params for node in network.nodes())
    assert network.num_params == sum(stage.params for stage in network.stages)
    assert network.macs == sum(node.macs for node in network.nodes())


@pytest.mark.slow
@FUZZ
@given(valid_spec())
def test_option_a_adds_no_parameters(spec: Spec) -> None:
    # Option A's shortcuts are parameter-free, so a residual network under A has
    # exactly the parameters of its plain twin, and option B at least as many.
    figures = {}
    for option in ("none", "A", "B", "C"):
        text = spec.text + f"network twin_{option} = {spec.name} with shortcut {option}\n"
        twin = compile_or_spec_error(text, network=f"twin_{option}")
        assert isinstance(twin, Network), f"{twin}\n\n{text}"
        figures[option] = twin
    assert figures["A"].num_params == figures["none"].num_params
    assert figures["none"].num_params <= figures["B"].num_params <= figures["C"].num_params
    assert figures["A"].output_shape == figures["none"].output_shape == figures["C"].output_shape
    # The plain twin has no joins left; the residual ones have one per block.
    assert list(figures["none"].nodes("add")) == []
    assert len(list(figures["A"].nodes("add"))) == sum(stage.blocks for stage in figures["A"].stages if stage.block)


# Audit: nothing from a spec reaches Python's code-running machinery --------------------

#: Modules whose import would let text become code or commands.
DANGEROUS_MODULES = {"importlib", "subprocess", "pickle", "marshal", "shelve", "ctypes", "code", "codeop", "runpy"}

#: (file, construct) pairs allowed, each for a reason:
#: - resdsl/backends/torch*.py may exec forward() code that it generates from the IR;
#:   every identifier in it comes from names that the naming pass validated (Python
#:   identifiers, not keywords), so spec text cannot inject code. (Other helpers own
#:   those files; the allowance covers them whether or not they exist yet.)
#: - resdsl/train/data.py reads CIFAR's published pickles through an Unpickler whose
#:   find_class admits only numpy's array reconstruction and bytes (tested:
#:   tests/test_train_data.py, a pickle that would call print is refused).
AUDIT_ALLOWED: set[tuple[str, str]] = {
    ("resdsl/train/data.py", "import pickle"),
    # Weights files: read_weights' restricted unpickler (moved here from backends/torch.py).
    ("resdsl/backends/loading.py", "import pickle"),
    # Whether an exporter's packages are installed: names from the exporter table, never a spec's.
    ("resdsl/backends/exports.py", "import importlib.util"),
}
#: resdsl/importer/ imports user code in the one explicit form `resdsl import package.module:callable`
#: (issue 26) and reads a traced module's attributes by name; nothing there reads a spec.
AUDIT_ALLOWED_FILES = ("resdsl/backends/torch", "resdsl/importer/")


def _audit(path: Path, tree: object) -> list[str]:
    import ast

    relative = path.relative_to(ROOT).as_posix()
    if relative.startswith(AUDIT_ALLOWED_FILES):
        return []
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        if (relative, what) not in AUDIT_ALLOWED:
            found.append(f"{relative}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in DANGEROUS_MODULES:
                    flag(node, f"import {name}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if isinstance(func, ast.Name) and name in ("eval", "exec", "__import__", "breakpoint"):
                flag(node, name)
            elif (
                isinstance(func, ast.Name)
                and name == "compile"
                and (len(node.args) >= 3 or any(k.arg == "mode" for k in node.keywords))
            ):
                flag(node, "compile")  # the builtin (code objects), not resdsl.compile
            elif isinstance(func, ast.Name) and name in ("getattr", "setattr", "delattr"):
                attribute = node.args[1] if len(node.args) > 1 else None
                if not isinstance(attribute, ast.Constant):
                    flag(node, f"{name} with a computed name")
            elif isinstance(func, ast.Attribute) and name in ("system", "popen", "exec_module", "import_module"):
                flag(node, name)
            elif (
                isinstance(func, ast.Attribute)
                and name in ("Popen", "run", "check_output", "call")
                and (isinstance(func.value, ast.Name) and func.value.id in ("subprocess", "os"))
            ):
                flag(node, f"{func.value.id}.{name}")
    return found


def test_no_spec_text_reaches_eval_exec_or_imports() -> None:
    import ast

    sources = sorted((ROOT / "resdsl").rglob("*.py"))
    assert len(sources) > 10
    problems = [problem for path in sources for problem in _audit(path, ast.parse(path.read_text(encoding="utf-8")))]
    assert problems == [], "code-running constructs outside the allow-list:\n" + "\n".join(problems)


def test_audit_catches_what_it_looks_for() -> None:
    # The audit itself must be able to fail: feed it each forbidden construct.
    import ast

    fake = ROOT / "resdsl" / "fake.py"
    for code in ("eval(text)", "exec(text)", "__import__(name)", "import importlib", "getattr(obj, name)",
                 "os.system(cmd)", "compile(text, 'f', 'exec')", "from subprocess import run"):  # fmt: skip
        assert _audit(fake, ast.parse(code)), code
    assert _audit(fake, ast.parse("getattr(error, 'line', 1)\nresdsl.compile(path)")) == []
