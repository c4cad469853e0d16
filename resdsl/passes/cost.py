"""Pass 6: exact parameter counts and multiply-accumulates.

MACs count the multiply-accumulates of convolutions and fully connected layers
(including projection shortcuts) for one input image: the paper's "FLOPs
(multiply-adds)" and torchvision's ``_ops``. BN, ReLU, pooling and additions are
not counted, by the same convention. Parameters are trainable ones (BN's running
statistics are buffers, not parameters).

Writes ``params`` and ``macs`` on every node, and the network's totals and
per-stage figures.
"""

from __future__ import annotations

from resdsl.ir import Network, StageSummary
from resdsl.layers import BatchNorm, Conv, Layer, Linear, Projection, Shape


def layer_cost(layer: Layer, in_shape: Shape, out_shape: Shape) -> tuple[int, int]:
    """(params, MACs) of one layer."""
    match layer:
        case Conv():
            weights = layer.out_channels * (in_shape[0] // layer.groups) * layer.kernel[0] * layer.kernel[1]
            params = weights + (layer.out_channels if layer.bias else 0)
            return params, weights * out_shape[1] * out_shape[2]
        case Projection():
            weights = layer.out_channels * in_shape[0]
            return weights + 2 * layer.out_channels, weights * out_shape[1] * out_shape[2]
        case BatchNorm():
            return 2 * in_shape[0], 0
        case Linear():
            weights = in_shape[0] * layer.out_features
            return weights + (layer.out_features if layer.bias else 0), weights
    return 0, 0


def count_cost(network: Network) -> None:
    graph = network.graph
    groups: list[list] = []  # [name, section, scope-of-first-block, nodes]
    total_params = total_macs = 0
    for node in network.order():
        attrs = graph.nodes[node]
        preds = list(graph.predecessors(node))
        in_shape = graph.nodes[preds[0]]["shape"] if preds else attrs["shape"]
        if attrs["layer"].kind == "add":
            in_shape = attrs["shape"]
        params, macs = layer_cost(attrs["layer"], in_shape, attrs["shape"])
        attrs["params"], attrs["macs"] = params, macs
        total_params += params
        total_macs += macs
        scope = attrs["scope"]
        if attrs["layer"].kind in ("input", "output"):
            continue
        name = scope.stage if scope.stage is not None else scope.section
        if not groups or groups[-1][0] != name:
            groups.append([name, scope.section, scope, []])
        groups[-1][3].append(node)
    network.num_params, network.macs = total_params, total_macs
    network.stages = tuple(_summary(graph, *group) for group in groups)


def _summary(graph, name, section, scope, nodes) -> StageSummary:
    blocks = len({graph.nodes[n]["scope"].index for n in nodes}) if section == "stage" else 0
    return StageSummary(
        name=name,
        section=section,
        blocks=blocks,
        block=scope.block,
        args=scope.args,
        output_shape=graph.nodes[nodes[-1]]["shape"],
        params=sum(graph.nodes[n]["params"] for n in nodes),
        macs=sum(graph.nodes[n]["macs"] for n in nodes),
    )
