"""``resdsl list``: every shipped spec with its parameters, figures and input. Never imports torch."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from resdsl.cli_support import EXIT_OK
from resdsl.compiler import compile, find_spec
from resdsl.errors import Pos, Source
from resdsl.evaluate import CONSTANTS, Value, describe, evaluate
from resdsl.frontend import _free_params, choose, instantiate, load
from resdsl.shipped import USE_PREFIX, shipped_specs


@dataclass(frozen=True)
class ShippedSpec:
    """One shipped spec, compiled with its defaults."""

    name: str  # what compile() and `resdsl build` take; `use "resdsl:NAME"` imports it
    network: str
    params: dict[str, Value]  # the network's parameters and their defaults
    num_params: int
    macs: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    layers: int


#: How the layers column counts (Network.layer_count), said under the table.
LAYERS_NOTE = (
    "layers: convolutions and fc layers on the main path, as the paper counts ResNet-34's 34;\n"
    "        not shortcut projections, side branches (SE), BN, activations or pooling;\n"
    "        a network with a 'depth' parameter shows that, its paper's count (WRN-28-10: 28 convolutions)"
)


def shipped() -> list[ShippedSpec]:
    """Every shipped spec, compiled with its default parameters."""
    found = []
    for name in shipped_specs():
        path = find_spec(name)
        namespace = load(path)
        chosen = choose(namespace, path.stem, None, {}, Pos(Source(str(path), ""), 1, 1, 1, 1))
        defaults: dict[str, Value] = {}
        for param in _free_params(chosen, namespace):
            if param.default is not None:
                defaults[param.name] = evaluate(param.default, {**CONSTANTS, **defaults})
        network = compile(name)
        found.append(
            ShippedSpec(
                name=name,
                network=network.name,
                params=defaults,
                num_params=network.num_params,
                macs=network.macs,
                input_shape=tuple(network.input_shape),
                output_shape=tuple(network.output_shape),
                layers=_depth(namespace, chosen, network.layer_count()),
            )
        )
    return found


def _depth(namespace, chosen: str, counted: int) -> int:
    """The paper's depth where the network is instantiated with a whole-number `depth` (the
    figure in its name), else the counted layers. Families count differently: He et al.
    count the main path's convolutions and fc (ResNet-34, preact_resnet(depth=164)), while
    WRN-n-k's n is every convolution, the 1x1 shortcut projections included, and no fc
    (Zagoruyko and Komodakis 2016, section 2): wide_resnet(depth=28) counts 26 by the first rule."""
    bound = instantiate(namespace, chosen, {}, Pos(Source("", ""), 1, 1, 1, 1)).params.get("depth")
    return bound if isinstance(bound, int) and not isinstance(bound, bool) else counted


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "list",
        help="list the shipped specs with their parameters, MACs and input shapes",
        description="Every spec shipped with resdsl: the name that `resdsl build`, `resdsl.compile` and "
        f'`use "{USE_PREFIX}NAME"` take, its parameters with their defaults, its parameter count, its '
        "multiply-accumulates (conv and fc) and its input shape.",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.set_defaults(run=run)


def _json_value(value: Value) -> object:
    return list(value) if isinstance(value, tuple) else value


def run(args: argparse.Namespace) -> int:
    specs = shipped()
    if args.json:
        records = [
            {
                "name": spec.name,
                "network": spec.network,
                "parameters": {
                    key: list(value) if isinstance(value, tuple) else value for key, value in spec.params.items()
                },
                "params": spec.num_params,
                "macs": spec.macs,
                "layers": spec.layers,
                "input_shape": list(spec.input_shape),
                "output_shape": list(spec.output_shape),
            }
            for spec in specs
        ]
        json.dump(records, sys.stdout, indent=2)
        print()
        return EXIT_OK
    rows = [("spec", "layers", "params", "GMACs (conv+fc)", "input", "parameters")]
    for spec in specs:
        parameters = ", ".join(f"{key}={describe(value)}" for key, value in spec.params.items())
        rows.append(
            (
                spec.name,
                str(spec.layers),
                f"{spec.num_params:,}",
                f"{spec.macs / 1e9:.3f}",
                "x".join(map(str, spec.input_shape)),
                parameters,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(width) if 0 < i < 4 else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))
        ]
        print("  ".join(cells).rstrip())
        if index == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print(f"\n{LAYERS_NOTE}")
    print(f'build one with `resdsl build NAME`; import one into a spec with `use "{USE_PREFIX}NAME"`')
    return EXIT_OK
