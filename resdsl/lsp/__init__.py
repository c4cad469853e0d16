"""``resdsl lsp``: a language server for .res files (diagnostics, hover, definition,
completion, formatting). The server needs the ``lsp`` extra (pygls):
``pip install "resdsl[lsp]"``. Never imports torch.
"""

from __future__ import annotations

import argparse

from resdsl.cli_support import UsageError


def cmd_lsp(args: argparse.Namespace) -> int:
    try:
        from resdsl.lsp.server import main
    except ImportError as error:
        raise UsageError(
            f"the language server needs pygls ({error}); install it with: pip install 'resdsl[lsp]'"
        ) from None
    return main()


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "lsp",
        help="run the language server (LSP on standard input and output)",
        description="Run a Language Server Protocol server for .res files on stdin/stdout: diagnostics, "
        "hover (shapes, parameters, MACs), go to definition, completion and formatting. "
        "Editors start it themselves; see docs/editors.md.",
    )
    parser.set_defaults(run=cmd_lsp)
