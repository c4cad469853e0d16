"""The ``resdsl`` command line: ``check``, ``build``, ``draw``, ``list``, ``diff`` and ``import``.

Exit codes: 0 success, 1 the spec is wrong (diagnostics on stderr), 2 usage
errors. Results go to stdout, errors to stderr. ``check``, ``draw``, ``list`` and
``diff`` never import torch; ``build`` imports it when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence

from resdsl import diff, fmt, list_cli, lsp
from resdsl.backends import draw_cli, torch_cli
from resdsl.cli_support import (
    EXIT_OK,
    EXIT_SPEC,
    EXIT_USAGE,
    OutputError,
    UsageError,
    add_spec_options,
    add_werror_option,
    compile_from_args,
)
from resdsl.errors import CompilerBug, SpecError
from resdsl.importer import cli as import_cli
from resdsl.ir import Network
from resdsl.layers import shape_text
from resdsl.train import cli as train_cli


def _shape(shape: Sequence[int]) -> str:
    # A token sequence says so: "197 x 192 tokens" (resdsl.layers.shape_text).
    return shape_text(shape)


def network_record(spec: str, network: Network) -> dict:
    return {
        "spec": spec,
        "network": network.name,
        "params": network.num_params,
        "macs": network.macs,
        "input_shape": list(network.input_shape),
        "output_shape": list(network.output_shape),
        "layers": network.layer_count(),
        "shortcut": network.settings.shortcut,
        "stages": [
            {
                "name": stage.name,
                "blocks": stage.blocks,
                "block": stage.block,
                "output_shape": list(stage.output_shape),
                "params": stage.params,
                "macs": stage.macs,
            }
            for stage in network.stages
        ],
    }


def stage_table(network: Network) -> str:
    """The per-stage table (the paper's Table 1), as resdsl.table prints it."""
    from resdsl.table import Table

    return str(Table.of(network, detail="stage"))


def cmd_check(args: argparse.Namespace) -> int:
    status = EXIT_OK
    records = []
    for spec in args.specs:
        try:
            network = compile_from_args(spec, args)
        except SpecError as error:
            print(error, file=sys.stderr)
            status = EXIT_SPEC
            continue
        if args.json:
            records.append(network_record(spec, network))
            continue
        print(
            f"{spec}: {network.name}: {network.layer_count()} layers, {network.num_params:,} params, "
            f"{network.macs / 1e9:.3f} GMACs, {_shape(network.input_shape)} -> {_shape(network.output_shape)}"
        )
        if args.stages:
            print(stage_table(network))
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        print()
    return status


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from resdsl import __version__

    parser = argparse.ArgumentParser(
        prog="resdsl",
        description="Describe, check, draw and build residual networks from .res specs.",
    )
    parser.add_argument("--version", action="version", version=f"resdsl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate specs and print their parameters, MACs and shapes",
        description="Compile each spec (without building it) and print one line per network: "
        "layers, parameters, multiply-accumulates and shapes. Exit 1 if any spec is wrong.",
    )
    check.add_argument("specs", nargs="+", metavar="SPEC", help="a .res file, or a shipped spec's name (resnet50)")
    add_spec_options(check)
    add_werror_option(check)
    check.add_argument(
        "--stages", action="store_true", help="also print the per-stage table (like the paper's Table 1)"
    )
    check.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    check.set_defaults(run=cmd_check)

    for register in SUBCOMMANDS:
        register(commands)
    return parser


#: Every subcommand besides ``check``, in the order ``resdsl --help`` lists them. Each
#: module's ``register`` adds its parser; none imports torch until its command runs.
SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    torch_cli.register,
    draw_cli.register,
    train_cli.register_train,
    train_cli.register_eval,
    train_cli.register_plot,
    fmt.register,
    lsp.register,
    list_cli.register,
    diff.register,
    import_cli.register,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        return int(exit.code or 0)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"resdsl {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OutputError as error:
        print(f"resdsl {args.command}: error: {error}", file=sys.stderr)
        return EXIT_SPEC
    except SpecError as error:
        print(error, file=sys.stderr)
        return EXIT_SPEC
    except CompilerBug as error:
        print(f"resdsl: {error}\n(this is a bug in resdsl, not in your spec: please report it)", file=sys.stderr)
        return 3


def entry_point() -> None:
    """The console script: quiet on a closed pipe and on Ctrl-C."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # `resdsl check ... | head -1`: the reader went away; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = EXIT_OK
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    sys.exit(status)
