"""A network's table, per layer, block or stage: rows a program reads and text a person reads.

``Table.of(network)`` needs only the compiled IR (it never imports torch), so every
figure in it is exact before anything is built: output shapes, parameters, and
multiply-accumulates of the convolutions and fc layers (BN, ReLU, pooling and the
additions are not counted, as in the paper). Given a built module, ``model=``
adds its trainable and frozen parameter counts, which only the module knows.

The memory estimates follow torchinfo's method, so that the two can be compared:
parameters at 4 bytes each; for a forward and backward pass, the output of every
layer that has parameters, and its gradient, at 4 bytes per element times the
batch size; and the input. They estimate what autograd keeps, not the allocator's
peak (bench/memory.py measures that).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from resdsl.ir import Network
from resdsl.layers import layout, shape_text

DETAILS = ("layer", "block", "stage")
BYTES_PER_ELEMENT = 4  # float32, as torchinfo assumes
MACS_LABEL = "MACs (conv+fc)"


@dataclass(frozen=True)
class Row:
    """One line of the table: a layer, a block or a stage (or the stem and head at stage detail)."""

    module: str  # the module's qualified name: conv1, layer1.0, layer1.0.conv1, layer1
    kind: str  # a layer's kind, a block's type, or "3 x bottleneck" for a stage
    level: str  # "layer", "block" or "stage"
    stage: str | None  # the stage it belongs to, None at the top level
    kernel: str  # kernel sizes of its convolutions and pools, e.g. "3x3" or "1x1,3x3,1x1"
    output_shape: tuple[int, ...]  # per sample
    params: int
    macs: int  # conv and fc multiply-accumulates per sample
    saved: int  # per-sample elements of outputs of layers with parameters (torchinfo's memory basis)
    role: str = "main"  # the IR node's role: "main", "branch" or "shortcut" (rows of one layer)


@dataclass(frozen=True)
class Table:
    """A network's rows and totals. ``str(table)`` is the text; ``table.records()`` the data."""

    network: str
    detail: str
    batch: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: tuple[Row, ...]
    stages: tuple[Row, ...]  # subtotals, one per stage (and the stem and head)
    params: int
    trainable: int
    macs: int
    saved: int = field(repr=False)

    @classmethod
    def of(cls, network: Network, *, detail: str = "block", batch: int = 1, model: Any = None) -> Table:
        """The table of a compiled network.

        ``detail`` is ``"layer"``, ``"block"`` (a row per block, the top-level layers
        on their own) or ``"stage"``. ``batch`` scales the memory estimates. ``model``
        is the built ``torch.nn.Module``, read (not imported) for its trainable count.
        """
        if detail not in DETAILS:
            raise ValueError(f"detail must be one of {', '.join(DETAILS)}, not {detail!r}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        scopes = {node.name: node.scope for node in network.nodes()}
        layers = _layer_rows(network)
        stages = _stage_rows(network, layers, scopes)
        rows = {"layer": layers, "block": _block_rows(layers, scopes), "stage": stages}[detail]
        trainable = network.num_params
        if model is not None:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return cls(
            network=network.name,
            detail=detail,
            batch=batch,
            input_shape=tuple(network.input_shape),
            output_shape=network.output_shape,
            rows=tuple(rows),
            stages=tuple(stages),
            params=network.num_params,
            trainable=trainable,
            macs=network.macs,
            saved=sum(row.saved for row in layers),
        )

    @property
    def frozen(self) -> int:
        return self.params - self.trainable

    @property
    def input_bytes(self) -> int:
        return _elements(self.input_shape) * self.batch * BYTES_PER_ELEMENT

    @property
    def params_bytes(self) -> int:
        return self.params * BYTES_PER_ELEMENT

    @property
    def activation_bytes(self) -> int:
        """Forward and backward pass: each saved output and its gradient, for the whole batch."""
        return 2 * self.saved * self.batch * BYTES_PER_ELEMENT

    @property
    def total_bytes(self) -> int:
        return self.input_bytes + self.params_bytes + self.activation_bytes

    def records(self) -> dict[str, Any]:
        """Everything as JSON-ready data: the rows, the stage subtotals and the totals."""

        def record(row: Row) -> dict[str, Any]:
            return asdict(row) | {"output_shape": list(row.output_shape), "layout": layout(row.output_shape)}

        return {
            "network": self.network,
            "detail": self.detail,
            "batch": self.batch,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "rows": [record(row) for row in self.rows],
            "stages": [record(row) for row in self.stages],
            "totals": {
                "params": self.params,
                "trainable": self.trainable,
                "frozen": self.frozen,
                "macs": self.macs,
                "input_bytes": self.input_bytes,
                "params_bytes": self.params_bytes,
                "activation_bytes": self.activation_bytes,
                "total_bytes": self.total_bytes,
            },
        }

    def __str__(self) -> str:
        head = ("module", "kind", "kernel", "output", "params", MACS_LABEL)
        body: list[tuple[str, ...]] = []
        subtotals = {row.module: row for row in self.stages}
        for index, row in enumerate(self.rows):
            body.append(_cells(row))
            # At block detail, a stage's subtotal follows its last block.
            last_of_stage = index + 1 == len(self.rows) or self.rows[index + 1].stage != row.stage
            if self.detail != "stage" and row.stage in subtotals and last_of_stage:
                stage = subtotals[row.stage]
                body.append((f"{stage.module} (stage)", stage.kind, *_cells(stage)[2:]))
        total = ("total", "", "", _shape(self.output_shape), f"{self.params:,}", f"{self.macs:,}")
        table = [head, *body, total]
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))

        def line(cells: Sequence[str]) -> str:
            return "  ".join(
                cell.ljust(width) if i < 3 else cell.rjust(width) for i, (cell, width) in enumerate(zip(cells, widths))
            ).rstrip()

        lines = [f"{self.network}: input {_shape(self.input_shape)}", line(head), rule]
        lines += [line(row) for row in body]
        lines += [rule, line(total), rule]
        lines += [
            f"params: {self.params:,} (trainable {self.trainable:,}, frozen {self.frozen:,})",
            f"{MACS_LABEL} per sample: {self.macs:,} ({self.macs / 1e9:.3f} G)",
            f"memory at batch {self.batch}, float32 (torchinfo's estimate):",
            f"  input {_megabytes(self.input_bytes)}, params {_megabytes(self.params_bytes)}, "
            f"forward/backward pass {_megabytes(self.activation_bytes)}, total {_megabytes(self.total_bytes)}",
        ]
        return "\n".join(lines)


def table(network: Network, *, detail: str = "block", batch: int = 1, model: Any = None) -> Table:
    """``Table.of``: the table of a compiled network (see :class:`Table`)."""
    return Table.of(network, detail=detail, batch=batch, model=model)


def _cells(row: Row) -> tuple[str, ...]:
    return (row.module, row.kind, row.kernel, _shape(row.output_shape), f"{row.params:,}", f"{row.macs:,}")


def _shape(shape: Iterable[int]) -> str:
    # A token sequence says so: "197 x 192 tokens" (resdsl.layers.shape_text).
    return shape_text(shape)


def _elements(shape: Iterable[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.2f} MB"  # 10^6 bytes, as torchinfo prints them


def _layer_rows(network: Network) -> list[Row]:
    rows = []
    for node in network.nodes():
        layer = node.layer
        if layer.graph_end:
            continue
        # torchinfo counts the output of each module with parameters once.
        saved = _elements(node.shape) if node.params else 0
        rows.append(
            Row(
                module=node.name,
                kind=layer.kind,
                level="layer",
                stage=node.scope.stage,
                kernel=layer.kernel_text(),
                output_shape=node.shape,
                params=node.params,
                macs=node.macs,
                saved=saved,
                role=node.role,
            )
        )
    return rows


def _merge(rows: list[Row], module: str, kind: str, level: str, stage: str | None) -> Row:
    """One row for several: sums, the kernels of the main path in order, the last output."""
    kernels = [row.kernel for row in rows if row.kernel and row.role == "main"]
    return Row(
        module=module,
        kind=kind,
        level=level,
        stage=stage,
        kernel=",".join(kernels),
        output_shape=rows[-1].output_shape,
        params=sum(row.params for row in rows),
        macs=sum(row.macs for row in rows),
        saved=sum(row.saved for row in rows),
    )


def _block_rows(layers: list[Row], scopes: dict[str, Any]) -> list[Row]:
    groups: dict[str, list[Row]] = {}
    block_types: dict[str, str] = {}
    for row in layers:
        scope = scopes[row.module]
        key = row.module if scope.stage is None else scope.prefix
        groups.setdefault(key, []).append(row)
        block_types[key] = scope.block or ""
    rows = []
    for key, members in groups.items():
        if members[0].stage is None:
            rows.append(members[0])
            continue
        # The block's output is its main path's: the last row that is not the shortcut.
        main = [row for row in members if row.role == "main"]
        merged = _merge(members, key, "", "block", members[0].stage)
        rows.append(Row(**{**asdict(merged), "kind": block_types[key], "output_shape": main[-1].output_shape}))
    return rows


def _stage_rows(network: Network, layers: list[Row], scopes: dict[str, Any]) -> list[Row]:
    """The paper's Table 1 rows: the stem, each stage, the head (network.stages), with kernels and memory."""
    by_section: dict[str, list[Row]] = {}
    for row in layers:
        scope = scopes[row.module]
        key = scope.stage if scope.stage is not None else scope.section
        by_section.setdefault(key, []).append(row)
    rows = []
    for stage in network.stages:
        members = by_section.get(stage.name, [])
        kind = f"{stage.blocks} x {stage.block}" if stage.block else stage.section
        blocks = [row for row in members if row.module.startswith(f"{stage.name}.0.")] if stage.block else members
        kernel = _merge(blocks, "", "", "", None).kernel if blocks else ""
        rows.append(
            Row(
                module=stage.name,
                kind=kind,
                level="stage",
                stage=stage.name if stage.block else None,
                kernel=kernel,
                output_shape=stage.output_shape,
                params=stage.params,
                macs=stage.macs,
                saved=sum(row.saved for row in members),
            )
        )
    return rows


__all__ = ["BYTES_PER_ELEMENT", "DETAILS", "MACS_LABEL", "Row", "Table", "table"]
