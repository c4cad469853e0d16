"""Regenerate the figures in docs/figures/ from the shipped specs: `python docs/figures/make_figures.py`.

- fig3.svg: VGG-19, the 34-layer plain network and ResNet-34 side by side (the paper's Fig. 3);
- basic_block.svg and bottleneck_block.svg: one block of each kind with every layer (Fig. 2 and Fig. 5);
- resnet50_stages.svg: ResNet-50 at stage detail with shapes and parameters (Table 1);
- branches.svg: squeeze-and-excitation branches, drop path and a written projection
  (avg_down) beside a pre-activation network whose projection starts at its tap
  (tests/fixtures/draw/branches.res);
- cifar_blocks.svg: ResNet-20 and its plain twin at block detail;
- options_abc.svg: ResNet-18 with shortcut options A, B and C;
- paths.svg: several paths side by side: an Inception-ResNet-A-like block
  (tests/fixtures/draw/inception_resnet.res) and RepVGG-A0's first stage;
- sk_block.svg: SKNet-18's first selective-kernel block (specs/timm/skresnet18.res);
- fig3.html: the interactive Fig. 3 (`resdsl draw ... -o fig3.html`).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import resdsl  # noqa: E402
from resdsl.backends.draw import render, to_dot  # noqa: E402
from resdsl.backends.draw_html import to_html  # noqa: E402

SPECS = HERE.parent.parent / "specs"
BRANCHES = HERE.parent.parent / "tests" / "fixtures" / "draw" / "branches.res"
INCEPTION = HERE.parent.parent / "tests" / "fixtures" / "draw" / "inception_resnet.res"

BLOCK = """
network {name} {{
    input {channels}x56x56
    shortcut B
    stage {stage}: 1 x {block}(64)
}}
"""

# One stage (or block) of a shipped spec, on a small input.
PART = """
use "{spec}"
network {name} {{
    input {input}
    shortcut B
    stage {stage}: {count} x {block}
}}
"""


def _part(spec: str, name: str, input: str, stage: str, count: int, block: str) -> resdsl.Network:
    text = PART.format(spec=SPECS / spec, name=name, input=input, stage=stage, count=count, block=block)
    return resdsl.compile_text(text, path=str(HERE / f"{name}.res"))


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
        "branches.svg": to_dot(
            [resdsl.compile(BRANCHES, network=name) for name in ("se_net", "preact_net")],
        ),
        "paths.svg": to_dot(
            [
                resdsl.compile(INCEPTION),
                _part("timm/repvgg_a0.res", "repvgg_stage", "48x56x56", "stages.1", 3, "repvgg_block(96, stride=2)"),
            ]
        ),
        "sk_block.svg": to_dot([_part("timm/skresnet18.res", "sk_block", "64x56x56", "layer1", 1, "sk_basic(64)")]),
        "cifar_blocks.svg": to_dot([resdsl.compile("cifar20"), resdsl.compile("cifar_plain20")], detail="block"),
        "options_abc.svg": to_dot(
            [
                resdsl.compile_text(
                    f'use "{SPECS / "resnet18.res"}"\nnetwork resnet18_{option} = resnet18 with shortcut {option}',
                    path=str(HERE / "options.res"),
                )
                for option in "ABC"
            ]
        ),
    }
    for name, dot in figures.items():
        print(render(dot, HERE / name))
    page = HERE / "fig3.html"
    page.write_text(to_html([resdsl.compile(name) for name in ("vgg19", "plain34", "resnet34")]), encoding="utf-8")
    print(page)


if __name__ == "__main__":
    main()
