"""The minimal case of each class that the fourth hostile-input attack found (issue 27).

Each test failed before its fix. Work is bounded by counting (statements run, analyses
made, bytes expanded); a hang is caught by a forked child's generous wall-clock limit
(tests/fuzz_harness.py), never by asserting time.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import fuzz_harness as harness
import pytest
import torch
from cifar_fixtures import TINY_SPEC, write_learnable
from lsp_wire import Wire

import resdsl
from resdsl import cli
from resdsl.errors import CompilerBug, LimitError, SpecError, ValueNameError
from resdsl.ir import Limits


def _network(stem: str, blocks: str = "", stage: str = "") -> str:
    return f"{blocks}network n {{\n    input 4x8x8\n    stem {{\n{stem}    }}\n{stage}}}\n"


NESTED_LOOPS = _network(
    "        conv 3x3, 4\n        let x\n"
    "        for i in 0 .. 1024 {\n            for j in 0 .. 1024 {\n                for k in 0 .. 1024 {\n"
    "                    from x\n                }\n            }\n        }\n        relu\n"
)


def _compile_outcome(text: str) -> str:
    try:
        resdsl.compile_text(text)
    except SpecError as error:
        harness.render_error(error)
        return f"{type(error).__name__}: {error.message} @ {error.line}"
    return "compiled"


# 1. Loops whose bodies make no layer -----------------------------------------------------------


def test_loops_around_a_body_that_makes_no_layer_are_bounded_by_statements_run() -> None:
    outcome = harness.run_bounded(_compile_outcome, NESTED_LOOPS)
    assert outcome.status in ("ok", "slow"), outcome.detail  # a hang is "blocked"
    if outcome.ok:
        assert outcome.result.startswith("LimitError") and "statements" in outcome.result, outcome.result
        assert outcome.result.endswith("@ 9"), outcome.result  # at `from x`, where the bound was crossed


def test_the_statement_bound_counts_iterations_and_is_a_limit() -> None:
    text = _network("        conv 3x3, 4\n        let x\n        for i in 0 .. 50 {\n            from x\n        }\n")
    resdsl.compile_text(text)
    # conv, let, for, and 50 iterations of one `from` each: 103 statements.
    resdsl.compile_text(text, limits=Limits(max_statements=103))
    with pytest.raises(LimitError) as caught:
        resdsl.compile_text(text, limits=Limits(max_statements=102))
    assert "102 statements" in caught.value.message and caught.value.line == 7


def test_a_stage_repeating_a_block_without_layers_is_refused_before_it_runs() -> None:
    text = _network(
        "        conv 3x3, 4\n", blocks="block b {\n    let x\n    from x\n}\n", stage="    stage s: 100000000 x b\n"
    )
    outcome = harness.run_bounded(_compile_outcome, text)
    assert outcome.ok and outcome.result.startswith("LimitError"), (outcome.status, outcome.detail, outcome.result)
    assert "statements" in outcome.result and outcome.result.endswith("@ 10"), outcome.result


def test_the_language_server_uses_the_same_bound(tmp_path: Path) -> None:
    uri = (tmp_path / "loops.res").as_uri()
    with Wire(tmp_path) as wire:
        wire.initialize()
        wire.open(uri, NESTED_LOOPS)
        diagnostics = wire.diagnostics(uri, timeout=120)
        assert [d["range"]["start"]["line"] for d in diagnostics] == [8], diagnostics
        assert "statements" in diagnostics[0]["message"]
        wire.request(2, "textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 5, "character": 10}})
        assert "result" in wire.response(2, timeout=120)


# 2. The parallel-path fold of a value joined with itself ------------------------------------------


@pytest.mark.parametrize("join", ["add y, y", "add y, y, x, x", "add x, y, y"])
def test_for_inference_folds_a_value_joined_with_itself(join: str) -> None:
    text = (
        f"block b(w) {{\n    let x\n    conv 3x3, w\n    bn\n    let y\n    {join}\n}}\n"
        "network n {\n    input 4x8x8\n    stage s: 1 x b(4)\n    head {\n        avgpool\n        fc 3\n    }\n}\n"
    )
    network = resdsl.compile_text(text)
    torch.manual_seed(0)
    reference = resdsl.load(network).double().eval()
    harness._randomise_batch_norm(reference)
    folded = resdsl.load(network, weights=reference.state_dict(), for_inference=True, engine="eager").double()
    assert [module for module in folded.modules() if isinstance(module, torch.nn.BatchNorm2d)] == []
    example = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected, got = reference(example), folded(example)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()


# 3. A nested block's `..` label with `{k}` inside a loop -------------------------------------------


def test_a_nested_blocks_outer_label_in_a_loop_compiles() -> None:
    text = (
        "block inner(w, k) {\n    ..c{k}: conv 1x1, w\n}\n"
        "block b(w) {\n    for i in 0 .. 2 {\n        inner(w, k=i)\n    }\n}\n"
        "network n {\n    input 4x8x8\n    stage s: 1 x b(4)\n}\n"
    )
    network = resdsl.compile_text(text)
    assert [node.name for node in network.nodes("conv")] == ["s.0.c0", "s.0.c1"]


def test_a_label_naming_an_outer_loops_variable_inside_a_nested_block_is_an_error_there() -> None:
    text = (
        "block inner(w) {\n    ..c{i}: conv 1x1, w\n}\n"
        "block b(w) {\n    for i in 0 .. 2 {\n        inner(w)\n    }\n}\n"
        "network n {\n    input 4x8x8\n    stage s: 1 x b(4)\n}\n"
    )
    with pytest.raises(ValueNameError) as caught:
        resdsl.compile_text(text)
    assert caught.value.line == 2 and "names nothing" in caught.value.message


# 4. The language server on a document the compiler fails inside -----------------------------------


def test_the_language_server_shows_a_compiler_bug_as_a_diagnostic_and_answers(monkeypatch, tmp_path: Path) -> None:
    import resdsl.compiler
    from resdsl.lsp import analysis

    def broken(*args, **kwargs):
        raise CompilerBug("internal error in pass 'expand': KeyError: 'i'")

    monkeypatch.setattr(resdsl.compiler, "compile_text", broken)
    analysis.clear_cache()
    text = "block b(w) {\n    conv 3x3, w\n}\nnetwork n {\n    input 3x8x8\n    stage s: 1 x b(4)\n}\n"
    result = analysis.analyze(text, tmp_path / "bug.res")
    (error,) = result.errors
    assert (error.line, error.column) == (4, 9) and "failed inside the compiler" in error.message
    assert "b" in result.definitions  # hover and completion still know the blocks
    assert analysis.hover(result, 6, 19) is not None
    assert any(item.label == "b" for item in analysis.complete(result, 6, 18))
    analysis.clear_cache()


# 5. fmt on a label that is only `{i}` --------------------------------------------------------------


@pytest.mark.parametrize("label", ["{i}", "{i}.conv", "{i}.c{i}"])
def test_fmt_formats_a_label_that_starts_with_an_interpolation(label: str) -> None:
    from resdsl.fmt import format_text

    text = _network(f"        for i in 0 .. 2 {{\n            {label} :  conv 3x3, 4\n        }}\n")
    formatted = format_text(text)
    assert f"            {label}: conv 3x3, 4\n" in formatted
    assert format_text(formatted) == formatted
    names = [node.name for node in resdsl.compile_text(formatted).nodes("conv")]
    assert names == [node.name for node in resdsl.compile_text(text).nodes("conv")]


# 6, 7. Full disks ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("full_disk")
    (folder / "tiny.res").write_text(TINY_SPEC, encoding="utf-8")
    return folder


@pytest.mark.parametrize("suffix", [".pt2", ".pt", ".onnx", ".safetensors", ".py"])
def test_build_on_a_full_disk_is_a_clean_error(tiny_folder: Path, suffix: str) -> None:
    target = tiny_folder / f"model{suffix}"
    result = harness.run_with_file_size_limit(["build", "tiny.res", "-o", target.name], tiny_folder, 2000)
    harness.assert_full_disk_handled(result, tiny_folder, target, None)


def test_write_file_reports_the_file_error_a_writer_library_wraps(tmp_path: Path) -> None:
    from resdsl.files import WriteError, write_file

    def library(handle) -> None:  # as torch.save does: the file's OSError becomes its own RuntimeError
        try:
            handle.write(b"x" * 10)
            raise OSError(28, "No space left on device")
        except OSError as error:
            raise RuntimeError("PytorchStreamWriter failed writing file") from error

    def failing(handle) -> None:
        handle.write(b"partial")
        raise RuntimeError("a bug in the library, not the disk")

    class Full:
        def __init__(self, handle) -> None:
            self.handle = handle

    target = tmp_path / "out.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="a bug in the library"):
        write_file(target, failing)  # not a file error: not disguised as one

    import resdsl.files as files

    original = files._GuardedFile.write

    def write_then_fail(self, data):
        if not self.failure:
            self.failure = OSError(28, "No space left on device")
        return original(self, data)

    files._GuardedFile.write = write_then_fail
    try:
        with pytest.raises(WriteError, match="No space left on device"):
            write_file(target, library)
    finally:
        files._GuardedFile.write = original
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.pt"]


RECIPE = """\
dataset: cifar10
iterations: 4
batch_size: 32
lr: 0.05
pad: 1
eval_every: 2
checkpoint_every: 2
eval_batch_size: 64
device: cpu
"""


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("full_disk_train")
    write_learnable(folder / "data", train=64, test=32)
    (folder / "tiny.res").write_text(TINY_SPEC, encoding="utf-8")
    (folder / "small.yaml").write_text(RECIPE, encoding="utf-8")
    return folder


def test_train_on_a_full_disk_is_a_clean_error_naming_the_checkpoint_file(train_folder: Path) -> None:
    out = train_folder / "run"
    argv = ["train", "tiny.res", "--data", "data", "--recipe", "small.yaml", "--out", "run"]
    # Big enough for recipe.yaml and metrics.csv, too small for a checkpoint.
    result = harness.run_with_file_size_limit(argv, train_folder, 20_000)
    failed = next((name for name in ("best.pt", "checkpoint.pt") if f"{name}: cannot write" in result.stderr), None)
    assert failed is not None, result.stderr  # torch.save's own RuntimeError hid the file's error before
    harness.assert_full_disk_handled(result, out, out / failed, None)


# 8. The backbone API ----------------------------------------------------------------------------


def test_reset_classifier_to_none_and_back_as_timm_allows() -> None:
    model = resdsl.load("torchvision/resnet18", input="3x32x32").eval()
    model.reset_classifier(0)
    assert isinstance(model.fc, torch.nn.Identity) and model.num_classes == 0
    model.reset_classifier(10)
    assert isinstance(model.fc, torch.nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 10)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("classes", [10**12, -1, 2.5, True])
def test_reset_classifier_refuses_what_cannot_be_built(classes) -> None:
    model = resdsl.load("torchvision/resnet18", input="3x32x32")
    with pytest.raises(ValueError, match=r"limit|number of classes"):
        model.reset_classifier(classes)
    assert model.fc.out_features == 1000


@pytest.mark.parametrize("asked", [{"features": ()}, {"out_indices": ()}, {"features_only": True, "out_indices": []}])
def test_an_empty_choice_of_features_is_resdsls_error(asked: dict) -> None:
    with pytest.raises(ValueError, match="no features asked for"):
        resdsl.load("resnet18", input="3x32x32", **asked)
    with pytest.raises(ValueError, match="no features asked for"):
        resdsl.feature_info("resnet18", **{k: v for k, v in asked.items() if k != "features_only"})


# 9. YAML aliases in recipes ---------------------------------------------------------------------

LAUGHS = "lr: 0.1\nmilestones: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def _parse_recipe(text: str, override: str | None) -> str:
    from resdsl.train.recipes import RecipeError, apply_override, parse_recipe

    try:
        recipe = parse_recipe(text, "laughs.yaml")
        if override is not None:
            apply_override(recipe, override)
    except RecipeError as error:
        harness.render_error(error)
        return f"{error.message} @ {error.line}:{error.column}"
    return "read"


@pytest.mark.parametrize(
    ("text", "override", "where"),
    [
        (LAUGHS, None, "@ 2:13"),
        ("lr: &x 0.1\nwarmup_lr: *x\n", None, "@ 1:5"),
        ("lr: 0.1\n", "milestones=[&a 1, *a]", "@ 1:12"),
    ],
    ids=["billion-laughs", "one-alias", "set"],
)
def test_recipes_refuse_yaml_anchors_and_aliases(text: str, override: str | None, where: str) -> None:
    outcome = harness.run_bounded(_parse_recipe, text, override)
    assert outcome.ok, (outcome.status, outcome.detail)
    assert "anchors or aliases" in outcome.result and outcome.result.endswith(where), outcome.result


# 10. The language server falling behind typing ------------------------------------------------------


def test_the_language_server_analyses_only_the_latest_of_a_burst_of_changes(tmp_path: Path) -> None:
    uri = (tmp_path / "typed.res").as_uri()
    changes = 615

    def version(number: int) -> str:
        return f"network typed {{\n    input 3x8x8\n    stem {{\n        conv 3x3, {number + 1}\n    }}\n}}\n"

    with Wire(tmp_path) as wire:
        wire.initialize()
        wire.open(uri, version(0))
        wire.diagnostics(uri)
        frames = b"".join(
            harness_frame(
                "textDocument/didChange",
                {"textDocument": {"uri": uri, "version": number}, "contentChanges": [{"text": version(number)}]},
            )
            for number in range(1, changes + 1)
        )
        last = version(changes).replace("conv 3x3,", "conv 3x3, 0,")  # an error: the latest text is what is shown
        frames += harness_frame(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": changes + 1}, "contentChanges": [{"text": last}]},
        )
        wire.send(frames)
        wire.request(
            7,
            "textDocument/formatting",
            {"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}},
        )
        reply = wire.response(7, timeout=120)
        assert "result" in reply, reply
        diagnostics = wire.diagnostics(uri, timeout=120)
        while not diagnostics:  # an analysis of an earlier text may come first; the latest has an error
            diagnostics = wire.diagnostics(uri, timeout=120)
        assert diagnostics and diagnostics[0]["range"]["start"]["line"] == 3, diagnostics
        wire.request(8, "textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 3, "character": 9}})
        wire.response(8, timeout=120)
        published = [m for m in wire.received if m.get("method") == "textDocument/publishDiagnostics"]
        # Each analysis publishes once: a handful for the burst, not one per change.
        assert len(published) <= 10, len(published)


def harness_frame(method: str, params: dict) -> bytes:
    from lsp_wire import frame

    return frame({"jsonrpc": "2.0", "method": method, "params": params})


# 11. plot on a run whose metrics.csv has an empty iteration cell ------------------------------------


def test_plot_refuses_a_row_without_its_iteration(tmp_path: Path, capsys) -> None:
    header = "iteration,epoch,lr,train_loss,train_error,val_loss,val_error,test_loss,test_error,images_per_s,seconds"
    (tmp_path / "metrics.csv").write_text(f"{header}\n10,1,0.1,2,50,,,2,55,100,1\n,2,0.1,2,45,,,2,50,100,2\n")
    assert cli.main(["plot", str(tmp_path), "-o", str(tmp_path / "curves.png")]) == 1
    err = capsys.readouterr().err
    assert "line 3: 'iteration' is empty" in err and "Traceback" not in err, err
    assert not (tmp_path / "curves.png").exists()


# Questionable, decided (docs/language.md, docs/training.md, docs/editors.md) -----------------------


@pytest.mark.parametrize(
    ("stem", "line", "message"),
    [
        ("        conv 3x3, 4\n        let for\n        from for\n", 5, "'for' is a keyword"),
        ("        conv 3x3, 4\n        for in in 0 .. 2 {\n            relu\n        }\n", 5, "'in' is a keyword"),
        (
            "        conv 3x3, 4\n        let i\n        for i in 0 .. 2 {\n            relu\n        }\n",
            6,
            "hides the value",
        ),
    ],
    ids=["let-keyword", "loop-keyword", "loop-hides-let"],
)
def test_names_that_would_mean_two_things_are_refused(stem: str, line: int, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(_network(stem))
    assert caught.value.errors[0].line == line and message in caught.value.errors[0].message, str(caught.value)


def test_x_stays_a_value_name() -> None:
    stem = "        conv 3x3, 4\n        let x\n        relu\n        let y\n        add x, y\n"
    network = resdsl.compile_text(_network(stem))
    assert [node.kind for node in network.nodes()][-2:] == ["add", "output"]


def test_an_interpolated_label_past_the_name_limit_is_refused_at_the_label() -> None:
    text = _network(f"        {'a' * 110}{{w}}: conv 3x3, 4\n").replace("network n {", "network n(w=10**18) {")
    text = text.replace("10**18", str(10**18))
    with pytest.raises(LimitError) as caught:
        resdsl.compile_text(text)
    assert caught.value.line == 4 and "129 characters" in caught.value.message


def test_integral_reals_are_integers_where_one_is_needed() -> None:
    network = resdsl.compile_text(_network("        conv 3x3, 8.0\n        conv 3x3, 16 / 2\n"))
    assert [node.shape[0] for node in network.nodes("conv")] == [8, 8]
    with pytest.raises(SpecError, match="must be an integer"):
        resdsl.compile_text(_network("        conv 3x3, 7 / 2\n"))


def test_go_to_definition_on_a_value_name_finds_its_let(tmp_path: Path) -> None:
    from resdsl.lsp import analysis

    text = "block b(w) {\n    conv 3x3, w\n    let y\n    for i in 0 .. 2 {\n        bn\n    }\n    add y, y\n}\n"
    result = analysis.analyze(text + "network n {\n    input 3x8x8\n    stage s: 1 x b(4)\n}\n", tmp_path / "d.res")
    site = analysis.definition(result, 7, 9)
    assert site is not None and (site.line, site.column) == (3, 9)


def test_init_from_weights_holding_nan_is_refused(train_folder: Path, capsys, monkeypatch) -> None:
    network = resdsl.compile_text(TINY_SPEC)
    state = resdsl.load(network).state_dict()
    key = next(k for k in state if k.endswith("weight"))
    state[key][0] = float("nan")
    torch.save(state, train_folder / "nan.pt")
    monkeypatch.chdir(train_folder)
    argv = ["train", "tiny.res", "--data", "data", "--recipe", "small.yaml", "--out", "nan_run", "--init", "nan.pt"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"'{key}' holds NaN" in err and "Traceback" not in err, err
    assert not (train_folder / "nan_run" / "checkpoint.pt").exists()


def test_a_gzip_bomb_is_refused_before_it_is_expanded(tmp_path: Path, monkeypatch) -> None:
    from resdsl.train import data

    monkeypatch.setattr(data, "MIN_EXPANSION_BYTES", 1 << 20)
    archive = tmp_path / "cifar-10-python.tar.gz"
    size = 8 << 20
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    assert archive.stat().st_size * data.MAX_EXPANSION_RATIO < size
    reads = []
    original = tarfile.TarFile.extractfile

    def counted(self, member):
        reads.append(member.name)
        return original(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", counted)
    with pytest.raises(data.DataError, match="expands to more than"):
        data.read_cifar(archive, "cifar10")
    assert reads == []  # nothing was read into memory
