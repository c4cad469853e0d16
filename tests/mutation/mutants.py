"""The curated mutants: small bugs of the kind a developer really writes, each with the
tests that should notice it.

A mutant is an exact snippet of a source file and its replacement. The snippet must
occur exactly once in the file: where the code moved or changed (a redesign of the
IR will move a lot of it), the runner reports the mutant as stale and fails, so the
list is kept in step with the code instead of silently shrinking. To update one, find
where the rule now lives, rewrite `original` and `replacement` there, and run
``python -m tests.mutation.run --only ID`` to see its tests still kill it.

`tests` is the narrow selection that must kill the mutant (pytest node ids or files,
chosen to run in seconds): the CI budget runs exactly these. The full budget adds the
test files that own the mutated file (FULL_SELECTION), to see whether anything else
in the suite notices too. A mutant that cannot change behaviour is kept with its
`equivalent` reason, and is neither run nor counted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    why: str  # the rule the mutant breaks
    equivalent: str | None = None  # why no test can see it, for a mutant that changes nothing
    ci: bool = True  # run in the CI budget (False: its tests are too slow for it)


SURVIVORS = "tests/test_survivors.py"
ORACLE = "tests/test_oracle.py"
GENERATED = "tests/test_oracle_generated.py"
TORCH = "tests/torch_backend"

#: What the full budget runs too, per mutated file (besides the mutant's own tests).
FULL_SELECTION: dict[str, tuple[str, ...]] = {
    "resdsl/backends/torch.py": (ORACLE, GENERATED, "tests/test_torch_backend.py", "tests/test_inference.py"),
    "resdsl/backends/torch_modules.py": (ORACLE, GENERATED, "tests/test_torch_backend.py"),
    "resdsl/layers.py": (ORACLE, GENERATED, "tests/test_kinds.py", "tests/test_language.py", "tests/test_language2.py"),
    "resdsl/interpret.py": (ORACLE, GENERATED),
    "resdsl/evaluate.py": ("tests/test_language.py", "tests/test_language2.py", "tests/test_diagnostics.py"),
    "resdsl/passes/naming.py": ("tests/test_language.py", "tests/test_language2.py", "tests/test_specs.py"),
    "resdsl/passes/shortcuts.py": (ORACLE, GENERATED, "tests/test_language.py", "tests/test_language2.py"),
    "resdsl/passes/expand.py": (ORACLE, GENERATED, "tests/test_language.py", "tests/test_language2.py"),
    "resdsl/passes/cost.py": ("tests/test_specs.py", "tests/test_language.py"),
    "resdsl/fmt.py": ("tests/test_fmt.py",),
    "resdsl/train/loop.py": ("tests/test_train_options.py", "tests/test_train_loop.py"),
    "resdsl/train/data.py": ("tests/test_train_data.py",),
    "resdsl/train/recipes.py": ("tests/test_train_recipes.py",),
}


def _s(name: str) -> str:
    return f"{SURVIVORS}::{name}"


SHARED_READERS = _s("test_values_with_several_readers_match_the_interpreter")
SHAPES_ODD = _s("test_every_shortcut_option_on_odd_sizes_has_torchs_shapes_and_values")
OPERATORS = _s("test_every_operator_agrees_with_python_on_negative_zero_and_huge_operands")

MUTANTS: list[Mutant] = [
    # -- The 13 survivors of issue 21 ------------------------------------------------------
    Mutant(
        "torch-inplace-shared",
        "resdsl/backends/torch.py",
        "and users == (node,) and",
        "and node in users and",
        (SHARED_READERS,),
        "an in-place op may not overwrite a value another node still reads",
    ),
    Mutant(
        "torch-fold-shared-conv",
        "resdsl/backends/torch.py",
        "if not isinstance(source.layer, Conv) or source.users != (node.id,):",
        "if not isinstance(source.layer, Conv):",
        (SHARED_READERS,),
        "a BN folds only into a conv that nothing else reads",
    ),
    Mutant(
        "torch-name-reuse-live-alias",
        "resdsl/backends/torch.py",
        "        free = [name for name in free if name not in live_names]\n",
        "",
        (SHARED_READERS,),
        "a freed name is reused only when no live value holds the same tensor",
    ),
    Mutant(
        "naming-count-unlabelled-only",
        "resdsl/passes/naming.py",
        '            counter[node.written] += 1\n            local = label if label is not None else f"{node.written}',
        "            counter[node.written] += label is None\n"
        '            local = label if label is not None else f"{node.written}',
        (_s("test_unlabelled_layers_after_labelled_ones_count_them"),),
        "labelled layers count toward the numbers of unlabelled ones",
    ),
    Mutant(
        "layers-same-padding-dilation",
        "resdsl/layers.py",
        "return (dilation[0] * (kernel[0] // 2), dilation[1] * (kernel[1] // 2))",
        "return ((dilation[0] * kernel[0]) // 2, (dilation[1] * kernel[1]) // 2)",
        (_s("test_a_dilated_convs_default_padding_is_dilation_times_half_the_kernel"),),
        "a conv's default padding is dilation * (K // 2)",
    ),
    Mutant(
        "layers-ceil-window-edge",
        "resdsl/layers.py",
        "if (out - 1) * stride >= size + padding:",
        "if (out - 1) * stride > size + padding:",
        (_s("test_ceil_mode_output_sizes_are_pytorchs_at_every_edge"),),
        "ceil_mode drops a last window that starts in the right padding",
    ),
    Mutant(
        "layers-maxpool-even-padding",
        "resdsl/layers.py",
        '            object.__setattr__(self, "padding", _same_padding(self.kernel))\n\n'
        '    def output_shape(self, inputs):\n        _check_pool_padding("maxpool"',
        '            object.__setattr__(self, "padding", ((self.kernel[0] - 1) // 2, (self.kernel[1] - 1) // 2))\n\n'
        '    def output_shape(self, inputs):\n        _check_pool_padding("maxpool"',
        (_s("test_a_maxpools_default_padding_is_half_the_kernel_rounded_down"),),
        "maxpool's default padding is K // 2, also for even K",
    ),
    Mutant(
        "layers-zeropad-round-down",
        "resdsl/layers.py",
        "return (channels + self.extra_channels, -(-height // self.stride[0]), -(-width // self.stride[1]))",
        "return (channels + self.extra_channels, height // self.stride[0], width // self.stride[1])",
        (SHAPES_ODD,),
        "option A's shortcut keeps ceil(H / s) rows, as x[:, :, ::s] does",
    ),
    Mutant(
        "evaluate-floordiv-truncates",
        "resdsl/evaluate.py",
        "                    return a // b\n",
        "                    return int(a / b)\n",
        (OPERATORS, _s("test_floor_division_of_literals_past_two_to_the_53")),
        "// floors, exactly, also past 2**53",
    ),
    Mutant(
        "evaluate-le-as-lt",
        "resdsl/evaluate.py",
        '"<=": lambda a, b: a <= b,',
        '"<=": lambda a, b: a < b,',
        (OPERATORS,),
        "<= is <=",
    ),
    Mutant(
        "evaluate-probability-one",
        "resdsl/evaluate.py",
        "not 0 <= value < 1:",
        "not 0 <= value <= 1:",
        (_s("test_a_probability_of_one_is_refused"),),
        "dropout 1 and drop_path 1 are refused",
    ),
    Mutant(
        "train-scheduler-not-restored",
        "resdsl/train/loop.py",
        '        self.schedule.load_state_dict(saved["scheduler"])\n',
        "",
        (_s("test_resume_after_an_error_triggered_warmup_ended_is_bit_identical"),),
        "a resume restores where the error-triggered warm-up ended",
    ),
    Mutant(
        "fmt-no-operator-spaces",
        "resdsl/fmt.py",
        '        return " " if previous.kind not in (LPAR,) else ""\n    return " "\n',
        '        return " " if previous.kind not in (LPAR,) else ""\n'
        '    return "" if OP in (token.kind, previous.kind) else " "\n',
        (_s("test_fmt_spaces_every_binary_operator"),),
        "binary operators have a space on each side",
    ),
]
