"""``resdsl train``, ``resdsl eval`` and ``resdsl plot``.

Registering the commands imports neither torch nor matplotlib: each command imports
what it needs when it runs. Under torchrun only rank 0 prints, errors included.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from resdsl.cli_support import EXIT_OK, EXIT_SPEC, UsageError, add_spec_options, check_path_option, spec_params
from resdsl.errors import SpecError
from resdsl.ir import Limits


def register_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a spec with a recipe (CIFAR-10/100 or image folders); resumable; torchrun for many GPUs",
        description="Train a spec on a data set with a recipe (a shipped name such as cifar10-paper, or a YAML "
        "file). Writes a run folder: recipe.yaml, metrics.csv, checkpoint.pt, best.pt, curves.png. SIGINT or "
        "SIGTERM saves a checkpoint and stops; --resume continues it. See docs/training.md.",
    )
    train.add_argument("spec", metavar="SPEC", help="a .res file, or a shipped spec's name (cifar20)")
    train.add_argument("--data", required=True, metavar="PATH", help="CIFAR's .tar.gz or folder, or an image folder")
    train.add_argument(
        "--recipe", metavar="RECIPE", help="a shipped recipe's name or a YAML file (with --resume: the run's own)"
    )
    train.add_argument("--out", metavar="DIR", type=Path, help="the run folder (default runs/SPEC-RECIPE-TIME)")
    train.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a recipe key, VALUE read as YAML: --set milestones=[200,250] (repeatable)",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument(
        "--init",
        metavar="WEIGHTS",
        help="start from these weights (a state dict, .safetensors, or a run's best.pt or checkpoint.pt) instead "
        "of the spec's initialisation; loaded strictly except the --skip modules",
    )
    train.add_argument(
        "--skip",
        metavar="MODULE",
        action="extend",
        nargs="+",
        default=[],
        help="with --init: modules left at their initialisation (fine-tuning with a new head: --skip fc)",
    )
    train.add_argument(
        "--allow-other-network",
        action="store_true",
        help="with --init: take a run checkpoint's weights even though it trained another network",
    )
    add_spec_options(train)
    train.set_defaults(run=run_train)


def register_eval(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="top-1 (and top-5) error of trained weights on a data set's test split",
        description="Evaluate weights (a run's best.pt or checkpoint.pt, or a plain state dict) on the test split: "
        "top-1 error in percent, top-5 where there are more than 10 classes; image folders also with the "
        "paper's 10-crop testing.",
    )
    evaluate.add_argument("spec", metavar="SPEC", help="a .res file, or a shipped spec's name")
    evaluate.add_argument("--weights", required=True, metavar="FILE", help="best.pt, checkpoint.pt or a state dict")
    evaluate.add_argument("--data", required=True, metavar="PATH", help="the data set, as for resdsl train")
    evaluate.add_argument(
        "--recipe",
        metavar="RECIPE",
        help="for plain state dicts: the recipe that says the data set and its normalisation "
        "(default: cifar10-paper, cifar100-paper or imagenet-paper by the data's layout)",
    )
    evaluate.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="which split (default test); an image folder's val/ is both its val and its test split",
    )
    evaluate.add_argument("--batch-size", type=int, metavar="N", help="images per batch (default the recipe's)")
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    evaluate.add_argument(
        "--no-ten-crop", dest="ten_crop", action="store_false", help="image folders: skip the 10-crop testing"
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument(
        "--allow-other-network",
        action="store_true",
        help="score a run checkpoint on a network other than the one it trained (refused by default)",
    )
    add_spec_options(evaluate)
    evaluate.set_defaults(run=run_eval)


def register_plot(commands: argparse._SubParsersAction) -> None:
    plot = commands.add_parser(
        "plot",
        help="training curves of runs, as the paper's Fig. 6 (error against iterations)",
        description="Plot runs' training (dashed) and test (bold) error against iterations, overlaid with a "
        "legend; the format follows -o's extension (.png, .svg, .pdf).",
    )
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR", type=Path, help="run folders of resdsl train")
    plot.add_argument("-o", "--output", required=True, type=Path, metavar="FIG", help="the figure file")
    plot.add_argument(
        "--label",
        action="extend",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="legend entries, one per run in order: --label A B, or --label A --label B",
    )
    plot.add_argument("--ylim", nargs=2, type=float, metavar=("LOW", "HIGH"), help="the error axis, in percent")
    plot.add_argument("--title", help="a title above the plot")
    plot.add_argument("--dpi", type=int, default=100, help="pixels per inch (default 100: 600x450 pixels)")
    plot.set_defaults(run=run_plot)


# ---------------------------------------------------------------------------


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def run_train(args: argparse.Namespace) -> int:
    try:
        return _train(args)
    except SpecError:
        if _rank() == 0:
            raise
        return EXIT_SPEC  # rank 0 reports it


def _train(args: argparse.Namespace) -> int:
    from resdsl.train.recipes import load_recipe

    for option, value in (("SPEC", args.spec), ("--data", args.data), ("--recipe", args.recipe), ("--out", args.out)):
        check_path_option(option, value)
    if args.input is not None:
        # The data decide the input: a spec trained at another size would not be the spec the run folder names.
        raise UsageError(
            "--input does not apply to train: the network takes the spec's own input, which must match the data "
            "(CIFAR: 3x32x32; image folders: crop_size)"
        )
    params = spec_params(args)
    if args.init is not None and args.resume:
        raise UsageError("--init starts a new run from weights; --resume continues a run from its checkpoint")
    if (args.skip or args.allow_other_network) and args.init is None:
        raise UsageError("--skip and --allow-other-network apply to the weights of --init")
    if args.resume:
        if args.out is None:
            raise UsageError("--resume continues the run in --out DIR: name the folder")
        recipe = load_recipe(args.recipe, args.overrides) if args.recipe else _run_recipe(args.out, args.overrides)
    else:
        if args.recipe is None:
            raise UsageError("--recipe is required (a shipped name such as cifar10-paper, or a YAML file)")
        recipe = load_recipe(args.recipe, args.overrides)
        if args.out is not None and (args.out / "checkpoint.pt").exists():
            raise UsageError(f"{args.out} already holds a run: continue it with --resume, or choose another --out")
    out = args.out or Path("runs") / f"{Path(args.spec).stem}-{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"

    from resdsl.train.loop import RunOptions, Trainer

    options = RunOptions(
        spec=args.spec,
        data=args.data,
        recipe=recipe,
        out=out,
        params=params,
        network=args.network,
        resume=args.resume,
        command=shlex.join(["resdsl", *sys.argv[1:]]),
        limits=replace(Limits(), max_layers=args.max_layers),
        init=args.init,
        skip=tuple(args.skip),
        allow_other_network=args.allow_other_network,
    )
    trainer = Trainer(options)
    try:
        return trainer.run()
    finally:
        trainer.release_folder()
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _run_recipe(out: Path, overrides: list[str]):
    import yaml

    from resdsl.train.recipes import apply_override, check_consistency, recipe_from_values
    from resdsl.train.runfiles import MAX_RECORD_BYTES, RunError, read_text, record_values

    record = out / "recipe.yaml"
    if not record.exists():
        raise RunError("no recipe.yaml here: not a run folder", file=str(out), hint="--out names the run to resume")
    text = read_text(record, MAX_RECORD_BYTES, "recipe.yaml")
    try:
        content = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise RunError(f"cannot read the run's recipe: {str(error)[:300]}", file=str(record)) from None
    values, name = record_values(content, record)
    recipe = recipe_from_values(values, name, str(record))
    for override in overrides:
        apply_override(recipe, override)
    check_consistency(recipe)
    return recipe


def run_eval(args: argparse.Namespace) -> int:
    from resdsl.cli_support import compile_from_args

    paths = (("SPEC", args.spec), ("--weights", args.weights), ("--data", args.data), ("--recipe", args.recipe))
    for option, value in paths:
        check_path_option(option, value)
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be at least 1")
    network = compile_from_args(args.spec, args)

    import torch

    import resdsl
    from resdsl.backends.loading import check_same_network, read_weights
    from resdsl.train.data import Normalizer, open_data
    from resdsl.train.loop import CHECKPOINT_FORMAT, Processes, evaluate, read_checkpoint
    from resdsl.train.recipes import load_recipe, recipe_from_values

    weights = Path(args.weights)
    state = _peek(weights)
    if state is not None and state.get("format") == CHECKPOINT_FORMAT:
        saved = read_checkpoint(weights)
        if not args.allow_other_network:
            check_same_network(network, saved, str(weights))
        recipe = recipe_from_values(saved["recipe"], saved["recipe_name"], str(weights))
        model_state = saved["model"]
        normalizer = Normalizer(saved["normalizer"]["shift"], saved["normalizer"]["scale"])
    else:
        recipe = load_recipe(args.recipe or _default_recipe(Path(args.data)))
        model_state = read_weights(weights)
        normalizer = None  # from the training images, as the recipe says
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no GPU is visible")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    data = open_data(args.data, recipe, device=device, normalizer=normalizer)
    if normalizer is not None:
        from resdsl.train.runfiles import check_normalizer_fits

        check_normalizer_fits(saved["normalizer"], data.input_shape, weights)
    # An image folder's one evaluation split is its val/ folder (training reports it as test): both names take it.
    folder_val = recipe["dataset"] == "imagefolder" and args.split == "val"
    if args.split not in data.splits and not folder_val:
        raise UsageError(f"no '{args.split}' split: this recipe holds out no validation images (holdout: 0)")
    if tuple(data.input_shape) != tuple(network.input_shape) or len(data.classes) != network.output_shape[0]:
        raise UsageError(
            f"{network.name} takes {'x'.join(map(str, network.input_shape))} images and {network.output_shape[0]} "
            f"classes; the data has {'x'.join(map(str, data.input_shape))} and {len(data.classes)}"
        )
    model = resdsl.load(network, weights=model_state, device=device)
    processes = Processes(device=device)
    batch_size = args.batch_size or recipe["eval_batch_size"]

    def autocast():
        import contextlib

        return contextlib.nullcontext()

    results = {"single": evaluate(model, data.eval_batches(args.split, batch_size), processes, autocast)}
    if results["single"]["count"] == 0:
        raise UsageError(f"the '{args.split}' split of {args.data} holds no images: there is no error to report")
    if recipe["dataset"] == "imagefolder" and args.ten_crop:
        batches = data.eval_batches(args.split, max(1, batch_size // 10), ten_crop=True)
        results["ten_crop"] = evaluate(model, batches, processes, autocast)
    top5 = len(data.classes) > 10
    summary = {
        "network": network.name,
        "weights": str(weights),
        "dataset": recipe["dataset"],
        "split": args.split,
        "images": results["single"]["count"],
        "top1_error": round(results["single"]["error"], 4),
        "loss": round(results["single"]["loss"], 6),
    }
    if top5:
        summary["top5_error"] = round(results["single"]["top5_error"], 4)
    if "ten_crop" in results:
        summary["ten_crop_top1_error"] = round(results["ten_crop"]["error"], 4)
        summary["ten_crop_top5_error"] = round(results["ten_crop"]["top5_error"], 4)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return EXIT_OK
    head = f"{network.name} on {recipe['dataset']} {args.split} ({summary['images']:,} images)"
    errors = f"top-1 error {summary['top1_error']:.2f}%"
    if top5:
        errors += f", top-5 error {summary['top5_error']:.2f}%"
    if "ten_crop" in results:
        print(f"{head}, centre crop: {errors}")
        print(
            f"{head}, 10-crop: top-1 error {summary['ten_crop_top1_error']:.2f}%, "
            f"top-5 error {summary['ten_crop_top5_error']:.2f}%"
        )
    else:
        print(f"{head}: {errors}")
    return EXIT_OK


def _peek(weights: Path):
    """The file's top-level dict, if it is a torch.save file (read safely); None otherwise."""
    if weights.suffix == ".safetensors" or not weights.is_file():
        return None
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception:
        return None  # read_weights reports it
    return state if isinstance(state, dict) else None


def _default_recipe(data: Path) -> str:
    if (data / "train").is_dir() and (data / "val").is_dir():
        return "imagenet-paper"
    name = data.name
    if "cifar-100" in name or (data / "cifar-100-python").exists() or (data / "fine_label_names").exists():
        return "cifar100-paper"
    if data.is_dir() and (data / "train").is_file() and (data / "meta").is_file():
        return "cifar100-paper"
    return "cifar10-paper"


def run_plot(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("plotting needs matplotlib: pip install 'resdsl[train]'") from None
    from resdsl.train.plot import plot_runs

    for run in args.runs:
        check_path_option("RUN_DIR", run)
    check_path_option("-o", args.output)
    if args.label and len(args.label) != len(args.runs):
        raise UsageError(f"{len(args.label)} --label for {len(args.runs)} runs: give one per run, or none")
    plot_runs(args.runs, args.output, labels=args.label, ylim=tuple(args.ylim) if args.ylim else None,
              title=args.title, dpi=args.dpi)  # fmt: skip
    print(f"wrote {args.output} ({len(args.runs)} run{'s' if len(args.runs) > 1 else ''})")
    return EXIT_OK
