"""The importer's flat graph: one :class:`Op` per statement the language can write.

Tracing (``resdsl/importer/trace.py``) makes it from torch.fx's graph; structure
recovery (``resdsl/importer/structure.py``) reads it. It imports nothing of torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resdsl.errors import SpecError


class Size(tuple):
    """A kernel, stride, padding or dilation: written ``3x3``, or one number where square
    for strides and paddings (``stride=2``)."""

    def __repr__(self) -> str:
        return "x".join(map(str, self))


@dataclass
class Op:
    """One statement's worth of computation.

    ``kind`` is a resdsl layer kind or one of the importer's own: ``input``, ``add``,
    ``mul``, ``cat`` (joins of two or more values, first the value joined onto),
    ``split`` (a list), ``item`` (one element of a split), ``zeropad`` (option A's
    shortcut, met only in networks resdsl built). ``args`` are positional, ``kwargs``
    keyword arguments that differ from the kind's defaults, in the order written.
    """

    id: int
    kind: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    inputs: list[int] = field(default_factory=list)
    label: str | None = None  # the module (or tensor) path: the state_dict keys' prefix
    scope: tuple[str, ...] = ()  # the modules whose forward made it, outermost first
    where: str = "?"  # file:line of the code that made it
    shape: tuple[int, ...] = ()

    @property
    def is_join(self) -> bool:
        return self.kind in ("add", "mul", "cat")


@dataclass
class Graph:
    """The traced network: ops in execution order, ``output`` the op the network returns."""

    ops: dict[int, Op]
    output: int
    input_shape: tuple[int, ...]
    classes: dict[str, str]  # module path -> class name, for every called module
    sequential: set[str]  # module paths of nn.Sequential containers (stages' candidates)

    def users(self) -> dict[int, list[int]]:
        readers: dict[int, list[int]] = {i: [] for i in self.ops}
        for op in self.ops.values():
            for source in op.inputs:
                if op.id not in readers[source]:
                    readers[source].append(op.id)
        return readers


class ImportFailure(SpecError):
    """A module or operation that the language has no construct for: the message names
    it and the construct the language lacks, ``file`` the ``file:line`` of the code in
    the trace that made it."""
