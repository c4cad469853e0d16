"""Fusing written-out attention into ``scaled_dot_product_attention``, from the IR alone.

A researcher writes attention from its pieces (docs/language.md, "Token sequences and
attention"): ``matmul q, kt`` (kt a ``transpose`` of k), an optional ``scale S``, a
``softmax`` over the last axis, ``matmul a, v``. This rewrite finds that pattern in the
graph, with no code for any block type, and puts one ``fused_attention`` node in its
place, which the torch backend emits as ``torch.nn.functional.scaled_dot_product_attention
(q, k, v, scale=S)`` (one kernel, no N x N tensor kept for backward by the flash and
memory-efficient kernels). It moves no weights, so it leaves no record for a backend.

Each intermediate value (the transpose, both products, the scale, the softmax) must be
read by the next step alone: a score tensor that anything else reads stays as written.
This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from resdsl.ir import Network, Node
from resdsl.layers import FusedAttention, Matmul, Scale, Softmax, Transpose
from resdsl.passes.rewrite import copy_network, kept_fields, substitute


@dataclass(frozen=True)
class AttentionPattern:
    """One written-out attention: the nodes it replaces, and what the fused node reads."""

    output: int  # the second matmul, A V
    query: int
    key: int  # the value before its transpose
    value: int
    scale: float
    removed: tuple[int, ...]  # readers first


def find_attention(network: Network) -> list[AttentionPattern]:
    """Every softmax(Q K^T * S) V in the network, in execution order."""
    graph = network.graph
    found = []
    for node in graph.walk(Matmul.kind):
        pattern = _pattern(network, node)
        if pattern is not None:
            found.append(pattern)
    return found


def _only_reader(network: Network, node: Node, reader: int) -> bool:
    return node.users == (reader,)


def _pattern(network: Network, product: Node) -> AttentionPattern | None:
    graph = network.graph
    weights_id, value_id = product.inputs
    weights = graph.node(weights_id)
    if not isinstance(weights.layer, Softmax) or weights.layer.axis != -1:
        return None
    if not _only_reader(network, weights, product.id):
        return None
    scores = graph.node(weights.inputs[0])
    scale = 1.0
    removed = [product.id, weights.id]
    if isinstance(scores.layer, Scale):
        if not _only_reader(network, scores, weights.id):
            return None
        scale, removed = scores.layer.factor, [*removed, scores.id]
        reader, scores = scores.id, graph.node(scores.inputs[0])
    else:
        reader = weights.id
    if not isinstance(scores.layer, Matmul) or not _only_reader(network, scores, reader):
        return None
    query_id, transposed_id = scores.inputs
    transposed = graph.node(transposed_id)
    if not isinstance(transposed.layer, Transpose) or not _only_reader(network, transposed, scores.id):
        return None
    removed += [scores.id, transposed.id]
    key_id = transposed.inputs[0]
    query, key, value = graph.node(query_id), graph.node(key_id), graph.node(value_id)
    if query.shape[:-2] != key.shape[:-2] or key.shape[:-1] != value.shape[:-1]:
        return None
    return AttentionPattern(product.id, query_id, key_id, value_id, scale, tuple(removed))


def fuse_attention(network: Network) -> Network:
    """The rewrite: each written-out attention as one ``fused_attention`` node."""
    fused = copy_network(network)
    graph = fused.graph
    for pattern in find_attention(network):
        template = graph.node(pattern.output)
        node = graph.create(
            FusedAttention(pattern.scale),
            (pattern.query, pattern.key, pattern.value),
            shape=template.shape,
            **kept_fields(template),
        )
        substitute(fused, pattern.output, node.id, pattern.removed)
    return fused


__all__ = ["AttentionPattern", "find_attention", "fuse_attention"]
