"""Fuzzing (hypothesis): any bytes given to the image decoder, to `prepare` and to the HTTP
endpoints end in a result or the project's own error -- never another exception, never a
500 -- and within a time bound (hypothesis' deadline, per example).

The inputs are random bytes and, more to the point, real small images of every accepted
format with bytes overwritten, numbers in their headers made huge, and tails cut. In the
suite the run is short and seeded (the same examples every time); a longer, random one is
`python benchmarks/fuzz_inputs.py` (MNIST_DIGITS_FUZZ_EXAMPLES sets the count here).
"""

from __future__ import annotations

import io
import os
import struct
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_digits.decode import decode
from mnist_digits.errors import InputImageError
from mnist_digits.preprocess import prepare
from mnist_digits.serve import create_app

EXAMPLES = int(os.environ.get("MNIST_DIGITS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, derandomize="MNIST_DIGITS_FUZZ_EXAMPLES" not in os.environ,
                deadline=timedelta(seconds=5), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _seeds() -> list[bytes]:
    """A small digit in every format and mode the decoder accepts, and a few it refuses."""
    pixels = np.full((40, 32), 255, np.uint8)
    pixels[8:32, 14:19] = 0
    gray = Image.fromarray(pixels)
    rgba = gray.convert("RGBA")
    return [
        _encode(gray, "PNG"), _encode(rgba, "PNG"), _encode(gray.convert("P"), "PNG", transparency=0),
        _encode(Image.fromarray(pixels.astype(np.uint16) * 257), "PNG"),
        _encode(gray.convert("RGB"), "JPEG", quality=70), _encode(gray, "JPEG", progressive=True),
        _encode(gray, "GIF"), _encode(gray, "GIF", save_all=True, append_images=[rgba.convert("P")]),
        _encode(gray, "BMP"), _encode(rgba, "BMP"), _encode(gray, "TIFF"), _encode(gray, "TIFF", compression="tiff_lzw"),
        _encode(gray, "TIFF", save_all=True, append_images=[gray]), _encode(rgba, "WEBP"), _encode(gray, "PPM"),
        _encode(gray, "PNG", save_all=True, append_images=[rgba]),
    ]


SEEDS = _seeds()


@st.composite
def damaged_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[at] = draw(st.integers(0, 255))
        else:  # a header field (a size, a count, an offset) made huge or zero
            data[at:at + 4] = struct.pack(">I", draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


ANY_BYTES = st.one_of(st.binary(max_size=2048), damaged_images())


@FUZZ
@given(data=ANY_BYTES)
def test_any_bytes_decode_or_give_an_input_error(data):
    try:
        image = decode(data, max_side=768)
    except InputImageError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert max(image.size) <= 768


@FUZZ
@given(data=ANY_BYTES)
def test_any_bytes_prepare_or_give_an_input_error(data):
    try:
        prepared = prepare(data)
    except InputImageError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert prepared.shape == (28, 28) and 0.0 <= prepared.min() and prepared.max() <= 1.0


# --- the HTTP endpoints ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(uniform_predictor):
    with TestClient(create_app(uniform_predictor), base_url="http://localhost",
                    raise_server_exceptions=False) as test_client:
        yield test_client


CONTENT_TYPES = ["image/png", "image/gif", "multipart/form-data; boundary=x", "multipart/form-data",
                 "multipart/form-data; boundary=", "text/plain", "application/octet-stream", None]


@st.composite
def multipart_bodies(draw) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["file", "files", "other", ""]))
        header = f'Content-Disposition: form-data; name="{name}"; filename="a.png"\r\nContent-Type: image/png'
        parts.append(b"--x\r\n" + header.encode() + b"\r\n\r\n" + draw(ANY_BYTES) + b"\r\n")
    body = bytearray(b"".join(parts) + draw(st.sampled_from([b"--x--\r\n", b"--x", b""])))
    for _ in range(draw(st.integers(0, 3))):  # damage the multipart structure itself
        if body:
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    return bytes(body)


@FUZZ
@given(path=st.sampled_from(["/api/predict", "/api/predict/batch"]),
       content_type=st.sampled_from(CONTENT_TYPES),
       body=st.one_of(ANY_BYTES, multipart_bodies()))
def test_any_request_body_gets_an_answer_or_a_json_4xx(client, path, content_type, body):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code in (200, 400, 413, 415, 422), (response.status_code, response.text)
    if response.status_code != 200:
        message = response.json()["error"]
        assert message and "\n" not in message
    elif path.endswith("batch"):
        assert all("digit" in result or "error" in result for result in response.json()["results"])
    else:
        assert 0 <= response.json()["digit"] <= 9
