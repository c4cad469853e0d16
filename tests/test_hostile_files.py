"""Hostile input, round 3: what the project writes and where, and the run folders it reads back.

Each test holds the minimal case of an attack from issue 18: a link planted where a
run writes, a run folder handed over by someone else, two runs on one folder, fmt
following a link out of the folder it was given, FIFOs and devices named like specs.
Every attack is checked by its effect: the victim file's bytes are unchanged, nothing
hangs (each command runs under a timeout), and the error names the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cifar_fixtures import TINY_SPEC, write_learnable

from resdsl.files import WriteError, append_file, lock_folder, read_regular_file, write_file

ROOT = Path(__file__).resolve().parent.parent
VICTIM_TEXT = b"the victim's own content\n"

RECIPE = """\
dataset: cifar10
iterations: 4
batch_size: 32
lr: 0.05
pad: 1
eval_every: 2
checkpoint_every: 2
eval_batch_size: 128
device: cpu
"""


def resdsl(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "resdsl", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(VICTIM_TEXT)
    return path


def assert_untouched(victim: Path) -> None:
    assert victim.read_bytes() == VICTIM_TEXT


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------------------
# resdsl.files itself.


def test_write_file_refuses_a_link_and_names_it(tmp_path: Path, victim: Path):
    link = tmp_path / "out.txt"
    link.symlink_to(victim)
    with pytest.raises(WriteError) as caught:
        write_file(link, "overwritten")
    assert str(link) in str(caught.value) and "symbolic link" in str(caught.value)
    assert_untouched(victim)
    assert link.is_symlink()


def test_write_file_refuses_a_fifo_and_a_folder(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    for name, kind in (("pipe", "FIFO"), ("folder", "directory")):
        with pytest.raises(WriteError, match=kind):
            write_file(tmp_path / name, b"x")


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path: Path):
    target = tmp_path / "spec.res"
    target.write_bytes(b"old content")

    def fail_halfway(handle) -> None:
        handle.write(b"new con")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match="No space left on device"):
        write_file(target, fail_halfway)
    assert target.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.res"]


def test_write_file_keeps_the_targets_permissions(tmp_path: Path):
    target = tmp_path / "script.res"
    target.write_bytes(b"a")
    target.chmod(0o640)
    write_file(target, "b")
    assert target.read_text() == "b" and (target.stat().st_mode & 0o777) == 0o640


def test_append_refuses_links_and_fifos(tmp_path: Path, victim: Path):
    (tmp_path / "link.csv").symlink_to(victim)
    with pytest.raises(WriteError, match="symbolic link"):
        append_file(tmp_path / "link.csv", "row\n")
    assert_untouched(victim)
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(WriteError, match="FIFO"):
        append_file(tmp_path / "pipe.csv", "row\n")  # no reader: would block without O_NONBLOCK


def test_a_long_name_is_an_error_naming_the_bound(tmp_path: Path):
    with pytest.raises(WriteError, match="longer than 255 bytes"):
        write_file(tmp_path / ("x" * 300), "a")
    # The temporary's name stays short even for a target name at the bound.
    write_file(tmp_path / ("é" * 127), "a")
    assert (tmp_path / ("é" * 127)).read_text() == "a"


def test_reading_refuses_fifos_without_blocking(tmp_path: Path):
    from resdsl.files import NotRegularFile

    os.mkfifo(tmp_path / "x.res")
    with pytest.raises(NotRegularFile):
        read_regular_file(tmp_path / "x.res", 100)


def test_a_folder_lock_is_exclusive_until_released(tmp_path: Path):
    first = lock_folder(tmp_path, "run folder")
    with pytest.raises(WriteError, match="another process is using this run folder"):
        lock_folder(tmp_path, "run folder")
    first.release()
    lock_folder(tmp_path, "run folder").release()


# ---------------------------------------------------------------------------
# resdsl train: links planted in the run folder, handed-over folders, two runs at once.


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile_train")
    write_learnable(root / "data", train=64, test=32)
    (root / "tiny.res").write_text(TINY_SPEC, encoding="utf-8")
    (root / "small.yaml").write_text(RECIPE, encoding="utf-8")
    return root


def train(work: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return resdsl("train", "tiny.res", "--data", "data", "--recipe", "small.yaml", "--out", str(out), *extra, cwd=work)


@pytest.mark.parametrize("planted", ["metrics.csv", "curves.png", "recipe.yaml", "checkpoint.pt", "best.pt"])
def test_train_never_writes_through_a_link_planted_in_its_folder(work: Path, victim: Path, planted: str):
    out = victim.parent.parent / f"run-{planted}"
    out.mkdir()
    (out / planted).symlink_to(victim)
    result = train(work, out)
    no_traceback(result)
    if planted == "checkpoint.pt":  # the folder looks like a run already: refused before the link is looked at
        assert result.returncode == 2 and "already holds a run" in result.stderr
    else:
        assert result.returncode == 1, result.stderr
        assert str(out / planted) in result.stderr and "symbolic link" in result.stderr
    assert_untouched(victim)


def test_a_planted_temporary_name_is_never_used(work: Path, victim: Path):
    out = victim.parent.parent / "run-tmp"
    out.mkdir()
    (out / ".recipe.yaml.tmp").symlink_to(victim)
    result = train(work, out)
    assert result.returncode == 0, result.stderr
    assert_untouched(victim)
    assert (out / "recipe.yaml").is_file() and not (out / "recipe.yaml").is_symlink()


@pytest.fixture(scope="module")
def finished(work: Path) -> Path:
    out = work / "finished"
    result = train(work, out)
    assert result.returncode == 0, result.stderr
    return out


def _copy_run(finished: Path, to: Path) -> Path:
    to.mkdir()
    for item in finished.iterdir():
        if item.is_file() and item.name != ".lock":
            (to / item.name).write_bytes(item.read_bytes())
    return to


def test_resume_of_a_handed_over_folder_writes_nothing_outside(work: Path, finished: Path, victim: Path):
    run = _copy_run(finished, victim.parent.parent / "handed")
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to(victim)
    result = train(work, run, "--resume", "--set", "iterations=6")
    no_traceback(result)
    assert result.returncode == 1 and "metrics.csv" in result.stderr
    assert_untouched(victim)


def test_a_second_run_on_a_held_folder_is_refused(work: Path, tmp_path: Path):
    out = tmp_path / "held"
    out.mkdir()
    with lock_folder(out, "run folder"):  # as a run in progress holds it
        result = train(work, out)
    no_traceback(result)
    assert result.returncode == 1
    assert "another process is using this run folder" in result.stderr
    assert not (out / "metrics.csv").exists()


@pytest.mark.parametrize("out", ["a-file", "/dev/null", "x" * 300])
def test_out_that_cannot_be_a_folder_is_an_error(work: Path, out: str):
    (work / "a-file").write_bytes(b"")
    result = train(work, Path(out))
    no_traceback(result)
    assert result.returncode in (1, 2), result.stderr
    assert "folder" in result.stderr or "longer than 255" in result.stderr


def test_resume_with_edited_run_files_is_an_error_not_a_traceback(work: Path, finished: Path, tmp_path: Path):
    cases = {
        "metrics.csv": [b"iteration,epoch\nabc,1\n", b"\xff\xfe not utf-8", b"epoch\n1\n"],
        "recipe.yaml": [b"- a list\n", b"recipe: {1: 2}\nrecipe_name: x\n", b"[" * 5000, b"\xff"],
    }
    for name, contents in cases.items():
        for number, content in enumerate(contents):
            run = _copy_run(finished, tmp_path / f"{name}-{number}")
            (run / name).write_bytes(content)
            result = resdsl(
                "train", "tiny.res", "--data", "data", "--out", str(run), "--resume", "--set", "iterations=6", cwd=work
            )
            no_traceback(result)
            assert result.returncode == 1, (name, content, result.stderr)
            assert name in result.stderr, result.stderr


def test_plot_with_edited_metrics_or_hostile_options_is_an_error(work: Path, finished: Path, tmp_path: Path):
    run = _copy_run(finished, tmp_path / "edited")
    (run / "metrics.csv").write_bytes(b"iteration,train_error,test_error\n1,nan,3\n")
    (tmp_path / "folder.png").mkdir()
    result = resdsl("plot", str(run), "-o", str(tmp_path / "a.png"), cwd=work)
    no_traceback(result)
    assert result.returncode == 1 and "not a finite number" in result.stderr
    for options, message in (
        (["--ylim", "nan", "1"], "--ylim"),
        (["--dpi", "0"], "--dpi"),
        (["--dpi", "100000"], "--dpi"),
        (["-o", str(tmp_path / "a.xyz")], "format"),
        (["-o", str(tmp_path / "folder.png")], "directory"),
        (["-o", str(work / "tiny.res" / "a.png")], "Not a directory"),
    ):
        args = ["plot", str(finished), *options]
        if "-o" not in options:
            args += ["-o", str(tmp_path / "b.png")]
        result = resdsl(*args, cwd=work)
        no_traceback(result)
        assert result.returncode == 1 and message in result.stderr, (options, result.stderr)


def test_plot_shows_dollar_signs_as_written(work: Path, finished: Path, tmp_path: Path):
    result = resdsl(
        "plot", str(finished), "-o", str(tmp_path / "c.svg"), "--title", r"$\frac$ and $x$", "--label", "$\\", cwd=work
    )
    assert result.returncode == 0, result.stderr
    svg = (tmp_path / "c.svg").read_text()
    assert "frac" in svg  # shown as text, not parsed as a formula


def test_plot_never_writes_through_a_link(work: Path, finished: Path, tmp_path: Path, victim: Path):
    (tmp_path / "fig.png").symlink_to(victim)
    result = resdsl("plot", str(finished), "-o", str(tmp_path / "fig.png"), cwd=work)
    no_traceback(result)
    assert result.returncode == 1 and "symbolic link" in result.stderr
    assert_untouched(victim)


# ---------------------------------------------------------------------------
# draw -o, build -o.


@pytest.mark.parametrize(
    ("command", "suffix"), [("draw", ".dot"), ("draw", ".html"), ("build", ".py"), ("build", ".pt")]
)
def test_outputs_never_go_through_a_link(command: str, suffix: str, tmp_path: Path, victim: Path):
    link = tmp_path / f"out{suffix}"
    link.symlink_to(victim)
    result = resdsl(command, "specs/cifar20.res", "-o", str(link), cwd=ROOT)
    no_traceback(result)
    assert result.returncode == 1, result.stderr
    assert "symbolic link" in result.stderr and str(link) in result.stderr
    assert_untouched(victim)


# ---------------------------------------------------------------------------
# fmt.

SPEC_WITH_CR = (
    b"network tiny {\n    input 3x8x8\n    stem {\n        conv 3x3, 4  # note\rconv 3x3, 8\n    }\n"
    b"    head {\n        avgpool\n        fc 10\n    }\n}\n"
)


def test_fmt_dir_does_not_follow_a_link_out_of_the_folder(tmp_path: Path, victim: Path):
    outside = victim.parent / "outside.res"
    outside.write_bytes(b"network  x {\n  input 3x8x8\n    head {\n        avgpool\n        fc 10\n    }\n}\n")
    before = outside.read_bytes()
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "link.res").symlink_to(outside)
    result = resdsl("fmt", str(folder), cwd=tmp_path, timeout=60)
    no_traceback(result)
    assert result.returncode == 1 and "link.res" in result.stderr and "outside" in result.stderr
    assert outside.read_bytes() == before


def test_fmt_dir_skips_fifos_devices_and_folders_named_like_specs(tmp_path: Path):
    folder = tmp_path / "specs"
    folder.mkdir()
    os.mkfifo(folder / "pipe.res")
    (folder / "dir.res").mkdir()
    (folder / "zero.res").symlink_to("/dev/zero")
    result = resdsl("fmt", "--check", str(folder), cwd=tmp_path, timeout=60)
    no_traceback(result)
    assert result.returncode == 1
    for name in ("pipe.res", "dir.res", "zero.res"):
        assert name in result.stderr


def test_fmt_reads_a_lone_cr_as_the_compiler_does(tmp_path: Path):
    import resdsl as api

    spec = tmp_path / "cr.res"
    spec.write_bytes(SPEC_WITH_CR)
    before = api.compile(spec).num_params
    result = resdsl("fmt", "--check", str(spec), cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # already formatted: the CR is comment text
    messy = tmp_path / "messy.res"
    messy.write_bytes(SPEC_WITH_CR.replace(b"    input", b"  input"))
    assert resdsl("fmt", str(messy), cwd=tmp_path).returncode == 0
    assert api.compile(messy).num_params == before
    assert b"# note\rconv 3x3, 8" in messy.read_bytes()


def test_fmt_reads_standard_input_as_bytes(tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "resdsl", "fmt", "-"], input=SPEC_WITH_CR, capture_output=True, env=env, timeout=60
    )
    assert result.returncode == 0 and result.stdout == SPEC_WITH_CR


def test_fmt_in_place_never_replaces_a_link_named_on_the_command_line(tmp_path: Path):
    real = tmp_path / "real.res"
    real.write_bytes(SPEC_WITH_CR.replace(b"    input", b"  input"))
    link = tmp_path / "link.res"
    link.symlink_to(real)
    assert resdsl("fmt", str(link), cwd=tmp_path).returncode == 0
    assert link.is_symlink() and b"\n    input" in real.read_bytes()


def test_a_quote_after_a_lone_cr_shows_the_line_the_position_names():
    from resdsl.errors import Source

    source = Source("x.res", "a # b\rc\nsecond\x0cline\r\nthird")
    assert source.line(1) == "a # b"  # what follows the CR is comment text, not shown over the line
    assert source.line(2) == "second\x0cline"
    assert source.line(3) == "third"


# ---------------------------------------------------------------------------
# The earlier attack's remaining crash class: a shipped spec's table.


def test_every_shipped_specs_stage_table_prints():
    import resdsl as api
    from resdsl.shipped import shipped_specs
    from resdsl.table import Table

    for name in shipped_specs():
        table = str(Table.of(api.compile(name), detail="stage"))
        assert table.strip(), name
    eca = str(Table.of(api.compile("timm/ecaresnet50d"), detail="layer"))
    assert "channel_conv" in eca  # its 1-D kernel (an int) once broke the kernel column


def test_a_size_token_of_millions_of_dimensions_is_refused_before_it_is_read():
    import resdsl as api

    size = "x".join(["3"] * 1_000_000)
    with pytest.raises(api.SpecError) as caught:
        api.compile_text("network n {\n    input " + size + "\n}\n")
    assert "1,000,000 dimensions" in caught.value.message and caught.value.line == 2
    assert len(str(caught.value)) < 1000  # the quote is a window, not the token
