"""Hostile input, round 3: training data, recipes and checkpoints (issue 18).

Each case is an attack's minimal form, checked to end in the project's own error
(DataError, RecipeError, RunError: a SpecError naming the file and what is wrong),
never a traceback, an allocation the size of the claim, or a silent wrong result.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_fixtures import cifar_members, learnable_images, write_cifar

from resdsl.errors import SpecError
from resdsl.train.data import DataError, read_cifar
from resdsl.train.recipes import RecipeError, apply_override, load_recipe, parse_recipe
from resdsl.train.runfiles import EVAL_FIELDS, RESUME_FIELDS, RunError, check_checkpoint

CLASSES = ["a", "b", "c", "d"]


def _members() -> dict[str, bytes]:
    return cifar_members("cifar10", learnable_images(20, 4, 8, 1), learnable_images(8, 4, 8, 2), CLASSES)


def _write(tmp_path: Path, members: dict[str, bytes]) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    for name, content in members.items():
        (folder / name).write_bytes(content)
    return folder


def _batch(**changes) -> bytes:
    images, labels = learnable_images(4, 4, 8, 3)
    content = {b"data": images.reshape(4, -1), b"labels": [int(v) for v in labels], b"batch_label": b"x"}
    content.update({k.encode(): v for k, v in changes.items()})
    return pickle.dumps(content, protocol=2)


def _read_with(tmp_path: Path, name: str, content: bytes) -> None:
    members = _members()
    members[name] = content
    read_cifar(_write(tmp_path, members), "cifar10")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 1, 2, 9], "a label is 9, but there are 4 classes"),
        ([0, -1, 2, 3], "labels run from -1"),
        (["0", "1", "2", "3"], "a label is str"),
        ([0, 1, 2, 2**70], "too large for a class number"),
        ("0123", "the labels are str"),
        ([0, 1, 2], "4 images but 3 labels"),
        (np.zeros(4, dtype=np.float32), "not a list of integers"),
    ],
)
def test_labels_are_checked_against_the_class_count(tmp_path: Path, labels, message: str):
    with pytest.raises(DataError, match=message) as caught:
        _read_with(tmp_path, "data_batch_1", _batch(labels=labels))
    assert "data_batch_1" in str(caught.value)


class _Reduced:
    """Pickles as a call of `function` on `args`: how an attacker writes a pickle by hand."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def test_bytes_of_n_is_refused_before_it_allocates(tmp_path: Path):
    # bytes(2_000_000_000) in a few bytes of pickle: two gigabytes if bytes() were called as written.
    bomb = pickle.dumps({b"data": np.zeros((4, 192), np.uint8), b"labels": _Reduced(bytes, 2_000_000_000)}, 2)
    assert len(bomb) < 2000
    with pytest.raises(DataError, match="bytes"):
        _read_with(tmp_path, "data_batch_1", bomb)


def test_a_numpy_reconstruction_without_its_data_is_refused(tmp_path: Path):
    from numpy._core.multiarray import _reconstruct

    # An array of 2,000,000 rows of 192 pixels (384 MB) announced with no pixels at all.
    bomb = pickle.dumps({b"data": _Reduced(_reconstruct, np.ndarray, (2_000_000, 192), b"B"), b"labels": []}, 2)
    assert len(bomb) < 1000
    with pytest.raises(DataError, match="reconstruct"):
        _read_with(tmp_path, "data_batch_1", bomb)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((4, 0), dtype=np.uint8), "not 3 square colour planes"),
        (np.zeros((4, 192), dtype=np.float64), "not N rows of uint8"),
        ([[0] * 192] * 4, "not a numpy array"),
        (np.zeros((4, 3 * 600 * 600), dtype=np.uint8), "larger than the bound"),
    ],
)
def test_pixels_are_checked(tmp_path: Path, data, message: str):
    with pytest.raises(DataError, match=message):
        _read_with(tmp_path, "data_batch_1", _batch(data=data, labels=[0] * len(data)))


def test_class_names_are_checked(tmp_path: Path):
    meta = pickle.dumps({b"label_names": [b"\xff\xfe", b"b"]}, protocol=2)
    with pytest.raises(DataError, match="not UTF-8"):
        _read_with(tmp_path, "batches.meta", meta)
    meta = pickle.dumps({b"label_names": 42}, protocol=2)
    with pytest.raises(DataError, match="class names"):
        _read_with(tmp_path, "batches.meta", meta)


def test_empty_sets_are_refused(tmp_path: Path):
    empty = pickle.dumps({b"data": np.zeros((0, 192), dtype=np.uint8), b"labels": []}, protocol=2)
    with pytest.raises(DataError, match="no images"):
        _read_with(tmp_path, "test_batch", empty)


def test_a_holdout_that_leaves_nothing_to_train_on_is_refused(tmp_path: Path):
    from resdsl.train.data import CifarData

    arrays = read_cifar(_write(tmp_path, _members()), "cifar10")
    with pytest.raises(DataError, match="leaves none to train on"):
        CifarData(arrays, device=torch.device("cpu"), seed=0, batch_size=4, holdout=0.99, pad=0, flip=False,
                  normalize="pixel_mean")  # fmt: skip


def test_a_fifo_named_like_a_cifar_file_is_refused_without_blocking(tmp_path: Path):
    folder = _write(tmp_path, _members())
    (folder / "data_batch_2").unlink()
    os.mkfifo(folder / "data_batch_2")
    with pytest.raises(DataError, match="FIFO"):
        read_cifar(folder, "cifar10")


def test_an_archive_member_claiming_terabytes_is_refused_before_reading(tmp_path: Path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 5 << 30
        tar.addfile(info)  # a header only: the claimed content is never there
    with pytest.raises(DataError):
        read_cifar(archive, "cifar10")


def test_well_formed_sets_still_load(tmp_path: Path):
    arrays = read_cifar(write_cifar(tmp_path, "cifar10", learnable_images(20, 4, 8, 1),
                                    learnable_images(8, 4, 8, 2), CLASSES, archive=True), "cifar10")  # fmt: skip
    assert arrays.train_images.shape == (20, 3, 8, 8) and arrays.classes == CLASSES
    assert arrays.train_labels.dtype == torch.int64 and int(arrays.train_labels.max()) < 4


# ---------------------------------------------------------------------------
# Image folders.


def test_image_folders_refuse_broken_images_bombs_and_empty_classes(tmp_path: Path):
    from PIL import Image

    from resdsl.train.data import MAX_IMAGE_PIXELS, load_image

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="cannot decode") as caught:
        load_image(str(broken))
    assert str(broken) in str(caught.value)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)  # 8 KB on disk, 64 megapixels
    assert MAX_IMAGE_PIXELS < 8000 * 8000
    with pytest.raises(DataError, match="pixels"):
        load_image(str(bomb))
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(DataError, match="FIFO"):
        load_image(str(tmp_path / "pipe.jpg"))

    import torchvision.datasets as datasets

    from resdsl.train.data import _image_folder

    root = tmp_path / "train"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(root / "cat" / "a.png")
    with pytest.raises(DataError, match="cannot use this image folder"):
        _image_folder(datasets, root)


# ---------------------------------------------------------------------------
# Recipes and --set.


@pytest.mark.parametrize(
    "override",
    [
        "seed=" + "9" * 5000,
        "seed=18446744073709551616",
        "pad=100000",
        "batch_size=1000000000",
        "milestones=" + "[" * 3000 + "]" * 3000,
        "iterations=" + "9" * 400,
        "iterations='" + "9" * 400 + " epochs'",
        "description=" + "x" * 5000,
    ],
)
def test_set_values_are_bounded(override: str):
    recipe = load_recipe("cifar10-paper")
    with pytest.raises(RecipeError):
        apply_override(recipe, override)


@pytest.mark.parametrize(
    "text",
    ["seed: " + "9" * 5000, "milestones: " + "[" * 20000 + "]" * 20000, "milestones: " + "[" * 40 + "]" * 40],
)
def test_recipe_files_are_bounded(text: str):
    with pytest.raises(RecipeError):
        parse_recipe(text, "hostile.yaml")


def test_a_recipe_file_over_the_size_bound_is_refused_unread(tmp_path: Path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (300 << 10) + b"\n")
    with pytest.raises(RecipeError, match="larger than the limit"):
        load_recipe(str(path))
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(RecipeError, match="FIFO"):
        load_recipe(str(tmp_path / "pipe.yaml"))


# ---------------------------------------------------------------------------
# Checkpoints.


def _checkpoint() -> dict:
    import random

    model = {"w": torch.zeros(2)}
    return {
        "format": "resdsl-train/1",
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"params": [0]}]},
        "scheduler": {"warmup_end": 0},
        "scaler": {},
        "iteration": 10,
        "seconds": 1.0,
        "best": {"error": 1.0, "iteration": 5, "split": "test"},
        "window": {
            "loss": torch.zeros(()),
            "wrong": torch.zeros(()),
            "images": 0,
            "seconds": 0.0,
            "warm_wrong": torch.zeros(()),
            "warm_images": 0,
        },
        "rng": {"torch": torch.get_rng_state(), "cuda": [], "python": list(random.getstate())},
        "recipe": {},
        "recipe_name": "r",
        "spec": {"name": "n", "path": "p", "num_params": 2, "architecture_sha256": "0" * 64},
        "normalizer": {"shift": torch.zeros(3, 1, 1), "scale": torch.ones(3, 1, 1)},
        "classes": ["a", "b"],
    }


def test_a_whole_checkpoint_passes():
    check_checkpoint(_checkpoint(), Path("checkpoint.pt"), (*EVAL_FIELDS, *RESUME_FIELDS))


@pytest.mark.parametrize("field", [*EVAL_FIELDS[1:], *RESUME_FIELDS])
def test_every_field_removed_or_retyped_is_named(field: str):
    fields = (*EVAL_FIELDS, *RESUME_FIELDS)
    state = _checkpoint()
    del state[field]
    with pytest.raises(RunError, match=f"'{field}'"):
        check_checkpoint(state, Path("checkpoint.pt"), fields)
    for wrong in (-1.5, [1], None, b"x"):
        state = _checkpoint()
        state[field] = wrong
        with pytest.raises(RunError, match=f"'{field}'"):
            check_checkpoint(state, Path("checkpoint.pt"), fields)


def test_best_pt_resumed_says_what_it_lacks():
    state = {k: v for k, v in _checkpoint().items() if k in (*EVAL_FIELDS, "iteration", "best")}
    with pytest.raises(RunError, match="'optimizer'") as caught:
        check_checkpoint(state, Path("checkpoint.pt"), (*EVAL_FIELDS, *RESUME_FIELDS))
    assert "resume from checkpoint.pt" in str(caught.value)


def test_a_negative_iteration_is_refused():
    state = _checkpoint()
    state["iteration"] = -5
    with pytest.raises(RunError, match="'iteration'"):
        check_checkpoint(state, Path("checkpoint.pt"), (*EVAL_FIELDS, *RESUME_FIELDS))


def test_errors_are_spec_errors():
    assert issubclass(RunError, SpecError) and issubclass(DataError, SpecError) and issubclass(RecipeError, SpecError)


def test_io_is_used(tmp_path: Path):
    # The archive path goes through the same checks as the folder (a sanity check that the fixture's
    # archive reads back through the bounded reader).
    members = _members()
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    assert len(read_cifar(archive, "cifar10").test_labels) == 8


def test_a_sparse_batch_of_gigabytes_is_refused_unread(tmp_path: Path):
    folder = _write(tmp_path, _members())
    with open(folder / "data_batch_3", "r+b") as handle:
        handle.truncate(6 << 30)  # 6 GB that take no disk: refused by its size, before a byte is read
    with pytest.raises(DataError, match="larger than the limit") as caught:
        read_cifar(folder, "cifar10")
    assert "data_batch_3" in str(caught.value)
