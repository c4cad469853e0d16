"""What every bench script shares: a table row, the machine it ran on, the Markdown table.

bench/run.py and the group modules (memory.py, scale.py, torch_runtime.py,
inference.py) all import this; it imports none of them, so no module of bench/
needs another's internals to print its rows.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    figure: str
    resdsl: str
    reference: str = ""
    ratio: float | None = None
    target: str = ""
    unit: str = ""
    low: float | None = None  # the ratio's 95% interval, where it was timed in rounds
    high: float | None = None

    @property
    def verdict(self) -> str:
        if self.ratio is None or self.target[:2] not in ("<=", ">="):
            return ""
        bound = float(self.target[2:])
        at_most = self.target.startswith("<=")
        low, high = (self.low, self.high) if self.low is not None else (self.ratio, self.ratio)
        if (high <= bound) if at_most else (low >= bound):
            return "ok"
        if (low > bound) if at_most else (high < bound):
            return "MISSED"
        return "within noise"


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:  # pragma: no cover - torch is a dependency
        info["torch"] = "not installed"
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(rows: list[Row]) -> str:
    header = ("figure", "resdsl", "reference", "ratio", "target", "")
    cells = [header] + [
        (
            r.figure,
            r.resdsl + (f" ({r.unit})" if r.unit else ""),
            r.reference,
            _ratio(r),
            r.target,
            r.verdict,
        )
        for r in rows
    ]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
    return "\n".join(lines)


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return ""
    if row.low is None or row.high is None:
        return f"{row.ratio:.2f}"
    return f"{row.ratio:.2f} [{row.low:.2f}, {row.high:.2f}]"


def print_report(rows: list[Row]) -> None:
    """The machine line, then the table: what each script prints when run on its own."""
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    print()
    print(table(rows))
