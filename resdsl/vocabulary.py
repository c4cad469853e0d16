"""The words of the ``.res`` language, in one place, for the editor tooling.

The formatter, the language server's completion, the TextMate grammar and the
Pygments lexer all read these lists, so that an editor colours and completes the
same words. The compiler keeps its own registries (``resdsl.layers.LAYER_KINDS``
and the settings the expand pass reads); :func:`layer_kinds` and :func:`settings`
merge them in where they can be imported, and the tests check that the generated
grammars list every word the compiler knows.

The lists cover the round-2 surface syntax (``if``/``else``, ``tap shortcut``,
branch joins, more layer kinds, the ``projection``, ``norm`` and ``act``
settings) as well as what today's grammar accepts, so that highlighting keeps up
with the language as it grows.
"""

from __future__ import annotations

import contextlib

# The keywords and token patterns are described once, in resdsl/tokens.py.
from resdsl.tokens import (  # noqa: F401 - re-exported for the editor tooling
    CONSTANTS,
    CONTROL_KEYWORDS,
    DEFINITION_KEYWORDS,
    KEYWORDS,
    VALUE_KEYWORDS,
    WORD_OPERATORS,
)

#: ``add shortcut`` and ``tap shortcut``: statements of two words.
SHORTCUT_STATEMENTS = ("add", "tap")

#: Statements over named values and lists that are not layers: ``split 2``, ``weighted a, [p0, p1]``.
VALUE_STATEMENTS = ("split", "weighted")

#: Layer kinds a spec may write (the compiler's registry is merged in by layer_kinds()).
BASE_LAYER_KINDS = (
    "conv",
    "bn",
    "relu",
    "maxpool",
    "avgpool",
    "fc",
    "dropout",
    "flatten",
    "identity",
    "sigmoid",
    "silu",
    "gelu",
    "tanh",
    "hardsigmoid",
    "hardswish",
    "leaky_relu",
    "gn",
    "ln",
    "drop_path",
    "channel_conv",
    "relu6",
    "hardtanh",
    "softmax",
    "scale",
    "layerscale",
)

#: Network settings: words that start a statement in a network body or follow ``with``.
BASE_SETTINGS = ("input", "shortcut", "zero_init_residual", "checkpoint", "projection", "norm", "act", "features")

#: The values that word-valued settings take (for completion).
SETTING_VALUES: dict[str, tuple[str, ...]] = {
    "shortcut": ("A", "B", "C", "none"),
    "checkpoint": ("none", "stage", "block"),
    "zero_init_residual": CONSTANTS,
    "input": ("3x224x224", "3x32x32"),
}

#: Pure functions of expressions (``min(a, b)``).
FUNCTIONS = ("min", "max", "abs", "int", "log2")

#: Names every block may read: where it stands in its network.
POSITION_NAMES = ("block_index", "block_count", "stage_index", "stage_count", "repeat")


def layer_kinds() -> tuple[str, ...]:
    """Every layer kind: the base list and the compiler's registry, sorted."""
    kinds = set(BASE_LAYER_KINDS)
    with contextlib.suppress(ImportError, AttributeError):
        from resdsl.layers import LAYER_KINDS

        kinds.update(LAYER_KINDS)
    return tuple(sorted(kinds))


def joins() -> tuple[str, ...]:
    """Branch joins, each a name followed by a braced body (``mul { ... }``): the join
    kinds of the compiler's registry (:attr:`resdsl.layers.Layer.is_join`), sorted."""
    from resdsl.layers import JOINS

    return tuple(sorted(JOINS))


def settings() -> tuple[str, ...]:
    """Every network setting: the base list and the compiler's, in the base list's order."""
    names = list(BASE_SETTINGS)
    with contextlib.suppress(ImportError, AttributeError):
        from resdsl.passes.expand import SETTINGS

        names += [name for name in SETTINGS if name not in names]
    return tuple(names)


def layer_keywords(kind: str) -> tuple[str, ...]:
    """A layer kind's keyword arguments, where the compiler's registry knows them."""
    with contextlib.suppress(ImportError, AttributeError):
        from resdsl.layers import LAYER_KINDS

        if kind in LAYER_KINDS:
            return tuple(argument.name for argument in LAYER_KINDS[kind].arguments if not argument.required)
    return ()


def layer_usage(kind: str) -> str:
    """One line on how to write a layer kind, where the compiler's registry has it."""
    with contextlib.suppress(ImportError, AttributeError):
        from resdsl.layers import LAYER_KINDS

        if kind in LAYER_KINDS:
            return LAYER_KINDS[kind].usage or kind
    return kind
