"""``resdsl list``: every shipped spec with its parameters, figures and input. Never imports torch.

Compiling every shipped spec takes seconds, so what ``list`` prints is precomputed in
``specs/index.json``, keyed by the shipped files' contents: an edited, added or removed
spec makes the key differ, and ``list`` then compiles them all again. Rebuild the
index with ``python specs/build_index.py``; tests/test_daily.py fails while it is stale.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from resdsl import __version__
from resdsl.cli_support import EXIT_OK
from resdsl.compiler import compile, find_spec
from resdsl.errors import Pos, Source
from resdsl.evaluate import CONSTANTS, Value, describe, evaluate
from resdsl.frontend import _free_params, choose, instantiate, load
from resdsl.shipped import USE_PREFIX, shipped_specs, specs_dir


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


#: The precomputed index is some 20 KB; a larger file is not an index.
MAX_INDEX_BYTES = 1024 * 1024


def index_path() -> Path:
    return specs_dir() / "index.json"


def index_key() -> dict[str, str]:
    """What the index was computed from: every shipped file's name and bytes, and resdsl's version."""
    digest = hashlib.sha256()
    root = specs_dir()
    for path in sorted(root.rglob("*.res")):
        name = path.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
        data = path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(name), name, len(data)))
        digest.update(data)
    return {"specs_sha256": digest.hexdigest(), "resdsl": __version__}


def shipped() -> list[ShippedSpec]:
    """Every shipped spec with its default parameters: from the index while it is current, else compiled."""
    return _from_index() or compile_shipped()


def _from_index() -> list[ShippedSpec] | None:
    """The index's records, or None when it is missing, unreadable or computed from other files."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        descriptor = os.open(index_path(), os.O_RDONLY | os.O_NONBLOCK)
        with open(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            raw = handle.read(MAX_INDEX_BYTES + 1)
        if len(raw) > MAX_INDEX_BYTES:
            return None
        stored = json.loads(raw)
        if stored.get("key") != index_key():
            return None
        return [_record(item) for item in stored["specs"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _record(item: dict) -> ShippedSpec:
    # JSON has no tuples: a size parameter (3x224x224) and the shapes come back as lists.
    params = {key: tuple(value) if isinstance(value, list) else value for key, value in item["params"].items()}
    return ShippedSpec(
        name=item["name"],
        network=item["network"],
        params=params,
        num_params=item["num_params"],
        macs=item["macs"],
        input_shape=tuple(item["input_shape"]),
        output_shape=tuple(item["output_shape"]),
        layers=item["layers"],
    )


def build_index() -> str:
    """The JSON text of the index: every shipped spec compiled now, under the current key."""
    # A spec a line: a merge that changes two specs changes two lines.
    # Not sort_keys: a spec's parameters are listed in the order it declares them.
    records = ",\n  ".join(json.dumps(asdict(spec)) for spec in compile_shipped())
    return f'{{"key": {json.dumps(index_key(), sort_keys=True)},\n "specs": [\n  {records}\n ]}}\n'


def write_index() -> None:
    """Rewrite specs/index.json (a temporary file renamed over it: a reader never sees half)."""
    target = index_path()
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(build_index(), encoding="utf-8")
    os.replace(temporary, target)


def compile_shipped() -> list[ShippedSpec]:
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
