"""Hostile input: what an attacker would try, each case under the time and memory budget.

Specs are written from docs/language.md (its examples, tables and grammar forms) and
from hostile bytes, not from what the compiler accepts; numbers at and past type limits,
special files, inputs at every size bound, and the command line driven in process with
every subcommand and its options. Each case runs in a forked child under
tests/fuzz_harness.py's bounds (counted tokens, IR nodes, evaluations and drawn bytes;
500 MB of new memory; a CPU and a wall-clock limit far above honest cases that only
catch hangs and reads that block): a crash, a hang, overwork and a greedy case all fail.

``RESDSL_FUZZ_EXAMPLES`` sets the number of generated cases (default 40 per test),
``RESDSL_FUZZ_EXPLORE=1`` draws new ones instead of CI's fixed set.
The coverage-guided fuzzer is tests/fuzz_atheris.py (a bounded run is below; the
longer command is in docs/errors.md).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

import fuzz_harness as harness
import pytest
import torch  # imported here so that forked cases inherit it instead of importing it each
from fuzz_harness import Outcome, run_bounded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resdsl
import resdsl.backends.torch
from resdsl import cli

EXAMPLES = int(os.environ.get("RESDSL_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("RESDSL_FUZZ_EXPLORE") != "1",
    suppress_health_check=list(HealthCheck),
    database=None,
)
VOCABULARY = harness.read_language()
harness.warm_up()
TINY = "network tiny(classes=10) {\n    input 3x8x8\n    stage s: 1 x basic(4)\n    head {\n        avgpool\n        fc classes\n    }\n}\n"  # noqa: E501


def assert_within_budget(outcome: Outcome, case: object) -> None:
    shown = repr(case)
    shown = shown if len(shown) < 600 else shown[:300] + " ... " + shown[-300:]
    assert outcome.ok, f"{outcome.status}: {outcome.detail}\ncase: {shown}"


# The harness can fail ---------------------------------------------------------------------


def _spin_forever() -> None:
    while True:
        pass


def _parse_past_the_token_bound() -> None:
    """Reads tokens past the bound as a pre-scan that forgot its budget would."""
    from resdsl import parser

    for _ in parser._PRESCAN.finditer(";" * (harness.Limits().max_tokens + 2)):
        pass


def _make_nodes(count: int) -> None:
    from resdsl.ir import Graph
    from resdsl.layers import Input

    graph = Graph()
    for _ in range(count):
        graph.create(Input((3, 4, 4)))


def _allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def _read(path: str) -> int:
    with open(path, "rb") as handle:
        return len(handle.read())


def _raise() -> None:
    raise TypeError("a crash")


def test_the_budgets_fail_what_they_should(tmp_path: Path) -> None:
    assert run_bounded(_spin_forever, cpu_seconds=1).status == "hung"
    assert run_bounded(_parse_past_the_token_bound).status == "overwork"
    bound = harness.NODES_PER_LAYER_BOUND * harness.Limits().max_layers
    assert run_bounded(_make_nodes, 100).ok
    outcome = run_bounded(_make_nodes, bound + 1)
    assert outcome.status == "overwork" and f"more than {bound:,}" in outcome.detail, outcome
    assert run_bounded(_allocate, 50).ok
    assert run_bounded(_allocate, 600).status == "memory"
    assert run_bounded(_raise).status == "crash"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    outcome = run_bounded(_read, str(fifo), wall_seconds=3)
    assert outcome.status == "blocked" and "within 3 s" in outcome.detail, outcome


def test_the_documentation_feeds_the_generator() -> None:
    # If docs/language.md changes shape, the generator must not silently lose its vocabulary.
    assert {"conv", "bn", "relu", "maxpool", "avgpool", "fc", "dropout", "add"} <= set(VOCABULARY.layer_kinds)
    assert {"stride", "padding", "dilation", "groups", "bias"} <= set(VOCABULARY.layer_keywords)
    assert VOCABULARY.settings["shortcut"] == ("A", "B", "C", "none")
    assert {"basic", "bottleneck"} <= set(VOCABULARY.blocks)
    assert {"use", "block", "network", "stage", "with"} <= set(VOCABULARY.keywords)
    assert len(VOCABULARY.examples) >= 5


# Specs from the documentation, and bytes --------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(st.randoms(use_true_random=False))
def test_specs_written_from_the_documentation(rng: random.Random) -> None:
    check_written_spec(harness.Writer(VOCABULARY, rng))


@pytest.mark.slow
@FUZZ
@given(st.randoms(use_true_random=False))
def test_hostile_specs_written_from_the_documentation(rng: random.Random) -> None:
    check_written_spec(harness.Writer(VOCABULARY, rng, hostile=0.6))


def check_written_spec(writer: harness.Writer) -> None:
    text = writer.spec()
    with harness.scratch() as directory:
        outcome = run_bounded(harness.pipeline, text, directory)
    assert_within_budget(outcome, text)
    if writer.must_fail:
        assert outcome.result.startswith("error"), f"{writer.must_fail[0]} was accepted:\n{text}"
        # Only an error found earlier (syntax, a bound, a file, a literal out of range: all
        # found while parsing) may stand in for it.
        earlier = outcome.result.startswith(("error: SpecSyntaxError", "error: LimitError", "error: UseError"))
        earlier = earlier or "fit in 64 bits" in outcome.result or "overflows to infinity" in outcome.result
        if not earlier:
            reported = "twice" in outcome.result or "two parameters" in outcome.result
            assert reported, f"{writer.must_fail[0]} was not reported: {outcome.result}\n{text}"


@pytest.mark.slow
@FUZZ
@given(
    st.binary(max_size=2000) | st.sampled_from(VOCABULARY.examples).map(str.encode), st.randoms(use_true_random=False)
)
def test_hostile_bytes(data: bytes, rng: random.Random) -> None:
    data = harness.mutate_bytes(data, rng)
    with harness.scratch() as directory:
        assert_within_budget(run_bounded(harness.compile_only, data, directory), data)


# Numbers at and past type limits --------------------------------------------------------------

NUMBER_PLACES = {
    "width": "network n {{\n input 3x8x8\n stage s: 1 x basic({})\n}}\n",
    "repeat": "network n {{\n input 3x8x8\n stage s: {} x basic(4)\n}}\n",
    "input": "network n {{\n input 3x{}x8\n stage s: 1 x basic(4)\n}}\n",
    "stride": "network n {{\n input 3x8x8\n stem {{\n conv 3x3, 4, stride={}\n }}\n}}\n",
    "padding": "network n {{\n input 3x8x8\n stem {{\n conv 3x3, 4, padding={}\n }}\n}}\n",
    "dropout": "network n {{\n input 3x8x8\n head {{\n dropout {}\n fc 2\n }}\n}}\n",
    "default": "network n(c={}) {{\n input 3x8x8\n head {{\n fc c\n }}\n}}\n",
    "square": "network n(c={0}) {{\n input 3x8x8\n head {{\n fc c * c * c // 1 + 1\n }}\n}}\n",
    "quotient": "network n(c={0} / 3) {{\n input 3x8x8\n head {{\n fc 2\n }}\n}}\n",
    "negated": "network n(c=-{0}) {{\n input 3x8x8\n head {{\n fc -c\n }}\n}}\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("place", sorted(NUMBER_PLACES))
def test_numbers_at_type_limits(place: str) -> None:
    for number in harness.LIMIT_NUMBERS:
        text = NUMBER_PLACES[place].format(number)
        with harness.scratch() as directory:
            assert_within_budget(run_bounded(harness.pipeline, text, directory), text)


@pytest.mark.parametrize("number", harness.LIMIT_NUMBERS, ids=lambda n: n[:24])
def test_numbers_from_the_command_line(number: str) -> None:
    with harness.scratch() as directory:
        Path(directory, "tiny.res").write_text(TINY)
        for argv in (
            ["check", "tiny.res", "--param", f"classes={number}"],
            ["build", "tiny.res", "-p", f"classes={number}"],
        ):
            assert_within_budget(run_bounded(harness.drive_cli, argv, directory), argv)


# Inputs at the size bounds --------------------------------------------------------------------

BOUND_CASES = harness.at_the_bounds()


@pytest.mark.parametrize("name", sorted(BOUND_CASES))
def test_inputs_at_the_size_bounds(name: str) -> None:
    text = BOUND_CASES[name]
    with harness.scratch() as directory:
        outcome = run_bounded(harness.compile_only, text, directory)
        assert_within_budget(outcome, name)
        if "_past" in name:
            assert outcome.result.startswith("error"), f"{name} went past a bound and still compiled"


def test_drawing_blocks_at_the_layer_bound_is_bounded() -> None:
    text = BOUND_CASES["layers_at"]
    with harness.scratch() as directory:
        argv = ["draw", "fuzz.res", "-o", "out.dot", "--detail", "block"]
        Path(directory, "fuzz.res").write_text(text)
        assert_within_budget(run_bounded(harness.drive_cli, argv, directory), argv)


# Special files ----------------------------------------------------------------------------------


def test_special_files_as_specs_uses_and_weights(tmp_path: Path) -> None:
    with harness.special_files(tmp_path) as files:
        Path(tmp_path, "tiny.res").write_text(TINY)
        for kind, path in files.items():
            uses = tmp_path / f"uses_{kind}.res"
            uses.write_text(f'use "{path.name}"\n' + TINY.replace("tiny", f"uses_{kind}"))
            for argv in (
                ["check", path.name],
                ["draw", path.name, "-o", "x.dot"],
                ["check", uses.name],
                ["build", "tiny.res", "--weights", path.name],
            ):
                outcome = run_bounded(harness.drive_cli, argv, str(tmp_path))
                assert_within_budget(outcome, (kind, argv))
                code, _, err = outcome.result
                if kind in ("fifo", "zero", "urandom", "null", "directory", "socket"):
                    # Refused by what they are, before a byte is read (a FIFO would block).
                    assert code == 1, (kind, argv, err)
                    if argv[0] != "build":
                        assert "not a regular file" in err or "is a directory" in err, (kind, argv, err)
                elif kind in ("past_bound", "binary", "symlink_loop") or argv[0] == "build":
                    assert code == 1, (kind, argv, err)


# The command line, every subcommand and option --------------------------------------------------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _argv(
    command: str, parser: argparse.ArgumentParser, spec: str, rng: random.Random, weights: list[str]
) -> list[str]:
    """A command line for `command`, every option drawn from what its parser declares."""
    argv = [command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if not action.option_strings:
            argv += [spec] * (2 if action.nargs == "+" and rng.random() < 0.3 else 1)
            continue
        if action.required or rng.random() < 0.35:
            flag = rng.choice(action.option_strings)
            if action.nargs == 0:
                argv.append(flag)
            elif action.choices:
                argv += [flag, rng.choice(list(action.choices))]
            elif "output" in action.dest:
                suffixes = [".dot", ".svg", ".pt", ".py", ".safetensors", ".txt", ""]
                folder = rng.choice(["", "missing/deeper/", "tiny.res/", "taken_dir/"])
                name = rng.choice(["out", "taken_dir", ""])
                argv += [flag, f"{folder}{name}{rng.choice(suffixes)}"]
            elif action.dest == "param":
                bad = ["classes=1e309", "classes=" + "9" * 50, "nope", "x=1"]
                argv += [flag, rng.choice(["classes=3"] * 6 + bad)]
            elif action.type is not None and action.dest.startswith("max"):
                argv += [flag, rng.choice(["100", "100", "100", "1", "0", "-5", str(2**70), "lots"])]
            elif action.dest == "network":
                argv += [flag, rng.choice(["tiny", "tiny", "other", "forward"])]
            elif action.dest == "weights":
                argv += [flag, rng.choice(["w.pt", "missing.pt", "tiny.res", "taken_dir", *weights])]
            else:
                argv += [flag, "1"]
    return argv


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_subcommand_and_option(command: str) -> None:
    parser = _subcommands()[command]
    rng = random.Random(f"{command}-cli")
    with harness.scratch() as directory:
        Path(directory, "tiny.res").write_text(TINY)
        Path(directory, "bad.res").write_text(TINY.replace("basic(4)", "basic(0)"))
        for suffix in ("", ".dot", ".svg", ".pt", ".py", ".safetensors"):
            Path(directory, f"taken_dir{suffix}").mkdir()  # an output that is a directory
        torch.save({"a": 1}, Path(directory, "w.pt"))
        weights = [path.name for path in _weights_files(Path(directory)).values()]
        for _ in range(max(10, EXAMPLES // 2)):
            spec = rng.choice(["tiny.res", "tiny.res", "tiny.res", "bad.res", "resnet18", "missing.res"])
            argv = _argv(command, parser, spec, rng, weights)
            outcome = run_bounded(harness.drive_cli, argv, directory)
            assert_within_budget(outcome, argv)


# Outputs and weights -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["build", "draw"])
def test_outputs_into_missing_folders_directories_and_files(command: str, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "tiny.res"
    spec.write_text(TINY)
    suffix = ".py" if command == "build" else ".dot"
    target = tmp_path / "new" / "deeper" / f"out{suffix}"
    assert cli.main([command, str(spec), "-o", str(target)]) == 0
    assert target.is_file()
    capsys.readouterr()
    directory = tmp_path / f"taken{suffix}"
    directory.mkdir()
    for bad in (directory, spec / f"under_a_file{suffix}"):
        assert cli.main([command, str(spec), "-o", str(bad)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"resdsl {command}: error: cannot"), err


def _weights_files(directory: Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    model = resdsl.load(resdsl.compile_text(TINY))
    good = directory / "good.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(good))
    data = good.read_bytes()
    files = {
        "empty.safetensors": b"",
        "truncated.safetensors": data[: len(data) // 2],
        "header_only.safetensors": data[:8],
        "huge_header.safetensors": (2**62).to_bytes(8, "little") + b"{}",
        "lying_header.safetensors": (1000).to_bytes(8, "little") + b"{" + b" " * 20,
        "empty.pt": b"",
        "truncated.pt": b"PK\x03\x04" + b"\x00" * 30,
    }
    paths = {}
    for name, content in files.items():
        paths[name] = directory / name
        paths[name].write_bytes(content)
    for name, state in {
        "ints.pt": {key: 1 for key in model.state_dict()},
        "list.pt": [1, 2, 3],
        "int_keys.pt": {1: torch.zeros(1)},
        "meta.pt": {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()},
        "complex.pt": {k: torch.zeros(v.shape, dtype=torch.complex64) for k, v in model.state_dict().items()},
    }.items():
        paths[name] = directory / name
        torch.save(state, paths[name])
    return paths


def test_broken_weights_files_are_weights_errors(tmp_path: Path) -> None:
    from resdsl.errors import WeightsError

    network = resdsl.compile_text(TINY)
    for name, path in _weights_files(tmp_path).items():
        with pytest.raises(WeightsError) as caught:
            resdsl.load(network, weights=path)
        assert caught.value.path == str(path) or str(path) in str(caught.value), (name, str(caught.value))
        assert "Traceback" not in str(caught.value)


# Activation memory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "input 3x100000x100000\n stem {\n conv 3x3, 4\n }",
        "input 3x8x8\n stem {\n conv 3x3, 4, stride=9223372036854775807\n }",
        "input 3x8x8\n stem {\n conv 1x1, 4, padding=4611686018427387904\n }",
    ],
)
def test_forward_passes_beyond_the_activation_bound_are_refused(body: str, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "big.res"
    spec.write_text(f"network big {{\n {body}\n head {{\n avgpool\n fc 2\n }}\n}}\n")
    outcome = run_bounded(harness.drive_cli, ["build", str(spec)], str(tmp_path))
    assert_within_budget(outcome, body)
    code, _, err = outcome.result
    assert code in (0, 1), err
    if code == 1:
        assert "activations" in err or "past what torch's kernels take" in err, err


# The regression corpus ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(harness.REGRESSIONS.glob("*.res")), ids=lambda p: p.name)
def test_regression_corpus_within_budget(path: Path) -> None:
    with harness.scratch() as directory:
        assert_within_budget(run_bounded(harness.pipeline, path.read_bytes(), directory), path.name)


# Coverage-guided fuzzing ---------------------------------------------------------------------------


@pytest.mark.slow
def test_atheris_bounded_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (the test extra) ships wheels for Linux only")
    seconds = int(os.environ.get("RESDSL_ATHERIS_SECONDS", "20"))
    result = subprocess.run(
        [sys.executable, str(harness.ROOT / "tests" / "fuzz_atheris.py"), f"-max_total_time={seconds}",
         f"-artifact_prefix={tmp_path}/", "-timeout=120", "-rss_limit_mb=0", str(tmp_path / "corpus")],
        capture_output=True, text=True, timeout=seconds + 120, cwd=harness.ROOT,
        env={**os.environ, "PYTHONPATH": str(harness.ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done" in result.stderr and "runs in" in result.stderr, result.stderr[-2000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))


# Several paths, through every consumer (issue 27) ---------------------------------------------------


@FUZZ
@given(st.randoms(use_true_random=False))
def test_several_paths_written_from_the_documentation_through_every_consumer(rng: random.Random) -> None:
    harness.warm_up_every_consumer()  # once per process: later calls find everything imported
    text = harness.PathsWriter(rng).spec()
    with harness.scratch() as directory:
        outcome = run_bounded(harness.every_consumer, text, directory)
    assert_within_budget(outcome, text)


@pytest.mark.parametrize(
    "body",
    [
        "let x\n    conv 3x3, w\n    bn\n    let y\n    add y, y",
        "let x\n    conv 3x3, w\n    bn\n    let y\n    add y, y, x, x",
        "for i in 0 .. 1024 {\n        for j in 0 .. 1024 {\n            for k in 0 .. 1024 {\n"
        "                identity\n            }\n        }\n    }",
        "for i in 0 .. 2 {\n        {i}: conv 1x1, w\n    }",
        "for i in 0 .. 2 {\n        inner(w, k=i)\n    }",
    ],
    ids=["self-join", "self-joins", "nested-loops", "label-only-interpolation", "outer-label-in-loop"],
)
def test_each_class_of_round_four_through_every_consumer(body: str) -> None:
    text = (
        "block inner(w, k) {\n    ..c{k}: conv 1x1, w\n}\n"
        f"block paths(w) {{\n    {body}\n}}\n"
        "network fuzz {\n    input 4x8x8\n    stage s: 1 x paths(4)\n"
        "    head {\n        avgpool\n        fc 3\n    }\n}\n"
    )
    harness.warm_up_every_consumer()
    with harness.scratch() as directory:
        outcome = run_bounded(harness.every_consumer, text, directory)
    assert_within_budget(outcome, text)
