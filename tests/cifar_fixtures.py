"""CIFAR-format data written by the tests: the published python layout, any image size.

The published files are Python 2 pickles (protocol 2) of dicts with bytes keys:
b'data' a uint8 array of N rows, each the red, green and blue planes row-major,
b'labels' (CIFAR-10) or b'fine_labels' and b'coarse_labels' (CIFAR-100) lists of
ints, b'filenames' and b'batch_label'; batches.meta (or meta) names the classes.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

TINY_SPEC = """
network tiny(classes=4) {
    input 3x8x8
    shortcut A
    stem {
        conv 3x3, 8
        bn
        relu
    }
    stage conv2_x: 1 x basic(8)
    stage conv3_x: 1 x basic(16, stride=2)
    head {
        avgpool
        fc classes
    }
}
"""


def learnable_images(count: int, classes: int, side: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images N x 3 x side x side: each class a smooth, mirror-symmetric colour template under noise."""
    templates_rng = np.random.default_rng(1234)  # the same classes in the training and test sets
    coarse = templates_rng.uniform(0, 255, size=(classes, 3, 2, 1))
    coarse = np.concatenate([coarse, coarse[..., ::-1]], axis=3)  # symmetric: flipping keeps the class
    templates = coarse.repeat(side // 2, axis=2).repeat(side // 2, axis=3)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=count)
    noise = rng.normal(0, 60, size=(count, 3, side, side))
    images = np.clip(templates[labels] * 0.7 + 40 + noise, 0, 255).astype(np.uint8)
    return images, labels


def _rows(images: np.ndarray) -> np.ndarray:
    # N x 3 x H x W as it lies: each row the red plane, then green, then blue.
    return images.reshape(len(images), int(np.prod(images.shape[1:])))


def _dump(content: dict) -> bytes:
    return pickle.dumps(content, protocol=2)


def cifar_members(dataset: str, train: tuple, test: tuple, classes: list[str]) -> dict[str, bytes]:
    train_images, train_labels = train
    test_images, test_labels = test
    if dataset == "cifar10":
        members = {}
        for index, part in enumerate(np.array_split(np.arange(len(train_images)), 5), start=1):
            members[f"data_batch_{index}"] = _dump(
                {
                    b"batch_label": f"training batch {index} of 5".encode(),
                    b"labels": [int(v) for v in train_labels[part]],
                    b"data": _rows(train_images[part]),
                    b"filenames": [f"image_{i}.png".encode() for i in part],
                }
            )
        members["test_batch"] = _dump(
            {
                b"batch_label": b"testing batch 1 of 1",
                b"labels": [int(v) for v in test_labels],
                b"data": _rows(test_images),
                b"filenames": [f"test_{i}.png".encode() for i in range(len(test_images))],
            }
        )
        members["batches.meta"] = _dump(
            {
                b"num_cases_per_batch": len(train_images) // 5,
                b"label_names": [name.encode() for name in classes],
                b"num_vis": int(np.prod(train_images.shape[1:])),
            }
        )
        return members

    def split(images, labels, label):
        return _dump(
            {
                b"filenames": [f"{label}_{i}.png".encode() for i in range(len(images))],
                b"batch_label": label.encode(),
                b"fine_labels": [int(v) for v in labels],
                b"coarse_labels": [int(v) // 5 for v in labels],
                b"data": _rows(images),
            }
        )

    return {
        "train": split(train_images, train_labels, "training batch 1 of 1"),
        "test": split(test_images, test_labels, "testing batch 1 of 1"),
        "meta": _dump(
            {
                b"fine_label_names": [name.encode() for name in classes],
                b"coarse_label_names": [f"super{i}".encode() for i in range((len(classes) + 4) // 5)],
            }
        ),
    }


FOLDERS = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz"),
}


def write_cifar(
    root: Path, dataset: str, train: tuple, test: tuple, classes: list[str], *, archive: bool = False
) -> Path:
    """The extracted folder (returned), or with archive=True the .tar.gz as distributed (returned)."""
    folder, archive_name = FOLDERS[dataset]
    members = cifar_members(dataset, train, test, classes)
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        path = root / archive_name
        with tarfile.open(path, "w:gz") as tar:
            for name, content in members.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return path
    directory = root / folder
    directory.mkdir(exist_ok=True)
    for name, content in members.items():
        (directory / name).write_bytes(content)
    return directory


def write_learnable(root: Path, *, train: int = 640, test: int = 256, classes: int = 4, side: int = 8) -> Path:
    """A small CIFAR-10-format set that a tiny residual net learns within a few hundred iterations."""
    names = [f"class{i}" for i in range(classes)]
    return write_cifar(
        root, "cifar10", learnable_images(train, classes, side, 1), learnable_images(test, classes, side, 2), names
    )
