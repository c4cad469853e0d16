"""Training recipes: YAML files of documented, validated keys.

A recipe is found by name among the shipped ones (``resdsl/train/recipes/*.yaml``)
or given by path. Every key is declared once in :data:`KEYS` with its type, default,
meaning and whether it may change when a run resumes; docs/training.md lists them
all (a test keeps it complete). A wrong key or value is a :class:`RecipeError` at its
line in the YAML, or naming the ``--set`` that gave it, with the closest known key as
a hint: never a traceback.

Durations (``iterations``, ``milestones``, ``warmup``, ``eval_every``,
``checkpoint_every``) are a whole number of iterations or a string ``"N epochs"``,
turned into iterations once the data set's size is known.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resdsl.errors import Pos, Source, closest
from resdsl.train.textfiles import RecipeError, read_text

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


# ---------------------------------------------------------------------------
# Value types. Each checker returns the normalised value or raises ValueError with
# a message that completes "'KEY' must be ...".


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Bounds on a recipe (docs/training.md, "Bounds"): the file, a --set value, YAML nesting, any whole number.
MAX_RECIPE_BYTES = 256 << 10
MAX_OVERRIDE_CHARS = 4096
MAX_RECIPE_DEPTH = 16
MAX_WHOLE = 1 << 40


def _int(minimum: int | None = None, maximum: int = MAX_WHOLE) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not _is_int(value):
            raise ValueError("a whole number")
        if minimum is not None and value < minimum:
            raise ValueError(f"a whole number of at least {minimum}")
        if value > maximum:
            raise ValueError(f"a whole number of at most {maximum:,}")
        return value

    return check


def _float(minimum: float | None = None, maximum: float | None = None, open_max: bool = False) -> Callable:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("a number")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError("a finite number")
        too_big = maximum is not None and (value >= maximum if open_max else value > maximum)
        if (minimum is not None and value < minimum) or too_big:
            upper = f" and below {maximum:g}" if open_max else f" and {maximum:g}" if maximum is not None else ""
            between = f"between {minimum:g}{upper}" if maximum is not None else f"at least {minimum:g}"
            raise ValueError(f"a number {between}")
        return value

    return check


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def optional(value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as error:
            raise ValueError(f"{error} or null") from None

    return optional


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return value

    return check


_EPOCHS = re.compile(r"^\s*(\d{1,9}(?:\.\d{0,9})?|\.\d{1,9})\s*(?:epochs?|ep)\s*$")


def _duration(value: Any) -> int | str:
    """A duration: a whole number of iterations, or 'N epochs'."""
    if _is_int(value) and 0 <= value <= MAX_WHOLE:
        return value
    if isinstance(value, str) and _EPOCHS.match(value):
        return value.strip()
    raise ValueError("a whole number of iterations, or a string such as '30 epochs'")


def _durations(value: Any) -> list[int | str]:
    try:
        if not isinstance(value, list):
            raise ValueError
        return [_duration(item) for item in value]
    except ValueError:
        raise ValueError("a list of durations, such as [32000, 48000] or ['30 epochs', '60 epochs']") from None
    if len(value) > 1000:
        raise ValueError("a list of at most 1,000 durations")


def _int_pair(value: Any) -> list[int]:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) and 0 < v <= 4096 for v in value)):
        raise ValueError("a list of two whole numbers from 1 to 4,096 [low, high]")
    if value[0] > value[1]:
        raise ValueError("a list [low, high] with low <= high")
    return list(value)


def _bool_or_auto(value: Any) -> bool | str:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError("true, false or auto")


def _text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 10_000:
        raise ValueError("a string (of at most 10,000 characters)")
    return value


def to_iterations(value: int | str, steps_per_epoch: int) -> int:
    """A duration in iterations: '30 epochs' is 30 times the iterations of one epoch."""
    if isinstance(value, int):
        return value
    match = _EPOCHS.match(value)
    assert match is not None, value  # _duration let nothing else through
    return round(float(match.group(1)) * steps_per_epoch)


# ---------------------------------------------------------------------------
# The keys.


@dataclass(frozen=True)
class Key:
    name: str
    type: str  # as docs/training.md shows it
    default: Any
    doc: str
    check: Callable[[Any], Any] = field(repr=False, compare=False)
    resume_safe: bool = False


def _key(name: str, type: str, default: Any, check: Callable, doc: str, resume_safe: bool = False) -> Key:
    return Key(name, type, default, doc, check, resume_safe)


KEYS: dict[str, Key] = {
    key.name: key
    for key in (
        # What is trained on.
        _key(
            "dataset",
            "`cifar10`, `cifar100` or `imagefolder`",
            "cifar10",
            _choice("cifar10", "cifar100", "imagefolder"),
            "The data set's format: CIFAR-10/100 in their python version (the `.tar.gz` or its folder), or "
            "ImageNet-style folders `train/<class>/*` and `val/<class>/*`.",
        ),
        _key(
            "holdout",
            "number in [0, 1)",
            0.0,
            _float(0.0, 1.0, open_max=True),
            "The fraction of the training set held out as a validation set (chosen by `seed`, reported as "
            "`val_error`); the paper's 45k/5k split is 0.1. CIFAR only.",
        ),
        # The schedule.
        _key(
            "iterations",
            "duration",
            64000,
            _duration,
            "When training stops.",
            resume_safe=True,
        ),
        _key(
            "batch_size",
            "whole number, 1 to 65536",
            128,
            _int(1, 1 << 16),
            "The global mini-batch: split evenly over the processes of a distributed run.",
        ),
        _key("lr", "number >= 0", 0.1, _float(0.0), "The learning rate (for the global batch)."),
        _key(
            "lr_schedule",
            "`step` or `cosine`",
            "step",
            _choice("step", "cosine"),
            "`step`: multiply by `gamma` at each milestone; `cosine`: cosine decay to 0 at `iterations` "
            "(after the warm-up).",
        ),
        _key(
            "milestones",
            "list of durations",
            [32000, 48000],
            _durations,
            "Where the `step` schedule multiplies the learning rate by `gamma`.",
            resume_safe=True,
        ),
        _key("gamma", "number >= 0", 0.1, _float(0.0), "The factor applied at each milestone."),
        _key(
            "warmup",
            "duration",
            0,
            _duration,
            "The length of the warm-up (0: none). See `warmup_lr` and `warmup_until_error`.",
        ),
        _key(
            "warmup_lr",
            "number >= 0, or null",
            None,
            _optional(_float(0.0)),
            "A constant learning rate during the warm-up (the paper's 0.01 for ResNet-110); null: a linear "
            "ramp from `lr`/`warmup` up to `lr`.",
        ),
        _key(
            "warmup_until_error",
            "number in [0, 100], or null",
            None,
            _optional(_float(0.0, 100.0)),
            "End the warm-up early once the training error of the last 50 iterations falls below this "
            "percentage (the paper: 80).",
        ),
        # The optimiser (SGD with momentum, as in the paper).
        _key("momentum", "number in [0, 1]", 0.9, _float(0.0, 1.0), "SGD momentum."),
        _key("nesterov", "boolean", False, _bool, "Nesterov momentum."),
        _key("weight_decay", "number >= 0", 1e-4, _float(0.0), "L2 weight decay."),
        _key(
            "no_bias_decay",
            "boolean",
            False,
            _bool,
            "Apply no weight decay to biases and BN parameters (Bag of Tricks, section 3.1).",
        ),
        _key(
            "label_smoothing",
            "number in [0, 1)",
            0.0,
            _float(0.0, 1.0, open_max=True),
            "Label smoothing of the cross-entropy loss.",
        ),
        _key(
            "zero_init_residual",
            "boolean, or null",
            None,
            _optional(_bool),
            "Zero the last BN of every residual branch; null: the spec's setting.",
        ),
        _key(
            "seed",
            "whole number, 0 to 2**63 - 1",
            0,
            _int(0, (1 << 63) - 1),
            "Seeds the initialisation, the split, the data order and the augmentation.",
        ),
        # Augmentation and input.
        _key(
            "pad", "whole number, 0 to 64", 4, _int(0, 64), "CIFAR: zero padding on each side before the random crop."
        ),
        _key("flip", "boolean", True, _bool, "A random horizontal flip."),
        _key(
            "normalize",
            "`pixel_mean` or `channel_mean_std`",
            "pixel_mean",
            _choice("pixel_mean", "channel_mean_std"),
            "`pixel_mean`: subtract the training set's per-pixel mean (the paper); `channel_mean_std`: "
            "subtract each channel's mean and divide by its standard deviation.",
        ),
        _key(
            "scale",
            "list [low, high] of whole numbers",
            [256, 480],
            _int_pair,
            "Image folders: the shorter side is resized to a random length in [low, high] before the crop.",
        ),
        _key(
            "crop_size",
            "whole number, 1 to 1024",
            224,
            _int(1, 1024),
            "Image folders: the side of the random (training) and centre (test) crop.",
        ),
        _key(
            "test_resize",
            "whole number, 1 to 4096",
            256,
            _int(1, 4096),
            "Image folders: the shorter side before the test crops.",
        ),
        _key(
            "color",
            "`none` or `pca`",
            "none",
            _choice("none", "pca"),
            "Image folders: `pca` is AlexNet's colour augmentation (lighting noise along the principal "
            "components of ImageNet's RGB values, standard deviation 0.1).",
        ),
        _key(
            "mean_samples",
            "whole number, 1 to 10^7",
            10000,
            _int(1, 10_000_000),
            "Image folders: how many training images (centre crops) estimate the per-pixel mean.",
        ),
        _key(
            "workers",
            "whole number, 0 to 256",
            8,
            _int(0, 256),
            "Image folders: data-loading processes per training process.",
            resume_safe=True,
        ),
        # Evaluation and bookkeeping.
        _key(
            "eval_every",
            "duration",
            1000,
            _duration,
            "How often the test (and validation) error is measured and a row written to metrics.csv.",
            resume_safe=True,
        ),
        _key(
            "log_every_seconds",
            "number >= 0",
            60.0,
            _float(0.0),
            "Where the output is not a terminal (a file, a scheduler's log), print a progress line this often "
            "between evaluations (0: never); on a terminal the progress bar shows instead.",
            resume_safe=True,
        ),
        _key(
            "checkpoint_every",
            "duration",
            1000,
            _duration,
            "How often checkpoint.pt is written (also on SIGINT or SIGTERM, and at the end).",
            resume_safe=True,
        ),
        _key(
            "eval_batch_size",
            "whole number, 1 to 65536",
            1000,
            _int(1, 1 << 16),
            "The batch size for evaluation, per process.",
            resume_safe=True,
        ),
        # Speed.
        _key(
            "device",
            "`auto`, `cpu` or `cuda`",
            "auto",
            _choice("auto", "cpu", "cuda"),
            "Where to train; `auto` is `cuda` when a GPU is visible.",
            resume_safe=True,
        ),
        _key(
            "amp",
            "`auto`, `none`, `bf16` or `fp16`",
            "auto",
            _choice("auto", "none", "bf16", "fp16"),
            "Automatic mixed precision: bf16 autocast, or fp16 autocast with a gradient scaler; `auto`: bf16 on a "
            "GPU, none (fp32) on the CPU.",
        ),
        _key(
            "channels_last",
            "boolean or `auto`",
            "auto",
            _bool_or_auto,
            "The channels_last memory format for the model and its inputs; `auto`: on a GPU (where cuDNN's "
            "NHWC kernels are faster), off on the CPU.",
            resume_safe=True,
        ),
        _key(
            "optimizer_kernels",
            "`auto`, `fused`, `foreach` or `for_loop`",
            "auto",
            _choice("auto", "fused", "foreach", "for_loop"),
            "How SGD updates the parameters: one fused kernel, one kernel per operation over all tensors "
            "(`foreach`), or a Python loop over tensors; the same arithmetic. `auto`: fused on a GPU, foreach on "
            "the CPU.",
            resume_safe=True,
        ),
        _key(
            "cuda_graph",
            "boolean or `auto`",
            "auto",
            _bool_or_auto,
            "Capture the whole training step (forward, loss, backward, SGD step, the batch's loss and error "
            "count) once as a CUDA graph and replay it: one launch per step instead of hundreds. The batch is made "
            "beside it (crop, flip and mean subtraction on the GPU, copied into the graph's input). `auto`: on for "
            "one GPU process without fp16, `compile`, activation checkpointing or SyncBatchNorm; off on the CPU.",
            resume_safe=True,
        ),
        _key("compile", "boolean", False, _bool, "Train through `torch.compile`.", resume_safe=True),
        _key(
            "activation_checkpointing",
            "`spec`, `none`, `stage` or `block`",
            "spec",
            _choice("spec", "none", "stage", "block"),
            "Recompute activations in backward to save memory; `spec`: the spec's `checkpoint` setting. "
            "Gradients are unchanged.",
            resume_safe=True,
        ),
        _key(
            "sync_batchnorm",
            "boolean",
            False,
            _bool,
            "Distributed runs: BN statistics over the global batch (SyncBatchNorm) instead of each process's.",
        ),
        _key(
            "description",
            "string",
            "",
            _text,
            "Free text: where the recipe comes from.",
            resume_safe=True,
        ),
    )
}


def defaults() -> dict[str, Any]:
    return {name: _copy(key.default) for name, key in KEYS.items()}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


# ---------------------------------------------------------------------------
# Recipes.


@dataclass
class Recipe:
    """A resolved recipe: every key's value, where each came from, and the recipe's name."""

    name: str
    values: dict[str, Any]
    positions: dict[str, Pos] = field(default_factory=dict)
    origin: str = ""  # the file, or 'shipped recipe NAME'

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def error(self, key: str, message: str, hint: str | None = None) -> RecipeError:
        """An error about a key's value, at the place that set it."""
        return RecipeError(message, self.positions.get(key), hint, file=None if key in self.positions else self.origin)

    def steps(self, key: str, steps_per_epoch: int) -> int:
        return to_iterations(self.values[key], steps_per_epoch)

    def as_yaml(self) -> str:
        return yaml.safe_dump(self.values, sort_keys=False, default_flow_style=None)


def shipped_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def find_recipe(recipe: str) -> Path:
    path = Path(recipe)
    try:
        exists = path.exists()
    except OSError as error:  # a name too long for the OS
        raise RecipeError(f"cannot read the recipe: {error.strerror or error}", file=recipe[:300]) from None
    if path.suffix in (".yaml", ".yml") or exists:
        if not exists:
            raise RecipeError(f"no recipe file '{recipe}'", file=recipe)
        return path  # read_text refuses what is not a regular file, by its kind
    shipped = RECIPES_DIR / f"{recipe}.yaml"
    if shipped.is_file():
        return shipped
    guess = closest(recipe, shipped_recipes())
    hint = f"did you mean '{guess}'?" if guess else "shipped recipes: " + ", ".join(shipped_recipes())
    raise RecipeError(f"no recipe file '{recipe}' and no shipped recipe of that name", hint=hint)


def load_recipe(recipe: str, overrides: list[str] = ()) -> Recipe:
    """The recipe by name or path, with each ``--set KEY=VALUE`` applied in order."""
    path = find_recipe(recipe)
    text = read_text(path, MAX_RECIPE_BYTES, "the recipe", RecipeError)
    shown = path.stem if path.parent == RECIPES_DIR else str(path)
    result = parse_recipe(text, shown, name=path.stem)
    for override in overrides:
        apply_override(result, override)
    check_consistency(result)
    return result


def recipe_from_values(values: Mapping[str, Any], name: str, origin: str) -> Recipe:
    """A recipe saved in a checkpoint, validated again (the file may come from elsewhere)."""
    result = Recipe(name, defaults(), {}, origin)
    for key, value in values.items():
        if key not in KEYS:
            raise _unknown_key(key, None, origin)
        result.values[key] = _checked(key, value, None, origin)
    check_consistency(result)
    return result


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a few hundred bytes of nested aliases (a "billion laughs")
    expand to billions of values, and no recipe value needs one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasFound(event.start_mark, event.end_mark)
        return super().compose_node(parent, index)


class _AliasFound(Exception):
    def __init__(self, start: yaml.Mark, end: yaml.Mark) -> None:
        super().__init__()
        self.start, self.end = start, end


_ALIAS_MESSAGE = "a recipe cannot use YAML anchors or aliases (&name, *name, <<: *name)"
_ALIAS_HINT = "write each value out where it is used"


def parse_recipe(text: str, path: str, name: str = "recipe") -> Recipe:
    source = Source(path, text)
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError(f"the recipe is larger than the limit of {MAX_RECIPE_BYTES:,} bytes", file=path)
    try:
        root = yaml.compose(text, Loader=_NoAliases)
    except _AliasFound as found:
        raise RecipeError(_ALIAS_MESSAGE, _mark_pos(source, found.start, found.end), _ALIAS_HINT) from None
    except RecursionError:
        raise RecipeError(f"the recipe nests deeper than {MAX_RECIPE_DEPTH} levels", file=path) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        pos = _mark_pos(source, mark, mark) if mark else None
        problem = error.problem or error.context or "not valid YAML"
        raise RecipeError(f"not valid YAML: {problem}", pos, file=path) from None
    except yaml.YAMLError as error:
        raise RecipeError(f"not valid YAML: {error}", file=path) from None
    result = Recipe(name, defaults(), {}, path)
    if root is None:
        return result
    _check_depth(root, source)
    if not isinstance(root, yaml.MappingNode):
        raise RecipeError(
            "a recipe is a mapping of keys to values", _node_pos(source, root), "write one 'key: value' per line"
        )
    constructor = yaml.SafeLoader("")
    seen: dict[str, Pos] = {}
    for key_node, value_node in root.value:
        key_pos = _node_pos(source, key_node)
        if not isinstance(key_node, yaml.ScalarNode):
            raise RecipeError("a recipe's keys are plain names", key_pos)
        key = str(key_node.value)
        if key not in KEYS:
            raise _unknown_key(key, key_pos, path)
        if key in seen:
            raise RecipeError(f"'{key}' is set twice", key_pos, f"the first is at line {seen[key].line}")
        seen[key] = key_pos
        value_pos = _node_pos(source, value_node)
        try:
            value = constructor.construct_object(value_node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as error:
            # ValueError: an integer of more than 4,300 digits; the message would quote it.
            raise RecipeError(f"cannot read the value of '{key}': {str(error)[:200]}", value_pos) from None
        result.values[key] = _checked(key, value, value_pos, path)
        result.positions[key] = value_pos
    return result


def apply_override(recipe: Recipe, override: str) -> None:
    """``KEY=VALUE``, VALUE read as YAML (``milestones=[200,250]``, ``warmup_lr=null``)."""
    source = Source("--set", override)
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(
            f"--set expects KEY=VALUE, got '{override}'", Pos(source, 1, 1, 1, len(override) + 1), "e.g. --set lr=0.05"
        )
    key_pos = Pos(source, 1, 1, 1, len(key) + 1)
    if key not in KEYS:
        raise _unknown_key(key[:100], key_pos, "--set")
    if len(override) > MAX_OVERRIDE_CHARS:
        raise RecipeError(f"--set {key}: the value is longer than {MAX_OVERRIDE_CHARS:,} characters", key_pos)
    value_column = len(override) - len(text) + 1
    value_pos = Pos(source, 1, value_column, 1, len(override) + 1)
    try:
        node = yaml.compose(text, Loader=_NoAliases) if text.strip() else None
        if node is not None:
            _check_depth(node, source)
        value = yaml.SafeLoader("").construct_object(node, deep=True) if node is not None else None
    except _AliasFound:
        raise RecipeError(f"--set {key}: {_ALIAS_MESSAGE}", value_pos, _ALIAS_HINT) from None
    except RecursionError:
        raise RecipeError(f"--set {key}: the value nests deeper than {MAX_RECIPE_DEPTH} levels", value_pos) from None
    except (yaml.YAMLError, ValueError, OverflowError) as error:
        raise RecipeError(f"--set {key}: the value is not valid YAML: {str(error)[:200]}", value_pos) from None
    recipe.values[key] = _checked(key, value, value_pos, "--set")
    recipe.positions[key] = value_pos


def check_consistency(recipe: Recipe) -> None:
    """Rules that involve more than one key."""
    milestones = recipe["milestones"]
    kinds = {isinstance(m, int) for m in milestones}
    if len(kinds) == 1 and milestones != sorted(milestones, key=lambda m: to_iterations(m, 1000)):
        raise recipe.error("milestones", "'milestones' must be in increasing order", "e.g. [32000, 48000]")
    if recipe["warmup_until_error"] is not None and recipe["warmup"] == 0:
        raise recipe.error(
            "warmup_until_error",
            "'warmup_until_error' ends a warm-up, but 'warmup' is 0",
            "set warmup to the longest warm-up, e.g. warmup: 2000",
        )


def _checked(key: str, value: Any, pos: Pos | None, origin: str) -> Any:
    try:
        return KEYS[key].check(value)
    except ValueError as error:
        if value is None or isinstance(value, str):
            shown = "null" if value is None else repr(value)
        else:
            shown = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...")
        raise RecipeError(
            f"'{key}' must be {error}, not {shown}",
            pos,
            f"'{key}': {KEYS[key].doc[0].lower()}{KEYS[key].doc[1:]}",
            file=None if pos else origin,
        ) from None


def _check_depth(root: yaml.Node, source: Source) -> None:
    """Refuse YAML nested deeper than MAX_RECIPE_DEPTH (no recipe value nests more than two levels)."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_RECIPE_DEPTH:
            raise RecipeError(f"the recipe nests deeper than {MAX_RECIPE_DEPTH} levels", _node_pos(source, node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((part, depth + 1) for pair in node.value for part in pair)


def _unknown_key(key: str, pos: Pos | None, origin: str) -> RecipeError:
    guess = closest(key, KEYS)
    hint = f"did you mean '{guess}'?" if guess else "the keys are listed in docs/training.md"
    return RecipeError(f"unknown recipe key '{key}'", pos, hint, file=None if pos else origin)


def _mark_pos(source: Source, start: yaml.Mark, end: yaml.Mark) -> Pos:
    end_column = end.column + 1 if end.line == start.line else start.column + 2
    return Pos(source, start.line + 1, start.column + 1, start.line + 1, max(end_column, start.column + 2))


def _node_pos(source: Source, node: yaml.Node) -> Pos:
    return _mark_pos(source, node.start_mark, node.end_mark)
