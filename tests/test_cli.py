"""The command line as users meet it: exit codes, streams, pipes, signals and files.

Exit codes: 0 success, 1 a wrong spec, 2 a wrong command line. Results go to
stdout, diagnostics to stderr. Most tests call ``resdsl.cli.main`` in process;
the ones about pipes, signals and imports need a real process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resdsl import cli

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
GOOD = "specs/resnet18.res"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def python_m_resdsl(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resdsl", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


# Exit codes and streams ------------------------------------------------------------


def test_success_is_0_with_results_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", GOOD], capsys)
    assert code == 0
    assert out.startswith("specs/resnet18.res: resnet18: 18 layers, 11,689,512 params")
    assert err == ""


def test_wrong_spec_is_1_with_diagnostics_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "tests/fixtures/errors/unknown_block.res"], capsys)
    assert code == 1
    assert out == ""
    assert err.startswith("tests/fixtures/errors/unknown_block.res:3:24: unknown block 'bottlenek'")


def test_good_and_bad_specs_together(capsys: pytest.CaptureFixture[str]) -> None:
    # Every spec is checked; one wrong spec makes the whole run fail.
    code, out, err = run(["check", "tests/fixtures/errors/zero_width.res", GOOD], capsys)
    assert code == 1
    assert "resnet18" in out and "zero_width" not in out
    assert "zero_width.res:3:5:" in err and "resnet18" not in err


def test_json_output_is_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, err = run(["check", "--json", GOOD], capsys)
    assert code == 0 and err == ""
    assert json.loads(out)[0]["params"] == 11_689_512


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--bogus", GOOD],
        ["check", "--param", "classes", GOOD],
        ["check", "--param", "classes=ten", GOOD],
        ["check", "--param", "=10", GOOD],
        ["check", "--max-layers", "many", GOOD],
        ["check"],
        ["frobnicate"],
        [],
    ],
    ids=["unknown-option", "param-without-value", "param-not-a-number", "param-without-name", "bad-int", "no-spec",
         "unknown-command", "no-command"],
)  # fmt: skip
def test_usage_errors_are_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(args, capsys)
    assert code == 2
    assert out == ""
    assert "error" in err and "Traceback" not in err


def test_a_good_param_is_applied(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--param", "classes=10", GOOD], capsys)
    assert code == 0
    assert out.rstrip().endswith("-> 10")


def test_unknown_param_is_a_spec_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Well-formed on the command line, but the network has no such parameter: the spec's side.
    code, _, err = run(["check", "--param", "clases=10", GOOD], capsys)
    assert code == 1
    assert "did you mean 'classes'?" in err


# Files -----------------------------------------------------------------------------


def test_missing_path(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "nowhere/missing.res"], capsys)
    assert (code, out) == (1, "")
    assert err.startswith("nowhere/missing.res: no such file")


def test_path_too_long_for_the_os(capsys: pytest.CaptureFixture[str]) -> None:
    # os.stat raises ENAMETOOLONG rather than "not found": once a traceback.
    name = "a" * 5000
    code, out, err = run(["check", name], capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"{name}: cannot read: ") and "Traceback" not in err


def test_max_layers_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    # A bound of 0 is the command line's mistake, not the spec's.
    code, out, err = run(["check", "--max-layers", "0", GOOD], capsys)
    assert (code, out) == (2, "")
    assert "--max-layers: must be at least 1" in err


def test_max_layers_is_applied(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", "--max-layers", "10", GOOD], capsys)
    assert code == 1
    assert "more than 10 layers" in err


def test_unknown_shipped_name_suggests_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", "resnt50"], capsys)
    assert code == 1
    assert "did you mean 'resnet50'?" in err


def test_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "dir.res").mkdir()
    code, _, err = run(["check", str(tmp_path / "dir.res")], capsys)
    assert code == 1
    assert "is a directory, not a .res file" in err


def test_not_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.res"
    path.write_bytes("network n {\n    input 3x32x32  # façade\n}\n".encode("latin-1"))
    code, _, err = run(["check", str(path)], capsys)
    assert code == 1
    assert ":2:" in err and "not UTF-8 text (byte 0xe7" in err


def test_empty_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "empty.res"
    path.write_text("")
    code, _, err = run(["check", str(path)], capsys)
    assert code == 1
    assert "this file defines no network" in err


def test_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "secret.res"
    path.write_text("network secret {\n    input 3x32x32\n}\n")
    path.chmod(0)
    try:
        readable = os.access(path, os.R_OK)
        code, out, err = run(["check", str(path)], capsys)
    finally:
        path.chmod(0o644)
    if readable:
        # Running as root (as CI does), mode 000 does not stop reading: then the check
        # must simply succeed rather than invent a permission error.
        print("running as root: mode 000 is readable, so the spec must compile", file=sys.stderr)
        assert (code, err) == (0, "")
        assert "secret" in out
    else:
        assert (code, out) == (1, "")
        assert "permission denied" in err


def test_use_of_a_non_res_file(capsys: pytest.CaptureFixture[str], write_spec) -> None:
    write_spec("notes.txt", "network n { input 3x32x32 }")
    path = write_spec("main.res", 'use "notes.txt"\nnetwork main {\n    input 3x32x32\n}\n')
    code, _, err = run(["check", str(path)], capsys)
    assert code == 1
    assert "'use' imports .res files; 'notes.txt' is not one" in err
    assert "main.res:1:1:" in err


def test_missing_use_target(capsys: pytest.CaptureFixture[str], write_spec) -> None:
    path = write_spec("main.res", 'use "lib/absent.res"\nnetwork main {\n    input 3x32x32\n}\n')
    code, _, err = run(["check", str(path)], capsys)
    assert code == 1
    assert "main.res:1:1: no such file:" in err and "absent.res" in err


def test_use_is_relative_to_the_using_file(capsys: pytest.CaptureFixture[str], write_spec) -> None:
    write_spec("lib/blocks.res", "block tiny(width) {\n    conv 3x3, width\n    bn\n    add shortcut\n}\n")
    path = write_spec(
        "nets/main.res", 'use "../lib/blocks.res"\nnetwork main {\n    input 3x8x8\n    stage s: 2 x tiny(3)\n}\n'
    )
    code, out, err = run(["check", str(path)], capsys)
    assert (code, err) == (0, "")
    assert "3x8x8 -> 3x8x8" in out


# Help --------------------------------------------------------------------------------


def _subcommands() -> list[str]:
    import argparse

    parser = cli.build_parser()
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_python_m_resdsl_help() -> None:
    result = python_m_resdsl("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: resdsl")
    assert "check" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("command", _subcommands())
def test_help_on_every_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([command, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: resdsl {command}")
    assert err == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("resdsl ")


# Pipes, signals and imports ---------------------------------------------------------


def test_closed_pipe_ends_quietly() -> None:
    # Enough output to overflow the pipe after `head` has gone: later writes get EPIPE.
    specs = " ".join(["specs/cifar20.res"] * 150)
    result = subprocess.run(
        f"{sys.executable} -m resdsl check --stages {specs} | head -1",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        executable="/bin/bash",
    )
    assert result.stdout.startswith("specs/cifar20.res: cifar20:")
    assert result.stdout.count("\n") == 1
    assert result.stderr == ""


def test_closed_pipe_exit_status() -> None:
    # PIPESTATUS shows resdsl's own status behind `head`: a closed pipe is not a failure.
    specs = " ".join(["specs/cifar20.res"] * 150)
    result = subprocess.run(
        f"{sys.executable} -m resdsl check --stages {specs} | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        executable="/bin/bash",
    )
    assert result.stdout.strip() == "0"
    assert "BrokenPipeError" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="needs POSIX signals")
def test_ctrl_c_ends_quietly() -> None:
    specs = ["specs/cifar20.res"] * 2000
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "resdsl", "check", *specs],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until it is surely past start-up and in the middle of the work.
        first = process.stdout.readline()
        assert first.startswith("specs/cifar20.res")
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_check_does_not_import_torch() -> None:
    # `resdsl check` must start fast: it may not import torch, even with backends installed.
    code = (
        "import glob, runpy, sys\n"
        "sys.argv = ['resdsl', 'check', *sorted(glob.glob('specs/*.res'))]\n"
        "try:\n"
        "    runpy.run_module('resdsl', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    status = exit.code\n"
        "print('torch' in sys.modules, status, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.stderr.strip().splitlines()[-1] == "False 0", result.stderr
    assert "specs/resnet50.res: resnet50: 50 layers, 25,557,032 params" in result.stdout


def test_import_check_can_see_torch() -> None:
    # The check above is only meaningful if the same method does see torch when it is imported.
    pytest.importorskip("torch", reason="torch is not installed: the no-torch check above is vacuous here")
    code = "import sys, torch\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "True"
