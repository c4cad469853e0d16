"""Golden diagnostics: every kind of error, checked character for character.

Each tests/fixtures/errors/NAME.res has a NAME.err beside it: the exact stderr of
``resdsl check tests/fixtures/errors/NAME.res`` run from the repository root.
docs/errors.md is generated from the same fixtures, so the documentation shows
the messages users really get.

Regenerate after an intended change to a message (then review the diff)::

    RESDSL_UPDATE_GOLDEN=1 python -m pytest tests/test_diagnostics.py
    python tests/test_diagnostics.py          # the same, without pytest
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from pathlib import Path

import pytest

import resdsl
from resdsl import cli
from resdsl.errors import LimitError, SpecError, SpecSyntaxError

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "errors"
DOCS = ROOT / "docs" / "errors.md"
UPDATE = os.environ.get("RESDSL_UPDATE_GOLDEN") == "1"
WARNING_FIXTURE = ROOT / "tests" / "fixtures" / "warnings" / "unread_parameter.res"


def _warning_output() -> str:
    """What `resdsl check` prints on stderr for the warning fixture."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check", str(WARNING_FIXTURE.relative_to(ROOT))])
    assert code == 0, err.getvalue()
    return err.getvalue()


#: Section, then fixture name and what the fixture shows, in the order docs/errors.md lists them.
#: Every fixture must appear here, so that a new diagnostic is also documented.
CATALOGUE: dict[str, dict[str, str]] = {
    "Syntax errors": {
        "syntax_missing_comma": "A layer's arguments without a comma between them",
        "syntax_stage_missing_colon": "A stage without the colon after its name",
        "syntax_unexpected_eof": "The file ends inside a brace",
        "syntax_bad_character": "A character that is not part of the language",
        "syntax_misspelled_network": "A misspelt keyword at the start of a definition",
        "syntax_misspelled_stage": "A misspelt keyword inside a network",
        "syntax_stem_label_in_body": "A label 'stem' in a network's body, where 'stem' begins the stem",
        "deep_nesting": "Nesting deeper than the bound (thousands of parentheses)",
        "deep_expression": "An expression chaining more operators than the bound",
        "too_many_tokens": "A spec longer than the token bound (here, 20,001 semicolons)",
        "name_too_long": "A name longer than the bound",
        "too_many_arguments": "More arguments in one call than the bound",
        "syntax_carriage_returns": "Old Mac line endings (a bare carriage return)",
        "syntax_several_mistakes": "Several syntax mistakes: each is reported (up to 20), in the order of the file",
        "syntax_block_never_closed": "A block's '}' missing before the next definition",
        "syntax_semicolon_in_parentheses": "A `;` inside parentheses, where a line end only continues the line",
        "syntax_stem_never_closed": "A stem's '}' missing before a stage: the stem's brace is named",
        "syntax_stem_never_closed_at_end": "A stem's '}' missing, the network's closing it: the stem's brace is named",
    },
    "Unknown names": {
        "unknown_block": "A stage uses a block that does not exist",
        "unknown_layer": "A misspelt layer kind",
        "unknown_layer_synonym": "Another framework's name for a layer kind",
        "unknown_keyword_argument": "A keyword argument that the layer kind does not take",
        "unknown_block_parameter": "A block argument that the block does not declare",
        "unknown_network_parameter": "A network argument that the network does not declare",
        "unknown_setting": "A misspelt network setting",
        "unknown_setting_input": "A misspelt `input` (not reported as a missing input)",
        "unknown_setting_in_with": "A misspelt setting in a `with` override",
        "unknown_shortcut_option": "A shortcut option other than A, B, C or none",
        "unknown_upsample_mode": "An upsampling mode other than nearest or bilinear",
        "unknown_network_in_alias": "An alias of a network that does not exist",
        "unknown_name_in_expression": "An expression naming something not in scope",
        "add_misspelt": "A residual join not written `add shortcut`",
        "unknown_function": "A misspelt function in an expression",
        "dotted_block_name": "A dotted name where a plain name is needed",
        "several_unknown_names": "Several misspelt names: each statement and stage is checked on its own",
        "several_errors_in_a_block": "Several mistakes in one block and a bad setting: each statement is checked",
    },
    "Branches, taps and projections": {
        "branch_mul_shape": "A `mul` branch whose output cannot multiply the current value (both shapes)",
        "branch_mul_shape_nested": "The same in a block used inside another (SE): the note names the inner one",
        "branch_add_shape": "An `add` branch whose output cannot be added to the current value",
        "branch_empty": "A branch with no layers",
        "tap_twice": "`tap shortcut` twice in one block",
        "tap_after_add": "`tap shortcut` after `add shortcut`",
        "tap_without_add": "A block that taps its shortcut and never adds it",
        "projection_parameters": "A projection block whose parameters are not `(out, stride)`",
        "projection_output_shape": "A projection block whose output does not fit the block's",
        "if_not_truth_value": "An `if` on something that is not true or false",
        "drop_path_division_by_zero": "A drop-path rate that divides by zero (one block: block_count - 1 is 0)",
        "block_uses_itself": "A block that uses itself",
        "norm_not_a_norm": "A `norm` setting that names no norm layer",
    },
    "Shapes": {
        "shape_option_a_shrinks": "Option A asked to reduce channels",
        "shape_spatial_zero": "The spatial size reaches zero",
        "shape_groups_dont_divide": "A grouped convolution whose channels do not divide",
        "shape_two_add_shortcut": "A block with two `add shortcut` joins",
        "shape_unjoinable_stride": "A block output that no shortcut stride can match",
        "shape_fc_then_conv": "A spatial layer after `fc` (flat input)",
        "shape_pool_padding": "Pool padding larger than half the kernel",
        "shape_rel_pos_on_tokens": "Attention's relative position logits on a token sequence (no H and W)",
        "input_not_shape": "An input that is not C x H x W",
        "missing_input": "A network without an input shape",
        "shape_grid_lost": "`grid` without a size, on tokens that no longer lie on a grid (a class token)",
        "shape_attention_sr_ratio": "Spatial-reduction attention whose ratio is larger than the tokens' grid",
        "shape_unfold_does_not_divide": "`unfold` on a map whose size does not divide by the patch",
        "shape_fold_other_patch": "`fold` with another patch size than `unfold` used",
        "add_outside_block": "`add shortcut` outside a block",
        "sizes_in_arithmetic": "Arithmetic on sizes such as 3x3",
        "layer_missing_argument": "A layer without a required argument",
        "layer_too_many_arguments": "A layer with too many positional arguments",
        "shape_window_without_grid": "Window attention on tokens that are no longer a grid (a class token added)",
        "shape_shift_not_less_than_window": "Shifted windows shifted by a whole window",
    },
    "Values": {
        "zero_width": "Zero channels",
        "negative_width": "Negative channels",
        "zero_stride": "A zero stride",
        "negative_stride": "A negative stride",
        "fractional_width": "A width that is not a whole number (`/` instead of `//`)",
        "dropout_out_of_range": "A dropout probability outside [0, 1)",
        "bn_momentum_out_of_range": "A BN momentum outside [0, 1]",
        "standardize_option_alone": "A weight standardisation option on a convolution without `standardize=true`",
        "standardize_eps_zero": "A weight-standardised convolution's `eps` of zero",
        "zero_repeat": "A stage repeated zero times",
        "negative_repeat": "A negative repeat count, computed from a parameter",
        "division_by_zero": "Division by zero in an expression",
        "too_many_block_arguments": "More arguments than the block takes",
        "size_limit": "A spec that would expand past the size bound",
        "integer_literal_too_large": "An integer literal that does not fit in 64 bits",
        "integer_overflow": "Arithmetic whose result leaves 64 bits (reported where it does)",
        "real_overflow": "Arithmetic on reals that overflows to infinity",
    },
    "Named values, lists and loops": {
        "value_read_before_bound": "A named value read before the `let` that binds it",
        "value_never_read": "A path named and never joined (nothing reads the value)",
        "value_from_drops_a_path": "`from` moving on from a value that nothing reads or names",
        "value_shadowed": "A name bound twice in one block",
        "value_index_out_of_range": "An index past the end of a list",
        "value_list_as_current": "A list (a split's parts) read as one value",
        "value_split_does_not_divide": "A split whose parts do not divide the channels",
        "value_join_shapes": "A join over named values of different shapes (both shapes)",
        "value_loop_bound": "A loop over its bound",
        "value_label_collision": "A label interpolation that gives one name twice",
        "value_outer_label_outside_projection": "A `..` label in a stage's block (it has no scope around it)",
        "value_statement_bound": "Loops that run past the statement bound without making a layer",
        "value_keyword_name": "A keyword as a value's name",
        "value_loop_hides_value": "A loop variable named like a value of the block",
        "value_label_too_long": "An interpolated label that gives a name past the bound",
    },
    "Definitions and networks": {
        "duplicate_block": "A block defined twice",
        "duplicate_network": "A network defined twice",
        "duplicate_label": "Two layers whose labels give the same module name",
        "duplicate_stage": "Two stages of one name",
        "stage_named_like_layer": "A stage named like a layer of the stem",
        "label_python_keyword": "A label that is a Python keyword",
        "label_module_attribute": "A label that every torch module already uses (`forward`)",
        "label_inside_layer": "A label path that would put a layer inside another layer",
        "setting_twice": "A setting written twice",
        "alias_cycle": "Network aliases that form a cycle",
        "alias_fixed_parameter": "Setting a parameter that an alias already fixed",
        "alias_chain_too_deep": "A chain of network aliases deeper than the bound",
        "duplicate_parameter": "Two parameters of one name",
        "setting_twice_in_with": "A setting given twice in one `with`",
        "network_needs_arguments": "The file's network needs arguments",
        "every_network_needs_arguments": "Every network of the file needs arguments",
        "several_networks": "Several networks and none named like the file",
        "no_network": "A file that defines no network",
        "empty": "An empty file",
    },
    "Files and `use`": {
        "use_missing_file": "`use` of a file that does not exist",
        "use_cycle": "Files that `use` each other",
        "use_not_res": "`use` of a file that is not a .res spec",
        "not_utf8": "A spec that is not UTF-8",
        "directory": "A directory given as the spec",
        "not_a_regular_file": "A device (or a FIFO, a socket) given as the spec: refused before reading",
        "use_shipped_name_too_long": '`use "resdsl:..."` with a name longer than any file name can be',
    },
}


def fixture_names() -> list[str]:
    return sorted(path.name.removesuffix(".res") for path in FIXTURES.glob("*.res"))


def run_check(name: str) -> tuple[int, str, str]:
    """``resdsl check`` on one fixture, in process, from the repository root."""
    out, err = io.StringIO(), io.StringIO()
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["check", f"tests/fixtures/errors/{name}.res"])
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


def _spec_text(name: str) -> str:
    path = FIXTURES / f"{name}.res"
    if path.is_symlink():
        return f"(tests/fixtures/errors/{name}.res is a symbolic link to {os.readlink(path)})"
    if path.is_dir():
        return f"(tests/fixtures/errors/{name}.res is a directory)"
    text = path.read_bytes().decode("utf-8", errors="replace")
    if not text:
        return "(an empty file)"
    lines = []
    for line in text.splitlines():
        # A line of thousands of parentheses tells the reader nothing more than its start.
        lines.append(line if len(line) <= 100 else line[:100] + f"... ({len(line):,} characters)")
    # Show the helper files a fixture imports, so that the example is complete.
    for used in re.findall(r'^use "(lib/[^"]+)"', text, flags=re.M):
        helper = (FIXTURES / used).read_text(encoding="utf-8").rstrip("\n")
        lines += ["", f"# tests/fixtures/errors/{used}:", helper]
    return "\n".join(lines)


def render_docs() -> str:
    """docs/errors.md, from the fixtures and their golden messages."""
    parts = [
        "# Diagnostics",
        "",
        "<!-- Generated by `python tests/test_diagnostics.py` from tests/fixtures/errors/: do not edit. -->",
        "",
        "Every error that a spec can cause is reported as `path:line:column: message`, then the",
        "source line with a caret under the offending text, then notes (other places involved,",
        "such as the block line behind a stage) and a hint. `resdsl check` prints diagnostics on",
        "stderr and exits with status 1. Each example below is a spec from",
        "`tests/fixtures/errors/` and the exact text that `resdsl check` prints for it; a test",
        "keeps this page in step with the compiler.",
        "",
        "A run reports every independent error, up to 20, in the order of the file: each syntax",
        "error (the parser recovers at the next line), each setting (a bad one is reported and its",
        "default stands in), each definition and `use` of a file, each block argument, and each",
        "statement, at the top level and inside every block (nothing after expansion runs on a",
        "network with errors). A failed statement's value is poisoned: the statements after it are",
        "still checked (their arguments, their names), but nothing computed from it reports again,",
        'so no shape is guessed from it and a name bound to it is never "unread"; fixing the',
        "first error shows what else is real. The same mistake in every repetition of a stage is",
        "reported once. In Python the exception is a `resdsl.SpecError`, the first error, and",
        "`.errors` lists them all; the language server publishes each as its own diagnostic.",
        "",
        "## Warnings",
        "",
        "What compiles but is most likely not what was meant is a warning: printed on stderr as",
        "`path:line:col: warning: message`, with the quote, notes and hint of an error. `check`,",
        "`build` and `draw` still exit 0, and `--werror` makes every warning an error (exit 1). In",
        "Python they are `network.warnings` (`resdsl.SpecWarning`, a `SpecError` that is never",
        "raised); the language server shows them with severity 2 (warning). There is one warning: a",
        "block parameter that nothing in the block reads (no statement, condition, loop bound, label",
        "or default), given an argument by a caller. `r(8, stride=2)` to a block that never uses",
        "its `stride` does not downsample; the warning points at the argument, and a note at the",
        "parameter:",
        "",
        "```",
        WARNING_FIXTURE.read_text(encoding="utf-8").rstrip("\n"),
        "```",
        "",
        f"`resdsl check {WARNING_FIXTURE.relative_to(ROOT)}` prints this on stderr, its usual line on",
        "stdout, and exits 0:",
        "",
        "```",
        _warning_output().rstrip("\n"),
        "```",
        "",
    ]
    for section, entries in CATALOGUE.items():
        parts += [f"## {section}", ""]
        for name, title in entries.items():
            golden = (FIXTURES / f"{name}.err").read_text(encoding="utf-8").rstrip("\n")
            parts += [
                f"### {title}",
                "",
                f"`tests/fixtures/errors/{name}.res`:",
                "",
                "```",
                _spec_text(name),
                "```",
                "",
                "```console",
                f"$ resdsl check tests/fixtures/errors/{name}.res",
                golden,
                "```",
                "",
            ]
    parts += [*TRAINING.splitlines(), ""]
    parts += FUZZING.splitlines()
    return "\n".join(parts).rstrip("\n") + "\n"


#: The errors of `train`, `eval`, `plot`, `fmt` and the files resdsl writes (issue 18): each message
#: fragment is checked to be in the code by test_training_errors_are_in_the_code.
TRAINING_ERRORS: dict[str, list[tuple[str, str]]] = {
    "Writing files (every command)": [
        (
            "refusing to write: a symbolic link stands where the file should be",
            "a link (or FIFO, device, folder) where train, build -o, draw -o, plot -o or fmt would write",
        ),
        ("cannot write: …", "the disk filled, no permission (the system's reason follows): the old file is left whole"),
        ("cannot write: the file name is longer than … bytes", "a name past the system's limit"),
        ("cannot use as a folder: a file stands there", "train --out naming a file (or /dev/null)"),
    ],
    "Run folders": [
        ("another process is using this …", "a second train --out on a folder a run holds"),
        ("this folder already holds a run", "a new run on a finished run's folder"),
        ("… is not UTF-8 text (byte offset …)", "an edited metrics.csv"),
        ("'iteration' is not a whole number", "a metrics.csv row with a non-integer iteration"),
        ("'iteration' is empty", "plot on a metrics.csv row without its iteration"),
        ("holds NaN or infinite values", "train --init from weights that would train to NaN"),
        ("recipe.yaml holds …, not a run's record (a mapping)", "an edited recipe.yaml"),
        ("the checkpoint lacks 'optimizer', …", "best.pt copied over checkpoint.pt and resumed"),
        ("the checkpoint's 'iteration' is not a whole number from 0 to …", "a retyped or negative field"),
        ("the checkpoint does not fit this run", "tensors of other shapes, another optimizer's groups"),
    ],
    "Data": [
        ("…, but there are … classes (labels 0 to …)", "labels out of range, named by file"),
        ("a label is … '…', not a whole number", "labels of the wrong type"),
        ("… images but … labels", "counts that differ"),
        ("refused bytes() of anything but data", "bytes(N) in a CIFAR pickle"),
        ("refused a numpy reconstruction of shape", "an array announced without its data"),
        ("a class name is not UTF-8", "label_names that are not text"),
        ("no images", "an empty training or test set"),
        ("leaves none to train on", "a holdout of every training image"),
        ("is larger than the limit of … bytes", "a file, member or image over its bound (docs/training.md, Bounds)"),
        ("the archive expands to more than … bytes", "a gzip bomb: members far larger than the archive"),
        ("cannot decode this image", "a broken or truncated image in an image folder"),
        ("this image is … pixels, more than the bound of …", "a decompression bomb"),
        ("cannot use this image folder", "an empty class folder"),
    ],
    "Recipes and options": [
        ("the recipe nests deeper than … levels", "deep YAML nesting"),
        ("a recipe cannot use YAML anchors or aliases", "`&name`, `*name` or `<<: *name` in a recipe or `--set`"),
        ("cannot read the value of 'seed': …", "an integer of 5,000 digits"),
        ("'pad' must be … a whole number of at most …", "a value past its key's range"),
        ("the value is longer than … characters", "a --set value past its bound"),
        ("--input does not apply to train", "--input on train (refused, not ignored)"),
        ("--batch-size …: must be at least 1", "eval's batch size"),
        ("holds no images: there is no error to report", "eval on an empty split"),
        ("--dpi …: must be between … and …", "plot's hostile options, also --ylim nan and -o a.xyz"),
    ],
    "fmt": [
        ("skipped: a link to …, outside …", "fmt DIR and a link in it leading out of DIR"),
        ("skipped: …, not a regular file", "a FIFO, device or folder named *.res in DIR"),
    ],
}


def render_training() -> str:
    lines = [
        "## Training, run folders and written files",
        "",
        "These errors come from `train`, `eval`, `plot`, `fmt` and every command that writes a file; each",
        "names the file concerned and exits with status 1 (2 for a command line that cannot work),",
        'never with a traceback. The bounds they enforce are in docs/training.md ("Bounds").',
        "",
    ]
    for section, entries in TRAINING_ERRORS.items():
        lines += [f"### {section}", "", "| message (excerpt) | when |", "| --- | --- |"]
        lines += [f"| `{message}` | {when} |" for message, when in entries]
        lines.append("")
    return "\n".join(lines).rstrip("\n")


TRAINING = render_training()


FUZZING = """## Fuzzing

Whatever a spec holds, the compiler answers with a network or one of the diagnostics
above, within the bounds of docs/language.md ("Limits"). The tests hold it to that
with tests/fuzz_harness.py, which runs each case in a forked child and counts its work
where the compiler does it: the tokens one parse reads, the IR nodes each step makes,
the expressions it evaluates and the bytes of each drawing, each against a bound
derived from the documented limits, and 500 MB of new memory. Work past a counted
bound, memory and crashes are failures; time is not a verdict (on a shared machine it
measures the neighbours), and a CPU limit of 60 s per case only catches hangs:

- `tests/test_fuzz_hostile.py`: specs written from docs/language.md (its examples,
  tables and grammar forms) and from hostile bytes; numbers at and past type limits;
  inputs at every size bound; FIFOs, devices, sockets and directories as specs, `use`
  targets and weights; every subcommand of the command line with its options. Each
  compiled case also goes through the `check` line, `to_dot` at every detail, a build
  and a forward pass on the meta device, the `.py` export (compiled, never run) and, for
  small networks, `for_inference` against `eval`. `RESDSL_FUZZ_EXAMPLES=2000
  RESDSL_FUZZ_EXPLORE=1` draws more and new cases.
- `tests/test_fuzz_round3.py`: CIFAR files generated from the published format, then
  with fields removed, retyped and truncated and bytes damaged; recipes and `--set`
  values; checkpoints (every field removed, retyped, truncated) and `metrics.csv`; `fmt`
  on every kind of damage to shipped specs (CR, CRLF, BOM, NUL, astral characters),
  checked by compiling before and after (the same layers, shapes and parameters) and by
  formatting twice; the language server over stdio with hostile parameters and malformed
  frames (each request answered, the server alive after); path options past the name
  limit on every command.
- Round 4 (issue 27), in the same two files: blocks of several paths written from the
  grammar forms of docs/language.md ("Several paths": `let`, `from`, `split`, joins
  over named values, a value joined with itself, nested `for` loops whose bodies make
  no layer, interpolated and `..` labels, nested blocks in loops, keywords as names)
  and from hostile bytes, each through every consumer: `check`, the IR, every drawing,
  the build, the `.py`, ONNX and `.pt2` exports, `for_inference` against `eval`, the
  table, `fmt` (idempotent) and the language server's analysis, hover, definition and
  completion on every line; and full disks: every file the project writes (`build -o`
  each format, `draw -o` each format, `fmt`, `plot -o`, `train`'s run files) written
  by a child process whose file size is limited (`RLIMIT_FSIZE`), each a clean
  "cannot write" that leaves the old file whole and no temporary behind.
- `tests/fuzz_atheris.py`: coverage-guided fuzzing of the parser and compiler with
  atheris (the test extra). The tests run it for 20 s; a longer run:

  ```console
  $ python tests/fuzz_atheris.py -max_total_time=3600 -timeout=120 fuzz-corpus/
  ```

  libFuzzer writes each finding as `crash-*`, `timeout-*` or `oom-*`; shrink it with
  `python tests/fuzz_atheris.py -minimize_crash=1 -runs=10000 crash-...`, fix the
  cause, and add the minimised input to `tests/fixtures/fuzz_regressions/` (with a
  `#` comment saying what it once did): every file there goes through the whole
  pipeline on every test run.
"""


def update() -> None:
    """Rewrite every .err file and docs/errors.md from what the compiler prints now."""
    for name in fixture_names():
        code, _, err = run_check(name)
        if code != 1:
            raise SystemExit(f"{name}.res: expected exit 1, got {code}")
        (FIXTURES / f"{name}.err").write_text(err, encoding="utf-8")
    DOCS.write_text(render_docs(), encoding="utf-8")


@pytest.fixture(scope="module", autouse=True)
def _regenerate() -> None:
    if UPDATE:
        update()


@pytest.mark.parametrize("name", fixture_names())
def test_golden_diagnostic(name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code = cli.main(["check", f"tests/fixtures/errors/{name}.res"])
    captured = capsys.readouterr()
    golden = FIXTURES / f"{name}.err"
    assert golden.exists(), f"no golden file for {name}.res: run RESDSL_UPDATE_GOLDEN=1 pytest {__file__}"
    assert code == 1
    assert captured.out == ""
    assert captured.err == golden.read_text(encoding="utf-8")
    # Every diagnostic names its file first, so editors can jump to it.
    assert captured.err.startswith("tests/fixtures/errors/")
    assert "Traceback" not in captured.err


def test_every_fixture_is_documented() -> None:
    catalogued = {name for entries in CATALOGUE.values() for name in entries}
    assert catalogued == set(fixture_names())


def test_every_golden_file_has_a_fixture() -> None:
    orphans = {path.stem for path in FIXTURES.glob("*.err")} - set(fixture_names())
    assert not orphans


def test_docs_are_up_to_date() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_docs(), "run: python tests/test_diagnostics.py"


def test_size_bound_refuses_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    # The layer count is computed from the definitions, so a hundred million blocks
    # are refused before a single graph node exists (rather than after minutes).
    import resdsl

    expand = sys.modules["resdsl.passes.expand"]

    created: list[object] = []
    real_new_node = expand.new_node

    def counting_new_node(*args: object, **kwargs: object) -> int:
        created.append(args[1] if len(args) > 1 else kwargs.get("layer"))
        return real_new_node(*args, **kwargs)

    monkeypatch.setattr(expand, "new_node", counting_new_node)
    with pytest.raises(LimitError) as caught:
        resdsl.compile(FIXTURES / "size_limit.res")
    assert "20,000 layers" in caught.value.message
    assert created == []
    # The counter does see nodes when a network is built, so the check above can fail.
    resdsl.compile_text("network n {\n input 3x32x32\n stage s: 1 x basic(16)\n}\n")
    assert created


def test_deep_nesting_is_a_spec_error_not_recursion() -> None:
    import resdsl

    text = "network n {\n input 3x32x32\n stage s: 1 x basic(" + "(" * 5000 + "16" + ")" * 5000 + ")\n}\n"
    with pytest.raises(SpecError):
        resdsl.compile_text(text)
    for expression in ("-" * 5000 + "16", "16" + " + 1" * 5000, "16" + " * 1" * 5000):
        with pytest.raises(LimitError):
            resdsl.compile_text(f"network n {{\n input 3x32x32\n stage s: 1 x basic({expression})\n}}\n")


if __name__ == "__main__":
    update()
    print(f"updated {len(fixture_names())} golden files and {DOCS.relative_to(ROOT)}", file=sys.stderr)


def test_training_errors_are_in_the_code() -> None:
    """Each message docs/errors.md lists for training and files is one the code can print.

    A listed message is an excerpt with '…' where the code puts a value; the longest fixed
    stretch of each must be in the code's source (the rest is what the values make of it).
    """
    sources = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "resdsl").rglob("*.py"))
    values = {"'seed'": "'{key}'", "'pad'": "'{key}'", "'iteration'": "'{field}'", "'optimizer', ": ""}
    for entries in TRAINING_ERRORS.values():
        for message, _ in entries:
            for value in values:
                message = message.replace(value, "…")
            longest = max((part.strip(" '") for part in message.split("…")), key=len)
            assert longest in sources, (message, longest)


#: A leading comment and a blank line, as every shipped spec starts.
LEADING = "# a network of my own\n\n"


def _text_fixtures() -> list[str]:
    names = []
    for name in fixture_names():
        path = FIXTURES / f"{name}.res"
        if path.is_symlink() or not path.is_file() or name == "too_many_tokens":
            continue  # a directory, a device; a comment would take the token bound's place
        try:
            path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue  # not_utf8: refused before it is read as text
        names.append(name)
    return names


@pytest.mark.parametrize("name", _text_fixtures())
def test_messages_survive_a_leading_comment(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/errors.md's examples mostly start on line 1; a real file starts with a comment,
    and the message and hint (the tailored syntax messages above all) must be the same there."""
    monkeypatch.chdir(FIXTURES)  # the fixtures' `use` paths
    text = (FIXTURES / f"{name}.res").read_bytes().decode("utf-8")
    with pytest.raises(SpecError) as plain:
        resdsl.compile_text(text, path=f"{name}.res")
    with pytest.raises(SpecError) as commented:
        resdsl.compile_text(LEADING + text, path=f"{name}.res")
    assert commented.value.message == plain.value.message
    assert commented.value.hint == plain.value.hint
    where = (commented.value.line, commented.value.column)
    file_level = plain.value.line == 1 and where == (1, 1) and not isinstance(plain.value, SpecSyntaxError)
    assert where == (plain.value.line + 2, plain.value.column) or file_level


@pytest.mark.parametrize(
    ("body", "label"),
    [
        ("block wide(width) {\n    conv 3x3 width\n    bn\n}\n", "missing ',' between arguments"),
        ("network n {\n    input 3x32x32\n    stage conv2_x 3 x basic(64)\n}\n", "a stage needs a name and a colon"),
        ("conv 3x3, 64\n", "a definition must start with 'use', 'block' or 'network'"),
        ("stage s: 2 x basic(1)\n", "a definition must start with 'use', 'block' or 'network'"),
    ],
)
@pytest.mark.parametrize("before", ["", LEADING, "\n\n\n", "block first { bn }\n", "block first { bn }\n\n# x\n"])
def test_tailored_syntax_message_wherever_the_mistake_is(body: str, label: str, before: str) -> None:
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(before + body, path="spec.res")
    assert caught.value.message.startswith(label + ";"), caught.value.message


def test_every_independent_error_is_reported_in_order_and_bounded() -> None:
    import pickle

    from resdsl.errors import MAX_ERRORS

    text = (FIXTURES / "several_unknown_names.res").read_text(encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(text, path="spec.res")
    errors = caught.value.errors
    assert [(error.line, error.message.split(" '")[0]) for error in errors] == [
        (5, "unknown keyword argument"),
        (7, "unknown layer kind"),
        (9, "unknown block"),
        (10, "unknown parameter"),
    ]
    assert str(caught.value).endswith("4 errors")
    assert pickle.loads(pickle.dumps(caught.value)).errors[3].message == errors[3].message
    # Thirty mistaken lines: the first MAX_ERRORS of them.
    body = "".join(f"    conv 3x3 {index}\n" for index in range(30))
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(f"# many\nblock b {{\n{body}}}\n", path="spec.res")
    assert [error.line for error in caught.value.errors] == list(range(3, 3 + MAX_ERRORS))
    stems = "".join(f"        conv{index} 3x3, 16\n" for index in range(30))
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(f"network n {{\n    input 3x8x8\n    stem {{\n{stems}    }}\n}}\n", path="spec.res")
    assert len(caught.value.errors) == MAX_ERRORS


def test_no_shape_error_is_reported_from_the_value_a_failed_statement_left_behind() -> None:
    # 'a' fails, so the value stays 3x8x8 where 'widen' would have made 32x8x8: the
    # residual join in 'b' would report a mismatch that the spec does not have. An
    # independent error later on is still reported.
    failing_widen = (
        "block widen(out) {\n    let x\n    conv 1x1, out\n    let forgotten\n    from x\n    conv 1x1, out\n}\n"
    )
    rest = (
        "block residual(out) {\n"
        "    let x\n"
        "    conv 1x1, out\n"
        "    let y\n"
        "    add x, y\n"
        "}\n"
        "network n {\n"
        "    input 3x8x8\n"
        "    a: widen(32)\n"
        "    b: residual(32)\n"
        "    relu 3\n"
        "}\n"
    )
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(failing_widen + rest, path="spec.res")
    assert [(error.line, error.message) for error in caught.value.errors] == [
        (4, "'forgotten' is bound but nothing reads it"),
        (18, "too many arguments for relu: takes none before keywords"),
    ]
    # Alone, the same join of mismatched shapes is reported.
    widen = "block widen(out) {\n    conv 1x1, out\n}\n"
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(widen + rest.replace("a: widen(32)", "a: widen(16)"))
    assert [(error.line, error.message) for error in caught.value.errors] == [
        (8, "cannot add 32x8x8 to 16x8x8: the shapes differ"),
        (14, "too many arguments for relu: takes none before keywords"),
    ]


def test_a_missing_brace_says_where_the_body_opened() -> None:
    text = (FIXTURES / "syntax_block_never_closed.res").read_text(encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(text, path="spec.res")
    (error,) = caught.value.errors  # what follows is read inside the block: no further errors
    assert error.line == 6 and "never closed" in error.message
    assert [(note.message, note.pos.line, note.pos.column) for note in error.notes] == [
        ("this '{' is never closed", 2, 12)
    ]


def test_each_definition_and_use_is_checked_on_its_own(tmp_path: Path) -> None:
    spec = tmp_path / "spec.res"
    spec.write_text(
        "block a { bn }\n"
        "block a { relu }\n"
        "network n(c, c) {\n    input 3x8x8\n}\n"
        "network m = n(c=1) with shortcut A, shortcut B\n"
        'use "nosuch.res"\n',
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as caught:
        resdsl.compile(spec)
    assert [(error.line, error.message.split(":")[0]) for error in caught.value.errors] == [
        (2, "'a' is defined twice in this file"),
        (3, "two parameters are named 'c'"),
        (6, "the setting 'shortcut' is given twice in this 'with'"),
        (7, "no such file"),
    ]


def test_every_independent_error_in_a_block_is_reported_once_and_caught_as_spec_error() -> None:
    with pytest.raises(resdsl.SpecError) as raised:
        resdsl.compile(FIXTURES / "several_errors_in_a_block.res")
    errors = raised.value.errors
    # The bad setting hides nothing; each statement of the block is checked, in both of
    # the stage's repetitions, and each mistake is reported once.
    assert [(error.line, error.column) for error in errors] == [(2, 22), (4, 5), (7, 13), (13, 14), (14, 24)]
    assert all(isinstance(error, resdsl.SpecError) and not error.also for error in errors)
    assert str(raised.value).endswith("5 errors")


def test_a_failed_statements_value_reports_nothing_again(tmp_path: Path) -> None:
    # The conv fails; the split, the indexing, the join, the shortcut and the next stage
    # all read its value, and none of them reports (no guessed shape, no "unread" name).
    spec = tmp_path / "poisoned.res"
    spec.write_text(
        "block b(width, stride=1) {\n"
        "    conv 3x3, width, strde=stride\n"
        "    split 3\n"
        "    let s\n"
        "    cat s[2], s[1]\n"
        "    let unused\n"
        "    add shortcut\n"
        "}\n"
        "network poisoned {\n"
        "    input 3x32x32\n"
        "    stage one: 2 x b(64)\n"
        "    stage two: 2 x basic(128, stride=2)\n"
        "}\n"
    )
    with pytest.raises(resdsl.SpecError) as raised:
        resdsl.compile(spec)
    assert [error.line for error in raised.value.errors] == [2]
    assert "strde" in raised.value.message


def test_errors_stop_at_the_bound(tmp_path: Path) -> None:
    from resdsl.errors import MAX_ERRORS

    spec = tmp_path / "many.res"
    lines = "".join(f"    conv 3x3, width, bad{index}=1\n" for index in range(MAX_ERRORS + 5))
    spec.write_text(f"block b(width) {{\n{lines}}}\nnetwork many {{\n    input 3x32x32\n    stage s: 1 x b(8)\n}}\n")
    with pytest.raises(resdsl.SpecError) as raised:
        resdsl.compile(spec)
    assert len(raised.value.errors) == MAX_ERRORS
    assert [error.line for error in raised.value.errors] == list(range(2, 2 + MAX_ERRORS))


def test_a_warning_is_printed_exits_zero_and_werror_makes_it_an_error(capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    spec = str(WARNING_FIXTURE.relative_to(ROOT))
    network = resdsl.compile(spec)
    (warning,) = network.warnings
    assert isinstance(warning, resdsl.SpecWarning) and isinstance(warning, SpecError)
    assert (warning.line, warning.column) == (9, 23)  # the argument `stride=2`
    assert [(note.pos.line, note.pos.column) for note in warning.notes] == [(1, 16)]  # the parameter
    assert cli.main(["check", spec]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{spec}:9:23: warning: block 'r' never reads its parameter 'stride'")
    assert "unread_parameter: 2 layers" in captured.out
    for command in (["check"], ["draw", "-o", "unused.svg"], ["build", "-o", "unused.pt"]):
        assert cli.main([command[0], "--werror", spec, *command[1:]]) == 1, command
        err = capsys.readouterr().err
        assert err.startswith(f"{spec}:9:23: block 'r' never reads") and "warning:" not in err
    assert not (ROOT / "unused.svg").exists() and not (ROOT / "unused.pt").exists()


def test_a_parameter_read_anywhere_warns_of_nothing(tmp_path: Path) -> None:
    reads = {
        "a statement": "conv 3x3, width, stride=stride",
        "a condition": "if stride > 1 {\n        avgpool 2x2, stride=2\n    }",
        "a loop bound": "for i in 0 .. stride {\n        relu\n    }",
        "a label": "c{stride}: conv 1x1, width",
        "another parameter's default": None,
    }
    for what, line in reads.items():
        params = "width, stride=1" if line is not None else "width, stride=1, pad=stride"
        body = line if line is not None else "conv 3x3, width, padding=pad"
        spec = tmp_path / "reads.res"
        spec.write_text(
            f"block r({params}) {{\n    conv 3x3, width\n    {body}\n}}\n"
            "network reads {\n    input 3x32x32\n    stage s: 1 x r(8, stride=2)\n}\n"
        )
        assert resdsl.compile(spec).warnings == [], what
    for name in resdsl.shipped_specs():
        assert resdsl.compile(name).warnings == [], name
