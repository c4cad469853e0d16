"""``resdsl draw``: figures in the paper's style. Never imports torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resdsl.cli_support import (
    EXIT_OK,
    EXIT_SPEC,
    EXIT_USAGE,
    UsageError,
    add_spec_options,
    add_werror_option,
    check_output,
    compile_from_args,
    prepare_output,
    write_failed,
)
from resdsl.errors import SpecError
from resdsl.files import write_file


def register(commands: argparse._SubParsersAction) -> None:
    draw = commands.add_parser(
        "draw",
        help="draw networks as Graphviz figures in the style of the paper's Fig. 3",
        description="Draw one or more networks side by side: a column of layer boxes with the shortcuts as "
        "arcs, dashed where they change dimensions. The output format follows the extension: .svg, .png, "
        ".pdf (rendered by Graphviz's dot), .dot (the source) or .html (one self-contained interactive page: "
        "pan, zoom, figures on hover, blocks and stages that collapse; no Graphviz needed).",
    )
    draw.add_argument("specs", nargs="+", metavar="SPEC", help="a .res file, or a shipped spec's name")
    draw.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="where to write: .svg, .png, .pdf, .dot or .html"
    )
    draw.add_argument(
        "--detail",
        choices=("layer", "block", "stage"),
        default="layer",
        help="one box per layer (Fig. 3, the default), per block, or per stage (in .html: what starts collapsed)",
    )
    draw.add_argument(
        "--direction",
        choices=("TB", "LR"),
        default="TB",
        help="top to bottom (default) or left to right (Graphviz formats; the .html page is top to bottom)",
    )
    draw.add_argument("--shapes", action="store_true", help="add output shapes and parameter counts to the boxes")
    draw.add_argument(
        "--title",
        action="extend",
        nargs="+",
        metavar="TEXT",
        help="the columns' titles, one per spec, in order (default: the networks' names): "
        "--title '34-layer plain' '34-layer residual'",
    )
    draw.add_argument(
        "--all-layers",
        action="store_true",
        help="at layer detail, also draw BN, ReLU, dropout and flatten (Fig. 3 leaves them out)",
    )
    add_spec_options(draw, several_specs=True)
    add_werror_option(draw)
    draw.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from resdsl.backends.draw import FORMATS, DrawError, render, to_dot

    suffix = Path(args.output).suffix.lower()
    if suffix not in (*FORMATS, ".html"):
        print(
            f"resdsl draw: error: cannot tell the format of '{args.output}': use one of {', '.join(FORMATS)}, .html",
            file=sys.stderr,
        )
        return EXIT_USAGE
    names = args.network or [None]
    if len(names) not in (1, len(args.specs)):
        raise UsageError(
            f"{len(names)} --network names for {len(args.specs)} specs: give one per spec, in order, or one for all"
        )
    check_output(args.output)
    networks = []
    failed = False
    for spec, name in zip(args.specs, names * len(args.specs) if len(names) == 1 else names):
        try:
            networks.append(compile_from_args(spec, argparse.Namespace(**{**vars(args), "network": name})))
        except SpecError as error:
            print(error, file=sys.stderr)
            failed = True
    if failed:
        return EXIT_SPEC
    try:
        output = prepare_output(args.output)
        if suffix == ".html":
            from resdsl.backends.draw_html import to_html

            page = to_html(networks, detail=args.detail, all_layers=args.all_layers, titles=args.title)
            write_file(output, page)
        else:
            dot = to_dot(
                networks,
                detail=args.detail,
                direction=args.direction,
                shapes=args.shapes,
                all_layers=args.all_layers,
                titles=args.title,
            )
            render(dot, output)
    except OSError as error:
        raise write_failed(args.output, error) from None
    except DrawError as error:
        print(f"resdsl draw: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(args.output)
    return EXIT_OK
