"""``resdsl build``: compile, build, run one forward pass, print the table, save.

Imports torch only when the command runs, so `resdsl check` and `resdsl draw` stay light.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resdsl.backends.exports import EXPORTERS, METADATA_KEY, export
from resdsl.cli_support import (
    EXIT_OK,
    UsageError,
    add_spec_options,
    add_werror_option,
    check_output,
    compile_from_args,
    prepare_output,
    write_failed,
)
from resdsl.ir import check_forward_pass

SAVE_FORMATS = {suffix: exporter.what for suffix, exporter in EXPORTERS.items()}


def register(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser(
        "build",
        help="build the torch module, run one forward pass, print its table; -o saves it",
        description="Compile a spec, build it as a torch.nn.Module, run one forward pass on its input shape and "
        "print a row per block (per layer with --detail layer): module, output shape, params, MACs.",
    )
    build.add_argument("spec", metavar="SPEC", help="a .res file, or a shipped spec's name")
    add_spec_options(build)
    add_werror_option(build)
    build.add_argument(
        "--detail",
        choices=("block", "layer", "stage"),
        default="block",
        help="a row per block (default), per layer, or per stage",
    )
    build.add_argument("--json", action="store_true", help="print JSON instead of a table")
    build.add_argument(
        "--weights",
        metavar="PATH",
        help="load a state dict (.pt, weights only, or .safetensors), or a run's best.pt or checkpoint.pt",
    )
    build.add_argument(
        "--allow-other-network",
        action="store_true",
        help="load a run checkpoint that trained another network (refused by default)",
    )
    build.add_argument(
        "--bake-normalization",
        action="store_true",
        help="with a run checkpoint and -o .onnx or .pt2: the export takes pixels in 0..255 and subtracts the "
        "run's mean itself (by default the normalisation is recorded in the export's metadata)",
    )
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


def run(args: argparse.Namespace) -> int:
    suffix = Path(args.output).suffix.lower() if args.output else None
    if suffix is not None and suffix not in SAVE_FORMATS:
        raise UsageError(f"cannot tell the format of '{args.output}': use one of {', '.join(SAVE_FORMATS)}")
    if suffix is not None and not EXPORTERS[suffix].available():
        raise UsageError(f"saving {suffix} needs an extra package: {EXPORTERS[suffix].install}")
    if args.output:
        check_output(args.output)  # a directory given as OUT fails now, not after the forward pass
    if args.bake_normalization and suffix not in (".onnx", ".pt2"):
        raise UsageError("--bake-normalization applies to -o .onnx and .pt2 exports")
    network = compile_from_args(args.spec, args)
    check_forward_pass(network)  # before torch allocates the example input

    import torch

    from resdsl.backends.loading import NormalizedInput, load, read_weights_and_run
    from resdsl.table import Table

    # The run's record (its normalisation); load reads the weights again, naming the file in its errors.
    run = read_weights_and_run(args.weights)[1] if args.weights else None
    normalization = input_normalization(run) if run is not None else None
    if args.bake_normalization and normalization is None:
        raise UsageError(
            "--bake-normalization needs a run's best.pt or checkpoint.pt as --weights: "
            "a plain state dict records no normalisation"
        )
    model = load(network, weights=args.weights, allow_other_network=args.allow_other_network).eval()
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
    note = None
    if args.output:
        path = prepare_output(args.output)
        saved_model = model
        if normalization is not None:
            normalization["baked"] = bool(args.bake_normalization)
            if args.bake_normalization:
                saved_model = NormalizedInput(model, normalization["shift"], normalization["scale"]).eval()
                example = torch.rand(args.batch, *network.input_shape) * 255
        try:
            _save(saved_model, network, example, path, suffix, normalization)
        except (OSError, RuntimeError) as error:  # torch.save reports a bad path as a RuntimeError
            raise write_failed(args.output, error) from None
        summary["saved"] = args.output
        if normalization is not None:
            note = _normalization_note(normalization, args.output, suffix)
            summary["input_normalization"] = {k: v for k, v in normalization.items() if k not in ("shift", "scale")}
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(table)
        if args.output:
            notes = {".pt2": DYNAMIC_NOTE, ".onnx": DYNAMIC_NOTE, ".py": SOURCE_NOTE}
            print(f"saved {args.output}" + (f" ({notes[suffix]})" if suffix in notes else ""))
        if note:
            print(note)
    return EXIT_OK


#: The metadata key under which exports of a run's weights record the run's input normalisation.
NORMALIZATION_KEY = METADATA_KEY


def input_normalization(run: dict) -> dict | None:
    """What a run did to its input, from its checkpoint: x = (pixels - shift) * scale, pixels 0..255, RGB, CxHxW."""
    import torch

    saved = run.get("normalizer")
    if not isinstance(saved, dict):
        return None
    shift, scale = saved.get("shift"), saved.get("scale")
    if not (isinstance(shift, torch.Tensor) and isinstance(scale, torch.Tensor)):
        return None
    recipe = run.get("recipe") if isinstance(run.get("recipe"), dict) else {}
    return {
        "formula": "input = (pixels - shift) * scale",
        "pixels": "RGB values 0..255, channels first",
        "normalize": str(recipe.get("normalize", "pixel_mean")),
        "shift_shape": list(shift.shape),
        "shift": shift.float(),
        "scale": scale.float(),
    }


def _normalization_metadata(normalization: dict) -> str:
    record = dict(normalization)
    record["shift"] = normalization["shift"].tolist()
    record["scale"] = normalization["scale"].flatten().tolist()
    return json.dumps(record)


def _normalization_note(normalization: dict, output: str, suffix: str) -> str:
    shape = "x".join(map(str, normalization["shift_shape"]))
    what = "the per-pixel mean" if normalization["shift_shape"][1:] != [1, 1] else "each channel's mean"
    head = f"the run trained on (pixels - shift) * scale, pixels 0..255, shift {what} ({shape})"
    if normalization["baked"]:
        return f"{head}: baked into {output}, which takes pixels in 0..255"
    if suffix in (".onnx", ".pt2", ".safetensors"):
        return f"{head}: recorded in {output}'s metadata as '{NORMALIZATION_KEY}'; the export takes normalised input"
    return f"{head}: a .pt state dict cannot record it; apply it before the model (see docs/training.md)"


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


def _save(model, network, example, path: Path, suffix: str, normalization: dict | None = None) -> None:
    metadata = _normalization_metadata(normalization) if normalization is not None else None
    export(model, path, network=network, example=example, metadata=metadata)
