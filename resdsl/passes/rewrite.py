"""IR -> IR rewrites: what they share, and the inference rewrites in order.

A rewrite is a pure function from a compiled :class:`~resdsl.ir.Network` to a new one
(the argument is left as it was): it copies the network, changes the copy's graph
through :class:`~resdsl.ir.Graph`'s methods, keeps the block records naming nodes
that exist, and appends to ``network.rewrites`` one record per change, saying what a
backend must do to the weights (the torch backend's ``WEIGHT_TRANSFORMS`` reads them;
a record names modules, never node ids, so it stays meaningful in the new IR).

A rewrite never patches a derived figure: :func:`apply_rewrite` runs the analyses
(:data:`resdsl.passes.ANALYSES`: block strides, costs, stage totals) on the result
and lints it, so a folded network's stages, totals and table describe what it
computes. This module never imports torch.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from resdsl.ir import Network, Node
from resdsl.layers import BatchNorm, Conv

Rewrite = Callable[[Network], Network]


def copy_network(network: Network) -> Network:
    """A deep copy to rewrite: its graph, nodes and block records are its own."""
    return copy.deepcopy(network)


def kept_fields(template: Node) -> dict[str, Any]:
    """What a node that replaces `template` keeps of it: where it was written, its place and its name."""
    return {
        "pos": template.pos,
        "trace": template.trace,
        "scope": template.scope,
        "block": template.block,
        "names": template.names,
        "label": template.label,
        "label_pos": template.label_pos,
        "written": template.written,
        "role": template.role,
        "name": template.name,
    }


def substitute(network: Network, value: int, replacement: int, gone: Iterable[int]) -> None:
    """`replacement` takes the place of the nodes `gone`, whose value was `value`:
    every reader of `value` reads `replacement`, the block records follow, and the
    nodes gone are erased (readers first, so that nothing erased is still read)."""
    graph = network.graph
    gone_list = list(dict.fromkeys(gone))  # a value joined with itself lists a node twice
    gone_set = set(gone_list)
    graph.replace_all_uses_with(value, replacement)
    for block in network.blocks:
        if gone_set & set(block.nodes):
            position = min(block.nodes.index(old) for old in gone_set if old in block.nodes)
            block.nodes = [old for old in block.nodes if old not in gone_set]
            block.nodes.insert(position, replacement)
        # The value gone may be where a block ends, and so where the next one starts; a
        # block may also start inside what was folded (its first node a folded BN).
        if block.exit in gone_set or block.exit == value:
            block.exit = replacement
        if block.entry in gone_set or block.entry == value:
            block.entry = replacement
        if block.tap in gone_set or block.tap == value:
            block.tap = replacement
        if block.join in gone_set:
            block.join = None
            block.plan = None
        block.shortcut_nodes = tuple(old for old in block.shortcut_nodes if old not in gone_set)
    for old in _readers_first(network, gone_set):
        graph.erase(old)


def _readers_first(network: Network, nodes: set[int]) -> list[int]:
    order = network.graph.execution_order()
    return [node for node in reversed(order) if node in nodes]


def norm_eps(layer: Any) -> float:
    """A BN's eps."""
    return float(layer.eps)


# BN into its convolution ------------------------------------------------------------


@dataclass(frozen=True)
class BatchNormFold:
    """A BN folded into the convolution before it: ``conv``'s weight is scaled per output
    channel by ``gamma / sqrt(var + eps)`` and its bias becomes ``beta + (b - mean) * scale``."""

    conv: str  # the convolution's module name (kept by the folded one)
    norm: str  # the BN's module name (gone)
    eps: float
    had_bias: bool


def fold_batch_norms(network: Network) -> Network:
    """Every BN that alone reads a convolution nothing else reads, folded into it.

    Only there: a BN after a join, or after a convolution whose output a branch also
    reads, stays. A standardised convolution's effective weights are not its stored
    ones, so it keeps its BN. A BN that starts a block stays apart from a convolution
    that ends the one before: the folded node would belong to both.
    """
    folded = copy_network(network)
    graph = folded.graph
    records = []
    for node in list(graph.walk(BatchNorm.kind)):
        if len(node.inputs) != 1 or len(node.shape) != 3:
            continue
        source = graph.node(node.inputs[0])
        conv = source.layer
        if not isinstance(conv, Conv) or conv.standardize or source.users != (node.id,):
            continue
        if source.block != node.block:
            continue
        layer = dataclasses.replace(conv, bias=True)
        fields = kept_fields(source)
        replacement = graph.create(layer, source.inputs, shape=node.shape, **fields)
        records.append(BatchNormFold(source.name, node.name, norm_eps(node.layer), conv.bias))
        substitute(folded, node.id, replacement.id, (node.id, source.id))
    folded.rewrites = (*network.rewrites, *records)
    return folded


__all__ = ["BatchNormFold", "Rewrite", "copy_network", "fold_batch_norms", "kept_fields", "substitute"]
