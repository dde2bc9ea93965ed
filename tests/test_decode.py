"""decode: the decoding boundary. Hostile and damaged files end in InputImageError (one
line), cost little, and never reach a full-size float array.

Each file here is one of issue 16's reproduced examples, or one of its class.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

from mnist_digits import cli, decode, preprocess
from mnist_digits.decode import PixelBudget, read_file
from mnist_digits.errors import InputImageError
from mnist_digits.preprocess import prepare, prepare_many


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def a_digit(side: int = 140) -> Image.Image:
    """A dark stroke on white paper: something prepare reads as a digit."""
    pixels = np.full((side, side), 255, np.uint8)
    pixels[side // 5:side * 4 // 5, side * 9 // 20:side * 11 // 20] = 0
    return Image.fromarray(pixels)


def two_frames(fmt: str) -> bytes:
    return encode(Image.new("L", (28, 28), 0), fmt, save_all=True, append_images=[Image.new("L", (28, 28), 255)])


def gif_logical_screen(width: int, height: int) -> bytes:
    """A 1x1 GIF whose header claims a width x height canvas (43 bytes)."""
    data = bytearray(encode(Image.new("L", (1, 1), 0), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def tiff_second_page_without_size() -> bytes:
    """A two-page TIFF whose second page has no ImageWidth / ImageLength tags."""
    data = bytearray(two_frames("TIFF"))
    first = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[first:first + 2])[0]
    second = struct.unpack("<I", data[first + 2 + 12 * count:first + 6 + 12 * count])[0]
    for index in range(struct.unpack("<H", data[second:second + 2])[0]):
        entry = second + 2 + 12 * index
        if struct.unpack("<H", data[entry:entry + 2])[0] in (256, 257):
            data[entry:entry + 2] = struct.pack("<H", 0x9990 + index)  # an unknown private tag
    return bytes(data)


ONE_FRAME_GIF = encode(a_digit(), "GIF")
DAMAGED = {
    # A single-frame GIF whose trailer is the start of a cut image descriptor: counting
    # frames raised struct.error (HTTP 500, a traceback in predict).
    "gif-bad-trailer": ONE_FRAME_GIF[:-1] + b"\x2c\x00\x00",
    "gif-cut-in-second-frame": two_frames("GIF")[:-10],
    "tiff-second-page-without-size": tiff_second_page_without_size(),
    "gif-huge-canvas": gif_logical_screen(7071, 7071),
    "png-7000x7000": encode(Image.new("L", (7000, 7000), 255)),
}


@pytest.mark.parametrize("kind", DAMAGED)
def test_damaged_and_hostile_files_are_one_line_input_errors(kind):
    with pytest.raises(InputImageError) as caught:
        prepare(DAMAGED[kind])
    assert "\n" not in str(caught.value)


def test_in_a_batch_the_good_images_are_still_answered():
    good = encode(a_digit())
    results = prepare_many([good, *DAMAGED.values(), good])
    assert results[0][1] is None and results[-1][1] is None
    assert all(image is None and error for image, error in results[1:-1])


def test_predict_answers_the_good_inputs_beside_damaged_ones(capsys, mlp_run, tmp_path):
    """The command used to stop at the first damaged GIF with a traceback."""
    for name, data in DAMAGED.items():
        (tmp_path / f"{name}.png").write_bytes(data)
    (tmp_path / "good.png").write_bytes(encode(a_digit()))
    code = cli.main(["predict", str(mlp_run), str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    answers = {Path(line["file"]).name: line for line in map(json.loads, out.splitlines())}
    assert code == 1 and "Traceback" not in err and len(answers) == len(DAMAGED) + 1
    assert answers.pop("good.png")["digit"] == 1
    assert all("error" in answer for answer in answers.values())


def test_any_decoder_exception_becomes_an_input_error(monkeypatch):
    def odd_failure(self):
        raise KeyError("a decoder bug on a stranger's bytes")

    drawing = encode(a_digit())
    monkeypatch.setattr(Image.Image, "load", odd_failure)
    with pytest.raises(InputImageError, match="damaged image"):
        prepare(drawing)


def test_frames_are_counted_up_to_two_not_listed(monkeypatch):
    """A many-page TIFF is refused after looking for a second page, whatever its length
    (counting its pages took 12 s of CPU on a 4 MB file)."""
    many_pages = encode(Image.new("L", (8, 8)), "TIFF", save_all=True,
                        append_images=[Image.new("L", (8, 8), level) for level in range(200)])
    asked: list[int] = []
    seek = TiffImagePlugin.TiffImageFile.seek
    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "seek", lambda self, frame: (asked.append(frame), seek(self, frame))[1])
    with pytest.raises(InputImageError, match="multi-page image"):
        prepare(many_pages)
    assert max(asked) == 1


def test_a_huge_gif_canvas_is_refused_from_its_header(monkeypatch):
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a 43-byte bomb"))
    assert len(DAMAGED["gif-huge-canvas"]) == 43
    with pytest.raises(InputImageError, match="7071x7071.*over the limit of 4,000,000 for GIF"):
        prepare(DAMAGED["gif-huge-canvas"])


def test_big_lossless_images_are_reduced_inside_pillow_before_floats(monkeypatch):
    """A 4000x3000 PNG is decoded whole (its format cannot shrink while decoding), then
    reduced by Pillow: no array of its full size is made."""
    seen = []
    to_gray = preprocess._image_to_gray
    monkeypatch.setattr(preprocess, "_image_to_gray", lambda image: (seen.append(image.size), to_gray(image))[1])
    big = encode(a_digit(3000).resize((4000, 3000)).convert("RGBA"))
    small = prepare(encode(a_digit(3000).resize((4000, 3000)).resize((768, 576))))
    assert np.abs(prepare(big) - small).mean() < 0.02
    assert max(seen[0]) == preprocess.WORKING_SIDE


def test_transparent_images_are_reduced_premultiplied():
    """What is under a transparent pixel must not bleed into the digit when reducing."""
    rgba = np.zeros((2000, 2000, 4), np.uint8)
    rgba[..., :3] = 255                    # white under the transparent background
    rgba[400:1600, 900:1100] = (0, 0, 0, 255)  # an opaque black stroke
    reduced = decode.decode(encode(Image.fromarray(rgba, "RGBA")), max_side=500)
    edge = np.asarray(reduced)[100:400, 224]  # the column where the stroke's edge falls
    assert reduced.mode == "RGBA" and edge[:, :3].max() < 5


def test_a_jpeg_is_decoded_straight_to_the_working_size():
    photo = encode(a_digit(4000).convert("RGB"), "JPEG", quality=80)
    assert decode.decode(photo, max_side=768).size == (768, 768)
    assert decode.load_image(photo).size == (4000, 4000)


def test_exif_orientation_survives_the_reduction():
    stroke = np.full((1000, 2000), 255, np.uint8)
    stroke[100:200, :] = 0  # a bar near the top edge of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned clockwise: the bar ends up near the right edge
    upright = np.asarray(decode.decode(encode(Image.fromarray(stroke), "JPEG", exif=exif), max_side=500))
    assert upright.shape[:2] == (500, 250)
    assert upright[:, 205:220].mean() < 30 and upright[:, :150].mean() > 225


def test_a_request_budget_refuses_the_images_past_it():
    drawing = encode(a_digit())  # 140x140 = 19,600 pixels
    results = prepare_many([drawing] * 5, PixelBudget(3 * 140 * 140))
    assert [error is None for _, error in results] == [True, True, True, False, False]
    assert "budget" in results[3][1]
    gone = threading.Event()
    gone.set()
    assert "client has gone" in prepare_many([drawing], PixelBudget(10**9, gone))[0][1]


# --- files: regular ones only, with a size cap ------------------------------------------------


@pytest.mark.timeout(20)
def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "digit.png"
    os.mkfifo(pipe)
    with pytest.raises(InputImageError, match="not a regular file"):
        prepare(pipe)


def test_a_symlink_to_a_device_is_refused_not_read(tmp_path):
    link = tmp_path / "digit.png"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputImageError, match="not a regular file"):
        read_file(link)


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "digit.png"
    path.write_bytes(encode(a_digit()))
    monkeypatch.setattr(decode, "MAX_FILE_BYTES", 100)
    with pytest.raises(InputImageError, match="too big"):
        prepare(path)


@pytest.mark.timeout(20)
def test_a_file_that_grows_while_read_is_cut_at_the_cap(tmp_path, monkeypatch):
    """A file whose size changes after it was checked (a log, a pipe-like mount) is read
    at most to the cap."""
    path = tmp_path / "digit.png"
    path.write_bytes(b"\x89PNG")
    monkeypatch.setattr(decode, "MAX_FILE_BYTES", 1000)
    fstat = os.fstat

    def stat_then_grow(descriptor):
        info = fstat(descriptor)
        path.write_bytes(b"\x00" * 5000)
        return info

    monkeypatch.setattr(decode.os, "fstat", stat_then_grow)
    with pytest.raises(InputImageError, match="too big"):
        read_file(path)
