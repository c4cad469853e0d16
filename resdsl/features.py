"""What a network offers as a backbone, read from the IR before anything is built.

A *feature* is a named value of the forward pass: a stage's output (``conv4_x``,
``layer3``), the stem's output (``stem``), or a top-level layer's output by its module
name (``relu``, ``maxpool``). :func:`feature_info` gives each one's channels,
reduction (input size over its size, timm's ``reduction``), shape and module, and
:func:`head_split` says where the head begins and which layer is the classifier.
The torch side (:mod:`resdsl.backends.features`) builds on these; nothing here
imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from resdsl.ir import Network


@dataclass(frozen=True)
class Feature:
    """One feature map: ``name`` as asked for, ``module`` the module whose output it is."""

    name: str
    module: str
    num_chs: int
    reduction: int | None  # None for a flat value (after the head's pooling)
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        """timm's form of one entry: ``{"num_chs": ..., "reduction": ..., "module": ...}``."""
        return {"num_chs": self.num_chs, "reduction": self.reduction, "module": self.module, "name": self.name}


class FeatureInfo(Sequence[Feature]):
    """The features of a backbone, in order; with timm's accessors (``channels()``,
    ``reduction()``, ``module_name()``), each optionally for one index."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self._features = tuple(features)

    def __getitem__(self, index):  # type: ignore[override]
        return self._features[index]

    def __len__(self) -> int:
        return len(self._features)

    def __iter__(self) -> Iterator[Feature]:
        return iter(self._features)

    def __repr__(self) -> str:
        return f"FeatureInfo({[feature.as_dict() for feature in self._features]})"

    def _get(self, read: Callable[[Feature], Any], index: int | None) -> Any:
        if index is not None:
            return read(self._features[index])
        return [read(feature) for feature in self._features]

    def channels(self, index: int | None = None) -> Any:
        return self._get(lambda feature: feature.num_chs, index)

    def reduction(self, index: int | None = None) -> Any:
        return self._get(lambda feature: feature.reduction, index)

    def module_name(self, index: int | None = None) -> Any:
        return self._get(lambda feature: feature.module, index)

    def names(self) -> list[str]:
        return [feature.name for feature in self._features]

    def get_dicts(self) -> list[dict[str, Any]]:
        return [feature.as_dict() for feature in self._features]


def _reduction(network: Network, shape: tuple[int, ...]) -> int | None:
    if len(shape) != 3:
        return None
    return max(1, network.input_shape[1] // shape[1])


def available(network: Network) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every name a feature may be asked by: name -> (module, shape), in forward order.

    Stages and the stem by their names (a stage is one module; the stem's value is its
    last layer's output), and each top-level layer by its module name.
    """
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    last_of_section: dict[str, tuple[str, tuple[int, ...]]] = {}
    for node in network.nodes():
        scope = node.scope
        if node.layer.graph_end or scope.stage is not None:
            continue
        found[node.name] = (node.name, tuple(node.shape))
        last_of_section[scope.section] = found[node.name]
    ordered: dict[str, tuple[str, tuple[int, ...]]] = {}
    for summary in network.stages:
        if summary.section == "stage":
            ordered[summary.name] = (summary.name, tuple(summary.output_shape))
        elif summary.section == "stem" and "stem" in last_of_section:
            ordered.setdefault("stem", last_of_section["stem"])
    return {**ordered, **found}


def stage_names(network: Network) -> list[str]:
    """The stages, in order: the default features of ``features_only``."""
    return [summary.name for summary in network.stages if summary.section == "stage"]


def feature_info(
    network: Network, features: Sequence[str] | None = None, out_indices: Sequence[int] | None = None
) -> FeatureInfo:
    """The features asked for by name, or the stages' outputs (those at ``out_indices``,
    negative indices from the end, as Python's). A ValueError names what is available."""
    if features is not None and out_indices is not None:
        raise ValueError("give features (names) or out_indices (of the stages), not both")
    names: list[str]
    if features is None:
        stages = stage_names(network)
        if not stages:
            raise ValueError(f"{network.name} has no stages: name its features with features=(...)")
        if out_indices is None:
            names = stages
        else:
            names = []
            for index in out_indices:
                if not -len(stages) <= index < len(stages):
                    raise ValueError(f"out_indices: {index} is not the index of one of the {len(stages)} stages")
                names.append(stages[index])
    else:
        if isinstance(features, str):
            features = (features,)
        names = list(features)
    if not names:
        # An empty selection would build a module that returns nothing (and max() of no nodes fails).
        raise ValueError(
            f"no features asked for ({'features' if features is not None else 'out_indices'}=() is empty): "
            "name at least one, or leave it out for every stage"
        )
    known = available(network)
    result = []
    for name in names:
        if name not in known:
            raise ValueError(
                f"{network.name} has no feature '{name}'; the stages, the stem and the top-level layers are: "
                + ", ".join(known)
            )
        module, shape = known[name]
        result.append(Feature(name, module, shape[0], _reduction(network, shape), shape))
    if len({feature.module for feature in result}) != len(result):
        raise ValueError("a feature is asked for twice")
    return FeatureInfo(result)


@dataclass(frozen=True)
class HeadSplit:
    """Where ``forward_features`` ends and ``forward_head`` begins."""

    features: str  # the module whose output enters the head
    num_features: int  # its channels
    classifier: str | None  # the head's last fc, which reset_classifier replaces
    num_classes: int


def head_split(network: Network) -> HeadSplit:
    """The value entering the head section, and the head's classifier (its last fc)."""
    head = [node for node in network.nodes() if node.scope.section == "head"]
    if not head:
        raise ValueError(f"{network.name} has no head section: forward_features is its whole forward")
    if not head[0].inputs:  # pragma: no cover - a head always reads something
        raise ValueError(f"{network.name}'s head reads nothing")
    entering = network.node(head[0].inputs[0])
    scope = entering.scope
    module = scope.stage if scope.stage is not None else entering.name
    classifier = None
    for node in head:
        if node.kind == "fc":
            classifier = node.name
    channels = entering.shape[0]
    return HeadSplit(module, channels, classifier, network.output_shape[0])


__all__ = ["Feature", "FeatureInfo", "HeadSplit", "available", "feature_info", "head_split", "stage_names"]
