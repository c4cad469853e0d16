"""The compiler's passes: plain functions over a :class:`~resdsl.ir.Network`, run in order.

Each pass reads the node fields written by those before it (docs/ir.md lists
them). A SpecError from a pass is the user's; any other exception is a compiler
bug, reported as :class:`~resdsl.errors.CompilerBug` naming the pass. With
``lint`` (tests/conftest.py turns it on for the whole suite), :meth:`Network.lint`
checks every invariant of the IR after each pass.
"""

from __future__ import annotations

from collections.abc import Callable

from resdsl.errors import CompilerBug, SpecError
from resdsl.ir import WRITTEN_BY, Network
from resdsl.passes.cost import count_cost
from resdsl.passes.expand import expand
from resdsl.passes.naming import assign_names
from resdsl.passes.shapes import infer_shapes
from resdsl.passes.structure import block_structure

Pass = Callable[[Network], None]

#: infer_shapes is not among them: expand infers each node's shape as it makes it. It
#: stays for tools that change a compiled graph (tests/test_torch_backend.py does).
__all__ = ["LINT", "PASSES", "assign_names", "block_structure", "count_cost", "expand", "infer_shapes", "run_passes"]

PASSES: tuple[Pass, ...] = (
    expand,
    block_structure,
    assign_names,
    count_cost,
)


#: Lint the IR after every pass (tests/conftest.py sets it; run_passes(lint=...) overrides it).
LINT = False


def run_passes(network: Network, passes: tuple[Pass, ...] = PASSES, *, lint: bool | None = None) -> Network:
    checking = LINT if lint is None else lint
    fields: tuple[str, ...] = ()
    for compiler_pass in passes:
        try:
            compiler_pass(network)
            if checking:
                fields += WRITTEN_BY.get(compiler_pass.__name__, ())
                network.lint(fields)
        except SpecError:
            raise
        except RecursionError as error:
            raise CompilerBug(f"pass '{compiler_pass.__name__}' recursed too deeply on {network.path}") from error
        except Exception as error:
            raise CompilerBug(
                f"internal error in pass '{compiler_pass.__name__}' on {network.path}: {type(error).__name__}: {error}"
            ) from error
    return network
