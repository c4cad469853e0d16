"""The compiler's passes: plain functions over a :class:`~resdsl.ir.Network`, run in order.

Each pass reads the node keys written by those before it (resdsl/ir.py lists
them). A SpecError from a pass is the user's; any other exception is a compiler
bug, reported as :class:`~resdsl.errors.CompilerBug` naming the pass.
"""

from __future__ import annotations

from collections.abc import Callable

from resdsl.errors import CompilerBug, SpecError
from resdsl.ir import Network
from resdsl.passes.cost import count_cost
from resdsl.passes.expand import expand
from resdsl.passes.naming import assign_names
from resdsl.passes.shapes import infer_shapes
from resdsl.passes.shortcuts import insert_shortcuts, validate
from resdsl.passes.structure import block_structure

Pass = Callable[[Network], None]

PASSES: tuple[Pass, ...] = (
    expand,
    infer_shapes,
    validate,
    insert_shortcuts,
    block_structure,
    assign_names,
    count_cost,
)


def run_passes(network: Network, passes: tuple[Pass, ...] = PASSES) -> Network:
    for compiler_pass in passes:
        try:
            compiler_pass(network)
        except SpecError:
            raise
        except RecursionError as error:
            raise CompilerBug(f"pass '{compiler_pass.__name__}' recursed too deeply on {network.path}") from error
        except Exception as error:
            raise CompilerBug(
                f"internal error in pass '{compiler_pass.__name__}' on {network.path}: {type(error).__name__}: {error}"
            ) from error
    return network
