"""``resdsl lsp``: the language server, on standard input and output (pygls).

Every request reads :func:`resdsl.lsp.analysis.analyze`, which compiles a document
once per text; this module only converts between the compiler's 1-based positions
and LSP's 0-based ones and publishes diagnostics. Diagnostics go to the document
and, for errors inside files it ``use``s, to those files (and to the ``use`` line).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from resdsl import __version__
from resdsl.errors import SpecError
from resdsl.lsp import analysis
from resdsl.lsp.analysis import Analysis, Site

server = LanguageServer("resdsl", __version__)

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


def _analysis(uri: str) -> Analysis:
    document = server.workspace.get_text_document(uri)
    return analysis.analyze(document.source, _path(uri))


def _range(site: Site) -> lsp.Range:
    start = lsp.Position(line=max(0, site.line - 1), character=max(0, site.column - 1))
    end_line = max(site.line, site.end_line)
    end_column = site.end_column if site.end_line >= site.line else site.column + 1
    end = lsp.Position(
        line=end_line - 1, character=max(start.character if end_line == site.line else 0, end_column - 1)
    )
    return lsp.Range(start=start, end=end)


def _diagnostic(result: Analysis, error: SpecError, message_prefix: str = "", at: Site | None = None) -> lsp.Diagnostic:
    message = message_prefix + error.message
    if error.hint:
        message += f"\nhint: {error.hint}"
    related = []
    if error.pos is not None and at is not None:
        site = result.site(error.pos)
        related.append(
            lsp.DiagnosticRelatedInformation(
                location=lsp.Location(uri=_uri(site.path), range=_range(site)), message=error.message
            )
        )
    for note in error.notes:
        if note.pos is None:
            message += f"\nnote: {note.message}"
            continue
        site = result.site(note.pos)
        related.append(
            lsp.DiagnosticRelatedInformation(
                location=lsp.Location(uri=_uri(site.path), range=_range(site)), message=note.message
            )
        )
    if at is None:
        at = result.site(error.pos) if error.pos is not None else Site(result.resolve(error.path), 1, 1, 1, 1)
    return lsp.Diagnostic(
        range=_range(at),
        message=message,
        severity=lsp.DiagnosticSeverity.Error,
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


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: LanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
    publish(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: LanguageServer, params: lsp.DidSaveTextDocumentParams) -> None:
    # A saved file may be `use`d by the other open documents: compile them all again.
    analysis.clear_cache()
    for uri in list(ls.workspace.text_documents):
        publish(uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: LanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    for target in {uri, *_published.pop(uri, set())}:
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=target, diagnostics=[]))


@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def hover(ls: LanguageServer, params: lsp.HoverParams) -> lsp.Hover | None:
    result = _analysis(params.text_document.uri)
    text = analysis.hover(result, params.position.line + 1, params.position.character + 1)
    if text is None:
        return None
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text))


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def definition(ls: LanguageServer, params: lsp.DefinitionParams) -> lsp.Location | None:
    result = _analysis(params.text_document.uri)
    site = analysis.definition(result, params.position.line + 1, params.position.character + 1)
    if site is None:
        return None
    return lsp.Location(uri=_uri(site.path), range=_range(site))


@server.feature(
    lsp.TEXT_DOCUMENT_COMPLETION,
    lsp.CompletionOptions(trigger_characters=[" ", "(", ",", ":", '"', "="]),
)
def completion(ls: LanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    result = _analysis(params.text_document.uri)
    items = analysis.complete(result, params.position.line + 1, params.position.character + 1)
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

    document = ls.workspace.get_text_document(params.text_document.uri)
    text = document.source
    try:
        formatted = format_text(text, str(_path(params.text_document.uri)))
    except (SpecError, CompilerBug) as error:
        # Nothing is changed; the diagnostics already say why the file does not parse.
        ls.window_log_message(lsp.LogMessageParams(type=lsp.MessageType.Warning, message=f"resdsl fmt: {error}"))
        return None
    if formatted == text:
        return []
    lines = text.split("\n")
    end = lsp.Position(line=len(lines) - 1, character=len(lines[-1]))
    return [lsp.TextEdit(range=lsp.Range(start=lsp.Position(line=0, character=0), end=end), new_text=formatted)]


def main() -> int:
    server.start_io()
    # pygls closes standard output when the client says `exit`; the command line's
    # final flush must not find it closed.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (open until the process ends)
    return 0
