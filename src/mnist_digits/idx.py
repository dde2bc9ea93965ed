"""The IDX file format of MNIST: read and validate, nothing else.

An IDX file is a big-endian header -- two zero bytes, a type code, the number of
dimensions, one uint32 per dimension -- followed by the data. MNIST uses type 0x08
(unsigned byte): images are 3-D (count x 28 x 28), labels 1-D. Files may be gzipped.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08
IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension
# The most data an IDX file may declare: 256 MiB, over five times MNIST's training images
# (47 MB); a header claiming more is damaged or hostile, and is refused before reading.
MAX_DATA_BYTES = 256 * 2**20


def _open_stream(raw: BinaryIO) -> BinaryIO:
    """The IDX bytes of a file as a stream, un-gzipped as they are read if gzipped: nothing
    is decompressed beyond what the reader asks for."""
    magic = raw.read(len(GZIP_MAGIC))
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb") if magic == GZIP_MAGIC else raw


def _read_up_to(stream: BinaryIO, size: int, name: str) -> bytes:
    try:
        return stream.read(size)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"{name}: damaged or truncated gzip file ({error}); delete it and fetch it again"
        ) from None


def _parse_stream(raw: BinaryIO, name: str, ndim: int | None, max_bytes: int) -> np.ndarray:
    expected_ndim = ndim
    stream = _open_stream(raw)
    head = _read_up_to(stream, 4, name)
    if len(head) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(head)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", head)
    if zero != 0 or type_code != UNSIGNED_BYTE or ndim == 0 or ndim != (expected_ndim or ndim):
        magic = struct.unpack(">I", head)[0]
        wanted = {3: f"{IMAGES_MAGIC} for images", 1: f"{LABELS_MAGIC} for labels"}
        expected = wanted.get(expected_ndim) or f"{wanted[3]} or {wanted[1]}"
        raise DataError(f"{name}: not an MNIST IDX file (magic number {magic}, expected {expected})")
    dimensions = _read_up_to(stream, 4 * ndim, name)
    if len(dimensions) < 4 * ndim:
        raise DataError(f"{name}: IDX header cut short; the file is truncated")
    shape = struct.unpack(f">{ndim}I", dimensions)
    expected = math.prod(shape)  # Python integers: absurd dimensions cannot overflow
    described = f"header says {'x'.join(map(str, shape))} = {expected:,} bytes of data"
    # Refused before reading (or un-gzipping) any of it. A zero among absurd dimensions
    # declares no data, but no array can have that shape either.
    if math.prod(max(size, 1) for size in shape) > max_bytes:
        raise DataError(f"{name}: {described}, over the limit of {max_bytes:,}; "
                        "the file is damaged or not an MNIST-style IDX file")
    data = _read_up_to(stream, expected + 1, name)  # one byte more tells "too long"
    if len(data) != expected:
        holds = f"{len(data):,}" if len(data) < expected else "more"
        raise DataError(f"{name}: {described} but the file holds {holds}; "
                        "the file is truncated or damaged")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def parse_idx(raw: bytes, name: str = "IDX data", ndim: int | None = None,
              max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Parse IDX bytes (optionally gzipped) into a uint8 array of the declared shape;
    with `ndim`, the magic number must declare that many dimensions. A header declaring
    more than `max_bytes` of data is refused before anything is decompressed."""
    return _parse_stream(io.BytesIO(raw), name, ndim, max_bytes)


def read_idx(path: str | Path, ndim: int | None = None, max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Read an IDX file (gzipped or not) from disk, streaming: a gzip bomb costs no more
    than `max_bytes` (and the header is checked against it first)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _parse_stream(handle, str(path), ndim, max_bytes)
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror})") from None


def read_images(path: str | Path, max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Read an IDX image file: a uint8 array of shape (count, 28, 28)."""
    images = read_idx(path, ndim=3, max_bytes=max_bytes)
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{path}: expected images of 28x28 pixels, found dimensions {images.shape}"
        )
    return images


def read_labels(path: str | Path, max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Read an IDX label file: a uint8 array of digits 0-9."""
    labels = read_idx(path, ndim=1, max_bytes=max_bytes)
    if labels.size and labels.max() > 9:
        raise DataError(f"{path}: holds label {int(labels.max())}; MNIST labels are 0-9")
    return labels


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array (used to write test files and batches)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UNSIGNED_BYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()
