"""Members' images: opened only as the format they were declared as, bounded in pixels before anything is
decoded, and decoded no larger than they will be used.

Why so strict: Pillow recognizes dozens of formats, each a parser a member could aim at, and a PNG of a few
kilobytes can declare 12000×12000 pixels, which decodes to over half a gigabyte. Every failure becomes an
`ImageRejected` that says what is wrong (the front end tells the member).

Memory: JPEG is decoded already scaled down (libjpeg's DCT scaling, `draft()`), so it never exists larger than
about twice the size asked for. Pillow has no scaled decoding for PNG and WebP: they are decoded whole once,
which the pixel limit bounds (`MAX_IMAGE_PIXELS` × 4 bytes), then reduced at once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.errors import ImageDamaged, ImageFarTooLarge, ImageRejected, ImageTooLarge, NotAnImage, WrongImageFormat

MAX_IMAGE_PIXELS = 40_000_000
"""Largest width × height accepted (a 40 MP photo); far more than a video frame needs."""

FORMATS: dict[str, str] = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
"""Declared content type → the one Pillow format allowed to open it."""
ACCEPTED = tuple(fmt.lower() for fmt in FORMATS.values())

_REDUCIBLE_MODES = frozenset({"RGB", "RGBA", "L", "LA", "I", "F", "CMYK", "YCbCr"})
"""Modes `Image.reduce` averages correctly; the others are converted first, at full size."""
_GREY_MODES = frozenset({"1", "I;16", "I;16B", "I;16L", "I;16N"})
"""Bilevel and 16-bit grey become 8-bit grey (1 byte a pixel), not RGB (4): the full-size copy stays small."""

_CHECK_SIZE = (64, 64)
"""What `check_image` decodes to, only to prove the pixel data is whole."""


def check_image(path: Path | IO[bytes], content_type: str) -> tuple[int, int]:
    """Refuse (`ImageRejected`) unless `path` (a file, or bytes in memory) is a whole image of the declared type
    within the pixel limit; returns its width and height. Runs in a thread: it decodes the image (scaled down)
    once."""
    kind = content_type.split(";")[0].strip().lower()
    fmt = FORMATS.get(kind)
    if fmt is None:
        raise NotAnImage()
    with _member_errors((fmt.lower(),)):
        with _open(path, (fmt,)) as img:
            size = img.size
            img.verify()  # PNG: every chunk's checksum, to the end of the file
        # `verify()` leaves the image unusable and checks nothing of a JPEG's or WebP's pixel data: decoding
        # is the only proof that the renderer (or a provider) will be able to read it.
        with _open(path, (fmt,)) as img:
            _cover(img, _CHECK_SIZE)
    return size


def load_image(path: Path, size: tuple[int, int]) -> Image.Image:
    """The image at `path` in RGB, scaled and centre-cropped to fill exactly `size`; decoded no larger than
    needed (see the module docstring). Any of the accepted formats; `ImageRejected` for anything else."""
    with _member_errors(ACCEPTED), _open(path, tuple(FORMATS.values())) as img:
        return _cover(img, size)


@contextlib.contextmanager
def _open(path: Path | IO[bytes], formats: Sequence[str]) -> Iterator[Image.Image]:
    """Open (headers only) with nothing but `formats`, and refuse too many pixels before any decoding."""
    with Image.open(path, formats=list(formats)) as img:
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLarge(width, height, MAX_IMAGE_PIXELS)
        yield img


@contextlib.contextmanager
def _member_errors(expected: tuple[str, ...]) -> Iterator[None]:
    """Pillow's failures as refusals the member can act on. Its parsers raise many types for a malformed file
    (OSError, SyntaxError, ValueError, struct.error, EOFError…), so anything but our own refusal means
    "damaged"."""
    try:
        yield
    except (ImageRejected, FileNotFoundError):
        raise  # a missing file is the caller's problem, not the member's
    except UnidentifiedImageError as exc:
        raise WrongImageFormat(expected) from exc
    except Image.DecompressionBombError as exc:
        raise ImageFarTooLarge(MAX_IMAGE_PIXELS) from exc
    except Exception as exc:
        raise ImageDamaged() from exc


def _cover(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Decode `img` at the smallest scale that still covers `size`, then crop it to exactly `size`."""
    target_w, target_h = size
    scale = max(target_w / img.width, target_h / img.height)
    needed = (max(1, math.ceil(img.width * scale)), max(1, math.ceil(img.height * scale)))
    if scale < 1:
        img.draft("RGB", needed)  # JPEG only (a no-op for the others): decode at 1/2, 1/4 or 1/8 scale
    img.load()
    if img.mode in _GREY_MODES:
        img = img.convert("L")
    elif img.mode not in _REDUCIBLE_MODES:
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    factor = min(img.width // needed[0], img.height // needed[1])
    if factor >= 2:
        img = img.reduce(factor)  # a box average: cheap, and drops the full-size copy at once
    if img.mode != "RGB":
        img = img.convert("RGB")
    return ImageOps.fit(img, size, Image.Resampling.BILINEAR)
