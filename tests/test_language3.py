"""Round 3 of the language (shared/design/LANGUAGE-3.md): named values, joins over
them, split, lists, compile-time loops, label interpolation and weighted sums.

Each construct is checked three ways: the keys and figures the compiler gives, the
built module against the reference interpreter (float64, randomised weights and BN
statistics, eval and train mode and for_inference), and both against a computation
written here by hand with torch.nn.functional from the module's own tensors, so that
a front-end mistake (a value bound to the wrong node) cannot pass by being in both.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import resdsl

torch = pytest.importorskip("torch", reason="compares torch modules")
F = torch.nn.functional

from resdsl.backends.torch import build  # noqa: E402
from tests.oracle import compare_with_oracle, randomise, relative_error  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

SK = """
block sk_conv(width, stride=1, reduction=16, min_attn=8) {
    let x
    paths.0.conv: conv 3x3, width, stride=stride
    paths.0.bn: bn
    relu
    let p0
    from x
    paths.1.conv: conv 3x3, width, stride=stride, dilation=2
    paths.1.bn: bn
    relu
    let p1
    add p0, p1
    avgpool
    attn.fc_reduce: conv 1x1, max(width // reduction, min_attn)
    attn.bn: bn
    relu
    attn.fc_select: conv 1x1, 2 * width
    softmax groups=2
    split 2
    let a
    weighted a, [p0, p1]
}

network sk(classes=10) {
    input 3x16x16
    stem {
        conv1: conv 3x3, 16
        bn1: bn
        relu
    }
    stage layer1: 2 x sk_conv(16)
    head {
        avgpool
        fc: fc classes
    }
}
"""

RES2NET = """
block res2net_bottleneck(width, scale=4, stride=1, expansion=4) {
    conv1: conv 1x1, width * scale
    bn1: bn
    relu
    split scale
    let s
    for i in 0 .. scale - 1 {
        if i == 0 or repeat == 0 {
            from s[i]
        } else {
            add s[i], o[i - 1]
        }
        convs.{i}: conv 3x3, width, stride=stride
        bns.{i}: bn
        relu
        let o[i]
    }
    if repeat == 0 {
        from s[scale - 1]
        pool: avgpool 3x3, stride=stride, padding=1
        let last
    } else {
        let last = s[scale - 1]
    }
    cat o, last
    conv3: conv 1x1, width * expansion
    bn3: bn
    add shortcut
    relu
}

network res2(classes=10) {
    input 3x16x16
    stem {
        conv1: conv 3x3, 32
        bn1: bn
        relu
    }
    stage layer1: 2 x res2net_bottleneck(8)
    stage layer2: 2 x res2net_bottleneck(16, stride=2)
    head {
        avgpool
        fc: fc classes
    }
}
"""

CSP = """
block unit(width) {
    conv1: conv 1x1, width
    bn1: bn
    relu
    conv2: conv 3x3, width
    bn2: bn
    add shortcut
    relu
}

block csp(width, blocks=2) {
    split [width // 2, width // 2]
    let parts
    from parts[1]
    for i in 0 .. blocks {
        blocks.{i}: unit(width // 2)
    }
    let done
    cat parts[0], done
    transition: conv 1x1, width
}

network csp_net(classes=10) {
    input 3x16x16
    stem {
        conv1: conv 3x3, 16
    }
    stage stage1: 1 x csp(16)
    head {
        avgpool
        fc: fc classes
    }
}
"""

REPVGG = """
block repvgg(width, stride=1) {
    let x
    rbr_dense.conv: conv 3x3, width, stride=stride
    rbr_dense.bn: bn
    let dense
    from x
    rbr_1x1.conv: conv 1x1, width, stride=stride
    rbr_1x1.bn: bn
    let pointwise
    if stride == 1 {
        from x
        rbr_identity: bn
        let same
        add dense, pointwise, same
    } else {
        add dense, pointwise
    }
    relu
}

network rep(classes=10) {
    input 3x16x16
    stem {
        conv1: conv 3x3, 8
    }
    stage stages.0: 2 x repvgg(8)
    stage stages.1: 2 x repvgg(16, stride=2)
    head {
        avgpool
        fc: fc classes
    }
}
"""

DLA = """
block tree(width) {
    let x
    left: conv 3x3, width
    relu
    let a
    right: conv 3x3, width
    relu
    let b
    cat b, a, x
    project: conv 1x1, width
}

network dla(classes=10) {
    input 3x12x12
    stem {
        conv1: conv 3x3, 8
        let stem_out
        level1: tree(8)
        let one
        cat one, stem_out
    }
    head {
        avgpool
        fc: fc classes
    }
}
"""


def _model(text: str, path: str = "probe.res"):
    network = resdsl.compile_text(text, path=path)
    return network, randomise(build(network)).double().eval()


def _bn(x, state, prefix):
    return F.batch_norm(
        x,
        state[f"{prefix}.running_mean"],
        state[f"{prefix}.running_var"],
        state[f"{prefix}.weight"],
        state[f"{prefix}.bias"],
        False,
        0.0,
        1e-5,
    )


def _conv(x, state, name, stride=1, padding=None, dilation=1, bias=False):
    weight = state[f"{name}.weight"]
    if padding is None:
        padding = dilation * (weight.shape[-1] // 2)
    return F.conv2d(x, weight, state.get(f"{name}.bias") if bias else None, stride, padding, dilation)


@pytest.mark.parametrize("text", [SK, RES2NET, CSP, REPVGG, DLA], ids=["sk", "res2net", "csp", "repvgg", "dla"])
def test_every_example_matches_the_interpreter(text: str) -> None:
    network = resdsl.compile_text(text, path="probe.res")
    errors = compare_with_oracle(network)
    assert max(errors.values()) < 1e-9, errors


def test_sk_block_by_hand() -> None:
    _network, model = _model(SK)
    state = model.state_dict()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    h = F.relu(_bn(_conv(x, state, "conv1"), state, "bn1"))
    for index in range(2):
        p = f"layer1.{index}"
        p0 = F.relu(_bn(_conv(h, state, f"{p}.paths.0.conv"), state, f"{p}.paths.0.bn"))
        p1 = F.relu(_bn(_conv(h, state, f"{p}.paths.1.conv", dilation=2), state, f"{p}.paths.1.bn"))
        s = F.adaptive_avg_pool2d(p0 + p1, 1)
        s = F.relu(_bn(_conv(s, state, f"{p}.attn.fc_reduce"), state, f"{p}.attn.bn"))
        logits = _conv(s, state, f"{p}.attn.fc_select").reshape(2, 2, 16, 1, 1)
        attention = torch.softmax(logits, 1)
        h = attention[:, 0] * p0 + attention[:, 1] * p1
    out = F.linear(F.adaptive_avg_pool2d(h, 1).flatten(1), state["fc.weight"], state["fc.bias"])
    with torch.no_grad():
        assert relative_error(model(x), out) < 1e-12
    assert "layer1.0.paths.1.conv.weight" in state and "layer1.1.attn.fc_select.weight" in state


def test_res2net_block_by_hand() -> None:
    _network, model = _model(RES2NET)
    state = model.state_dict()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    h = F.relu(_bn(_conv(x, state, "conv1"), state, "bn1"))
    for stage, width, stride in (("layer1", 8, 1), ("layer2", 16, 2)):
        for repeat in range(2):
            p = f"{stage}.{repeat}"
            s = stride if repeat == 0 else 1
            out = F.relu(_bn(_conv(h, state, f"{p}.conv1"), state, f"{p}.bn1"))
            parts = torch.split(out, width, 1)
            outputs = []
            for i in range(3):
                sp = parts[i] if i == 0 or repeat == 0 else parts[i] + outputs[-1]
                outputs.append(F.relu(_bn(_conv(sp, state, f"{p}.convs.{i}", stride=s), state, f"{p}.bns.{i}")))
            last = F.avg_pool2d(parts[3], 3, s, 1) if repeat == 0 else parts[3]
            out = _bn(_conv(torch.cat([*outputs, last], 1), state, f"{p}.conv3"), state, f"{p}.bn3")
            shortcut = h
            if f"{p}.downsample.0.weight" in state:
                shortcut = _bn(_conv(h, state, f"{p}.downsample.0", stride=s, padding=0), state, f"{p}.downsample.1")
            h = F.relu(out + shortcut)
    expected = F.linear(F.adaptive_avg_pool2d(h, 1).flatten(1), state["fc.weight"], state["fc.bias"])
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-12
    # timm's Bottle2neck keys: convs.i and bns.i from the loop, pool only in a stage's first block.
    assert {"layer1.0.convs.2.weight", "layer1.0.bns.0.running_var"} <= set(state)
    assert not any(key.startswith("layer1.0.convs.3") for key in state)


def test_csp_and_dla_by_hand() -> None:
    _network, model = _model(CSP)
    state = model.state_dict()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    h = _conv(x, state, "conv1")
    left, right = h[:, :8], h[:, 8:]
    for i in range(2):
        p = f"stage1.0.blocks.{i}"
        y = F.relu(_bn(_conv(right, state, f"{p}.conv1"), state, f"{p}.bn1"))
        right = F.relu(_bn(_conv(y, state, f"{p}.conv2"), state, f"{p}.bn2") + right)
    h = _conv(torch.cat([left, right], 1), state, "stage1.0.transition")
    expected = F.linear(F.adaptive_avg_pool2d(h, 1).flatten(1), state["fc.weight"], state["fc.bias"])
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-12

    _network, model = _model(DLA)
    state = model.state_dict()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    stem = _conv(x, state, "conv1")
    a = F.relu(_conv(stem, state, "level1.left"))
    b = F.relu(_conv(a, state, "level1.right"))
    one = _conv(torch.cat([b, a, stem], 1), state, "level1.project")
    h = torch.cat([one, stem], 1)
    expected = F.linear(F.adaptive_avg_pool2d(h, 1).flatten(1), state["fc.weight"], state["fc.bias"])
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-12


def test_repvgg_paths_by_hand() -> None:
    _network, model = _model(REPVGG)
    state = model.state_dict()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    h = _conv(x, state, "conv1")
    for stage, stride in (("stages.0", 1), ("stages.1", 2)):
        for repeat in range(2):
            p = f"{stage}.{repeat}"
            s = stride if repeat == 0 else 1
            total = _bn(_conv(h, state, f"{p}.rbr_dense.conv", stride=s), state, f"{p}.rbr_dense.bn")
            total = total + _bn(_conv(h, state, f"{p}.rbr_1x1.conv", stride=s), state, f"{p}.rbr_1x1.bn")
            if s == 1 and f"{p}.rbr_identity.weight" in state:
                total = total + _bn(h, state, f"{p}.rbr_identity")
            h = F.relu(total)
    expected = F.linear(F.adaptive_avg_pool2d(h, 1).flatten(1), state["fc.weight"], state["fc.bias"])
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-12
    # stages.1.0 changes the width, so the identity path's BN would not fit: the spec's `if` leaves it out.
    assert "stages.0.0.rbr_identity.weight" in state and "stages.1.0.rbr_identity.weight" not in state


def test_joins_take_any_number_of_values_in_the_written_order() -> None:
    text = """
block b(w) {
    let x
    one: conv 1x1, w
    let a
    from x
    two: conv 1x1, w * 2
    let b
    cat b, a, x, b
}
network n {
    input 4x5x5
    stem {
        b1: b(3)
    }
}
"""
    network, model = _model(text)
    assert network.output_shape == (6 + 3 + 4 + 6, 5, 5)
    state = model.state_dict()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    a, b = _conv(x, state, "b1.one"), _conv(x, state, "b1.two")
    with torch.no_grad():
        assert relative_error(model(x), torch.cat([b, a, x, b], 1)) == 0


def test_split_by_sizes_and_mul_of_named_values() -> None:
    text = """
network n {
    input 6x4x4
    stem {
        split [1, 2, 3]
        let s
        from s[2]
        c: conv 1x1, 2
        let t
        mul t, s[1]
        let u
        add u, s[1]
        let v
        cat s[0], v
    }
}
"""
    network, model = _model(text)
    state = model.state_dict()
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    t = _conv(x[:, 3:], state, "c")
    expected = torch.cat([x[:, :1], t * x[:, 1:3] + x[:, 1:3]], 1)
    with torch.no_grad():
        assert relative_error(model(x), expected) == 0
    assert network.output_shape == (3, 4, 4)


def test_weighted_broadcasts_per_channel_weights() -> None:
    text = """
network n {
    input 4x3x3
    stem {
        let x
        a: conv 1x1, 4
        let y
        avgpool
        g: conv 1x1, 8
        split 2
        let w
        weighted w, [x, y]
    }
}
"""
    _network, model = _model(text)
    state = model.state_dict()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    y = _conv(x, state, "a")
    g = _conv(F.adaptive_avg_pool2d(y, 1), state, "g")
    with torch.no_grad():
        assert relative_error(model(x), g[:, :4] * x + g[:, 4:] * y) < 1e-15


def test_names_are_scoped_to_each_block_instance() -> None:
    # Every repetition binds its own `x`: no shadowing across repetitions or blocks.
    text = """
block inner(w) {
    let x
    conv 3x3, w
    let y
    add x, y
}
block outer(w) {
    let x
    a: inner(w)
    b: inner(w)
    let y
    add x, y
}
network n {
    input 4x6x6
    stage s: 3 x outer(4)
}
"""
    network = resdsl.compile_text(text, path="scoped.res")
    assert len(network.blocks) == 9
    assert max(compare_with_oracle(network).values()) < 1e-9


def test_a_labelled_block_in_the_stem_body_and_head() -> None:
    # RegNet's `s1.b1`: a block labelled anywhere a layer may stand lives under its label.
    text = """
block unit(w) {
    conv: conv 3x3, w
    bn: bn
    relu
}
network n {
    input 3x8x8
    stem {
        stem: unit(4)
    }
    s1.b1: unit(8)
    head {
        final: unit(8)
        avgpool
        fc: fc 2
    }
}
"""
    network, model = _model(text)
    assert {"stem.conv.weight", "s1.b1.conv.weight", "s1.b1.bn.running_mean", "final.bn.weight"} <= set(
        model.state_dict()
    )
    assert max(compare_with_oracle(network).values()) < 1e-9


def test_a_kernel_from_a_parameter() -> None:
    text = """
block k(w, size=5) {
    conv size, w
}
network n {
    input 3x9x9
    stem {
        one: k(4)
        two: k(4, size=3x1)
    }
}
"""
    network, model = _model(text)
    state = model.state_dict()
    assert tuple(state["one.conv1.weight"].shape) == (4, 3, 5, 5)
    assert tuple(state["two.conv1.weight"].shape) == (4, 4, 3, 1)
    assert network.output_shape == (4, 9, 9)


def test_loop_variables_and_repeat_in_conditions() -> None:
    text = """
block b(w, n=3) {
    for i in 0 .. n {
        if i % 2 == 0 and repeat == 0 {
            even.{i}: conv 1x1, w
        } else {
            odd.{i}.x: conv 1x1, w
        }
    }
}
network n {
    input 2x3x3
    stage s: 2 x b(2)
}
"""
    network = resdsl.compile_text(text, path="loops.res")
    names = {node.name for node in network.nodes("conv")}
    assert names == {"s.0.even.0", "s.0.odd.1.x", "s.0.even.2", "s.1.odd.0.x", "s.1.odd.1.x", "s.1.odd.2.x"}


def test_an_empty_loop_and_a_join_of_one_value() -> None:
    text = """
network n {
    input 2x3x3
    stem {
        conv 1x1, 2
        let x
        for i in 3 .. 3 {
            conv 1x1, 2
        }
        add x
        relu
    }
}
"""
    network = resdsl.compile_text(text, path="loops.res")
    assert [node.kind for node in network.nodes()] == ["input", "conv", "relu", "output"]


def test_generated_forward_passes_every_input() -> None:
    _network, model = _model(SK)
    source = type(model.layer1[0])._resdsl_source
    # The weighted sum reads four values; the split parts are views of one tensor.
    assert " * " in source and ".chunk(2, 1)[0]" in source and ".chunk(2, 1)[1]" in source


ERRORS = {
    "read before bound": (
        "block b {\n    let x\n    conv 1x1, 4\n    add x, y\n    let y\n}\n",
        "'y' is read before it is bound",
        (4, 12),
    ),
    "never read": (
        "block b {\n    let x\n    conv 1x1, 4\n    let y\n    from x\n    conv 1x1, 4\n}\n",
        "'y' is bound",
        (4, 9),
    ),
    "shadowing": ("block b {\n    let x\n    conv 1x1, 4\n    let x\n    add x\n}\n", "already bound", (4, 9)),
    "index out of range": (
        "block b {\n    split 2\n    let s\n    add s[0], s[1], s[2]\n}\n",
        "index 2 is out of range: 's' holds 2 values",
        (4, 23),
    ),
    "no such value": ("block b {\n    conv 1x1, 4\n    add q, r\n}\n", "no value is named 'q'", (3, 9)),
    "a list read as one value": (
        "block b {\n    split 2\n    relu\n}\n",
        "'relu' reads one value, but the current value is a list of 2",
        (3, 5),
    ),
    "from drops an unread value": (
        "block b {\n    let x\n    conv 1x1, 4\n    from x\n    relu\n}\n",
        "'from' replaces a value that nothing reads",
        (4, 5),
    ),
    "loop over its bound": (
        "block b {\n    for i in 0 .. 5000 {\n        relu\n    }\n}\n",
        "a loop of 5,000 iterations",
        (2, 19),
    ),
    "label collision": (
        "block b {\n    for i in 0 .. 2 {\n        convs.{j}: conv 1x1, 4\n    }\n}\n",
        "the label 'convs.{j}' gives 'convs.0' twice",
        (3, 9),
    ),
    "weighted counts": (
        "block b {\n    let x\n    split 2\n    let w\n    weighted w, [x]\n}\n",
        "as many weights as values",
        (5, 5),
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_positioned_errors(case: str) -> None:
    body, message, (line, column) = ERRORS[case]
    if "{j}" in body:
        body = body.replace("block b {", "block b(j=0) {")
    text = body + "network n {\n    input 4x4x4\n    stage s: 1 x b\n}\n"
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    error = caught.value
    assert message in error.message, str(error)
    assert (error.line, error.column) == (line, column), str(error)
    assert "^" in str(error)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("split 3", "split 3 does not divide the input's 4 channels"),
        ("split [1, 2]", "split [1, 2] makes 3 channels, but its input has 4"),
    ],
)
def test_split_shapes_are_checked_when_shapes_are_known(body: str, message: str) -> None:
    text = f"block b {{\n    {body}\n    let s\n    cat s\n}}\nnetwork n {{\n    input 4x4x4\n    stage s: 1 x b\n}}\n"
    with pytest.raises(resdsl.ShapeError) as caught:
        resdsl.compile_text(text, path="bad.res")
    assert message in caught.value.message


def test_joins_of_mismatched_shapes_name_both_shapes() -> None:
    text = """
block b {
    let x
    conv 1x1, 8
    let y
    add x, y
}
network n {
    input 4x4x4
    stage s: 1 x b
}
"""
    with pytest.raises(resdsl.ShapeError) as caught:
        resdsl.compile_text(text, path="bad.res")
    assert "8x4x4" in caught.value.message and "4x4x4" in caught.value.message


WRN_PORT = """
# The widely used PyTorch port of WRN keeps its projection beside the block's own layers.
block port_shortcut(out, stride) {
    ..convShortcut: conv 1x1, out, stride=stride
}

block port_block(width, stride=1) {
    bn1: bn
    relu1: relu
    tap shortcut
    conv1: conv 3x3, width, stride=stride
    bn2: bn
    relu2: relu
    conv2: conv 3x3, width
    add shortcut
}

network port(classes=10) {
    input 3x16x16
    shortcut B
    projection port_shortcut
    stem {
        conv1: conv 3x3, 16
    }
    stage block1.layer: 2 x port_block(32)
    stage block2.layer: 1 x port_block(64, stride=2)
    head {
        bn1: bn
        relu: relu
        avgpool
        fc: fc classes
    }
}
"""


def test_a_projection_label_names_a_module_beside_the_blocks_own() -> None:
    network, model = _model(WRN_PORT)
    keys = [key for key in model.state_dict() if key.startswith("block1.layer.0.")]
    # The port's order: the block's layers, then convShortcut (created where the shortcut is added).
    assert keys[-1] == "block1.layer.0.convShortcut.weight"
    assert "block2.layer.0.convShortcut.weight" in model.state_dict()
    assert not any("downsample" in key for key in model.state_dict())
    assert "block1.layer.1.convShortcut.weight" not in model.state_dict()
    assert max(compare_with_oracle(network).values()) < 1e-9


def test_an_outer_label_in_a_stage_block_is_refused() -> None:
    text = "block b {\n    ..conv: conv 1x1, 4\n}\nnetwork n {\n    input 4x4x4\n    stage s: 1 x b\n}\n"
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    assert (caught.value.line, caught.value.column) == (2, 5)
    assert "outside the block" in caught.value.message


def test_a_nested_blocks_outer_label_lives_in_the_enclosing_block() -> None:
    text = """
block gate(c) {
    mul {
        avgpool
        ..fc: conv 1x1, c, bias=true
        sigmoid
    }
}
block b(c) {
    conv: conv 3x3, c
    g: gate(c)
}
network n {
    input 4x6x6
    stage s: 2 x b(4)
}
"""
    network, model = _model(text)
    assert "s.0.fc.weight" in model.state_dict() and "s.1.conv.weight" in model.state_dict()
    assert max(compare_with_oracle(network).values()) < 1e-9


def test_a_block_inside_a_block_has_its_own_join_and_projection() -> None:
    text = """
block inner(w, stride=1) {
    conv: conv 3x3, w, stride=stride
    bn: bn
    add shortcut
}
block outer(w) {
    first: inner(w * 2, stride=2)
    second: inner(w * 2)
    add shortcut
    relu
}
network n {
    input 4x8x8
    shortcut B
    stage s: 2 x outer(4)
}
"""
    network, model = _model(text)
    keys = set(model.state_dict())
    # The inner block changes width and stride: its projection is its own, under its label.
    assert {"s.0.first.downsample.0.weight", "s.0.first.downsample.1.running_var"} <= keys
    assert not any(key.startswith("s.0.second.downsample") for key in keys)
    # Each outer block halves its input's size (its first inner block strides): its own projection too.
    assert "s.0.downsample.0.weight" in keys and "s.1.downsample.0.weight" in keys
    assert not any(key.startswith("s.1.second.downsample") for key in keys)
    joins = [block for block in network.blocks if block.join is not None]
    assert len(joins) == 6
    assert max(compare_with_oracle(network).values()) < 1e-9


def test_the_language_server_reads_the_new_statements(tmp_path) -> None:
    from resdsl.lsp.analysis import analyze, complete, hover

    path = tmp_path / "sk.res"
    path.write_text(SK, encoding="utf-8")
    analysis = analyze(SK, path)
    assert not analysis.errors, analysis.errors
    lines = SK.splitlines()
    weighted = next(number for number, line in enumerate(lines, 1) if "weighted" in line)
    shown = hover(analysis, weighted, lines[weighted - 1].index("weighted") + 1)
    assert shown is not None and "weighted" in shown
    inside = next(number for number, line in enumerate(lines, 1) if line.strip() == "let x")
    words = {item.label for item in complete(analysis, inside, 5)}
    assert {"let", "from", "for", "split", "weighted"} <= words

    broken = SK.replace("let p1\n", "")
    analysis = analyze(broken, path)
    assert any("'p1'" in error.message for error in analysis.errors)


def test_a_branch_may_start_from_a_named_value() -> None:
    # conv(x) + conv1x1(x), the second path written as a branch that starts from x.
    text = """
network n {
    input 4x5x5
    stem {
        let x
        a: conv 3x3, 4
        add {
            from x
            b: conv 1x1, 4
        }
    }
}
"""
    _network, model = _model(text)
    state = model.state_dict()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(model(x), _conv(x, state, "a") + _conv(x, state, "b")) < 1e-15


# The design sketch of round 3 ---------------------------------------------------------

SHARED_SKETCH = ROOT.parent / "shared" / "design" / "LANGUAGE-3.md"
VENDORED_SKETCH = ROOT / "tests" / "fixtures" / "LANGUAGE-3.md"


def _sketch_examples() -> str:
    document = (SHARED_SKETCH if SHARED_SKETCH.is_file() else VENDORED_SKETCH).read_text(encoding="utf-8")
    return "\n".join(re.findall(r"```\n(.*?)```", document, flags=re.S))


def test_vendored_sketch_is_current() -> None:
    if not SHARED_SKETCH.is_file():
        pytest.skip(
            "no original design document beside this checkout to compare with: "
            "tests/fixtures/LANGUAGE-3.md, in this repository, is the design sketch read here"
        )
    assert VENDORED_SKETCH.read_text(encoding="utf-8") == SHARED_SKETCH.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "stage",
    ["stage s: 2 x sk_conv(32)", "stage s: 3 x res2net_bottleneck(8)", "stage s: 2 x res2net_bottleneck(8, stride=2)"],
)
def test_each_sketched_block_runs_like_the_interpreter(stage: str) -> None:
    text = _sketch_examples() + (
        f"\nnetwork tiny {{\n    input 3x16x16\n    stem {{\n        conv 3x3, 32\n    }}\n    {stage}\n"
        "    head {\n        avgpool\n        fc 3\n    }\n}\n"
    )
    network = resdsl.compile_text(text, path="sketch.res", network="tiny")
    errors = compare_with_oracle(network)
    assert max(errors.values()) < 1e-9, errors


def test_the_shortcuts_modules_come_where_add_shortcut_stands() -> None:
    text = """
block b(w, stride=1) {
    c1: conv 3x3, w, stride=stride
    add shortcut
    after: bn
}
network n {
    input 4x8x8
    stage s: 1 x b(8, stride=2)
}
"""
    network = resdsl.compile_text(text, path="order.res")
    keys = [key for key in build(network).state_dict() if key.endswith("weight")]
    assert keys == ["s.0.c1.weight", "s.0.downsample.0.weight", "s.0.downsample.1.weight", "s.0.after.weight"]


def test_a_named_value_the_next_layer_reads_is_read() -> None:
    """`let x` then `bn`: the value is read (by the bn) even if the name never is; a value
    nothing reads at all is still an error (tests/fixtures/errors/value_never_read)."""
    block = "block b(w) {{\n    conv 3x3, w\n    let x\n{rest}}}\n"
    network = "network n {\n    input 3x8x8\n    stage s: 1 x b(4)\n}\n"
    compiled = resdsl.compile_text(block.format(rest="    bn\n    relu\n") + network)
    assert [node.kind for node in compiled.nodes()][1:4] == ["conv", "bn", "relu"]
    forgotten = "    from x\n    conv 1x1, w\n    let y\n    add x, x\n"
    with pytest.raises(resdsl.SpecError, match="'y' is bound but nothing reads it"):
        resdsl.compile_text(block.format(rest=forgotten) + network)


def test_skip_reasons_name_no_path_outside_the_checkout(monkeypatch, tmp_path: Path) -> None:
    # A fresh clone has no ../shared: the skip says so without printing where it looked.
    import tests.test_language as one
    import tests.test_language2 as two

    checks = ((one, "SHARED", one.test_vendored_copy_is_current), (two, "SHARED", two.test_vendored_copy_is_current))
    checks += ((sys.modules[__name__], "SHARED_SKETCH", test_vendored_sketch_is_current),)
    for module, constant, test in checks:
        monkeypatch.setattr(module, constant, tmp_path / "elsewhere" / "shared" / "design" / "LANGUAGE.md")
        with pytest.raises(pytest.skip.Exception) as skipped:
            test()
        reason = str(skipped.value)
        assert str(tmp_path) not in reason and "shared" not in reason, reason
        assert "tests/fixtures/LANGUAGE" in reason
