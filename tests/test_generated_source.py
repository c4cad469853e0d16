"""Generated Python source (the forward code and the `.py` export) holds no text from a
spec or a path except as the repr of a validated value (issue 11, code execution)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the torch backend generates the sources audited here")

from resdsl.backends.torch import _CLASSES, build, export_source
from resdsl.cli import main
from resdsl.compiler import compile, compile_text

HOSTILE_NAME = 'x""";__import__("os").system("touch PWNED");"""y'

#: Calls that generated code may make: modules, torch's pad, adding a module.
ALLOWED_CALLS = {"super", "_block", "nn", "torch", "self", "F"}


def audit_generated(source: str) -> list[str]:
    """Problems in one generated source: anything beyond modules, calls and plain literals."""
    tree = ast.parse(source)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            while isinstance(func, ast.Attribute):
                func = func.value
            root = func.id if isinstance(func, ast.Name) else None
            if root in ("eval", "exec", "__import__", "compile", "open", "globals", "breakpoint", "setattr"):
                problems.append(f"line {node.lineno}: calls {root}")
            elif root == "getattr" and not (
                len(node.args) == 2 and isinstance(node.args[1], ast.Constant) and str(node.args[1].value).isdigit()
            ):
                # Only numbered submodules (`stages.0`) are reached with getattr, by a literal.
                problems.append(f"line {node.lineno}: getattr with a computed or non-numeric name")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            problems += [f"line {node.lineno}: imports {name}" for name in names if name.split(".")[0] != "torch"]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "__import__" in node.value:
            # Allowed only as an inert docstring, never as code; report where it sits.
            continue
    return problems


def test_hostile_spec_path_stays_a_string_in_the_py_export(tmp_path: Path) -> None:
    spec = tmp_path / f"{HOSTILE_NAME}.res"
    spec.write_text(
        Path(compile("cifar20").path)
        .resolve()
        .read_text(encoding="utf-8")
        .replace('use "lib/cifar.res"', f'use "{Path(compile("cifar20").path).resolve().parent}/lib/cifar.res"'),
        encoding="utf-8",
    )
    out = tmp_path / "m.py"
    # The file's stem names no network in it, so pick one by hand.
    assert main(["build", str(spec), "--network", "cifar20", "-o", str(out)]) == 0
    source = out.read_text(encoding="utf-8")
    assert audit_generated(source) == []
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring is not None and str(spec) in docstring  # the path survives, as text
    subprocess.run([sys.executable, "-c", "import m"], cwd=tmp_path, check=True, timeout=120)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("block", ["none", "model", "zero_pad_shortcut", "true"])
def test_block_names_that_collide_with_python_or_the_export_still_export(tmp_path: Path, block: str) -> None:
    text = f"""
block {block}(w) {{
    conv 3x3, w
    bn
    add shortcut
    relu
}}
network tiny {{
    input 3x8x8
    stem {{
        conv 3x3, 4
    }}
    stage s: 2 x {block}(4)
    head {{
        avgpool
        fc 2
    }}
}}
"""
    network = compile_text(text, path=str(tmp_path / "tiny.res"))
    source = export_source(network)
    assert audit_generated(source) == []
    namespace: dict = {}
    exec(compile_source(source), namespace)  # our own generated text, audited above
    model = namespace["Model"]()
    assert [name for name, _ in model.named_children()] == [name for name, _ in build(network).named_children()]


def compile_source(source: str):
    import builtins

    return builtins.compile(source, "<export>", "exec")


def test_every_generated_forward_passes_the_audit() -> None:
    for name in ("cifar20", "resnet50", "torchvision/resnet50"):
        build(compile(name))
    sources = [cls._resdsl_source for cls in _CLASSES.values()]
    assert sources
    for source in sources:
        assert audit_generated(source) == [], source


def test_the_audit_can_fail() -> None:
    assert audit_generated("__import__('os').system('x')")
    assert audit_generated("import os")
    assert audit_generated("eval('1')")
    assert audit_generated("getattr(self, name)")
    assert audit_generated("getattr(self, '__class__')")
    assert audit_generated("getattr(self.stages, '0')") == []
    assert audit_generated('"""doc"""\nimport torch\nx = torch.zeros(1)') == []
