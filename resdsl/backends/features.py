"""Backbones: feature maps, ``forward_features``, ``forward_head`` and ``reset_classifier``.

The built model's forward is traced with torch.fx, each stage one call (a leaf
module), as torchvision's ``create_feature_extractor`` does; the graph is then cut
where the IR says (:mod:`resdsl.features`): after the last feature asked for, or at
the value entering the head. The cut graphs share the model's modules, so they see
its weights and a replaced classifier. Nothing after the last feature is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from resdsl.backends.torch_modules import Stage
from resdsl.features import FeatureInfo, feature_info, head_split
from resdsl.ir import Network


class _StageTracer(fx.Tracer):
    """Keeps each stage one call, so that a stage's output is one node of the graph, and
    each module a feature is read from (a weight-standardised conv is traced through
    otherwise, as a module of its own class)."""

    def __init__(self, leaves: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return (
            isinstance(module, Stage) or qualified_name in self.leaves or super().is_leaf_module(module, qualified_name)
        )


def _trace(model: nn.Module, leaves: frozenset[str] = frozenset()) -> fx.Graph:
    return _StageTracer(leaves).trace(model)


def _module_nodes(graph: fx.Graph) -> dict[str, fx.Node]:
    return {node.target: node for node in graph.nodes if node.op == "call_module"}


def _cut(model: nn.Module, graph: fx.Graph, start: fx.Node | None, outputs: Any, last: fx.Node) -> fx.GraphModule:
    """The part of `graph` from `start` (the input, where None) through `last`, returning
    `outputs` (a node, or a list or dict of them) of the copied graph."""
    new = fx.Graph()
    copied: dict[fx.Node, fx.Node] = {}
    if start is not None:
        copied[start] = new.placeholder("x")
    started = start is None
    for node in graph.nodes:
        if not started:
            started = node is start
            continue
        if node.op == "output":
            break
        missing = [source for source in node.all_input_nodes if source not in copied]
        if missing:
            raise ValueError(f"the head reads {missing[0].name}, a value from before its input: it cannot be split")
        copied[node] = new.node_copy(node, copied.__getitem__)
        if node is last:
            break
    new.output(fx.map_arg(outputs, copied.__getitem__))
    return fx.GraphModule(model, new, class_name="Backbone")


def feature_extractor(
    model: nn.Module,
    network: Network,
    features: Sequence[str] | None = None,
    out_indices: Sequence[int] | None = None,
    as_list: bool = False,
) -> fx.GraphModule:
    """A module returning the feature maps (a dict by name, or a list with ``as_list``):
    the features named, or the stages at ``out_indices`` (all of them by default)."""
    info = feature_info(network, features, out_indices)
    graph = _trace(model, frozenset(feature.value for feature in info))
    nodes = _module_nodes(graph)
    chosen = [nodes[feature.value] for feature in info]
    order = {node: index for index, node in enumerate(graph.nodes)}
    last = max(chosen, key=order.__getitem__)
    outputs: Any = list(chosen) if as_list else {feature.name: node for feature, node in zip(info, chosen)}
    extractor = _cut(model, graph, None, outputs, last)
    extractor.feature_info = info
    extractor.network = network
    extractor.__class__ = type(type(extractor).__name__, (type(extractor), ExtractorMethods), {})
    return extractor


class ExtractorMethods:
    """The backbone methods on a feature extractor, whose output is its feature maps: it
    is built without the head (nothing after the last feature), so there is no head to run
    or classifier to replace, and it says so rather than lacking the methods."""

    network: Network

    def forward_features(self, x: torch.Tensor) -> Any:
        """The feature maps, as calling the extractor gives them."""
        return self(x)  # type: ignore[operator]

    def forward_head(self, x: Any, pre_logits: bool = False) -> torch.Tensor:
        raise ValueError(
            f"this {self.network.name} extractor returns feature maps and has no head: "
            "load it without features/features_only for forward_head"
        )

    def reset_classifier(self, num_classes: int) -> None:
        """With 0, nothing to do (an extractor has no classifier); otherwise a ValueError."""
        if num_classes:
            raise ValueError(
                f"this {self.network.name} extractor has no classifier to replace: "
                "load it without features/features_only for reset_classifier"
            )


class BackboneMethods:
    """timm's backbone methods on a built model: mixed into its class by :func:`attach`."""

    network: Network

    def _split(self) -> tuple[fx.GraphModule, fx.GraphModule, fx.GraphModule]:
        cached = self.__dict__.get("_resdsl_head_split")
        if cached is None:
            split = head_split(self.network)
            graph = _trace(self)  # type: ignore[arg-type]
            nodes = _module_nodes(graph)
            cut = nodes[split.features]
            output = next(node for node in graph.nodes if node.op == "output")
            (result,) = output.args
            features = _cut(self, graph, None, cut, cut)  # type: ignore[arg-type]
            head = _cut(self, graph, cut, result, result)  # type: ignore[arg-type]
            classifier = getattr(self, "_resdsl_classifier", split.classifier)
            if classifier is None:
                pre_logits = head
            else:
                (before,) = nodes[classifier].args
                pre_logits = _cut(self, graph, cut, before, before)  # type: ignore[arg-type]
            cached = (features, head, pre_logits)
            self.__dict__["_resdsl_head_split"] = cached
        return cached

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The value entering the head: the last stage's output, before pooling."""
        return self._split()[0](x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The head on forward_features' output; ``pre_logits``: stop before the classifier."""
        _, head, before_classifier = self._split()
        return (before_classifier if pre_logits else head)(x)

    @property
    def num_features(self) -> int:
        return head_split(self.network).num_features

    def get_classifier(self) -> nn.Module:
        split = head_split(self.network)
        if split.classifier is None:
            raise ValueError(f"{self.network.name}'s head has no fc")
        return self.get_submodule(split.classifier)  # type: ignore[attr-defined]

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier of ``num_classes`` outputs (PyTorch's default initialisation, as
        the spec's fc layers get), or none with 0: the head then ends in its pooled features.
        ``model.network`` still describes the network as compiled."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"reset_classifier takes a number of classes, 0 or more; got {num_classes!r}")
        split = head_split(self.network)
        if split.classifier is None:
            raise ValueError(f"{self.network.name}'s head has no fc")
        # The classifier's shape comes from the IR, not from the module in its place: after
        # reset_classifier(0) that module is an nn.Identity.
        node = next(node for node in self.network.nodes("fc") if node.name == split.classifier)
        in_features = math.prod(self.network.node(node.inputs[0]).shape)
        bias = bool(getattr(node.layer, "bias", True))
        new: nn.Module
        if num_classes > 0:
            params = num_classes * (in_features + int(bias))
            limit = self.network.limits.max_params
            if params > limit:
                raise ValueError(
                    f"a classifier of {num_classes:,} classes has {params:,} parameters, more than the limit of "
                    f"{limit:,} (Limits(max_params=...))"
                )
            like = next(self.parameters(), None)  # type: ignore[attr-defined]
            new = nn.Linear(in_features, num_classes, bias=bias)
            if like is not None:
                new.to(device=like.device, dtype=like.dtype)
        else:
            new = nn.Identity()
        *parents, last = split.classifier.split(".")
        owner = self.get_submodule(".".join(parents)) if parents else self  # type: ignore[attr-defined]
        owner.add_module(last, new)  # replaces the child of that name
        self.num_classes = num_classes
        self.__dict__.pop("_resdsl_head_split", None)  # the cut graphs hold the old module


_CLASSES: dict[type, type] = {}


def attach(model: nn.Module) -> nn.Module:
    """Give a built model timm's backbone methods (its class gains :class:`BackboneMethods`)."""
    base = type(model)
    if base not in _CLASSES:
        _CLASSES[base] = type(base.__name__, (base, BackboneMethods), {"__module__": base.__module__})
    model.__class__ = _CLASSES[base]
    model.num_classes = model.network.output_shape[0]
    return model


__all__ = ["BackboneMethods", "ExtractorMethods", "FeatureInfo", "attach", "feature_extractor"]
