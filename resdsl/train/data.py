"""The data: CIFAR-10/100 held on the training device, and ImageNet-style folders.

CIFAR is read from its published python version (the ``.tar.gz`` as distributed, or
the extracted folder) through an unpickler that builds nothing but numpy arrays and
plain containers: a data file never runs code. The whole set stays on the training
device as uint8 tensors; each batch is gathered, padded, cropped and flipped there by
tensor operations, so a GPU never waits on Python workers.

Every random choice of the data is a pure function of (seed, iteration, process):
the order of epoch ``e`` is a permutation seeded by (seed, e), the augmentation of a
batch by (seed, iteration, rank). A resumed run therefore draws exactly what an
uninterrupted one would, and nothing about the data needs saving beyond the
iteration. Image folders seed each sample's transforms the same way.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import random
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from resdsl.errors import SpecError
from resdsl.files import NotRegularFile, TooLarge, kind_of, read_regular_file


class DataError(SpecError):
    """A data set that cannot be read: missing files, a foreign layout, wrong image sizes."""


CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

#: The members of each published archive: training files, test file, metadata file,
#: the label key and the class-name key.
CIFAR_LAYOUT = {
    "cifar10": (
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "batches.meta",
        b"labels",
        b"label_names",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ),
    "cifar100": (
        ["train"],
        "test",
        "meta",
        b"fine_labels",
        b"fine_label_names",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
    ),
}


def mix(*parts: int) -> int:
    """A 63-bit seed from integers, so that streams seeded from (seed, epoch) and (seed, iteration) never overlap."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ---------------------------------------------------------------------------
# Reading CIFAR.


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, strings and numbers: nothing that runs code."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            # How protocol 2 writes bytes under Python 3 (a pure conversion, as the files' own readers do).
            ("_codecs", "encode"),
            ("__builtin__", "bytes"),
            ("builtins", "bytes"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            if name == "bytes":
                return _bytes_from_data
            if name == "_reconstruct":
                return _empty_array
            if name == "encode":
                return _encode_text
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: CIFAR files hold only arrays and lists")


def _bytes_from_data(*args: Any) -> bytes:
    """bytes() as protocol 2 calls it (no arguments, or a str/bytes and an encoding); never bytes(N).

    bytes(2_000_000_000) is a two-gigabyte allocation written in a few bytes of pickle.
    """
    if not args:
        return b""
    if isinstance(args[0], bytes | bytearray) and len(args) == 1:
        return bytes(args[0])
    if isinstance(args[0], str) and len(args) <= 3:
        return args[0].encode(*(str(a) for a in args[1:]))
    if isinstance(args[0], list) and len(args) == 1 and all(isinstance(v, int) and 0 <= v < 256 for v in args[0]):
        return bytes(args[0])
    raise pickle.UnpicklingError("refused bytes() of anything but data (bytes(N) allocates N bytes)")


def _empty_array(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's _reconstruct for ndarray only, of an empty shape: the data comes with the array's state."""
    import numpy as np

    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("refused to reconstruct anything but a numpy ndarray")
    if shape not in ((0,), [0], 0):
        raise pickle.UnpicklingError(f"refused a numpy reconstruction of shape {shape!r} without its data")
    return np.ndarray((0,), dtype)


def _encode_text(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """_codecs.encode as protocol 2 writes bytes: text in latin-1 (no other codec, no compression codecs)."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") not in ("latin1", "utf8", "ascii"):
        raise pickle.UnpicklingError("refused _codecs.encode of anything but text to latin-1")
    return text.encode(str(encoding), "strict")


def _unpickle(data: bytes, shown: str) -> dict:
    try:
        content = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:
        raise DataError(f"cannot read this CIFAR file: {error}", file=shown) from None
    if not isinstance(content, dict):
        raise DataError(f"expected a dict in this CIFAR file, found {type(content).__name__}", file=shown)
    # Files pickled by Python 3 with str keys read the same as the published bytes keys.
    return {key.encode() if isinstance(key, str) else key: value for key, value in content.items()}


#: Bounds on what a CIFAR-format data set may hold (docs/training.md, "Bounds").
MAX_CIFAR_FILE_BYTES = 1 << 30  # one file (the published ones are under 200 MB)
MAX_ARCHIVE_BYTES = 4 << 30  # every member of an archive together, decompressed
MAX_ARCHIVE_MEMBERS = 1000
#: An archive's members together, decompressed, at most this many times the archive's size
#: (or MIN_EXPANSION_BYTES, for small archives of synthetic data, which compress better).
MAX_EXPANSION_RATIO = 20
MIN_EXPANSION_BYTES = 64 << 20
MAX_IMAGE_SIDE = 512
MAX_CLASSES = 100_000


def check_rows(rows: Any, shown: str) -> Any:
    """b'data': a 2-D uint8 array, one row per image, of 3 square planes no wider than the bound."""
    import numpy as np

    if not isinstance(rows, np.ndarray):
        raise DataError(f"b'data' is {type(rows).__name__}, not a numpy array of pixels", file=shown)
    if rows.dtype != np.uint8 or rows.ndim != 2:
        raise DataError(f"b'data' is a {rows.ndim}-D array of {rows.dtype}, not N rows of uint8 pixels", file=shown)
    width = rows.shape[1]
    side = math.isqrt(width // 3)
    if width == 0 or 3 * side * side != width:
        raise DataError(f"rows of {width} values are not 3 square colour planes", file=shown)
    if side > MAX_IMAGE_SIDE:
        raise DataError(f"images of {side}x{side} pixels: larger than the bound of {MAX_IMAGE_SIDE}", file=shown)
    return rows


def check_labels(labels: Any, count: int, shown: str) -> Any:
    """A file's labels: a list (or 1-D integer array) of `count` whole numbers from 0, as int64."""
    import numpy as np

    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"the labels are a {labels.ndim}-D array of {labels.dtype}, not a list of integers",
                            file=shown)  # fmt: skip
        values = labels
    elif isinstance(labels, list | tuple):
        bad = next((v for v in labels if not isinstance(v, int | np.integer) or isinstance(v, bool)), None)
        if bad is not None:
            raise DataError(f"a label is {type(bad).__name__} {str(bad)[:40]!r}, not a whole number", file=shown)
        values = labels
    else:
        raise DataError(f"the labels are {type(labels).__name__}, not a list of integers", file=shown)
    if len(values) != count:
        raise DataError(f"{count:,} images but {len(values):,} labels", file=shown)
    try:
        as_array = np.asarray(values, dtype=np.int64) if len(values) else np.zeros(0, dtype=np.int64)
    except (OverflowError, ValueError):
        raise DataError("a label is too large for a class number", file=shown) from None
    if len(as_array) and (int(as_array.min()) < 0 or int(as_array.max()) >= MAX_CLASSES):
        raise DataError(
            f"labels run from {int(as_array.min())} to {int(as_array.max())}: class numbers are 0 to {MAX_CLASSES - 1}",
            file=shown,
        )
    return as_array


def check_class_names(names: Any, shown: str) -> list[str]:
    if not isinstance(names, list | tuple) or not names or len(names) > MAX_CLASSES:
        raise DataError(f"the class names are not a list of 1 to {MAX_CLASSES:,} names", file=shown)
    classes = []
    for name in names:
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(f"a class name is not UTF-8: {name[:40]!r}", file=shown) from None
        if not isinstance(name, str) or len(name) > 1000:
            raise DataError(f"a class name is {type(name).__name__}, not a short text", file=shown)
        classes.append(name)
    return classes


@dataclass
class CifarArrays:
    train_images: torch.Tensor  # uint8, N x 3 x H x W
    train_labels: torch.Tensor  # int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]


def _member_reader(path: Path, dataset: str):
    """A function from a member name ('data_batch_1') to its bytes, for a folder or a .tar.gz."""
    train_names, first, meta_name, *_, folder_name, archive_name = CIFAR_LAYOUT[dataset]
    wanted = {*train_names, first, meta_name}
    if path.is_dir():
        for candidate in (path, path / folder_name):
            if (candidate / first).is_file():
                return lambda name, root=candidate: _read_file(root / name)
        if (path / archive_name).is_file():
            path = path / archive_name
        else:
            raise DataError(
                f"no {dataset.upper().replace('CIFAR', 'CIFAR-')} files here: expected '{first}' in it or in "
                f"'{folder_name}/', or '{archive_name}'",
                file=str(path),
                hint=f"download the python version from {CIFAR_URL}; resdsl never downloads",
            )
    if not path.exists():
        raise DataError("no such file or folder", file=str(path))
    if not path.is_file():
        raise DataError(f"not a regular file or folder ({_kind(path)})", file=str(path))
    # Read the few members at once: the archive is small enough, and no file is left open.
    # Every size is checked before it is read (a member's header could claim terabytes,
    # and skipping a member of a compressed archive means decompressing it).
    # Images barely compress (CIFAR's .tar.gz is 92% of its contents): a few megabytes that
    # expand to gigabytes are a bomb, refused before the expansion is read into memory.
    expands_to = max(MIN_EXPANSION_BYTES, MAX_EXPANSION_RATIO * path.stat().st_size)
    try:
        with tarfile.open(path, "r:*") as archive:
            contents, seen, total = {}, 0, 0
            while (member := archive.next()) is not None:
                seen += 1
                total += max(member.size, 0)
                if seen > MAX_ARCHIVE_MEMBERS or total > MAX_ARCHIVE_BYTES:
                    raise DataError(
                        f"the archive holds more than {MAX_ARCHIVE_MEMBERS:,} members or {MAX_ARCHIVE_BYTES:,} bytes",
                        file=str(path),
                        hint="CIFAR's archives hold 8 files of under 200 MB; see docs/training.md, Bounds",
                    )
                if total > expands_to:
                    raise DataError(
                        f"the archive expands to more than {expands_to:,} bytes, over {MAX_EXPANSION_RATIO} times "
                        "its own size: no image data compresses that well",
                        file=str(path),
                        hint="see docs/training.md, Bounds",
                    )
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    if member.size > MAX_CIFAR_FILE_BYTES:
                        raise DataError(
                            f"the member '{name}' is larger than the limit of {MAX_CIFAR_FILE_BYTES:,} bytes",
                            file=str(path),
                        )
                    handle = archive.extractfile(member)
                    if handle is not None:
                        contents[name] = handle.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as error:
        raise DataError(f"not a readable tar archive: {error}", file=str(path)) from None

    def read(name: str) -> bytes:
        if name not in contents:
            raise DataError(f"the archive has no member '{name}'", file=str(path), hint=f"expected {archive_name}")
        return contents.pop(name)  # each member is read once: let its bytes go with it

    return read


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise DataError("missing CIFAR file", file=str(path))
    try:
        data = read_regular_file(path, MAX_CIFAR_FILE_BYTES)
    except NotRegularFile as error:
        raise DataError(f"this CIFAR file is {error.kind}, not a regular file", file=str(path)) from None
    except TooLarge as error:
        raise DataError(
            f"a CIFAR file of {error.size:,} bytes is larger than the limit of {MAX_CIFAR_FILE_BYTES:,}", file=str(path)
        ) from None
    except OSError as error:
        raise DataError(f"cannot read this CIFAR file: {error.strerror or error}", file=str(path)) from None
    if len(data) > MAX_CIFAR_FILE_BYTES:
        raise DataError(f"larger than the limit of {MAX_CIFAR_FILE_BYTES:,} bytes for a CIFAR file", file=str(path))
    return data


def _kind(path: Path) -> str:
    try:
        return kind_of(path.stat().st_mode)
    except OSError as error:
        return error.strerror or "unreadable"


def read_cifar(path: str | Path, dataset: str) -> CifarArrays:
    """CIFAR-10 or CIFAR-100 from the published python files (any square image size)."""
    import numpy as np

    train_names, test_name, meta_name, label_key, names_key, *_ = CIFAR_LAYOUT[dataset]
    read = _member_reader(Path(path), dataset)

    def split(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts, labels = [], []
        for name in names:
            shown = f"{path}: {name}"
            content = _unpickle(read(name), shown)
            if b"data" not in content or label_key not in content:
                raise DataError(
                    f"'{name}' lacks the keys b'data' and {label_key!r}", file=str(path), hint=f"see {CIFAR_URL}"
                )
            rows = check_rows(content.pop(b"data"), shown)
            file_labels = check_labels(content[label_key], len(rows), shown)
            if known_classes is not None and len(file_labels) and int(file_labels.max()) >= len(known_classes):
                raise DataError(
                    f"a label is {int(file_labels.max())}, but there are {len(known_classes)} classes (labels 0 "
                    f"to {len(known_classes) - 1})",
                    file=shown,
                )
            if parts and rows.shape[1] != parts[0].shape[1]:
                raise DataError(f"'{name}': its images differ in size from the other files'", file=str(path))
            parts.append(rows)
            labels.append(file_labels)
        width = parts[0].shape[1]
        side = math.isqrt(width // 3)
        if 3 * side * side != width:
            raise DataError(f"rows of {width} values are not 3 square colour planes", file=str(path))
        count = sum(len(rows) for rows in parts)
        if count == 0:
            raise DataError(f"{', '.join(names)}: no images", file=str(path))
        # A row holds the red plane, then green, then blue, each row-major: N x 3 x H x W as it lies.
        # Each file's rows are copied into one tensor and dropped at once: the untouched pages of
        # torch.empty take no memory, so loading never holds two copies of the data set.
        images = torch.empty((count, 3, side, side), dtype=torch.uint8)
        target, start = images.numpy(), 0
        for index, rows in enumerate(parts):
            target[start : start + len(rows)] = rows.reshape(-1, 3, side, side)
            start += len(rows)
            parts[index] = None
        return images, torch.from_numpy(np.concatenate(labels))

    try:
        meta = _unpickle(read(meta_name), f"{path}: {meta_name}")
    except DataError:
        meta = {}
    known_classes = check_class_names(meta[names_key], f"{path}: {meta_name}") if names_key in meta else None
    train_images, train_labels = split(train_names)
    test_images, test_labels = split([test_name])
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError("the training and test images differ in size", file=str(path))
    if known_classes is not None:
        classes = known_classes
    else:
        classes = [str(i) for i in range(int(max(train_labels.max(), test_labels.max())) + 1)]
    for labels, which in ((train_labels, "training"), (test_labels, "test")):
        if int(labels.max()) >= len(classes):
            raise DataError(
                f"a {which} label is {int(labels.max())}, but there are {len(classes)} classes (labels 0 to "
                f"{len(classes) - 1})",
                file=str(path),
            )
    return CifarArrays(train_images, train_labels, test_images, test_labels, classes)


# ---------------------------------------------------------------------------
# Normalisation and augmentation, on the device.


@dataclass
class Normalizer:
    """x = (pixels - shift) * scale, on pixels in 0..255: a per-pixel or per-channel shift."""

    shift: torch.Tensor  # 3 x H x W or 3 x 1 x 1
    scale: torch.Tensor  # 3 x 1 x 1

    @classmethod
    def from_images(cls, images: torch.Tensor, mode: str) -> Normalizer:
        """Statistics of uint8 images N x 3 x H x W."""
        return cls.from_chunks(images.split(1024), mode)  # float64 chunks of 25 MB at 32x32

    @classmethod
    def from_chunks(cls, chunks: Iterable[torch.Tensor], mode: str) -> Normalizer:
        """Statistics of batches of uint8 images, accumulated in float64 without holding them all."""
        total = squares = None
        count = 0
        for chunk in chunks:
            chunk = chunk.double()
            if total is None:
                total = torch.zeros(chunk.shape[1:], dtype=torch.float64, device=chunk.device)
                squares = torch.zeros(chunk.shape[1], dtype=torch.float64, device=chunk.device)
            total += chunk.sum(0)
            squares += chunk.square().sum((0, 2, 3))
            count += len(chunk)
        if total is None or squares is None:
            raise DataError("no training images to take the mean of")
        pixel_mean = total / count
        if mode == "pixel_mean":
            return cls(pixel_mean.float(), torch.full((3, 1, 1), 1 / 255, device=total.device))
        plane = count * total.shape[1] * total.shape[2]
        channel_mean = pixel_mean.mean((1, 2))
        channel_std = (squares / plane - channel_mean.square()).clamp_min(1e-12).sqrt()
        return cls(channel_mean.view(3, 1, 1).float(), (1 / channel_std).view(3, 1, 1).float())

    def to(self, device: torch.device) -> Normalizer:
        return Normalizer(self.shift.to(device), self.scale.to(device))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels.float() - self.shift) * self.scale

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"shift": self.shift.cpu(), "scale": self.scale.cpu()}


def crop_and_flip(images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `pad`, take a random crop of the original size, flip half: one gather.

    The index is one int64 per output pixel position, shared by the channels through an
    expanded view: a quarter of the memory traffic of indexing every element.
    """
    count, channels, height, width = images.shape
    device = images.device
    if pad:
        images = F.pad(images, (pad, pad, pad, pad))
    padded_width = width + 2 * pad
    rows = torch.randint(0, 2 * pad + 1, (count, 1), generator=generator, device=device)
    cols = torch.randint(0, 2 * pad + 1, (count, 1), generator=generator, device=device)
    rows = rows + torch.arange(height, device=device)
    cols = cols + torch.arange(width, device=device)
    if flip:
        flipped = torch.rand((count, 1), generator=generator, device=device) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    spatial = (rows[:, :, None] * padded_width + cols[:, None, :]).view(count, 1, height * width)
    crops = images.reshape(count, channels, -1).gather(2, spatial.expand(count, channels, height * width))
    return crops.view(count, channels, height, width)


# AlexNet's colour augmentation: ImageNet's RGB principal components (as fb.resnet.torch).
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


def pca_lighting(pixels: torch.Tensor, generator: torch.Generator, std: float = 0.1) -> torch.Tensor:
    """Add a random combination of the principal components to each image (pixels in 0..255, float)."""
    device = pixels.device
    alpha = torch.randn((len(pixels), 3), generator=generator, device=device) * std
    values = torch.tensor(PCA_EIGENVALUES, device=device)
    vectors = torch.tensor(PCA_EIGENVECTORS, device=device)
    shift = (alpha * values) @ vectors.T * 255  # N x 3
    return pixels + shift.view(-1, 3, 1, 1)


# ---------------------------------------------------------------------------
# The training data: what the loop asks of either kind.


@dataclass
class Batch:
    iteration: int
    inputs: torch.Tensor  # float, normalised, on the device
    labels: torch.Tensor


class TrainingData:
    """The interface of the loop's data: sizes, batches from any iteration, evaluation splits."""

    classes: list[str]
    input_shape: tuple[int, ...]
    train_size: int
    normalizer: Normalizer
    splits: tuple[str, ...]  # the evaluation splits: ('val', 'test') or ('test',)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.train_size // batch_size)

    def batches(self, start: int, stop: int) -> Iterator[Batch]:  # pragma: no cover - interface
        raise NotImplementedError

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError  # pragma: no cover - interface

    def split_size(self, split: str) -> int:  # pragma: no cover - interface
        raise NotImplementedError


class CifarData(TrainingData):
    """CIFAR as uint8 tensors on the device; each process takes its slice of the global batch."""

    def __init__(
        self,
        arrays: CifarArrays,
        *,
        device: torch.device,
        seed: int,
        batch_size: int,
        holdout: float,
        pad: int,
        flip: bool,
        normalize: str,
        rank: int = 0,
        world: int = 1,
        normalizer: Normalizer | None = None,
    ) -> None:
        self.classes = arrays.classes
        self.device, self.seed, self.pad, self.flip = device, seed, pad, flip
        self.rank, self.world = rank, world
        self.batch_size = batch_size
        self.local_batch = batch_size // world
        count = len(arrays.train_images)
        held = round(count * holdout)
        if held >= count:
            raise DataError(
                f"'holdout' {holdout:g} of {count:,} training images leaves none to train on",
                hint="lower 'holdout' (0.1 holds out a tenth)",
            )
        split_order = torch.randperm(count, generator=torch.Generator().manual_seed(mix(seed, -1)))
        train_index, val_index = split_order[held:].sort().values, split_order[:held].sort().values
        if held:
            self.train_images = arrays.train_images[train_index].to(device)
            self.train_labels = arrays.train_labels[train_index].to(device)
        else:  # the whole set, without a copy of it on the CPU
            self.train_images = arrays.train_images.to(device)
            self.train_labels = arrays.train_labels.to(device)
        self.eval_sets = {"test": (arrays.test_images.to(device), arrays.test_labels.to(device))}
        if held:
            self.eval_sets = {
                "val": (arrays.train_images[val_index].to(device), arrays.train_labels[val_index].to(device)),
                **self.eval_sets,
            }
        self.splits = tuple(self.eval_sets)
        self.train_size = len(self.train_images)
        self.input_shape = tuple(self.train_images.shape[1:])
        self.normalizer = normalizer.to(device) if normalizer else Normalizer.from_images(self.train_images, normalize)
        self.generator = torch.Generator(device=device)
        self._epoch, self._order = -1, None

    def order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            permutation = torch.randperm(
                self.train_size, generator=torch.Generator().manual_seed(mix(self.seed, epoch))
            )
            self._epoch, self._order = epoch, permutation.to(self.device)
        return self._order

    def batch(self, iteration: int) -> Batch:
        steps = self.steps_per_epoch(self.batch_size)
        epoch, step = divmod(iteration, steps)
        start = step * self.batch_size + self.rank * self.local_batch
        index = self.order(epoch)[start : start + self.local_batch]
        self.generator.manual_seed(mix(self.seed, epoch, iteration, self.rank))
        pixels = crop_and_flip(self.train_images[index], self.pad, self.flip, self.generator)
        return Batch(iteration, self.normalizer(pixels), self.train_labels[index])

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        for iteration in range(start, stop):
            yield self.batch(iteration)

    def split_size(self, split: str) -> int:
        return len(self.eval_sets[split][0])

    def eval_batches(self, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.eval_sets[split]
        # Each process evaluates every world-th image; the loop sums the counts over processes.
        images, labels = images[self.rank :: self.world], labels[self.rank :: self.world]
        for start in range(0, len(images), batch_size):
            yield self.normalizer(images[start : start + batch_size]), labels[start : start + batch_size]


# ---------------------------------------------------------------------------
# Image folders (ImageNet).


def _torchvision():
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets
        from torchvision.transforms import v2
    except ImportError:
        raise DataError(
            "image folders need torchvision: pip install 'resdsl[train]'", hint="CIFAR needs nothing more"
        ) from None
    return datasets, v2


def test_transform(resize: int, crop: int, ten_crop: bool = False):
    _, v2 = _torchvision()
    if ten_crop:
        return v2.Compose([v2.PILToTensor(), v2.Resize(resize, antialias=True), v2.TenCrop(crop), _Stack()])
    return v2.Compose([v2.PILToTensor(), v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])


class _Stack:
    def __call__(self, crops: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.stack(crops)


#: Bounds on an image folder's images (docs/training.md, "Bounds").
MAX_IMAGE_FILE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 50_000_000  # 7,000 x 7,000: ImageNet's largest is under 10 megapixels
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _image_folder(datasets: Any, folder: Path) -> Any:
    """torchvision's ImageFolder over regular image files only, read through :func:`load_image`."""

    def is_image(name: str) -> bool:
        if not name.lower().endswith(_IMAGE_SUFFIXES):
            return False
        try:
            return stat.S_ISREG(os.stat(name).st_mode)  # a FIFO named x.jpg would block the reader
        except OSError:
            return False

    try:
        found = datasets.ImageFolder(str(folder), loader=load_image, is_valid_file=is_image)
    except (FileNotFoundError, OSError) as error:  # an empty class folder, no class folders
        raise DataError(f"cannot use this image folder: {error}", file=str(folder)) from None
    if not len(found):
        raise DataError("no images in this folder", file=str(folder))
    return found


def load_image(path: str) -> Any:
    """An RGB image, read from a regular file within the bounds; DataError naming the file otherwise."""
    import warnings

    from PIL import Image

    try:
        data = read_regular_file(path, MAX_IMAGE_FILE_BYTES)
    except NotRegularFile as error:
        raise DataError(f"this image is {error.kind}, not a regular file", file=path) from None
    except TooLarge as error:
        raise DataError(
            f"this image of {error.size:,} bytes is larger than the limit of {MAX_IMAGE_FILE_BYTES:,}", file=path
        ) from None
    except OSError as error:
        raise DataError(f"cannot read this image: {error.strerror or error}", file=path) from None
    if len(data) > MAX_IMAGE_FILE_BYTES:
        raise DataError(f"this image is larger than the limit of {MAX_IMAGE_FILE_BYTES:,} bytes", file=path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"this image is {width}x{height} pixels, more than the bound of {MAX_IMAGE_PIXELS:,}", file=path
                )
            return image.convert("RGB")
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise DataError(f"cannot decode this image: {str(error)[:200]}", file=path) from None


def _reported(loader: Iterable[Any]) -> Iterator[Any]:
    """A loader's batches; an image's DataError raised in a worker process comes out as the worker's message only.

    (DataLoader re-raises a worker's exception with the worker's traceback in its message.)
    """
    try:
        yield from loader
    except DataError as error:
        if "Traceback" not in error.message:
            raise
        raise DataError(error.message.rsplit("DataError: ", 1)[-1].strip()) from None


class _SeededSamples(torch.utils.data.Dataset):
    """Items are (index, seed): the transform draws from generators seeded by the sample's seed."""

    def __init__(self, folder: Any, transform: Any) -> None:
        self.folder, self.transform = folder, transform

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        path, label = self.folder.samples[index]
        image = self.folder.loader(path)
        torch.manual_seed(seed)
        random.seed(seed)
        return self.transform(image), label


class _TrainOrder(torch.utils.data.Sampler):
    """This process's slice of each global batch from `start` to `stop`, with each sample's seed."""

    def __init__(self, size: int, seed: int, batch_size: int, rank: int, world: int, start: int, stop: int) -> None:
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.rank, self.world, self.start, self.stop = rank, world, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        steps = max(1, self.size // self.batch_size)
        local = self.batch_size // self.world
        epoch, order = -1, None
        for iteration in range(self.start, self.stop):
            current, step = divmod(iteration, steps)
            if current != epoch:
                epoch = current
                order = torch.randperm(self.size, generator=torch.Generator().manual_seed(mix(self.seed, epoch)))
            begin = step * self.batch_size + self.rank * local
            yield [(int(i), mix(self.seed, iteration, begin + k)) for k, i in enumerate(order[begin : begin + local])]


class FolderData(TrainingData):
    """ImageNet-style folders ``train/<class>/*`` and ``val/<class>/*`` through torchvision."""

    def __init__(
        self,
        root: str | Path,
        *,
        device: torch.device,
        seed: int,
        batch_size: int,
        recipe: Any,
        rank: int = 0,
        world: int = 1,
        normalizer: Normalizer | None = None,
    ) -> None:
        datasets, v2 = _torchvision()
        root = Path(root)
        for part in ("train", "val"):
            if not (root / part).is_dir():
                raise DataError(
                    f"an image folder needs '{part}/<class>/*' inside it", file=str(root), hint="ImageNet's layout"
                )
        self.device, self.seed, self.batch_size = device, seed, batch_size
        self.rank, self.world, self.local_batch = rank, world, batch_size // world
        self.workers = recipe["workers"]
        self.color = recipe["color"]
        crop, low, high = recipe["crop_size"], *recipe["scale"]
        self.train_folder = _image_folder(datasets, root / "train")
        self.val_folder = _image_folder(datasets, root / "val")
        if self.train_folder.classes != self.val_folder.classes:
            raise DataError("train/ and val/ have different classes", file=str(root))
        self.classes = self.train_folder.classes
        self.train_size = len(self.train_folder)
        self.input_shape = (3, crop, crop)
        self.splits = ("test",)
        train_steps = [
            v2.PILToTensor(),
            v2.RandomShortestSize(list(range(low, high + 1)), antialias=True),
            v2.RandomCrop(crop, pad_if_needed=True),
        ]
        if recipe["flip"]:
            train_steps.append(v2.RandomHorizontalFlip())
        self.train_transform = v2.Compose(train_steps)
        self.test_resize, self.crop = recipe["test_resize"], crop
        self.generator = torch.Generator(device=device)
        self.normalizer = (
            normalizer.to(device) if normalizer else self._estimate_mean(recipe["mean_samples"], recipe["normalize"])
        )

    def _loader(self, dataset: Any, batch_sampler: Any = None, **kwargs: Any) -> Iterator[Any]:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            **kwargs,
        )
        return _reported(loader)

    def _estimate_mean(self, samples: int, mode: str) -> Normalizer:
        chosen = torch.randperm(self.train_size, generator=torch.Generator().manual_seed(mix(self.seed, -2)))
        chosen = chosen[:samples].sort().values.tolist()
        subset = torch.utils.data.Subset(
            _SeededSamples(self.train_folder, test_transform(self.test_resize, self.crop)), [(i, 0) for i in chosen]
        )
        loader = self._loader(subset, batch_size=256)
        return Normalizer.from_chunks((batch.to(self.device) for batch, _ in loader), mode)

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        order = _TrainOrder(self.train_size, self.seed, self.batch_size, self.rank, self.world, start, stop)
        samples = _SeededSamples(self.train_folder, self.train_transform)
        for iteration, (pixels, labels) in enumerate(self._loader(samples, batch_sampler=order), start):
            pixels = pixels.to(self.device, non_blocking=True).float()
            if self.color == "pca":
                self.generator.manual_seed(mix(self.seed, iteration, self.rank, 1))
                pixels = pca_lighting(pixels, self.generator)
            yield Batch(iteration, self.normalizer(pixels), labels.to(self.device, non_blocking=True))

    def split_size(self, split: str) -> int:
        return len(self.val_folder)

    def eval_batches(
        self, split: str, batch_size: int, ten_crop: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        samples = _SeededSamples(self.val_folder, test_transform(self.test_resize, self.crop, ten_crop))
        mine = [(i, 0) for i in range(self.rank, len(self.val_folder), self.world)]
        for pixels, labels in self._loader(torch.utils.data.Subset(samples, mine), batch_size=batch_size):
            yield self.normalizer(pixels.to(self.device, non_blocking=True)), labels.to(self.device)


def open_data(
    path: str,
    recipe: Any,
    *,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    normalizer: Normalizer | None = None,
) -> TrainingData:
    dataset = recipe["dataset"]
    if dataset == "imagefolder":
        if recipe["holdout"]:
            raise recipe.error("holdout", "'holdout' applies to CIFAR; an image folder has its own val/")
        return FolderData(
            path, device=device, seed=recipe["seed"], batch_size=recipe["batch_size"], recipe=recipe,
            rank=rank, world=world, normalizer=normalizer,
        )  # fmt: skip
    arrays = read_cifar(path, dataset)
    return CifarData(
        arrays,
        device=device,
        seed=recipe["seed"],
        batch_size=recipe["batch_size"],
        holdout=recipe["holdout"],
        pad=recipe["pad"],
        flip=recipe["flip"],
        normalize=recipe["normalize"],
        rank=rank,
        world=world,
        normalizer=normalizer,
    )
