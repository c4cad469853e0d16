"""What every ``resdsl`` subcommand shares: exit codes, usage errors, the spec options.

Subcommand modules import this, never :mod:`resdsl.cli`, which imports them: the
command table in ``resdsl.cli`` is the one place that lists them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from resdsl.files import NAME_MAX, WriteError, check_target, make_folder
from resdsl.frontend import parse_param
from resdsl.ir import Limits, Network

EXIT_OK, EXIT_SPEC, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit 2)."""


class OutputError(Exception):
    """An output file that cannot be written (exit 1, one line on stderr)."""


def check_output(path: str) -> Path:
    """Refuse, before any work, an output that can never be written: a directory, a NUL in the name."""
    if "\x00" in path:
        raise OutputError(f"cannot write '{path!r}': a path cannot contain a NUL character")
    target = Path(path)
    try:
        is_dir = target.is_dir()
    except OSError as error:  # a name too long for the OS
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    if is_dir:
        raise OutputError(f"cannot write {path}: it is a directory")
    try:
        check_target(target)
    except WriteError as error:
        raise OutputError(f"cannot write {path}: {error.message}") from None
    return target


def check_path_option(option: str, value: str | Path | None) -> None:
    """Refuse, before any work, a path no system call can take: a NUL, a name over NAME_MAX bytes."""
    if value is None:
        return
    text = str(value)
    if "\x00" in text:
        raise UsageError(f"{option} {text!r}: a path cannot contain a NUL character")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UsageError(f"{option}: the name {part[:40]}... is longer than {NAME_MAX} bytes (the system's limit)")


def prepare_output(path: str) -> Path:
    """The output path, its missing parent folders created (as users expect of -o)."""
    target = check_output(path)
    try:
        make_folder(target.parent)
    except WriteError as error:
        raise OutputError(f"cannot create the folder of {path}: {error.message}") from None
    return target


def write_failed(path: str | Path, error: BaseException) -> OutputError:
    """One line saying why writing failed: the OS's reason, or the first line of the writer's."""
    lines = str(error).splitlines()
    reason = getattr(error, "strerror", None) or (lines[0][:200] if lines else type(error).__name__)
    return OutputError(f"cannot write {path}: {reason}")


def add_spec_options(parser: argparse.ArgumentParser, *, several_specs: bool = False) -> None:
    """The options every subcommand that compiles a spec shares. With ``several_specs``
    (``draw``), ``--network`` takes one name per spec, or one for all."""
    if several_specs:
        parser.add_argument(
            "--network",
            metavar="NAME",
            action="extend",
            nargs="+",
            help="which network of each file, one per spec in order (--network se_net preact_net), or one for "
            "every spec (default: the one named like the file)",
        )
    else:
        parser.add_argument(
            "--network", metavar="NAME", help="which network of the file (default: the one named like the file)"
        )
    parser.add_argument(
        "--param",
        "-p",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set a network parameter, e.g. --param classes=10 (repeatable)",
    )
    parser.add_argument(
        "--input",
        type=_input_shape,
        metavar="CxHxW",
        help="replace the spec's input shape, e.g. --input 3x64x64",
    )
    parser.add_argument(
        "--max-layers",
        type=_positive_int,
        metavar="N",
        default=Limits.max_layers,
        help=f"refuse specs that expand to more layers than this (default {Limits.max_layers:,})",
    )


def _positive_int(text: str) -> int:
    # A bound of 0 or less would blame every spec (exit 1) for a wrong command line (exit 2).
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _input_shape(text: str) -> tuple[int, ...]:
    from resdsl.compiler import parse_input

    try:
        return parse_input(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def spec_params(args: argparse.Namespace) -> dict:
    params = {}
    for text in args.param:
        try:
            name, value = parse_param(text)
        except ValueError as error:
            raise UsageError(f"--param: {error}") from None
        params[name] = value
    return params


def add_werror_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--werror", action="store_true", help="treat warnings as errors (exit 1)")


def compile_from_args(spec: str, args: argparse.Namespace) -> Network:
    """The network, its warnings printed on stderr (``warning:``); with ``--werror`` they are
    raised as errors instead."""
    import sys

    from resdsl.compiler import compile
    from resdsl.errors import SpecError

    limits = replace(Limits(), max_layers=args.max_layers)
    network = compile(spec, network=args.network, limits=limits, input=args.input, **spec_params(args))
    if network.warnings and getattr(args, "werror", False):
        raise SpecError.several([warning.as_error() for warning in network.warnings])
    for warning in network.warnings:
        print(warning, file=sys.stderr)
    return network
