"""Hostile input, round 3 (issue 18): fuzzing the trainer's inputs, its run files, fmt and the language server.

Cases are generated from the published formats (CIFAR's python pickles, the recipe
keys of docs/training.md, the files a run folder holds, the shipped specs) and then
damaged: fields removed, retyped and truncated, bytes flipped, CR, CRLF, BOM, NUL and
astral characters inserted. Each case runs in a forked child under
tests/fuzz_harness.py's bounds (counted work, 500 MB of new memory, hang catchers):
the only acceptable outcome besides success is the project's own error.

``RESDSL_FUZZ_EXAMPLES`` sets the number of generated cases (default 25 per test here),
``RESDSL_FUZZ_EXPLORE=1`` draws new ones instead of CI's fixed set.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import fuzz_harness as harness
import numpy as np
import pytest
import torch
from fuzz_harness import Outcome, run_bounded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("RESDSL_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("RESDSL_FUZZ_EXPLORE") != "1",
    suppress_health_check=list(HealthCheck),
    database=None,
)
harness.warm_up()


def assert_within_budget(outcome: Outcome, case: object) -> None:
    shown = repr(case)
    shown = shown if len(shown) < 600 else shown[:300] + " ... " + shown[-300:]
    assert outcome.ok, f"{outcome.status}: {outcome.detail}\ncase: {shown}"


def _documented(function, *args: Any) -> str:
    """Run `function`; the project's own errors are a verdict, anything else propagates (a finding)."""
    from resdsl.errors import SpecError

    try:
        function(*args)
    except SpecError as error:
        harness.render_error(error)
        return f"error: {error.message[:80]}"
    return "ok"


HOSTILE_VALUES: list[Any] = [
    None, True, -1, 0, 2**31, 2**63, 2**64, 10**400, -(10**400), 1.5, float("nan"), float("inf"), "", "x" * 1000,
    "\x00", "\udcff", b"", b"\xff" * 10, [], [None], [[[[]]]], {}, {1: 2}, {"a": []}, (1, 2), np.zeros(3),
    np.zeros((2, 2), np.float64), np.zeros(0, np.uint8), np.array(["a"]), torch.zeros(2), set(),
]  # fmt: skip


def _mutate_value(value: Any, rng: random.Random) -> Any:
    """A field retyped, truncated or kept; containers are mutated inside."""
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(HOSTILE_VALUES)
    if isinstance(value, dict) and value and roll < 0.8:
        copy = dict(value)
        key = rng.choice(list(copy))
        if rng.random() < 0.5:
            del copy[key]
        else:
            copy[key] = _mutate_value(copy[key], rng)
        return copy
    if isinstance(value, list | tuple) and value and roll < 0.8:
        copy = list(value)
        if rng.random() < 0.5:
            del copy[rng.randrange(len(copy)) :]
        else:
            copy[rng.randrange(len(copy))] = rng.choice(HOSTILE_VALUES)
        return copy
    if isinstance(value, np.ndarray) and roll < 0.8:
        return value[: rng.randrange(len(value) + 1)] if value.ndim else value
    return value


# CIFAR ---------------------------------------------------------------------------------------


def _cifar_members(rng: random.Random) -> dict[str, dict]:
    """The published CIFAR-10 python layout, small: a dict of bytes keys per member."""
    images = np.asarray([rng.randrange(256) for _ in range(6 * 192)], dtype=np.uint8).reshape(6, 192)
    batch = {b"batch_label": b"training batch", b"labels": [i % 3 for i in range(6)], b"data": images,
             b"filenames": [b"f.png"] * 6}  # fmt: skip
    members = {f"data_batch_{i}": dict(batch) for i in range(1, 6)}
    members["test_batch"] = dict(batch)
    members["batches.meta"] = {b"label_names": [b"a", b"b", b"c"], b"num_cases_per_batch": 6, b"num_vis": 192}
    return members


def _read_cifar_case(members: dict[str, bytes], directory: str) -> str:
    from resdsl.train.data import read_cifar

    folder = Path(directory) / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    for name, content in members.items():
        (folder / name).write_bytes(content)
    return _documented(read_cifar, folder, "cifar10")


@pytest.mark.slow
@FUZZ
@given(st.randoms(use_true_random=False))
def test_cifar_files_with_fields_removed_retyped_and_truncated(rng: random.Random) -> None:
    members = _cifar_members(rng)
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(list(members))
        members[name] = _mutate_value(members[name], rng)
    encoded = {name: pickle.dumps(content, protocol=2) for name, content in members.items()}
    with harness.scratch() as directory:
        assert_within_budget(run_bounded(_read_cifar_case, encoded, directory), members)


@pytest.mark.slow
@FUZZ
@given(st.randoms(use_true_random=False))
def test_cifar_pickles_with_damaged_bytes(rng: random.Random) -> None:
    encoded = {name: pickle.dumps(content, protocol=2) for name, content in _cifar_members(rng).items()}
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(list(encoded))
        data = encoded[name]
        truncate = rng.random() < 0.3 and data
        encoded[name] = data[: rng.randrange(len(data))] if truncate else harness.mutate_bytes(data, rng)
    with harness.scratch() as directory:
        assert_within_budget(run_bounded(_read_cifar_case, encoded, directory), encoded)


# Recipes and --set ---------------------------------------------------------------------------------


def _recipe_case(text: str, overrides: list[str]) -> str:
    from resdsl.train.recipes import apply_override, check_consistency, parse_recipe

    def run() -> None:
        recipe = parse_recipe(text, "fuzz.yaml")
        for override in overrides:
            apply_override(recipe, override)
        check_consistency(recipe)

    return _documented(run)


def _recipe_texts() -> list[str]:
    from resdsl.train.recipes import RECIPES_DIR

    return [path.read_text(encoding="utf-8") for path in sorted(RECIPES_DIR.glob("*.yaml"))]


HOSTILE_YAML = [
    "9" * 5000, "-1", "1e999", ".nan", "[" * 200 + "]" * 200, "{a: {b: {c: {d: {e: {f: {}}}}}}}", "&a [*a]",
    "!!python/object:os.system ls", "'" + "9" * 20 + " epochs'", "null", "~", "[1, 2, 'x']", "0x7fffffffffffffff",
    "18446744073709551616", "'\x00'", "yes",
]  # fmt: skip


@pytest.mark.slow
@FUZZ
@given(st.randoms(use_true_random=False))
def test_recipes_and_set_values(rng: random.Random) -> None:
    from resdsl.train.recipes import KEYS

    text = rng.choice(_recipe_texts())
    if rng.random() < 0.5:
        text = harness.mutate_bytes(text.encode(), rng).decode("utf-8", "replace")
    overrides = [f"{rng.choice(list(KEYS))}={rng.choice(HOSTILE_YAML)}" for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.3:
        lines = text.splitlines()
        key = rng.choice(list(KEYS))
        lines.insert(rng.randrange(len(lines) + 1), f"{key}: {rng.choice(HOSTILE_YAML)}")
        text = "\n".join(lines)
    assert_within_budget(run_bounded(_recipe_case, text, overrides), (text, overrides))


# Checkpoints and run files ---------------------------------------------------------------------------


def _checkpoint() -> dict:
    state = {
        "format": "resdsl-train/1",
        "model": {"w": torch.zeros(2)},
        "optimizer": {"state": {}, "param_groups": [{"params": [0], "lr": 0.1}]},
        "scheduler": {"warmup_end": 0},
        "scaler": {},
        "iteration": 10,
        "epoch": 1.0,
        "seconds": 1.0,
        "best": {"error": 1.0, "iteration": 5, "split": "test"},
        "window": {
            "loss": torch.zeros(()),
            "wrong": torch.zeros(()),
            "images": 0,
            "seconds": 0.0,
            "warm_wrong": torch.zeros(()),
            "warm_images": 0,
        },
        "rng": {"torch": torch.get_rng_state(), "cuda": [], "python": list(random.Random(0).getstate())},
        "recipe": {"lr": 0.1},
        "recipe_name": "r",
        "spec": {"name": "n", "path": "p", "num_params": 2, "architecture_sha256": "0" * 64},
        "normalizer": {"shift": torch.zeros(3, 1, 1), "scale": torch.ones(3, 1, 1)},
        "classes": ["a", "b"],
    }
    return state


def _checkpoint_case(data: bytes, directory: str) -> str:
    from resdsl.train.loop import EVAL_FIELDS, RESUME_FIELDS, check_checkpoint, read_checkpoint

    path = Path(directory) / "checkpoint.pt"
    path.write_bytes(data)

    def run() -> None:
        state = read_checkpoint(path)
        check_checkpoint(state, path, (*EVAL_FIELDS, *RESUME_FIELDS))

    return _documented(run)


@pytest.mark.slow
@FUZZ
@given(st.randoms(use_true_random=False))
def test_checkpoints_with_fields_removed_retyped_and_truncated(rng: random.Random) -> None:
    import io

    state = _checkpoint()
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(list(state))
        if rng.random() < 0.3:
            del state[key]
        else:
            state[key] = _mutate_value(state[key], rng)
    if rng.random() < 0.05:
        state = rng.choice(HOSTILE_VALUES)  # not a mapping at all
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
    except Exception:
        return  # not savable: no file to attack with
    data = buffer.getvalue()
    if rng.random() < 0.3:
        data = data[: rng.randrange(len(data))]
    with harness.scratch() as directory:
        assert_within_budget(run_bounded(_checkpoint_case, data, directory), state)


METRICS_HEADER = (
    "iteration,epoch,lr,train_loss,train_error,val_loss,val_error,test_loss,test_error,images_per_s,seconds"
)


def _metrics_case(data: bytes, directory: str) -> str:
    from resdsl.train.loop import METRICS
    from resdsl.train.plot import read_metrics
    from resdsl.train.runfiles import read_metrics_rows

    path = Path(directory) / "metrics.csv"
    path.write_bytes(data)
    first = _documented(read_metrics_rows, path, 100, METRICS)
    second = _documented(read_metrics, Path(directory))
    return f"{first}; {second}"


@pytest.mark.slow
@FUZZ
@given(st.randoms(use_true_random=False))
def test_metrics_csv_edited(rng: random.Random) -> None:
    rows = [METRICS_HEADER] + [f"{i * 10},{i},0.1,2.0,50,,,2.1,55,1000,{i}" for i in range(1, 6)]
    text = "\n".join(rows) + "\n"
    data = harness.mutate_bytes(text.encode(), rng)
    if rng.random() < 0.3:
        data = data.replace(b",", rng.choice([b",,", b";", b'"', b",nan,", b",1e999,", b",-5,"]), rng.randint(1, 4))
    with harness.scratch() as directory:
        assert_within_budget(run_bounded(_metrics_case, data, directory), data)


# fmt: meaning and idempotence ----------------------------------------------------------------------

FMT_SPECS = ["cifar20.res", "lib/cifar.res", "torchvision/resnet18.res", "resnet50.res", "vgg19.res"]
INSERTIONS = ["\r", "\r\n", "\ufeff", "\x00", "😀", "# 😀\r", "\r#", "\\\n", "\u2028", "\x0c", "\x85"]


#: Networks of a file compiled to compare its meaning (a file of a thousand aliases has a thousand).
MEANING_NETWORKS = 4


def _meaning(path: Path) -> Any:
    """What a spec means: each network's layers (name, kind, shape, parameters), or the error's message."""
    import resdsl
    from resdsl.errors import SpecError
    from resdsl.frontend import load

    try:
        namespace = load(path)
        meaning: list[Any] = [sorted(namespace.own_networks)]
        for name in sorted(namespace.own_networks)[:MEANING_NETWORKS]:
            try:
                network = resdsl.compile(path, network=name)
            except SpecError as error:
                meaning.append((name, "error", error.message))
                continue
            meaning.append(
                (
                    name,
                    [(node.name, node.kind, tuple(node.shape)) for node in network.nodes()],
                    network.num_params,
                )
            )
        return meaning
    except SpecError as error:
        return ("error", type(error).__name__)


@harness.stepped
def _fmt_case(data: bytes, directory: str, name: str) -> str:
    from resdsl.errors import CompilerBug, SpecError
    from resdsl.fmt import format_text
    from resdsl.frontend import read_spec
    from resdsl.ir import Limits

    source = Path(directory) / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(data)
    try:
        with harness.step("formatting"):
            text = read_spec(source, Limits()).text
            formatted = format_text(text, str(source))
    except (SpecError, CompilerBug) as error:
        if isinstance(error, SpecError):
            harness.render_error(error)
        return "refused"
    with harness.step("compiling before"):
        before = _meaning(source)
    source.write_bytes(formatted.encode("utf-8"))
    with harness.step("compiling after"):
        after = _meaning(source)
    assert before == after, f"formatting changed the meaning:\n{before!r:.1000}\n{after!r:.1000}"
    with harness.step("formatting again"):
        assert format_text(formatted, str(source)) == formatted, "formatting is not idempotent"
    return "formatted"


@pytest.mark.slow
@FUZZ
@given(st.randoms(use_true_random=False))
def test_fmt_keeps_meaning_and_is_idempotent_on_shipped_spec_mutants(rng: random.Random) -> None:
    from resdsl.shipped import specs_dir

    name = rng.choice(FMT_SPECS)
    original = (specs_dir() / name).read_text(encoding="utf-8")
    text = original
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(text) + 1)
        text = text[:position] + rng.choice(INSERTIONS) + text[position:]
    if rng.random() < 0.3:
        text = text.replace("\n", "\r\n")
    with harness.scratch() as directory:
        # The spec keeps its folder, so that its `use` lines resolve.
        copy_root = Path(directory)
        for library in (specs_dir() / "lib").glob("*.res"):
            (copy_root / "lib").mkdir(exist_ok=True)
            (copy_root / "lib" / library.name).write_bytes(library.read_bytes())
        outcome = run_bounded(_fmt_case, text.encode("utf-8", "surrogatepass"), directory, name)
    assert_within_budget(outcome, text)


@pytest.mark.parametrize("path", sorted(harness.REGRESSIONS.glob("*.res")), ids=lambda p: p.name)
def test_fmt_on_the_regression_corpus_keeps_meaning(path: Path) -> None:
    with harness.scratch() as directory:
        outcome = run_bounded(_fmt_case, path.read_bytes(), directory, "fuzz.res")
    assert_within_budget(outcome, path.name)


# The language server over stdio -------------------------------------------------------------------


def _hostile_params(rng: random.Random, uri: str) -> Any:
    position = rng.choice([
        {"line": rng.choice([-1, 0, 1, 5, 2**31 - 1, 2**31, "a", None, 1.5]),
         "character": rng.choice([-1, 0, 3, 2**31 - 1, 2**31, "a", None, [], 1e300])},
        {"line": 0}, {}, None, "x", [0, 0],
    ])  # fmt: skip
    params: dict[str, Any] = {"textDocument": rng.choice([{"uri": uri}, {"uri": "file:///dev/zero"}, {}, None, 5])}
    if position is not None or rng.random() < 0.5:
        params["position"] = position
    if rng.random() < 0.3:
        params["options"] = rng.choice([{"tabSize": 4, "insertSpaces": True}, None, {"tabSize": -1}, "x"])
    return rng.choice([params, None, [], "x", 5])


def _malformed_frame(rng: random.Random) -> bytes:
    return rng.choice([
        b"Content-Length: 99999999999999999999\r\n\r\n",
        b"Content-Length: -5\r\n\r\n",
        b"Content-Length: 10\r\n\r\n{\"a\": \x00\xff",
        b"X: " + b"y" * rng.randint(1, 20000) + b"\r\n",
        b"Content-Length: 2\r\n\r\n[]",
        b"Content-Length: 4\r\n\r\nnull",
        b"Content-Length: 30\r\n\r\n{\"jsonrpc\": \"2.0\", \"id\": []}",
    ])  # fmt: skip


@pytest.mark.slow
@settings(max_examples=min(EXAMPLES, 10), deadline=None, derandomize=os.environ.get("RESDSL_FUZZ_EXPLORE") != "1",
          suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
@given(st.randoms(use_true_random=False))
def test_language_server_answers_hostile_requests_and_survives_malformed_frames(rng: random.Random) -> None:
    from lsp_wire import Wire, frame

    methods = ["textDocument/hover", "textDocument/definition", "textDocument/completion", "textDocument/formatting"]
    with harness.scratch() as directory, Wire(Path(directory)) as wire:
        wire.initialize(rng.choice([None, ["utf-16"], ["utf-32"], ["utf-8"], ["bogus"]]))
        uri = (Path(directory) / "a.res").as_uri()
        text = rng.choice(["network a {\n    input 3x8x8\n}\n", '# 😀\r\nuse "resdsl:' + "a" * 300 + '"\n', 'use "'])
        wire.open(uri, text)
        for msg_id in range(100, 100 + rng.randint(3, 8)):
            if rng.random() < 0.25:
                wire.send(_malformed_frame(rng))
                wire.send(b"\r\n")
                continue
            wire.send(frame({"jsonrpc": "2.0", "id": msg_id, "method": rng.choice(methods),
                             "params": _hostile_params(rng, uri)}))  # fmt: skip
        # Whatever came before, a well-formed request is answered (a few tries: one may be
        # taken as a malformed frame's missing body).
        answered = False
        for msg_id in range(900, 904):
            wire.request(msg_id, "textDocument/hover",
                         {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 1}})  # fmt: skip
        for msg_id in range(900, 904):
            try:
                wire.response(msg_id, timeout=5 if answered else 30)
                answered = True
            except AssertionError:
                continue
        assert answered and wire.process.poll() is None


# Paths on every command -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "specs/cifar20.res", "--data", "x" * 300, "--recipe", "cifar10-paper"],
        ["train", "specs/cifar20.res", "--data", "d", "--recipe", "y" * 300 + ".yaml"],
        ["train", "specs/cifar20.res", "--data", "d", "--recipe", "cifar10-paper", "--out", "o" * 300],
        ["eval", "specs/cifar20.res", "--weights", "w" * 300, "--data", "d"],
        ["eval", "specs/cifar20.res", "--weights", "w.pt", "--data", "d", "--batch-size", "-1"],
        ["plot", "r" * 300, "-o", "a.png"],
        ["plot", ".", "-o", "a" * 300 + ".png"],
        ["fmt", "f" * 300 + ".res"],
        ["check", "c" * 300 + ".res"],
        ["train", "specs/cifar20.res", "--data", "d", "--recipe", "cifar10-paper", "--input", "3x16x16"],
    ],
    ids=lambda argv: f"{argv[0]}-{next((a for a in argv[1:] if len(a) >= 300 or a in ('-1', '3x16x16')), '?')[:12]}",
)
def test_path_options_past_the_name_limit_are_errors(argv: list[str]) -> None:
    with harness.scratch() as directory:
        outcome = run_bounded(harness.drive_cli, argv, directory)
    assert_within_budget(outcome, argv)
    status, _, err = outcome.result
    assert status in (1, 2) and "Traceback" not in err, err


# Full disks: every file the project writes (issue 27) ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "argv", "written"), harness.WRITTEN_FILES, ids=[case[0] for case in harness.WRITTEN_FILES]
)
@pytest.mark.parametrize("limit", [1500])
def test_every_file_written_onto_a_full_disk(
    name: str, argv: list[str], written: str, limit: int, tmp_path: Path
) -> None:
    from cifar_fixtures import TINY_SPEC

    folder = harness.written_files_folder(tmp_path, TINY_SPEC)
    target = folder / written
    before = target.read_bytes() if target.exists() else None
    result = harness.run_with_file_size_limit(argv, folder, limit)
    harness.assert_full_disk_handled(result, folder, target, before)


@pytest.mark.parametrize("limit", [300, 20_000])
def test_train_onto_a_full_disk(limit: int, tmp_path: Path) -> None:
    from cifar_fixtures import TINY_SPEC, write_learnable

    write_learnable(tmp_path / "data", train=64, test=32)
    (tmp_path / "tiny.res").write_text(TINY_SPEC, encoding="utf-8")
    (tmp_path / "small.yaml").write_text(
        "dataset: cifar10\niterations: 4\nbatch_size: 32\nlr: 0.05\npad: 1\neval_every: 2\ncheckpoint_every: 2\n"
        "eval_batch_size: 64\ndevice: cpu\n",
        encoding="utf-8",
    )
    argv = ["train", "tiny.res", "--data", "data", "--recipe", "small.yaml", "--out", "run"]
    result = harness.run_with_file_size_limit(argv, tmp_path, limit)
    written = [name for name in ("recipe.yaml", "metrics.csv", "best.pt", "checkpoint.pt", "curves.png")
               if f"{name}: cannot write" in result.stderr]  # fmt: skip
    assert written, result.stderr[-3000:]
    harness.assert_full_disk_handled(result, tmp_path / "run", tmp_path / "run" / written[0], None)
