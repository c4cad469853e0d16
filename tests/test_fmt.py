"""``resdsl fmt``: the canonical layout, meaning kept, idempotent, and its command line."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest

import resdsl
from resdsl import fmt
from resdsl.cli import main
from resdsl.errors import CompilerBug, SpecSyntaxError

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SPEC_FILES = sorted(SPECS.rglob("*.res"))

MESSY = """\
# header



block  b ( w ,stride = 1 ) {   # trailing on header
  conv 3x3,w,stride=stride ; bn;relu
        # own-line comment

  conv 3x3 , w*2+ -1 , stride = ( stride )
  bn # after bn
  add shortcut }
network n(classes=10) { input 3x32x32
shortcut   A
stem { conv 3x3, 16; bn
relu }
  stage s1: 2 x b(16)
  stage s2: 1+1 x b( 32 , stride=2 )
  head { avgpool ; fc classes - 0 }
}
network m=n(classes = 100) with shortcut B , input 3x64x64
"""

CANONICAL = """\
# header

block b(w, stride=1) {  # trailing on header
    conv 3x3, w, stride=stride
    bn
    relu
    # own-line comment

    conv 3x3, w * 2 + -1, stride=(stride)
    bn  # after bn
    add shortcut
}

network n(classes=10) {
    input 3x32x32
    shortcut A
    stem {
        conv 3x3, 16
        bn
        relu
    }
    stage s1: 2 x b(16)
    stage s2: 1 + 1 x b(32, stride=2)
    head {
        avgpool
        fc classes - 0
    }
}

network m = n(classes=100) with shortcut B, input 3x64x64
"""


def _figures(network: resdsl.Network) -> tuple:
    return (
        network.name,
        network.num_params,
        network.macs,
        network.input_shape,
        network.output_shape,
        [(node.name, node.shape, node.params, node.macs) for node in network.nodes()],
        network.stages,
    )


def test_the_canonical_layout() -> None:
    assert fmt.format_text(MESSY) == CANONICAL
    assert fmt.format_text(CANONICAL) == CANONICAL


def test_messy_and_canonical_compile_to_the_same_network(write_spec) -> None:
    before = resdsl.compile(write_spec("messy/m.res", MESSY))
    after = resdsl.compile(write_spec("canonical/m.res", CANONICAL))
    assert _figures(before)[1:] == _figures(after)[1:]


@pytest.mark.parametrize("path", SPEC_FILES, ids=[str(p.relative_to(SPECS)) for p in SPEC_FILES])
def test_shipped_specs_are_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert fmt.format_text(text, str(path)) == text


def test_prelude_is_formatted() -> None:
    path = ROOT / "resdsl" / "prelude.res"
    assert fmt.format_text(path.read_text(encoding="utf-8")) == path.read_text(encoding="utf-8")


def _scramble(text: str, seed: int) -> str:
    """The same tokens laid out badly: random spacing, statements joined by `;`, continuations."""
    rng = random.Random(seed)
    tokens = fmt.tokenize(text)
    out: list[str] = []
    for index, token in enumerate(tokens):
        previous = tokens[index - 1] if index else None
        if token.kind == fmt.NEWLINE:
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            joinable = (
                previous is not None
                and previous.kind not in (fmt.COMMENT, fmt.LBRACE, fmt.NEWLINE)
                and following is not None
                and following.kind not in (fmt.NEWLINE, fmt.RBRACE, fmt.COMMENT)
            )
            out.append(" ; " if joinable and rng.random() < 0.3 else "\n" + " " * rng.randrange(0, 9))
            continue
        # A name and the `(` after it are one call token (`se(64)`): a space there changes meaning.
        call = previous is not None and previous.is_word and token.text == "("
        if previous is not None and previous.kind != fmt.NEWLINE and not call:
            words = previous.is_word and token.is_word
            choice = rng.random()
            if previous.kind != fmt.COMMENT and token.kind != fmt.COMMENT and choice < 0.1:
                out.append(" \\\n")
            elif words or choice < 0.5:
                out.append(" " * rng.randrange(1, 4))
        out.append(token.text)
    return "".join(out)


@pytest.mark.parametrize("seed", range(4))
def test_scrambled_specs_format_back_and_compile_the_same(tmp_path: Path, seed: int) -> None:
    copy = tmp_path / "specs"
    shutil.copytree(SPECS, copy)
    for path in copy.rglob("*.res"):
        path.write_text(_scramble(path.read_text(encoding="utf-8"), seed), encoding="utf-8")
    scrambled = {name: _figures(resdsl.compile(copy / f"{name}.res")) for name in ("resnet50", "cifar20", "vgg19")}
    assert main(["fmt", str(copy)]) == 0
    for path in copy.rglob("*.res"):
        original = SPECS / path.relative_to(copy)
        assert path.read_text(encoding="utf-8") == original.read_text(encoding="utf-8"), path
    for name, figures in scrambled.items():
        assert _figures(resdsl.compile(copy / f"{name}.res")) == figures
        assert _figures(resdsl.compile(SPECS / f"{name}.res"))[1:] == figures[1:]


def test_formatting_every_spec_keeps_networks_and_module_names(tmp_path: Path) -> None:
    copy = tmp_path / "specs"
    shutil.copytree(SPECS, copy)
    for path in copy.rglob("*.res"):
        # Undo the canonical layout first, so that the formatter has work to do.
        path.write_text(_scramble(path.read_text(encoding="utf-8"), 99), encoding="utf-8")
    names = [p.relative_to(copy).with_suffix("") for p in copy.rglob("*.res") if "lib" not in p.parts]
    before = {name: _figures(resdsl.compile(copy / f"{name}.res")) for name in names}
    assert main(["fmt", str(copy)]) == 0
    after = {name: _figures(resdsl.compile(copy / f"{name}.res")) for name in names}
    assert before == after


def test_comments_stay_in_order_and_in_place() -> None:
    formatted = fmt.format_text(MESSY)
    comments = [token.text.rstrip() for token in fmt.tokenize(MESSY) if token.kind == fmt.COMMENT]
    assert re.findall(r"#[^\n]*", formatted) == comments
    assert "relu\n    # own-line comment\n" in formatted  # on its own line, re-indented
    assert "{  # trailing on header\n" in formatted  # still after the code it followed


def test_round_two_syntax_lays_out_by_tokens() -> None:
    # The compiler may not parse these yet; the layout works on tokens alone.
    text = (
        "block avg_down(out,stride){if stride>1 and not(out%2==1){avgpool 2x2,stride=stride,ceil_mode=true}"
        "else if stride<=1{identity}else{gn min(32,out)}\n"
        "mul{avgpool;fc1:conv 1x1,out//4,bias=true;sigmoid}\n"
        "se:se(out*4,16)\nconv1.0:conv 3x3,-out\ntap shortcut;add shortcut}\n"
        "network n{stage stages.0.blocks:3 x preact(64)\nhead.fc:conv 1x1,classes,bias=true}\n"
    )
    expected = """\
block avg_down(out, stride) {
    if stride > 1 and not (out % 2 == 1) {
        avgpool 2x2, stride=stride, ceil_mode=true
    } else if stride <= 1 {
        identity
    } else {
        gn min(32, out)
    }
    mul {
        avgpool
        fc1: conv 1x1, out // 4, bias=true
        sigmoid
    }
    se: se(out * 4, 16)
    conv1.0: conv 3x3, -out
    tap shortcut
    add shortcut
}

network n {
    stage stages.0.blocks: 3 x preact(64)
    head.fc: conv 1x1, classes, bias=true
}
"""
    assert fmt.format_tokens(fmt.tokenize(text)) == expected
    assert fmt.format_tokens(fmt.tokenize(expected)) == expected


def test_a_statements_first_word_keeps_its_spacing_before_a_parenthesis() -> None:
    # `conv (k), 64` passes an expression; `se(64)` instantiates a block: not the same.
    text = "block b(k) {\n    conv (k), 64\n    se(64)\n    fc -1\n}\n"
    assert fmt.format_tokens(fmt.tokenize(text)) == text


def test_long_statements_wrap_after_commas_within_the_width() -> None:
    params = ", ".join(f"parameter_number_{index}={index}" for index in range(8))
    terms = " + ".join(f"parameter_number_{index}" for index in range(4))
    text = f"block wide({params}) {{\n    conv 3x3, {terms}, stride=1, padding=1, groups=1\n}}\n"
    formatted = fmt.format_text(text)
    lines = formatted.splitlines()
    assert all(len(line) <= fmt.LINE_WIDTH for line in lines)
    assert lines[0].endswith("\\") and lines[1].startswith(" " * 8)
    assert fmt.format_text(formatted) == formatted


def test_a_file_that_does_not_parse_is_reported_and_left_untouched(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.res"
    text = "block b(w) {\n    conv 3x3 w\n}\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecSyntaxError):
        fmt.format_text(text)
    assert main(["fmt", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == text
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and "missing ','" in err


def test_a_layout_that_would_change_the_meaning_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.res"
    path.write_text(CANONICAL, encoding="utf-8")
    real = fmt.format_tokens
    monkeypatch.setattr(fmt, "format_tokens", lambda tokens: real(tokens).replace("stride=2", "stride=3"))
    with pytest.raises(CompilerBug, match="change its meaning"):
        fmt.format_text(CANONICAL, str(path))
    assert main(["fmt", str(path)]) == 3  # a bug of resdsl's, as the command line reports them
    assert path.read_text(encoding="utf-8") == CANONICAL


def test_check_and_diff_change_nothing(tmp_path: Path, capsys) -> None:
    (tmp_path / "sub").mkdir()
    messy, tidy = tmp_path / "sub" / "messy.res", tmp_path / "tidy.res"
    messy.write_text(MESSY, encoding="utf-8")
    tidy.write_text(CANONICAL, encoding="utf-8")

    assert main(["fmt", "--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"would reformat {messy}" in err and str(tidy) not in err

    assert main(["fmt", "--diff", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"--- {messy}\n+++ {messy}\n")
    assert "-  add shortcut }\n" in out and "+    add shortcut\n" in out
    assert messy.read_text(encoding="utf-8") == MESSY

    assert main(["fmt", str(tmp_path)]) == 0
    assert messy.read_text(encoding="utf-8") == CANONICAL
    assert main(["fmt", "--check", str(tmp_path)]) == 0


def test_missing_path_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["fmt", str(tmp_path / "nope.res")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_standard_input_to_standard_output(monkeypatch, capsys) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(MESSY))
    assert main(["fmt", "-"]) == 0
    assert capsys.readouterr().out == CANONICAL


def test_resdsl_examples_in_the_docs_are_formatted() -> None:
    examples = []
    for document in (ROOT / "README.md", ROOT / "docs" / "editors.md"):
        examples += re.findall(r"```resdsl\n(.*?)```", document.read_text(encoding="utf-8"), flags=re.S)
    assert len(examples) >= 2
    for example in examples:
        assert fmt.format_text(example) == example
