"""A member's image as the video services take it: the shared parts of every adapter's first frame.

Services take a first frame inline (base64, bare or as a `data:` URI) in the create itself, or as an upload:
either way as the file it is when it fits their limits, else decoded by `bot.images.load_image` (which refuses
what is not a whole PNG, JPEG or WebP within the pixel limit) and encoded again at a size that fits. What each
vendor's limits are (sides, ratio, bytes) stays in its adapter. The functions that decode run in a thread.

Two ways to refuse an image that cannot be used, both final: an adapter that checks the image's header first
(`read_frame`) names it as the field the vendor would reject (`RequestRejected`, field `image`); one that only
crops it (`cropped_frame`) says it could not be read (`unusable_image`). A file gone from disk is `missing_image`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot.errors import ImageRejected, ProviderError, RequestRejected
from bot.errors.said import Said
from bot.i18n.ids import N_
from bot.images import MAX_IMAGE_PIXELS, load_image

MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
"""The formats a member's image may be (`bot.images`) → their MIME type."""
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def sniff_mime(data: bytes) -> str | None:
    """The MIME type of a PNG, JPEG or WebP file from its first bytes; None for anything else."""
    mime = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return mime


def encoded(data: bytes) -> str:
    """Bare base64, as text."""
    return base64.b64encode(data).decode("ascii")


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{encoded(data)}"


def fitted_frame(path: Path, size: tuple[int, int], *, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """The image scaled and centre-cropped to fill exactly `size`, encoded as `fmt` (JPEG at `quality`)."""
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    load_image(path, size).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def missing_image(path: Path) -> ProviderError:
    return ProviderError(f"image {path} not found", retryable=False,
                         user_message=Said(N_("failure.image-missing")))  # fmt: skip


def unusable_image(provider: str, path: Path, error: Exception) -> ProviderError:
    return ProviderError(f"{provider}: image {path} unusable: {type(error).__name__}", retryable=False,
                         user_message=Said(N_("failure.image-unreadable")))  # fmt: skip


async def cropped_frame(provider: str, path: Path, size: tuple[int, int], *, fmt: str = "JPEG") -> bytes:
    """`fitted_frame`, decoded in a thread; an image that cannot be read is `unusable_image`."""
    try:
        return await asyncio.to_thread(fitted_frame, path, size, fmt=fmt)
    except (OSError, ImageRejected) as exc:
        raise unusable_image(provider, path, exc) from None


@contextlib.contextmanager
def image_errors(provider: str, path: Path) -> Iterator[None]:
    """Any failure to read the image in the block: a file gone is `missing_image`, anything else a
    `RequestRejected` of the `image` field, naming only the kind of failure."""
    try:
        yield
    except FileNotFoundError:
        raise missing_image(path) from None
    except (OSError, ValueError, Image.DecompressionBombError, ImageRejected) as exc:
        unreadable = Said(N_("failure.rejected.image-unreadable"), {"error_type": type(exc).__name__})
        raise RequestRejected(provider, unreadable, field="image") from None


@dataclass(frozen=True, slots=True)
class Frame:
    """A member's image as its header tells it (nothing decoded yet)."""

    path: Path
    format: str
    """`PNG`, `JPEG` or `WEBP`."""
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def mime(self) -> str:
        return MIME[self.format]

    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def data_uri(self) -> str:
        """The file as it is."""
        return data_uri(self.mime, self.path.read_bytes())

    def within(self, longest: int) -> tuple[int, int]:
        """Its size, of the same shape, scaled down (never up) to `longest` pixels on the longer side."""
        scale = min(1.0, longest / max(self.width, self.height))
        return max(1, round(self.width * scale)), max(1, round(self.height * scale))


@contextlib.contextmanager
def read_frame(provider: str, path: Path) -> Iterator[Frame]:
    """The image's header, for a block that encodes it (in a thread): opened only as PNG, JPEG or WebP and
    refused past `MAX_IMAGE_PIXELS` before anything is decoded; every failure in the block is `image_errors`'."""
    with image_errors(provider, path):
        with Image.open(path, formats=list(MIME)) as img:
            fmt, (width, height) = str(img.format), img.size
        if width * height > MAX_IMAGE_PIXELS:
            too_many = Said(N_("failure.rejected.image-too-many-pixels"), {"width": str(width), "height": str(height)})
            raise RequestRejected(provider, too_many, field="image")
        yield Frame(path, fmt, width, height)
