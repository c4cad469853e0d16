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
    "resdsl/passes/values.py": ("tests/test_language3.py", "tests/test_oracle_values.py", "tests/test_diagnostics.py"),
    "resdsl/passes/cost.py": ("tests/test_specs.py", "tests/test_language.py"),
    "resdsl/passes/rewrite.py": (ORACLE, GENERATED, "tests/test_parallel_paths.py", "tests/test_inference.py"),
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

MUTANTS_13: list[Mutant] = [
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
        "resdsl/passes/rewrite.py",
        "if not isinstance(conv, Conv) or conv.standardize or source.users != (node.id,):",
        "if not isinstance(conv, Conv) or conv.standardize:",
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
    # -- Named values, splits and weighted sums (round 3) ----------------------------------------
    Mutant(
        "values-join-reversed",
        "resdsl/passes/values.py",
        "            inputs += got.nodes if isinstance(got, ValueList) else [got]\n        if not inputs:",
        "            inputs = (list(got.nodes) if isinstance(got, ValueList) else [got]) + inputs\n"
        "        if not inputs:",
        ("tests/test_language3.py::test_joins_take_any_number_of_values_in_the_written_order",),
        "a join over named values reads them in the order written",
    ),
    Mutant(
        "values-let-ignores-its-value",
        "resdsl/passes/values.py",
        "        target = value if item.value is None else self.read_values(item.value, context)",
        "        target = value",
        ("tests/test_language3.py::test_res2net_block_by_hand",),
        "let NAME = VALUE names VALUE, not the current value",
    ),
    Mutant(
        "split-sized-slice-off-by-one",
        "resdsl/layers.py",
        'where = f"{start}:{start + self.sizes[self.part]}"',
        'where = f"{start + 1}:{start + 1 + self.sizes[self.part]}"',
        ("tests/test_language3.py::test_split_by_sizes_and_mul_of_named_values",),
        "a sized split's part is the channels from the sum of the sizes before it",
    ),
    Mutant(
        "weighted-pairs-shifted",
        "resdsl/layers.py",
        'return " + ".join(f"{w} * {v}" for w, v in zip(weights, values, strict=True))',
        'return " + ".join(f"{w} * {v}" for w, v in zip(weights, values[::-1], strict=True))',
        ("tests/test_language3.py::test_weighted_broadcasts_per_channel_weights",),
        "weighted pairs the i-th weight with the i-th value",
    ),
    Mutant(
        "split-reference-first-part",
        "resdsl/layers.py",
        "return torch.split(x, sizes, dim=self.axis)[self.part]",
        "return torch.split(x, sizes, dim=self.axis)[0]",
        ("tests/test_oracle_values.py::test_generated_multi_path_network_matches_the_interpreter",),
        "the interpreter's split gives the node's own part",
    ),
]

#: The rules of issue 21 that the oracle's generated networks must notice on their own,
#: not only the hand-written fixtures of tests/test_survivors.py.
GENERATED_MUST_KILL = (
    "torch-inplace-shared",
    "torch-fold-shared-conv",
    "torch-name-reuse-live-alias",
    "layers-zeropad-round-down",
    "layers-ceil-window-edge",
    "layers-same-padding-dilation",
    "layers-maxpool-even-padding",
)

GENERATED_MUTANTS = [
    Mutant(f"{m.id}@generated", m.file, m.original, m.replacement, (GENERATED,), f"{m.why} (generated networks)")
    for m in MUTANTS_13
    if m.id in GENERATED_MUST_KILL
]

EVERYTHING = f"{ORACLE}::test_every_kind_and_construct_matches_the_reference_interpreter"
SHIPPED_ORACLE = f"{ORACLE}::test_shipped_specs_match_the_reference_interpreter"
SPECS_FIGURES = "tests/test_specs.py::test_paper_layout_params_and_macs"
TORCHVISION_FIGURES = "tests/test_specs.py::test_torchvision_layout_matches_torchvision_metadata"
DIAGNOSTICS = "tests/test_diagnostics.py::test_golden_diagnostic"
SCHEDULE = "tests/test_train_options.py::test_step_schedule_with_the_papers_constant_warmup"
COSINE = "tests/test_train_options.py::test_cosine_schedule_after_a_linear_warmup"
FMT_LAYOUT = "tests/test_fmt.py"

#: More mutants, over every part of the compiler, the backend and training: the habit
#: the issue asks for. Each is a bug of the kind a developer really writes.
MORE_MUTANTS: list[Mutant] = [
    # layers.py: shape, cost and reference rules
    Mutant(
        "layers-conv-params-ignore-groups",
        "resdsl/layers.py",
        "weights = self.out_channels * (inputs[0][0] // self.groups) * self.kernel[0] * self.kernel[1]",
        "weights = self.out_channels * inputs[0][0] * self.kernel[0] * self.kernel[1]",
        (_s("test_params_are_torchs_own_count_for_grouped_and_biased_layers"), TORCHVISION_FIGURES),
        "a grouped conv has C_in / groups inputs per filter",
    ),
    Mutant(
        "layers-conv-macs-square",
        "resdsl/layers.py",
        "return weights + per_channel * self.out_channels, weights * output[1] * output[2]",
        "return weights + per_channel * self.out_channels, weights * output[1] * output[1]",
        (_s("test_macs_of_a_non_square_input_count_height_and_width"),),
        "a conv's MACs are weights times H' times W'",
    ),
    Mutant(
        "layers-conv-bias-params",
        "resdsl/layers.py",
        "per_channel = int(self.bias) + int(self.standardize)  # a bias, a gain",
        "per_channel = int(self.standardize)  # a bias, a gain",
        (_s("test_params_are_torchs_own_count_for_grouped_and_biased_layers"), SPECS_FIGURES),
        "a conv's bias adds one parameter per output channel",
    ),
    Mutant(
        "layers-fc-bias-params",
        "resdsl/layers.py",
        "return weights + (self.out_features if self.bias else 0), weights",
        "return weights, weights",
        (SPECS_FIGURES,),
        "an fc's bias adds one parameter per output",
    ),
    Mutant(
        "layers-bn-after-flatten-is-2d",
        "resdsl/layers.py",
        'return Ctor("nn.BatchNorm2d" if len(inputs[0]) == 3 else "nn.BatchNorm1d", (inputs[0][0],), options)',
        'return Ctor("nn.BatchNorm2d", (inputs[0][0],), options)',
        (_s("test_a_bn_after_the_flatten_matches_the_interpreter"), EVERYTHING),
        "a BN after the flatten is a BatchNorm1d",
    ),
    Mutant(
        "layers-bn-reference-eps",
        "resdsl/layers.py",
        "normalised = (x - mean.reshape(shape)) / (var.reshape(shape) + self.eps).sqrt()",
        "normalised = (x - mean.reshape(shape)) / (var.reshape(shape) + 1e-3).sqrt()",
        (EVERYTHING,),
        "BN's eps is torch's 1e-5",
    ),
    Mutant(
        "layers-gn-groups-unchecked",
        "resdsl/layers.py",
        '        if channels % self.groups:\n            raise ShapeProblem(\n                f"gn {self.groups}',
        '        if False:\n            raise ShapeProblem(\n                f"gn {self.groups}',
        (_s("test_gn_groups_must_divide_the_channels"),),
        "gn's groups must divide the channels",
    ),
    Mutant(
        "layers-ln-biased-variance",
        "resdsl/layers.py",
        "var = x.var(1, keepdim=True, unbiased=False)",
        "var = x.var(1, keepdim=True, unbiased=True)",
        (EVERYTHING,),
        "a layer norm divides by C, not C - 1",
    ),
    Mutant(
        "layers-leaky-relu-slope-everywhere",
        "resdsl/layers.py",
        "return x.clamp_min(0) + self.slope * x.clamp_max(0)",
        "return x.clamp_min(0) + self.slope * x",
        (EVERYTHING,),
        "leaky ReLU scales only the negative part",
    ),
    Mutant(
        "layers-hardsigmoid-slope",
        "resdsl/layers.py",
        "return (inputs[0] / 6 + 0.5).clamp(0, 1)",
        "return (inputs[0] / 3 + 0.5).clamp(0, 1)",
        (EVERYTHING,),
        "hardsigmoid is relu6(x + 3) / 6",
    ),
    Mutant(
        "layers-eca-padding-k-over-2",
        "resdsl/layers.py",
        'out = _functional().conv1d(rows, tensors["weight"], padding=(self.kernel - 1) // 2)',
        'out = _functional().conv1d(rows, tensors["weight"], padding=self.kernel // 2)',
        (EVERYTHING,),
        "ECA's padding keeps the channel count",
        equivalent="channel_conv's kernel is odd (checked at the spec), and (k - 1) // 2 == k // 2 for odd k",
    ),
    Mutant(
        "layers-pool-padding-bound-strict",
        "resdsl/layers.py",
        "if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:",
        "if padding[0] >= kernel[0] // 2 or padding[1] >= kernel[1] // 2:",
        (SHIPPED_ORACLE,),
        "a pool may pad up to half its kernel, as PyTorch allows",
    ),
    Mutant(
        "layers-avgpool-count-include-pad-dropped",
        "resdsl/layers.py",
        "        if not self.count_include_pad:\n            kwargs += ",
        "        if False:\n            kwargs += ",
        (_s("test_a_padded_average_pool_counts_the_padding_as_asked"), EVERYTHING),
        "count_include_pad=false reaches the module",
    ),
    Mutant(
        "layers-mul-gate-any-size",
        "resdsl/layers.py",
        "gate = len(first) == 3 and other == (first[0], 1, 1)",
        "gate = len(first) == 3 and other[0] == first[0]",
        (_s("test_a_branch_that_is_neither_the_shape_nor_a_gate_is_refused"),),
        "mul takes the same shape or C x 1 x 1",
    ),
    Mutant(
        "layers-cat-channels",
        "resdsl/layers.py",
        "return (sum(shape[0] for shape in inputs), *first[1:])",
        "return (first[0] * len(inputs), *first[1:])",
        (EVERYTHING,),
        "cat's channels are the sum of its inputs'",
    ),
    Mutant(
        "layers-flatten-channels-only",
        "resdsl/layers.py",
        "return (math.prod(inputs[0]),)",
        "return (inputs[0][0],)",
        (SHAPES_ODD,),
        "flatten keeps C * H * W features",
    ),
    Mutant(
        "layers-window-zero-width-unchecked",
        "resdsl/layers.py",
        "if out_h < 1 or out_w < 1:",
        "if out_h < 1:",
        (_s("test_a_width_that_reaches_zero_is_refused_on_a_non_square_input"),),
        "a window that leaves no columns is refused",
    ),
    Mutant(
        "layers-zeropad-reference-channels-first",
        "resdsl/layers.py",
        "return _functional().pad(x, (0, 0, 0, 0, 0, self.extra_channels))",
        "return _functional().pad(x, (0, 0, 0, 0, self.extra_channels, 0))",
        (SHAPES_ODD,),
        "option A appends the zero channels after the input's",
    ),
    # interpret.py
    Mutant(
        "interpret-always-eval",
        "resdsl/interpret.py",
        "value = layer.reference(inputs, tensors, training)",
        "value = layer.reference(inputs, tensors, False)",
        (EVERYTHING,),
        "the interpreter runs BN on batch statistics in training",
    ),
    Mutant(
        "interpret-inputs-reversed",
        "resdsl/interpret.py",
        "inputs = [values[source] for source in node.inputs]",
        "inputs = [values[source] for source in reversed(node.inputs)]",
        (EVERYTHING,),
        "a node reads its inputs in order (cat's order, mul's broadcast side)",
    ),
    # backends/torch.py and torch_modules.py
    Mutant(
        "torch-iadd-into-the-other-operand",
        "resdsl/backends/torch.py",
        'lines.append(f"    {names[0]} {step.layer.in_place_operator} {names[1]}")',
        'lines.append(f"    {names[1]} {step.layer.in_place_operator} {names[0]}")',
        (EVERYTHING, SHARED_READERS),
        "an in-place add writes into the operand it was planned for",
    ),
    Mutant(
        "torch-inplace-on-a-saved-output",
        "resdsl/backends/torch.py",
        " and _writable(self.graph.node(operand).layer)",
        "",
        (_s("test_in_place_ops_after_outputs_autograd_keeps_give_the_interpreters_gradients"),),
        "nothing overwrites a value autograd kept (sigmoid's, an alias's)",
    ),
    Mutant(
        "torch-inplace-on-the-functions-input",
        "resdsl/backends/torch.py",
        "return operand in local and users",
        "return users",
        (
            _s("test_a_forward_never_overwrites_its_input"),
            f"{ORACLE}::test_a_relu_that_starts_a_block_leaves_its_shortcut_intact",
        ),
        "a forward never overwrites its input, which the caller (a shortcut) still reads",
    ),
    Mutant(
        "torch-fold-keeps-the-bn",
        "resdsl/backends/torch.py",
        'result[f"{record.conv}.weight"] = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))',
        'result[f"{record.conv}.weight"] = weight',
        (EVERYTHING,),
        "a folded BN is removed, not applied twice",
    ),
    Mutant(
        "torch-result-name-reused",
        "resdsl/backends/torch.py",
        "    last_use[result] = len(steps)\n",
        "",
        (EVERYTHING, SHARED_READERS),
        "the returned value's name is live until the return",
        equivalent="every node of a forward reaches its result (the IR has no dead values), so the result's "
        "producer is the last step and no later step can take its name",
    ),
    Mutant(
        "torch-zero-init-misses-the-norm",
        "resdsl/backends/torch.py",
        "                nn.init.zeros_(modules[main.name].weight)",
        "                nn.init.zeros_(modules[main.name].bias)",
        ("tests/test_torch_backend.py::test_zero_init_residual",),
        "zero_init_residual zeroes the last BN's weight (gamma)",
    ),
    Mutant(
        "torch-zeropad-module-ignores-stride",
        "resdsl/backends/torch_modules.py",
        "        if self.stride != (1, 1):\n            x = x[:, :, :: self.stride[0], :: self.stride[1]]",
        "        if False:\n            x = x[:, :, :: self.stride[0], :: self.stride[1]]",
        (SHAPES_ODD,),
        "option A's module subsamples by the stride",
    ),
    Mutant(
        "torch-droppath-unscaled",
        "resdsl/backends/torch_modules.py",
        "return x * mask.div_(keep)",
        "return x * mask",
        ("tests/test_reference_models.py::test_train_mode_with_drop_path_matches_timm_under_one_seed",),
        "drop path scales kept samples by 1 / (1 - p)",
        ci=False,
    ),
    # evaluate.py
    Mutant(
        "evaluate-mod-truncates",
        "resdsl/evaluate.py",
        "                    return a % b\n",
        "                    return a - b * int(a / b)\n",
        (OPERATORS,),
        "% takes the divisor's sign, as Python's",
    ),
    Mutant(
        "evaluate-no-short-circuit",
        "resdsl/evaluate.py",
        '            if first == (expr.op == "or"):\n                return first\n',
        "",
        (_s("test_and_or_short_circuit"),),
        "and/or do not evaluate their right side when the left decides",
    ),
    Mutant(
        "evaluate-int-floors",
        "resdsl/evaluate.py",
        "return int(value)  # toward zero",
        "return math.floor(value)  # toward zero",
        (_s("test_functions_agree_with_python"),),
        "int() rounds toward zero",
    ),
    Mutant(
        "evaluate-int-max-off-by-one",
        "resdsl/evaluate.py",
        "INT_MIN, INT_MAX = -(2**63), 2**63 - 1",
        "INT_MIN, INT_MAX = -(2**63), 2**63",
        (_s("test_the_integer_range_is_64_bits_exactly"),),
        "spec integers are 64-bit",
    ),
    Mutant(
        "evaluate-size-inequality",
        "resdsl/evaluate.py",
        'return (a == b) == (op == "==")',
        "return a == b",
        (_s("test_sizes_compare_with_equal_and_not_equal"),),
        "!= on sizes is the negation of ==",
    ),
    Mutant(
        "evaluate-minimum-inclusive",
        "resdsl/evaluate.py",
        "    if minimum is not None and value < minimum:\n        bound = ",
        "    if minimum is not None and value <= minimum:\n        bound = ",
        (SHIPPED_ORACLE,),
        "a width of 1 is a positive integer",
    ),
    # passes
    Mutant(
        "shortcuts-option-c-identity",
        "resdsl/passes/shortcuts.py",
        'if same and option != "C":',
        "if same:",
        (_s("test_option_c_projects_every_shortcut"),),
        "option C projects even where shapes match",
    ),
    Mutant(
        "shortcuts-stride-floor",
        "resdsl/passes/shortcuts.py",
        "stride = -(-size // target) if target else 0",
        "stride = size // target if target else 0",
        (SHAPES_ODD,),
        "the shortcut's stride maps H onto ceil(H / s)",
    ),
    Mutant(
        "shortcuts-option-a-refuses-same-channels",
        "resdsl/passes/shortcuts.py",
        "if main[0] < source[0]:",
        "if main[0] <= source[0]:",
        (_s("test_option_a_downsamples_without_new_channels"),),
        "option A may downsample without adding channels",
    ),
    Mutant(
        "expand-stride-on-every-repetition",
        "resdsl/passes/expand.py",
        'if index > 0 and "stride" in given:',
        'if index > 1 and "stride" in given:',
        (SPECS_FIGURES,),
        "a stage's stride reaches its first block only",
    ),
    Mutant(
        "cost-stage-output-shape",
        "resdsl/passes/cost.py",
        "output_shape=nodes[-1].shape,",
        "output_shape=nodes[0].shape,",
        ("tests/test_specs.py::test_stage_table_of_resnet34_matches_table1",),
        "a stage's output shape is its last node's",
    ),
    Mutant(
        "naming-blocks-count-labelled",
        "resdsl/passes/naming.py",
        '                local = f"{scope.written}{counter[scope.written]}"',
        '                local = f"{scope.written}{counter[scope.written] - 1}"',
        (_s("test_unlabelled_blocks_inside_blocks_are_numbered_from_one"),),
        "an unlabelled block inside a block is numbered like a layer (se1, se2)",
    ),
    # train/
    Mutant(
        "train-warmup-end-off-by-one",
        "resdsl/train/loop.py",
        "        if iteration < self.warmup_end:\n            if self.warmup_lr",
        "        if iteration <= self.warmup_end:\n            if self.warmup_lr",
        (SCHEDULE,),
        "the warm-up's last iteration is warmup_end - 1",
    ),
    Mutant(
        "train-linear-warmup-from-zero",
        "resdsl/train/loop.py",
        "return self.lr * (iteration + 1) / self.warmup",
        "return self.lr * iteration / self.warmup",
        (COSINE,),
        "the linear warm-up's first step is lr / warmup, not 0",
    ),
    Mutant(
        "train-cosine-span-includes-warmup",
        "resdsl/train/loop.py",
        "span = max(1, self.total - self.warmup_end)",
        "span = max(1, self.total)",
        (COSINE,),
        "the cosine decays over the iterations after the warm-up",
    ),
    Mutant(
        "train-milestone-late",
        "resdsl/train/loop.py",
        "sum(iteration >= milestone for milestone in self.milestones)",
        "sum(iteration > milestone for milestone in self.milestones)",
        (SCHEDULE,),
        "the lr drops at the milestone iteration itself",
    ),
    Mutant(
        "train-warmup-window-not-reset",
        "resdsl/train/loop.py",
        '        window["warm_wrong"].zero_()\n        window["warm_images"] = 0\n',
        "",
        (_s("test_the_warmup_is_judged_on_each_window_of_50_iterations_alone"),),
        "each warm-up judgement reads the last 50 iterations only",
    ),
    Mutant(
        "train-crop-offsets-one-short",
        "resdsl/train/data.py",
        "rows = torch.randint(0, 2 * pad + 1, (count, 1), generator=generator, device=device)",
        "rows = torch.randint(0, 2 * pad, (count, 1), generator=generator, device=device)",
        ("tests/test_train_data.py::test_crops_start_at_every_offset_of_the_padding",),
        "a crop may start at every offset 0..2 * pad",
    ),
    Mutant(
        "train-flip-never",
        "resdsl/train/data.py",
        "flipped = torch.rand((count, 1), generator=generator, device=device) < 0.5",
        "flipped = torch.rand((count, 1), generator=generator, device=device) < 0.0",
        ("tests/test_train_data.py::test_crop_and_flip_takes_shifted_windows_of_the_padded_image",),
        "half the crops are flipped",
    ),
    # fmt.py
    Mutant(
        "fmt-unary-after-comma-spaced",
        "resdsl/fmt.py",
        "if previous.kind in (OP, LPAR, LSQB, COMMA, EQUAL, COLON, LBRACE):",
        "if previous.kind in (OP, LPAR, LSQB, EQUAL, COLON, LBRACE):",
        (FMT_LAYOUT,),
        "a sign after a comma is unary: `conv 3x3, -w` stays joined",
    ),
    Mutant(
        "fmt-no-blank-line-between-definitions",
        "resdsl/fmt.py",
        "            if lead > 0:\n                lines[lead].blank_before = True\n",
        "",
        (FMT_LAYOUT,),
        "one blank line before each top-level definition",
    ),
    Mutant(
        "fmt-wrap-ignores-the-indent",
        "resdsl/fmt.py",
        "if len(indent) + len(text) <= LINE_WIDTH or not breaks:",
        "if len(text) <= LINE_WIDTH or not breaks:",
        (FMT_LAYOUT,),
        "the line width counts the indentation",
    ),
]

MUTANTS: list[Mutant] = [*MUTANTS_13, *GENERATED_MUTANTS, *MORE_MUTANTS]
