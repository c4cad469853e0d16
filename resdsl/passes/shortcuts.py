"""What carries a block's input to its ``add shortcut``: decided where the expander
meets the statement, with the shapes of both sides known.

:func:`plan_shortcut` is the one function that decides what feeds an ``add
shortcut`` (the paper's section 3.3 and Table 3):

- ``A``: identity; where dimensions increase, subsample by the stride and pad the
  new channels with zeros (parameter-free);
- ``B``: identity; a projection where shapes differ;
- ``C``: a projection on every shortcut;
- ``none``: no shortcut; the add disappears (the plain network).

An identity carries the block's input; a projection or a zero-pad reads the value
at ``tap shortcut`` when the block taps one (pre-activation blocks), else the
block's input. The projection is the block type the ``projection`` setting names,
by default the prelude's ``conv_bn_projection`` (1x1 convolution with the stride,
then BN).

The expander (:meth:`~resdsl.passes.expand.Expander.add_shortcut`) stores the plan on
the block, reports a join no option can make at its line, and builds what the plan
says, as timm's ``create_shortcut`` builds a block's shortcut from its channels and
stride.
"""

from __future__ import annotations

from dataclasses import dataclass

from resdsl.layers import Pair, Shape, ShapeProblem, layout, shape_text

#: The projection used where no ``projection`` setting names one: the prelude's
#: 1x1 convolution with the stride, then BN (the paper's option B, torchvision's downsample).
DEFAULT_PROJECTION = "conv_bn_projection"


@dataclass(frozen=True)
class ShortcutPlan:
    """What feeds one add: ``identity``, ``zeropad``, ``projection`` or ``none``."""

    kind: str
    stride: Pair = (1, 1)
    in_shape: Shape = ()
    out_shape: Shape = ()
    projection: str | None = None  # the projection block's type, for ``projection``

    @property
    def changes_dimensions(self) -> bool:
        return self.in_shape != self.out_shape


def stride_between(shortcut: Shape, main: Shape) -> Pair:
    """The stride s with ceil(H / s) == H' (and likewise W), as a strided 1x1 conv gives."""
    strides = []
    for size, target in zip(shortcut[1:], main[1:], strict=True):
        stride = -(-size // target) if target else 0
        if target < 1 or -(-size // stride) != target:
            raise ShapeProblem(
                f"the shortcut carries {shortcut[1]}x{shortcut[2]} but the block outputs {main[1]}x{main[2]}: "
                "no stride of the shortcut maps one onto the other",
                "a block may only shrink its input by a whole stride (pad its convolutions to keep sizes)",
            )
        strides.append(stride)
    return (strides[0], strides[1])


def plan_shortcut(option: str, block_input: Shape, main: Shape, tapped: Shape | None = None) -> ShortcutPlan:
    """Decide what carries a block's input to its join with `main`. `tapped` is the
    shape at ``tap shortcut`` (what a projection or zero-pad reads), if tapped."""
    source = tapped if tapped is not None else block_input
    if option == "none":
        return ShortcutPlan("none", in_shape=source, out_shape=main)
    if layout(source) == "tokens" or layout(main) == "tokens" or layout(block_input) == "tokens":
        # A token sequence's residual stream keeps its shape: the identity under every option.
        if source == main == block_input and layout(source) == layout(main) == layout(block_input):
            return ShortcutPlan("identity", (1, 1), block_input, main)
        raise ShapeProblem(
            f"'add shortcut' on token sequences needs one shape on both sides, got {shape_text(source)} "
            f"and {shape_text(main)}",
            "there is no projection of tokens: write the shortcut's path with let and add",
        )
    if len(source) != 3 or len(main) != 3 or len(block_input) != 3:
        raise ShapeProblem("'add shortcut' joins C x H x W tensors, but one side is flat")
    same = block_input == main
    if same and option != "C":
        return ShortcutPlan("identity", (1, 1), block_input, main)
    stride = stride_between(source, main)
    if option in ("B", "C"):
        return ShortcutPlan("projection", stride, source, main)
    if main[0] < source[0]:
        raise ShapeProblem(
            f"option A cannot shrink channels: the shortcut carries {source[0]} but the block outputs {main[0]}",
            "use shortcut B or C, whose 1x1 projection can reduce channels",
        )
    return ShortcutPlan("zeropad", stride, source, main)
