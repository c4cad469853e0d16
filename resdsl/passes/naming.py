"""Pass 5: module names (LANGUAGE.md, "Naming").

A labelled layer is named by its label; an unlabelled one by its kind, numbered in
order within its scope (``conv1, bn1, relu1, conv2``...), labelled layers counting
toward the numbers. Stem, head and body layers share the top-level scope; stage
``S`` holds its blocks as ``S.0, S.1, ...``. A shortcut's layers are
``downsample`` (torchvision's ``downsample.0`` conv and ``downsample.1`` BN).
Writes ``name`` on every node: the qualified path a backend registers the module at.
"""

from __future__ import annotations

import keyword
from collections import Counter

from resdsl.errors import Note, SpecError
from resdsl.ir import Network, Scope

#: Node kinds with a fixed name rather than a numbered one.
FIXED_NAMES = {"input": "input", "output": "output", "zeropad": "downsample", "projection": "downsample"}


def assign_names(network: Network) -> None:
    graph = network.graph
    counters: dict[Scope | str, Counter] = {}
    taken: dict[str, int] = {}
    stage_names: dict[str, object] = {}
    for node in network.order():
        attrs = graph.nodes[node]
        scope: Scope = attrs["scope"]
        kind = attrs["layer"].kind
        key = scope if scope.stage is not None else "top"
        counter = counters.setdefault(key, Counter())
        counter[kind] += 1
        if scope.stage is not None:
            stage_names.setdefault(scope.stage, attrs["trace"][-1].pos)
        label = attrs["label"]
        if label is not None:
            if keyword.iskeyword(label):
                raise SpecError(
                    f"'{label}' is a Python keyword and cannot name a module",
                    _label_pos(attrs),
                    f"choose another label, such as '{label}_'",
                )
            local = label
        else:
            local = FIXED_NAMES.get(kind, f"{kind}{counter[kind]}")
        name = f"{scope.prefix}.{local}" if scope.prefix else local
        if name in taken:
            other = graph.nodes[taken[name]]
            raise SpecError(
                f"two layers would both be named '{name}'",
                _label_pos(attrs) if label is not None else attrs["pos"],
                "give one of them another label",
                [Note("the other one", _label_pos(other) if other["label"] else other["pos"])],
            )
        taken[name] = node
        attrs["name"] = name
    for stage, pos in stage_names.items():
        if stage in taken:
            raise SpecError(
                f"stage '{stage}' has the same name as the layer '{stage}'", pos, "rename the stage or the layer"
            )


def _label_pos(attrs: dict):
    return attrs["pos"]
