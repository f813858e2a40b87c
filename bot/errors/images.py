"""Why a member's image cannot be used: facts for the renderer, like every `UserError`."""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors.base import InvalidRequest
from bot.i18n.ids import N_


class ImageRejected(InvalidRequest):
    """The member's image cannot be used (the subclass says why)."""

    message_id = N_("image-rejected")


# The file is declared as something other than an accepted image type.
@dataclass(eq=False)
class NotAnImage(ImageRejected):
    message_id = N_("not-an-image")


@dataclass(eq=False)
class AttachmentNotAnImage(NotAnImage):
    filename: str
    message_id = N_("attachment-not-an-image")


# The file's content is not the format it was declared as; `expected` are the formats it may be.
@dataclass(eq=False)
class WrongImageFormat(ImageRejected):
    expected: tuple[str, ...]
    message_id = N_("wrong-image-format")


@dataclass(eq=False)
class ImageTooLarge(ImageRejected):
    width: int
    height: int
    max_pixels: int
    message_id = N_("image-too-large")


# Discord measured the attachment: refused before it is downloaded.
@dataclass(eq=False)
class AttachmentTooLarge(ImageTooLarge):
    filename: str
    message_id = N_("attachment-too-large")


# So many pixels that the decoder refused to measure them (a decompression bomb).
@dataclass(eq=False)
class ImageFarTooLarge(ImageRejected):
    max_pixels: int
    message_id = N_("image-far-too-large")


@dataclass(eq=False)
class AttachmentTooHeavy(ImageRejected):
    filename: str
    size: int
    max_bytes: int
    message_id = N_("attachment-too-heavy")


@dataclass(eq=False)
class ImageDamaged(ImageRejected):
    message_id = N_("image-damaged")


@dataclass(eq=False)
class ImageDownloadFailed(ImageRejected):
    message_id = N_("image-download-failed")


@dataclass(eq=False)
class NoImageInMessage(ImageRejected):
    message_id = N_("no-image-in-message")


# A job made from an image cannot be run again: its input image was deleted when it ended.
@dataclass(eq=False)
class ImageNotKept(ImageRejected):
    job_id: str
    message_id = N_("image-not-kept")
