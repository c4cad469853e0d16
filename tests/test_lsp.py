"""``resdsl lsp`` driven over stdio by a real LSP client (pytest-lsp).

Each test starts the server as a subprocess (``python -m resdsl lsp``), initialises
a session, opens documents and checks what comes back against the compiler's own
figures; the fixture shuts the session down (shutdown, exit) and waits for the
process to end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

import resdsl
from resdsl.fmt import format_text
from resdsl.lsp.analysis import prelude_path

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
network small(classes=10) {
    input 3x32x32
    shortcut B
    stem {
        conv 3x3, 16
        bn
        relu
    }
    stage s1: 2 x basic(16)
    stage s2: 2 x basic(32, stride=2)
    head {
        avgpool
        fc classes
    }
}
"""

# Line 9 (1-based) names a block that does not exist.
BAD = GOOD.replace("stage s2: 2 x basic(32, stride=2)", "stage s2: 2 x basik(32, stride=2)")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "resdsl", "lsp"], server_env=_env())
)
async def client(lsp_client: LanguageClient, tmp_path: Path):
    await lsp_client.initialize_session(
        lsp.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=tmp_path.as_uri(),
        )
    )
    yield
    await lsp_client.shutdown_session()


async def _open(client: LanguageClient, path: Path, text: str, version: int = 1) -> str:
    path.write_text(text, encoding="utf-8")
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="resdsl", version=version, text=text)
        )
    )
    await _diagnostics_for(client, uri)
    return uri


async def _diagnostics_for(client: LanguageClient, uri: str) -> list[lsp.Diagnostic]:
    # Polled from what the client has received, not awaited notification by notification:
    # the server publishes the used files' diagnostics first, and a notification that
    # arrives while no waiter is registered would be missed (the test then hung under load).
    for _ in range(1200):
        if uri in client.diagnostics:
            return list(client.diagnostics[uri])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no diagnostics for {uri} within 60 s")


def _hover_params(uri: str, line: int, character: int) -> lsp.HoverParams:
    return lsp.HoverParams(
        text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=line, character=character)
    )


def _line_of(text: str, needle: str) -> int:
    """0-based line of the first line containing `needle`."""
    return next(index for index, line in enumerate(text.splitlines()) if needle in line)


@pytest.mark.asyncio
async def test_diagnostic_at_the_line_of_the_error_and_cleared_when_fixed(client: LanguageClient, tmp_path: Path):
    uri = await _open(client, tmp_path / "small.res", BAD)
    (diagnostic,) = client.diagnostics[uri]
    assert diagnostic.range.start.line == _line_of(BAD, "basik")
    assert diagnostic.range.start.character == BAD.splitlines()[diagnostic.range.start.line].index("basik")
    assert "unknown block 'basik'" in diagnostic.message
    assert "did you mean 'basic'?" in diagnostic.message  # the hint travels in the message
    assert diagnostic.severity == lsp.DiagnosticSeverity.Error

    client.diagnostics.pop(uri, None)
    client.text_document_did_change(
        lsp.DidChangeTextDocumentParams(
            text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[lsp.TextDocumentContentChangeWholeDocument(text=GOOD)],
        )
    )
    assert await _diagnostics_for(client, uri) == []


@pytest.mark.asyncio
async def test_notes_become_related_information(client: LanguageClient, tmp_path: Path):
    # Option A cannot shrink channels: the error is at the stage line, the note at the
    # prelude's `add shortcut` line.
    text = GOOD.replace("shortcut B", "shortcut A").replace("basic(32, stride=2)", "basic(8, stride=2)")
    uri = await _open(client, tmp_path / "small.res", text)
    (diagnostic,) = client.diagnostics[uri]
    assert diagnostic.range.start.line == _line_of(text, "stage s2")
    assert diagnostic.related_information
    related = diagnostic.related_information[0]
    assert related.location.uri == prelude_path().as_uri()
    prelude = prelude_path().read_text(encoding="utf-8")
    assert prelude.splitlines()[related.location.range.start.line].strip() == "add shortcut"


@pytest.mark.asyncio
async def test_errors_in_used_files_reach_both_files(client: LanguageClient, tmp_path: Path):
    library = tmp_path / "lib" / "blocks.res"
    library.parent.mkdir()
    library.write_text("block twice(w) {\n    conv 3x3 w\n}\n", encoding="utf-8")  # missing comma on line 2
    text = 'use "lib/blocks.res"\n\n' + GOOD
    uri = await _open(client, tmp_path / "small.res", text)
    (in_document,) = client.diagnostics[uri]
    assert in_document.range.start.line == 0  # the use line
    assert "blocks.res" in in_document.message
    (in_library,) = client.diagnostics[library.as_uri()]
    assert in_library.range.start.line == 1
    assert "missing ','" in in_library.message


@pytest.mark.asyncio
async def test_hover_on_a_layer_a_stage_and_a_block(client: LanguageClient, tmp_path: Path):
    path = tmp_path / "small.res"
    uri = await _open(client, path, GOOD)
    assert not client.diagnostics[uri]
    network = resdsl.compile(path)

    line = _line_of(GOOD, "conv 3x3, 16")
    hover = await client.text_document_hover_async(
        lsp.HoverParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=line, character=9)
        )
    )
    (conv,) = [node for node in network.nodes("conv") if node.pos.line == line + 1]
    text = hover.contents.value
    assert f"`{conv.name}`" in text
    assert "x".join(map(str, conv.shape)) in text
    assert f"{conv.params:,} params" in text
    assert f"{conv.macs:,} MACs" in text

    line = _line_of(GOOD, "stage s2")
    hover = await client.text_document_hover_async(
        lsp.HoverParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=line, character=11)
        )
    )
    (stage,) = [stage for stage in network.stages if stage.name == "s2"]
    row = hover.contents.value.splitlines()[-1]
    assert row.startswith("| small | s2 | 2 x basic |")
    assert f"{stage.params:,}" in row and f"{stage.macs:,}" in row
    assert "x".join(map(str, stage.output_shape)) in row

    character = GOOD.splitlines()[line].index("basic") + 2
    hover = await client.text_document_hover_async(
        lsp.HoverParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=line, character=character)
        )
    )
    assert "block basic(width, stride=1)" in hover.contents.value
    assert "prelude" in hover.contents.value


@pytest.mark.asyncio
async def test_hover_on_a_block_line_lists_its_instances(client: LanguageClient, tmp_path: Path):
    text = GOOD.replace("stage s1: 2 x basic(16)", "stage s1: 2 x pair(16)") + (
        "\nblock pair(width) {\n    conv 3x3, width\n    bn\n    add shortcut\n    relu\n}\n"
    )
    path = tmp_path / "small.res"
    uri = await _open(client, path, text)
    assert not client.diagnostics[uri]
    line = _line_of(text, "    conv 3x3, width")
    hover = await client.text_document_hover_async(
        lsp.HoverParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=lsp.Position(line=line, character=5)
        )
    )
    network = resdsl.compile(path)
    instances = [node for node in network.nodes("conv") if node.pos.line == line + 1]
    assert len(instances) == 2
    value = hover.contents.value
    assert f"{len(instances)} instances" in value
    for node in instances:
        assert f"`{node.name}`" in value


@pytest.mark.asyncio
async def test_go_to_definition_of_blocks_networks_and_use_paths(client: LanguageClient, tmp_path: Path):
    (tmp_path / "base.res").write_text(GOOD, encoding="utf-8")
    text = 'use "base.res"\n\nnetwork plain = small with shortcut none\n'
    uri = await _open(client, tmp_path / "plain.res", text)
    assert not client.diagnostics[uri]

    async def definition(line: int, character: int) -> lsp.Location:
        return await client.text_document_definition_async(
            lsp.DefinitionParams(
                text_document=lsp.TextDocumentIdentifier(uri=uri),
                position=lsp.Position(line=line, character=character),
            )
        )

    location = await definition(0, 8)
    assert location.uri == (tmp_path / "base.res").as_uri()
    location = await definition(2, text.splitlines()[2].index("small") + 1)
    assert location.uri == (tmp_path / "base.res").as_uri()
    assert location.range.start.line == 0
    assert location.range.start.character == GOOD.index("small")

    base_uri = await _open(client, tmp_path / "base.res", GOOD)
    line = _line_of(GOOD, "stage s1")
    location = await client.text_document_definition_async(
        lsp.DefinitionParams(
            text_document=lsp.TextDocumentIdentifier(uri=base_uri),
            position=lsp.Position(line=line, character=GOOD.splitlines()[line].index("basic")),
        )
    )
    assert location.uri == prelude_path().as_uri()
    prelude = prelude_path().read_text(encoding="utf-8").splitlines()
    assert prelude[location.range.start.line].startswith("block basic(")


@pytest.mark.asyncio
async def test_completion_of_blocks_layers_settings_and_parameters(client: LanguageClient, tmp_path: Path):
    text = GOOD.replace("    stage s2", "    stage s3: 2 x \n    shortcut \n    stage s2").replace(
        "        relu\n    }", "        relu\n        \n    }"
    )
    text = text.replace("fc classes", "fc classes\n        conv 3x3, 8, ")
    uri = (tmp_path / "small.res").as_uri()
    (tmp_path / "small.res").write_text(text, encoding="utf-8")
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="resdsl", version=1, text=text)
        )
    )
    lines = text.splitlines()

    async def labels(needle: str, column: int | None = None) -> set[str]:
        line = next(
            index for index, code in enumerate(lines) if code.startswith(needle) and code.strip() == needle.strip()
        )
        result = await client.text_document_completion_async(
            lsp.CompletionParams(
                text_document=lsp.TextDocumentIdentifier(uri=uri),
                position=lsp.Position(line=line, character=len(lines[line]) if column is None else column),
            )
        )
        return {item.label for item in result.items}

    assert {"basic", "bottleneck", "bottleneck_v1_5"} <= await labels("    stage s3: 2 x ")
    assert {"A", "B", "C", "none"} <= await labels("    shortcut ")
    in_stem = await labels("        ")
    assert {"conv", "bn", "relu", "maxpool", "add shortcut"} <= in_stem
    assert "input" not in in_stem  # a setting, not a layer
    assert {"stride=", "padding=", "groups=", "bias="} <= await labels("        conv 3x3, 8, ")

    line = _line_of(text, "stage s1")
    result = await client.text_document_completion_async(
        lsp.CompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            position=lsp.Position(line=line, character=lines[line].index("(16") + 1),
        )
    )
    assert {"width=", "stride="} <= {item.label for item in result.items}


@pytest.mark.asyncio
async def test_formatting_through_resdsl_fmt(client: LanguageClient, tmp_path: Path):
    messy = "network small(classes = 10) { input 3x32x32\n  stem { conv 3x3,16 ; bn;relu }\n" + GOOD.split(
        "    }\n", 1
    )[1].replace("stage s1: 2 x basic(16)", "stage s1:2 x basic( 16 )")
    uri = await _open(client, tmp_path / "small.res", messy)
    assert not client.diagnostics[uri]
    edits = await client.text_document_formatting_async(
        lsp.DocumentFormattingParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            options=lsp.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    (edit,) = edits
    assert edit.range.start == lsp.Position(line=0, character=0)
    assert edit.new_text == format_text(messy)
    assert "    stem {\n        conv 3x3, 16\n        bn\n        relu\n    }\n" in edit.new_text

    broken = await _open(client, tmp_path / "broken.res", "network n {\n    conv 3x3 16\n}\n")
    assert client.diagnostics[broken]
    edits = await client.text_document_formatting_async(
        lsp.DocumentFormattingParams(
            text_document=lsp.TextDocumentIdentifier(uri=broken),
            options=lsp.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    assert not edits  # a file that does not parse is left as it is


def test_the_server_never_imports_torch(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import resdsl.lsp.server\n"
        "from resdsl.lsp import analysis\n"
        "spec = Path(sys.argv[1])\n"
        "result = analysis.analyze(spec.read_text(), spec)\n"
        "assert result.networks and not result.errors, result.errors\n"
        "analysis.hover(result, 8, 10)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(ROOT / "specs" / "resnet50.res")],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_an_edit_to_comments_alone_reuses_the_compiled_network(tmp_path: Path) -> None:
    from resdsl.lsp import analysis

    path = tmp_path / "small.res"
    first = analysis.analyze(GOOD, path)
    commented = analysis.analyze(GOOD.replace("    bn\n", "    bn  # normalise\n", 1), path)
    assert commented.networks is first.networks  # nothing compiled again
    assert "# normalise" in commented.text
    changed = analysis.analyze(GOOD.replace("2 x basic(16)", "3 x basic(16)"), path)
    assert changed.networks[0].num_params > first.networks[0].num_params


@pytest.mark.asyncio
async def test_every_independent_error_is_a_diagnostic(client: LanguageClient, tmp_path: Path):
    """Three misspelt names, three diagnostics (a compiler stopping at the first showed one)."""
    text = (
        GOOD.replace("conv 3x3, 16", "conv 3x3, 16, strid=1")
        .replace("basic(16)", "basik(16)")
        .replace("basic(32, stride=2)", "basic(32, strde=2)")
    )
    uri = await _open(client, tmp_path / "small.res", text)
    lines = sorted(diagnostic.range.start.line for diagnostic in client.diagnostics[uri])
    assert lines == [_line_of(text, "strid="), _line_of(text, "basik"), _line_of(text, "strde")]
    syntax = GOOD.replace("conv 3x3, 16", "conv 3x3 16").replace("stage s2: 2", "stage s2 2")
    uri = await _open(client, tmp_path / "syntax.res", syntax)
    lines = sorted(diagnostic.range.start.line for diagnostic in client.diagnostics[uri])
    assert lines == [_line_of(syntax, "conv 3x3 16"), _line_of(syntax, "stage s2 2")]


HOVER_PROBE = """\
# hover probe
block se(channels, reduction=4) {
    mul {
        avgpool
        fc1: conv 1x1, channels // reduction
        relu
        fc2: conv 1x1, channels
        sigmoid
    }
}

block pre(width, stride=1) {
    bn
    relu
    tap shortcut
    conv 3x3, width, stride=stride
    se: se(width)
    add shortcut
}

network small(classes=10) {
    input 3x64x64
    shortcut B
    stem {
        conv 3x3, 16
    }
    stage s1: 2 x pre(16)
    head {
        avgpool
        fc classes
    }
}
"""


@pytest.mark.parametrize(
    ("needle", "word", "expected"),
    [
        # The statement's own node, not the flatten the compiler puts before the first fc.
        ("fc classes", "fc", "**fc** `fc1`\n\noutput 10 · 170 params"),
        ("fc classes", "classes", "**fc** `fc1`"),
        # The input this network has, not the setting's example values.
        ("input 3x64x64", "input", "**input** 3x64x64 (network small)"),
        ("shortcut B", "shortcut", "**shortcut** B (network small)"),
        ("tap shortcut", "tap", "**tap shortcut** in `pre`: the shortcut reads 16x64x64 here (2 instances"),
        # A label of a block used inside a block: its instances.
        ("se: se(width)", "se", "**se**: 2 instances"),
    ],
)
def test_hover_titles_what_the_line_writes(tmp_path: Path, needle: str, word: str, expected: str) -> None:
    from resdsl.lsp.analysis import analyze, hover

    path = tmp_path / "probe.res"
    path.write_text(HOVER_PROBE, encoding="utf-8")
    analysis = analyze(HOVER_PROBE, path)
    assert not analysis.errors
    line = _line_of(HOVER_PROBE, needle)
    shown = hover(analysis, line + 1, HOVER_PROBE.splitlines()[line].index(word) + 1)
    assert shown is not None and shown.startswith(expected), shown
    if word == "se":
        assert "`s1.0.se` | 16x64x64 | 128 | 128" in shown  # 16 -> 4 -> 16 channels, 1x1 convs, no bias


@pytest.mark.asyncio
async def test_errors_inside_a_block_and_a_bad_setting_are_separate_diagnostics(client: LanguageClient, tmp_path: Path):
    text = (Path(__file__).parent / "fixtures" / "errors" / "several_errors_in_a_block.res").read_text()
    uri = await _open(client, tmp_path / "several.res", text)
    found = sorted((d.range.start.line, d.range.start.character) for d in client.diagnostics[uri])
    assert found == [(1, 21), (3, 4), (6, 12), (12, 13), (13, 23)]
    assert all(d.severity == 1 for d in client.diagnostics[uri])


@pytest.mark.asyncio
async def test_an_unread_parameter_is_a_warning_of_severity_two(client: LanguageClient, tmp_path: Path):
    text = (Path(__file__).parent / "fixtures" / "warnings" / "unread_parameter.res").read_text()
    uri = await _open(client, tmp_path / "unread.res", text)
    (diagnostic,) = client.diagnostics[uri]
    assert diagnostic.severity == lsp.DiagnosticSeverity.Warning == 2
    assert (diagnostic.range.start.line, diagnostic.range.start.character) == (8, 22)
    assert "never reads its parameter 'stride'" in diagnostic.message
    (related,) = diagnostic.related_information
    assert related.location.range.start.line == 0 and related.message == "'stride' is declared here"
