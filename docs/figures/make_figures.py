"""Regenerate the figures in docs/figures/ from the shipped specs: `python docs/figures/make_figures.py`.

- fig3.svg: VGG-19, the 34-layer plain network and ResNet-34 side by side (the paper's Fig. 3);
- basic_block.svg and bottleneck_block.svg: one block of each kind with every layer (Fig. 2 and Fig. 5);
- resnet50_stages.svg: ResNet-50 at stage detail with shapes and parameters (Table 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import resdsl  # noqa: E402
from resdsl.backends.draw import render, to_dot  # noqa: E402

BLOCK = """
network {name} {{
    input {channels}x56x56
    shortcut B
    stage {stage}: 1 x {block}(64)
}}
"""


def main() -> None:
    figures = {
        "fig3.svg": to_dot([resdsl.compile(name) for name in ("vgg19", "plain34", "resnet34")]),
        "basic_block.svg": to_dot(
            [resdsl.compile_text(BLOCK.format(name="basic", channels=64, stage="conv2_x", block="basic"))],
            all_layers=True,
            shapes=True,
        ),
        "bottleneck_block.svg": to_dot(
            [resdsl.compile_text(BLOCK.format(name="bottleneck", channels=256, stage="conv2_x", block="bottleneck"))],
            all_layers=True,
            shapes=True,
        ),
        "resnet50_stages.svg": to_dot([resdsl.compile("resnet50")], detail="stage", shapes=True),
    }
    for name, dot in figures.items():
        print(render(dot, HERE / name))


if __name__ == "__main__":
    main()
