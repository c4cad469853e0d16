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
    build.add_argument("--detail", choices=("block", "layer"), default="block", help="a row per block or per layer")
    build.add_argument("--json", action="store_true", help="print JSON instead of a table")
    build.add_argument("--weights", metavar="PATH", help="load a state dict (.pt, weights only, or .safetensors)")
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


def _rows(network, detail: str) -> list[dict]:
    graph = network.graph
    rows: dict[str, dict] = {}
    for node in network.order():
        attrs = graph.nodes[node]
        if attrs["layer"].kind in ("input", "output"):
            continue
        scope = attrs["scope"]
        if detail == "block" and scope.stage is not None:
            key, kind = scope.prefix, scope.block
        else:
            key, kind = attrs["name"], attrs["layer"].kind
        row = rows.setdefault(key, {"module": key, "kind": kind, "shape": None, "params": 0, "macs": 0})
        row["params"] += attrs["params"]
        row["macs"] += attrs["macs"]
        if attrs["branch"] == "main" or row["shape"] is None:  # a block's output is its main branch's
            row["shape"] = list(attrs["shape"])
    return list(rows.values())


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

    model = load(network, weights=args.weights).eval()
    rows = _rows(network, args.detail)
    observed: dict[str, list[int]] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[row["module"]].register_forward_hook(
            lambda _m, _i, out, name=row["module"]: observed.__setitem__(name, list(out.shape[1:]))
        )
        for row in rows
        if row["module"] in modules
    ]
    example = torch.randn(1, *network.input_shape)
    with torch.no_grad():
        output = model(example)
    for hook in hooks:
        hook.remove()
    if list(output.shape[1:]) != list(network.output_shape):  # pragma: no cover - a backend bug, not the spec's
        print(
            f"resdsl build: internal error: output {list(output.shape[1:])} != IR {list(network.output_shape)}",
            file=sys.stderr,
        )
        return 3
    for row in rows:
        if row["module"] in observed and observed[row["module"]] != row["shape"]:  # pragma: no cover
            print(f"resdsl build: internal error: {row['module']} gave {observed[row['module']]}", file=sys.stderr)
            return 3
    built_params = sum(p.numel() for p in model.parameters())
    summary = {
        "network": network.name,
        "input_shape": list(network.input_shape),
        "output_shape": list(network.output_shape),
        "params": built_params,
        "macs": network.macs,
        "rows": rows,
    }
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
        print(_table(summary))
    return EXIT_OK


def _table(summary: dict) -> str:
    def shape(dims) -> str:
        return "x".join(map(str, dims)) if dims else ""

    head = ("module", "kind", "output", "params", "MACs")
    body = [(r["module"], r["kind"], shape(r["shape"]), f"{r['params']:,}", f"{r['macs']:,}") for r in summary["rows"]]
    total = ("total", "", shape(summary["output_shape"]), f"{summary['params']:,}", f"{summary['macs']:,}")
    widths = [max(len(row[i]) for row in (head, *body, total)) for i in range(5)]

    def line(row) -> str:
        return "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()

    rule = "-" * (sum(widths) + 8)
    lines = [f"{summary['network']}: input {shape(summary['input_shape'])}", line(head), rule]
    lines += [line(row) for row in body] + [rule, line(total)]
    if "saved" in summary:
        lines.append(f"saved {summary['saved']}")
    return "\n".join(lines)


def _save(model, network, example, path: Path, suffix: str) -> None:
    import torch

    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    elif suffix == ".pt2":
        torch.export.save(torch.export.export(model, (example,)), str(path))
    elif suffix == ".py":
        from resdsl.backends.torch import export_source

        path.write_text(export_source(network), encoding="utf-8")
    elif suffix == ".onnx":
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["output"], dynamo=False)
