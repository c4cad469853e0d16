"""``resdsl diff A B``: two networks stage by stage, side by side. Never imports torch.

Stages are paired in order: the layers before the first stage (the stem) with each
other, then the first stage of each with the other's first, and so on, then the
head. A network with fewer stages leaves the other's extra stages unpaired. Each
side shows the stage's blocks, output shape, parameters, conv+fc MACs and its
shortcut kinds; the last columns are B's figures less A's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass

from resdsl.cli_support import EXIT_OK, EXIT_SPEC, add_spec_options, compile_from_args
from resdsl.errors import SpecError
from resdsl.ir import Network, StageSummary
from resdsl.layers import shape_text

#: The columns `str()` fits the comparison in where it can.
WIDTH = 100


@dataclass(frozen=True)
class Side:
    """One network's figures for one stage."""

    stage: str
    blocks: str  # "6 x basic", or the section ("stem", "head")
    output_shape: tuple[int, ...]
    params: int
    macs: int
    shortcuts: str  # "1 projection, 5 identity"; "none" where blocks have no shortcut; "" outside stages


@dataclass(frozen=True)
class Pair:
    """A row of the comparison: the two sides (None where one network has no such stage)."""

    a: Side | None
    b: Side | None

    @property
    def params_change(self) -> int:
        return (self.b.params if self.b else 0) - (self.a.params if self.a else 0)

    @property
    def macs_change(self) -> int:
        return (self.b.macs if self.b else 0) - (self.a.macs if self.a else 0)


@dataclass(frozen=True)
class NetworkDiff:
    """Two networks compared stage by stage; ``str()`` is the side-by-side text."""

    a: Network
    b: Network
    pairs: tuple[Pair, ...]

    def records(self) -> dict:
        def side(value: Side | None) -> dict | None:
            return None if value is None else asdict(value) | {"output_shape": list(value.output_shape)}

        return {
            "a": self.a.name,
            "b": self.b.name,
            "stages": [
                {"a": side(p.a), "b": side(p.b), "params_change": p.params_change, "macs_change": p.macs_change}
                for p in self.pairs
            ],
            "totals": {
                "a": {"params": self.a.num_params, "macs": self.a.macs, "layers": self.a.layer_count()},
                "b": {"params": self.b.num_params, "macs": self.b.macs, "layers": self.b.layer_count()},
                "params_change": self.b.num_params - self.a.num_params,
                "macs_change": self.b.macs - self.a.macs,
            },
        }

    def __str__(self) -> str:
        return self.text()

    def text(self, width: int = WIDTH) -> str:
        """The comparison as text, within `width` columns where it can be: each stage on
        two lines (A's, then B's and the change), MACs in millions, and where the
        full words would not fit, the shortcut kinds abbreviated, then narrower gaps."""
        for short, gap in ((False, 2), (True, 2), (True, 1)):
            lines = self._lines(short, gap)
            if max(len(line) for line in lines) <= width:
                break
        return "\n".join(lines)

    def _lines(self, short: bool, gap: int) -> list[str]:
        head = ("stage", "", "blocks", "output", "params", "change", "MMACs", "change", "shortcuts")
        rows: list[tuple[str, ...]] = []

        def side_rows(a: Side | None, b: Side | None, params: int, macs: int) -> None:
            for mark, side in (("A", a), ("B", b)):
                first = mark == "A"
                # Each side's own stage name; B's left blank where it is A's.
                stage = side.stage if side else "-"
                if not first and a is not None and b is not None and a.stage == b.stage:
                    stage = ""
                rows.append(
                    (
                        stage,
                        mark,
                        side.blocks if side else "-",
                        shape_text(side.output_shape) if side else "-",
                        _count(side.params if side else None),
                        "" if first else _change(params),
                        _millions(side.macs if side else None),
                        "" if first else _change_millions(macs),
                        _shortcuts(side.shortcuts, short) if side else "-",
                    )
                )

        for pair in self.pairs:
            side_rows(pair.a, pair.b, pair.params_change, pair.macs_change)
        body = len(rows)
        total_a = Side(
            "total",
            f"{self.a.layer_count()} layers",
            tuple(self.a.output_shape),
            self.a.num_params,
            self.a.macs,
            f"option {self.a.settings.shortcut}",
        )
        total_b = Side(
            "total",
            f"{self.b.layer_count()} layers",
            tuple(self.b.output_shape),
            self.b.num_params,
            self.b.macs,
            f"option {self.b.settings.shortcut}",
        )
        side_rows(total_a, total_b, self.b.num_params - self.a.num_params, self.b.macs - self.a.macs)
        table = [head, *rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        numeric = {4, 5, 6, 7}

        def line(row: tuple[str, ...]) -> str:
            return (
                (" " * gap)
                .join(
                    cell.rjust(width) if i in numeric else cell.ljust(width)
                    for i, (cell, width) in enumerate(zip(row, widths))
                )
                .rstrip()
            )

        rule = "-" * (sum(widths) + gap * (len(widths) - 1))
        lines = [
            f"A = {self.a.name}, B = {self.b.name}; change is B less A",
            "MMACs: millions of multiply-accumulates of the conv and fc layers; --json has the exact counts",
            line(head),
            rule,
        ]
        lines += [line(row) for row in rows[:body]] + [rule] + [line(row) for row in rows[body:]]
        return lines


def _millions(value: int | None) -> str:
    return "-" if value is None else _figure(value / 1e6, "")


def _change_millions(value: int) -> str:
    return _figure(value / 1e6, "+") if value else "0"


def _figure(millions: float, sign: str) -> str:
    """One decimal, or as many as show a nonzero figure: a change of 40,000 MACs reads
    -0.04, not -0.0 (a sign on nothing)."""
    for decimals in range(1, 7):
        if round(millions, decimals):
            return f"{millions:{sign},.{decimals}f}"
    return f"{millions:{sign},.1f}"  # zero (a count is whole, so anything else shows by 6 decimals)


def _shortcuts(text: str, short: bool) -> str:
    if not short:
        return text
    return text.replace("identity", "id").replace("projection", "proj").replace("zeropad", "pad")


def diff(a: Network, b: Network) -> NetworkDiff:
    """Compare two compiled networks stage by stage."""
    sides_a, sides_b = _sections(a), _sections(b)
    pairs = []
    for part in ("before", "stages", "after"):
        for left, right in itertools.zip_longest(sides_a[part], sides_b[part]):
            pairs.append(Pair(left, right))
    return NetworkDiff(a, b, tuple(pairs))


def _total(network: Network) -> Side:
    return Side("total", "", network.output_shape, network.num_params, network.macs, "")


def _sections(network: Network) -> dict[str, list[Side]]:
    """The network's stages as sides, split into what comes before the stages, the stages, and after."""
    kinds: dict[str, Counter] = {}
    for block in network.stage_blocks():
        if block.join is not None:
            kinds.setdefault(block.stage, Counter())[block.plan.kind] += 1
    parts: dict[str, list[Side]] = {"before": [], "stages": [], "after": []}
    for stage in network.stages:
        if stage.block:
            parts["stages"].append(_side(stage, kinds.get(stage.name)))
        elif stage.section == "body" and parts["stages"] and not parts["after"]:
            # Layers written between stages (VGG's pools) count with the stage before them.
            last = parts["stages"][-1]
            blocks = last.blocks if last.blocks.endswith(" + body") else f"{last.blocks} + body"
            parts["stages"][-1] = Side(
                last.stage,
                blocks,
                stage.output_shape,
                last.params + stage.params,
                last.macs + stage.macs,
                last.shortcuts,
            )
        else:
            parts["after" if parts["stages"] else "before"].append(_side(stage, None))
    return parts


def _side(stage: StageSummary, kinds: Counter | None) -> Side:
    if not stage.block:
        shortcuts = ""
    elif not kinds:
        shortcuts = "none"
    else:
        shortcuts = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items(), key=lambda kc: -kc[1]))
    blocks = f"{stage.blocks} x {stage.block}" if stage.block else stage.section
    return Side(stage.name, blocks, stage.output_shape, stage.params, stage.macs, shortcuts)


def _both(pair: Pair, field: str) -> str:
    """One value (``field`` is "stage" or "output_shape") where the sides agree, 'a | b' where they differ."""

    def text(side: Side | None) -> str:
        if side is None:
            return "-"
        return side.stage if field == "stage" else shape_text(side.output_shape)

    left, right = text(pair.a), text(pair.b)
    return left if left == right else f"{left} | {right}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _change(value: int) -> str:
    return f"{value:+,}" if value else "0"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "diff",
        help="compare two networks stage by stage, side by side",
        description="Compile two specs and print them stage by stage: blocks, output shapes, parameters, "
        "MACs (conv and fc) and shortcut kinds, with the totals and B's figures less A's. "
        "--param, --input and --network apply to both.",
    )
    parser.add_argument("a", metavar="A", help="a .res file, or a shipped spec's name (plain34)")
    parser.add_argument("b", metavar="B", help="the other (resnet34)")
    add_spec_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    networks = []
    for spec in (args.a, args.b):
        try:
            networks.append(compile_from_args(spec, args))
        except SpecError as error:
            print(error, file=sys.stderr)
    if len(networks) != 2:
        return EXIT_SPEC
    result = diff(*networks)
    if args.json:
        json.dump(result.records(), sys.stdout, indent=2)
        print()
    else:
        print(result)
    return EXIT_OK


__all__ = ["NetworkDiff", "Pair", "Side", "diff"]
