"""Folding parallel linear paths into one convolution, for inference.

RepVGG (Ding et al., 2021), ACNet and DBB train blocks whose paths from one value are
each linear in eval mode and summed: a KxK convolution with BN, a 1x1 convolution
with BN, a BN alone, the identity, an average pool. A sum of convolutions of one
input with one stride is one convolution: each path's kernel, zero-padded to the
largest, scaled by its BN, added. This pass finds such sums in the IR alone, with
no code for any block type, and rewrites the IR so that each becomes one ``conv``
node; the torch backend computes the folded weights (``fold_for_inference``).

A path is, reading from the summed value back: an optional ``bn``, after an optional
``conv`` (dilation 1) or windowed ``avgpool`` (no ceil mode; padding counted, or
none), each read by nothing else; the node it starts from is the path's source.
A path with neither is the identity. An ``add`` folds where every input is such a
path from one source, at least one path is a convolution, they share a stride
(the identity only stride 1), each kernel fits inside the largest one with their
paddings aligned, and the folded convolution gives the sum's shape.

This module never imports torch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from resdsl.ir import Network, Node
from resdsl.layers import Add, AvgPool, BatchNorm, Conv, ShapeProblem

Pair = tuple[int, int]


@dataclass(frozen=True)
class PathTerm:
    """One summed path: its linear node (``conv`` or ``avgpool``) and its ``bn``, either
    absent (both absent: the identity); and the kernel, padding, stride and groups
    that make it a convolution of the source."""

    linear: int | None
    norm: int | None
    kernel: Pair
    padding: Pair
    stride: Pair
    groups: int  # the source's channels for the identity, a BN or a pool (one per channel)


@dataclass(frozen=True)
class ParallelFold:
    """A sum of paths from one value, and the convolution that replaces it."""

    join: int  # the add node
    source: int  # the value every path reads
    terms: tuple[PathTerm, ...]
    conv: Conv  # the folded convolution (with bias)
    named_after: int  # the conv node whose name and place the folded one takes

    @property
    def removed(self) -> tuple[int, ...]:
        """The nodes the folded convolution replaces, each before the nodes it reads."""
        nodes = [self.join]
        for term in self.terms:
            nodes += [node for node in (term.norm, term.linear) if node is not None]
        # A value joined with itself (`add y, y`) is two terms over the same nodes: each is removed once.
        return tuple(dict.fromkeys(nodes))


def find_parallel_folds(network: Network) -> list[ParallelFold]:
    """Every foldable sum of parallel linear paths in the network, in execution order."""
    folds = []
    for node in network.graph.walk(Add.kind):
        if len(node.inputs) >= 2:
            fold = _fold_of(network, node)
            if fold is not None:
                folds.append(fold)
    return folds


def _fold_of(network: Network, join: Node) -> ParallelFold | None:
    graph = network.graph
    shape = join.shape
    if len(shape) != 3:
        return None
    found = [_path(network, value) for value in join.inputs]
    if any(path is None for path in found):
        return None
    sources = {source for source, _ in found}  # type: ignore[misc]
    terms = [term for _, term in found]  # type: ignore[misc]
    if len(sources) != 1 or not any(_is_conv(network, term) for term in terms):
        return None
    (source,) = sources
    if len({term.stride for term in terms}) != 1:
        return None
    kernel = (max(term.kernel[0] for term in terms), max(term.kernel[1] for term in terms))
    padding = (max(term.padding[0] for term in terms), max(term.padding[1] for term in terms))
    for term in terms:
        for axis in (0, 1):
            offset = padding[axis] - term.padding[axis]
            if offset + term.kernel[axis] > kernel[axis]:
                return None  # the kernels' centres do not line up
    groups = math.gcd(*(term.groups for term in terms))
    conv = Conv(kernel, shape[0], terms[0].stride, padding, (1, 1), groups, bias=True)
    try:
        if conv.output_shape([graph.node(source).shape]) != shape:
            return None
    except ShapeProblem:  # this sum is not one convolution
        return None
    convs = [term for term in terms if _is_conv(network, term)]
    widest = max(convs, key=lambda term: term.kernel[0] * term.kernel[1])
    return ParallelFold(join.id, source, tuple(terms), conv, widest.linear)  # type: ignore[arg-type]


def _is_conv(network: Network, term: PathTerm) -> bool:
    return term.linear is not None and isinstance(network.graph.node(term.linear).layer, Conv)


def _path(network: Network, value: int) -> tuple[int, PathTerm] | None:
    """(source, term) for the path ending at `value`; None where it is not linear."""
    graph = network.graph
    node = graph.node(value)
    norm = linear = None
    if isinstance(node.layer, BatchNorm) and len(node.users) == 1:
        norm, node = node.id, graph.node(node.inputs[0])
    layer = node.layer
    foldable_pool = (
        isinstance(layer, AvgPool)
        and not layer.is_global
        and not layer.ceil_mode
        and (layer.count_include_pad or layer.padding == (0, 0))
    )
    # A standardised convolution's effective weights are not its stored ones.
    foldable_conv = isinstance(layer, Conv) and layer.dilation == (1, 1) and not layer.standardize
    if (foldable_pool or foldable_conv) and len(node.users) == 1:
        linear, node = node.id, graph.node(node.inputs[0])
    source = node
    channels = source.shape[0]
    if linear is None:
        if graph.node(value).shape != source.shape:
            return None
        return source.id, PathTerm(None, norm, (1, 1), (0, 0), (1, 1), channels)
    layer = graph.node(linear).layer
    if isinstance(layer, Conv):
        return source.id, PathTerm(linear, norm, layer.kernel, layer.padding, layer.stride, layer.groups)
    return source.id, PathTerm(linear, norm, layer.kernel, layer.padding, layer.stride, channels)


#: The fields a folded convolution takes from the convolution it is named after.
def _kept_fields(template: Node) -> dict[str, Any]:
    """What the folded convolution keeps of the node it is named after: where it was written and its name."""
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


def apply_parallel_folds(network: Network, folds: list[ParallelFold]) -> tuple[Network, dict[int, int]]:
    """A copy of the network in which each fold's nodes are one ``conv`` node, named and
    placed as the fold's largest convolution; and each fold's join mapped to its new node."""
    folded = copy.deepcopy(network, {id(network.instance): network.instance})
    graph = folded.graph
    replaced: dict[int, int] = {}
    for fold in folds:
        template = graph.node(fold.named_after)
        shape = graph.node(fold.join).shape
        source = replaced.get(fold.source, fold.source)  # an earlier fold's sum, now its convolution
        fields = _kept_fields(template)
        params, macs = fold.conv.cost([graph.node(source).shape], shape)
        node = graph.create(fold.conv, (source,), shape=shape, params=params, macs=macs, **fields).id
        graph.replace_all_uses_with(fold.join, node)
        gone = set(fold.removed)
        for block in folded.blocks:
            if gone & set(block.nodes):
                position = min(block.nodes.index(old) for old in gone if old in block.nodes)
                block.nodes = [old for old in block.nodes if old not in gone]
                block.nodes.insert(position, node)
            # The sum may be where a block ends, and so where the next one starts.
            if block.exit == fold.join:
                block.exit = node
            if block.entry == fold.join:
                block.entry = node
            if block.tap == fold.join:
                block.tap = node
            if block.join == fold.join:
                block.join = None
                block.plan = None
            block.shortcut_nodes = tuple(old for old in block.shortcut_nodes if old not in gone)
        # Erase from the sum back to the source, so that nothing erased is still read.
        for old in fold.removed:
            graph.erase(old)
        replaced[fold.join] = node
    folded.num_params = sum(node.params for node in graph.walk())
    folded.macs = sum(node.macs for node in graph.walk())
    return folded, replaced


__all__ = ["ParallelFold", "PathTerm", "apply_parallel_folds", "find_parallel_folds"]
