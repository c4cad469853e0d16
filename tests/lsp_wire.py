"""A raw LSP connection to ``resdsl lsp`` over stdio: frames written byte for byte, malformed ones included.

pytest-lsp's client cannot send what the protocol's types forbid (a line of -1, a
header without a body); this one can, and reads every message back with a deadline
so that a server that never answers fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def frame(message: Any) -> bytes:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Wire:
    def __init__(self, cwd: Path | None = None) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "resdsl", "lsp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
        self.buffer = b""
        self.received: list[dict[str, Any]] = []

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def request(self, msg_id: int, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(frame(message))

    def notify(self, method: str, params: Any) -> None:
        self.send(frame({"jsonrpc": "2.0", "method": method, "params": params}))

    def initialize(self, encodings: list[str] | None = None) -> dict[str, Any]:
        capabilities: dict[str, Any] = {}
        if encodings is not None:
            capabilities["general"] = {"positionEncodings": encodings}
        self.request(1, "initialize", {"processId": None, "rootUri": None, "capabilities": capabilities})
        reply = self.response(1)
        self.notify("initialized", {})
        return reply

    def open(self, uri: str, text: str) -> None:
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "resdsl", "version": 1, "text": text}},
        )

    def _pump(self, timeout: float) -> None:
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        ready, _, _ = select.select([descriptor], [], [], timeout)
        if ready:
            chunk = os.read(descriptor, 1 << 16)
            if not chunk:
                raise AssertionError(f"the server closed its output (exit status {self.process.poll()})")
            self.buffer += chunk
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            if len(rest) < length:
                break
            self.received.append(json.loads(rest[:length]))
            self.buffer = rest[length:]

    def wait_for(self, predicate, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.received:
                if predicate(message):
                    self.received.remove(message)
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such message within {timeout} s; received {self.received!r:.2000}")
            self._pump(min(remaining, 0.2))

    def response(self, msg_id: int, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait_for(lambda m: m.get("id") == msg_id and "method" not in m, timeout)

    def diagnostics(self, uri: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        message = self.wait_for(
            lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri, timeout
        )
        return message["params"]["diagnostics"]

    def close(self) -> None:
        try:
            self.request(9999, "shutdown")
            self.notify("exit", None)
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.close()
