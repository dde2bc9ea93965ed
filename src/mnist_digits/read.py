"""An image of a handwritten number -> its digits, left to right, line by line.

    result = read_number("meter.jpg", predictor)   # result.text == "2026"

The ink is found once, as for one digit (preprocess.find_ink). Its strong-ink marks
(connected pieces) that belong to one digit are joined: one above the other (a 5 whose top
stroke is apart, a 4 or 7 drawn in two strokes), or a small piece close to a bigger one (the
dot of a broken stroke); specks are dropped. Groups of marks are sorted into lines (top to
bottom) and left to right.

A group wider than one digit may hold several that touch or overlap. It is split by
recognition: candidate cuts are where its ink is thin (minima of the column ink profile) or
where its outline dips between two digits (valleys of its top and bottom contours); every
piece between two cuts is a candidate digit, prepared like an MNIST digit
(preprocess.prepare_piece); dynamic programming then keeps the cuts whose pieces the model
reads most confidently, with penalties for pieces much wider than a digit is, for cuts
through more than one stroke and for pieces much shorter than the line (in a group wider
than a digit, the model's confidence counts twice against them). Candidates that
cannot be kept are left out before they are prepared (_read_pieces: a group read whole
with confidence is not cut; the rest are read in at most three batched model calls per
image). A digit lighter than the others is first stretched to its own ink level.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from scipy.signal import find_peaks

from .errors import InputImageError, NoDigitFound, TooManyMarks
from .predict import Predictor
from .decode import load_image
from .preprocess import STRONG_INK, Ink, _array_to_gray, find_ink, ink_bounds, prepare_piece

# A number has at most this many marks to read (digits, pieces of digits), and at most this
# many digits; a photo of a page of text has hundreds of marks, a long scribble is cut into
# dozens of digits: both get an error instead of a long guessed string.
MAX_MARKS = 40
# Marks lighter than this fraction of the heaviest are left out (a "1" beside three touching
# digits weighs about a tenth of them, so predict's 10% would lose it).
SPECK_FRACTION = 0.02
# Groups smaller than this fraction of the line's digit height, both ways, are specks.
SPECK_SIZE = 0.25
# Sizes below are in "digit heights": the median height of the marks at least half as
# tall as the tallest. Two marks are one digit only if together they are at most TALLEST
# digit heights tall (not two lines), and:
#   - one is at most JOIN_GAP above the other, with their columns overlapping by
#     JOIN_OVERLAP of the narrower one (a 4 in two strokes) or at most NEAR apart (the
#     top stroke of a 5 or a 7); or
#   - they are side by side, at most NEAR of the taller one apart, and one is under
#     SHORT_MARK as tall as the other (a 4 whose bar stops short of its upright); or
#   - the smaller is under SMALL_MARK big and within NEAR of the other (a broken stroke).
# Joined digits that are not one are split again below.
TALLEST = 1.6
JOIN_GAP = 0.25
JOIN_OVERLAP = 0.5
SHORT_MARK = 0.75
SMALL_MARK = 0.4
NEAR = 0.15
# Groups at least this wide (in line heights) are candidates for splitting: a 1 touching
# its neighbour makes a group narrower than one line height.
SPLIT_FROM = 0.6
# A piece between two cuts is at least this wide (in line heights); at most MAX_SPAN
# consecutive cut intervals make one piece.
MIN_PIECE = 0.15
MAX_SPAN = 4
# Cuts closer than this (in line heights) are one cut.
CUT_SPACING = 0.12
# A split's score is the sum of its pieces' log confidence, less SPLIT_PENALTY per piece
# (the models are confident about half digits too), less WIDE_PENALTY per line height a
# piece is wider than WIDE. Chosen on 240 composed 4-digit numbers with cnn-small (seed 7,
# not the benchmark's); nearby values read within 1% as many numbers right. SPLIT_PENALTY
# was 0.5 before the crossing and short-piece costs below; with them, 0.3 (seed 7, 200
# numbers per kind: touching photo 84.0% -> 86.5% exact, canvas 84.0% -> 85.0%, apart and
# 2-8 digits unchanged; 0.25 or no crossing cost lost separated numbers to slivers).
SPLIT_PENALTY = 0.3
WIDE = 0.9
WIDE_PENALTY = 1.0
# A group at least SEVERAL line heights wide holds two digits or more; there a piece costs
# SEVERAL_SPLIT_PENALTY and the width penalty starts at SEVERAL_WIDE: the models read two
# touching digits confidently as one (most misread touching numbers were one digit short).
# Chosen on seed 7 too: 200 touching 4-digit numbers read 84.0% / 81.0% exactly (canvas /
# photo) instead of 81.5% / 80.5%, separated ones unchanged.
SEVERAL = 1.6
SEVERAL_SPLIT_PENALTY = 0.3
# There a piece wider than SEVERAL_WIDE line heights costs SEVERAL_WIDE_PENALTY per line
# height beyond: most touching numbers still misread were two digits read as one although
# the right cut was offered (seed 7, touching photos: 19 of 27 misses), and such a pair is
# 1.0-1.7 line heights wide, a digit 0.5-1.1. Chosen on seeds 7, 20 and 30 (600 numbers per
# kind): touching 84.3% / 84.3% -> 86.5% / 86.0% exact (canvas / photo), 2-8 digits touching
# 78.7% -> 80.5%, separated ones unchanged (before: from 0.7, at WIDE_PENALTY); checked on
# seed 40 (200 per kind, not used to choose): touching 83.5% / 83.5% -> 86.0% / 85.0%.
SEVERAL_WIDE = 0.8
SEVERAL_WIDE_PENALTY = 2.5
# A digit written lighter than the darkest one (less pen pressure, a shadow) is stretched to
# its own ink level, as `predict` stretches a digit alone: the ink above FAINT_INK (on 0-1,
# after find_ink's stretch) is cut into marks, and each mark whose own level (its 99th
# percentile) is at least FAINTEST is scaled so that level becomes 1. Without this, a light
# digit's strong ink (half the darkest digit's level) is only its core: strokes were lost
# or it fell apart (most misread separated photo numbers, seed 7).
FAINT_INK = 0.15
FAINTEST = 0.3
# A faint mark find_ink dropped as a speck is stretched too when it is as heavy as a kept
# one and at least REVIVED_HEIGHT as tall as the tallest kept mark (see _stretched). Chosen on
# seeds 7, 20, 30, 50 (cnn-small, 800 numbers per kind): separated photos 95.75 -> 96.25%
# exact, the other kinds within one number; seeds 40/60: separated photos 94.5 -> 95.0%.
# Without the height rule faint fragments of digits became digits (separated canvases -0.5).
REVIVED_HEIGHT = 0.6
# A cut through more than one stroke (the middle of a 0, an 8) costs CROSSING_PENALTY per
# stroke beyond the first: digits that touch meet in one stroke.
CROSSING_PENALTY = 0.5
# A piece cut from a group that is less than SHORT_PIECE line heights tall costs SHORT_PENALTY:
# a digit is about as tall as its neighbours, a sliver cut off a digit's side (the tail of
# a 2, the diagonal of an 8, read as a 1) is not.
SHORT_PIECE = 0.7
SHORT_PENALTY = 1.0
# In a group wider than WIDE line heights (wider than most digits: likely two or more), the
# model's log confidence counts WIDE_GROUP_CONFIDENCE times against the costs above: there,
# the costs of a split outweighed what the model said of its pieces (most misread touching
# numbers were two digits read as one, both cuts offered). Chosen on seeds 7, 20, 30 and 50
# (800 numbers per kind; see the README's read section for what it changed), checked on
# seeds 40 and 60; 1.5 to 3 read about as many right. Also in narrower groups (0.6-0.9 line
# heights wide, mostly one digit) it lost 0.1-0.3 points of separated numbers. A second
# reading of each piece drawn at its line's scale (smaller when shorter than the line)
# gained as much as counting the one reading twice, and no more.
WIDE_GROUP_CONFIDENCE = 2.0
# A piece's log confidence is at most 0, but float32 probabilities may sum to a hair over 1:
# a bound on the best split's score is loosened by this much (see _read_pieces).
SCORE_ROUNDING = 1e-4
# A split of a group into two pieces or more costs at least this (each piece a split penalty).
LEAST_SPLIT_COST = 2 * min(SPLIT_PENALTY, SEVERAL_SPLIT_PENALTY)
# Number of alternatives reported per digit.
ALTERNATIVES = 2


@dataclass
class DigitRead:
    """One digit of a number: its value, calibrated confidence, the next likeliest digits
    [(digit, probability)], whether it is unsure, its box [x0, y0, x1, y1) in the original
    image's pixels, its line (0 = top), and the 28x28 image the model saw."""

    digit: int
    confidence: float
    alternatives: list[tuple[int, float]]
    unsure: bool
    box: tuple[int, int, int, int]
    line: int
    prepared: np.ndarray = field(repr=False)

    def record(self) -> dict:
        return {"digit": self.digit, "confidence": round(self.confidence, 6),
                "alternatives": [{"digit": d, "confidence": round(p, 6)} for d, p in self.alternatives],
                "unsure": self.unsure, "box": list(self.box)}


@dataclass
class NumberRead:
    """The number read from an image: `text` (one line per line of digits) and its digits."""

    text: str
    digits: list[DigitRead]

    @property
    def unsure(self) -> bool:
        return any(digit.unsure for digit in self.digits)

    def record(self) -> dict:
        return {"text": self.text, "digits": [digit.record() for digit in self.digits],
                "unsure": self.unsure}


@dataclass
class _Box:
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def union(self, other: "_Box") -> "_Box":
        return _Box(min(self.y0, other.y0), max(self.y1, other.y1),
                    min(self.x0, other.x0), max(self.x1, other.x1))


def _belong_together(a: _Box, b: _Box, digit_height: float) -> bool:
    """Two marks of one digit (see TALLEST for the rules)."""
    if a.union(b).height > TALLEST * digit_height:
        return False
    column_overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
    row_gap = max(a.y0, b.y0) - min(a.y1, b.y1)
    near = NEAR * digit_height
    taller = max(a.height, b.height)
    if row_gap <= JOIN_GAP * digit_height and (column_overlap >= JOIN_OVERLAP * min(a.width, b.width)
                                               or (row_gap >= 0 and column_overlap >= -near)):
        return True
    if row_gap < 0 and column_overlap >= -NEAR * taller and min(a.height, b.height) < SHORT_MARK * taller:
        return True
    small = min(max(a.height, a.width), max(b.height, b.width)) < SMALL_MARK * digit_height
    return small and max(row_gap, -column_overlap) <= near


def _group_marks(boxes: list[_Box]) -> list[list[int]]:
    """Indices of the marks of each digit group (joined transitively)."""
    heights = np.array([box.height for box in boxes])
    digit_height = float(np.median(heights[heights >= heights.max() / 2]))
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if _belong_together(boxes[i], boxes[j], digit_height):
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _lines(boxes: list[_Box]) -> list[list[int]]:
    """Group indices per line, top to bottom, each left to right: a group is on a line when
    at least half of its rows are within the rows the line's groups span."""
    lines: list[tuple[_Box, list[int]]] = []
    for index in sorted(range(len(boxes)), key=lambda i: boxes[i].y0 + boxes[i].y1):
        box = boxes[index]
        for number, (span, members) in enumerate(lines):
            if min(span.y1, box.y1) - max(span.y0, box.y0) >= box.height / 2:
                members.append(index)
                lines[number] = (span.union(box), members)
                break
        else:
            lines.append((box, [index]))
    lines.sort(key=lambda line: line[0].y0)
    return [sorted(members, key=lambda i: boxes[i].x0 + boxes[i].x1) for _, members in lines]


def _cuts(mask: np.ndarray, height: float) -> list[int]:
    """Candidate cut columns inside a group's strong-ink mask: minima of the column ink
    profile and valleys of the top and bottom contours, away from the ends, merged when close."""
    width = mask.shape[1]
    inked = mask.any(axis=0)
    profile = mask.sum(axis=0).astype(float)
    rows = np.arange(mask.shape[0])[:, None]
    top = np.where(inked, np.where(mask, rows, mask.shape[0]).min(axis=0), mask.shape[0])
    bottom = np.where(inked, np.where(mask, rows, -1).max(axis=0), -1)
    smooth = np.array([1.0, 2.0, 1.0]) / 4
    found: list[int] = []
    for signal in (-profile, top.astype(float), -bottom.astype(float)):
        signal = np.convolve(np.pad(signal, 1, mode="edge"), smooth, mode="valid")
        peaks, _ = find_peaks(signal, prominence=0.05 * height)
        found.extend(int(peak) for peak in peaks)
    margin = MIN_PIECE * height
    cuts: list[int] = []
    for cut in sorted(c for c in found if margin <= c <= width - margin):
        if cuts and cut - cuts[-1] < CUT_SPACING * height:
            continue
        cuts.append(cut)
    return cuts


@dataclass
class _Piece:
    group: int
    start: int   # index into the group's cut positions
    end: int
    box: _Box    # strong ink, in working pixels
    crossed: int  # strokes the cut at its left crosses (0 at the group's left end)
    flat: np.ndarray = field(repr=False)  # its ink and strong ink, cut out, for prepare_piece
    mask: np.ndarray = field(repr=False)
    prepared: np.ndarray | None = field(default=None, repr=False)  # once prepared (_read_pieces)


def _window(image: np.ndarray, box: _Box, reach: int) -> np.ndarray:
    """The image within `box` and `reach` pixels around it, zeros beyond the image's edge:
    np.pad(image, reach) cut to the box, without padding the whole image."""
    height, width = image.shape
    y0, y1, x0, x1 = box.y0 - reach, box.y1 + reach, box.x0 - reach, box.x1 + reach
    inside = image[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
    return np.pad(inside, ((max(-y0, 0), max(y1 - height, 0)), (max(-x0, 0), max(x1 - width, 0))))


def _pieces(flat: np.ndarray, group_mask: np.ndarray, box: _Box, group: int, height: float,
            split: bool = True) -> list[_Piece]:
    """Every candidate digit of one group: the whole group, and when it is wide (and `split`),
    each span between two candidate cuts, cut out (not prepared yet: see _read_pieces)."""
    if not split or box.width < SPLIT_FROM * height:
        positions = [0, box.width]
    else:
        positions = [0, *_cuts(group_mask, height), box.width]
    # The piece's faint edge comes along, but not a neighbouring group's ink.
    reach = 2 * (1 + int(max(box.height, box.width)) // 20)
    padded_mask = np.pad(group_mask, reach)
    # Within `reach` steps of the ink (as `reach` 4-neighbour dilations, at half their cost).
    near_ink = ndimage.distance_transform_cdt(~padded_mask, metric="taxicab") <= reach
    padded_flat = _window(flat, box, reach) * near_ink
    crossed = [0, *(_strokes_crossed(group_mask, cut) for cut in positions[1:-1])]
    pieces = []
    for start in range(len(positions) - 1):
        for end in range(start + 1, min(start + 1 + MAX_SPAN, len(positions))):
            left, right = positions[start], positions[end]
            whole = start == 0 and end == len(positions) - 1
            if right - left < MIN_PIECE * height and not whole:
                continue
            bounds = ink_bounds(group_mask[:, left:right])
            if bounds is None:
                continue
            top, bottom, first, last = bounds
            # Only the piece's strong ink and `reach` around it: all prepare_piece crops.
            rows = slice(top, bottom + 2 * reach)
            cols = slice(left + first, left + last + 2 * reach)
            mask = padded_mask[rows, cols].copy()
            piece_flat = padded_flat[rows, cols].copy()
            # Nothing beyond a cut: no strong ink, and no faint edge.
            cut_left, cut_right = max(reach - first, 0), reach + right - left - first
            mask[:, :cut_left] = mask[:, cut_right:] = False
            if start > 0:
                piece_flat[:, :cut_left] = 0.0
            if end < len(positions) - 1:
                piece_flat[:, cut_right:] = 0.0
            strong_box = _Box(box.y0 + top, box.y0 + bottom, box.x0 + left + first, box.x0 + left + last)
            pieces.append(_Piece(group, start, end, strong_box, crossed[start], piece_flat, mask))
    return pieces


def _strokes_crossed(mask: np.ndarray, cut: int) -> int:
    """Strokes a cut crosses: runs of ink down its column, the fewest of it and its two
    neighbours (a stroke that only grazes the column is not crossed)."""
    columns = mask[:, max(cut - 1, 0):cut + 2]
    starts = columns[0] + (columns[1:] & ~columns[:-1]).sum(axis=0)
    return int(starts.min())


def _best_split(pieces: list[_Piece], scores: np.ndarray, height: float) -> list[int]:
    """Indices of the pieces that tile the group best: the highest sum of log confidence
    (minus the split, width, crossing and short-piece penalties; a lower split penalty, and a
    steeper width penalty from a narrower width, for a group as wide as SEVERAL digits), by
    dynamic programming over the cut positions."""
    ends = max(piece.end for piece in pieces)
    best = [0.0] + [-math.inf] * ends
    chosen: list[int | None] = [None] * (ends + 1)
    by_end: dict[int, list[int]] = {}
    for index, piece in enumerate(pieces):
        by_end.setdefault(piece.end, []).append(index)
    costs = _piece_costs(pieces, height)
    for end in range(1, ends + 1):
        for index in by_end.get(end, []):
            piece = pieces[index]
            if best[piece.start] == -math.inf:
                continue
            score = best[piece.start] + scores[index] - costs[index]
            if score > best[end]:
                best[end], chosen[end] = score, index
    path, end = [], ends
    while end > 0:
        index = chosen[end]
        if index is None:  # no tiling (a cut left an empty span): the whole group
            return [next(i for i, p in enumerate(pieces) if p.start == 0 and p.end == ends)]
        path.append(index)
        end = pieces[index].start
    return path[::-1]


def _piece_costs(pieces: list[_Piece], height: float) -> list[float]:
    """What each piece of one group costs in _best_split, whatever the model reads: the split,
    width, crossing and short-piece penalties (a lower split penalty, and a steeper width
    penalty from a narrower width, for a group as wide as SEVERAL digits)."""
    ends = max(piece.end for piece in pieces)
    several = max(p.box.x1 for p in pieces) - min(p.box.x0 for p in pieces) >= SEVERAL * height
    split_penalty, wide, wide_penalty = ((SEVERAL_SPLIT_PENALTY, SEVERAL_WIDE, SEVERAL_WIDE_PENALTY) if several
                                         else (SPLIT_PENALTY, WIDE, WIDE_PENALTY))
    costs = []
    for piece in pieces:
        excess = max(0.0, piece.box.width / height - wide)
        cost = split_penalty + wide_penalty * excess + CROSSING_PENALTY * max(piece.crossed - 1, 0)
        if piece.box.height < SHORT_PIECE * height and (piece.start, piece.end) != (0, ends):
            cost += SHORT_PENALTY
        costs.append(cost)
    return costs


def _cheapest_tilings(pieces: list[_Piece], costs: list[float]) -> tuple[list[float], list[float], list[int]]:
    """By the costs alone (as if the model read every piece with certainty): the cheapest way
    from the group's left end to each cut position, from each to its right end, and the
    cheapest tiling of the whole group (piece indices; empty when there is none)."""
    ends = max(piece.end for piece in pieces)
    before, after = [0.0] + [math.inf] * ends, [math.inf] * ends + [0.0]
    chosen: list[int | None] = [None] * (ends + 1)
    for index in sorted(range(len(pieces)), key=lambda i: pieces[i].end):
        piece = pieces[index]
        if before[piece.start] + costs[index] < before[piece.end]:
            before[piece.end], chosen[piece.end] = before[piece.start] + costs[index], index
    for index in sorted(range(len(pieces)), key=lambda i: -pieces[i].start):
        piece = pieces[index]
        after[piece.start] = min(after[piece.start], costs[index] + after[piece.end])
    tiling, end = [], ends
    while end > 0 and chosen[end] is not None:
        tiling.append(chosen[end])
        end = pieces[chosen[end]].start
    return before, after, tiling[::-1] if end == 0 else []


@dataclass
class _Group:
    """A group of marks to read: its index, strong-ink mask, box and line height."""

    index: int
    mask: np.ndarray
    box: _Box
    height: float

    @property
    def confidence_weight(self) -> float:
        """How much the model's confidence counts against the costs in this group (see WIDE_GROUP_CONFIDENCE)."""
        return WIDE_GROUP_CONFIDENCE if self.box.width > WIDE * self.height else 1.0


def _read_pieces(flat: np.ndarray, groups: list[_Group], predictor: Predictor) -> tuple[list[_Piece], np.ndarray]:
    """The candidate pieces of each group that _best_split could choose, prepared, and the
    model's probabilities for them, in the groups' order: the best split is the one it
    would choose among all candidates, but preparing a piece is most of read's time, so
    pieces that cannot be chosen are left out before they are prepared, in three rounds of
    one batched model call each:
      1. every group whole that costs less than any split of it (two pieces or more, each
         costing at least a split penalty). One read whole with a score (log confidence
         less its costs) above what any split can reach is one digit: its cuts are not
         even looked for.
      2. for the others, their cheapest tiling by the costs alone (as if the model read every
         piece with certainty): its score is one the best split reaches at least.
      3. the candidates that, read with certainty, with the cheapest pieces around them,
         could still beat that score."""
    rows: dict[int, np.ndarray] = {}  # id(piece) -> its probabilities, once read
    wholes = {group.index: _pieces(flat, group.mask, group.box, group.index, group.height, split=False)[0]
              for group in groups if _whole_costs_less_than_a_split(group)}
    _prepare_and_read(list(wholes.values()), rows, predictor)
    candidates: list[list[_Piece]] = []
    bounds = []  # (group, its pieces, their costs, _cheapest_tilings) of the groups to split
    for group in groups:
        whole = wholes.get(group.index)
        if whole is not None and id(whole) in rows and \
                _scores(rows[id(whole)], group.confidence_weight) - _piece_costs([whole], group.height)[0] > \
                -LEAST_SPLIT_COST + SCORE_ROUNDING:
            candidates.append([whole])
            continue
        pieces = _pieces(flat, group.mask, group.box, group.index, group.height)
        if whole is not None:
            _reuse_whole(pieces, whole, rows)
        candidates.append(pieces)
        costs = _piece_costs(pieces, group.height)
        bounds.append((group, pieces, costs, _cheapest_tilings(pieces, costs)))
    _prepare_and_read([pieces[i] for _, pieces, _, (_, _, tiling) in bounds for i in tiling], rows, predictor)
    rest = []
    for group, pieces, costs, (before, after, tiling) in bounds:
        if tiling and all(id(pieces[i]) in rows for i in tiling):
            reached = sum(_scores(rows[id(pieces[i])], group.confidence_weight) - costs[i] for i in tiling)
        else:  # no tiling, or a piece of it vanished: no bound
            reached = -math.inf
        rest.extend(piece for piece, cost in zip(pieces, costs)
                    if -(before[piece.start] + cost + after[piece.end]) >= reached - SCORE_ROUNDING)
    _prepare_and_read(rest, rows, predictor)
    kept = [piece for pieces in candidates for piece in pieces if id(piece) in rows]
    return kept, np.array([rows[id(piece)] for piece in kept])


def _whole_costs_less_than_a_split(group: _Group) -> bool:
    """Whether the group read whole costs less than any split of it: only then can reading
    it whole settle it (_read_pieces, step 1); a group wider than about 1.2 line heights cannot."""
    whole = _Piece(group.index, 0, 1, group.box, 0, flat=group.mask, mask=group.mask)  # costs need no ink
    return _piece_costs([whole], group.height)[0] < LEAST_SPLIT_COST - SCORE_ROUNDING


def _reuse_whole(pieces: list[_Piece], whole: _Piece, rows: dict[int, np.ndarray]) -> None:
    """Give the piece of `pieces` that spans the whole group (when there is one: at most
    MAX_SPAN cut intervals) what was prepared and read for `whole`: the same ink."""
    last = max(piece.end for piece in pieces)
    for piece in pieces:
        if (piece.start, piece.end) == (0, last) and id(whole) in rows:
            piece.prepared, rows[id(piece)] = whole.prepared, rows[id(whole)]


def _scores(probabilities: np.ndarray, weight: float) -> np.ndarray:
    """Pieces' scores in _best_split, before their costs: the log of the model's confidence
    (probabilities: one row per piece, or one piece's row), times the group's confidence_weight."""
    return weight * np.log(np.maximum(probabilities.max(axis=-1), 1e-12))


def _prepare_and_read(pieces: list[_Piece], rows: dict[int, np.ndarray], predictor: Predictor) -> None:
    """Prepare the pieces not read yet like MNIST digits and read them in one model call;
    their probabilities go to `rows` (by id). Pieces that vanish at 20 px are left out."""
    prepared = []
    for piece in pieces:
        if piece.prepared is not None:
            continue
        try:
            piece.prepared = prepare_piece(piece.flat, piece.mask)
        except NoDigitFound:  # nothing left at 20 px: not a digit
            continue
        prepared.append(piece)
    if prepared:
        rows.update(zip(map(id, prepared), predictor.probabilities([piece.prepared for piece in prepared])))


def read_number(source, predictor, unsure_below: float | None = None) -> NumberRead:
    """Read the number in one image (path, bytes, PIL image or array) with `predictor`
    (a predict.Predictor, or any loaded classifier: it is wrapped in one).

    Raises InputImageError for what `prepare` refuses, NoDigitFound for an image with no
    digits ("no digits found ...") and TooManyMarks for one with more than MAX_MARKS marks
    or digits.
    """
    if not isinstance(predictor, Predictor):
        predictor = Predictor(predictor)
    unsure_below = predictor.unsure_below if unsure_below is None else unsure_below
    try:
        ink = find_ink(source, speck_fraction=SPECK_FRACTION)
    except NoDigitFound as error:  # "no digit found (...)": say it of the number
        raise NoDigitFound("no digits found" + str(error).removeprefix("no digit found")) from None
    ink = _stretch_faint_marks(ink)
    # Marks are labelled within the strong ink's bounding box only (nothing to label
    # around it); `labels` is offset by (top, left) from the working image.
    top, bottom, left, right = ink_bounds(ink.mask)
    labels, count = ndimage.label(ink.mask[top:bottom, left:right], structure=np.ones((3, 3)))
    if count > 3 * MAX_MARKS:
        raise _too_many(count)
    marks = [_Box(top + rows.start, top + rows.stop, left + cols.start, left + cols.stop)
             for rows, cols in ndimage.find_objects(labels)]
    groups = _group_marks(marks)
    boxes = []
    for members in groups:
        box = marks[members[0]]
        for member in members[1:]:
            box = box.union(marks[member])
        boxes.append(box)
    # Specks: groups small both ways next to the typical digit.
    typical = float(np.median([box.height for box in boxes]))
    kept = [i for i, box in enumerate(boxes) if max(box.height, box.width) >= SPECK_SIZE * typical]
    groups, boxes = [groups[i] for i in kept], [boxes[i] for i in kept]
    if len(groups) > MAX_MARKS:
        raise _too_many(len(groups))
    lines = _lines(boxes)
    group_of_mark = np.zeros(count + 1, dtype=np.intp)  # 0: the background, or a speck
    for g, members in enumerate(groups):
        group_of_mark[np.array(members) + 1] = g + 1

    groups_to_read: list[_Group] = []
    line_height: dict[int, float] = {}
    for line in lines:
        height = float(np.median([boxes[g].height for g in line]))
        for g in line:
            line_height[g] = height
            box = boxes[g]
            group_mask = group_of_mark[labels[box.y0 - top:box.y1 - top, box.x0 - left:box.x1 - left]] == g + 1
            groups_to_read.append(_Group(g, group_mask, box, height))
    pieces, probabilities = _read_pieces(ink.flat, groups_to_read, predictor)
    if not pieces:
        raise NoDigitFound("no digits found (no ink left after removing the background)")
    weights = {group.index: group.confidence_weight for group in groups_to_read}

    text_lines, digits = [], []
    for number, line in enumerate(lines):
        text = ""
        for g in line:
            indices = [i for i, piece in enumerate(pieces) if piece.group == g]
            if not indices:
                continue
            scores = _scores(probabilities[indices], weights[g])
            for chosen in _best_split([pieces[i] for i in indices], scores, line_height[g]):
                index = indices[chosen]
                digit = _digit_read(pieces[index], probabilities[index], ink, number, unsure_below)
                digits.append(digit)
                text += str(digit.digit)
        if text:
            text_lines.append(text)
    if len(digits) > MAX_MARKS:  # a long scribble is one mark, cut into dozens of "digits"
        raise _too_many(len(digits), "digits")
    return NumberRead("\n".join(text_lines), digits)


def _stretch_faint_marks(ink: Ink) -> Ink:
    """`ink` with each faint mark stretched to its own level (see FAINT_INK), and the strong
    ink that makes visible added to the mask where the mark has strong ink already."""
    bounds = ink_bounds(ink.flat > FAINT_INK)
    if bounds is None:
        return ink
    # Worked out within the marks' bounding box only: nothing changes outside it.
    top, bottom, left, right = bounds
    box = (slice(top, bottom), slice(left, right))
    flat, mask = ink.flat.copy(), ink.mask.copy()
    at_edge = (top == 0, bottom == ink.flat.shape[0], left == 0, right == ink.flat.shape[1])
    flat[box], mask[box] = _stretched(ink.flat[box], ink.mask[box], at_edge)
    return replace(ink, flat=flat, mask=mask)


def _stretched(flat: np.ndarray, mask: np.ndarray, at_edge: tuple[bool, bool, bool, bool]) -> tuple[np.ndarray, np.ndarray]:
    """_stretch_faint_marks of the ink `flat` and its strong ink `mask`; `at_edge`: whether
    its top, bottom, left and right sides are the image's."""
    labels, count = ndimage.label(flat > FAINT_INK, structure=np.ones((3, 3)))
    inked = labels > 0
    values, owners = flat[inked], labels[inked]  # only the marks' pixels change
    levels = _mark_levels(values, owners, count)
    gain = np.ones(count + 1, dtype=np.float32)
    faint = (levels >= FAINTEST) & (levels < 1.0)
    gain[1:][faint] = 1.0 / levels[faint]
    values = np.minimum(values * gain[owners], 1.0)
    # Marks that find_ink kept gain strong ink, and so does a mark it dropped as a speck (its
    # strong ink was a few pixels) that is, stretched, as heavy as one it keeps and at least
    # REVIVED_HEIGHT as tall as the tallest: a light "1" beside dark digits, not a faint
    # fragment of a digit. Not one at the image's edge (a shadow, the table).
    kept = np.zeros(count + 1, dtype=bool)
    kept[labels[mask]] = True
    if kept.any():
        weights = np.bincount(owners, weights=values, minlength=count + 1)
        heights = np.array([0] + [rows.stop - rows.start for rows, _ in ndimage.find_objects(labels)])
        revived = (weights >= SPECK_FRACTION * weights[kept].max()) & \
            (heights >= REVIVED_HEIGHT * heights[kept].max())
        for side, edge in zip((labels[0], labels[-1], labels[:, 0], labels[:, -1]), at_edge):
            if edge:
                revived[side] = False
        kept |= revived
    stretched, strong = flat.copy(), mask.copy()
    stretched[inked] = values
    strong[inked] |= (values > STRONG_INK) & kept[owners]
    return stretched, strong


def _mark_levels(values: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """Each mark's level: the 99th percentile of its `values` (ink on 0-1, float32), marks
    numbered 1 to `count` in `owners`."""
    sizes = np.bincount(owners, minlength=count + 1)[1:]
    ranks = (0.99 * (sizes - 1)).astype(np.intp)  # in the mark's values, sorted
    # A mark with more of its pixels at 1 (the most ink there is) than above that rank is at
    # level 1: most are (find_ink stretched the darkest ink to 1). Only the others are sorted.
    ones = np.bincount(owners[values >= 1.0], minlength=count + 1)[1:]
    levels = np.ones(count, dtype=np.float32)
    below_one = ones < sizes - ranks
    if below_one.any():
        chosen = below_one[owners - 1]
        # One sort of 64-bit keys, the mark above the value's bits (non-negative float32
        # values are in the order of their bits): 2x faster than np.lexsort((values, owners)).
        keys = np.sort((owners[chosen].astype(np.int64) << 32) | values[chosen].view(np.int32))
        starts = np.concatenate([[0], np.cumsum(sizes[below_one])[:-1]])
        levels[below_one] = (keys[starts + ranks[below_one]] & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
    return levels


def _too_many(count: int, what: str = "separate marks") -> TooManyMarks:
    return TooManyMarks(f"{count} {what}: more than a number has (at most {MAX_MARKS}); "
                        "crop the image to the number")


def _digit_read(piece: _Piece, probabilities: np.ndarray, ink: Ink, line: int,
                unsure_below: float) -> DigitRead:
    ranked = np.argsort(-probabilities)
    digit = int(ranked[0])
    confidence = float(probabilities[digit])
    box, scale = piece.box, ink.scale
    # Rounded outwards, but never past the image's edge.
    original = (math.floor(box.x0 * scale), math.floor(box.y0 * scale),
                min(math.ceil(box.x1 * scale), ink.size[0]), min(math.ceil(box.y1 * scale), ink.size[1]))
    return DigitRead(digit, confidence, [(int(d), float(probabilities[d])) for d in ranked[1:1 + ALTERNATIVES]],
                     confidence < unsure_below, original, line, piece.prepared)


# --- many inputs, and results as the command shows them ----------------------------------


def read_inputs(predictor: Predictor, inputs: Iterable[tuple[str, object]]) -> Iterator[tuple[str, object, NumberRead | str]]:
    """(name, source, result or the one-line error) for each of predict.collect_inputs' inputs."""
    for name, source in inputs:
        if isinstance(source, InputImageError):
            yield name, source, str(source)
            continue
        try:
            yield name, source, read_number(source, predictor)
        except InputImageError as error:
            yield name, source, str(error)


def number_line(name: str, result: NumberRead) -> str:
    """`meter.jpg: 2026  (4 digits, lowest confidence 97.1%)`; lines of digits joined by " / ",
    unsure digits listed after."""
    lowest = min(digit.confidence for digit in result.digits)
    count = len(result.digits)
    line = f"{name}: {result.text.replace(chr(10), ' / ')}  ({count} digit{'s' * (count != 1)}, " \
           f"lowest confidence {lowest:.1%})"
    unsure = [f"{place}: {digit.digit} {digit.confidence:.1%} or {digit.alternatives[0][0]}"
              for place, digit in enumerate(result.digits, start=1) if digit.unsure]
    return line + (f"  unsure digit {', '.join(unsure)}" if unsure else "")


def annotated_png(source, result: NumberRead) -> bytes:
    """PNG bytes of the image with each digit's box, value and confidence drawn on it
    (red for unsure digits): to see why a number was misread."""
    if isinstance(source, np.ndarray):
        image = Image.fromarray(np.round(_array_to_gray(source) * 255).astype(np.uint8))
    else:
        image = load_image(source)
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    thickness = max(1, round(max(image.size) / 300))
    for digit in result.digits:
        x0, y0, x1, y1 = digit.box
        colour = (220, 30, 30) if digit.unsure else (0, 150, 60)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=thickness)
        # The digit above its box, the confidence below: side by side they would overlap.
        big = ImageFont.load_default(size=max(10, (y1 - y0) // 3))
        small = ImageFont.load_default(size=max(9, (y1 - y0) // 6))
        draw.text(((x0 + x1) // 2, y0 - thickness), str(digit.digit), fill=colour, font=big, anchor="mb")
        draw.text(((x0 + x1) // 2, y1 + thickness), f"{digit.confidence:.0%}", fill=colour, font=small,
                  anchor="mt")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
