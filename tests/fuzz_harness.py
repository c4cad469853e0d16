"""The hostile-input fuzzing harness: budgets, the pipeline every case goes through, generators.

Used by tests/test_fuzz_hostile.py (hypothesis, bounded for CI) and by
tests/fuzz_atheris.py (coverage-guided, longer runs). Three parts:

* :func:`run_bounded` runs one case in a forked child under the bounds a user is
  promised (docs/language.md, "Limits"), counted rather than timed: the tokens one
  parse reads, the IR nodes one step makes and the expressions it evaluates, each
  checked against a documented bound (see :class:`Work`), and MEMORY_BYTES of new
  memory (an address-space limit over what the child inherits). A case over a counted
  bound fails as "overwork". Time is never a verdict: on a shared machine it measures
  the neighbours. A CPU limit and a wall-clock limit far above any honest case only
  catch hangs (a loop that never ends, a FIFO read that never returns).
* :func:`pipeline` is what each case goes through: the compile; for a compiled network
  the ``check`` line, ``to_dot`` at every detail, a build and a forward pass on the
  meta device, the ``.py`` export (parsed and compiled with :func:`builtins.compile`,
  never run), and for small networks ``for_inference`` against ``eval``.
* Generators that work from docs/language.md (its examples, its tables of layer kinds,
  settings and keywords, its grammar forms) and from hostile bytes, numbers at and past
  type limits, special files and inputs at the size bounds: not from what the compiler
  happens to accept.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import math
import os
import pickle
import random
import re
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = ROOT / "docs" / "language.md"
REGRESSIONS = ROOT / "tests" / "fixtures" / "fuzz_regressions"

MEMORY_BYTES = 500 * 1024 * 1024
#: Hang catchers, not budgets: an honest case at the size bounds uses a few seconds of CPU,
#: so only a case that never ends reaches them, however busy the machine is.
HANG_CPU_SECONDS = 60
#: Wall-clock seconds before a case counts as blocked (a read that never returns); well
#: above HANG_CPU_SECONDS, so that a case that spins is reported by the CPU limit.
WALL_SECONDS = 300.0

#: Networks at most this large also run for real: for_inference against eval.
SMALL_PARAMS = 200_000
SMALL_NODES = 200

#: Networks up to this many IR nodes are also built and exported. Torch's own module
#: construction costs about half a millisecond a module, so building is bounded by the
#: node count; larger networks are compiled, checked and drawn only.
TORCH_NODES = 2_000
SMALL_ACTIVATIONS = 4_000_000  # bytes


# Outcomes ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one case did: ``ok`` (a network or a documented error), or how it failed."""

    status: str  # "ok", "crash", "overwork", "memory", "hung", "blocked"
    detail: str = ""
    cpu_seconds: float = 0.0  # reported, never judged
    result: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _virtual_size() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0  # pragma: no cover - Linux always reports it


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# Counted bounds ---------------------------------------------------------------------------


def Limits() -> Any:
    """resdsl.ir.Limits' defaults, imported late (the harness loads before resdsl does)."""
    from resdsl.ir import Limits as Defaults

    return Defaults()


#: IR nodes one step may create (Graph.create), erased ones included. The layer bound
#: (20,000) is checked before expansion; the passes add joins, projections and the input,
#: and may replace nodes, so a generous multiple of it is still a counted, linear bound.
NODES_PER_LAYER_BOUND = 3
#: Expressions one step may evaluate, per token of the spec and per node made or loop
#: iteration run: a statement evaluates its own expressions once each time it runs, and
#: it runs once per node it makes (or once per iteration of a loop that makes none).
#: Whatever evaluates more re-evaluates the spec for nothing.
EVALUATIONS_PER_TOKEN_AND_NODE = 4
LOOP_ITERATIONS = 1_024  # of one `for` loop (docs/language.md, "Limits")
#: Bytes of a drawing per node drawn: a node's line and its edges' lines, shapes and
#: labels included, are a few hundred bytes.
DRAWING_BYTES_PER_NODE = 2_000


class Overwork(Exception):
    """One step did more work than its counted bound allows."""


@dataclass
class Work:
    """What the current step has done, counted where the code does it (a child of run_bounded only)."""

    tokens: int = 0  # tokens the largest single pre-scan read
    nodes: int = 0  # IR nodes created
    evaluations: int = 0  # expressions evaluated (resdsl.evaluate)
    step: str = ""

    def check(self) -> None:
        limits = Limits()
        if self.tokens > limits.max_tokens + 1:
            raise Overwork(
                f"{self.step}: one parse read {self.tokens:,} tokens, past the bound of {limits.max_tokens:,}"
            )
        node_bound = NODES_PER_LAYER_BOUND * limits.max_layers
        if self.nodes > node_bound:
            raise Overwork(f"{self.step}: made {self.nodes:,} IR nodes, more than {node_bound:,}")
        runs = self.nodes + LOOP_ITERATIONS
        evaluation_bound = EVALUATIONS_PER_TOKEN_AND_NODE * (limits.max_tokens + 1) * runs
        if self.evaluations > evaluation_bound:
            raise Overwork(f"{self.step}: evaluated {self.evaluations:,} expressions, more than {evaluation_bound:,}")


#: The counts of the step running now; None outside a child of run_bounded (counting is off).
_work: Work | None = None


def _install_counters() -> None:
    """Count tokens, nodes and evaluations where resdsl does them (in the forked child only).

    The counters raise Overwork as soon as a count passes its bound, so that a runaway
    step stops at the bound instead of running until the hang catcher.
    """
    from resdsl import evaluate, ir, parser

    pattern = parser._PRESCAN
    token_bound = Limits().max_tokens + 1
    node_bound = NODES_PER_LAYER_BOUND * Limits().max_layers

    class CountingPattern:
        def finditer(self, text: str) -> Iterator[re.Match[str]]:
            for read, match in enumerate(pattern.finditer(text), 1):
                if _work is not None:
                    _work.tokens = max(_work.tokens, read)
                    if read > token_bound:
                        _work.check()
                yield match

        def __getattr__(self, name: str) -> Any:
            return getattr(pattern, name)

    parser._PRESCAN = CountingPattern()  # type: ignore[assignment]
    create = ir.Graph.create

    def counting_create(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _work is not None:
            _work.nodes += 1
            if _work.nodes > node_bound:
                _work.check()
        return create(self, *args, **kwargs)

    ir.Graph.create = counting_create  # type: ignore[method-assign]
    inner = evaluate._evaluate

    def counting_evaluate(expr: Any, env: Any) -> Any:
        if _work is not None:
            _work.evaluations += 1
            if _work.evaluations % 100_000 == 0:
                _work.check()
        return inner(expr, env)

    evaluate._evaluate = counting_evaluate  # type: ignore[assignment]


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """One user-visible action (a compile, a drawing, an export), its work counted and bounded."""
    global _work
    outer, _work = _work, Work(step=name)
    try:
        yield
        if _work is not None:
            _work.check()
    finally:
        _work = outer


def run_bounded(
    function: Callable[..., Any], *args: Any, wall_seconds: float = WALL_SECONDS, cpu_seconds: int = HANG_CPU_SECONDS
) -> Outcome:
    """Run ``function(*args)`` in a forked child under the counted bounds and the memory bound.

    The child's address space may grow by MEMORY_BYTES over what it inherits (a
    MemoryError beyond); each ``step`` of the function is counted (see :class:`Work`),
    a function without steps as one step. ``cpu_seconds`` of CPU and ``wall_seconds``
    of wall time only catch hangs ("hung", "blocked"). Whatever ``function`` raises is
    a crash: it must return, having caught the errors it expects.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(reader)
        status = 0
        try:
            limit = _virtual_size() + MEMORY_BYTES
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(1)  # no thread pools forked half-made
            try:
                _install_counters()
                with step(getattr(function, "__name__", "the case")) if not _stepped(function) else _nothing():
                    result = function(*args)
                outcome = Outcome("ok", cpu_seconds=_cpu_seconds(), result=result)
            except Overwork as error:
                outcome = Outcome("overwork", str(error), _cpu_seconds())
            except MemoryError:
                outcome = Outcome("memory", f"over {MEMORY_BYTES / 2**20:.0f} MiB", _cpu_seconds())
            except BaseException as error:
                outcome = Outcome("crash", "".join(traceback.format_exception(error))[-4000:], _cpu_seconds())
            try:
                data = pickle.dumps(outcome)
            except Exception:
                data = pickle.dumps(Outcome(outcome.status, outcome.detail, outcome.cpu_seconds))
            with os.fdopen(writer, "wb") as pipe:
                pipe.write(data)
        except BaseException:
            status = 70
        finally:
            os._exit(status)
    os.close(writer)
    chunks = []
    with os.fdopen(reader, "rb") as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], wall_seconds)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return Outcome("blocked", f"no answer within {wall_seconds:.0f} s of wall time")
            chunk = os.read(pipe.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    _, wait_status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wait_status):
        signal_number = os.WTERMSIG(wait_status)
        if signal_number in (signal.SIGXCPU, signal.SIGKILL):
            return Outcome("hung", f"stopped by the hang catcher's CPU limit ({signal.Signals(signal_number).name})")
        return Outcome("crash", f"killed by {signal.Signals(signal_number).name}")
    if not chunks:
        return Outcome("crash", f"the child exited with status {os.WEXITSTATUS(wait_status)} and no verdict")
    return pickle.loads(b"".join(chunks))


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def stepped(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a function that counts its own steps (so run_bounded does not count it whole)."""
    function._stepped = True  # type: ignore[attr-defined]
    return function


def _stepped(function: Callable[..., Any]) -> bool:
    return getattr(function, "_stepped", False)


# The pipeline ---------------------------------------------------------------------------


@contextlib.contextmanager
def in_directory(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _documented(error: BaseException) -> bool:
    from resdsl.errors import SpecError

    return isinstance(error, SpecError)


def render_error(error: BaseException) -> str:
    """The diagnostic as users see it; rendering must not fail either."""
    text = str(error)
    assert text and "Traceback" not in text, text
    position = getattr(error, "pos", None)
    if position is not None:
        assert text.startswith(f"{position.path}:{position.line}:{position.column}: "), text
    return text


@stepped
def pipeline(text: str | bytes, directory: str, name: str = "fuzz.res", run_torch: bool = True) -> str:
    """Everything one spec goes through. Returns a one-word verdict; raises on any finding."""
    import resdsl
    from resdsl.ir import Limits

    path = Path(directory) / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", errors="surrogatepass"))
    with in_directory(Path(directory)):
        try:
            with step("compiling"):
                network = resdsl.compile(path, limits=Limits())
        except Exception as error:
            if not _documented(error):
                raise
            render_error(error)
            return f"error: {type(error).__name__}: {error.message}"
        check_network(network, path)
        if run_torch and network.graph.number_of_nodes() <= TORCH_NODES:
            torch_checks(network)
    return "compiled"


def check_network(network: Any, path: Path) -> None:
    """The check line, the JSON record and every drawing of a compiled network."""
    from resdsl import cli
    from resdsl.backends.draw import DETAILS, to_dot

    out, err = io.StringIO(), io.StringIO()
    with step("resdsl check"), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check", "--stages", str(path)])
    assert code == 0, err.getvalue()
    assert out.getvalue().startswith(f"{path}: {network.name}: "), out.getvalue()
    cli.network_record(str(path), network)
    for detail in DETAILS:
        with step(f"to_dot at {detail} detail"):
            source = to_dot([network], detail=detail, shapes=True, all_layers=True).source
        assert source.startswith("digraph"), source[:100]
        drawing_bound = DRAWING_BYTES_PER_NODE * (network.graph.number_of_nodes() + 1)
        if len(source) > drawing_bound:
            raise Overwork(f"to_dot at {detail} detail wrote {len(source):,} bytes, more than {drawing_bound:,}")


def torch_checks(network: Any) -> None:
    """Build and run on the meta device, export to .py (compiled, never run), and for small
    networks compare for_inference with eval."""
    import ast

    import torch

    from resdsl.backends.loading import load
    from resdsl.backends.torch import build, export_source
    from resdsl.errors import LimitError
    from resdsl.ir import activation_bytes, check_forward_pass

    try:
        check_forward_pass(network)  # as `resdsl build` does before its forward pass
        with step("building on the meta device"):
            model = build(network, device="meta")
    except LimitError as error:
        render_error(error)
        return
    with step("a forward pass on the meta device"), torch.no_grad():
        output = model.eval()(torch.empty(1, *network.input_shape, device="meta"))
    assert tuple(output.shape[1:]) == tuple(network.output_shape), (output.shape, network.output_shape)
    with step("the .py export"):
        source = export_source(network)
        ast.parse(source)
        builtins.compile(source, "<resdsl export>", "exec")  # compiled to prove it is Python; never executed
    small = network.graph.number_of_nodes() <= SMALL_NODES and network.num_params <= SMALL_PARAMS
    if small and activation_bytes(network) <= SMALL_ACTIVATIONS:
        with step("for_inference against eval"):
            torch.manual_seed(0)
            reference = load(network).eval()
            _randomise_batch_norm(reference)
            folded = load(network, weights=reference.state_dict(), for_inference=True)
            example = torch.randn(2, *network.input_shape)
            with torch.no_grad():
                expected, got = reference(example), folded(example)
        scale = expected.abs().max().item()
        if math.isfinite(scale):  # growth past float32 through many blocks says nothing about folding
            error = (expected - got).abs().max().item()
            assert error <= 1e-3 * scale + 1e-4, f"for_inference differs from eval by {error:.3g} (scale {scale:.3g})"


def _randomise_batch_norm(model: Any) -> None:
    """Non-trivial BN statistics: with the defaults (mean 0, variance 1) a wrong fold can hide."""
    import torch

    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator))
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(shape, generator=generator))


WARM_UP_SPEC = (
    "network warm {\n    input 3x8x8\n    stage s: 1 x basic(4)\n    head {\n        avgpool\n        fc 2\n    }\n}\n"
)


def warm_up() -> None:
    """Run every step once in this process, so that forked cases inherit warm imports and caches.

    The first pass through the pipeline imports torch's submodules, graphviz and the
    grammar (some 3 s); that is the test process's cost, not the case's.
    """
    with scratch() as directory:
        pipeline(WARM_UP_SPEC, directory)
        for argv in (["check", "fuzz.res"], ["draw", "fuzz.res", "-o", "x.dot"], ["build", "fuzz.res", "-o", "x.py"]):
            drive_cli(argv, directory)


@stepped
def compile_only(text: str | bytes, directory: str) -> str:
    """The pipeline without torch: what ``check`` and ``draw`` do."""
    return pipeline(text, directory, run_torch=False)


@stepped
def drive_cli(argv: list[str], directory: str) -> tuple[int, str, str]:
    """``resdsl ARGV`` in process: exit 0, 1 or 2, never a traceback or a CompilerBug (3)."""
    from resdsl import cli

    out, err = io.StringIO(), io.StringIO()
    with (
        step(f"resdsl {' '.join(argv)[:200]}"),
        in_directory(Path(directory)),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = cli.main(argv)
    assert code in (0, 1, 2), f"exit {code}: {err.getvalue()[-2000:]}"
    assert "Traceback" not in err.getvalue(), err.getvalue()[-2000:]
    if code == 1:
        assert err.getvalue().strip(), "exit 1 without a diagnostic"
    return code, out.getvalue()[-2000:], err.getvalue()[-2000:]


# What the documentation says --------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """The language as docs/language.md describes it."""

    examples: tuple[str, ...]
    keywords: tuple[str, ...]
    layer_kinds: tuple[str, ...]
    layer_keywords: tuple[str, ...]
    settings: dict[str, tuple[str, ...]]
    blocks: tuple[str, ...]


def read_language() -> Vocabulary:
    text = LANGUAGE.read_text(encoding="utf-8")
    examples = tuple(re.findall(r"```\n(.*?)```", text, flags=re.S))
    lexical = text.split("## Lexical structure", 1)[1].split("\n## ", 1)[0]
    keywords = tuple(re.findall(r"`([a-z]+)`", lexical.split("Keywords:", 1)[1].split(".", 1)[0]))
    layers = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in layers.splitlines() if line.startswith("| `")]
    layer_kinds = tuple(dict.fromkeys(re.match(r"\| `(\w+)`", row).group(1) for row in rows))
    layer_keywords = tuple(sorted(set(re.findall(r"(\w+)=", layers))))
    settings: dict[str, tuple[str, ...]] = {}
    table = text.split("- **settings**", 1)[1].split("\n- ", 1)[0]
    for row in re.findall(r"^\s*\| `(\w+)` \| ([^|]*)\|", table, flags=re.M):
        settings[row[0]] = tuple(re.findall(r"`([^`]+)`", row[1]))
    prelude = text.split("### The prelude", 1)[1].split("\n## ", 1)[0]
    blocks = tuple(re.findall(r"^\| `(\w+)\(", prelude, flags=re.M))
    return Vocabulary(examples, keywords, layer_kinds, layer_keywords, settings, blocks)


#: Integers and reals at and just past the limits of the types a compiler might use.
LIMIT_NUMBERS = (
    "0", "1", "-1", "2", "127", "128", "255", "256", "32767", "32768", "65535", "65536",
    str(2**31 - 1), str(2**31), str(2**32), str(2**53), str(2**53 + 1), str(2**63 - 1), str(2**63),
    str(2**64), str(-(2**63)), str(-(2**63) - 1), "9" * 4300, "9" * 4301, "1" + "0" * 309, "00000000000000000001",
    "1e308", "1.7976931348623157e308", "1.8e308", "1e309", "1e-320", "4.9e-324", "0.0", "0.5", "1e999",
    ".5", "5.", "1e5", "0x0", "3x0x0", "1x1x1x1",
)  # fmt: skip

HOSTILE_NAMES = (
    "forward", "training", "train", "eval", "__init__", "__class__", "_modules", "resdsl_network", "class",
    "def", "None", "self", "x", "torch", "nn", "_", "__", "a" * 128, "a" * 129, "é", "conv", "bn", "stage",
)  # fmt: skip


class Writer:
    """Random specs written from the documented grammar and vocabulary, valid or not.

    Drawn choices come from a ``random.Random``, so a seed replays a case; hypothesis
    hands over the seed and shrinks towards small seeds and sizes.
    """

    def __init__(self, vocabulary: Vocabulary, rng: random.Random, hostile: float = 0.15) -> None:
        self.vocabulary = vocabulary
        self.rng = rng
        self.hostile = hostile  # how often a value is drawn from the limits rather than the plausible
        self.params: list[str] = []
        #: What the language reference says must be refused, written on purpose (the
        #: oracle for mistakes that would otherwise compile silently).
        self.must_fail: list[str] = []

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def number(self) -> str:
        if self.chance(self.hostile):
            return self.rng.choice(LIMIT_NUMBERS)
        return str(self.rng.choice((1, 2, 3, 4, 8, 16, 32, 64)))

    def name(self) -> str:
        if self.chance(self.hostile / 2):
            return self.rng.choice(HOSTILE_NAMES)
        return self.rng.choice(("w", "n", "k", "c", "s", "a", "b", "width", "stride", "classes"))

    def expr(self, depth: int = 0) -> str:
        roll = self.rng.random()
        if depth > 3 or roll < 0.45:
            return self.number()
        if roll < 0.6 and self.params:
            return self.rng.choice(self.params)
        if roll < 0.7:
            return "-" + self.expr(depth + 1)
        if roll < 0.8:
            return f"({self.expr(depth + 1)})"
        op = self.rng.choice(("+", "-", "*", "//", "/"))
        return f"{self.expr(depth + 1)} {op} {self.expr(depth + 1)}"

    def size(self) -> str:
        if self.chance(0.5):
            return self.expr()
        return "x".join(self.number() for _ in range(self.rng.choice((2, 2, 2, 3, 1))))

    def layer(self) -> str:
        kind = self.rng.choice(self.vocabulary.layer_kinds)
        if self.chance(self.hostile / 3):
            kind = self.name()
        args = {
            "conv": lambda: [self.rng.choice(("3x3", "1x1", "7x7", self.size())), self.expr()],
            "maxpool": lambda: [self.rng.choice(("3x3", "2x2", self.size()))],
            "avgpool": lambda: [] if self.chance(0.6) else [self.size()],
            "fc": lambda: [self.expr()],
            "dropout": lambda: [self.rng.choice(("0.5", "0", "0.99", "1", "-0.1", self.expr()))],
            "add": lambda: ["shortcut"],
        }.get(kind, lambda: [])()
        if self.chance(0.1):
            args.append(self.expr())
        for _ in range(self.rng.choice((0, 0, 1, 2))):
            keyword = self.rng.choice(self.vocabulary.layer_keywords)
            args.append(f"{keyword}={self.rng.choice(('true', 'false', self.size()))}")
        label = f"{self.name()}: " if self.chance(0.15) else ""
        return f"{label}{kind} {', '.join(args)}".rstrip()

    def _repeat_one(self, items: list[str], what: str) -> list[str]:
        """Sometimes write one item twice: docs/language.md makes that an error."""
        if items and self.chance(self.hostile / 2):
            items = [*items, self.rng.choice(items)]
            self.must_fail.append(what)
        return items

    def block(self, name: str) -> str:
        self.params = [p for p in dict.fromkeys(self.name() for _ in range(self.rng.choice((0, 1, 2, 3))))]
        written = self._repeat_one(self.params, "a parameter named twice")
        params = ", ".join(p if self.chance(0.5) else f"{p}={self.expr()}" for p in written)
        body = [self.layer() for _ in range(self.rng.randint(1, 6))]
        if self.chance(0.7):
            body.insert(self.rng.randint(0, len(body)), "add shortcut")
        head = f"block {name}({params})" if params or self.chance(0.3) else f"block {name}"
        return head + " {\n" + "".join(f"    {line}\n" for line in body) + "}\n"

    def network(self, name: str, blocks: list[str]) -> str:
        self.params = [p for p in dict.fromkeys(self.name() for _ in range(self.rng.choice((0, 1, 2))))]
        written = self._repeat_one(self.params, "a parameter named twice")
        params = ", ".join(f"{p}={self.expr()}" if self.chance(0.8) else p for p in written)
        body = []
        size = self.rng.choice((8, 16, 32, 32, 64))
        if self.chance(0.95):
            body.append(f"input {self.rng.choice(('3', '1', self.number()))}x{size}x{size}")
        for setting, values in self.vocabulary.settings.items():
            if setting != "input" and values and self.chance(0.3):
                body.append(f"{setting} {self.rng.choice(values)}")
        if self.chance(0.6):
            body.append(
                "stem {\n" + "".join(f"        {self.layer()}\n" for _ in range(self.rng.randint(0, 3))) + "    }"
            )
        for index in range(self.rng.randint(0, 3)):
            block = self.rng.choice(blocks or list(self.vocabulary.blocks))
            repeat = f"{self.expr()} x " if self.chance(0.7) else ""
            args = ", ".join(self.expr() for _ in range(self.rng.choice((0, 1, 1, 2))))
            if self.chance(0.3):
                args += (", " if args else "") + f"stride={self.rng.choice(('1', '2', self.expr()))}"
            body.append(f"stage {self.name() if self.chance(0.1) else f's{index}'}: {repeat}{block}({args})")
        if self.chance(0.7):
            body.append("head {\n        avgpool\n        fc " + self.expr() + "\n    }")
        head = f"network {name}({params})" if params else f"network {name}"
        return head + " {\n" + "".join(f"    {line}\n" for line in body) + "}\n"

    def alias(self, name: str, base: str) -> str:
        args = ", ".join(f"{self.name()}={self.expr()}" for _ in range(self.rng.choice((0, 1))))
        overrides = [
            f"{setting} {self.rng.choice(values)}"
            for setting, values in self.vocabulary.settings.items()
            if values and self.chance(0.25)
        ]
        overrides = self._repeat_one(overrides, "a setting given twice in one 'with'")
        text = f"network {name} = {base}" + (f"({args})" if args else "")
        return text + (" with " + ", ".join(overrides) if overrides else "") + "\n"

    def spec(self) -> str:
        parts = []
        if self.chance(0.2):
            parts.append(self.rng.choice(self.vocabulary.examples))
        blocks = [f"b{index}" for index in range(self.rng.randint(0, 2))]
        parts += [self.block(name) for name in blocks]
        parts.append(self.network("fuzz", blocks))
        if self.chance(0.3) or self.must_fail:
            parts.append(self.alias("fuzz", "fuzz_base"))
            parts[-2] = parts[-2].replace("network fuzz", "network fuzz_base", 1)
        text = "\n".join(parts)
        if self.chance(self.hostile) and not self.must_fail:
            text = mutate_bytes(text.encode("utf-8"), self.rng).decode("utf-8", errors="replace")
        return text


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage: flips, deletions, insertions of hostile bytes, duplicated stretches."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buffer:
            buffer.extend(b"\x00")
        position = rng.randrange(len(buffer))
        roll = rng.random()
        if roll < 0.25:
            buffer[position] = rng.randrange(256)
        elif roll < 0.45:
            del buffer[position : position + rng.randint(1, 8)]
        elif roll < 0.7:
            insert = rng.choice((b"\x00", b"\xff", b"\r", b"\\\n", b"\xef\xbb\xbf", b"(", b"{", b"#", b";", b'"'))
            buffer[position:position] = insert * rng.randint(1, 4)
        else:
            end = min(len(buffer), position + rng.randint(1, 40))
            buffer[position:position] = buffer[position:end] * rng.randint(1, 3)
    return bytes(buffer)


# Inputs at the size bounds ------------------------------------------------------------------


def at_the_bounds() -> dict[str, str]:
    """One spec at each documented bound and one just past it: every one must answer in budget."""
    from resdsl.frontend import MAX_ALIAS_DEPTH
    from resdsl.parser import (
        MAX_ARGUMENTS,
        MAX_EXPRESSION_DEPTH,
        MAX_EXPRESSION_TREE_DEPTH,
        MAX_NAME_LENGTH,
        MAX_TOKENS,
    )

    net = "network n {{\n input 3x32x32\n{body}}}\n"
    stage = " stage s: 1 x basic(16)\n"
    cases: dict[str, str] = {}
    for past, label in ((0, "at"), (1, "past")):
        # Tokens: separators, operators, arguments, stages, definitions.
        cases[f"semicolons_{label}"] = ";" * (MAX_TOKENS + past)
        cases[f"newlines_{label}"] = "\n" * (MAX_TOKENS + past)
        terms = (MAX_TOKENS - 40) // 2 + past * 40
        cases[f"operators_{label}"] = net.format(body=f" stage s: 1 x basic(16{' +0' * terms})\n")
        cases[f"unary_{label}"] = net.format(body=f" stage s: 1 x basic({'-' * (MAX_TOKENS - 40 + past * 80)}16)\n")
        count = MAX_TOKENS // 10 - 10 + past * 20
        cases[f"stages_{label}"] = net.format(body="".join(f" stage s{i}: 1 x basic(16)\n" for i in range(count)))
        count = MAX_TOKENS // 8 - 10 + past * 20
        cases[f"blocks_{label}"] = "".join(f"block b{i}(w) {{\n relu\n}}\n" for i in range(count)) + net.format(
            body=stage
        )
        cases[f"arguments_{label}"] = net.format(body=f" relu {', '.join(['1'] * (MAX_ARGUMENTS + past))}\n{stage}")
        params = ", ".join(f"p{i}=1" for i in range(MAX_ARGUMENTS + past))
        cases[f"parameters_{label}"] = f"network n({params}) {{\n input 3x32x32\n{stage}}}\n"
        depth = MAX_EXPRESSION_DEPTH - 2 + past * 3
        cases[f"nesting_{label}"] = net.format(body=f" stage s: 1 x basic({'(' * depth}16{')' * depth})\n")
        depth = MAX_EXPRESSION_TREE_DEPTH + past
        cases[f"tree_{label}"] = net.format(body=f" stage s: 1 x basic(16{' +0' * depth})\n")
        aliases = MAX_ALIAS_DEPTH + past
        chain = "".join(f"network a{i} = a{i - 1}\n" for i in range(1, aliases + 1))
        cases[f"aliases_{label}"] = (
            net.replace("network n", "network a0").format(body=stage) + chain + (f"network n = a{aliases}\n")
        )
        cases[f"name_{label}"] = net.format(body=f" stage {'s' * (MAX_NAME_LENGTH + past)}: 1 x basic(16)\n")
        layers = 20_000 // 8 - 2 + past * 10  # basic blocks of 8 layers each, at --max-layers' default
        cases[f"layers_{label}"] = net.format(body=f" stage s: {layers} x basic(16)\n")
        cases[f"squares_{label}"] = (
            "network n(a0=3, "
            + ", ".join(f"a{i}=a{i - 1}*a{i - 1}" for i in range(1, 40))
            + ") {\n input 3x32x32\n stage s: 1 x basic(16)\n}\n"
        )
    # At the file-size bound, whatever the tokens: each must be refused or compiled in budget.
    size = 4 * 1024 * 1024 - 200
    cases["semicolons_at_file_size"] = ";" * size
    cases["newlines_at_file_size"] = "\n" * size
    cases["operators_at_file_size"] = net.format(body=f" stage s: 1 x basic(16{'+1' * (size // 2)})\n")
    cases["unary_at_file_size"] = net.format(body=f" stage s: 1 x basic({'-' * size}16)\n")
    cases["arguments_at_file_size"] = net.format(body=f" relu {','.join(['1'] * (size // 2))}\n{stage}")
    cases["stages_at_file_size"] = net.format(body="".join(f" stage s{i}: 1 x basic(16)\n" for i in range(size // 30)))
    cases["comments_at_file_size"] = ("#" + "x" * 1000 + "\n") * 4000 + net.format(body=stage)
    cases["long_line_at_file_size"] = net.format(body=stage) + "#" + "(" * (4 * 1024 * 1024 - 200) + "\n"
    return cases


# Special files ---------------------------------------------------------------------------


@contextlib.contextmanager
def special_files(directory: Path) -> Iterator[dict[str, Path]]:
    """Paths that are not regular files, or are at the size bound, each named like a spec."""
    from resdsl.ir import Limits

    files: dict[str, Path] = {}
    fifo = directory / "fifo.res"
    os.mkfifo(fifo)
    files["fifo"] = fifo
    for device in ("/dev/zero", "/dev/urandom", "/dev/null"):
        if os.path.exists(device):
            link = directory / f"{Path(device).name}.res"
            link.symlink_to(device)
            files[Path(device).name] = link
    folder = directory / "folder.res"
    folder.mkdir()
    files["directory"] = folder
    empty = directory / "empty.res"
    empty.write_bytes(b"")
    files["empty"] = empty
    limit = Limits().max_file_bytes
    at_bound = directory / "at_bound.res"
    at_bound.write_bytes(b"network n {\n input 3x32x32\n stage s: 1 x basic(16)\n}\n".ljust(limit, b"#"))
    files["at_bound"] = at_bound
    past = directory / "past_bound.res"
    past.write_bytes(b"#" * (limit + 1))
    files["past_bound"] = past
    binary = directory / "binary.res"
    binary.write_bytes(bytes(range(256)) * 64)
    files["binary"] = binary
    loop = directory / "loop.res"
    loop.symlink_to(loop)
    files["symlink_loop"] = loop
    sock_path = directory / "socket.res"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(sock_path))
        files["socket"] = sock_path
    except OSError:  # a path too long for AF_UNIX: the other kinds still run
        pass
    try:
        yield files
    finally:
        server.close()


def is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="resdsl-fuzz-")


# Round 4 (issue 27): several paths from the documentation's grammar forms ---------------


class PathsWriter:
    """Blocks of several paths, written from docs/language.md's grammar forms ("Several
    paths"): ``let`` (a name, ``NAME[i]``, ``= VALUE``), ``from``, ``split`` (parts or
    sizes), joins over named values and lists (a value joined with itself included),
    ``weighted``, nested ``for`` loops whose bodies may make no layer, labels that
    interpolate ``{NAME}`` (whole, in a part, with ``..``), nested blocks inside loops,
    and names that are keywords. Valid or not: every case is checked by every consumer.
    """

    JOINS = ("add", "mul", "cat")
    LAYERS = ("conv 3x3, w", "conv 1x1, w", "bn", "relu", "identity", "avgpool 3x3, padding=1")

    def __init__(self, rng: random.Random, hostile: float = 0.2) -> None:
        self.rng = rng
        self.hostile = hostile

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def count(self) -> str:
        if self.chance(self.hostile / 2):
            return self.rng.choice(("0", "-1", "1024", "1025", "100000", "2 ** 3", str(2**63)))
        return str(self.rng.choice((1, 2, 2, 3, 4)))

    def value_name(self, index: int) -> str:
        if self.chance(self.hostile / 4):
            return self.rng.choice(("for", "in", "let", "from", "x", "shortcut", "i", "w", "a" * 129))
        return f"v{index}"

    def label(self) -> str:
        forms = ("{i}", "c{i}", "convs.{i}", "b{i}.conv", "..c{i}", "a{i}b{j}", "{w}", "x" * 120 + "{w}", "{nope}")
        return self.rng.choice(forms)

    def body(self, depth: int = 0, names: list[str] | None = None) -> list[str]:
        """Statements of a block body; `names` are the values bound so far (read by joins and from)."""
        names = names if names is not None else []
        lines: list[str] = []
        for _ in range(self.rng.randint(1, 5)):
            roll = self.rng.random()
            if roll < 0.2:
                lines.append(self.rng.choice(self.LAYERS))
            elif roll < 0.35:
                name = self.value_name(len(names))
                lines.append(f"let {name}")
                names.append(name)
            elif roll < 0.45 and names:
                lines.append(f"from {self.rng.choice(names)}")
            elif roll < 0.6 and names:
                join = self.rng.choice(self.JOINS)
                chosen = [self.rng.choice(names) for _ in range(self.rng.randint(1, 4))]
                if self.chance(0.3):
                    chosen = [chosen[0]] * self.rng.randint(2, 4)  # a value joined with itself
                lines.append(f"{join} {', '.join(chosen)}")
            elif roll < 0.7:
                name = self.value_name(len(names))
                lines += [f"split {self.rng.choice(('2', '4', '[2, 2]', '[w // 2, w // 2]', '0', '3'))}", f"let {name}"]
                names.append(name)
                lines.append(f"add {name}[0], {name}[{self.rng.choice(('1', '0', '-1', '2'))}]")
            elif roll < 0.85 and depth < 3:
                hostile_name = self.chance(self.hostile / 3)
                var = self.rng.choice(("in", "w", "v0") if hostile_name else ("i", "j", "k"))
                inner = self.body(depth + 1, list(names))
                if self.chance(0.4):
                    inner = [f"{self.label()}: conv 1x1, w", *inner]
                if self.chance(0.3):
                    inner = [f"let o[{var}]", *inner]
                if self.chance(0.25):
                    inner = [f"from {self.rng.choice(names)}" if names else "identity"]  # a body that makes no layer
                lines.append(f"for {var} in 0 .. {self.count()} {{")
                lines += [f"    {line}" for line in inner]
                lines.append("}")
            elif roll < 0.92:
                lines.append(f"{self.label()}: inner(w)")
            else:
                branch = self.rng.choice(self.JOINS)
                lines += [f"{branch} {{", "    conv 1x1, w", "}"]
        return lines

    def spec(self) -> str:
        inner = ["block inner(w) {", f"    {self.label()}: conv 1x1, w", "}"]
        body = self.body()
        if self.chance(0.5):
            body = ["let start", *body, "add shortcut" if self.chance(0.5) else "add start, start"]
        block = ["block paths(w) {", *(f"    {line}" for line in body), "}"]
        repeat = self.rng.choice(("1", "2", "1", str(10**8))) if self.chance(self.hostile) else "1"
        network = [
            "network fuzz {",
            "    input 4x8x8",
            f"    stage s: {repeat} x paths(4)",
            "    head {",
            "        avgpool",
            "        fc 3",
            "    }",
            "}",
        ]
        text = "\n".join(inner + block + network) + "\n"
        if self.chance(self.hostile / 2):
            text = mutate_bytes(text.encode("utf-8"), self.rng).decode("utf-8", errors="replace")
        return text


@stepped
def every_consumer(text: str | bytes, directory: str) -> str:
    """One spec through every consumer: the pipeline (check, IR, drawings, build, .py, for_inference),
    the table, fmt (meaning kept, idempotent), ONNX and .pt2 exports, and the language server's
    analysis, hover, definition and completion on every line. Returns a verdict; raises on a finding."""
    verdict = pipeline(text, directory)
    path = Path(directory) / "fuzz.res"
    source = path.read_text(encoding="utf-8", errors="replace")
    with step("the language server's analysis"):
        language_server_requests(source, path)
    with step("fmt"):
        fmt_keeps_meaning(path)
    if verdict == "compiled":
        import resdsl
        from resdsl.table import Table

        network = resdsl.compile(path)
        with step("the table"):
            assert str(Table.of(network))
        if network.graph.number_of_nodes() <= SMALL_NODES:
            for suffix in (".onnx", ".pt2"):
                with step(f"build -o {suffix}"):
                    drive_cli(["build", "fuzz.res", "-o", f"out{suffix}"], directory)
    return verdict


def language_server_requests(text: str, path: Path) -> None:
    """What an editor asks for: diagnostics, then hover, definition and completion on each line."""
    from resdsl.lsp import analysis

    result = analysis.analyze(text, path)
    for error in result.errors:
        render_error(error)
        assert "failed inside the compiler" not in error.message, error.message
    lines = text.split("\n")
    for number, line in enumerate(lines[:200], start=1):
        for column in sorted({1, max(1, len(line) // 2), len(line) + 1}):
            analysis.hover(result, number, column)
            analysis.definition(result, number, column)
            analysis.complete(result, number, column)


def fmt_keeps_meaning(path: Path) -> None:
    """fmt formats what parses, never says the formatted file would not parse, and keeps the meaning."""
    from resdsl.errors import CompilerBug, SpecError
    from resdsl.fmt import format_text

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        formatted = format_text(text, str(path))
    except SpecError as error:
        render_error(error)
        return
    except CompilerBug as error:  # format_text's own failure: the formatted text would not parse or means otherwise
        raise AssertionError(f"fmt failed on a file that parses: {error}") from None
    assert format_text(formatted, str(path)) == formatted, "fmt is not idempotent"


# Full disks: every file the project writes, under a file-size limit in a child ---------------


def run_with_file_size_limit(
    argv: list[str], cwd: Path, limit: int, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``resdsl ARGV`` in a child process whose files may grow to `limit` bytes (RLIMIT_FSIZE):
    a write past it fails with EFBIG, as on a full disk (Python ignores SIGXFSZ). A child, not
    this process: a library that aborts while cleaning up (torch's zip writer) takes only it down,
    and its exit status shows it."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "resdsl", *argv],
        cwd=cwd,
        preexec_fn=limit_files,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_full_disk_handled(result: Any, folder: Path, target: Path, before: bytes | None) -> None:
    """A write that fails is a clean error, the old file is whole and no temporary is left."""
    shown = f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert result.returncode == 1, shown
    assert "Traceback" not in result.stderr and "terminate called" not in result.stderr, shown
    assert "cannot write" in result.stderr, shown  # with the system's reason ("File too large", or torch's own)
    if before is None:
        assert not target.exists() or target.is_dir(), f"{target} was written in part"
    else:
        assert target.read_bytes() == before, f"{target} was changed"
    left = [path.name for path in folder.rglob(".*.tmp")]
    assert not left, f"temporaries left behind: {left}"


def warm_up_every_consumer() -> None:
    """As warm_up, for every_consumer's steps too (the exports import torch.onnx and torch.export)."""
    with scratch() as directory:
        every_consumer(WARM_UP_SPEC, directory)


#: Every file the project writes, each by the command that writes it: (name, argv, the file written).
#: The folder holds tiny.res, messy.res (fmt changes it) and run/metrics.csv (for plot).
WRITTEN_FILES: tuple[tuple[str, list[str], str], ...] = (
    *(
        (f"build{suffix}", ["build", "tiny.res", "-o", f"out{suffix}"], f"out{suffix}")
        for suffix in (".pt", ".pt2", ".onnx", ".safetensors", ".py")
    ),
    *(
        (f"draw{suffix}", ["draw", "tiny.res", "-o", f"figure{suffix}"], f"figure{suffix}")
        for suffix in (".dot", ".svg", ".png", ".pdf", ".html")
    ),
    ("fmt", ["fmt", "messy.res"], "messy.res"),
    ("plot", ["plot", "run", "-o", "curves.png"], "curves.png"),
)

MESSY_SPEC = (
    "network messy{input 3x8x8;stem{conv 3x3,4;bn;relu}\n"
    + "".join(f"# comment {index} kept where it stands\n" for index in range(60))
    + "head{avgpool;fc 2}}\n"
)

METRICS_TEXT = (
    "iteration,epoch,lr,train_loss,train_error,val_loss,val_error,test_loss,test_error,images_per_s,seconds\n"
    + "".join(f"{i * 10},{i},0.1,2.0,{50 - i},,,2.1,{55 - i},1000,{i}\n" for i in range(1, 30))
)


def written_files_folder(folder: Path, spec: str) -> Path:
    """The inputs of WRITTEN_FILES' commands."""
    (folder / "tiny.res").write_text(spec, encoding="utf-8")
    (folder / "messy.res").write_text(MESSY_SPEC, encoding="utf-8")
    (folder / "run").mkdir(exist_ok=True)
    (folder / "run" / "metrics.csv").write_text(METRICS_TEXT, encoding="utf-8")
    return folder
