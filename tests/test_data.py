"""Dataset loading: checksums, file lookup, download fallback and split hygiene.

Real-data tests read the original IDX files from ``../shared/datasets`` beside
the checkout and are skipped (with the reason) only when that folder is absent.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from qnas_hw import data
from qnas_hw.data import (
    IDX_FILES,
    DatasetError,
    load_dataset,
    locate_idx_files,
    read_idx,
    resolve_data_dir,
    shared_datasets_dir,
)

SHARED = shared_datasets_dir()
needs_shared = pytest.mark.skipif(
    SHARED is None or not (SHARED / "mnist").is_dir(),
    reason="shared/datasets (original MNIST IDX files) not found beside the checkout",
)

# Published class counts of the MNIST training file (60,000 images).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _rows(dataset) -> set[bytes]:
    x = dataset.tensors[0].numpy()
    return {row.tobytes() for row in x.reshape(len(x), -1)}


def _write_fake_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for filename in IDX_FILES.values():
        with gzip.open(folder / filename, "wb") as fh:
            fh.write(b"\x00\x00\x08\x01" + (4).to_bytes(4, "big") + bytes([1, 2, 3, 4]))


def test_corrupted_file_is_refused_naming_the_file(tmp_path):
    _write_fake_files(tmp_path / "mnist")
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert "SHA-256" in msg
    assert "download=True" in msg and "QNAS_DATA_DIR" in msg and "--data-dir" in msg


@needs_shared
def test_truncated_copy_of_a_real_file_is_refused(tmp_path):
    for filename in IDX_FILES.values():
        shutil.copy(SHARED / "mnist" / filename, tmp_path / filename)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt"):
        locate_idx_files("mnist", tmp_path)


def test_missing_files_say_where_they_were_looked_for_and_how_to_fix(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz not found" in msg
    assert str(tmp_path / "fashion-mnist") in msg
    assert "download=True" in msg and "QNAS_DATA_DIR" in msg


def test_data_dir_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("QNAS_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("QNAS_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "qnas-hw" / "datasets"


def test_bad_arguments_are_rejected():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DatasetError, match="val_fraction=0"):
        load_dataset("iris", val_fraction=0)
    with pytest.raises(DatasetError, match="limit_train=0"):
        load_dataset("iris", limit_train=0)


@needs_shared
def test_flat_layout_and_env_variable_are_accepted(tmp_path, monkeypatch):
    for filename in IDX_FILES.values():
        os.symlink(SHARED / "mnist" / filename, tmp_path / filename)
    monkeypatch.setenv("QNAS_DATA_DIR", str(tmp_path))
    paths = locate_idx_files("mnist")
    assert paths["train_images"] == tmp_path / "train-images-idx3-ubyte.gz"


@needs_shared
def test_download_falls_back_to_the_next_mirror_and_verifies(tmp_path, monkeypatch):
    # file:// mirrors stand in for the public HTTP ones (no network in tests); the code path is the same urllib one.
    bad = tmp_path / "bad-mirror"
    _write_fake_files(bad)
    good = f"file://{SHARED / 'mnist'}/"
    monkeypatch.setitem(data.MIRRORS, "mnist", (f"file://{tmp_path / 'nowhere'}/", f"file://{bad}/", good))
    target = tmp_path / "data"
    paths = locate_idx_files("mnist", target, download=True)
    assert paths["test_labels"] == target / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert sorted(p.name for p in (target / "mnist").iterdir()) == sorted(IDX_FILES.values())  # no temp files left
    monkeypatch.setitem(data.MIRRORS, "mnist", (f"file://{bad}/",))
    with pytest.raises(DatasetError, match="SHA-256 mismatch"):
        locate_idx_files("mnist", tmp_path / "other", download=True)


@needs_shared
def test_idx_reader_matches_known_facts():
    labels = read_idx(SHARED / "mnist" / "train-labels-idx1-ubyte.gz")
    images = read_idx(SHARED / "mnist" / "train-images-idx3-ubyte.gz")
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first MNIST training labels
    assert np.bincount(labels).tolist() == MNIST_TRAIN_COUNTS


@needs_shared
def test_mnist_splits_are_disjoint_stratified_and_sized():
    splits = load_dataset("mnist", SHARED, val_fraction=0.1, seed=3, limit_train=2000)
    assert splits.sizes() == {"train": 2000, "val": 6000, "test": 10000}
    assert splits.input_shape == (1, 28, 28) and splits.n_classes == 10
    x = splits.train.tensors[0]
    assert x.dtype.is_floating_point and x.shape[1:] == (1, 28, 28)
    assert float(x.min()) >= 0.0 and float(x.max()) == 1.0
    train, val, test = _rows(splits.train), _rows(splits.val), _rows(splits.test)
    assert not train & val and not train & test and not val & test  # the 60,000 MNIST training images are unique
    assert not set(splits.indices["train"].tolist()) & set(splits.indices["val"].tolist())
    # The test split is exactly the official test file, in order.
    official = read_idx(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(splits.test.tensors[0][:, 0].numpy() * 255, official.astype(np.float32))
    # Stratified: every class's share of the limited train split is within one sample of its file share.
    expected = np.array(MNIST_TRAIN_COUNTS) / 60000 * 2000
    assert np.all(np.abs(np.bincount(splits.train.tensors[1].numpy(), minlength=10) - expected) <= 1.0)
    expected_val = np.array(MNIST_TRAIN_COUNTS) / 10
    assert np.all(np.abs(np.bincount(splits.val.tensors[1].numpy(), minlength=10) - expected_val) <= 1.0)


@needs_shared
def test_mnist_splits_are_seeded():
    a = load_dataset("mnist", SHARED, seed=1, limit_train=500, limit_val=200, limit_test=100)
    b = load_dataset("mnist", SHARED, seed=1, limit_train=500, limit_val=200, limit_test=100)
    c = load_dataset("mnist", SHARED, seed=2, limit_train=500, limit_val=200, limit_test=100)
    assert a.sizes() == {"train": 500, "val": 200, "test": 100}
    for part in ("train", "val", "test"):
        assert _rows(getattr(a, part)) == _rows(getattr(b, part))
    assert _rows(a.val) != _rows(c.val)


def test_iris_splits_are_disjoint_and_standardised_on_train_only():
    splits = load_dataset("iris", val_fraction=0.2, seed=0)
    sizes = splits.sizes()
    assert sizes == {"train": 96, "val": 24, "test": 30}
    assert splits.input_shape == (4,) and splits.n_classes == 3
    idx = splits.indices
    # Iris has duplicate rows, so disjointness is checked on row numbers, and the row numbers against the data.
    assert sorted(np.concatenate([idx["train"], idx["val"], idx["test"]]).tolist()) == list(range(150))
    raw = load_iris().data
    x = splits.train.tensors[0].numpy().astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-5)
    mean, std = raw[idx["train"]].mean(axis=0), raw[idx["train"]].std(axis=0)
    for part in ("train", "val", "test"):
        x_part = getattr(splits, part).tensors[0].numpy().astype(np.float64)
        np.testing.assert_allclose(x_part * std + mean, raw[idx[part]], atol=1e-5)
    assert np.bincount(splits.test.tensors[1].numpy()).tolist() == [10, 10, 10]
    # The Iris test split does not move with the seed, so seeds are compared on the same samples.
    other = load_dataset("iris", val_fraction=0.2, seed=7)
    assert other.indices["val"].tolist() != idx["val"].tolist()
    assert other.indices["test"].tolist() == idx["test"].tolist()
    assert other.test.tensors[1].tolist() == splits.test.tensors[1].tolist()


@needs_shared
@pytest.mark.parametrize(("name", "base", "classes"), [("mnist4", "mnist", (0, 1, 2, 3)), ("mnist2", "mnist", (3, 6))])
def test_pure_quantum_presets_pool_and_relabel_the_chosen_classes(name: str, base: str, classes: tuple) -> None:
    """Reference: the official files, pooled by hand (numpy block means) and filtered by label."""
    splits = load_dataset(name, SHARED, val_fraction=0.1, seed=0, limit_train=300, limit_test=200)
    assert splits.input_shape == (16,) and splits.n_classes == len(classes)
    images = read_idx(SHARED / base / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SHARED / base / "t10k-labels-idx1-ubyte.gz")
    rows = splits.indices["test"]
    assert np.isin(labels[rows], classes).all()  # only the chosen classes, from the test file only
    expected = images[rows].reshape(len(rows), 4, 7, 4, 7).mean(axis=(2, 4)).reshape(len(rows), 16) / 255.0
    np.testing.assert_allclose(splits.test.tensors[0].numpy(), expected, atol=1e-6)
    assert splits.test.tensors[1].tolist() == [classes.index(int(v)) for v in labels[rows]]
    train = set(splits.indices["train"].tolist())
    assert not train & set(splits.indices["val"].tolist())  # validation carved from the training file
    assert float(splits.train.tensors[0].max()) <= 1.0 and float(splits.train.tensors[0].min()) >= 0.0


def test_digits4_is_bundled_pooled_and_split_disjointly() -> None:
    """Reference: scikit-learn's 8x8 digits filtered to labels 0-3 and pooled by hand with a Python loop."""
    from sklearn.datasets import load_digits

    splits = load_dataset("digits4", val_fraction=0.2, seed=0)
    assert splits.input_shape == (16,) and splits.n_classes == 4
    bunch = load_digits()
    keep = np.flatnonzero(bunch.target < 4)
    rows = splits.indices["test"]
    images = bunch.images[keep][rows]
    expected = np.array(
        [
            [img[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean() / 16.0 for r in range(4) for c in range(4)]
            for img in images
        ]
    )
    np.testing.assert_allclose(splits.test.tensors[0].numpy(), expected, atol=1e-6)
    assert splits.test.tensors[1].tolist() == bunch.target[keep][rows].tolist()
    parts = [set(splits.indices[p].tolist()) for p in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(map(len, parts)) == len(keep)
    # the test hold-out does not move with the seed (only validation is carved per seed)
    assert load_dataset("digits4", val_fraction=0.2, seed=5).indices["test"].tolist() == rows.tolist()
