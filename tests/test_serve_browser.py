"""The drawing page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

Digits are drawn with the mouse (and a finger, on a phone-sized page) on #canvas and read
back from #prediction; a photo goes through #upload. Nothing is downloaded: every request
that does not go to the test server is blocked and fails the test. A failing test leaves
a screenshot in test-artifacts/; every run leaves screenshots of the page on a desktop and
a phone there too (docs/images/serve-page.png is the desktop one).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_digits.predict import Predictor
from mnist_digits.serve import create_app, running

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
DESKTOP = {"viewport": {"width": 1100, "height": 760}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}

# Freehand strokes as a person draws them, in canvas fractions (0-1).
FREEHAND = {
    1: [[(0.52, 0.18), (0.50, 0.50), (0.48, 0.82)]],
    7: [[(0.28, 0.24), (0.50, 0.23), (0.72, 0.22), (0.62, 0.45), (0.52, 0.64), (0.46, 0.82)]],
    0: [[(0.50 + 0.20 * np.sin(t), 0.50 - 0.30 * np.cos(t)) for t in np.linspace(0, 2.1 * np.pi, 28)]],
}


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(mlp_run):
    return Predictor.from_path(mlp_run)


@pytest.fixture(scope="module")
def server_url(predictor):
    with running(create_app(predictor)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, server_url, **context_options):
    """The page in a fresh context, with the lists it fills: requests to anywhere but the
    server (blocked), and errors the page threw."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    outside, errors = [], []

    def only_the_server(route):
        if route.request.url.startswith(server_url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.on("pageerror", lambda error: errors.append(str(error)))
    # What the Content-Security-Policy blocks shows only on the console.
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(server_url + "/")
    page.wait_for_function("() => document.querySelector('#model-info').textContent.startsWith('Model')")
    return page, outside, errors


@pytest.fixture
def pages(browser, server_url, request):
    """Opens pages on demand; on a failure, saves a screenshot of each; checks that none
    reached outside the server or threw an error."""
    opened = []
    failed_before = request.session.testsfailed

    def opener(**context_options):
        page, outside, errors = open_page(browser, server_url, **(context_options or DESKTOP))
        opened.append((page, outside, errors))
        return page

    yield opener
    failed = request.session.testsfailed > failed_before  # the call's report is already in
    for number, (page, outside, errors) in enumerate(opened):
        if failed:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{number}.png"), full_page=True)
        page.context.close()
        assert not outside, f"the page tried to load from outside the server: {outside}"
        assert not errors, f"the page threw: {errors}"


# --- drawing --------------------------------------------------------------------------


def draw(page, strokes, steps: int = 2) -> None:
    """Draw strokes (lists of (x, y) canvas fractions) with the mouse, `steps` moves per segment."""
    box = page.locator("#canvas").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=steps)
        page.mouse.up()


def draw_with_a_finger(page, strokes) -> None:
    """The same strokes as touch events (pointerType "touch"), through Chromium's input."""
    box = page.locator("#canvas").bounding_box()
    session = page.context.new_cdp_session(page)
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        for index, (x, y) in enumerate(points):
            kind = "touchStart" if index == 0 else "touchMove"
            session.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    session.detach()


def mnist_strokes(digit: np.ndarray) -> list:
    """Trace an MNIST digit with the pen: one horizontal stroke per run of ink in each row."""
    strokes = []
    for row, pixels in enumerate(digit >= 128):
        columns = np.flatnonzero(pixels)
        if len(columns) == 0:
            continue
        runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
        for run in runs:
            y = (row + 0.5) / 28
            strokes.append([((run[0] + 0.5) / 28, y), ((run[-1] + 0.5) / 28, y)])
    return strokes


def answer(page) -> str:
    """#prediction's text once no answer is pending."""
    page.wait_for_function("() => document.querySelector('#prediction').getAttribute('aria-busy') === 'false'")
    return page.locator("#prediction").inner_text().strip()


def predicted_digit(page) -> int | None:
    text = answer(page)
    return int(text[0]) if text[:1].isdigit() else None


def clear_examples(mnist, predictor, labels) -> dict[int, np.ndarray]:
    """For each label, the first test digit the model reads right with 99% confidence as it
    is in MNIST (some MNIST digits are ambiguous even before a pen traces them)."""
    examples = {}
    for label in labels:
        candidates = np.flatnonzero(mnist.y_test == label)[:20]
        answers = predictor.predict_prepared(mnist.x_test[candidates] / 255.0)
        first = next(i for i, answer in zip(candidates, answers)
                     if answer.digit == label and answer.confidence >= 0.99)
        examples[label] = mnist.x_test[first]
    return examples


def photo_of(digit: np.ndarray, side: int = 900, seed: int = 0) -> bytes:
    """A phone-photo-like JPEG of a digit: dark ink on warm paper, uneven light, grain."""
    rng = np.random.default_rng(seed)
    ink = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    light = np.linspace(0.78, 0.95, side, dtype=np.float32)[None, :, None]
    paper = light * np.array([1.0, 0.97, 0.9], dtype=np.float32)
    pixels = paper * (1 - 0.85 * ink[..., None]) + rng.normal(0, 0.02, (side, side, 1))
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# --- tests ------------------------------------------------------------------------------


def test_mnist_digits_traced_with_the_mouse_are_read_and_clear_starts_over(pages, mnist, predictor):
    page = pages()
    assert answer(page) == "Draw a digit"
    for label, digit in clear_examples(mnist, predictor, (0, 1, 3, 7)).items():
        page.click("#clear")
        assert answer(page) == "Draw a digit"
        draw(page, mnist_strokes(digit))
        assert predicted_digit(page) == label, f"traced a {label}, page says {answer(page)!r}"
        bars = page.locator("#probabilities .bar")
        assert bars.count() == 10
        assert page.locator("#probabilities .bar.best .label").inner_text() == str(label)
        assert page.evaluate("document.querySelector('#seen').naturalWidth") == 28  # what the model saw
    page.click("#clear")
    assert answer(page) == "Draw a digit"
    assert page.locator("#probabilities .bar.best").count() == 0
    assert page.evaluate("""() => {  // the pad is white again
        const canvas = document.querySelector('#canvas');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        return pixels.every(value => value === 255);
    }""")


@pytest.mark.parametrize("label", sorted(FREEHAND))
def test_freehand_strokes_are_read(pages, label):
    page = pages()
    draw(page, FREEHAND[label])
    assert predicted_digit(page) == label, answer(page)
    if label == 7:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-page-desktop.png"))


def test_what_the_page_sends_takes_the_drawing_path_with_the_general_paths_result(pages, monkeypatch):
    from test_preprocess_drawings import assert_same, both_paths

    page = pages()
    sent = []
    page.on("request", lambda request: sent.append(request.post_data_buffer)
            if request.url.endswith(("/api/predict", "/api/read")) else None)
    for mode in ("#mode-digit", "#mode-number"):
        page.click(mode)
        for label in sorted(FREEHAND):
            page.click("#clear")
            draw(page, FREEHAND[label])
            answer(page)
    assert len(sent) >= 6
    for data in sent:
        drawn, general, took_drawing_path = both_paths(data, monkeypatch)
        assert_same(drawn, general)
        assert took_drawing_path


def test_an_uploaded_photo_is_read_and_shown(pages, mnist, predictor, tmp_path):
    page = pages()
    label, digit = 3, clear_examples(mnist, predictor, (3,))[3]
    photo = tmp_path / "three.jpg"
    photo.write_bytes(photo_of(digit))
    page.set_input_files("#upload", str(photo))
    assert predicted_digit(page) == label, answer(page)
    assert page.evaluate("""() => {  // the photo is on the pad: some pixels are not white
        const canvas = document.querySelector('#canvas');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        return pixels.some(value => value < 200);
    }""")


def test_a_photo_over_the_server_limit_is_shrunk_by_the_page_and_read(pages, mnist, predictor, tmp_path):
    page = pages()
    label, digit = 4, clear_examples(mnist, predictor, (4,))[4]
    photo = tmp_path / "big.jpg"  # 2400x2400 and grainy: over 4 MiB, as many phone photos are
    gray = np.asarray(Image.fromarray(255 - digit).resize((2400, 2400), Image.Resampling.BICUBIC), dtype=np.int16)
    grain = np.random.default_rng(1).integers(-30, 31, gray.shape)
    Image.fromarray(np.clip(gray + grain, 0, 255).astype(np.uint8)).save(photo, quality=100)
    assert photo.stat().st_size > 4 * 1024 * 1024
    page.set_input_files("#upload", str(photo))
    assert predicted_digit(page) == label, answer(page)


def test_an_unsure_answer_is_shown_as_unsure(pages):
    """The server's answer is replaced by an unsure one: the page must say so, not just the digit."""
    page = pages()
    probabilities = [0.02, 0.01, 0.01, 0.03, 0.46, 0.02, 0.01, 0.02, 0.02, 0.40]
    unsure = {"digit": 4, "confidence": 0.46, "probabilities": probabilities, "unsure": True,
              "image": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="}
    page.route("**/api/predict", lambda route: route.fulfill(json=unsure))
    draw(page, FREEHAND[1])
    text = answer(page)
    assert text.startswith("4") and "unsure" in text, text
    assert page.locator("#prediction").get_attribute("class") == "unsure"
    assert page.locator("#probabilities .bar.best .label").inner_text() == "4"


def test_a_file_that_is_not_an_image_gets_a_message_not_a_guess(pages, tmp_path):
    page = pages()
    notes = tmp_path / "notes.png"
    notes.write_text("not really a picture")
    page.set_input_files("#upload", str(notes))
    answer(page)
    assert "not an image" in page.locator("#message").inner_text()
    assert not page.locator("#prediction").inner_text()[:1].isdigit()


def test_the_api_docs_work_offline_too(pages, server_url):
    page = pages()
    page.goto(server_url + "/docs")  # every request outside the server is blocked and fails the test
    page.get_by_text("/api/predict/batch", exact=True).wait_for()
    assert "mnist-digits" in page.locator(".swagger-ui .info .title").inner_text()


def test_on_a_phone_the_page_fits_and_a_finger_draws(pages):
    page = pages(**PHONE)
    width = page.evaluate("window.innerWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    for element in ("#canvas", "#clear", "label:has(#upload)", "#prediction", "#probabilities"):
        box = page.locator(element).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, element
    assert page.locator("#canvas").bounding_box()["width"] >= 0.8 * width  # big enough to draw on
    draw_with_a_finger(page, FREEHAND[7])
    assert predicted_digit(page) == 7, answer(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page-phone.png"), full_page=True)
