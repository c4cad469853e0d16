"""Training curves in the style of the paper's Fig. 6: error (%) against iterations.

Training error dashed, test error bold, one colour per run, a legend naming each run
(``plain-20``, ``ResNet-56``...). Drawn with matplotlib's object API and its Agg
canvas, never pyplot, so that plotting changes no global state of the caller.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import yaml

from resdsl.train.recipes import RecipeError


class PlotError(RecipeError):
    """A run folder that cannot be plotted: no metrics.csv, or one without the expected columns."""


def read_metrics(run: Path) -> dict[str, list[float | None]]:
    path = run / "metrics.csv" if run.is_dir() else run
    if not path.is_file():
        raise PlotError("no metrics.csv here", file=str(run), hint="give the folder of a `resdsl train` run")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        fields = reader.fieldnames or []
    missing = [name for name in ("iteration", "train_error", "test_error") if name not in fields]
    if missing:
        raise PlotError(f"metrics.csv lacks the columns {', '.join(missing)}", file=str(path))
    columns: dict[str, list[float | None]] = {name: [] for name in fields}
    for number, row in enumerate(rows, start=2):
        for name in fields:
            text = row.get(name) or ""
            try:
                columns[name].append(float(text) if text else None)
            except ValueError:
                raise PlotError(f"line {number}: '{name}' is not a number: {text!r}", file=str(path)) from None
    return columns


def paper_label(name: str) -> str:
    """The paper's names for the shipped networks: cifar_plain20 -> plain-20, cifar56 -> ResNet-56."""
    if match := re.fullmatch(r"(?:cifar_)?plain_?(\d+)", name):
        return f"plain-{match.group(1)}"
    if match := re.fullmatch(r"(?:cifar|resnet)_?(\d+)", name):
        return f"ResNet-{match.group(1)}"
    return name


def run_label(run: Path) -> str:
    record = run / "recipe.yaml"
    if record.is_file():
        try:
            content = yaml.safe_load(record.read_text(encoding="utf-8"))
            return paper_label(str(content["spec"]["name"]))
        except (yaml.YAMLError, KeyError, TypeError, OSError, UnicodeDecodeError):
            pass
    return run.name


def iteration_unit(longest: float) -> tuple[float, str]:
    """The x-axis's unit for runs up to `longest` iterations: the paper's 1e4 at 64k, plain counts below 1,000.

    The power of ten at or below the longest run, so the ticks read 0 to at most 9.99
    (a 300-iteration run reads 0 ... 300, not 0.005 ... 0.030 in units of 1e4).
    """
    if longest < 1000:
        return 1.0, "iter."
    exponent = len(str(int(longest))) - 1
    return float(10**exponent), f"iter. (1e{exponent})"


def figure(
    runs: list[tuple[str, dict[str, list[float | None]]]],
    *,
    ylim: tuple[float, float] | None = None,
    title: str | None = None,
    size: tuple[float, float] = (6.0, 4.5),
) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    axes = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    highest = 0.0
    longest = max((x for _, columns in runs for x in columns["iteration"] if x is not None), default=0.0)
    unit, unit_label = iteration_unit(longest)
    for (label, columns), colour in zip(runs, colours):
        iterations = [x / unit for x in columns["iteration"]]
        for name, style, width, shown in (("train_error", "--", 1.0, None), ("test_error", "-", 2.2, label)):
            points = [(x, y) for x, y in zip(iterations, columns[name]) if y is not None]
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, linestyle=style, linewidth=width, color=colour, label=shown)
                highest = max(highest, max(ys))
    axes.set_xlabel(unit_label)
    axes.set_ylabel("error (%)")
    if ylim:
        axes.set_ylim(*ylim)
    else:
        axes.set_ylim(0, min(100.0, highest * 1.05 or 1.0))
    axes.set_xlim(left=0)
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title)
    axes.legend(title="dashed: training, bold: test", fontsize="small", title_fontsize="small")
    fig.tight_layout()
    return fig


def plot_runs(
    run_dirs: list[Path],
    output: Path,
    *,
    labels: list[str] | None = None,
    ylim: tuple[float, float] | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Any:
    """Read each run's metrics.csv, draw them overlaid, save to `output` (format by extension)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    labels = list(labels or [])
    runs = []
    for index, run in enumerate(run_dirs):
        label = labels[index] if index < len(labels) else run_label(run)
        runs.append((label, read_metrics(run)))
    fig = figure(runs, ylim=ylim, title=title)
    FigureCanvasAgg(fig)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=dpi)
    return fig
