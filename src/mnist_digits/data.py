"""Where the four MNIST files come from, their verification, the splits and tf.data.

Order of sources: a folder the user names (`--data-dir` or `MNIST_DIGITS_DATA`) is used
as it is; otherwise the cache `$KERAS_HOME/datasets/mnist`, filled on first use from a
list of public mirrors. Every file is checked against its published SHA-256 before use,
and a download lands in the cache only after it passed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import idx
from .errors import DataError, first_line

# The canonical files; sha256 of the .gz as published, and of the uncompressed IDX
# content (for folders that hold them unpacked).
FILES = {
    "train_images": (
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}
# keras.datasets.mnist's single-file copy.
KERAS_NPZ = ("mnist.npz", "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1")

# First the mirror TensorFlow Datasets uses, then others with the same files.
MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
)

# Per mirror and file: a stall of DOWNLOAD_TIMEOUT seconds (connecting, or between two
# reads), a download longer than DOWNLOAD_DEADLINE, or more bytes than MAX_DOWNLOAD_BYTES
# (the largest file is 9.9 MB) moves on to the next mirror.
DOWNLOAD_TIMEOUT = 30
DOWNLOAD_DEADLINE = 600
MAX_DOWNLOAD_BYTES = 32 * 2**20

# The most IDX data any MNIST file holds (60,000 images of 28x28): a damaged or hostile file
# in a data folder is never un-gzipped beyond it.
LARGEST_FILE_BYTES = 60_000 * 28 * 28

# The validation split: the last 5,000 of the 60,000 training images (the split of
# the classic Keras/TensorFlow examples). The test set is used only for evaluation.
VALIDATION_SIZE = 5000


@dataclass
class Mnist:
    """MNIST as uint8 arrays: images (n, 28, 28), labels (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: Path
    checksums: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return {
            "train": (self.x_train, self.y_train),
            "validation": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }[name]

    def subset(self, train: int, test: int | None = None) -> "Mnist":
        """The first `train` training images (validation and test cut alike); for quick runs."""
        test = test or train
        return Mnist(
            self.x_train[:train], self.y_train[:train],
            self.x_val[: max(train // 10, 1)], self.y_val[: max(train // 10, 1)],
            self.x_test[:test], self.y_test[:test],
            self.source, self.checksums,
        )


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest() if hasattr(
            hashlib, "file_digest"
        ) else hashlib.sha256(handle.read()).hexdigest()


def cache_dir() -> Path:
    """`$KERAS_HOME/datasets/mnist`, the cache keras.datasets uses (~/.keras by default)."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(keras_home) / "datasets" / "mnist"


def _unpacked_names(gz_name: str) -> tuple[str, str]:
    stem = gz_name[: -len(".gz")]  # train-images-idx3-ubyte
    return stem, stem.replace("-idx", ".idx")  # and the original train-images.idx3-ubyte


def _find_file(folder: Path, key: str) -> tuple[Path, str] | None:
    """The file for `key` in `folder` and the sha256 it must have, or None."""
    gz_name, gz_sha, raw_sha = FILES[key]
    if (folder / gz_name).is_file():
        return folder / gz_name, gz_sha
    for name in _unpacked_names(gz_name):
        if (folder / name).is_file():
            return folder / name, raw_sha
    return None


def _checksum_error(path: Path, actual_sha: str, expected_sha: str, fix: str) -> DataError:
    return DataError(
        f"{path}: checksum mismatch (sha256 {actual_sha[:12]}..., expected {expected_sha[:12]}...); "
        f"the file is damaged or not the canonical MNIST file: {fix}"
    )


def _check_shapes(images: np.ndarray, labels: np.ndarray, where: str, split: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise DataError(f"{where}: {split} arrays have dimensions {images.shape} and {labels.shape}, "
                        "expected (n, 28, 28) and (n,)")
    if len(images) != len(labels):
        raise DataError(
            f"{where}: {len(images)} {split} images but {len(labels)} labels; "
            "the files do not belong together: replace them with the canonical MNIST files"
        )


def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    actual_sha = sha256_of(path)
    if actual_sha != KERAS_NPZ[1]:
        raise _checksum_error(path, actual_sha, KERAS_NPZ[1], "replace it with keras.datasets' mnist.npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path}: not a readable Keras mnist.npz ({error})") from None
    for split in ("train", "test"):
        _check_shapes(arrays[f"x_{split}"], arrays[f"y_{split}"], str(path), split)
    return arrays, {path.name: actual_sha}


def _load_idx_folder(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read the four files, each checked against its SHA-256 before anything parses or
    un-gzips it. Only when a checksum fails are the files parsed -- bounded, to at most the
    size of MNIST's largest file -- to name the most specific fault there is: the format
    (truncated, not gzip, wrong magic or dimensions), then images and labels that disagree
    in count, and last the checksum itself."""
    found = {}
    for key in FILES:
        found[key] = _find_file(folder, key)
        if found[key] is None:
            raise DataError(
                f"{folder}: {FILES[key][0]} (or its unpacked form) is missing; put all four "
                "MNIST files there, or leave out --data-dir/MNIST_DIGITS_DATA to download them"
            )
    mismatches = [(path, actual_sha, expected_sha) for path, expected_sha in found.values()
                  if (actual_sha := sha256_of(path)) != expected_sha]
    read = {"train_images": idx.read_images, "test_images": idx.read_images,
            "train_labels": idx.read_labels, "test_labels": idx.read_labels}
    arrays = {key: read[key](path, max_bytes=LARGEST_FILE_BYTES) for key, (path, _) in found.items()}
    arrays = {"x_train": arrays["train_images"], "y_train": arrays["train_labels"],
              "x_test": arrays["test_images"], "y_test": arrays["test_labels"]}
    for split in ("train", "test"):
        _check_shapes(arrays[f"x_{split}"], arrays[f"y_{split}"], str(folder), split)
    for path, actual_sha, expected_sha in mismatches:
        raise _checksum_error(path, actual_sha, expected_sha, "delete it and run `mnist-digits data` again")
    return arrays, {path.name: expected_sha for path, expected_sha in found.values()}


def _has_any_files(folder: Path) -> bool:
    return (folder / KERAS_NPZ[0]).is_file() or any(_find_file(folder, key) for key in FILES)


class DownloadRefused(Exception):
    """A mirror that sends too much or too slowly; the next mirror is tried."""


def _fetch(url: str, target: Path) -> None:
    """Stream `url` into `target`, giving up on a mirror that stalls (no byte for
    DOWNLOAD_TIMEOUT seconds), drags on (past DOWNLOAD_DEADLINE) or sends more than
    MAX_DOWNLOAD_BYTES -- so the next mirror gets its turn instead of a hang."""
    from tqdm import tqdm

    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(target, "wb") as out:
        declared = int(response.headers.get("Content-Length") or 0)
        if declared > MAX_DOWNLOAD_BYTES:
            raise DownloadRefused(f"{declared:,} bytes, over the limit of {MAX_DOWNLOAD_BYTES:,}")
        # A progress bar on terminals only (disable=None).
        with tqdm(total=declared or None, unit="B", unit_scale=True, desc=target.name,
                  disable=None, leave=False) as bar:
            while chunk := response.read(2**16):
                if out.tell() + len(chunk) > MAX_DOWNLOAD_BYTES:
                    raise DownloadRefused(f"more than the limit of {MAX_DOWNLOAD_BYTES:,} bytes")
                if time.monotonic() > deadline:
                    raise DownloadRefused(f"slower than {DOWNLOAD_DEADLINE} s for one file")
                out.write(chunk)
                bar.update(len(chunk))


def download(folder: Path, mirrors: list[str]) -> None:
    """Fetch the missing files into `folder` from the first mirror that serves them intact.

    Each download goes to a temporary folder beside the cache, is checked against its
    SHA-256, and only then is moved in: a damaged or partial file never stays (nor after
    Ctrl-C or SIGTERM, which the command turns into an exception).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create the download cache {folder}: {error.strerror}") from None
    for key, (name, gz_sha, _) in FILES.items():
        target = folder / name
        if target.is_file():
            continue
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
            try:
                fetched = staging / name
                _fetch(url, fetched)
                actual_sha = sha256_of(fetched)
                if actual_sha != gz_sha:
                    failures.append(f"{url}: checksum mismatch (damaged or wrong file)")
                    continue
                os.replace(fetched, target)
                break
            except urllib.error.HTTPError as error:
                failures.append(f"{url}: HTTP {error.code} {error.reason}")
            except urllib.error.URLError as error:  # refused, unknown host, no answer to connect
                failures.append(f"{url}: {error.reason}")
            except TimeoutError:
                failures.append(f"{url}: stalled (nothing for {DOWNLOAD_TIMEOUT} s)")
            except (OSError, ValueError, http.client.HTTPException, DownloadRefused) as error:
                failures.append(f"{url}: {first_line(error)}")  # reset, cut short, disk full, too big
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        else:
            raise DataError(
                f"could not download {name} ({'; '.join(failures)}); it was not cached. "
                "Check the network or pass --mirror URL, or download the four files yourself "
                "and pass --data-dir DIR"
            )


def mirror_list(mirror: str | None = None) -> list[str]:
    first = mirror or os.environ.get("MNIST_DIGITS_MIRROR")
    return ([first] if first else []) + [m for m in MIRRORS if m != first]


def locate(data_dir: str | Path | None = None, mirror: str | None = None) -> Path:
    """The folder the data will be read from, downloading into the cache if needed."""
    named = data_dir or os.environ.get("MNIST_DIGITS_DATA")
    if named:
        folder = Path(named).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"data folder {folder} does not exist; point --data-dir or MNIST_DIGITS_DATA "
                "at the folder holding the MNIST files, or leave both out to download them"
            )
        if not _has_any_files(folder):
            raise DataError(
                f"{folder} holds no MNIST files (expected {', '.join(f[0] for f in FILES.values())} "
                "or mnist.npz); leave out --data-dir/MNIST_DIGITS_DATA to download them"
            )
        return folder
    folder = cache_dir()
    if not (folder / KERAS_NPZ[0]).is_file():
        download(folder, mirror_list(mirror))
    return folder


def load_mnist(data_dir: str | Path | None = None, mirror: str | None = None,
               validation_size: int = VALIDATION_SIZE) -> Mnist:
    """Load MNIST, verified, split into train / validation / test uint8 arrays."""
    folder = locate(data_dir, mirror)
    named = bool(data_dir or os.environ.get("MNIST_DIGITS_DATA"))
    use_npz = (folder / KERAS_NPZ[0]).is_file() and not all(
        _find_file(folder, key) for key in FILES
    )
    try:
        arrays, checksums = _load_npz(folder / KERAS_NPZ[0]) if use_npz else _load_idx_folder(folder)
    except DataError:
        if named:
            raise
        # A damaged file in our own cache: drop it and fetch it once more.
        for key in FILES:
            found = _find_file(folder, key)
            if found and sha256_of(found[0]) != found[1]:
                found[0].unlink()
        download(folder, mirror_list(mirror))
        arrays, checksums = _load_idx_folder(folder)
    x, y = arrays["x_train"], arrays["y_train"]
    cut = len(x) - validation_size
    return Mnist(
        x_train=x[:cut], y_train=y[:cut], x_val=x[cut:], y_val=y[cut:],
        x_test=arrays["x_test"], y_test=arrays["y_test"],
        source=folder, checksums=checksums,
    )


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 pixels 0-255 -> float32 0-1, the scale every model here takes."""
    return images.astype(np.float32) / 255.0


def as_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int,
               shuffle: bool = False, seed: int = 0):
    """A tf.data pipeline: uint8 kept in memory, shuffled per epoch from `seed`,
    batched, scaled to 0-1 inside the graph, prefetched."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))).cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        lambda x, y: (tf.cast(x, tf.float32) / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
