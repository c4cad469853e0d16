"""Day-to-day use without torch: resdsl list, resdsl diff, use "resdsl:NAME", --input, the table, repr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import resdsl
from resdsl.cli import main
from resdsl.diff import diff
from resdsl.table import Table

ROOT = Path(__file__).resolve().parent.parent


def test_list_shows_every_shipped_spec_with_its_figures(capsys) -> None:
    assert main(["list", "--json"]) == 0
    records = {record["name"]: record for record in json.loads(capsys.readouterr().out)}
    assert set(records) == set(resdsl.shipped_specs())
    resnet50 = records["torchvision/resnet50"]
    compiled = resdsl.compile("torchvision/resnet50")
    assert (resnet50["params"], resnet50["macs"]) == (compiled.num_params, compiled.macs)
    assert resnet50["parameters"] == {"classes": 1000} and resnet50["input_shape"] == [3, 224, 224]
    assert records["cifar20"]["parameters"] == {"classes": 10}
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "torchvision/resnet50" in text and "25,557,032" in text and "classes=1000" in text
    # The layers column says how it counts, and counts as the paper names the networks.
    assert "layers: convolutions and fc layers on the main path" in text
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if line[:1].isalpha() and "  " in line}
    assert rows["resnet34"] == "34" and rows["resnet152"] == "152" and rows["cifar110"] == "110"
    # WRN-n-k's n counts every convolution, the shortcut projections included, and no fc.
    wrn = resdsl.compile("wrn28_10")
    assert rows["wrn28_10"] == "28" == str(sum(1 for _ in wrn.nodes("conv"))) and wrn.layer_count() == 26
    assert records["wrn28_10"]["layers"] == 28


def test_the_shipped_list_index_equals_a_fresh_compile_of_every_shipped_spec() -> None:
    from resdsl.list_cli import build_index, index_path

    stored = json.loads(index_path().read_text(encoding="utf-8"))
    assert stored == json.loads(build_index()), "stale specs/index.json: run `python specs/build_index.py`"


@pytest.fixture
def shipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A few shipped specs in a folder of their own, which resdsl takes for the shipped specs."""
    from resdsl import compiler, list_cli, shipped

    root = tmp_path / "specs"
    shutil.copytree(ROOT / "specs" / "lib", root / "lib")
    for name in ("cifar20.res", "resnet18.res"):
        shutil.copy(ROOT / "specs" / name, root / name)
    for module in (shipped, compiler, list_cli):
        monkeypatch.setattr(module, "specs_dir", lambda: root)
    return root


def _list_json(capsys) -> dict[str, dict]:
    assert main(["list", "--json"]) == 0
    return {record["name"]: record for record in json.loads(capsys.readouterr().out)}


def test_list_reads_a_current_index_and_compiles_again_after_an_edit(
    shipped_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from resdsl import list_cli

    compiled: list[str] = []
    real_compile = list_cli.compile

    def counting_compile(name, *args, **kwargs):
        compiled.append(name)
        return real_compile(name, *args, **kwargs)

    monkeypatch.setattr(list_cli, "compile", counting_compile)
    assert not (shipped_copy / "index.json").exists()
    assert _list_json(capsys)["cifar20"]["parameters"] == {"classes": 10}
    assert sorted(compiled) == ["cifar20", "resnet18"], "no index: every spec is compiled"
    list_cli.write_index()
    compiled.clear()
    before = _list_json(capsys)
    assert compiled == [], "a current index: `resdsl list` compiles nothing"
    (shipped_copy / "cifar20.res").write_text('use "lib/cifar.res"\n\nnetwork cifar20 = cifar_resnet(n=3, classes=7)\n')
    after = _list_json(capsys)
    assert sorted(compiled) == ["cifar20", "resnet18"], "an edited spec makes the index stale"
    assert after["cifar20"]["output_shape"] == [7]
    assert after["resnet18"] == before["resnet18"]
    (shipped_copy / "lib" / "cifar.res").write_text(
        (shipped_copy / "lib" / "cifar.res").read_text(encoding="utf-8") + "\n# edited\n"
    )
    list_cli.write_index()
    compiled.clear()
    (shipped_copy / "lib" / "cifar.res").write_text((ROOT / "specs" / "lib" / "cifar.res").read_text(encoding="utf-8"))
    _list_json(capsys)
    assert len(compiled) == 2, "a library the specs use is part of the key"


def test_list_ignores_an_index_that_is_not_a_bounded_regular_file(shipped_copy: Path, capsys) -> None:
    from resdsl import list_cli

    list_cli.write_index()
    good = (shipped_copy / "index.json").read_text(encoding="utf-8")
    expected = _list_json(capsys)
    (shipped_copy / "index.json").write_text(good[: len(good) // 2])
    assert _list_json(capsys) == expected
    (shipped_copy / "index.json").write_text(good + " " * list_cli.MAX_INDEX_BYTES)
    assert list_cli._from_index() is None
    (shipped_copy / "index.json").unlink()
    os.mkfifo(shipped_copy / "index.json")
    assert list_cli._from_index() is None  # refused by what it is: a FIFO would block the read
    assert _list_json(capsys) == expected


def test_list_check_and_diff_never_import_torch() -> None:
    code = (
        "import sys; from resdsl.cli import main\n"
        "assert main(['list']) == 0 and main(['diff', 'plain34', 'resnet34']) == 0\n"
        "assert main(['check', '--stages', 'resnet50', '--input', '3x64x64']) == 0\n"
        "import resdsl; resdsl.Table.of(resdsl.compile('resnet18')); repr(resdsl.compile('cifar20'))\n"
        "resdsl.compile('cifar20')._repr_svg_()\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_use_names_a_shipped_spec(write_spec) -> None:
    path = write_spec(
        "mine.res",
        'use "resdsl:torchvision/resnet50"\nuse "resdsl:lib/cifar.res"\n'
        "network mine = resnet50(classes=10)\nnetwork small = cifar_resnet(n=3, classes=7)\n",
    )
    mine = resdsl.compile(path)
    assert (mine.name, mine.output_shape) == ("mine", (10,))
    assert mine.num_params == resdsl.compile("torchvision/resnet50", classes=10).num_params
    assert resdsl.compile(path, network="small").output_shape == (7,)


@pytest.mark.parametrize(
    ("target", "hint"),
    [("resnet5", "did you mean 'resnet50'?"), ("../README", "known shipped specs:"), ("/etc/passwd", "known")],
)
def test_use_of_an_unknown_shipped_spec_is_a_use_error(write_spec, target: str, hint: str) -> None:
    path = write_spec("bad.res", f'use "resdsl:{target}"\nnetwork a = resnet50()\n')
    with pytest.raises(resdsl.UseError) as raised:
        resdsl.compile(path)
    assert (raised.value.line, raised.value.column) == (1, 1)
    assert f"unknown shipped spec '{target}'" in str(raised.value) and hint in str(raised.value)


def test_input_override_in_the_api_and_on_the_command_line(capsys) -> None:
    small = resdsl.compile("resnet50", input="3x64x64")
    assert small.input_shape == (3, 64, 64) and small.stages[-2].output_shape == (2048, 2, 2)
    assert small.num_params == resdsl.compile("resnet50").num_params
    assert small.macs < resdsl.compile("resnet50").macs / 10
    assert resdsl.compile("cifar20", input=(3, 64, 64)).stages[-2].output_shape == (64, 16, 16)
    text = "network t {\n    input 3x32x32\n    conv 3x3, 8\n}\n"
    assert resdsl.compile_text(text, input="1x16x16").output_shape == (8, 16, 16)
    for bad in ("3x64", "3xAx4", (3, 0, 4), (3.0, 4, 4)):
        with pytest.raises(ValueError, match=r"C x H x W|three"):
            resdsl.compile("cifar20", input=bad)
    assert main(["check", "cifar20", "--input", "3x64x64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["input_shape"] == [3, 64, 64]
    assert main(["check", "cifar20", "--input", "64x64"]) == 2
    assert "--input: expected three positive sizes" in capsys.readouterr().err


def test_input_override_that_does_not_fit_is_a_spec_error() -> None:
    # VGG's five 2x2 pools cannot halve an 8x8 input five times: the shape pass says where.
    with pytest.raises(resdsl.SpecError) as raised:
        resdsl.compile("vgg19", input="3x8x8")
    assert raised.value.line is not None


def test_diff_plain34_against_resnet34(capsys) -> None:
    result = diff(resdsl.compile("plain34"), resdsl.compile("resnet34"))
    stages = [pair for pair in result.pairs if pair.a and pair.a.shortcuts]
    assert [pair.a.stage for pair in stages] == ["conv2_x", "conv3_x", "conv4_x", "conv5_x"]
    assert all(pair.a.shortcuts == "none" for pair in stages)
    assert [pair.b.shortcuts for pair in stages] == [
        "3 identity",
        "3 identity, 1 projection",
        "5 identity, 1 projection",
        "2 identity, 1 projection",
    ]
    # Option B's projections are the whole difference: 1x1 convolutions and their BN.
    assert [pair.params_change for pair in stages] == [0, 128 * 64 + 256, 256 * 128 + 512, 512 * 256 + 1024]
    records = result.records()
    assert records["totals"]["params_change"] == 21_797_672 - 21_623_848
    assert records["totals"]["macs_change"] == resdsl.compile("resnet34").macs - resdsl.compile("plain34").macs
    assert main(["diff", "plain34", "resnet34"]) == 0
    text = capsys.readouterr().out
    assert "+173,824" in text and "3 identity, 1 projection" in text and "none" in text
    assert max(len(line) for line in text.splitlines()) <= 100

    assert main(["diff", "plain34", "nosuch"]) == 1
    assert "no shipped spec" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("a", "b"), [("resnet50", "resnet152"), ("cifar20", "timm/ecaresnet50d"), ("vgg19", "resnet34")]
)
def test_diff_fits_a_hundred_columns(a: str, b: str) -> None:
    text = str(diff(resdsl.compile(a), resdsl.compile(b)))
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert f"A = {resdsl.compile(a).name}, B = {resdsl.compile(b).name}" in text


def test_diff_aligns_networks_of_different_depth() -> None:
    result = diff(resdsl.compile("cifar20"), resdsl.compile("resnet18"))
    unpaired = [pair for pair in result.pairs if pair.a is None]
    assert [pair.b.stage for pair in unpaired] == ["conv5_x"]
    assert sum(pair.params_change for pair in result.pairs) == 11_689_512 - 269_722


def test_table_rows_levels_and_totals() -> None:
    network = resdsl.compile("torchvision/resnet50")
    blocks = Table.of(network)
    assert [row.module for row in blocks.rows][:6] == ["conv1", "bn1", "relu1", "maxpool1", "layer1.0", "layer1.1"]
    assert blocks.rows[4].kind == "bottleneck_v1_5" and blocks.rows[4].kernel == "1x1,3x3,1x1"
    assert blocks.rows[0].kernel == "7x7" and blocks.rows[0].output_shape == (64, 112, 112)
    for detail in ("layer", "block", "stage"):
        table = Table.of(network, detail=detail)
        assert sum(row.params for row in table.rows) == network.num_params
        assert sum(row.macs for row in table.rows) == network.macs
    stages = {row.module: row for row in blocks.stages}
    assert stages["layer3"].kind == "6 x bottleneck_v1_5" and stages["layer3"].output_shape == (1024, 14, 14)
    assert stages["layer3"].params == sum(row.params for row in blocks.rows if row.stage == "layer3")
    records = blocks.records()
    assert records["totals"]["trainable"] == network.num_params and records["totals"]["frozen"] == 0
    assert json.loads(json.dumps(records)) == records
    text = str(blocks)
    assert "layer3 (stage)" in text and "MACs (conv+fc)" in text and "frozen 0" in text
    assert Table.of(network, batch=4).activation_bytes == 4 * blocks.activation_bytes
    with pytest.raises(ValueError, match="detail"):
        Table.of(network, detail="blocks")


def test_table_of_a_network_with_a_channel_conv() -> None:
    # ECA's channel_conv has a 1-D kernel (an int): the table once raised a TypeError on it.
    network = resdsl.compile("timm/ecaresnet50d")
    rows = {row.module: row for row in Table.of(network, detail="layer").rows}
    eca = rows["layer1.0.se.conv"]
    # ECA's kernel for 256 channels: int((log2(256) + 1) / 2) = 4, made odd: 5.
    assert eca.kind == "channel_conv" and eca.kernel == "5" and eca.output_shape == (256, 1, 1)
    assert "layer1.0" in str(Table.of(network))


def test_network_repr_is_one_line_and_draws_inline() -> None:
    network = resdsl.compile("resnet50")
    assert repr(network) == "<Network resnet50: 50 layers, 25,557,032 params, 3.858 GMACs, input 3x224x224>"
    if shutil.which("dot") is None:
        assert network._repr_svg_() is None
        pytest.skip("Graphviz's dot is not installed (CI installs it): the inline figure is None without it")
    svg = network._repr_svg_()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "conv2_x" in svg


def test_diff_shows_small_changes_with_their_sign_and_the_totals_shortcut_option(tmp_path: Path) -> None:
    spec = (
        "network {name} {{\n    input 3x32x32\n    stage s: 1 x basic(16)\n"
        "    head {{\n        avgpool\n        fc {classes}\n    }}\n}}\n"
    )
    for name, classes in (("ten", 10), ("nine", 9)):
        (tmp_path / f"{name}.res").write_text(spec.format(name=name, classes=classes))
    a, b = resdsl.compile(str(tmp_path / "ten.res")), resdsl.compile(str(tmp_path / "nine.res"))
    assert b.macs - a.macs == -16  # 16 MACs less: 1.6e-5 millions
    lines = str(diff(a, b)).splitlines()
    cells = [cell for line in lines for cell in line.split()]
    assert "-0.0" not in cells and "-0.00002" in cells
    totals = [line for line in lines if line.startswith("total") or line.lstrip().startswith("B  ")][-2:]
    assert all(line.endswith("option B") for line in totals), totals
