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
    """One feature map: ``name`` as asked for, ``module`` the module whose output it is (as
    timm names it), ``value`` the module of the built model that computes it (a stage, or a
    layer)."""

    name: str
    module: str
    num_chs: int
    reduction: int | None  # None for a flat value (after the head's pooling)
    shape: tuple[int, ...]
    value: str = ""

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


def declared(network: Network) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The modules the spec's ``features`` setting lists: name -> (the built module that
    computes its value, shape).

    A module's value is the output of the last layer under its name (``stem.conv1`` covers
    ``stem.conv1.conv`` and ``stem.conv1.bn``), followed by the unlabelled layers without
    weights that read it directly (the activation that timm's ConvNormAct holds); a stage
    is one module, so a value inside one is its output. A layer without a module of its
    own (``final_conv: identity``) is computed by the layer it reads.
    """
    order = [network.node(node) for node in network.order()]
    stage_ends = {node.scope.stage: index for index, node in enumerate(order) if node.scope.stage is not None}
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name in network.settings.features:
        under = [
            index
            for index, node in enumerate(order)
            if not node.layer.graph_end
            and (node.name == name or node.name.startswith(name + ".") or node.scope.stage == name)
        ]
        if not under:
            raise ValueError(f"{network.name}'s features name '{name}', which is no module of it")
        index = under[-1]
        while index + 1 < len(order) and _carries(order[index], order[index + 1]):
            index += 1
        node = order[index]
        if node.scope.stage is not None:
            if stage_ends[node.scope.stage] != index:
                raise ValueError(f"{network.name}'s feature '{name}' ends inside stage {node.scope.stage}")
            found[name] = (node.scope.stage, tuple(node.shape))
            continue
        while not node.layer.builds_module and node.layer.aliases_input and node.inputs:
            node = network.node(node.inputs[0])
        if not node.layer.builds_module or node.layer.graph_end:
            raise ValueError(f"{network.name}'s feature '{name}' is computed by no module")
        found[name] = (node.scope.stage or node.name, tuple(order[index].shape))
    return found


def _carries(before: Any, after: Any) -> bool:
    """`after` continues the module `before` ends: an unlabelled layer without weights reading it alone."""
    return (
        after.label is None
        and not after.layer.graph_end
        and after.scope.stage is None
        and after.scope.section == before.scope.section
        and tuple(after.inputs) == (before.id,)
        and not after.params
        and len(before.users) == 1
    )


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
    listed = declared(network)
    known = {**available(network), **listed}
    if features is None:
        # timm's features_only: the modules the spec declares (`features [...]`), out_indices
        # counting them all and, by default, those at a reduction of 2 or more (timm leaves
        # out DLA's level0 so); without a declaration, the stages.
        choices = list(listed) if listed else stage_names(network)
        what = "declared features" if listed else "stages"
        if not choices:
            raise ValueError(f"{network.name} has no stages: name its features with features=(...)")
        if out_indices is None:
            names = [name for name in choices if not listed or (_reduction(network, known[name][1]) or 2) >= 2]
        else:
            names = []
            for index in out_indices:
                if not -len(choices) <= index < len(choices):
                    raise ValueError(f"out_indices: {index} is not the index of one of the {len(choices)} {what}")
                names.append(choices[index])
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
    result = []
    for name in names:
        if name not in known:
            raise ValueError(
                f"{network.name} has no feature '{name}'; the stages, the stem, the top-level layers and the "
                "declared features are: " + ", ".join(known)
            )
        value, shape = known[name]
        module = name if name in listed else value
        result.append(Feature(name, module, shape[0], _reduction(network, shape), shape, value))
    if len({feature.name for feature in result}) != len(result):
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


__all__ = [
    "Feature",
    "FeatureInfo",
    "HeadSplit",
    "available",
    "declared",
    "feature_info",
    "head_split",
    "stage_names",
]
