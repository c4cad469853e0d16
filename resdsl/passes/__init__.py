"""The compiler's passes: functions from IR to IR, run in order.

Elaboration (:func:`resdsl.passes.expand.elaborate`, called by the compiler) makes the
IR from the front end's bound instance; every pass here reads and writes the IR only.
Two lists:

* :data:`PASSES`, run on every compiled network: block strides, module names, costs.
* :data:`ANALYSES`, the passes whose results follow from the graph's structure (block
  strides, per-node, per-stage and total costs). :func:`apply_rewrite` runs them again
  after every rewrite (:mod:`resdsl.passes.rewrite`: folding parallel paths, BN into
  its convolution), so derived records are recomputed, never patched.

A SpecError from a pass is the user's; any other exception is a compiler bug,
reported as :class:`~resdsl.errors.CompilerBug` naming the pass. With ``lint``
(tests/conftest.py turns it on for the whole suite), :meth:`Network.lint` checks
every invariant of the IR after each pass; after a rewrite it always does.
"""

from __future__ import annotations

from collections.abc import Callable

from resdsl.errors import CompilerBug, SpecError
from resdsl.ir import WRITTEN_BY, Network
from resdsl.passes.cost import count_cost
from resdsl.passes.fuse_attention import fuse_attention
from resdsl.passes.naming import assign_names
from resdsl.passes.parallel_paths import fold_parallel_paths
from resdsl.passes.rewrite import Rewrite, fold_batch_norms
from resdsl.passes.shapes import infer_shapes
from resdsl.passes.structure import block_structure

Pass = Callable[[Network], None]

__all__ = [
    "ANALYSES",
    "INFERENCE_REWRITES",
    "LINT",
    "PASSES",
    "apply_rewrite",
    "assign_names",
    "block_structure",
    "count_cost",
    "for_inference",
    "fuse_attention",
    "infer_shapes",
    "run_passes",
]

PASSES: tuple[Pass, ...] = (
    block_structure,
    assign_names,
    count_cost,
)

#: What is recomputed after any rewrite: everything derived from the graph's structure.
#: Names are not: a rewrite's new node takes the name of the node it replaces.
ANALYSES: tuple[Pass, ...] = (
    block_structure,
    count_cost,
)

#: The rewrites ``for_inference`` applies, in order: parallel linear paths first (their
#: BNs are part of the paths), then each remaining BN into its convolution, then each
#: written-out attention into scaled_dot_product_attention.
INFERENCE_REWRITES: tuple[Rewrite, ...] = (
    fold_parallel_paths,
    fold_batch_norms,
    fuse_attention,
)

#: Lint the IR after every pass (tests/conftest.py sets it; run_passes(lint=...) overrides it).
LINT = False

#: The fields every node has once elaboration has made the IR.
_ELABORATED = WRITTEN_BY["elaborate"]


def run_passes(network: Network, passes: tuple[Pass, ...] = PASSES, *, lint: bool | None = None) -> Network:
    checking = LINT if lint is None else lint
    fields: tuple[str, ...] = _ELABORATED
    if checking:
        network.lint(fields)
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


_EVERY_FIELD = ("shape", "name", "params", "macs")


def apply_rewrite(network: Network, rewrite: Rewrite) -> Network:
    """A new network: `rewrite` applied to a copy of `network`, its analyses recomputed,
    and linted (every field, the stage totals against the network's)."""
    try:
        result = rewrite(network)
    except SpecError:
        raise
    except Exception as error:
        raise CompilerBug(
            f"internal error in rewrite '{rewrite.__name__}' on {network.path}: {type(error).__name__}: {error}"
        ) from error
    if result is network:
        raise CompilerBug(f"rewrite '{rewrite.__name__}' changed its argument instead of a copy")
    run_passes(result, ANALYSES, lint=False)
    try:
        result.lint(_EVERY_FIELD)
    except AssertionError as error:
        raise CompilerBug(f"rewrite '{rewrite.__name__}' left a broken IR on {network.path}: {error}") from error
    return result


def for_inference(network: Network) -> Network:
    """The network an inference model computes: every rewrite of INFERENCE_REWRITES applied."""
    for rewrite in INFERENCE_REWRITES:
        network = apply_rewrite(network, rewrite)
    return network
