"""``resdsl lsp``: the language server, on standard input and output (pygls).

Every request reads :func:`resdsl.lsp.analysis.analyze`, which compiles a document
once per text; this module only converts between the compiler's 1-based positions
and LSP's 0-based ones and publishes diagnostics. Diagnostics go to the document
and, for errors inside files it ``use``s, to those files (and to the ``use`` line).
"""

from __future__ import annotations

import asyncio
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import from_fs_path, to_fs_path

from resdsl import __version__
from resdsl.errors import SpecError, SpecWarning
from resdsl.lsp import analysis
from resdsl.lsp.analysis import Analysis, Site
from resdsl.lsp.positions import LineMap, line_map

#: The largest message body read (a document is bounded by the compiler's file size limit).
MAX_MESSAGE_BYTES = 64 << 20
#: The longest header line read.
MAX_HEADER_BYTES = 4096
#: JSON-RPC's error for a request that comes before ``initialize``.
SERVER_NOT_INITIALIZED = -32002


class _InvalidRequest:
    """A request whose parameters do not fit the protocol's types: answered with an error, never dropped."""

    jsonrpc = "2.0"

    def __init__(self, msg_id: int | str, method: str, error: JsonRpcException) -> None:
        self.id, self.method, self.error = msg_id, method, error


class RobustProtocol(LanguageServerProtocol):
    """pygls's protocol, answering every request: wrong parameters and requests before initialize get errors."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            msg_id, method = data.get("id"), data.get("method")
            if isinstance(msg_id, int | str) and not isinstance(msg_id, bool) and isinstance(method, str):
                return _InvalidRequest(msg_id, method, error)
            raise

    def handle_message(self, message: Any) -> None:
        if isinstance(message, _InvalidRequest):
            error = message.error
            if isinstance(error, JsonRpcInvalidParams):
                error = JsonRpcInvalidParams(f"invalid parameters for {message.method[:100]}")
            self._send_response(message.id, None, error.to_response_error())
            return
        method = getattr(message, "method", None)
        if self._workspace is None and method not in (lsp.INITIALIZE, lsp.EXIT, None):
            if getattr(message, "id", None) is not None:  # a request: answered; a notification: dropped
                error = lsp.ResponseError(code=SERVER_NOT_INITIALIZED, message="the server is not initialized")
                self._send_response(message.id, None, error)
            return
        super().handle_message(message)


class BoundedReader:
    """Standard input with bounds: a header line or a body over its bound is skipped, not read into memory."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readline(self) -> bytes:
        line = self.stream.readline(MAX_HEADER_BYTES)
        if len(line) >= MAX_HEADER_BYTES and not line.endswith(b"\n"):
            while True:  # drop the rest of an over-long line
                rest = self.stream.readline(MAX_HEADER_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            return b"X-Skipped: over-long header\r\n"
        return line

    def read(self, size: int) -> bytes:
        if size > MAX_MESSAGE_BYTES:
            # Nothing that long is read: the frame is answered as unreadable (pygls logs it) and the
            # stream goes on at the next header it finds.
            return b"\x00"
        return self.stream.read(size)


server = LanguageServer(
    "resdsl",
    __version__,
    # Whole texts: pygls's incremental edits split lines as str.splitlines does (at form feeds,
    # U+2028...), unlike the protocol, and would corrupt such documents.
    text_document_sync_kind=lsp.TextDocumentSyncKind.Full,
    protocol_cls=RobustProtocol,
)

#: Seconds a changed document's text must stand still before it is analysed and its diagnostics published.
DEBOUNCE_SECONDS = 0.2
# The timer of each document whose latest change is not analysed yet.
_pending: dict[str, asyncio.TimerHandle] = {}

# For each open document, the other files it last published diagnostics to, so that
# fixing a used file (or closing the document) clears them there.
_published: dict[str, set[str]] = {}

_COMPLETION_KINDS = {
    "keyword": lsp.CompletionItemKind.Keyword,
    "layer": lsp.CompletionItemKind.Function,
    "block": lsp.CompletionItemKind.Class,
    "network": lsp.CompletionItemKind.Module,
    "setting": lsp.CompletionItemKind.Property,
    "value": lsp.CompletionItemKind.EnumMember,
    "parameter": lsp.CompletionItemKind.Variable,
    "file": lsp.CompletionItemKind.File,
    "function": lsp.CompletionItemKind.Function,
}


def _path(uri: str) -> Path:
    path = to_fs_path(uri)
    # An unsaved buffer has no path: its `use` lines resolve from the server's directory.
    return Path(path) if path else Path.cwd() / "untitled.res"


def _uri(path: Path) -> str:
    return from_fs_path(str(path)) or path.as_uri()


def _text(uri: str) -> str | None:
    """An open document's text; None for one the client has not opened (never read from disk here)."""
    document = server.workspace.text_documents.get(uri)
    return None if document is None else document.source


def _analysis(uri: str) -> Analysis | None:
    text = _text(uri)
    return None if text is None else analysis.analyze(text, _path(uri))


def _encoding() -> str:
    return str(server.workspace.position_encoding or "utf-16")


@lru_cache(maxsize=16)
def _file_text(path: Path) -> str | None:
    """A used file's text as the compiler read it (for positions in it); None if it cannot be read."""
    from resdsl.frontend import read_spec
    from resdsl.ir import Limits

    try:
        return read_spec(path, Limits()).text
    except (SpecError, OSError, ValueError):
        return None


def _map_for(path: Path, result: Analysis) -> LineMap | None:
    if path == result.path:
        return line_map(result.text, _encoding())
    text = _text(_uri(path))
    if text is None:
        text = _file_text(path)
    return None if text is None else line_map(text, _encoding())


def _client_position(at: LineMap | None, line: int, column: int) -> lsp.Position:
    if at is None:
        return lsp.Position(line=max(0, line - 1), character=max(0, column - 1))
    line, character = at.to_client(line, column)
    return lsp.Position(line=line, character=character)


def _range(site: Site, result: Analysis | None = None) -> lsp.Range:
    at = _map_for(site.path, result) if result is not None else None
    start = _client_position(at, site.line, site.column)
    if site.end_line > site.line or (site.end_line == site.line and site.end_column > site.column):
        end = _client_position(at, site.end_line, site.end_column)
    else:
        end = _client_position(at, site.line, site.column + 1)
    if (end.line, end.character) < (start.line, start.character):
        end = start
    return lsp.Range(start=start, end=end)


def _compiler_position(uri: str, result: Analysis, position: lsp.Position) -> tuple[int, int]:
    return line_map(result.text, _encoding()).to_compiler(position.line, position.character)


def _diagnostic(result: Analysis, error: SpecError, message_prefix: str = "", at: Site | None = None) -> lsp.Diagnostic:
    message = message_prefix + error.message
    if error.hint:
        message += f"\nhint: {error.hint}"
    related = []
    if error.pos is not None and at is not None:
        site = result.site(error.pos)
        related.append(
            lsp.DiagnosticRelatedInformation(
                location=lsp.Location(uri=_uri(site.path), range=_range(site, result)), message=error.message
            )
        )
    for note in error.notes:
        if note.pos is None:
            message += f"\nnote: {note.message}"
            continue
        site = result.site(note.pos)
        related.append(
            lsp.DiagnosticRelatedInformation(
                location=lsp.Location(uri=_uri(site.path), range=_range(site, result)), message=note.message
            )
        )
    if at is None:
        at = result.site(error.pos) if error.pos is not None else Site(result.resolve(error.path), 1, 1, 1, 1)
    return lsp.Diagnostic(
        range=_range(at, result),
        message=message,
        severity=lsp.DiagnosticSeverity.Warning if isinstance(error, SpecWarning) else lsp.DiagnosticSeverity.Error,
        source="resdsl",
        related_information=related or None,
    )


def diagnostics(result: Analysis) -> dict[Path, list[lsp.Diagnostic]]:
    """The diagnostics of one analysis, by the file they belong in."""
    by_file: dict[Path, list[lsp.Diagnostic]] = {result.path: []}
    use_lines = _use_sites(result)
    for error in result.errors:
        file = result.site(error.pos).path if error.pos is not None else result.resolve(error.path)
        by_file.setdefault(file, []).append(_diagnostic(result, error))
        if file != result.path:
            # Shown in the document too, at the `use` line that brings the file in.
            at = use_lines.get(file) or next(iter(use_lines.values()), Site(result.path, 1, 1, 1, 1))
            shown = file.name
            by_file[result.path].append(_diagnostic(result, error, f"in {shown}: ", at))
    return by_file


def _use_sites(result: Analysis) -> dict[Path, Site]:
    from resdsl import syntax as ast

    sites: dict[Path, Site] = {}
    if result.module is None:
        return sites
    for definition in result.module.definitions:
        if isinstance(definition, ast.Use):
            target = result.resolve(str(result.path.parent / definition.path))
            sites.setdefault(target, result.site(definition.pos))
    return sites


def publish(uri: str) -> None:
    result = _analysis(uri)
    if result is None:
        return
    by_file = diagnostics(result)
    others = {_uri(path) for path in by_file if path != result.path}
    for stale in _published.get(uri, set()) - others:
        server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=stale, diagnostics=[]))
    _published[uri] = others
    # The document's own diagnostics go last: a client that has them has the others.
    for path, items in sorted(by_file.items(), key=lambda entry: entry[0] == result.path):
        target = uri if path == result.path else _uri(path)
        server.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=target, diagnostics=items))


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: LanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
    publish(params.text_document.uri)


def _publish_later(uri: str) -> None:
    """Publish `uri`'s diagnostics once its text has stood still for DEBOUNCE_SECONDS.

    A fast typist sends a change per keystroke; each would be a compile, and the server,
    handling messages in order, would fall ever further behind (a request waits behind
    every compile queued before it). A change only (re)starts the document's timer, so a
    burst of changes costs one analysis, of the latest text. Requests in the meantime are
    answered against the latest text (analysed then, once, and cached for the publish).
    """
    _cancel_pending(uri)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # called outside the server's loop (a test calling the handler)
        publish(uri)
        return
    _pending[uri] = loop.call_later(DEBOUNCE_SECONDS, _publish_pending, uri)


def _publish_pending(uri: str) -> None:
    _pending.pop(uri, None)
    if _text(uri) is not None:  # still open
        publish(uri)


def _cancel_pending(uri: str) -> None:
    handle = _pending.pop(uri, None)
    if handle is not None:
        handle.cancel()


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: LanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
    _publish_later(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: LanguageServer, params: lsp.DidSaveTextDocumentParams) -> None:
    # A saved file may be `use`d by the other open documents: compile them all again.
    analysis.clear_cache()
    for uri in list(ls.workspace.text_documents):
        _cancel_pending(uri)
        publish(uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: LanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    _cancel_pending(uri)
    for target in {uri, *_published.pop(uri, set())}:
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=target, diagnostics=[]))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: LanguageServer, params: lsp.HoverParams) -> lsp.Hover | None:
    result = _analysis(params.text_document.uri)
    if result is None:
        return None
    line, column = _compiler_position(params.text_document.uri, result, params.position)
    text = analysis.hover(result, line, column)
    if text is None:
        return None
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text))


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: LanguageServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    result = _analysis(params.text_document.uri)
    if result is None:
        return None
    line, column = _compiler_position(params.text_document.uri, result, params.position)
    site = analysis.definition(result, line, column)
    if site is None:
        return None
    return lsp.Location(uri=_uri(site.path), range=_range(site, result))


@server.feature(
    lsp.TEXT_DOCUMENT_COMPLETION,
    lsp.CompletionOptions(trigger_characters=[" ", "(", ",", ":", '"', "="]),
)
def completion(ls: LanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    result = _analysis(params.text_document.uri)
    if result is None:
        return lsp.CompletionList(is_incomplete=False, items=[])
    line, column = _compiler_position(params.text_document.uri, result, params.position)
    items = analysis.complete(result, line, column)
    return lsp.CompletionList(
        is_incomplete=False,
        items=[
            lsp.CompletionItem(
                label=item.label,
                kind=_COMPLETION_KINDS.get(item.kind),
                detail=item.detail or None,
                insert_text=item.insert,
            )
            for item in items
        ],
    )


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: LanguageServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit] | None:
    from resdsl.errors import CompilerBug
    from resdsl.fmt import format_text

    text = _text(params.text_document.uri)
    if text is None:
        return None
    try:
        formatted = format_text(text, str(_path(params.text_document.uri)))
    except (SpecError, CompilerBug) as error:
        # Nothing is changed; the diagnostics already say why the file does not parse.
        ls.window_log_message(lsp.LogMessageParams(type=lsp.MessageType.Warning, message=f"resdsl fmt: {error}"))
        return None
    if formatted == text:
        return []
    # The whole text is replaced: its end counted in the units announced at initialize (an emoji
    # is two UTF-16 units), and its lines as the protocol counts them (a lone CR ends one).
    line, character = line_map(text, _encoding()).end()
    end = lsp.Position(line=line, character=character)
    return [lsp.TextEdit(range=lsp.Range(start=lsp.Position(line=0, character=0), end=end), new_text=formatted)]


def main() -> int:
    server.start_io(BoundedReader(sys.stdin.buffer), sys.stdout.buffer)
    # pygls closes standard output when the client says `exit`; the command line's
    # final flush must not find it closed.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (open until the process ends)
    return 0
