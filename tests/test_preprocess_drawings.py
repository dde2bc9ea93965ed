"""preprocess's cheaper path for drawings gives what the general path gives, bit for bit.

Drawings are made here the way the drawing page makes them (serve/static/app.js): strokes
of the page's pen (a 14th of the pad's height, round caps and joins, #111 on white,
antialiased) on the 280 px pad, then scaled to 140 px high with smoothing and sent as an
opaque RGBA PNG. Each is prepared twice, with the drawing path and without it, and every
step (grey, ink, flat, crop, stroke, fit, prepared) must be the same array; a blank pad
must give the same error. Which path ran is seen by watching the general one
(preprocess._find_digit): the drawing path must take every page-like drawing, and leave
photos, shaded paper, 16-bit images, blobs and small images to the general path.
Transparent, grey-alpha and palette drawings must come out the same whichever path takes them.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from mnist_digits import preprocess
from mnist_digits.errors import InputImageError

import photo_like
from test_preprocess import jpeg_noise, phone_photo

PAD = 280                  # the page's pad (index.html), and three times as wide for numbers
PEN = PAD / 14             # app.js: context.lineWidth = canvas.height / 14
PAGE_INK, PAGE_PAPER = 0x11, 0xFF
SEND = 140                 # app.js: SEND_SIDE, the height of the PNG sent
SUPERSAMPLE = 4            # strokes are drawn this much larger, then averaged: antialiased
SMOOTHING = [Image.Resampling.LANCZOS, Image.Resampling.BICUBIC, Image.Resampling.BILINEAR,
             Image.Resampling.BOX]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _sent(pad: Image.Image, smoothing=Image.Resampling.LANCZOS, mode: str = "RGBA") -> bytes:
    """The pad as the page sends it: SEND px high, smoothed, PNG (RGBA, all opaque)."""
    return _png(pad.resize((round(SEND * pad.width / pad.height), SEND), smoothing).convert(mode))


def page_drawing(strokes, pen: float = PEN, pad_width: int = PAD, ink: int = PAGE_INK,
                 paper: int = PAGE_PAPER, smoothing=Image.Resampling.LANCZOS, mode: str = "RGBA") -> bytes:
    """Strokes (lists of (x, y) in fractions of the pad) drawn as the page draws them."""
    big = Image.new("L", (pad_width * SUPERSAMPLE, PAD * SUPERSAMPLE), paper)
    draw = ImageDraw.Draw(big)
    width = pen * SUPERSAMPLE
    for stroke in strokes:
        points = [(x * big.width, y * big.height) for x, y in stroke]
        for x, y in points:  # round caps and joins
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=ink)
        if len(points) > 1:
            draw.line(points, fill=ink, width=round(width), joint="curve")
    return _sent(big.reduce(SUPERSAMPLE), smoothing, mode)


def mnist_drawing(digit: np.ndarray, size: int, top: int, left: int, smoothing, pad_width: int = PAD) -> bytes:
    """An MNIST digit as the pad's ink: its grey levels as the coverage of #111 on white,
    `size` px square at (top, left) of the pad."""
    coverage = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR)) / 255.0
    pad = np.full((PAD, pad_width), float(PAGE_PAPER))
    pad[top:top + size, left:left + size] -= coverage * (PAGE_PAPER - PAGE_INK)
    return _sent(Image.fromarray(np.round(pad).astype(np.uint8)), smoothing)


def scribble(rng: np.random.Generator, strokes: int, points: int) -> list[list[tuple[float, float]]]:
    """Random strokes anywhere on the pad, edges included."""
    return [[tuple(rng.uniform(-0.05, 1.05, 2)) for _ in range(points)] for _ in range(strokes)]


def _prepared_steps(data: bytes):
    """Every step of prepare, or the one-line error."""
    try:
        return preprocess.prepare(data, return_steps=True)[1]
    except InputImageError as error:
        return str(error)


def both_paths(data: bytes, monkeypatch) -> tuple[object, object, bool]:
    """(steps with the drawing path, steps with the general path only, whether the drawing
    path took the image: the general one was not asked)."""
    general_calls = []
    find_digit = preprocess._find_digit

    def watched(gray, histogram, flip=False, speck_fraction=preprocess.SPECK_FRACTION):
        if not flip:  # a flipped second look follows either path, for a blob
            general_calls.append(gray.shape)
        return find_digit(gray, histogram, flip, speck_fraction)

    with monkeypatch.context() as patch:
        patch.setattr(preprocess, "_find_digit", watched)
        drawn = _prepared_steps(data)
    with monkeypatch.context() as patch:
        patch.setattr(preprocess, "DRAWING_PATH", False)
        general = _prepared_steps(data)
    return drawn, general, not general_calls


def assert_same(drawn, general) -> None:
    if isinstance(general, str):
        assert drawn == general
        return
    assert list(drawn) == list(general)
    for name in general:
        assert drawn[name].dtype == general[name].dtype, name
        assert np.array_equal(drawn[name], general[name]), f"step {name!r} differs"


# --- drawings: the drawing path, the general path's result ------------------------------


def test_mnist_digits_drawn_on_the_pad_anywhere_at_any_size(mnist, monkeypatch):
    rng = np.random.default_rng(0)
    for index in range(120):
        size = int(rng.choice([12, 24, 60, 120, 200]))  # tiny to most of the pad
        top, left = rng.integers(0, PAD - size + 1, 2)       # off-centre, touching edges
        data = mnist_drawing(mnist.x_test[index], size, int(top), int(left), SMOOTHING[index % 4])
        drawn, general, took_drawing_path = both_paths(data, monkeypatch)
        assert_same(drawn, general)
        assert took_drawing_path, f"test digit {index}, {size} px"


@pytest.mark.parametrize("pen", [2, 6, PEN, 40], ids=["hairline", "thin", "page", "thick"])
def test_scribbles_thin_and_thick(pen, monkeypatch):
    rng = np.random.default_rng(int(pen))
    taken = 0
    for index in range(40):
        strokes = scribble(rng, int(rng.integers(1, 4)), int(rng.integers(1, 5)))
        drawn, general, took_drawing_path = both_paths(page_drawing(strokes, pen, smoothing=SMOOTHING[index % 4]),
                                                       monkeypatch)
        assert_same(drawn, general)
        taken += took_drawing_path
    # A pen twice the page's, crossing itself, makes blobs wider than a third of the
    # image: not only strokes, so some of those are the general path's.
    assert taken == 40 if pen <= PEN else taken >= 20


def test_numbers_on_the_wide_pad_and_light_ink_on_dark(mnist, monkeypatch):
    rng = np.random.default_rng(1)
    cases = [mnist_drawing(mnist.x_test[index], 200, 40, 20 + 280 * (index % 3), Image.Resampling.LANCZOS,
                           pad_width=3 * PAD) for index in range(6)]
    cases += [page_drawing(scribble(rng, 3, 4), pad_width=3 * PAD) for _ in range(6)]
    cases += [page_drawing(scribble(rng, 2, 4), ink=255, paper=0) for _ in range(6)]          # chalk
    # Grey paper (an L PNG): even only where ink is under a fifth and the smoothing does
    # not ring brighter than the paper; otherwise the general path estimates the paper.
    cases += [page_drawing(scribble(rng, 1, 2), ink=30, paper=225, smoothing=Image.Resampling.BOX, mode="L")
              for _ in range(6)]
    for data in cases:
        drawn, general, took_drawing_path = both_paths(data, monkeypatch)
        assert_same(drawn, general)
        assert took_drawing_path


def test_a_blank_pad_and_a_dot_say_the_same_both_ways(monkeypatch):
    for data in [page_drawing([]), page_drawing([[(0.5, 0.5)]], pen=1)]:
        drawn, general, took_drawing_path = both_paths(data, monkeypatch)
        assert isinstance(general, str) and "no digit found" in general
        assert drawn == general and took_drawing_path


@given(strokes=st.lists(st.lists(st.tuples(st.floats(-0.1, 1.1), st.floats(-0.1, 1.1)), min_size=1, max_size=8),
                        max_size=4),
       pen=st.floats(1, 60), ink=st.integers(0, 200), wide=st.booleans(), smoothing=st.sampled_from(SMOOTHING))
def test_any_strokes_give_the_general_paths_result(strokes, pen, ink, wide, smoothing):
    data = page_drawing(strokes, pen, pad_width=3 * PAD if wide else PAD, ink=ink, smoothing=smoothing)
    with pytest.MonkeyPatch.context() as monkeypatch:
        drawn, general, _ = both_paths(data, monkeypatch)
    assert_same(drawn, general)


def _transparent(data: bytes, colour: int) -> Image.Image:
    """The drawing as ink of one `colour` on a transparent canvas: its coverage as alpha."""
    coverage = 255 - np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    rgba = np.zeros(coverage.shape + (4,), np.uint8)
    rgba[..., :3], rgba[..., 3] = colour, coverage
    return Image.fromarray(rgba, "RGBA")


def test_transparent_grey_alpha_and_palette_drawings_give_the_general_paths_result(mnist, monkeypatch):
    """Whichever path takes them (a composite on paper may or may not hold only 8-bit levels)."""
    for index in range(8):
        data = mnist_drawing(mnist.x_test[index], 160, 60, 60, Image.Resampling.LANCZOS)
        white_ink = _transparent(data, 255)
        for image in [white_ink, _transparent(data, 0), white_ink.convert("LA"),
                      white_ink.quantize(16, method=Image.Quantize.FASTOCTREE),
                      Image.open(io.BytesIO(data)).convert("RGB").quantize(16)]:
            drawn, general, _ = both_paths(_png(image), monkeypatch)
            assert_same(drawn, general)


# --- anything else: the general path ----------------------------------------------------


def _shaded(data: bytes) -> bytes:
    """A drawing on paper lit unevenly: a light gradient across it (lossless PNG, opaque)."""
    gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)
    light = np.linspace(0.8, 1.0, gray.shape[1], dtype=np.float32)
    return _png(Image.fromarray(np.round(gray * light).astype(np.uint8)).convert("RGBA"))


def _sixteen_bit(data: bytes) -> bytes:
    """A 16-bit PNG with levels between 8-bit ones (8-bit levels times 257 are 8-bit still)."""
    gray = np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.uint16)
    return _png(Image.fromarray(gray * 256 + 100))


def test_photos_shaded_paper_16_bit_and_small_images_take_the_general_path(mnist, monkeypatch):
    rng = np.random.default_rng(2)
    drawing = mnist_drawing(mnist.x_test[0], 200, 40, 40, Image.Resampling.LANCZOS)
    cases = {
        "phone photo": phone_photo(mnist.x_test[1], rng),
        "noisy paper": jpeg_noise(mnist.x_test[2], rng),
        "photo of ruled paper": photo_like.photograph(photo_like.mnist_ink(mnist.x_test[3], 300), rng),
        "shaded paper (opaque RGBA PNG)": _shaded(drawing),
        "16-bit PNG": _sixteen_bit(drawing),
        "a filled disc wider than a third of the pad": page_drawing([[(0.5, 0.5)]], pen=0.6 * PAD),
        "64 px drawing": _png(Image.open(io.BytesIO(drawing)).resize((64, 64))),
    }
    for name, data in cases.items():
        drawn, general, took_drawing_path = both_paths(data, monkeypatch)
        assert_same(drawn, general)
        assert not took_drawing_path, name
