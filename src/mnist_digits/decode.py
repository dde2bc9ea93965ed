"""Image bytes from outside -> a decoded Pillow image: the project's one decoding boundary.

Everything a stranger's file can make a decoder do happens here, and is bounded here:

    read       regular files only (no pipes, devices, sockets), at most MAX_FILE_BYTES
    open       header only; formats from an allow-list (no EPS/PDF: those run programs)
    check      pixels from the header against MAX_PIXELS and the format's decoding budget
               (FORMAT_PIXELS), and a request's PixelBudget; frames counted up to 2
    decode     JPEG straight to about the working size (draft mode); other formats at
               full size, then reduced inside Pillow before anyone makes floats of them
    upright    by the EXIF orientation

Any exception a decoder raises while opening, seeking, loading or converting becomes an
InputImageError with one line: a damaged file is the sender's problem, never a 500 or a
traceback. preprocess.py takes it from there (the digit steps).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import threading

from PIL import Image

from .errors import InputImageError, first_line

# Refuse images beyond this many pixels before decoding them (a 48-megapixel phone
# photo passes; a decompression bomb does not). Pillow's own limit is higher.
MAX_PIXELS = 50_000_000
# Formats whose decoder cannot shrink while decoding are decoded whole: at most this
# many pixels (16 MP RGBA is 64 MiB). GIF's canvas is cheap to claim (a 43-byte file can
# claim 7071x7071): digits drawn as GIFs are small. JPEG decodes straight to 1/8 size.
FORMAT_PIXELS = {"JPEG": MAX_PIXELS, "MPO": MAX_PIXELS, "GIF": 4_000_000}
LOSSLESS_PIXELS = 16_000_000
# Bytes read from a path at most (a 50-megapixel PNG is well under this).
MAX_FILE_BYTES = 200 * 1024 * 1024
# Formats Pillow may open: the ones people have digits in. Others (EPS, PDF...) are
# refused, some of them would run external programs.
FORMATS = ("PNG", "JPEG", "MPO", "BMP", "DIB", "GIF", "WEBP", "TIFF", "PPM")
Image.init()  # register every plugin now: Image.open(formats=...) looks them up by name
FORMATS = tuple(name for name in FORMATS if name in Image.OPEN)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Modes Image.reduce works on; others are converted first (palette colours cannot be
# averaged as indices). Transparent modes are averaged premultiplied, so the colour
# under a transparent pixel does not bleed into its neighbours.
REDUCIBLE = ("L", "RGB", "I", "F", "CMYK", "YCbCr")
PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}
# EXIF orientation -> the transpose that puts the image upright (as ImageOps.exif_transpose).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
EXIF_ORIENTATION = 0x0112


class PixelBudget:
    """Pixels that one request (a batch of images) may decode in all: past it, the
    remaining images are refused before decoding, so a request's CPU time is bounded.
    Once `stop` is set (the client has gone), nothing more is decoded."""

    def __init__(self, pixels: int, stop: threading.Event | None = None):
        self.left = pixels
        self.stop = stop

    def spend(self, pixels: int) -> None:
        if self.stop is not None and self.stop.is_set():
            raise InputImageError("not decoded: the client has gone")
        if pixels > self.left:
            raise InputImageError(f"not decoded: this request's budget of decoded pixels is spent "
                                  f"({pixels:,} more asked, {max(self.left, 0):,} left); "
                                  "send fewer or smaller images")
        self.left -= pixels


def read_file(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES; InputImageError otherwise.
    Opened without blocking, so a named pipe called digit.png cannot hang the reader,
    and checked after opening, so a symlink to /dev/zero is refused, not read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputImageError("no such file") from None
    except OSError as error:
        raise InputImageError(f"cannot read ({error.strerror})") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise InputImageError("is a folder, not an image")
        raise InputImageError("not a regular file (a pipe, device or socket), not an image")
    with os.fdopen(descriptor, "rb") as file:
        if info.st_size > MAX_FILE_BYTES:
            raise InputImageError(f"file of {info.st_size:,} bytes is too big for a digit image "
                                  f"(limit {MAX_FILE_BYTES:,}); crop or shrink it")
        try:
            data = file.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            raise InputImageError(f"cannot read ({error.strerror})") from None
    if len(data) > MAX_FILE_BYTES:  # it grew while being read
        raise InputImageError(f"file is too big for a digit image (limit {MAX_FILE_BYTES:,} bytes)")
    return data


@contextlib.contextmanager
def decoder_errors():
    """Any exception from Pillow's decoders -> InputImageError with one line."""
    try:
        yield
    except InputImageError:
        raise
    except Image.DecompressionBombError as error:
        found = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise InputImageError(f"image of {size} is over the limit of {MAX_PIXELS:,} "
                              "(refused before decoding); crop or shrink it") from None
    except Image.UnidentifiedImageError:
        raise InputImageError("not an image that can be read "
                              "(PNG, JPEG, BMP, GIF, WebP or TIFF expected)") from None
    except MemoryError:
        raise InputImageError("image too big to decode in the memory available; crop or shrink it") from None
    except Exception as error:  # noqa: BLE001 -- a decoder's error on a stranger's bytes
        reason = first_line(error)
        if "truncated" in reason:
            raise InputImageError("truncated image: the file is cut short; "
                                  "copy or export it again") from None
        raise InputImageError(f"damaged image ({reason}); export it again") from None


def open_image(source) -> Image.Image:
    """Open (header only) from a path, bytes or file object; nothing decoded yet."""
    if isinstance(source, (str, os.PathLike)):
        source = read_file(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = bytes(source)
        if not source:
            raise InputImageError("empty file (0 bytes), not an image")
        if source[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
            raise InputImageError("HEIC/AVIF photos are not supported; export it as JPEG or PNG")
        source = io.BytesIO(source)
    with decoder_errors():
        return Image.open(source, formats=FORMATS)


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise InputImageError(f"image has no pixels ({width}x{height})")
    size = f"{width}x{height} = {width * height:,} pixels"
    if width * height > MAX_PIXELS:
        raise InputImageError(f"image of {size} is over the limit of {MAX_PIXELS:,} "
                              "(refused before decoding); crop or shrink it")
    budget = FORMAT_PIXELS.get(image.format, LOSSLESS_PIXELS)
    if width * height > budget:
        raise InputImageError(f"{image.format} image of {size} is over the limit of {budget:,} "
                              f"for {image.format} (refused before decoding); crop or shrink it, "
                              "or send it as JPEG")


def _check_one_frame(image: Image.Image) -> None:
    """Refuse animations and multi-page files by looking for a second frame only
    (counting them all is slow for a many-page TIFF, and fails on a damaged tail).
    MPO is how some phones store a JPEG with a preview: its first frame is the photo."""
    try:
        image.seek(1)
    except EOFError:
        return
    if image.format == "MPO":
        image.seek(0)
        return
    kind = "multi-page" if image.format == "TIFF" else "animated"
    raise InputImageError(f"{kind} image (more than one frame); "
                          "save the one frame with the digit as PNG")


def _reduce(image: Image.Image, side: int) -> Image.Image:
    """At most `side` px on the longer side, by box averaging, in Pillow's own modes."""
    if max(image.size) <= side:
        return image
    if image.mode == "P":
        has_alpha = "transparency" in image.info or image.palette.mode == "RGBA"
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    elif image.mode not in REDUCIBLE and image.mode not in PREMULTIPLIED:
        image = image.convert("RGBA" if "A" in image.getbands() else "L" if image.mode == "1" else "RGB")
    straight = image.mode if image.mode in PREMULTIPLIED else None
    if straight:
        image = image.convert(PREMULTIPLIED[straight])
    factor = max(image.size) // side
    if factor >= 2:
        image = image.reduce(factor)  # cheap whole-factor step first
    if max(image.size) > side:
        scale = side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BOX)
    return image.convert(straight) if straight else image


def decode(source, max_side: int | None = None, budget: PixelBudget | None = None) -> Image.Image:
    """Decode an image safely from a path, bytes, a file object or a PIL image, upright
    per its EXIF orientation; with `max_side`, at most that many px on its longer side
    (JPEGs decoded straight to about that size). `budget`, when given, pays for the
    pixels decoded.

    Refuses (InputImageError, one line) empty, unreadable, damaged or truncated files,
    images over their pixel limits (checked from the header, before decoding), and
    animated or multi-page images.
    """
    image = source if isinstance(source, Image.Image) else open_image(source)
    _check_size(image)
    with decoder_errors():
        _check_one_frame(image)
        if max_side and image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L", "CMYK"):
            # Let the JPEG decoder scale down by 1/2..1/8 while decoding: fast and small.
            image.draft(image.mode, (max_side, max_side))
        if budget is not None:
            budget.spend(image.width * image.height)
        orientation = image.getexif().get(EXIF_ORIENTATION)
        image.load()
        if max_side:
            image = _reduce(image, max_side)
        if orientation in UPRIGHT:
            image = image.transpose(UPRIGHT[orientation])
    return image


def load_image(source) -> Image.Image:
    """Decode an image safely at its full size (see `decode`)."""
    return decode(source)
