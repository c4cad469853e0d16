"""Training curves in the style of the paper's Fig. 6: error (%) against iterations.

Training error dashed, test error bold, one colour per run, a legend naming each run
(``plain-20``, ``ResNet-56``...). Drawn with matplotlib's object API and its Agg
canvas, never pyplot, so that plotting changes no global state of the caller.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from resdsl.files import check_target, make_folder, write_file
from resdsl.train.recipes import RecipeError
from resdsl.train.runfiles import MAX_RECORD_BYTES, metrics_table, read_text


class PlotError(RecipeError):
    """A run folder that cannot be plotted: no metrics.csv, or one without the expected columns."""


def read_metrics(run: Path) -> dict[str, list[float | None]]:
    path = run / "metrics.csv" if run.is_dir() else run
    if not path.exists():
        raise PlotError("no metrics.csv here", file=str(run), hint="give the folder of a `resdsl train` run")
    fields, rows = metrics_table(path, PlotError)
    missing = [name for name in ("iteration", "train_error", "test_error") if name not in fields]
    if missing:
        raise PlotError(f"metrics.csv lacks the columns {', '.join(missing)}", file=str(path))
    columns: dict[str, list[float | None]] = {name: [] for name in PLOTTED}
    for number, row in enumerate(rows, start=2):
        for name in PLOTTED:
            text = (row.get(name) or "").strip()
            if not text:
                if name == "iteration":  # the point's place: an error may be missing, the iteration may not
                    raise PlotError(f"line {number}: 'iteration' is empty", file=str(path))
                columns[name].append(None)
                continue
            try:
                value = float(text) if len(text) <= 40 else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise PlotError(f"line {number}: '{name}' is not a finite number: {text[:40]!r}", file=str(path))
            columns[name].append(value)
    return columns


#: The columns of metrics.csv a plot reads.
PLOTTED = ("iteration", "train_error", "test_error")
#: The figure formats, by -o's extension.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: Pixels per inch a figure may be drawn at (the figure is 6 x 4.5 inches).
DPI_RANGE = (10, 1000)


def figure_format(output: Path) -> str:
    suffix = output.suffix.lower()
    if suffix not in FORMATS:
        raise PlotError(
            f"cannot tell the figure's format from {output.name!r}",
            file=str(output),
            hint=f"end -o with one of {', '.join(FORMATS)}",
        )
    return FORMATS[suffix]


def check_plot_options(ylim: tuple[float, float] | None, dpi: int) -> None:
    if ylim is not None:
        low, high = ylim
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise PlotError(f"--ylim {low:g} {high:g}: give two finite numbers, the lower first")
    low_dpi, high_dpi = DPI_RANGE
    if not low_dpi <= dpi <= high_dpi:
        raise PlotError(f"--dpi {dpi}: must be between {low_dpi} and {high_dpi}")


def plain_text(text: str) -> str:
    """Text shown as written: matplotlib reads $...$ as mathematics (and fails on a bad formula)."""
    return text.replace("$", "\\$")


def paper_label(name: str) -> str:
    """The paper's names for the shipped networks: cifar_plain20 -> plain-20, cifar56 -> ResNet-56."""
    if match := re.fullmatch(r"(?:cifar_)?plain_?(\d+)", name):
        return f"plain-{match.group(1)}"
    if match := re.fullmatch(r"(?:cifar|resnet)_?(\d+)", name):
        return f"ResNet-{match.group(1)}"
    return name


def run_label(run: Path) -> str:
    record = run / "recipe.yaml"
    try:
        content = yaml.safe_load(read_text(record, MAX_RECORD_BYTES, "recipe.yaml", PlotError))
        return paper_label(str(content["spec"]["name"]))
    except (PlotError, yaml.YAMLError, KeyError, TypeError, IndexError, RecursionError, OSError):
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
        # The run's name goes on its test curve; a run stopped before its first evaluation
        # has none, so its training curve carries the name (else the legend would be empty).
        tested = any(y is not None for y in columns["test_error"])
        train_label = None if tested else label
        for name, style, width, shown in (("train_error", "--", 1.0, train_label), ("test_error", "-", 2.2, label)):
            points = [(x, y) for x, y in zip(iterations, columns[name]) if y is not None]
            if points:
                xs, ys = zip(*points)
                shown = plain_text(shown) if shown is not None else None
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
        axes.set_title(plain_text(title))
    if axes.get_legend_handles_labels()[0]:  # matplotlib warns of a legend with no labelled curve
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

    check_plot_options(ylim, dpi)
    figure_format(output)
    labels = list(labels or [])
    runs = []
    for index, run in enumerate(run_dirs):
        label = labels[index] if index < len(labels) else run_label(run)
        runs.append((label, read_metrics(run)))
    fig = figure(runs, ylim=ylim, title=title)
    FigureCanvasAgg(fig)
    check_target(output)
    make_folder(output.parent)
    write_file(output, lambda handle: fig.savefig(handle, dpi=dpi, format=figure_format(output)))
    return fig
