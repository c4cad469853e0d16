"""DOT generation time against depth: `python bench/draw_scale.py`.

Drawing reads the IR once (linear in the number of nodes); this prints the seconds
per block at each detail for 300, 1,000 and 3,000 basic blocks, so that a
quadratic step shows as a growing per-block figure. Compilation is not timed.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import resdsl
from resdsl.backends.draw import to_dot

SPEC = """network deep {{
    input 3x32x32
    shortcut B
    stem {{ conv 3x3, 16; bn; relu }}
    stage s1: {n} x basic(16)
    stage s2: {n} x basic(32, stride=2)
    stage s3: {n} x basic(64, stride=2)
    head {{ avgpool; fc 10 }}
}}"""


def main() -> None:
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| blocks | detail | seconds | microseconds per block |")
    print("| ---: | --- | ---: | ---: |")
    for blocks in (300, 1000, 3000):
        network = resdsl.compile_text(SPEC.format(n=blocks // 3))
        for detail in ("layer", "block", "stage"):
            start = time.perf_counter()
            to_dot([network], detail=detail).source  # noqa: B018 - the text is the work
            seconds = time.perf_counter() - start
            print(f"| {blocks} | {detail} | {seconds:.3f} | {seconds / blocks * 1e6:.0f} |")


if __name__ == "__main__":
    main()
