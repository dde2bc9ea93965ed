"""The IDX reader on crafted good and bad files."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# --- hostile files: bounded cost, the project's own error -----------------------------------

def gzip_bomb(path, header: bytes, zeros: int) -> None:
    """`header` then `zeros` zero bytes, gzipped a MiB at a time (a few hundred KB on disk)."""
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(header)
        chunk = bytes(2**20)
        for _ in range(zeros // len(chunk)):
            out.write(chunk)


@pytest.mark.parametrize("shape", [(2**32 - 1,) * 3, (2**32 - 1,) * 4 + (0, 0), (65536, 65536, 65536)])
def test_absurd_dimensions_are_one_line_not_an_overflow(tmp_path, shape):
    path = tmp_path / "huge-idx-ubyte"
    path.write_bytes(struct.pack(f">HBB{len(shape)}I", 0, 8, len(shape), *shape) + b"\0" * 64)
    with pytest.raises(DataError) as error:
        idx.read_idx(path)
    assert str(path) in str(error.value) and "over the limit" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_gzip_bomb_is_refused_within_its_declared_size(tmp_path):
    import tracemalloc

    path = tmp_path / "bomb-idx3-ubyte.gz"
    gzip_bomb(path, struct.pack(">HBB3I", 0, 8, 3, 1000, 28, 28), zeros=512 * 2**20)
    assert path.stat().st_size < 2 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="holds more"):
            idx.read_images(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB to refuse a 512 MiB gzip bomb"


def idx_like():
    """Mostly near-valid IDX: a plausible header (any type code, dims, sizes) and data."""
    header = st.builds(lambda ndim, dims, code: struct.pack(f">HBB{ndim}I", 0, code, ndim, *dims[:ndim]),
                       st.integers(0, 5), st.lists(st.integers(0, 2**32 - 1), min_size=5, max_size=5),
                       st.sampled_from([8, 8, 8, 9, 13]))
    return st.one_of(st.binary(max_size=300),
                     st.builds(lambda h, body: h + body, header, st.binary(max_size=300)))


@given(content=idx_like(), gzipped=st.booleans(), cut=st.integers(0, 400))
def test_fuzz_idx_reader_ends_in_an_array_or_data_error(content, gzipped, cut):
    """Any bytes, plain or gzipped (whole or cut short): an array or the project's
    DataError, never another exception (fuzz profile: see conftest.py)."""
    if gzipped:
        content = gzip.compress(content)[:cut] if cut < 40 else gzip.compress(content)
    try:
        array = idx.parse_idx(content, "fuzz", max_bytes=2**16)
    except DataError as error:
        assert "\n" not in str(error)
    else:
        assert array.dtype == np.uint8 and array.size <= 2**16
