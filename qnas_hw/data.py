"""Datasets as three disjoint splits: train, validation (for every selection decision) and test (reported once).

The search picks architectures by validation error, so the validation split is
always carved from the *training* file and the test split only ever comes from
the official test file (Iris has none, so a fixed stratified 20% hold-out plays
that role).  Every random choice is driven by the ``seed`` argument through
scikit-learn's ``random_state`` or a ``numpy.random.Generator``; no global RNG
state is read or written.

MNIST and Fashion-MNIST are read from the publishers' IDX gzip files, whose
SHA-256 values are shipped below: a truncated or altered file is refused with a
message naming the file and the ways to fix it, rather than silently training
on garbage.  Files are looked up in ``data_dir``, else ``$QNAS_DATA_DIR``, else
``~/.cache/qnas-hw/datasets`` (honouring ``$XDG_CACHE_HOME``), as
``<dir>/<dataset>/<file>`` or ``<dir>/<file>``.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch and scikit-learn load on first use: validating a config only reads the names below
    from torch.utils.data import TensorDataset

logger = logging.getLogger(__name__)

#: Pure-quantum presets (QuantumNAS's setting): a class subset of an image set, images average-pooled to
#: ``pool x pool`` features in [0, 1] and fed to the circuit without a classical front-end.
#: name -> (image set, classes kept, pooled side)
PURE_QUANTUM: dict[str, tuple[str, tuple[int, ...], int]] = {
    "mnist4": ("mnist", (0, 1, 2, 3), 4),
    "fashion4": ("fashion-mnist", (0, 1, 2, 3), 4),
    "mnist2": ("mnist", (3, 6), 4),
}
#: Bundled with scikit-learn (offline, no download): Iris, and ``digits4``, classes 0-3 of the 8x8 handwritten
#: digits average-pooled to 4x4 = 16 features in [0, 1] (the pure-quantum setting of :data:`PURE_QUANTUM` on data
#: every install has, so the embedded default search runs without any download).
BUNDLED: tuple[str, ...] = ("iris", "digits", "digits4")
DATASET_NAMES: tuple[str, ...] = ("iris", "digits", "digits4", "mnist", "fashion-mnist", *PURE_QUANTUM)
ENV_DATA_DIR = "QNAS_DATA_DIR"

#: Fraction of Iris and digits held out as their test split (neither ships an official test set).
IRIS_TEST_FRACTION = 0.2
#: The Iris test split is drawn with this fixed seed so that runs with different
#: ``seed`` values are still compared on the same test samples.
IRIS_TEST_SEED = 12345

IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

#: Published SHA-256 of the original gzip files (see shared/datasets/README.md).
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

#: Public mirrors, tried in order by ``download=True``.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

_DOWNLOAD_TIMEOUT_S = 60


class DatasetError(ValueError):
    """A dataset that cannot be loaded, with a message saying how to fix it."""


@dataclass(frozen=True)
class DatasetSplits:
    """Train / validation / test ``TensorDataset`` s (X float32, y int64) plus shape facts.

    ``input_shape`` is one sample's shape (``(4,)`` for Iris, ``(1, 28, 28)`` for
    the image sets) so models can be built without looking at the data.
    """

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    n_classes: int
    input_shape: tuple[int, ...]
    #: Row numbers of each split in its source: the training file for train/val,
    #: the test file for test (Iris: the 150-row table for all three).  Kept so a
    #: result can be traced back to exactly the samples it saw.
    indices: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# ----------------------------------------------------------------- locations
def default_data_dir() -> Path:
    """The per-user cache used when neither ``data_dir`` nor ``$QNAS_DATA_DIR`` is given."""
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache else Path.home() / ".cache"
    return base / "qnas-hw" / "datasets"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir`` if given, else ``$QNAS_DATA_DIR``, else :func:`default_data_dir`."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def shared_datasets_dir() -> Path | None:
    """The ``shared/datasets`` folder beside a source checkout (used by tests and CI), or None.

    A checkout at ``<root>/main`` finds ``<root>/shared/datasets``; an installed
    package normally has none and gets None.
    """
    candidate = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fix_hint(name: str, root: Path) -> str:
    return (
        f"put the original {name} IDX gzip files in {root / name} (or {root}), pass another directory "
        f"(data_dir=... / --data-dir DIR / ${ENV_DATA_DIR}=DIR), or fetch them with `[data] download = true` "
        "(download=True in Python)"
    )


def _find_file(name: str, filename: str, root: Path) -> Path | None:
    for candidate in (root / name / filename, root / filename):
        if candidate.is_file():
            return candidate
    return None


def verify_file(name: str, path: Path, root: Path | None = None) -> None:
    """Refuse a file whose SHA-256 differs from the published value (truncated, altered, wrong file)."""
    expected = SHA256[name][path.name]
    actual = sha256_file(path)
    if actual != expected:
        hint = _fix_hint(name, root if root is not None else path.parent)
        raise DatasetError(
            f"{path} is corrupt or not the original {name} file: SHA-256 {actual} != expected {expected}; "
            f"delete it and {hint}"
        )


def _download(name: str, filename: str, dest: Path) -> None:
    """Fetch one file from the first mirror that answers, verify it, then move it into place.

    The download goes to a temporary file in the destination folder so an
    interrupted transfer never leaves a half-written file under the real name.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in MIRRORS[name]:
        url = base + filename
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            logger.info("downloading %s", url)
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
                shutil.copyfileobj(resp, out)
            actual = sha256_file(tmp)
            if actual != SHA256[name][filename]:
                errors.append(f"{url}: SHA-256 mismatch ({actual})")
                continue
            tmp.replace(dest)
            return
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            errors.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DatasetError(
        f"could not download {name}/{filename} into {dest.parent}: " + "; ".join(errors) + f"; instead "
        f"{_fix_hint(name, dest.parent.parent)}"
    )


def locate_idx_files(name: str, data_dir: str | Path | None = None, download: bool = False) -> dict[str, Path]:
    """Paths of the four verified IDX files of ``name``, downloading missing ones when asked."""
    if name not in SHA256:
        raise DatasetError(f"{name!r} has no IDX files; choose one of {sorted(SHA256)}")
    root = resolve_data_dir(data_dir)
    paths: dict[str, Path] = {}
    for key, filename in IDX_FILES.items():
        path = _find_file(name, filename, root)
        if path is None:
            if not download:
                raise DatasetError(
                    f"{name} file {filename} not found in {root / name} or {root}; {_fix_hint(name, root)}"
                )
            path = root / name / filename
            _download(name, filename, path)
        verify_file(name, path, root)
        paths[key] = path
    return paths


# --------------------------------------------------------------------- IDX
def check_data_files(name: str, data_dir: str | Path | None = None, download: bool = False) -> None:
    """Refuse a data set whose files are missing or corrupt, cheaply, before a study or a model exists.

    Bundled sets need no files.  For the IDX-backed ones this locates (and,
    with ``download``, fetches) and checksums the four files, which costs well
    under a second, so a typo in ``--data-dir`` fails before the SuperCircuit trains.
    """
    if name in BUNDLED:
        return
    base = PURE_QUANTUM[name][0] if name in PURE_QUANTUM else name
    locate_idx_files(base, data_dir, download)


def read_idx(path: Path) -> np.ndarray:
    """Decode one gzip IDX file (unsigned-byte payload) into a uint8 array of its stated shape."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path} is not a readable gzip file ({exc}); replace it with the original") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file (header {raw[:4]!r})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DatasetError(f"{path} holds {len(raw) - header} bytes of data; its header {dims} promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_arrays(
    name: str, data_dir: str | Path | None, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    paths = locate_idx_files(name, data_dir, download)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DatasetError(f"{name} {part} split has {n_img} images but {n_lab} labels")
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"]


# ------------------------------------------------------------------ splits
def _check_args(name: str, val_fraction: float, limit_train: int | None, limit_val: int | None) -> None:
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction={val_fraction} must lie strictly between 0 and 1 (e.g. 0.1)")
    for label, value in (("limit_train", limit_train), ("limit_val", limit_val)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DatasetError(f"{label}={value!r} must be a positive integer or None")


def _stratified_subset(idx: np.ndarray, labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """A seeded, class-stratified subset of ``idx`` with ``size`` elements (all of them if size >= len)."""
    if size is None or size >= len(idx):
        return idx
    n_classes = len(np.unique(labels[idx]))
    if size < n_classes:
        raise DatasetError(f"a subset of {size} samples cannot hold all {n_classes} classes; use >= {n_classes}")
    kept, _ = _train_test_split(idx, train_size=size, stratify=labels[idx], random_state=seed)
    return np.sort(kept)


def stratified_subset(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded, class-stratified subset of ``size`` samples (all, in order, when size >= len).

    Validation splits can be ordered by class (Iris): the first N samples
    would score a model on one or two classes only.
    """
    labels = np.asarray(labels).reshape(-1)
    return _stratified_subset(np.arange(len(labels)), labels, size, seed)


def _carve(
    labels: np.ndarray,
    val_fraction: float,
    seed: int,
    limit_train: int | None,
    limit_val: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (train, val), stratified and seeded; then apply the limits."""
    idx = np.arange(len(labels))
    train_idx, val_idx = _train_test_split(idx, test_size=val_fraction, stratify=labels, random_state=seed)
    # Different derived seeds keep the limit subsets independent of the carve itself.
    train_idx = _stratified_subset(np.sort(train_idx), labels, limit_train, seed + 1)
    val_idx = _stratified_subset(np.sort(val_idx), labels, limit_val, seed + 2)
    return train_idx, val_idx


def _train_test_split(*arrays: Any, **options: Any) -> Any:
    """scikit-learn's ``train_test_split``, imported on first use (scikit-learn and scipy take seconds to load)."""
    from sklearn.model_selection import train_test_split as split

    return split(*arrays, **options)


def _tensor_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    import torch
    from torch.utils.data import TensorDataset

    return TensorDataset(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    )


def _load_bundled(
    name: str, val_fraction: float, seed: int, limit_train: int | None, limit_val: int | None, limit_test: int | None
) -> DatasetSplits:
    """Iris or digits4 from scikit-learn: a fixed stratified 20% test hold-out, validation carved from the rest."""
    x, y, n_classes = _bundled_arrays(name)
    rest, test_idx = _train_test_split(
        np.arange(len(y)), test_size=IRIS_TEST_FRACTION, stratify=y, random_state=IRIS_TEST_SEED
    )
    rest = np.sort(rest)
    train_rel, val_rel = _carve(y[rest], val_fraction, seed, limit_train, limit_val)
    train_idx, val_idx = rest[train_rel], rest[val_rel]
    test_idx = _stratified_subset(np.sort(test_idx), y, limit_test, seed + 3)
    if name == "iris":
        # Standardise with training statistics only, so nothing about val/test leaks into the inputs.
        mean = x[train_idx].mean(axis=0)
        std = x[train_idx].std(axis=0)
        std[std == 0] = 1.0
        x = (x - mean) / std
    return DatasetSplits(
        name=name,
        train=_tensor_dataset(x[train_idx], y[train_idx]),
        val=_tensor_dataset(x[val_idx], y[val_idx]),
        test=_tensor_dataset(x[test_idx], y[test_idx]),
        n_classes=n_classes,
        input_shape=(x.shape[1],),
        indices={"train": train_idx, "val": val_idx, "test": test_idx},
    )


def _bundled_arrays(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    if name == "iris":
        from sklearn.datasets import load_iris

        bunch = load_iris()
        return bunch.data.astype(np.float64), bunch.target.astype(np.int64), 3
    from sklearn.datasets import load_digits

    n_class = 4 if name == "digits4" else 10
    bunch = load_digits(n_class=n_class)  # 8x8 images with values 0..16
    images = bunch.images.astype(np.float32) / np.float32(16.0)
    pooled = images.reshape(len(images), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(images), 16)
    return pooled, bunch.target.astype(np.int64), n_class


def _images(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / np.float32(255.0))[:, None, :, :]


def _load_images(
    name: str,
    data_dir: str | Path | None,
    download: bool,
    val_fraction: float,
    seed: int,
    limit_train: int | None,
    limit_val: int | None,
    limit_test: int | None,
) -> DatasetSplits:
    x_train, y_train, x_test, y_test = _load_idx_arrays(name, data_dir, download)
    train_idx, val_idx = _carve(y_train, val_fraction, seed, limit_train, limit_val)
    test_idx = _stratified_subset(np.arange(len(y_test)), y_test, limit_test, seed + 3)
    return DatasetSplits(
        name=name,
        train=_tensor_dataset(_images(x_train[train_idx]), y_train[train_idx]),
        val=_tensor_dataset(_images(x_train[val_idx]), y_train[val_idx]),
        test=_tensor_dataset(_images(x_test[test_idx]), y_test[test_idx]),
        n_classes=int(max(y_train.max(), y_test.max())) + 1,
        input_shape=tuple(int(d) for d in (1, *x_train.shape[1:])),
        indices={"train": train_idx, "val": val_idx, "test": test_idx},
    )


def average_pool(images: np.ndarray, side: int) -> np.ndarray:
    """(N, 28, 28) uint8 images -> (N, side*side) float32 means of equal blocks, in [0, 1] (QuantumNAS's pooling)."""
    n, h, w = images.shape
    if h % side or w % side:
        raise DatasetError(f"{h}x{w} images do not split into {side}x{side} equal blocks; use a divisor of {h}")
    blocks = images.reshape(n, side, h // side, side, w // side).astype(np.float32) / np.float32(255.0)
    return blocks.mean(axis=(2, 4)).reshape(n, side * side)


def _load_pure_quantum(
    name: str,
    data_dir: str | Path | None,
    download: bool,
    val_fraction: float,
    seed: int,
    limit_train: int | None,
    limit_val: int | None,
    limit_test: int | None,
) -> DatasetSplits:
    base, classes, side = PURE_QUANTUM[name]
    x_train, y_train, x_test, y_test = _load_idx_arrays(base, data_dir, download)
    keep_train = np.flatnonzero(np.isin(y_train, classes))
    keep_test = np.flatnonzero(np.isin(y_test, classes))
    relabel = np.zeros(int(max(y_train.max(), y_test.max())) + 1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    ytr, yte = relabel[y_train[keep_train]], relabel[y_test[keep_test]]
    train_rel, val_rel = _carve(ytr, val_fraction, seed, limit_train, limit_val)
    test_rel = _stratified_subset(np.arange(len(yte)), yte, limit_test, seed + 3)
    xtr, xte = average_pool(x_train[keep_train], side), average_pool(x_test[keep_test], side)
    return DatasetSplits(
        name=name,
        train=_tensor_dataset(xtr[train_rel], ytr[train_rel]),
        val=_tensor_dataset(xtr[val_rel], ytr[val_rel]),
        test=_tensor_dataset(xte[test_rel], yte[test_rel]),
        n_classes=len(classes),
        input_shape=(side * side,),
        indices={"train": keep_train[train_rel], "val": keep_train[val_rel], "test": keep_test[test_rel]},
    )


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
) -> DatasetSplits:
    """Load ``name`` ("iris", "digits4", "mnist", "fashion-mnist", or a pure-quantum preset) as disjoint splits.

    Presets (:data:`PURE_QUANTUM`): ``mnist4`` / ``fashion4`` keep classes
    0-3, ``mnist2`` digits 3 and 6 (relabelled 0, 1); images are average-pooled
    to 4x4 = 16 features in [0, 1].  ``digits4`` does the same with
    scikit-learn's bundled 8x8 digits (2x2 blocks), offline.

    ``val_fraction`` of the training file becomes the validation split
    (stratified, seeded by ``seed``).  ``limit_train`` / ``limit_val`` /
    ``limit_test`` take seeded stratified subsets for fast runs; the test split
    is still drawn only from the official test file.  Images are float32 in
    [0, 1] with shape (1, 28, 28); Iris is standardised with training-split
    statistics.  ``data_dir`` is ignored for Iris and digits4 (bundled with scikit-learn).
    """
    _check_args(name, val_fraction, limit_train, limit_val)
    if limit_test is not None and (isinstance(limit_test, bool) or not isinstance(limit_test, int) or limit_test < 1):
        raise DatasetError(f"limit_test={limit_test!r} must be a positive integer or None")
    if name in BUNDLED:
        splits = _load_bundled(name, val_fraction, seed, limit_train, limit_val, limit_test)
    elif name in PURE_QUANTUM:
        splits = _load_pure_quantum(name, data_dir, download, val_fraction, seed, limit_train, limit_val, limit_test)
    else:
        splits = _load_images(name, data_dir, download, val_fraction, seed, limit_train, limit_val, limit_test)
    logger.info("loaded %s: %s", name, splits.sizes())
    return splits
