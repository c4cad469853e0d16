"""``resdsl lsp``: a language server for .res files (diagnostics, hover, definition,
completion, formatting). The server needs the ``lsp`` extra (pygls):
``pip install "resdsl[lsp]"``. Never imports torch.
"""

from __future__ import annotations

import argparse
import sys

from resdsl.cli_support import UsageError


def cmd_lsp(args: argparse.Namespace) -> int:
    # The protocol is bytes on the process's own streams; a caller that replaced them
    # with text buffers (an in-process driver, a notebook) cannot host the server.
    if not (hasattr(sys.stdin, "buffer") and hasattr(sys.stdout, "buffer")):
        raise UsageError(
            "the language server talks LSP over the process's binary stdin and stdout; run it as a process"
        )
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
