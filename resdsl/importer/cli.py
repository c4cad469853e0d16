"""``resdsl import SOURCE``: print (or write) the spec of a PyTorch network and check it.

Registered by resdsl/cli.py; torch, timm and the model are imported only when the
command runs."""

from __future__ import annotations

import argparse
import sys

from resdsl.cli_support import EXIT_OK, EXIT_SPEC, OutputError, check_output, prepare_output, write_failed
from resdsl.files import WriteError, write_file


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import",
        help="turn a PyTorch network (timm, torchvision or your own) into a .res spec",
        description="Trace a network with torch.fx and write it as a .res spec: blocks, stages and shortcuts "
        "recovered from its modules, labels that give its state_dict keys. The spec is then built, loads "
        "the network's weights with strict=True and must give its float64 outputs in eval and train mode "
        "(exit 1 otherwise).",
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="timm/NAME, torchvision/NAME, or package.module:callable (a function returning an nn.Module; "
        "its module is imported, the one place resdsl runs your code)",
    )
    parser.add_argument("-o", "--output", metavar="OUT.res", help="write the spec here instead of printing it")
    parser.add_argument(
        "--input", metavar="CxHxW", help="the input shape to trace with (default: the model's, else 3x224x224)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip building and comparing the spec")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from resdsl.importer import import_with_model, verify

    if args.output:
        check_output(args.output)
    text, model, shape = import_with_model(args.source, input=args.input)
    report = sys.stderr
    if args.output:
        target = prepare_output(args.output)
        try:
            write_file(target, text)
        except (OSError, WriteError) as error:
            raise write_failed(args.output, error) from None
        report = sys.stdout
        print(f"wrote {args.output}: {len(text.splitlines())} lines", file=report)
    else:
        sys.stdout.write(text)
    if args.no_verify:
        return EXIT_OK
    check = verify(text, model, shape)
    print(check, file=report)
    return EXIT_OK if check.ok else EXIT_SPEC


__all__ = ["OutputError", "register", "run"]
