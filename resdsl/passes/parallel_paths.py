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

import math
from dataclasses import dataclass

from resdsl.ir import Network, Node
from resdsl.layers import Add, AvgPool, BatchNorm, Conv, ShapeProblem
from resdsl.passes.rewrite import copy_network, kept_fields, norm_eps, substitute

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


@dataclass(frozen=True)
class FoldedTerm:
    """One path of a parallel fold, by module names: what the weights transform reads."""

    conv: str | None  # the path's convolution (None: the identity, a BN alone or a pool)
    norm: str | None  # the path's BN
    eps: float  # the BN's eps
    kernel: Pair
    padding: Pair
    groups: int


@dataclass(frozen=True)
class ParallelPathFold:
    """The record a fold leaves on the rewritten network (``Network.rewrites``)."""

    conv: str  # the folded convolution's module name
    layer: Conv
    in_channels: int
    terms: tuple[FoldedTerm, ...]


def _record(network: Network, fold: ParallelFold) -> ParallelPathFold:
    graph = network.graph
    terms = []
    for term in fold.terms:
        conv = graph.node(term.linear) if term.linear is not None else None
        norm = graph.node(term.norm) if term.norm is not None else None
        terms.append(
            FoldedTerm(
                conv.name if conv is not None and isinstance(conv.layer, Conv) else None,
                norm.name if norm is not None else None,
                norm_eps(norm.layer) if norm is not None else 0.0,
                term.kernel,
                term.padding,
                term.groups,
            )
        )
    name = graph.node(fold.named_after).name
    return ParallelPathFold(name, fold.conv, graph.node(fold.source).shape[0], tuple(terms))  # type: ignore[arg-type]


def fold_parallel_paths(network: Network) -> Network:
    """The rewrite: every foldable sum of parallel linear paths as one ``conv`` node."""
    folded, _ = apply_parallel_folds(network, find_parallel_folds(network))
    return folded


def apply_parallel_folds(network: Network, folds: list[ParallelFold]) -> tuple[Network, dict[int, int]]:
    """A copy of the network in which each fold's nodes are one ``conv`` node, named and
    placed as the fold's largest convolution; and each fold's join mapped to its new node."""
    folded = copy_network(network)
    graph = folded.graph
    replaced: dict[int, int] = {}
    records = []
    for fold in folds:
        records.append(_record(network, fold))
        template = graph.node(fold.named_after)
        shape = graph.node(fold.join).shape
        source = replaced.get(fold.source, fold.source)  # an earlier fold's sum, now its convolution
        node = graph.create(fold.conv, (source,), shape=shape, **kept_fields(template)).id
        substitute(folded, fold.join, node, fold.removed)
        replaced[fold.join] = node
    folded.rewrites = (*network.rewrites, *records)
    return folded, replaced


__all__ = [
    "FoldedTerm",
    "ParallelFold",
    "ParallelPathFold",
    "PathTerm",
    "apply_parallel_folds",
    "find_parallel_folds",
    "fold_parallel_paths",
]
