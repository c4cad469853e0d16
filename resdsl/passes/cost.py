"""Pass 4: exact parameter counts and multiply-accumulates.

MACs count the multiply-accumulates of convolutions (ECA's channel convolution
included) and fully connected layers, shortcuts and side branches included, for one
input image: the paper's "FLOPs (multiply-adds)" and torchvision's ``_ops``. BN,
activations, pooling, joins are not counted, by the same convention. Parameters are
trainable ones (BN's running statistics are buffers, not parameters). Each kind's
:meth:`~resdsl.layers.Layer.cost` is its one rule.

Writes ``params`` and ``macs`` on every node, and the network's totals and
per-stage figures.
"""

from __future__ import annotations

from resdsl.ir import Network, Node, Scope, StageSummary


def count_cost(network: Network) -> None:
    graph = network.graph
    groups: list[list] = []  # [name, section, scope-of-first-block, nodes]
    total_params = total_macs = 0
    for node in graph.walk():
        inputs = [graph.node(source).shape for source in node.inputs]
        params, macs = node.layer.cost(inputs, node.shape) if inputs else (0, 0)
        node.params, node.macs = params, macs
        total_params += params
        total_macs += macs
        scope = node.scope
        if node.layer.graph_end:
            continue
        name = scope.stage if scope.stage is not None else scope.section
        if not groups or groups[-1][0] != name:
            groups.append([name, scope.section, scope, []])
        groups[-1][3].append(node)
    network.num_params, network.macs = total_params, total_macs
    network.stages = tuple(_summary(*group) for group in groups)


def _summary(name: str, section: str, scope: Scope, nodes: list[Node]) -> StageSummary:
    blocks = len({node.scope.index for node in nodes}) if section == "stage" else 0
    return StageSummary(
        name=name,
        section=section,
        blocks=blocks,
        block=scope.block,
        args=scope.args,
        output_shape=nodes[-1].shape,
        params=sum(node.params for node in nodes),
        macs=sum(node.macs for node in nodes),
    )
