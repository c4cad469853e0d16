"""``resdsl build``: compile, build, run one forward pass, print the table, save.

Imports torch only when the command runs, so `resdsl check` and `resdsl draw` stay light.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resdsl.cli_support import (
    EXIT_OK,
    UsageError,
    add_spec_options,
    check_output,
    compile_from_args,
    prepare_output,
    write_failed,
)
from resdsl.ir import check_forward_pass

SAVE_FORMATS = {
    ".pt": "a state dict (torch.save)",
    ".safetensors": "a state dict (safetensors)",
    ".pt2": "a torch.export program",
    ".onnx": "an ONNX model",
    ".py": "a standalone PyTorch source file (imports only torch)",
}
_EXTRAS = {".safetensors": "safetensors", ".onnx": "onnx onnxscript"}


def register(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser(
        "build",
        help="build the torch module, run one forward pass, print its table; -o saves it",
        description="Compile a spec, build it as a torch.nn.Module, run one forward pass on its input shape and "
        "print a row per block (per layer with --detail layer): module, output shape, params, MACs.",
    )
    build.add_argument("spec", metavar="SPEC", help="a .res file, or a shipped spec's name")
    add_spec_options(build)
    build.add_argument(
        "--detail",
        choices=("block", "layer", "stage"),
        default="block",
        help="a row per block (default), per layer, or per stage",
    )
    build.add_argument("--json", action="store_true", help="print JSON instead of a table")
    build.add_argument("--weights", metavar="PATH", help="load a state dict (.pt, weights only, or .safetensors)")
    build.add_argument(
        "--batch",
        type=_positive_int,
        default=1,
        metavar="N",
        help="the forward pass's batch size, and the table's memory estimate's (default 1); "
        "exports take any batch size whatever N is",
    )
    build.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="save the model: " + ", ".join(f"{k} {v}" for k, v in SAVE_FORMATS.items()),
    )
    build.set_defaults(run=run)


def _extras_present(suffix: str) -> bool:
    try:
        if suffix == ".safetensors":
            import safetensors  # noqa: F401
        else:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    suffix = Path(args.output).suffix.lower() if args.output else None
    if suffix is not None and suffix not in SAVE_FORMATS:
        raise UsageError(f"cannot tell the format of '{args.output}': use one of {', '.join(SAVE_FORMATS)}")
    if suffix in _EXTRAS and not _extras_present(suffix):
        raise UsageError(f"saving {suffix} needs an extra package: pip install {_EXTRAS[suffix]}")
    if args.output:
        check_output(args.output)  # a directory given as OUT fails now, not after the forward pass
    network = compile_from_args(args.spec, args)
    check_forward_pass(network)  # before torch allocates the example input

    import torch

    from resdsl.backends.torch import load
    from resdsl.table import Table

    model = load(network, weights=args.weights).eval()
    table = Table.of(network, detail=args.detail, batch=args.batch, model=model)
    observed: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[row.module].register_forward_hook(
            lambda _m, _i, out, name=row.module: observed.__setitem__(name, tuple(out.shape[1:]))
        )
        for row in table.rows
        if row.module in modules
    ]
    example = torch.randn(args.batch, *network.input_shape)
    with torch.no_grad():
        output = model(example)
    for hook in hooks:
        hook.remove()
    if tuple(output.shape) != (args.batch, *network.output_shape):  # pragma: no cover - a backend bug
        print(
            f"resdsl build: internal error: output {list(output.shape)} != IR {list(network.output_shape)}",
            file=sys.stderr,
        )
        return 3
    for row in table.rows:
        if row.module in observed and observed[row.module] != row.output_shape:  # pragma: no cover
            print(f"resdsl build: internal error: {row.module} gave {observed[row.module]}", file=sys.stderr)
            return 3
    if table.params != sum(p.numel() for p in model.parameters()):  # pragma: no cover - a backend bug
        print("resdsl build: internal error: the module's parameter count is not the IR's", file=sys.stderr)
        return 3
    summary = table.records() | {"params": table.params, "macs": table.macs}
    if args.output:
        path = prepare_output(args.output)
        try:
            _save(model, network, example, path, suffix)
        except (OSError, RuntimeError) as error:  # torch.save reports a bad path as a RuntimeError
            raise write_failed(args.output, error) from None
        summary["saved"] = args.output
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(table)
        if args.output:
            notes = {".pt2": DYNAMIC_NOTE, ".onnx": DYNAMIC_NOTE, ".py": SOURCE_NOTE}
            print(f"saved {args.output}" + (f" ({notes[suffix]})" if suffix in notes else ""))
    return EXIT_OK


#: What the .pt2 and .onnx exports accept (docs/torch.md, "Exports").
DYNAMIC_NOTE = "any batch size; channels, height and width fixed at the spec's input"
#: What the .py export is not: the weights, or the spec's initialisation.
SOURCE_NOTE = (
    "source only, no weights: its Model() has PyTorch's default initialisation, not the spec's; "
    "load a state dict saved with -o NAME.pt or .safetensors"
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _save(model, network, example, path: Path, suffix: str) -> None:
    import torch

    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    elif suffix == ".pt2":
        # The batch dimension is symbolic. torch.export specialises a dimension whose example
        # size is 1, so the example it traces has at least two samples.
        example = example.expand(max(2, example.shape[0]), *example.shape[1:]).contiguous()
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    elif suffix == ".py":
        from resdsl.backends.torch import export_source

        path.write_text(export_source(network), encoding="utf-8")
    elif suffix == ".onnx":
        from resdsl.backends.inference import export_onnx

        path.write_bytes(export_onnx(model, network.input_shape))
