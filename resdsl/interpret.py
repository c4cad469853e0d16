"""The reference interpreter: run the IR directly, node by node.

Like torch.fx's Interpreter, it walks the graph in execution order and computes
each node from its ordered inputs, here with each layer kind's
:meth:`~resdsl.layers.Layer.reference` (``torch.nn.functional``). It shares no code
with the torch backend's generated forward: it is the oracle that the built module
is checked against (tests/test_oracle.py), in eval and in train mode, and against
which ``for_inference`` is checked too.

The tensors come from a state dict (a built module's, or any with the spec's keys);
each node reads those under its name (``layer1.0.conv1.weight`` for the node named
``layer1.0.conv1``), and a node that is one tensor (layer scale) the key that is
its name. BN running statistics are read, never updated.

Every value's shape is checked against the shape the IR gives its node (the batch
axis aside): the interpreter computes real tensors, so a shape rule that is wrong
for some input (a ceil mode forgotten) shows here, at the node, even where the
built module agrees with the interpreter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from resdsl.ir import IRError, Network
from resdsl.layers import Input, Output


def run(network: Network, state: Mapping[str, Any], x: Any, *, training: bool = False) -> Any:
    """The network's output for input `x`, computed from the IR and `state`.

    `training` selects batch statistics for BN; dropout and drop path are only
    supported at p = 0 in training (their randomness is not reproduced).
    """
    graph = network.graph
    # Each module's tensors by their key below it (``weight``; ``qkv.weight`` for a module
    # with children, as attention's), so that a kind's reference reads its own alone.
    by_module: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        for cut in range(1, len(parts)):
            by_module.setdefault(".".join(parts[:cut]), {})[".".join(parts[cut:])] = tensor
    values: dict[int, Any] = {}
    remaining_readers = {node.id: len(node.users) for node in graph.walk()}
    result = None
    for node in graph.walk():
        layer = node.layer
        if isinstance(layer, Input):
            values[node.id] = x
            continue
        inputs = [values[source] for source in node.inputs]
        # A node that is one tensor (layer scale) reads the key that is its name.
        tensors = {"tensor": state[node.name]} if layer.holds_tensor else by_module.get(node.name, {})
        value = layer.reference(inputs, tensors, training)
        if tuple(value.shape[1:]) != tuple(node.shape):
            raise IRError(
                f"node {node.id} ({node.name}, {node.kind}) computes {tuple(value.shape[1:])}; "
                f"the IR's shape is {tuple(node.shape)}"
            )
        values[node.id] = value
        for source in set(node.inputs):
            remaining_readers[source] -= 1
            if remaining_readers[source] == 0:
                del values[source]  # keep memory to what is live, as deep networks need
        if isinstance(layer, Output):
            result = values[node.id]
    return result
