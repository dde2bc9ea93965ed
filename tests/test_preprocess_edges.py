"""preprocess keeps a drawing's strokes that touch the pad's edge.

A photo's marks at its edge (a shadow, the table round the sheet) are dropped when there is
ink away from the edge; a drawing's are strokes of the digit. Drawings are made the way
the page makes them (test_preprocess_drawings.page_drawing: the page's pen, #111 on white,
sent 140 px high), digits drawn large with the page's pen so that ink and its antialiasing
cover more than a fifth of the pad, each with one separate stroke that reaches an edge:
a 5's top bar, a 4's upright, a 7's cross-bar -- on the digit pad and the number pad.
Every stroke must be in the digit's mask, whichever path (drawing or general) finds it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mnist_digits import preprocess

from test_preprocess_drawings import PEN, SMOOTHING, assert_same, both_paths, page_drawing

# Digits on a unit pad (x right, y down): the body clear of the edges, one separate stroke
# reaching an edge (EDGE stands for where its pen's centre ends: on the edge or up to 0.03
# inside it, less than the pen's half-width: the stroke runs off the pad).
EDGE = None
LAYOUTS = {
    "5, top bar at the top": [[(0.45, EDGE), (0.95, EDGE)],
                              [(0.3, 0.15), (0.26, 0.45), (0.6, 0.38), (0.88, 0.6), (0.82, 0.85),
                               (0.5, 0.93), (0.18, 0.84)]],
    "5, top bar at the right": [[(0.42, 0.1), (EDGE, 0.1)],
                                [(0.3, 0.12), (0.26, 0.45), (0.6, 0.38), (0.88, 0.6), (0.82, 0.85),
                                 (0.5, 0.93), (0.18, 0.84)]],
    "4, upright from the top": [[(0.5, 0.08), (0.12, 0.62), (0.66, 0.62)], [(0.8, EDGE), (0.8, 0.92)]],
    "4, upright to the bottom": [[(0.5, 0.08), (0.12, 0.62), (0.66, 0.62)], [(0.8, 0.1), (0.8, EDGE)]],
    "7, cross-bar at the left": [[(0.12, 0.1), (0.9, 0.1), (0.45, 0.93)], [(EDGE, 0.52), (0.45, 0.52)]],
}
# The edge each layout's separate stroke reaches: 0 (top or left) or 1 (bottom or right).
EDGE_SIDE = {"5, top bar at the top": 0, "5, top bar at the right": 1, "4, upright from the top": 0,
             "4, upright to the bottom": 1, "7, cross-bar at the left": 0}


def digit_strokes(layout: str, rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """A layout as one hand draws it: every point moved a little, the edge stroke ending
    on the pad's edge or a little inside it. (A stroke drawn mostly past the edge leaves a
    sliver lighter than SPECK_FRACTION of the digit: a speck, another rule's business.)"""
    strokes = []
    for stroke in LAYOUTS[layout]:
        points = []
        for x, y in stroke:
            edge = abs(EDGE_SIDE[layout] - float(rng.uniform(0.0, 0.03)))
            x = edge if x is EDGE else x + float(rng.uniform(-0.02, 0.02))
            y = edge if y is EDGE else y + float(rng.uniform(-0.02, 0.02))
            points.append((x, y))
        strokes.append(points)
    return strokes


def on_number_pad(digits: list[list[list[tuple[float, float]]]]) -> list[list[tuple[float, float]]]:
    """Digits side by side on the number pad (three digit pads wide), one in each third."""
    return [[((place + x) / 3, y) for x, y in stroke] for place, strokes in enumerate(digits) for stroke in strokes]


def lost_strokes(strokes, pen: float = PEN, pad_width: int = 280, smoothing=Image.Resampling.LANCZOS) -> list[int]:
    """Which strokes of the drawing are (mostly) missing from the ink preprocess reads."""
    mask = preprocess.find_ink(page_drawing(strokes, pen, pad_width, smoothing=smoothing)).mask
    lost = []
    for index, stroke in enumerate(strokes):
        alone = np.asarray(Image.open(io.BytesIO(page_drawing([stroke], pen, pad_width, smoothing=smoothing)))
                           .convert("L")) < 128
        if mask[alone].mean() < 0.5:
            lost.append(index)
    return lost


def single_digits(count_per_layout: int, seed: int):
    rng = np.random.default_rng(seed)
    return [(f"{layout} #{index}", digit_strokes(layout, rng), SMOOTHING[index % len(SMOOTHING)])
            for layout in LAYOUTS for index in range(count_per_layout)]


def numbers(count: int, seed: int):
    """Three-digit numbers whose edge strokes reach the number pad's top, bottom or sides:
    a 7 with its cross-bar first, a 5 or 4 with a stroke at the top or bottom next, any last
    (a 5 whose bar reaches the right edge among them)."""
    rng = np.random.default_rng(seed)
    middle = ["5, top bar at the top", "4, upright from the top", "4, upright to the bottom"]
    cases = []
    for index in range(count):
        layouts = ["7, cross-bar at the left", middle[index % 3], list(LAYOUTS)[index % len(LAYOUTS)]]
        strokes = on_number_pad([digit_strokes(layout, rng) for layout in layouts])
        cases.append((" ".join(layout[0] for layout in layouts), strokes, SMOOTHING[index % len(SMOOTHING)]))
    return cases


def test_digits_keep_a_separate_stroke_that_touches_the_pads_edge():
    for name, strokes, smoothing in single_digits(8, seed=1):
        assert lost_strokes(strokes, smoothing=smoothing) == [], name


def test_numbers_keep_strokes_that_touch_the_number_pads_edge():
    for name, strokes, smoothing in numbers(12, seed=2):
        assert lost_strokes(strokes, pad_width=3 * 280, smoothing=smoothing) == [], name


@pytest.mark.parametrize("pen", [PEN / 2, PEN, 1.3 * PEN], ids=["thin", "page", "thicker"])
def test_the_pen_width_does_not_decide_whether_a_stroke_is_kept(pen):
    for name, strokes, smoothing in single_digits(3, seed=3):
        assert lost_strokes(strokes, pen, smoothing=smoothing) == [], name


def test_both_paths_agree_and_the_drawing_path_takes_them(monkeypatch):
    cases = [(strokes, 280, smoothing) for _, strokes, smoothing in single_digits(3, seed=4)]
    cases += [(strokes, 3 * 280, smoothing) for _, strokes, smoothing in numbers(6, seed=4)]
    for strokes, pad_width, smoothing in cases:
        drawn, general, took_drawing_path = both_paths(page_drawing(strokes, PEN, pad_width, smoothing=smoothing),
                                                       monkeypatch)
        assert_same(drawn, general)
        assert took_drawing_path


def saturated_photo_with_a_shadow(digit: np.ndarray, rng: np.random.Generator, band: float) -> bytes:
    """A photo of a marker-thick digit on overexposed paper (clipped to one exact white over
    half of it) with a hard shadow `band` of its width wide along the left edge (narrower
    than a third: the background estimate does not see it), sensor noise, lossless PNG."""
    side = 200
    coverage = np.asarray(Image.fromarray(digit).resize((150, 150), Image.Resampling.BICUBIC), np.float32) / 255
    page = np.ones((side, side), np.float32)
    top, left = rng.integers(0, side - 150 + 1, 2)
    page[top:top + 150, left:left + 150] -= 0.9 * ndimage.grey_dilation(coverage, size=(9, 9))  # a marker
    columns = np.broadcast_to(np.arange(side), (side, side))
    shadow = ndimage.gaussian_filter(np.where(columns < band * side, 0.4, 1.0), 3)
    photo = page * shadow * 1.15 + rng.normal(0, 0.02, page.shape)
    return png(np.round(np.clip(photo, 0, 1) * 255).astype(np.uint8))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("band", [0.1, 0.2])
def test_a_photo_on_clipped_white_paper_still_drops_a_narrow_shadow_at_its_edge(mnist, band):
    """(With under a fifth not paper, the histogram calls the paper even and the shadow is
    kept, as before: a limit of the 80% rule, not tested here.)"""
    rng = np.random.default_rng(5)
    tested = 0
    for index in range(30):
        data = saturated_photo_with_a_shadow(mnist.x_test[index], rng, band)
        gray = np.asarray(Image.open(io.BytesIO(data)))
        assert (gray == 255).mean() > 0.5
        if (gray < 255).mean() <= 0.2:
            continue
        tested += 1
        mask = preprocess.find_ink(data).mask
        assert not mask[:, :round(0.5 * band * gray.shape[1])].any(), f"test digit {index}: the shadow is read as ink"
    assert tested >= 15
