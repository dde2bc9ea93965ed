"""Loading MNIST from a folder: the real files, their unpacked form, and damaged copies."""

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_digits import data, idx
from mnist_digits.errors import DataError

REAL = Path(os.environ.get("MNIST_DIGITS_DATA", data.cache_dir()))


def test_real_data_is_verified_and_split(mnist):
    assert (len(mnist.x_train), len(mnist.x_val), len(mnist.x_test)) == (55_000, 5_000, 10_000)
    assert mnist.x_train.shape[1:] == (28, 28) and mnist.x_train.dtype == np.uint8
    assert set(mnist.checksums) == {f[0] for f in data.FILES.values()}
    # The canonical order: first training labels 5 0 4, first test labels 7 2 1.
    assert mnist.y_train[:3].tolist() == [5, 0, 4]
    assert mnist.y_test[:3].tolist() == [7, 2, 1]
    # The validation split is the last 5,000 training images.
    assert np.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def copy_real(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for name, _, _ in data.FILES.values():
        shutil.copy(REAL / name, folder / name)
    return folder


def test_unpacked_files_load_the_same(tmp_path, mnist):
    for name, _, _ in data.FILES.values():
        unpacked = name[:-3].replace("-idx", ".idx")  # the original names: train-images.idx3-ubyte
        (tmp_path / unpacked).write_bytes(gzip.decompress((REAL / name).read_bytes()))
    loaded = data.load_mnist(tmp_path)
    np.testing.assert_array_equal(loaded.x_test, mnist.x_test)
    np.testing.assert_array_equal(loaded.y_train, mnist.y_train)


def damage(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "not gzip":
        path.write_bytes(b"<html>404 Not Found</html>")
    elif how == "wrong magic":
        content = bytearray(gzip.decompress(raw))
        content[3] = 1  # the image file now claims to be 1-dimensional
        path.write_bytes(gzip.compress(bytes(content)))
    elif how == "one bit flipped":
        content = bytearray(gzip.decompress(raw))
        content[1000] ^= 1
        path.write_bytes(gzip.compress(bytes(content)))


@pytest.mark.parametrize("how, reason", [
    ("truncated", "truncated"),
    ("not gzip", "not an MNIST IDX file"),
    ("wrong magic", "magic number"),
    ("one bit flipped", "checksum mismatch"),
])
def test_a_damaged_file_is_named_with_its_fault(tmp_path, how, reason):
    folder = copy_real(tmp_path / "mnist")
    damage(folder / "t10k-images-idx3-ubyte.gz", how)
    with pytest.raises(DataError) as error:
        data.load_mnist(folder)
    assert reason in str(error.value)
    assert "t10k-images" in str(error.value)


def test_images_and_labels_that_disagree_in_count(tmp_path):
    folder = copy_real(tmp_path / "mnist")
    labels = idx.read_labels(folder / "t10k-labels-idx1-ubyte.gz")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx.encode_idx(labels[:-1])))
    with pytest.raises(DataError, match="10000 test images but 9999 labels"):
        data.load_mnist(folder)


def test_a_missing_file_is_named(tmp_path):
    folder = copy_real(tmp_path / "mnist")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        data.load_mnist(folder)


def test_a_foreign_npz_is_refused_by_its_checksum(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="checksum mismatch"):
        data.load_mnist(tmp_path)


def _npz_with_checksum_accepted(path: Path, monkeypatch) -> None:
    """Make `path` pass the checksum, so that what is tested is the reading after it."""
    monkeypatch.setattr(data, "KERAS_NPZ", (path.name, data.sha256_of(path)))


def test_an_npz_of_pickled_objects_is_never_unpickled(tmp_path, monkeypatch, pickle_payload):
    objects, marker = pickle_payload
    np.savez(tmp_path / "mnist.npz", x_train=objects, y_train=np.zeros(2, np.uint8),
             x_test=objects, y_test=np.zeros(2, np.uint8))
    _npz_with_checksum_accepted(tmp_path / "mnist.npz", monkeypatch)
    with pytest.raises(DataError, match="not a readable Keras mnist.npz"):
        data.load_mnist(tmp_path)
    assert not marker.exists(), "the .npz was unpickled"


def test_a_keras_mnist_npz_is_read_and_split_like_the_idx_files(tmp_path, monkeypatch, mnist):
    """keras.datasets' single file (its checksum accepted for this copy: the canonical file
    is not in the test data): the same arrays, the same splits."""
    np.savez_compressed(tmp_path / "mnist.npz",
                        x_train=np.concatenate([mnist.x_train, mnist.x_val]),
                        y_train=np.concatenate([mnist.y_train, mnist.y_val]),
                        x_test=mnist.x_test, y_test=mnist.y_test)
    _npz_with_checksum_accepted(tmp_path / "mnist.npz", monkeypatch)
    loaded = data.load_mnist(tmp_path)
    for split in ("train", "validation", "test"):
        for got, want in zip(loaded.split(split), mnist.split(split)):
            np.testing.assert_array_equal(got, want)
    assert loaded.checksums == {"mnist.npz": data.KERAS_NPZ[1]}


def run_command(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "mnist_digits.cli", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_data_command_reports_where_counts_and_checksums():
    result = run_command("data")
    assert result.returncode == 0, result.stderr
    assert "Checksums passed." in result.stdout
    assert "55,000" in result.stdout and "10,000" in result.stdout


def test_data_command_on_a_damaged_folder_is_one_line_and_exit_2(tmp_path):
    folder = copy_real(tmp_path / "mnist")
    damage(folder / "train-images-idx3-ubyte.gz", "truncated")
    result = run_command("data", "--data-dir", str(folder))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train-images-idx3-ubyte.gz" in lines[0]


def test_data_command_on_a_missing_folder(tmp_path):
    result = run_command("data", "--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_a_gzip_bomb_in_the_data_folder_is_refused_at_bounded_cost(tmp_path):
    import struct
    import tracemalloc

    from test_idx import gzip_bomb

    folder = copy_real(tmp_path / "mnist")
    bomb = folder / "t10k-images-idx3-ubyte.gz"  # the header of the real file, then 512 MiB of zeros
    gzip_bomb(bomb, struct.pack(">HBB3I", 0, 8, 3, 10_000, 28, 28), zeros=512 * 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            data.load_mnist(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "t10k-images-idx3-ubyte.gz" in str(error.value)
    # All four files are read to name the fault (47 MB of training images among them), the
    # bomb no further than the 7.8 MB its header declares.
    assert peak < 128 * 2**20, f"{peak / 2**20:.0f} MiB to refuse a 512 MiB gzip bomb"
