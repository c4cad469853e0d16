"""A network's architecture fingerprint: what a run's checkpoint records, so that its
weights are not loaded into another network by accident. Never imports torch."""

from __future__ import annotations

import hashlib
import json

from resdsl.ir import Network


def network_fingerprint(network: Network) -> str:
    """A hash of the architecture: every layer's name, kind, shape, parameters and inputs."""
    graph = network.graph
    rows = [
        [
            node.name,
            node.kind,
            list(node.shape),
            node.params,
            sorted(graph.node(source).name for source in set(node.inputs)),
        ]
        for node in graph.walk()
    ]
    return hashlib.sha256(json.dumps([network.name, rows]).encode()).hexdigest()


__all__ = ["network_fingerprint"]
