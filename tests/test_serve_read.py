"""POST /api/read and the page's "A number" mode (in Debian's Chromium, as test_serve_browser)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_digits.serve import MAX_BODY_BYTES, create_app
from number_images import compose_number
from test_serve_api import LOCAL
# The browser, its pages (screenshots on failure, no requests outside the server) and the
# server, as the single-digit page's tests have them.
from test_serve_browser import (ARTIFACTS, FREEHAND, PHONE, browser, draw, draw_with_a_finger,  # noqa: F401
                                pages, predictor, server_url)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(predictor):  # noqa: F811
    with TestClient(create_app(predictor), base_url=LOCAL, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def number_png(mnist):
    images, labels = mnist.split("test")
    return png(compose_number(images, labels, np.random.default_rng(0), "305", "apart", "canvas").image)


def error_of(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in response.text
    return message


# --- the API ---------------------------------------------------------------------------


def test_a_number_gets_its_text_and_each_digits_box_confidence_and_image(client, number_png):
    response = client.post("/api/read", content=number_png, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["text"] == "305" and answer["unsure"] == any(d["unsure"] for d in answer["digits"])
    width, height = Image.open(io.BytesIO(number_png)).size
    for digit in answer["digits"]:
        assert set(digit) == {"digit", "confidence", "alternatives", "unsure", "box", "image"}
        x0, y0, x1, y1 = digit["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        seen = Image.open(io.BytesIO(base64.b64decode(digit["image"].split(",", 1)[1])))
        assert seen.size == (28, 28)


def test_a_multipart_upload_gets_the_same_answer(client, number_png):
    raw = client.post("/api/read", content=number_png, headers={"Content-Type": "image/png"}).json()
    form = client.post("/api/read", files={"file": ("n.png", number_png, "image/png")}).json()
    assert form == raw


@pytest.mark.parametrize("body, content_type, status, message", [
    (png(np.full((80, 240), 255, dtype=np.uint8)), "image/png", 422, "no digits found"),
    (b"not an image", "image/png", 400, "not an image"),
    (b"{}", "application/json", 415, "Content-Type application/json"),
    (b"\0" * (MAX_BODY_BYTES + 1), "image/png", 413, "request body over"),
])
def test_bad_input_is_refused_as_predict_refuses_it(client, body, content_type, status, message):
    assert message in error_of(client.post("/api/read", content=body, headers={"Content-Type": content_type}),
                               status)


def test_a_page_of_marks_is_422_not_a_long_guess(client):
    page = np.full((300, 600), 255, dtype=np.uint8)
    for row in range(8):
        for col in range(12):
            page[10 + row * 36:34 + row * 36, 10 + col * 48:16 + col * 48] = 0
    assert "more than a number has" in error_of(
        client.post("/api/read", content=png(page), headers={"Content-Type": "image/png"}), 422)


# --- the page --------------------------------------------------------------------------


def in_third(strokes, third: int):
    """Strokes drawn for a square pad, moved into one third of the wide number pad."""
    return [[((third + x) / 3, y) for x, y in stroke] for stroke in strokes]


def number_answer(page) -> str:
    page.wait_for_function("() => document.querySelector('#number').getAttribute('aria-busy') === 'false'")
    return page.locator("#number").inner_text().strip()


def test_a_three_digit_number_written_on_the_wide_pad_is_read_with_boxes_and_images(pages):  # noqa: F811
    page = pages()
    page.click("#mode-number")
    assert number_answer(page) == "Write a number"
    box = page.locator("#canvas").bounding_box()
    assert box["width"] >= 2.5 * box["height"]  # the wide pad
    for third, digit in enumerate((1, 7, 0)):
        draw(page, in_third(FREEHAND[digit], third))
    assert number_answer(page) == "170"
    assert page.locator("#boxes .box").count() == 3
    assert page.locator("#number-digits li").count() == 3
    assert page.evaluate("() => [...document.querySelectorAll('#number-digits img')].every(i => i.naturalWidth === 28)")
    lefts = [page.locator("#boxes .box").nth(i).bounding_box()["x"] for i in range(3)]
    assert lefts == sorted(lefts) and lefts[0] >= box["x"] and lefts[2] < box["x"] + box["width"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page-number.png"))
    page.click("#clear")
    assert number_answer(page) == "Write a number" and page.locator("#boxes .box").count() == 0
    page.click("#mode-digit")
    assert page.locator("#canvas").bounding_box()["width"] <= 1.05 * page.locator("#canvas").bounding_box()["height"]


def test_on_a_phone_a_finger_writes_a_number(pages):  # noqa: F811
    page = pages(**PHONE)
    page.click("#mode-number")
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for third, digit in enumerate((7, 1)):
        draw_with_a_finger(page, in_third(FREEHAND[digit], third))
    assert number_answer(page) == "71"
