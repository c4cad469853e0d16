"""``resdsl draw -o fig.html``: the figure as one self-contained, interactive page.

The page holds the columns :func:`resdsl.backends.draw.figure` reads from the IR
(as JSON, with each block's and stage's summary) and a small script that draws
them as inline SVG: pan by dragging, zoom with the wheel, hover a box for its
module names, output shape, parameters and MACs, click to collapse a block
(shift-click: its stage) and click a summary to expand it. Nothing is fetched:
no network access, no Graphviz, no torch.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from resdsl.backends.draw import DETAILS, Box, figure, retitle
from resdsl.ir import Network

_SCRIPT = Path(__file__).with_name("draw_html.js")
# The page may load nothing: inline script and style only.
_POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
_STYLE = """
body { margin: 0; font-family: Helvetica, Arial, sans-serif; background: #fff;
       display: flex; flex-direction: column; height: 100vh; overflow: hidden; }
#bar { flex: none; padding: 6px 10px; background: #f6f6f6; border-bottom: 1px solid #ddd; font-size: 13px; }
#bar button { margin-right: 6px; }
#figure { flex: 1 1 auto; min-height: 0; width: 100%; cursor: grab; }
#tooltip { position: fixed; display: none; background: #fffff4; border: 1px solid #999; padding: 6px 8px;
           font-size: 12px; pointer-events: none; box-shadow: 1px 1px 4px #0003; z-index: 2; }
.title { font-size: 14px; text-anchor: middle; }
.subtitle { font-size: 11px; text-anchor: middle; fill: #444; }
.note { font-size: 10px; text-anchor: end; fill: #333; }
.box text { font-size: 11px; text-anchor: middle; pointer-events: none; }
.box rect { stroke: #222; stroke-width: 0.8; }
.box { cursor: pointer; }
.box.image rect { stroke: #888; }
.box.marker rect { stroke: #b03030; stroke-dasharray: 4 3; }
.box.marker text { fill: #b03030; }
.box.summary rect { stroke-width: 1.6; }
.link { stroke: #222; stroke-width: 0.8; fill: none; }
.link.skip { stroke: #444; }
.shortcut { fill: none; stroke: #555; stroke-width: 1; }
.shortcut.projection { stroke: #1f5fa8; stroke-width: 1.4; }
.shortcut.dashed { stroke-dasharray: 5 4; }
.arc-label { font-size: 9px; fill: #1f5fa8; }
"""


def _box(box: Box) -> dict:
    return asdict(box)


def _summaries(network: Network, prefix: str, detail: str) -> dict[str, dict]:
    """Each block's (or stage's) box at that detail, keyed by its path (or stage name)."""
    summaries = {}
    for box in figure(network, prefix, detail).boxes:
        if box.style != "group":
            continue
        name = box.block if detail == "block" else box.stage
        entry = _box(box)
        entry["group"] = f"{detail}:{name}"
        summaries[name] = entry
    return summaries


def to_html(
    networks: Sequence[Network], *, detail: str = "layer", all_layers: bool = False, titles: Sequence[str] | None = None
) -> str:
    """The page, as text. ``detail`` sets what starts collapsed: nothing, every block or
    every stage. ``titles`` replace the columns' titles (the networks' names)."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}")
    figures = [figure(network, f"c{number}_", "layer", all_layers) for number, network in enumerate(networks)]
    retitle(figures, titles)
    columns = []
    collapsed = []
    for number, (network, column) in enumerate(zip(networks, figures)):
        prefix = f"c{number}_"
        blocks = _summaries(network, prefix, "block")
        stages = _summaries(network, prefix, "stage")
        if detail != "layer":
            collapsed += [f"{number}:{detail}:{name}" for name in (blocks if detail == "block" else stages)]
        columns.append(
            {
                "title": column.title,
                "subtitle": column.subtitle,
                "boxes": [_box(box) for box in column.boxes],
                "edges": [asdict(edge) for edge in column.edges],
                "arcs": [asdict(arc) for arc in column.arcs],
                "blocks": blocks,
                "stages": stages,
            }
        )
    # "</" never appears inside the script element, whatever a name holds.
    payload = json.dumps({"columns": columns, "collapsed": collapsed}, separators=(",", ":")).replace("</", "<\\/")
    script = _SCRIPT.read_text(encoding="utf-8")
    title = html.escape(", ".join(column.title for column in figures))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_POLICY}">
<title>{title}</title>
<style>{_STYLE}</style>
</head>
<body>
<div id="bar"><button id="expand">expand all</button><button id="blocks">collapse blocks</button>
<button id="stages">collapse stages</button><button id="whole">whole figure</button>
drag to pan, wheel to zoom, hover a box for its figures;
click a box to collapse its block, shift-click its stage, click a summary to expand it</div>
<svg id="figure" xmlns="http://www.w3.org/2000/svg"><g id="viewport"></g></svg>
<div id="tooltip"></div>
<script type="application/json" id="figure-data">{payload}</script>
<script>{script}</script>
</body>
</html>
"""
