"""Pass 2: block structure, computed once for every backend.

For every block instance (:class:`~resdsl.ir.BlockInstance`), expand recorded
where it starts, where its shortcut is tapped and joined, and which nodes it
holds, its shortcut plan and shortcut nodes. This pass adds
what follows from shapes: the block's ``stride`` (the spatial reduction from its
input to its output). Backends read these fields and never walk the graph to
rediscover a block.
"""

from __future__ import annotations

from resdsl.ir import Network


def block_structure(network: Network) -> None:
    graph = network.graph
    for block in network.blocks:
        entry, exit_ = graph.node(block.entry).shape, graph.node(block.exit).shape
        if len(entry) == 3 and len(exit_) == 3 and exit_[1] and exit_[2]:
            block.stride = (max(1, -(-entry[1] // exit_[1])), max(1, -(-entry[2] // exit_[2])))
        block.nodes = sorted(set(block.nodes))
