"""The IDX file format of MNIST: read and validate, nothing else.

An IDX file is a big-endian header -- two zero bytes, a type code, the number of
dimensions, one uint32 per dimension -- followed by the data. MNIST uses type 0x08
(unsigned byte): images are 3-D (count x 28 x 28), labels 1-D. Files may be gzipped.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08
IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension


def decompress(raw: bytes, name: str) -> bytes:
    """Return the IDX bytes of a file's content, un-gzipping it if it is gzipped."""
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"{name}: damaged or truncated gzip file ({error}); delete it and fetch it again"
        ) from None


def parse_idx(raw: bytes, name: str = "IDX data", ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes (optionally gzipped) into a uint8 array of the declared shape;
    with `ndim`, the magic number must declare that many dimensions."""
    expected_ndim = ndim
    data = decompress(raw, name)
    if len(data) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code != UNSIGNED_BYTE or ndim == 0 or ndim != (expected_ndim or ndim):
        magic = struct.unpack(">I", data[:4])[0]
        wanted = {3: f"{IMAGES_MAGIC} for images", 1: f"{LABELS_MAGIC} for labels"}
        expected = wanted.get(expected_ndim) or f"{wanted[3]} or {wanted[1]}"
        raise DataError(f"{name}: not an MNIST IDX file (magic number {magic}, expected {expected})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{name}: IDX header cut short; the file is truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = int(np.prod(shape, dtype=np.int64))
    actual = len(data) - header_size
    if actual != expected:
        raise DataError(
            f"{name}: header says {'x'.join(map(str, shape))} = {expected} bytes of data "
            f"but the file holds {actual}; the file is truncated or damaged"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) from disk."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None
    return parse_idx(raw, str(path), ndim)


def read_images(path: str | Path) -> np.ndarray:
    """Read an IDX image file: a uint8 array of shape (count, 28, 28)."""
    images = read_idx(path, ndim=3)
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{path}: expected images of 28x28 pixels, found dimensions {images.shape}"
        )
    return images


def read_labels(path: str | Path) -> np.ndarray:
    """Read an IDX label file: a uint8 array of digits 0-9."""
    labels = read_idx(path, ndim=1)
    if labels.size and labels.max() > 9:
        raise DataError(f"{path}: holds label {int(labels.max())}; MNIST labels are 0-9")
    return labels


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array (used to write test files and batches)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UNSIGNED_BYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()
