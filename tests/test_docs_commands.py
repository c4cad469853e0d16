"""Every command that README.md and docs/*.md show, collected and checked.

Commands are read from the documents' code: indented code blocks, fenced shell
blocks (``$ `` prompts in console transcripts), and inline spans that start with a
program (`resdsl check specs/*.res`). Shell loops are unrolled, ``&&`` splits,
comments and ``\\`` continuations are handled as a shell would.

Each command is then either

- run, as written, in a scratch folder holding a copy of specs/ (``resdsl check``,
  ``list``, ``diff``, ``draw``, ``fmt``, ``build``), and must exit as the
  document says (0, or the error a console transcript shows, compared line by line); or
- deliberately not run, for the reason :data:`NOT_RUN` gives, and checked instead:
  its arguments parse with the real parser (resdsl's, or the bench script's own), the
  specs and recipes it names exist, the files it reads are in the repository, the
  extras it installs are in pyproject.toml.

Usage synopses (``resdsl build SPEC [--batch N]``) are not run; every option they
name must be an option of that command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from resdsl.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = ("resdsl", "python", "pip", "torchrun", "cd", "npm", "npx", "code")
_PROGRAM = re.compile(rf"^(\$ )?({'|'.join(PROGRAMS)}) ")
#: A synopsis's placeholders: SPEC, [--batch N], PATH..., A|B.
_PLACEHOLDER = re.compile(r"\[|\.\.\.|\b[A-Z][A-Z_]*\b|\|")

#: Commands not run, by pattern, with the reason; each must still match some command.
NOT_RUN: dict[str, str] = {
    r"^resdsl (train|eval|plot) ": "needs CIFAR-10 or ImageNet on disk, or a training run's output (runs/); "
    "parsed, and its spec and recipe checked (tests/test_train_*.py train on a synthetic set)",
    r"^resdsl check tests/fixtures/(errors|warnings)/": "docs/errors.md is generated from these fixtures, and "
    "tests/test_diagnostics.py checks each one's output against its golden file (a warning's, exit 0)",
    r"^torchrun ": "needs several processes or GPUs; the resdsl command in it is parsed",
    r"^(python -m )?resdsl lsp$": "serves an editor on stdin until it exits (tests/test_lsp.py drives it)",
    r"^pip install ": "changes the environment; the extras it names are checked against pyproject.toml",
    r"^python -m pytest": "the whole suite (minutes to tens of minutes on 2 cores); CI runs it",
    r"^python bench/": "a benchmark (a minute to 40 minutes); parsed with the script's own parser "
    "(tests/test_bench.py checks its parts)",
    r"^python docs/figures/make_figures\.py": "rewrites docs/figures/ (a minute of rendering)",
    r"^python tests/": "rewrites the golden files or runs the fuzzer; the script must exist",
    r"^python -m tests\.mutation\.run": "plants every curated mutant and runs its tests (minutes); "
    "tests/test_mutation_list.py checks that each still applies and names tests that exist",
    r"^python -m tests\.mutation\.generated": "plants generated mutants and runs the tests coverage chose for each "
    "(minutes to hours); tests/test_mutation_generated.py checks the generator and the map",
    r"^python grammar/build_tables\.py$": "rewrites the shipped parse tables (tests/test_parse_tables.py fails "
    "while they are stale)",
    r"^python specs/build_index\.py$": "rewrites the shipped `resdsl list` index (tests/test_daily.py fails "
    "while it is stale)",
    r"^python -m resdsl\.highlight$": "rewrites the TextMate grammar (tests/test_highlight.py fails while it is stale)",
    r"^python -c ": "the code is compiled, not run",
    r"^cd ": "changes the folder of the commands after it in its block; the folder must exist",
    r"^(npm|npx|code) ": "needs Node.js and VS Code; the folder it runs in must exist",
}

#: Files the documents name as examples of the reader's own: what the test puts there.
PLACEHOLDER_FILES: dict[str, str] = {
    "model.res": "network model {\n  input 3x32x32\n  stem { conv 3x3,16\n bn\n relu }\n"
    "  stage s1: 2 x basic(16)\n  head { avgpool\n fc 10 }\n}\n",
    # README's "Errors point at the line": line 9 asks option A to shrink channels.
    "bad.res": """# a network whose third stage shrinks channels
network bad {
    input 3x32x32
    shortcut A
    stem {
        conv 3x3, 64
    }
    stage conv2_x: 2 x basic(64)
    stage conv3_x: 4 x basic(32, stride=2)
    head {
        avgpool
        fc 10
    }
}
""",
}

#: Paths outside the repository: the reader's data, and what earlier commands make.
EXTERNAL = ("runs/", "/data/", "/shared/", "cifar-10-python.tar.gz", "fig", "stages.png", "x.svg", "crash-")


@dataclass
class Command:
    document: str
    line: int
    text: str
    cwd: str = "."  # relative to the repository root, after a `cd` in the same block
    transcript: list[str] = field(default_factory=list)  # what a console block shows it printing
    inline: bool = False

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}"


def _blocks(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(first line, kind, lines) of each code block: kind is the fence's language, or "indented"."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    previous_blank = True
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            language = line[3:].strip()
            end = index + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            yield index + 2, language, lines[index + 1 : end]
            index, previous_blank = end + 1, False
            continue
        if line.startswith("    ") and previous_blank:
            end = index
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            yield index + 1, "indented", [text[4:] for text in lines[index:end]]
            index, previous_blank = end, True
            continue
        previous_blank = not line.strip()
        index += 1


def _logical_lines(first: int, lines: list[str]) -> Iterator[tuple[int, str]]:
    """Lines with `\\` continuations joined and loops unrolled, each with its line number."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in enumerate(lines, first):
        if pending is not None:
            line = pending[1] + " " + line.strip()
            number = pending[0]
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1])
            continue
        joined.append((number, line))
    index = 0
    while index < len(joined):
        number, line = joined[index]
        text = line.strip()
        one_line = re.match(r"for (\w+) in ([^;]+); do (.+); done$", text)
        loop = re.match(r"for (\w+) in ([^;]+); do$", text)
        if one_line or loop:
            name, values = (one_line or loop).group(1), (one_line or loop).group(2).split()
            if one_line:
                body = [(number, one_line.group(3))]
            else:
                body = []
                index += 1
                while joined[index][1].strip() != "done":
                    body.append(joined[index])
                    index += 1
            for value in values:
                for body_number, body_line in body:
                    yield body_number, re.sub(rf"\$\{{?{name}\}}?", value, body_line)
        else:
            yield number, line
        index += 1


def collect() -> list[Command]:
    commands: list[Command] = []
    for path in DOCUMENTS:
        document = str(path.relative_to(ROOT))
        for first, kind, lines in _blocks(path):
            if kind not in ("indented", "", "sh", "bash", "shell", "console", "text"):
                continue
            cwd = "."
            current: Command | None = None
            for number, line in _logical_lines(first, lines):
                text = line.strip()
                prompted = text.startswith("$ ")
                if prompted:
                    text = text[2:]
                elif current is not None and text:
                    current.transcript.append(line)
                    continue
                if not _PROGRAM.match(text) or (kind == "" and not prompted and _PLACEHOLDER.search(text)):
                    current = None
                    if kind == "" and _PROGRAM.match(text):
                        commands.append(Command(document, number, text, cwd, inline=True))  # a synopsis
                    continue
                for part in _split_and(text):
                    command = Command(document, number, part, cwd)
                    commands.append(command)
                    # What follows a prompted command in a transcript is its output.
                    current = command if prompted else None
                    if part.startswith("cd "):
                        cwd = str(Path(cwd) / part.split()[1])
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for span in re.findall(r"`([^`]+)`", line):
                # A span with arguments is a command; `resdsl check` alone names one.
                if not span.startswith(("resdsl ", "python ", "pip ", "torchrun ")):
                    continue  # `npm install` inline is said of a folder the text names
                if len(span.split()) >= (3 if span.startswith(("resdsl", "pip")) else 2):
                    commands.append(Command(document, number, span, inline=True))
    return commands


def _split_and(text: str) -> list[str]:
    words = shlex.split(text, comments=True)
    parts, current = [], []
    for word in words:
        if word == "&&":
            parts.append(current)
            current = []
        else:
            current.append(word)
    parts.append(current)
    return [shlex.join(part) for part in parts if part]


COMMANDS = collect()
BLOCK_COMMANDS = [command for command in COMMANDS if not command.inline]


def _reason(command: Command) -> str | None:
    for pattern, reason in NOT_RUN.items():
        if re.search(pattern, command.text):
            return reason
    return None


def _resdsl_arguments(text: str) -> list[str] | None:
    """The arguments resdsl gets from `resdsl ...`, `python -m resdsl ...` or `torchrun ... -m resdsl ...`."""
    words = shlex.split(text, comments=True)
    if words[0] == "resdsl":
        return words[1:]
    for at in range(len(words) - 1):
        if words[at : at + 2] == ["-m", "resdsl"]:
            return words[at + 2 :]
    return None


def _is_synopsis(command: Command) -> bool:
    """A usage line, or an inline mention of a command with an option (`resdsl check --stages`)."""
    if _PLACEHOLDER.search(command.text):
        return True
    arguments = _resdsl_arguments(command.text)
    if command.inline and arguments is not None:
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # argparse's usage message, at collection
                build_parser().parse_args(arguments)
        except SystemExit:
            return True
    return False


# Checks that need no run ----------------------------------------------------------------


def _parse_resdsl(argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exit:  # argparse has printed why
        raise AssertionError(f"resdsl {shlex.join(argv)}: the parser refuses it (exit {exit.code})") from None


def _check_spec(spec: str) -> None:
    from resdsl.shipped import shipped_specs

    if spec in shipped_specs() or any(spec == path for path in PLACEHOLDER_FILES):
        return
    matches = list(ROOT.glob(spec)) if "*" in spec else [ROOT / spec]
    # A fixture may be a directory or a link to a device: it must be there, not be a file.
    assert matches and all(match.exists() or match.is_symlink() for match in matches), f"no spec {spec!r}"


def _check_resdsl(argv: list[str]) -> None:
    args = _parse_resdsl(argv)
    specs = [*getattr(args, "specs", []), *(getattr(args, name, None) for name in ("spec", "a", "b"))]
    for spec in filter(None, specs):
        if isinstance(spec, str) and not spec.startswith(EXTERNAL):
            _check_spec(spec)
    recipe = getattr(args, "recipe", None)
    if recipe is not None:
        from resdsl.train.recipes import shipped_recipes

        assert recipe in shipped_recipes() or recipe.endswith((".yaml", ".yml", ".json")), f"no recipe {recipe!r}"


class _Parsed(Exception):
    pass


def _check_script(script: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse `argv` with the script's own argparse parser, and stop there."""
    path = ROOT / script
    assert path.is_file(), f"no {script}"
    if "ArgumentParser" not in path.read_text(encoding="utf-8"):
        assert not argv, f"{script} takes no arguments"
        return
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    try:
        runpy.run_path(str(path), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as exit:
        raise AssertionError(f"{script} {shlex.join(argv)}: its parser refuses it (exit {exit.code})") from None
    raise AssertionError(f"{script} ran without parsing its arguments")


def _extras() -> set[str]:
    # The section's keys (tomllib is Python 3.11's; the project supports 3.10).
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([\w-]+) = \[", section, re.M))


def _check_without_running(command: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = shlex.split(command.text, comments=True)
    program, rest = argv[0], argv[1:]
    if program == "resdsl":
        _check_resdsl(rest)
    elif program == "torchrun":
        module = rest.index("-m")
        assert rest[module + 1] == "resdsl", command
        _check_resdsl(rest[module + 2 :])
    elif program == "pip":
        assert rest[0] == "install", command
        for target in rest[1:]:
            extras = re.search(r"\[([\w,]+)\]", target)
            if extras:
                assert set(extras.group(1).split(",")) <= _extras(), f"{command}: no such extra"
    elif program == "python" and rest[:1] == ["-m"]:
        import importlib.util

        assert importlib.util.find_spec(rest[1]) is not None, f"{command}: no module {rest[1]}"
    elif program == "python" and rest[:1] == ["-c"]:
        compile(rest[1], command.document, "exec")
    elif program == "python":
        _check_script(rest[0], rest[1:], monkeypatch)
    elif program in ("npm", "npx", "code"):
        assert (ROOT / command.cwd).is_dir(), f"{command}: no folder {command.cwd}"
        if program == "npm":
            assert (ROOT / command.cwd / "package.json").is_file()
    elif program == "cd":
        assert (ROOT / rest[0]).is_dir(), f"{command}: no folder {rest[0]}"
    else:  # pragma: no cover - PROGRAMS lists what is handled
        raise AssertionError(f"{command}: no check for {program}")


def _check_synopsis(command: Command) -> None:
    """A usage line: the command exists and takes every option it names."""
    words = command.text.split()
    if words[0] != "resdsl" or len(words) < 2:
        return
    parser = build_parser()
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    if words[1].startswith("-") or words[1] not in subparsers.choices:
        assert words[1] in ("--version", "--help", "-h"), f"{command}: no command {words[1]!r}"
        return
    options = set(subparsers.choices[words[1]]._option_string_actions)
    for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", command.text):
        assert option in options, f"{command}: `resdsl {words[1]}` has no option {option}"


# The tests --------------------------------------------------------------------------------


def test_the_documents_show_commands() -> None:
    documents = {command.document for command in BLOCK_COMMANDS}
    assert {"README.md", "docs/drawing.md", "docs/editors.md", "docs/training.md"} <= documents
    assert any(shlex.split(command.text) == ["resdsl", "check", "specs/*.res"] for command in BLOCK_COMMANDS)
    assert any(command.text.startswith("resdsl train cifar110 ") for command in BLOCK_COMMANDS)  # unrolled loop


def test_every_reason_not_to_run_still_applies() -> None:
    for pattern in NOT_RUN:
        assert any(re.search(pattern, command.text) for command in COMMANDS), f"no command matches {pattern!r}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if _reason(c) or _is_synopsis(c)], ids=str)
def test_command_not_run_is_checked(command: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    if _is_synopsis(command):
        _check_synopsis(command)
    else:
        _check_without_running(command, monkeypatch)


def _sandbox(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    # docs/drawing.md draws its figures' test specs from the command line.
    shutil.copytree(ROOT / "tests" / "fixtures" / "draw", tmp_path / "tests" / "fixtures" / "draw")
    for name, text in PLACEHOLDER_FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


RUN = [c for c in COMMANDS if not _reason(c) and not _is_synopsis(c)]


@pytest.mark.parametrize("command", RUN, ids=str)
def test_command_runs_as_written(command: Command, tmp_path: Path) -> None:
    argv = shlex.split(command.text, comments=True)
    assert argv[0] == "resdsl" and argv[1] in ("check", "list", "diff", "draw", "fmt", "build", "import"), (
        f"{command}: run it here, or add it to NOT_RUN with the reason"
    )
    if argv[1] == "draw" and any(arg.endswith((".svg", ".png", ".pdf")) for arg in argv) and not shutil.which("dot"):
        pytest.fail("Graphviz's dot is not installed (apt-get install graphviz), and the docs' figures need it")
    stdin = None
    if "<" in argv:
        at = argv.index("<")
        stdin = argv[at + 1]
        argv = argv[:at] + argv[at + 2 :]
    cwd = _sandbox(tmp_path)
    # The shell expands a glob before resdsl sees it.
    argv = [expanded for word in argv for expanded in (sorted(map(str, cwd.glob(word))) if "*" in word else [word])]
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    with open(cwd / stdin if stdin else "/dev/null", "rb") as feed:
        result = subprocess.run(
            [sys.executable, "-m", "resdsl", *argv[1:]],
            cwd=cwd,
            env=env,
            stdin=feed,
            capture_output=True,
            text=True,
            timeout=300,
        )
    if command.transcript:
        shown = [line.rstrip() for line in command.transcript]
        printed = (result.stdout + result.stderr).rstrip("\n").splitlines()
        assert printed == shown, f"{command}: the document shows\n" + "\n".join(shown)
        assert result.returncode == 1, f"{command}: a transcript shows an error, and the command exits 1"
        return
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stderr[-2000:]}"
    for word in argv[2:]:
        if argv[argv.index(word) - 1] in ("-o", "--output"):
            assert (cwd / word).is_file() and (cwd / word).stat().st_size > 0, f"{command}: wrote no {word}"


# The documents' specs ---------------------------------------------------------------------


def _spec_examples() -> Iterator[tuple[str, str]]:
    """(where, text) of each resdsl code block that is a whole file: fenced, starting with a
    definition, without elisions ("...") and not an error's example (docs/errors.md)."""
    for path in DOCUMENTS:
        if path.name == "errors.md":
            continue
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"```(?:resdsl)?\n(.*?)```", text, re.S):
            body = match.group(1)
            if re.match(r"(#.*\n)*\s*(block|network|use) ", body) and "..." not in body:
                yield f"{path.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 2}", body


SPEC_EXAMPLES = list(_spec_examples())


def test_the_documents_show_specs() -> None:
    assert any("eca" in text for _, text in SPEC_EXAMPLES)
    assert len(SPEC_EXAMPLES) >= 8


@pytest.mark.parametrize(("where", "text"), SPEC_EXAMPLES, ids=[where for where, _ in SPEC_EXAMPLES])
def test_spec_example_compiles_into_every_table_and_figure(where: str, text: str) -> None:
    """Each network of the example, and each block in a stage of two (its first
    parameter 16, the rest their defaults), through the table at every detail and DOT."""
    import resdsl
    from resdsl.backends.draw import to_dot
    from resdsl.frontend import load_text

    namespace = load_text(text, where)
    networks = [resdsl.compile_text(text, path="example.res", network=name) for name in namespace.own_networks]
    used = {
        node.scope.block for network in networks for node in network.nodes() if node.scope and node.scope.block
    }
    for name, (definition, _) in namespace.blocks.items():
        if definition.pos.source.path != where or name in used:
            continue  # the prelude's, or one the example's own networks use (a token block needs its tokens)
        required = [param for param in definition.params if param.default is None]
        assert len(required) <= 2, f"{where}: block {name} needs more than a width and a head count"
        arguments = ", ".join(["16", "2"][: len(required)])
        # A block of feature maps after a convolution; a block of tokens after `tokens` too.
        errors = []
        for stem in ("conv 3x3, 16", "conv 3x3, 16\n        tokens"):
            probe = (
                f"{text}\nnetwork probe_{name} {{\n    input 3x16x16\n    stem {{\n        {stem}\n    }}\n"
                f"    stage s: 2 x {name}({arguments})\n}}\n"
            )
            try:
                networks.append(resdsl.compile_text(probe, path="example.res", network=f"probe_{name}"))
                break
            except resdsl.SpecError as error:
                errors.append(error)
        else:
            raise errors[0]
    assert networks, f"{where} defines nothing"
    for network in networks:
        for detail in ("layer", "block", "stage"):
            assert str(resdsl.Table.of(network, detail=detail))
            assert "digraph" in to_dot([network], detail=detail).source


def test_the_license_is_the_one_pyproject_names() -> None:
    declared = re.search(r'^license = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert declared is not None and declared.group(1) == "MIT"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    assert "[LICENSE](LICENSE)" in (ROOT / "README.md").read_text(encoding="utf-8")
