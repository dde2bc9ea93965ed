"""preprocess: a person's image -> 28x28 like MNIST.

The realistic inputs are made here from MNIST test digits: dark ink on paper at several
scales and offsets, thick and thin pens, slight rotation, JPEG noise, a transparent
canvas export, and a phone photo (coloured, unevenly lit, JPEG, stored sideways with an
EXIF orientation). Bad inputs are made here too, one kind per test.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps
from scipy import ndimage

from mnist_digits import preprocess
from mnist_digits.errors import InputImageError
from mnist_digits.decode import MAX_PIXELS, load_image
from mnist_digits.preprocess import prepare

# --- photo-like inputs from MNIST digits ---------------------------------------------


def _ink(digit: np.ndarray, size: int, stroke: int = 0) -> np.ndarray:
    """The digit (uint8, white on black) drawn `size` px square, as ink coverage 0-1;
    a positive `stroke` widens the pen by that many px, a negative one narrows it."""
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    ink = np.clip(np.asarray(big, dtype=np.float32) / 255.0, 0.0, 1.0)
    if stroke > 0:
        ink = ndimage.grey_dilation(ink, size=(stroke, stroke))
    elif stroke < 0:
        ink = ndimage.grey_erosion(ink, size=(-stroke, -stroke))
    return ink


def _on_paper(ink, canvas, rng, paper=0.92, ink_level=0.15):
    """Ink on a canvas x canvas sheet at a random offset (1 = white)."""
    height, width = ink.shape
    page = np.full((canvas, canvas), paper, np.float32)
    top, left = rng.integers(0, canvas - height + 1), rng.integers(0, canvas - width + 1)
    region = page[top:top + height, left:left + width]
    page[top:top + height, left:left + width] = region * (1 - ink) + ink_level * ink
    return page


def _u8(values):
    return np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)


def _encode(image: Image.Image, fmt="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def paper(digit, rng):
    size = int(rng.integers(40, 240))
    return _encode(Image.fromarray(_u8(_on_paper(_ink(digit, size), int(size * rng.uniform(1.2, 2.5)), rng))))


def thick_pen(digit, rng):
    size = int(rng.integers(100, 200))
    return _encode(Image.fromarray(_u8(_on_paper(_ink(digit, size, size // 12), int(size * 1.5), rng))))


def thin_pen(digit, rng):
    size = int(rng.integers(100, 200))
    return _encode(Image.fromarray(_u8(_on_paper(_ink(digit, size, -(size // 28)), int(size * 1.5), rng))))


def rotated(digit, rng):
    ink = Image.fromarray(_ink(digit, 120), mode="F").rotate(
        float(rng.uniform(-12, 12)), Image.Resampling.BILINEAR, expand=True)
    return _encode(Image.fromarray(_u8(_on_paper(np.clip(np.asarray(ink), 0, 1), 200, rng))))


def jpeg_noise(digit, rng):
    size = int(rng.integers(80, 160))
    page = _on_paper(_ink(digit, size), int(size * 1.8), rng) + rng.normal(0, 0.04, (int(size * 1.8),) * 2)
    return _encode(Image.fromarray(_u8(page)), "JPEG", quality=int(rng.integers(30, 70)))


def canvas_export(digit, rng):
    """A web canvas export: black ink, transparent background (black under it too)."""
    ink = np.zeros((280, 280), np.float32)
    top, left = rng.integers(0, 80, 2)
    ink[top:top + 200, left:left + 200] = _ink(digit, 200, 5)
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., 3] = _u8(ink)
    return _encode(Image.fromarray(rgba, "RGBA"))


def phone_photo(digit, rng):
    """Blue pen on cream paper, light falling off across the page, sensor noise, JPEG,
    stored sideways or upside down with the EXIF orientation that puts it upright."""
    size = int(rng.integers(150, 300))
    canvas = int(size * 2.2)
    page = _on_paper(_ink(digit, size, 3), canvas, rng, paper=1.0, ink_level=0.0)
    rows, cols = np.mgrid[0:canvas, 0:canvas] / canvas
    light = 0.55 + 0.2 * (cols * rng.uniform(0.3, 1) + rows * rng.uniform(0.3, 1))
    cream, blue = np.array([0.95, 0.92, 0.85]), np.array([0.15, 0.2, 0.55])
    rgb = (page[..., None] * cream + (1 - page[..., None]) * blue) * light[..., None]
    upright = Image.fromarray(_u8(rgb + rng.normal(0, 0.02, rgb.shape)))
    orientation = int(rng.choice([3, 6, 8]))
    stored = {3: upright.rotate(180), 6: upright.rotate(90, expand=True),
              8: upright.rotate(270, expand=True)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(stored, "JPEG", quality=85, exif=exif)


KINDS = [paper, thick_pen, thin_pen, rotated, jpeg_noise, canvas_export, phone_photo]


def realistic_inputs(images, labels, seed=0):
    """(kind, encoded bytes, label): the kinds in turn over the digits."""
    rng = np.random.default_rng(seed)
    return [(KINDS[i % len(KINDS)].__name__, KINDS[i % len(KINDS)](image, rng), int(label))
            for i, (image, label) in enumerate(zip(images, labels))]


def plain_resize(data: bytes) -> np.ndarray:
    """What a naive script does: the whole image, grey, inverted, squashed to 28x28
    (with EXIF orientation and transparency handled, to be fair to it)."""
    image = load_image(data)
    if "A" in image.getbands():
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    gray = ImageOps.invert(image.convert("L")).resize((28, 28), Image.Resampling.LANCZOS)
    return np.asarray(gray, np.float32) / 255.0


@pytest.fixture(scope="module")
def classifier(mlp_run):
    from mnist_digits.classifiers import load_classifier

    return load_classifier(mlp_run)


def _accuracy(classifier, images, labels) -> float:
    return float(np.mean(classifier.predict_proba(np.stack(images)).argmax(axis=1) == labels))


# --- what the model thinks ------------------------------------------------------------


def test_preparing_mnist_test_digits_costs_at_most_0_3_points(classifier, mnist):
    """All 10,000 test digits, as the README says (measured: 98.46% -> 98.32%; on the first
    2,000, the easier ones, it costs nothing and would hide a loss)."""
    images, labels = mnist.x_test, mnist.y_test
    raw = _accuracy(classifier, list(images / 255.0), labels)
    prepared = _accuracy(classifier, [prepare(image) for image in images], labels)
    assert prepared >= raw - 0.003, f"raw {raw:.2%}, prepared {prepared:.2%}"


@pytest.fixture(scope="module")
def realistic(classifier, mnist):
    """700 photo-like inputs from test digits spread evenly over the whole test set (both
    of its halves, which differ in difficulty: 0 to 9,999), 100 per kind, with what the
    model reads in each."""
    picks = np.linspace(0, len(mnist.x_test) - 1, 700).round().astype(int)
    images, labels = mnist.x_test[picks], mnist.y_test[picks]
    inputs = realistic_inputs(images, labels)
    kinds = np.array([kind for kind, _, _ in inputs])
    prepared = classifier.predict_proba(np.stack([prepare(data) for _, data, _ in inputs])).argmax(1)
    plain = classifier.predict_proba(np.stack([plain_resize(data) for _, data, _ in inputs])).argmax(1)
    original = classifier.predict_proba(images / 255.0).argmax(1)
    return kinds, labels, prepared, plain, original


def test_realistic_inputs_are_read_right_at_least_97_percent(realistic):
    """The default mlp reads at least 96.5% of all the photo-like inputs right (its own
    mistakes on the clean digits included), and no kind of input falls far behind.
    Measured 2026-11-28: 98.29% (688 of 700), each kind 97-99%; the floors leave 12
    images overall and 5 per kind for other TensorFlow builds. These inputs were used to
    tune `prepare`: the independent set above is the honest measure."""
    kinds, labels, prepared, _, _ = realistic
    right = prepared == labels
    by_kind = {kind: round(float(np.mean(right[kinds == kind])), 3) for kind in dict.fromkeys(kinds)}
    assert np.mean(right) >= 0.965, by_kind
    assert min(by_kind.values()) >= 0.92, by_kind


def test_realistic_inputs_cost_little_against_the_clean_originals(realistic):
    """All digits, the model's own mistakes included: within 2.5 points of what it
    scores on the same digits as clean MNIST images."""
    _, labels, prepared, _, original = realistic
    assert np.mean(prepared == labels) >= np.mean(original == labels) - 0.025


def test_a_plain_resize_of_the_whole_image_does_far_worse(realistic):
    kinds, labels, prepared, plain, _ = realistic
    assert np.mean(plain == labels) <= 0.5
    assert np.mean(prepared == labels) - np.mean(plain == labels) >= 0.4


# --- an independent photo-like set (tests/photo_like.py: no code shared with preprocess) ---


@pytest.fixture(scope="module")
def photo_like_answers(classifier, mnist):
    """part -> (source of each sample, whether the model read it right). Fonts missing
    outside CI: the font samples are left out (in CI, .ci/run installs them)."""
    import os

    import photo_like

    if photo_like.missing_fonts() and os.environ.get("CI"):
        pytest.fail(f"fonts missing in CI: {photo_like.missing_fonts()}")
    answers = {}
    for part in photo_like.PARTS:
        samples = photo_like.photo_like_set(part, mnist.x_test, mnist.y_test, mnist_count=200,
                                            per_font_digit=3)
        # "no digit found" counts as a wrong answer: the user got none.
        prepared = [prepared for prepared, error in preprocess.prepare_many([s.data for s in samples])]
        blank = np.zeros((28, 28), np.float32)
        read = classifier.predict_proba(np.stack([blank if p is None else p for p in prepared])).argmax(1)
        right = (read == [sample.label for sample in samples]) & np.array([p is not None for p in prepared])
        answers[part] = (np.array([sample.source for sample in samples]), right)
    return answers


# Measured 2026-11-28 with the default mlp (seed 0): development 76.5% of the 200 MNIST
# digits and 81.7% of the 120 font digits; reporting 82.0% and 74.2%. The floors sit about
# 8 points lower, for other TensorFlow builds and recipe changes (±3 points is one standard
# error on 200 samples).
@pytest.mark.parametrize("part", ["development", "reporting"])
def test_independent_photo_like_mnist_digits_are_read(photo_like_answers, part):
    sources, right = photo_like_answers[part]
    assert np.sum(sources == "mnist") == 200
    assert right[sources == "mnist"].mean() >= 0.68


@pytest.mark.parametrize("part", ["development", "reporting"])
def test_independent_photo_like_font_digits_are_read(photo_like_answers, part):
    import photo_like

    if photo_like.missing_fonts():
        pytest.skip(f"handwriting fonts not installed (Debian packages, see .ci/run): "
                    f"{photo_like.missing_fonts()}")
    sources, right = photo_like_answers[part]
    assert np.sum(sources != "mnist") == 4 * 10 * 3  # every font, every digit
    assert right[sources != "mnist"].mean() >= 0.62


def sheet_on_table(digit, rng):
    """A sheet of paper smaller than the dark table it lies on (the paper is not the
    majority of the picture)."""
    page = np.full((400, 500), 0.25, np.float32)
    page[60:320, 100:360] = _on_paper(_ink(digit, 140), 260, rng)
    return _encode(Image.fromarray(_u8(page)))


def hard_shadow(digit, rng):
    """A shadow with a soft edge across a third of the page."""
    rows, cols = np.mgrid[0:300, 0:300]
    page = _on_paper(_ink(digit, 120), 300, rng) * np.where(rows + cols < 250, 0.6, 1.0)
    return _encode(Image.fromarray(_u8(ndimage.gaussian_filter(page, 4))))


def speck(digit, rng):
    """A fly speck of ink in a corner, far from the digit."""
    page = _on_paper(_ink(digit, 120), 300, rng)
    page[10:16, 280:290] = 0.2
    return _encode(Image.fromarray(_u8(page)))


@pytest.mark.parametrize("make", [sheet_on_table, hard_shadow, speck])
def test_photos_with_a_table_a_shadow_or_a_speck(classifier, mnist, make):
    rng = np.random.default_rng(1)
    images, labels = mnist.x_test[:60], mnist.y_test[:60]
    readable = classifier.predict_proba(images / 255.0).argmax(1) == labels
    prepared = [prepare(make(image, rng)) for image in images[readable]]
    assert _accuracy(classifier, prepared, labels[readable]) >= 0.9


# --- the prepared image ------------------------------------------------------------------


def test_prepared_digit_is_shaped_like_mnist(mnist):
    rng = np.random.default_rng(3)
    for data in [paper(mnist.x_test[0], rng), phone_photo(mnist.x_test[1], rng)]:
        prepared = prepare(data)
        assert prepared.shape == (28, 28) and prepared.dtype == np.float32
        assert prepared.min() >= 0.0 and prepared.max() == pytest.approx(1.0, abs=0.02)
        # White ink on black, centre of mass at MNIST's (14, 14).
        assert prepared[0].max() == 0 and prepared[:, 0].max() == 0
        assert np.allclose(ndimage.center_of_mass(prepared), (14, 14), atol=0.6)
        # The strong ink spans 20 px on its longer side.
        strong = prepared > 0.5
        rows, cols = np.flatnonzero(strong.any(1)), np.flatnonzero(strong.any(0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)


def test_dark_on_light_and_light_on_dark_give_the_same_digit(mnist):
    digit = np.asarray(Image.fromarray(mnist.x_test[3]).resize((140, 140)))
    assert np.abs(prepare(digit) - prepare(255 - digit)).max() < 0.02


def test_steps_are_returned_in_order_for_display(mnist):
    prepared, steps = prepare(canvas_export(mnist.x_test[5], np.random.default_rng(0)), return_steps=True)
    assert list(steps) == ["gray", "ink", "flat", "crop", "stroke", "fit", "prepared"]
    assert all(step.ndim == 2 for step in steps.values())
    assert np.array_equal(steps["prepared"], prepared)


@pytest.mark.parametrize("make", [
    lambda d: d,                                            # uint8 gray
    lambda d: d.astype(np.float32) / 255,                   # float 0-1
    lambda d: np.repeat(d[..., None], 3, axis=2),           # RGB
    lambda d: np.dstack([np.zeros_like(d)] * 3 + [d]),      # RGBA: black ink, transparent
    lambda d: d.astype(np.uint16) * 257,                    # 16-bit
    lambda d: d > 127,                                      # bool
], ids=["uint8", "float", "rgb", "rgba", "uint16", "bool"])
def test_arrays_of_any_common_kind_are_prepared_alike(mnist, make):
    digit = mnist.x_test[7]
    assert np.abs(prepare(make(digit)) - prepare(digit)).mean() < 0.03


def test_exif_orientation_is_applied(mnist):
    upright = Image.fromarray(255 - mnist.x_test[9]).resize((120, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter anticlockwise: show it turned clockwise
    sideways = _encode(upright.rotate(90, expand=True), "JPEG", quality=95, exif=exif)
    assert load_image(sideways).size == upright.size
    assert np.abs(prepare(sideways) - prepare(upright)).mean() < 0.02


def _similar(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_transparent_canvas_is_not_read_as_black(mnist):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = mnist.x_test[0]  # black ink: only the alpha channel holds the digit
    image = Image.fromarray(rgba, "RGBA")
    reference = prepare(mnist.x_test[0])
    assert np.abs(prepare(image) - reference).mean() < 0.02
    # A palette image with a transparent colour, as GIF and small PNG exports are
    # (16 levels of transparency: close, not equal).
    big = image.resize((140, 140))
    palette = big.quantize(16, method=Image.Quantize.FASTOCTREE)
    assert palette.mode == "P" and "transparency" in Image.open(io.BytesIO(_encode(palette))).info
    assert _similar(prepare(_encode(palette)), prepare(big)) > 0.95


def test_16_bit_png_is_scaled_by_its_own_range(mnist):
    digit = np.asarray(Image.fromarray(255 - mnist.x_test[2]).resize((100, 100)))
    sixteen = Image.fromarray(digit.astype(np.uint16) * 257)
    assert Image.open(io.BytesIO(_encode(sixteen))).mode == "I;16"
    assert np.abs(prepare(_encode(sixteen)) - prepare(digit)).max() < 0.02


def test_big_photo_is_decoded_small_and_still_read(mnist):
    page = _on_paper(_ink(mnist.x_test[4], 1200), 4000, np.random.default_rng(0))
    photo = _encode(Image.fromarray(_u8(page)).convert("RGB"), "JPEG", quality=80)
    assert max(load_image(photo).size) == 4000
    assert np.abs(prepare(photo) - prepare(mnist.x_test[4])).mean() < 0.05


# --- no digit --------------------------------------------------------------------------------


NOISY_PAPER = np.clip(np.random.default_rng(0).normal(230, 6, (300, 300)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("data", [
    _encode(Image.new("L", (200, 200), 255)),
    _encode(Image.new("L", (200, 200), 0)),
    _encode(Image.new("RGBA", (200, 200), (0, 0, 0, 0))),
    _encode(Image.new("L", (1, 1), 0)),
    _encode(Image.fromarray(NOISY_PAPER).convert("RGB"), "JPEG", quality=70),
], ids=["white", "black", "transparent", "one-pixel", "noisy-paper-jpeg"])
def test_blank_images_say_no_digit_found(data):
    with pytest.raises(InputImageError, match="^no digit found"):
        prepare(data)


# --- bad files, each with its own clear message ----------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a 1x1 image's data after it."""
    tiny = _encode(Image.new("L", (1, 1)))
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return tiny[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + tiny[33:]


def _frames(fmt, **options):
    first, second = Image.new("L", (28, 28), 0), Image.new("L", (28, 28), 255)
    return _encode(first, fmt, save_all=True, append_images=[second], **options)


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


BAD_FILES = {
    "empty": (lambda: b"", "empty file"),
    "text": (lambda: b"hello, I am a text file called digit.png\n", "not an image"),
    "truncated-png": (lambda: _cut(_encode(Image.effect_noise((300, 300), 60))), "truncated"),
    "truncated-jpeg": (lambda: _cut(_encode(Image.effect_noise((300, 300), 60), "JPEG")), "truncated"),
    "bomb-huge": (lambda: _png_header_only(100_000, 100_000), "over the limit"),
    "bomb-over-our-limit": (lambda: _png_header_only(8000, 8000), "over the limit"),
    "animated-gif": (lambda: _frames("GIF"), "animated image \\(more than one frame\\)"),
    "animated-png": (lambda: _frames("PNG"), "animated image \\(more than one frame\\)"),
    "animated-webp": (lambda: _frames("WEBP"), "animated image \\(more than one frame\\)"),
    "multi-page-tiff": (lambda: _frames("TIFF"), "multi-page image \\(more than one frame\\)"),
    "heic": (lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIC"),
    "eps": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n", "not an image"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_gets_a_clear_one_line_error(kind, tmp_path):
    make, reason = BAD_FILES[kind]
    path = tmp_path / f"digit-{kind}.png"
    path.write_bytes(make())
    for source in (path, path.read_bytes()):
        with pytest.raises(InputImageError, match=reason) as caught:
            prepare(source)
        assert "\n" not in str(caught.value)


def test_bomb_is_refused_before_decoding(monkeypatch):
    assert 8000 * 8000 > MAX_PIXELS
    bomb = _png_header_only(8000, 8000)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a bomb"))
    with pytest.raises(InputImageError, match="8000x8000"):
        load_image(bomb)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputImageError, match="no such file"):
        prepare(tmp_path / "nowhere.png")
    with pytest.raises(InputImageError, match="folder"):
        prepare(tmp_path)


@pytest.mark.parametrize("array", [np.zeros((0, 5)), np.zeros((4, 4, 4, 4)), np.full((9, 9), np.nan)],
                         ids=["empty", "4-d", "nan"])
def test_arrays_that_are_not_images(array):
    with pytest.raises(InputImageError):
        prepare(array)


def test_prepare_many_reports_errors_in_place(mnist):
    results = preprocess.prepare_many([mnist.x_test[0], b"", mnist.x_test[1]])
    assert [error is None for _, error in results] == [True, False, True]
    assert results[1][1].startswith("empty file")


# --- the faster equivalents inside the preparation give the same values ----------------


@pytest.mark.parametrize("radius", [1, 2, 3, 7, 15])
def test_thick_pen_erosion_is_scipys_grey_erosion_value_for_value(radius):
    """The disk erosion of a thick pen, done as 1-D filters, changes no pixel of what
    SciPy's 2-D footprint gives (so no prepared digit changes)."""
    disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    rng = np.random.default_rng(radius)
    for height, width in [(1, 1), (5, 40), (37, 23), (90, 70)]:
        values = rng.random((height, width)).astype(np.float32)
        expected = ndimage.grey_erosion(values, footprint=disk, mode="constant", cval=0.0)
        assert np.array_equal(preprocess._erode(values, disk), expected)


@pytest.mark.parametrize("kind", ["continuous", "few levels", "mostly zero"])
def test_quantiles_are_numpys_nearest_rank_quantiles(kind):
    rng = np.random.default_rng(0)
    values = {"continuous": rng.random((60, 50)), "few levels": rng.integers(0, 4, (60, 50)) / 3,
              "mostly zero": rng.random((60, 50)) * (rng.random((60, 50)) > 0.95)}[kind].astype(np.float32)
    fractions = (0.01, 0.2, 0.5, 0.8, 0.99, 0.999)
    expected = [float(value) for value in np.quantile(values, fractions, method="nearest")]
    assert preprocess._quantiles(values, fractions) == expected
