"""The benchmark machinery measures what it says: paired timing, verdicts, the scale search.

No test here times anything against a bound; they check that the numbers the
benchmarks print are computed correctly and that every group still runs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

import resdsl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import memory, scale, torch_runtime  # noqa: E402
from bench.report import Row, table  # noqa: E402
from bench.timing import bootstrap_interval, paired  # noqa: E402


class FakeClock:
    """A clock that each contender's call advances by its own fixed duration."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def contender(self, name: str, seconds: float):
        def run() -> None:
            self.calls.append(name)
            self.now += seconds

        return run


def test_paired_times_both_sides_in_alternating_order() -> None:
    clock = FakeClock()
    result = paired(clock.contender("a", 0.003), clock.contender("b", 0.002), rounds=4, warmup=1, clock=clock)
    assert result.ours == pytest.approx(0.003)
    assert result.reference == pytest.approx(0.002)
    assert result.ratio == pytest.approx(1.5)
    assert result.low == pytest.approx(1.5) and result.high == pytest.approx(1.5)
    # Warm-up, then rounds in the order AB, BA, BA, AB.
    assert clock.calls == ["a", "b", "a", "b", "b", "a", "b", "a", "a", "b"]


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    """A slow round (a noisy neighbour) slows both sides; per-round ratios cancel it."""
    clock = FakeClock()
    slow_rounds = {2}
    state = {"calls": 0}

    def contender(seconds: float):
        def run() -> None:
            round_index = (state["calls"] - 2) // 2  # two warm-up calls come first
            state["calls"] += 1
            clock.now += seconds * (10 if round_index in slow_rounds else 1)

        return run

    result = paired(contender(0.002), contender(0.001), rounds=5, clock=clock)
    assert result.ratio == pytest.approx(2.0)
    assert result.high == pytest.approx(2.0)


def test_bootstrap_interval_brackets_the_median_and_is_seeded() -> None:
    values = [0.95, 0.97, 0.99, 1.0, 1.01, 1.02, 1.06, 1.2, 0.9]
    low, high = bootstrap_interval(values)
    assert low <= sorted(values)[len(values) // 2] <= high
    assert low > min(values) and high < max(values)
    assert bootstrap_interval(values) == (low, high)


@pytest.mark.parametrize(
    ("ratio", "low", "high", "target", "verdict"),
    [
        (0.97, 0.95, 0.99, "<=1.00", "ok"),
        (0.99, 0.96, 1.02, "<=1.00", "within noise"),
        (1.03, 1.01, 1.05, "<=1.00", "MISSED"),
        (1.02, 1.01, 1.04, ">=1.00", "ok"),
        (0.98, 0.95, 1.01, ">=1.00", "within noise"),
        (0.90, None, None, ">=1.00", "MISSED"),
        (0.16, None, None, "<=0.25", "ok"),
    ],
)
def test_verdict_reads_the_interval(ratio, low, high, target, verdict) -> None:
    assert Row("figure", "x", ratio=ratio, low=low, high=high, target=target).verdict == verdict


def test_table_shows_the_interval_and_verdict() -> None:
    text = table([Row("eager forward", "10.0 ms", "10.1 ms", 0.99, "<=1.00", low=0.95, high=1.03)])
    assert "| eager forward | 10.0 ms | 10.1 ms | 0.99 [0.95, 1.03] | <=1.00 | within noise |" in text


def test_predict_meets_the_budget_on_the_line_through_the_deepest_points() -> None:
    # 500 MB of fixed cost, 10 MB per n: 10 GB is reached at n = 950.
    assert scale.predict([(100, 1500.0), (400, 4500.0)], 10000) == 950
    assert scale.predict([(4, 900.0), (100, 1500.0), (400, 4500.0)], 10000) == 950
    with pytest.raises(ValueError, match="did not grow"):
        scale.predict([(100, 900.0), (400, 900.0)], 10000)


def _machine(peak_mb, budget_mb: float):
    """A fake machine: a network trains where its peak memory fits the budget."""
    probed: list[int] = []

    def measure(n: int) -> dict:
        probed.append(n)
        return dict(ok=peak_mb(n) <= budget_mb, peak_mb=peak_mb(n))

    return measure, probed


@pytest.mark.parametrize(("fixed", "per_n"), [(500, 10), (500, 13), (500, 7), (2000, 2.5)])
def test_search_brackets_the_largest_network_within_the_step(fixed: float, per_n: float) -> None:
    """Whether the small probes' line over- or under-estimates, the search ends with
    one n that trains and one at most 8% larger that does not; the first is the largest."""
    budget = 10000
    limit = math.floor((budget - fixed) / per_n)
    measure, probed = _machine(lambda n: fixed + per_n * n, budget)
    found = scale.search(measure, [(100, 1500.0), (400, 4500.0)], budget)
    assert found.fits is not None and found.fails is not None
    assert found.fits <= limit < found.fails <= math.ceil(found.fits * scale.STEP)
    assert found.fits == max(n for n, ok in found.probes if ok)
    assert found.predicted == 950
    assert [n for n, _ in found.probes] == probed
    assert len(probed) <= scale.MAX_PROBES


def test_search_refits_the_line_from_networks_that_trained() -> None:
    """Small networks cost more per layer than deep ones (as with per-block
    checkpointing), so the small probes predict too little; each network that
    trains corrects the line, and the search does not crawl up by 8% a probe."""
    budget = 9500

    def peak(n: int) -> float:
        return 700 + 20 * n if n <= 50 else 1700 + 5 * (n - 50)

    measure, probed = _machine(peak, budget)
    found = scale.search(measure, [(4, peak(4)), (16, peak(16))], budget)
    assert found.fits == 1610  # exactly where 1700 + 5 * (n - 50) meets the budget
    assert found.fails is not None and found.fails <= math.ceil(found.fits * scale.STEP)
    assert len(probed) <= 4


@pytest.fixture(scope="module")
def cifar18_step() -> dict:
    result = memory.measure("cifar", "3", 32, 32, "none")
    assert result["ok"], result
    return result


def test_memory_child_reports_a_step_and_the_network_it_built(cifar18_step) -> None:
    import resdsl

    assert cifar18_step["params"] == resdsl.compile("specs/lib/cifar.res", network="cifar_resnet", n=3).num_params
    assert cifar18_step["step_mb"] > 10
    assert cifar18_step["peak_mb"] > cifar18_step["step_mb"]
    assert cifar18_step["step_s"] > 0 and cifar18_step["build_s"] > 0


def test_memory_child_is_blind_to_its_parents_memory(cifar18_step) -> None:
    """Linux carries getrusage's peak RSS across exec: a child launched by a parent
    holding 1.5 GB once reported 1.5 GB steps. The child reads its own VmHWM."""
    held = b"\x01" * (1536 * 2**20)
    beside_a_big_parent = memory.measure("cifar", "3", 32, 32, "none")
    assert len(held) and beside_a_big_parent["ok"]
    # The child pins glibc's mmap threshold, so the same step measures the same to a few percent.
    assert abs(beside_a_big_parent["step_mb"] - cifar18_step["step_mb"]) < 0.05 * cifar18_step["step_mb"] + 2
    assert beside_a_big_parent["peak_mb"] < cifar18_step["peak_mb"] + 200


def test_memory_child_under_a_budget_fails_cleanly_or_fits(cifar18_step) -> None:
    """Below what the step needs, allocation fails inside the child, which says so;
    with room to spare the same step trains."""
    tight = cifar18_step["peak_mb"] - 0.7 * cifar18_step["step_mb"]
    failed = memory.measure("cifar", "3", 32, 32, "none", budget_mb=tight)
    assert failed["ok"] is False
    assert "allocate" in failed["error"]
    roomy = memory.measure("cifar", "3", 32, 32, "none", budget_mb=cifar18_step["peak_mb"] + 200)
    assert roomy["ok"] is True
    below_torch = memory.measure("cifar", "3", 32, 32, "none", budget_mb=50)
    assert below_torch == dict(ok=False, error="the budget is below the footprint of torch itself", peak_mb=0)


def test_runtime_table_with_every_variant_runs_on_the_cpu() -> None:
    """The GPU table's code (channels_last, bf16 autocast, torch.compile, throughput)
    run on the CPU at a tiny size, so that it works when a GPU machine runs it."""
    setup = torch_runtime.Setup(
        "cpu", model="resnet18", batch=2, size=64, rounds=1, variants=True, compile_backend="eager", load_time=False
    )
    rows = torch_runtime.rows(setup=setup)
    figures = [row["figure"] for row in rows]
    for words in (
        "eager forward, eval",
        "eager forward+backward",
        "training throughput, SGD step, fp32",
        "for_inference",
        "forward+backward, channels_last (",
        "forward+backward, channels_last + autocast bf16 (",
        "torch.compile (eager) forward",
        "training throughput, torch.compile + channels_last + autocast bf16",
    ):
        assert sum(words in figure for figure in figures) == 1, (words, figures)
    for row in rows:
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
        assert row["low"] <= row["ratio"] <= row["high"], row
        Row(**row)  # every row fits the table
    throughput = next(row for row in rows if "SGD step" in row["figure"])
    assert throughput["resdsl"].endswith("img/s") and throughput["target"] == ">=1.00"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the gpu group measures instead")
def test_gpu_group_says_plainly_when_there_is_no_gpu() -> None:
    (row,) = torch_runtime.gpu_rows(quick=True)
    assert row["resdsl"] == "not measured: no GPU here (torch.cuda.is_available() is False)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the gpu group measures instead")
def test_run_py_gpu_group_says_plainly_when_there_is_no_gpu() -> None:
    from bench.run import bench_gpu

    (row,) = bench_gpu(quick=True)
    assert row.resdsl.startswith("not measured: no GPU here") and "bench/gpu.py --tiny" in row.resdsl


def test_gpu_script_runs_every_section_at_a_tiny_size(capsys) -> None:
    """`python bench/gpu.py --tiny`: the GPU script's code on the CPU, so that a lent GPU's minutes are not spent
    finding its bugs. Every figure is there, with numbers; the graph rows run all but the capture."""
    import json

    from bench import gpu

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert gpu.main(["--tiny", "--no-compile", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    assert "not GPU figures" in report["machine"]
    rows = {row["figure"]: row for row in report["rows"]}
    steps = [rows[f"cifar20 `resdsl train` vs hand-written bare step, {name}"] for name, _ in gpu.CONFIGURATIONS]
    assert [name for name, _ in gpu.CONFIGURATIONS] == [
        "fp32 eager", "+ channels_last", "+ bf16 autocast", "+ fused SGD", "+ CUDA graph"
    ]  # fmt: skip
    for row in steps:
        assert row["resdsl"].endswith(" img/s") and float(row["resdsl"].split()[0].replace(",", "")) > 0, row
        assert row["target"] == "<=1.00" and row["low"] <= row["ratio"] <= row["high"], row
        assert row["unit"].startswith("64k iterations: ") and row["unit"].endswith(" min training")
    projected = rows["cifar20 projected 64k-iteration schedule, every option"]
    assert projected["resdsl"].endswith(" min") and projected["target"] == "<5 min on one H100"
    # The graphed step's parts other than the capture (warm-up undone, tensor lr, fused kernel) change nothing.
    check = rows["cifar20 CUDA-graph step vs eager step: largest weight difference after 2 steps (bf16)"]
    assert check["resdsl"] == "0.00e+00 (not captured: CPU)"
    for label in ("fp32 eager", "every option"):
        row = rows[f"resnet18 training vs torchvision's resnet18, {label} (batch 2, 32x32)"]
        assert row["reference"].endswith(" img/s") and row["ratio"] > 0
    assert rows["resnet18 for_inference engine='eager' vs torchvision eager (batch 2, 32x32, fp32)"]["ratio"] > 0
    assert not any("inductor" in figure for figure in rows)  # --no-compile
    # The round-4 networks against timm's own modules: a training step and an eval forward
    # each, or a plain word where the spec does not ship.
    shipped = set(resdsl.shipped_specs())
    for name in gpu.TIMM_MODELS:
        size = gpu.timm_size(name, gpu.plan_for(True))
        figure = f"timm/{name} vs timm's {name}, bf16 channels_last (batch 2, {size}x{size})"
        if f"timm/{name}" not in shipped:
            assert rows[figure]["resdsl"] == "not measured: no shipped spec of that name"
            continue
        for part in ("training step", "eval forward"):
            row = rows[f"{figure}: {part}"]
            assert row["ratio"] > 0 and row["target"] == "<=1.00", row
    assert rows["time spent"]["target"] == "<= 300 s"


def test_gpu_script_reports_a_failed_section_and_goes_on() -> None:
    from bench import gpu

    def broken() -> list[Row]:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    (row,) = gpu.guarded("cifar20 ..., + CUDA graph", broken)
    assert row.resdsl == "failed: RuntimeError: CUDA error: operation not permitted when stream is capturing"
    assert gpu.guarded("fine", lambda: [Row("fine", "1 img/s")]) == [Row("fine", "1 img/s")]


@pytest.mark.parametrize("quick", [True, False])
def test_frontend_group_compiles_every_depth_it_times(quick: bool) -> None:
    """README's `python bench/run.py --only frontend` compiled n = 1000 and 2000 past the
    default layer bound and stopped with a LimitError."""
    from bench.run import compile_cifar, frontend_depths

    for n in frontend_depths(quick):
        assert compile_cifar(n).layer_count() == 6 * n + 2


def test_tokens_bench_prints_every_figure_at_a_small_size() -> None:
    """`python bench/tokens.py --quick`: ViT-Tiny against timm, side by side, each figure with a ratio."""
    from bench import tokens

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found = {row.figure: row for row in tokens.rows(quick=True, batch=2)}
    finally:
        torch.set_num_threads(threads)
    shape = "batch 2, 64x64, fp32, 1 threads"
    for part in (
        "eval forward vs timm",
        "training step vs timm",
        "for_inference (onnxruntime) vs ONNX Runtime on timm's export",
    ):
        row = found[f"vit_tiny_patch16_224 {part} ({shape})"]
        assert row.ratio > 0 and row.target == "<=1.00" and row.resdsl.endswith(" ms"), row
