"""Hostile input, round 3: the language server over stdio (issue 18).

Each test holds an attack's minimal case: requests with parameters the protocol's
types forbid, requests before ``initialize``, Content-Length bombs, positions in
documents with astral characters and lone CRs, an over-long shipped name, and
completion after ``use "`` in a big folder. Every request must be answered (within a
deadline), and the server must go on answering afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lsp_wire import Wire

import resdsl

GOOD = """\
network small {
    input 3x8x8
    stem {
        conv 3x3, 4
    }
    head {
        avgpool
        fc 10
    }
}
"""


def _alive(wire: Wire, msg_id: int, uri: str) -> None:
    """The server still answers: a hover on the document's first word."""
    wire.request(msg_id, "textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 2}})
    assert "result" in wire.response(msg_id)


def test_a_request_before_initialize_gets_an_error_not_a_traceback(tmp_path: Path):
    with Wire(tmp_path) as wire:
        wire.request(
            5, "textDocument/hover", {"textDocument": {"uri": "file:///x.res"}, "position": {"line": 0, "character": 0}}
        )
        reply = wire.response(5)
        assert reply["error"]["code"] == -32002 and "traceback" not in str(reply).lower()
        wire.initialize()
        uri = (tmp_path / "a.res").as_uri()
        wire.open(uri, GOOD)
        _alive(wire, 6, uri)


@pytest.mark.parametrize(
    "params",
    [
        {"position": {"line": -1, "character": 0}},
        {"position": {"line": "a", "character": 0}},
        {},
        {"position": {"line": 0, "character": 2**31}},
        {"position": {"line": 0}},
    ],
    ids=["negative-line", "text-line", "no-position", "character-2**31", "no-character"],
)
@pytest.mark.parametrize("method", ["textDocument/hover", "textDocument/definition", "textDocument/completion"])
def test_every_request_with_invalid_parameters_is_answered(tmp_path: Path, params: dict, method: str):
    uri = (tmp_path / "a.res").as_uri()
    with Wire(tmp_path) as wire:
        wire.initialize()
        wire.open(uri, GOOD)
        wire.request(7, method, {"textDocument": {"uri": uri}, **params})
        reply = wire.response(7, timeout=20)
        assert reply["error"]["code"] == -32602
        _alive(wire, 8, uri)


def test_formatting_without_options_and_positions_past_the_end_are_answered(tmp_path: Path):
    uri = (tmp_path / "a.res").as_uri()
    with Wire(tmp_path) as wire:
        wire.initialize()
        wire.open(uri, GOOD)
        wire.request(3, "textDocument/formatting", {"textDocument": {"uri": uri}})
        assert wire.response(3)["error"]["code"] == -32602
        far = {"line": 2**31 - 1, "character": 2**31 - 1}
        for number, method in enumerate(("textDocument/hover", "textDocument/definition", "textDocument/completion")):
            wire.request(10 + number, method, {"textDocument": {"uri": uri}, "position": far})
            assert "result" in wire.response(10 + number)
        # A document the client never opened is never read from disk (it could be a FIFO).
        wire.request(
            20,
            "textDocument/hover",
            {"textDocument": {"uri": "file:///dev/zero"}, "position": {"line": 0, "character": 0}},
        )
        assert wire.response(20)["result"] is None


@pytest.mark.parametrize(
    "bomb",
    [
        b"Content-Length: 99999999999999999999\r\n\r\n{}",
        b"Content-Length: 999999999999\r\n\r\n",
        b"X-Long: " + b"a" * 100_000 + b"\r\n",
        b"Content-Length: 5\r\n\r\n{]}\x00\xff",
    ],
    ids=["20-digit-length", "terabyte-length", "long-header", "bad-json"],
)
def test_malformed_frames_do_not_stop_the_server(tmp_path: Path, bomb: bytes):
    uri = (tmp_path / "a.res").as_uri()
    with Wire(tmp_path) as wire:
        wire.initialize()
        wire.open(uri, GOOD)
        wire.diagnostics(uri)
        wire.send(bomb)
        wire.send(b"\r\n")
        # The stream goes on: requests after the bad frame are answered (the first may be
        # taken as the bad frame's missing body).
        answered = False
        for msg_id in range(40, 44):
            wire.request(
                msg_id, "textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 2}}
            )
        for msg_id in range(40, 44):
            try:
                wire.response(msg_id, timeout=5 if answered else 20)
                answered = True
            except AssertionError:
                continue
        assert answered
        assert wire.process.poll() is None


def test_formatting_counts_the_end_in_utf16_units(tmp_path: Path):
    uri = (tmp_path / "a.res").as_uri()
    text = GOOD.replace("network small {", "network  small {") + "# 😀😀"
    with Wire(tmp_path) as wire:
        reply = wire.initialize(["utf-16"])
        assert reply["result"]["capabilities"]["positionEncoding"] == "utf-16"
        wire.open(uri, text)
        wire.request(
            4,
            "textDocument/formatting",
            {"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}},
        )
        (edit,) = wire.response(4)["result"]
        lines = text.split("\n")
        assert edit["range"]["end"] == {"line": len(lines) - 1, "character": len(lines[-1].encode("utf-16-le")) // 2}
        assert edit["range"]["end"]["character"] == 6  # '# ' and two emoji of two units each


@pytest.mark.parametrize(("encoding", "units"), [("utf-16", 12), ("utf-32", 11), ("utf-8", 14)])
def test_diagnostic_ranges_are_in_the_negotiated_units(tmp_path: Path, encoding: str, units: int):
    uri = (tmp_path / "a.res").as_uri()
    text = 'use "😀.res"\n' + GOOD  # the use line: 11 code points, 12 UTF-16 units, 14 UTF-8 bytes
    with Wire(tmp_path) as wire:
        reply = wire.initialize([encoding])
        assert reply["result"]["capabilities"]["positionEncoding"] == encoding
        wire.open(uri, text)
        (diagnostic,) = wire.diagnostics(uri)
        assert diagnostic["range"]["start"]["line"] == 0
        assert diagnostic["range"]["end"] == {"line": 0, "character": units}


def test_a_diagnostic_after_a_lone_cr_in_a_comment_names_the_clients_line(tmp_path: Path):
    uri = (tmp_path / "a.res").as_uri()
    # For the compiler the CR is comment text; for the client it ends a line. The bad
    # name 'basik' is on compiler line 4 and client line 5.
    text = (
        "# one\rtwo\nnetwork small {\n    input 3x8x8\n    stage s: 1 x basik(4)\n    head {\n        fc 10\n    }\n}\n"
    )
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text)
    assert caught.value.line == 4
    with Wire(tmp_path) as wire:
        wire.initialize()
        wire.open(uri, text)
        (diagnostic,) = wire.diagnostics(uri)
        start = diagnostic["range"]["start"]
        client_lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        assert start["line"] == 4
        assert client_lines[start["line"]][start["character"] :].startswith("basik")


def test_a_document_using_an_over_long_shipped_name_is_answered(tmp_path: Path):
    uri = (tmp_path / "a.res").as_uri()
    text = f'use "resdsl:{"a" * 300}"\n' + GOOD
    with Wire(tmp_path) as wire:
        wire.initialize()
        wire.open(uri, text)
        (diagnostic,) = wire.diagnostics(uri)
        assert "no shipped spec" in diagnostic["message"]
        for msg_id, method in enumerate(
            ("textDocument/hover", "textDocument/definition", "textDocument/completion"), 30
        ):
            wire.request(msg_id, method, {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 8}})
            assert "result" in wire.response(msg_id)


def test_completion_after_use_reads_only_the_documents_folder(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.res").write_text(GOOD, encoding="utf-8")
    (tmp_path / "near.res").write_text(GOOD, encoding="utf-8")
    for index in range(3000):  # more entries than are looked at
        (tmp_path / f"z{index:05}.txt").touch()
    uri = (tmp_path / "a.res").as_uri()
    with Wire(tmp_path) as wire:
        wire.initialize()
        wire.open(uri, 'use "')
        wire.request(
            2, "textDocument/completion", {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 5}}
        )
        labels = [item["label"] for item in wire.response(2, timeout=20)["result"]["items"]]
    assert "sub/deep.res" not in labels and len(labels) <= 200
    assert any(label.startswith("resdsl:") for label in labels)
