"""Reading whole numbers (mnist_digits.read and `mnist-digits read`): numbers composed from
MNIST test digits (tests/number_images.py) on a fixed seed, join and split cases one by
one, several lines, and every kind of bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from mnist_digits import cli
from mnist_digits import read as read_module
from mnist_digits.errors import InputImageError, NoDigitFound
from mnist_digits.predict import Predictor
from mnist_digits.read import MAX_MARKS, read_number
from number_images import compose_number, render


@pytest.fixture(scope="module")
def predictor(mlp_run):
    return Predictor.from_path(mlp_run)


@pytest.fixture(scope="module")
def test_digits(mnist):
    return mnist.split("test")


def canvas(ink: np.ndarray) -> np.ndarray:
    """Ink at MNIST's scale -> a canvas export (black on white, 4x larger)."""
    return render(np.pad(ink.astype(np.float32), 8), "canvas", seed=0)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def marks(ink: np.ndarray) -> int:
    return ndimage.label(ink > 0.5, structure=np.ones((3, 3)))[1]


# --- numbers composed from MNIST test digits ------------------------------------------


@pytest.mark.parametrize("spacing, style, at_least", [
    ("apart", "canvas", 0.8), ("apart", "photo", 0.8), ("touching", "canvas", 0.6), ("touching", "photo", 0.6),
])
def test_four_digit_numbers_are_read_exactly(predictor, test_digits, spacing, style, at_least):
    """Measured with this seed and the session's mlp: apart 90-95%, touching 75-80% (the
    benchmark has the full table); the margins keep the test from flaking on retraining."""
    images, labels = test_digits
    rng = np.random.default_rng(0)
    numbers = [compose_number(images, labels, rng, 4, spacing, style) for _ in range(40)]
    exact = np.mean([read_number(number.image, predictor).text == number.text for number in numbers])
    assert exact >= at_least, f"{exact:.0%} of 4-digit {spacing} {style} numbers read exactly"


def test_leaving_out_candidates_that_cannot_win_changes_no_answer(predictor, test_digits, monkeypatch):
    """read prepares a group whole, or its cheapest tiling, first and then only the candidate
    pieces that could still beat it (preparing pieces is most of its time): every digit, box
    and confidence is the same as when every candidate is prepared and read, from far fewer pieces."""
    images, labels = test_digits
    rng = np.random.default_rng(8)
    numbers = [compose_number(images, labels, rng, 4, spacing, style)
               for spacing, style, count in [("touching", "canvas", 30), ("touching", "photo", 10),
                                             ("apart", "canvas", 5), ("apart", "photo", 5)]
               for _ in range(count)]
    prepared = []
    prepare_piece = read_module.prepare_piece
    monkeypatch.setattr(read_module, "prepare_piece", lambda *args: prepared.append(1) or prepare_piece(*args))

    def every_candidate(flat, groups, predictor):
        pieces = []
        for group in groups:
            for piece in read_module._pieces(flat, group.mask, group.box, group.index, group.height):
                try:
                    piece.prepared = read_module.prepare_piece(piece.flat, piece.mask)
                except NoDigitFound:
                    continue
                pieces.append(piece)
        return pieces, predictor.probabilities([piece.prepared for piece in pieces])

    def answers():  # confidences to 5 decimals: TensorFlow's last bits depend on the batch
        return [[(digit.digit, digit.box, round(digit.confidence, 5)) for digit in read_number(number.image, predictor).digits]
                for number in numbers]

    left_out = answers()
    prepared_left_out = len(prepared)
    monkeypatch.setattr(read_module, "_read_pieces", every_candidate)
    assert answers() == left_out
    assert prepared_left_out < (len(prepared) - prepared_left_out) / 2, (prepared_left_out, len(prepared))


def test_each_digit_has_its_confidence_alternatives_and_box_in_the_images_pixels(predictor, test_digits):
    images, labels = test_digits
    number = compose_number(images, labels, np.random.default_rng(1), "2026", "apart", "canvas")
    result = read_number(number.image, predictor)
    assert result.text == "2026"
    height, width = number.image.shape
    boxes = [digit.box for digit in result.digits]
    assert [box[0] for box in boxes] == sorted(box[0] for box in boxes)  # left to right
    for digit, (x0, y0, x1, y1) in zip(result.digits, boxes):
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert number.image[y0:y1, x0:x1].min() < 64  # the box holds the digit's ink
        assert 0.1 < (y1 - y0) / height < 1
        chances = [digit.confidence] + [p for _, p in digit.alternatives]
        assert len(chances) == 3 and chances == sorted(chances, reverse=True)
        assert digit.digit not in dict(digit.alternatives)
        assert digit.prepared.shape == (28, 28)
    for a, b in zip(boxes, boxes[1:]):
        assert a[2] <= b[0] + 4  # apart digits: boxes side by side, not overlapping


@pytest.mark.parametrize("exif_turn", [None, 6])
def test_boxes_of_digits_at_the_images_edge_stay_inside_it(predictor, test_digits, exif_turn):
    """A big image is read at a smaller working size; its boxes, scaled back and rounded
    outwards, must not pass the edge -- nor the upright image's when EXIF turns it."""
    images, labels = test_digits
    number = compose_number(images, labels, np.random.default_rng(1), "2026", "apart", "canvas")
    inked = number.image < 128
    # Ink up to the right and bottom edges; paper above, so that it is still a drawing.
    right, bottom = np.flatnonzero(inked.any(axis=0))[-1] + 1, np.flatnonzero(inked.any(axis=1))[-1] + 1
    drawing = np.pad(number.image[:bottom, :right], ((200, 0), (0, 0)), constant_values=255)
    upright = Image.fromarray(drawing).resize((1333, round(1333 * drawing.shape[0] / drawing.shape[1])))
    width, height = upright.size
    buffer = io.BytesIO()
    if exif_turn is None:
        upright.save(buffer, format="PNG")
    else:  # stored turned a quarter, with the EXIF orientation that turns it back
        exif = Image.Exif()
        exif[0x0112] = exif_turn
        upright.transpose(Image.Transpose.ROTATE_90).save(buffer, format="PNG", exif=exif)
    result = read_number(buffer.getvalue(), predictor)
    assert result.text == "2026"
    for x0, y0, x1, y1 in (digit.box for digit in result.digits):
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert result.digits[-1].box[2] == width  # the last digit reaches the right edge


def test_a_photo_is_read_like_its_canvas(predictor, test_digits):
    images, labels = test_digits
    rng = np.random.default_rng(2)
    number = compose_number(images, labels, rng, "31415", "apart", "photo")
    assert isinstance(number.image, bytes)
    assert read_number(number.image, predictor).text == "31415"


# --- joining the pieces of one digit, splitting digits that touch ----------------------


def _digit_read_alone(predictor, images, labels, digit: int):
    """Test digits of one class that predict reads right, as ink (0-1)."""
    for index in np.flatnonzero(labels == digit)[:200]:
        ink = images[index] / 255.0
        if predictor.predict_image(canvas(ink)).digit == digit:
            yield ink


def test_a_broken_five_whose_top_stroke_is_apart_is_one_digit(predictor, test_digits):
    """Three 5s with their top stroke cut off by a 2-row gap: each is one digit, read as
    predict reads the same broken image; most still read as 5."""
    images, labels = test_digits
    read = []
    for ink in _digit_read_alone(predictor, images, labels, 5):
        rows = np.flatnonzero(ink.max(axis=1) > 0.5)
        for row in range(rows[0] + 3, rows[0] + 8):
            broken = ink.copy()
            broken[row:row + 2] = 0
            if marks(broken) == 2 and marks(broken[:row]) == 1:
                result = read_number(canvas(broken), predictor)
                assert len(result.digits) == 1, f"a 5 broken at row {row} read as {result.text!r}"
                assert result.text == str(predictor.predict_image(canvas(broken)).digit)
                read.append(result.text)
                break
        if len(read) == 3:
            break
    assert len(read) == 3 and read.count("5") >= 2, read


def test_a_four_whose_bar_stops_short_of_its_upright_is_one_digit(predictor, test_digits):
    images, labels = test_digits
    tried = 0
    for ink in _digit_read_alone(predictor, images, labels, 4):
        cols = np.flatnonzero(ink.max(axis=0) > 0.5)
        # The upright is the right half's heaviest column; cut the bar just left of it.
        upright = cols[0] + len(cols) // 2 + int(np.argmax((ink > 0.5).sum(axis=0)[cols[0] + len(cols) // 2:]))
        broken = ink.copy()
        broken[:, upright - 3:upright - 1] = 0
        left = broken[:, :upright - 1] > 0.5
        if marks(broken) != 2 or left.any(axis=1).sum() > 0.6 * (ink.max(axis=1) > 0.5).sum():
            continue
        tried += 1
        result = read_number(canvas(broken), predictor)
        assert len(result.digits) == 1, f"a two-stroke 4 read as {result.text!r}"
        if tried == 3:
            return
    assert tried, "no 4 to break"


def test_two_ones_close_together_are_two_digits(predictor, test_digits):
    images, labels = test_digits
    rng = np.random.default_rng(3)
    read = [read_number(compose_number(images, labels, rng, "11", 2, "canvas").image, predictor).text
            for _ in range(5)]
    assert read.count("11") >= 4, read


def test_two_zeros_touching_are_split_into_two(predictor, test_digits):
    images, labels = test_digits
    rng = np.random.default_rng(4)
    touching = 0
    for _ in range(10):
        number = compose_number(images, labels, rng, "00", -2, "canvas")
        if marks(1 - number.image / 255.0) != 1:
            continue  # slanted apart after all: not the case tested here
        touching += 1
        assert read_number(number.image, predictor).text == "00"
    assert touching >= 3


def test_a_one_touching_its_neighbour_is_split_off(predictor, test_digits):
    """A 1 overlapping its neighbour by 3 px makes a group narrower than one line height:
    it is still cut (with mlp: 28 of 40 read right; 20 when such groups were not split)."""
    images, labels = test_digits
    rng = np.random.default_rng(6)
    texts = ["12", "71", "14", "31", "17", "51", "19", "61"] * 5
    numbers = [compose_number(images, labels, rng, text, -3, "canvas") for text in texts]
    right = sum(read_number(number.image, predictor).text == number.text for number in numbers)
    assert right >= 26, f"{right} of {len(numbers)} read right"


def test_two_touching_digits_in_a_long_group_are_not_read_as_one(predictor, test_digits):
    """4-digit numbers whose digits overlap by 3 px are one group several digits wide: there a
    piece as wide as two digits costs more, so a pair the model reads confidently as one
    digit is still cut (with mlp: 24 of 120 read one digit short; 32 with the old cost, 1.0
    per line height beyond 0.7)."""
    images, labels = test_digits
    rng = np.random.default_rng(10)
    numbers = [compose_number(images, labels, rng, 4, -3, "canvas") for _ in range(120)]
    short = sum(len(read_number(number.image, predictor).text) < 4 for number in numbers)
    assert short <= 28, f"{short} of {len(numbers)} read one digit short or more"


def test_in_a_group_wider_than_a_digit_the_models_doubt_counts_more(predictor, test_digits):
    """480 4-digit photos whose digits overlap by 3 px: in a group wider than a digit, the
    model's log confidence counts twice against the costs of a split, so a pair it reads
    with some doubt as one digit is cut (with mlp: 115 read one digit short or more; 130
    when it counted once)."""
    images, labels = test_digits
    numbers = [compose_number(images, labels, rng, 4, -3, "photo", singles=False)
               for rng in (np.random.default_rng(14), np.random.default_rng(15)) for _ in range(240)]
    short = sum(len(read_number(number.image, predictor).text) < 4 for number in numbers)
    assert short <= 122, f"{short} of {len(numbers)} read one digit short or more"


def test_a_wide_digit_is_not_cut_into_a_digit_and_a_sliver(predictor, test_digits):
    """300 test digits stretched to 1.4 times their width, each alone: a cut through several
    strokes, or one leaving a piece much shorter than the digit, costs more (with mlp: 4 are
    read as more than one digit; 10 without the short-piece cost, 23 without the crossing cost)."""
    images, _ = test_digits
    split = []
    for index in range(300):
        wide = Image.fromarray(images[index].astype(np.float32) / 255, mode="F").resize((40, 28))
        text = read_number(canvas(np.asarray(wide)), predictor).text
        if len(text) != 1:
            split.append((index, text))
    assert len(split) <= 7, split


def test_specks_are_dropped_not_read(predictor, test_digits):
    images, labels = test_digits
    number = compose_number(images, labels, np.random.default_rng(5), "47", "apart", "canvas")
    specked = number.image.copy()
    specked[5:9, 5:9] = 0                           # a fleck in a corner
    specked[-10:-6, specked.shape[1] // 2:][:, :4] = 0  # and one below the digits
    assert read_number(specked, predictor).text == "47"


def test_a_light_digit_beside_a_dark_one_is_read_as_it_is_alone(predictor, test_digits):
    """A digit written with 60% of the ink of its neighbour: its strong ink at the dark
    digit's level is only its core (strokes lost); stretched to its own level, it is read
    as predict reads it alone (with mlp: 1 pair of 40 misread, 6 without the stretch)."""
    images, labels = test_digits
    misread = []
    for index in range(0, 80, 2):
        dark, light = images[index] / 255.0, images[index + 1] / 255.0 * 0.6
        expected = f"{predictor.predict_image(canvas(dark)).digit}{predictor.predict_image(canvas(light)).digit}"
        text = read_number(canvas(np.concatenate([dark, light], axis=1)), predictor).text
        if text != expected:
            misread.append((text, expected))
    assert len(misread) <= 2, misread


def test_a_light_one_beside_a_dark_digit_is_not_dropped_as_a_speck(predictor, test_digits):
    """A thin 1 written with 45% of its neighbour's ink has no strong ink of its own, or a few
    pixels: find_ink drops it as a speck. Stretched to its own level it weighs as much as a
    digit and is as tall, so it is read (with mlp: 1 pair of 40 misread; all 40 read without
    the 1 when only the marks find_ink kept could gain strong ink)."""
    images, labels = test_digits
    misread = []
    for one, other in zip(np.flatnonzero(labels == 1)[:40], np.flatnonzero(labels != 1)[:40]):
        dark, light = images[other] / 255.0, images[one] / 255.0 * 0.45
        expected = f"{predictor.predict_image(canvas(dark)).digit}1"
        text = read_number(canvas(np.concatenate([dark, light], axis=1)), predictor).text
        if text != expected:
            misread.append((text, expected))
    assert len(misread) <= 3, misread


# --- several lines ---------------------------------------------------------------------


def test_several_lines_give_one_line_of_text_each_top_to_bottom(predictor, test_digits):
    images, labels = test_digits
    rng = np.random.default_rng(6)
    top = compose_number(images, labels, rng, "12", "apart", "canvas").image
    bottom = compose_number(images, labels, rng, "345", "apart", "canvas").image
    width = max(top.shape[1], bottom.shape[1])
    page = np.full((top.shape[0] + bottom.shape[0] + 20, width), 255, dtype=np.uint8)
    page[:top.shape[0], :top.shape[1]] = top
    page[-bottom.shape[0]:, :bottom.shape[1]] = bottom
    result = read_number(png(page), predictor)
    assert result.text == "12\n345"
    assert [digit.line for digit in result.digits] == [0, 0, 1, 1, 1]


# --- bad input -------------------------------------------------------------------------


def test_a_blank_image_has_no_digits_found(predictor):
    with pytest.raises(InputImageError, match="^no digits found"):
        read_number(np.full((100, 300), 255, dtype=np.uint8), predictor)


def test_a_page_of_marks_is_refused_instead_of_guessed(predictor):
    page = np.full((300, 600), 255, dtype=np.uint8)
    for row in range(8):
        for col in range(12):
            page[10 + row * 36:34 + row * 36, 10 + col * 48:16 + col * 48] = 0  # 96 strokes
    with pytest.raises(InputImageError, match=f"more than a number has \\(at most {MAX_MARKS}\\)"):
        read_number(page, predictor)


def test_a_long_scribble_is_refused_instead_of_read_as_dozens_of_digits(predictor):
    """One connected wavy line across a wide image: one mark, but cut into far more digits
    than a number has."""
    scribble = Image.new("L", (4000, 120), 255)
    ImageDraw.Draw(scribble).line([(20 + x, 60 + 30 * np.sin(x / 25)) for x in range(0, 3960, 2)], fill=0, width=5)
    with pytest.raises(InputImageError, match=f"digits: more than a number has \\(at most {MAX_MARKS}\\)"):
        read_number(np.asarray(scribble), predictor)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"), (b"not an image at all", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
])
def test_what_predict_refuses_read_refuses_the_same_way(predictor, data, message):
    with pytest.raises(InputImageError, match=message):
        read_number(data, predictor)


def test_any_classifier_works_not_only_a_predictor(mlp_run, predictor, test_digits):
    from mnist_digits.classifiers import load_classifier

    images, labels = test_digits
    number = compose_number(images, labels, np.random.default_rng(7), "907", "apart", "canvas")
    assert read_number(number.image, load_classifier(mlp_run)).text == read_number(number.image, predictor).text


# --- the command -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def numbers_folder(test_digits, tmp_path_factory):
    images, labels = test_digits
    folder = tmp_path_factory.mktemp("numbers")
    rng = np.random.default_rng(8)
    (folder / "year.png").write_bytes(png(compose_number(images, labels, rng, "1984", "apart", "canvas").image))
    (folder / "meter.jpg").write_bytes(compose_number(images, labels, rng, "307", "apart", "photo").image)
    (folder / "blank.png").write_bytes(png(np.full((80, 200), 255, dtype=np.uint8)))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return folder


def test_the_command_prints_each_number_and_exits_1_when_some_failed(capsys, mlp_run, numbers_folder):
    code = cli.main(["read", str(mlp_run), str(numbers_folder / "year.png"), str(numbers_folder / "blank.png")])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith(f"{numbers_folder / 'year.png'}: 1984  (4 digits, lowest confidence ")
    # The one error line; the first run of a model may also say it is converting it for LiteRT.
    errors = [line for line in err.splitlines() if not line.startswith("Converting ")]
    assert errors == [f"mnist-digits: error: {numbers_folder / 'blank.png'}: no digits found "
                      "(the image is blank or has almost no contrast)"]


def test_json_and_annotated_copies(capsys, mlp_run, numbers_folder, tmp_path):
    out_dir = tmp_path / "annotated"
    code = cli.main(["read", str(mlp_run), str(numbers_folder), "--json", "--save-annotated", str(out_dir)])
    records = {os.path.basename(r["file"]): r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert code == 1
    assert set(records["year.png"]) == {"file", "text", "digits", "unsure"}
    assert records["year.png"]["text"] == "1984" and records["meter.jpg"]["text"] == "307"
    assert set(records["year.png"]["digits"][0]) == {"digit", "confidence", "alternatives", "unsure", "box"}
    assert set(records["blank.png"]) == set(records["broken.png"]) == {"file", "error"}
    assert sorted(p.name for p in out_dir.iterdir()) == ["meter.png", "year.png"]
    original = Image.open(numbers_folder / "year.png")
    annotated = Image.open(out_dir / "year.png")
    assert annotated.size == original.size and annotated.mode == "RGB"
    box = records["year.png"]["digits"][0]["box"]
    assert np.asarray(annotated)[box[1], box[0]].tolist() != [255, 255, 255]  # the box is drawn


def test_the_installed_command_never_shows_a_traceback(mlp_run, numbers_folder, tmp_path):
    command = [sys.executable, "-m", "mnist_digits.cli", "read", str(mlp_run), str(numbers_folder),
               str(tmp_path / "missing.png"), "--save-annotated", str(numbers_folder / "year.png")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("mnist-digits: error: --save-annotated")
    command = command[:-2]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mnist-digits: error: ")]
    assert len(errors) == 3 and len(result.stdout.splitlines()) == 2
