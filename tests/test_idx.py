"""The IDX reader on crafted good and bad files."""

import gzip
import struct

import numpy as np
import pytest

from mnist_digits import idx
from mnist_digits.errors import DataError


def test_round_trip_plain_and_gzipped(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    plain, packed = tmp_path / "images-idx3-ubyte", tmp_path / "images-idx3-ubyte.gz"
    plain.write_bytes(idx.encode_idx(images))
    packed.write_bytes(gzip.compress(idx.encode_idx(images)))
    np.testing.assert_array_equal(idx.read_images(plain), images)
    np.testing.assert_array_equal(idx.read_images(packed), images)


def test_labels_are_read_as_digits(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx.encode_idx(np.array([7, 2, 1, 0], dtype=np.uint8)))
    assert idx.read_labels(path).tolist() == [7, 2, 1, 0]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "too short"),
        (struct.pack(">HBB", 0, 0x0D, 3) + b"\0" * 12, "magic number"),  # float data, not bytes
        (b"PK\x03\x04 not idx at all", "magic number"),
        (struct.pack(">HBBI", 0, 8, 3, 2), "header cut short"),
        (idx.encode_idx(np.zeros((2, 28, 28), np.uint8))[:-5], "truncated"),
        (idx.encode_idx(np.zeros((2, 28, 28), np.uint8)) + b"extra", "damaged"),
        (gzip.compress(idx.encode_idx(np.zeros((2, 28, 28), np.uint8)))[:40], "gzip"),
    ],
)
def test_damaged_files_get_a_clear_reason_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        idx.read_images(path)
    assert reason in str(error.value)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_images_must_be_28_by_28(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx.encode_idx(np.zeros((2, 32, 32), np.uint8)))
    with pytest.raises(DataError, match="28x28"):
        idx.read_images(path)


def test_labels_must_be_digits(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx.encode_idx(np.array([3, 12], np.uint8)))
    with pytest.raises(DataError, match="0-9"):
        idx.read_labels(path)
