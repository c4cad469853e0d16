"""The data: CIFAR's published layout (folder and .tar.gz), safe unpickling, augmentation on tensors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from cifar_fixtures import cifar_members, learnable_images, write_cifar

from resdsl.train.data import CifarData, DataError, Normalizer, crop_and_flip, read_cifar
from resdsl.train.recipes import RecipeError, load_recipe


def _cifar32(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, size=count)


@pytest.fixture
def cifar10_arrays():
    return _cifar32(50, 0), _cifar32(20, 1)


def test_cifar10_folder_and_archive_read_alike(tmp_path, cifar10_arrays):
    train, test = cifar10_arrays
    names = [f"name{i}" for i in range(10)]
    folder = write_cifar(tmp_path / "a", "cifar10", train, test, names)
    archive = write_cifar(tmp_path / "b", "cifar10", train, test, names, archive=True)
    assert folder.name == "cifar-10-batches-py" and archive.name == "cifar-10-python.tar.gz"
    for path in (folder, folder.parent, archive, archive.parent):  # the folder, its parent, the archive, its folder
        arrays = read_cifar(path, "cifar10")
        assert torch.equal(arrays.train_images, torch.from_numpy(train[0]))
        assert arrays.train_labels.tolist() == train[1].tolist()
        assert torch.equal(arrays.test_images, torch.from_numpy(test[0]))
        assert arrays.classes == names


def test_cifar_rows_are_red_then_green_then_blue_planes(tmp_path):
    # One pure-red, one pure-blue image: in the published rows the first 1024 values are red.
    images = np.zeros((2, 3, 32, 32), dtype=np.uint8)
    images[0, 0] = 255
    images[1, 2] = 255
    members = cifar_members("cifar10", (images, np.array([0, 1])), (images, np.array([0, 1])), ["a", "b"])
    row = pickle.loads(members["test_batch"], encoding="bytes")[b"data"]
    assert row.shape == (2, 3072) and row[0, :1024].min() == 255 and row[0, 1024:].max() == 0
    path = write_cifar(tmp_path, "cifar10", (images, np.array([0, 1])), (images, np.array([0, 1])), ["a", "b"])
    arrays = read_cifar(path, "cifar10")
    assert arrays.test_images[0, 0].min() == 255 and arrays.test_images[0, 1:].max() == 0
    assert arrays.test_images[1, 2].min() == 255 and arrays.test_images[1, :2].max() == 0


def test_cifar100_reads_fine_labels(tmp_path):
    train, test = _cifar32(30, 2), _cifar32(10, 3)
    train = (train[0], np.arange(30) % 12)
    names = [f"fine{i}" for i in range(12)]
    archive = write_cifar(tmp_path, "cifar100", train, test, names, archive=True)
    arrays = read_cifar(archive, "cifar100")
    assert arrays.train_labels.tolist() == train[1].tolist()
    assert arrays.classes == names


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("ran code",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"")  # found, so data_batch_1 is read first
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(DataError, match=r"refused to load (__builtin__|builtins)\.print"):
        read_cifar(tmp_path, "cifar10")


def test_missing_data_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError) as caught:
        read_cifar(tmp_path, "cifar10")
    assert "expected 'test_batch' in it or in 'cifar-10-batches-py/', or 'cifar-10-python.tar.gz'" in str(caught.value)
    assert "resdsl never downloads" in str(caught.value)


def test_crop_and_flip_takes_shifted_windows_of_the_padded_image():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).view(2, 3, 6, 6).to(torch.uint8)
    generator = torch.Generator().manual_seed(0)
    seen_flip = seen_shift = False
    for _ in range(40):
        crops = crop_and_flip(images, 2, True, generator)
        assert crops.shape == images.shape and crops.dtype == torch.uint8
        padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
        for index in range(2):
            windows = [
                padded[index, :, r : r + 6, c : c + 6].flip(-1) if flipped else padded[index, :, r : r + 6, c : c + 6]
                for r in range(5)
                for c in range(5)
                for flipped in (False, True)
            ]
            matches = [w for w in windows if torch.equal(w, crops[index])]
            assert matches, "every crop is a window of the zero-padded image, possibly mirrored"
            seen_flip |= not torch.equal(crops[index], padded[index, :, 2:8, 2:8]) and any(
                torch.equal(crops[index], padded[index, :, r : r + 6, c : c + 6].flip(-1))
                for r in range(5)
                for c in range(5)
            )
            seen_shift |= not torch.equal(crops[index], images[index])
    assert seen_flip and seen_shift


def test_crops_start_at_every_offset_of_the_padding():
    # A crop of the zero-padded image may start at any of the (2 * pad + 1)^2 offsets, both ends included.
    pad, side = 2, 6
    images = (torch.arange(side * side, dtype=torch.int64).view(1, 1, side, side) + 1).repeat(64, 1, 1, 1)
    padded = torch.nn.functional.pad(images[0], (pad, pad, pad, pad))
    offsets = {(r, c): padded[:, r : r + side, c : c + side] for r in range(2 * pad + 1) for c in range(2 * pad + 1)}
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(8):
        for crop in crop_and_flip(images.to(torch.uint8), pad, False, generator):
            (match,) = [offset for offset, window in offsets.items() if torch.equal(window, crop.to(torch.int64))]
            seen.add(match)
    assert seen == set(offsets), sorted(set(offsets) - seen)


def test_pixel_mean_and_channel_statistics():
    images = torch.randint(0, 256, (64, 3, 4, 4), dtype=torch.uint8)
    pixel = Normalizer.from_images(images, "pixel_mean")
    assert torch.allclose(pixel.shift, images.double().mean(0).float())
    assert torch.allclose(pixel(images).mean(0), torch.zeros(3, 4, 4), atol=1e-5)
    channel = Normalizer.from_images(images, "channel_mean_std")
    normalised = channel(images)
    assert torch.allclose(normalised.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(normalised.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def _data(arrays, holdout=0.1, rank=0, world=1, batch=16):
    return CifarData(
        arrays, device=torch.device("cpu"), seed=7, batch_size=batch, holdout=holdout, pad=1, flip=True,
        normalize="pixel_mean", rank=rank, world=world,
    )  # fmt: skip


def test_holdout_split_and_a_data_stream_that_is_a_function_of_the_iteration(tmp_path):
    names = [f"c{i}" for i in range(4)]
    path = write_cifar(tmp_path, "cifar10", learnable_images(100, 4, 8, 1), learnable_images(40, 4, 8, 2), names)
    arrays = read_cifar(path, "cifar10")
    data = _data(arrays)
    assert (data.train_size, data.split_size("val"), data.split_size("test")) == (90, 10, 40)
    assert data.splits == ("val", "test")
    # The mean is the training part's only: the held-out images are not looked at.
    assert torch.allclose(data.normalizer.shift, data.train_images.double().mean(0).float())
    # A batch depends on the iteration alone, whatever came before (what makes resume exact).
    late_first = data.batch(13)
    for iteration in range(13):
        data.batch(iteration)
    again = data.batch(13)
    assert torch.equal(late_first.inputs, again.inputs) and torch.equal(late_first.labels, again.labels)
    assert not torch.equal(data.batch(12).labels, again.labels)
    # An epoch visits each training image at most once; the next epoch reorders them.
    steps = data.steps_per_epoch(16)
    epoch0 = torch.cat([data.order(0)[s * 16 : (s + 1) * 16] for s in range(steps)])
    assert len(set(epoch0.tolist())) == steps * 16
    assert not torch.equal(data.order(0), data.order(1))


def test_processes_share_out_each_global_batch(tmp_path):
    names = [f"c{i}" for i in range(4)]
    path = write_cifar(tmp_path, "cifar10", learnable_images(96, 4, 8, 1), learnable_images(8, 4, 8, 2), names)
    arrays = read_cifar(path, "cifar10")
    whole = _data(arrays, holdout=0.0)
    halves = [_data(arrays, holdout=0.0, rank=rank, world=2) for rank in (0, 1)]
    for iteration in (0, 5, 9):
        labels = torch.cat([half.batch(iteration).labels for half in halves])
        assert torch.equal(labels, whole.batch(iteration).labels)
    evaluated = sum(len(labels) for half in halves for _, labels in half.eval_batches("test", 3))
    assert evaluated == 8


def test_open_data_checks_what_the_recipe_needs(tmp_path):
    from resdsl.train.data import open_data

    recipe = load_recipe("imagenet-paper", ["holdout=0.1"])
    with pytest.raises(RecipeError, match=r"^--set:1:9: 'holdout' applies to CIFAR"):
        open_data(str(tmp_path), recipe, device=torch.device("cpu"))
