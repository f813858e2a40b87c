"""The static layers of the local preview: the prompt card and the "not an AI model" label.

Drawn once per render with Pillow, then kept as premultiplied arrays so that putting them on a frame is one
multiply-add over a small region, not a Pillow composite per frame.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont, features

log = logging.getLogger(__name__)

LABEL = "local/preview — offline preview, not an AI model"
FONT_CANDIDATES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf", "Arial.ttf")
"""Tried first for their wide character coverage; Pillow's bundled font is the offline fallback."""

PANEL_RGBA = (12, 14, 24, 178)
TEXT_RGBA = (246, 246, 246, 255)
MUTED_RGBA = (190, 192, 204, 255)
_ASCII_FALLBACKS = str.maketrans({"—": "-", "–": "-", "‘": "'", "’": "'", "“": '"', "”": '"'})

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True, slots=True)
class Overlay:
    """An RGBA layer at (x, y), stored premultiplied on a 0..256 alpha scale for an exact integer blend."""

    x: int
    y: int
    premultiplied: npt.NDArray[np.uint16]
    inverse_alpha: npt.NDArray[np.uint16]

    @classmethod
    def from_image(cls, image: Image.Image, x: int, y: int) -> Overlay:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
        alpha = (rgba[:, :, 3:4] * 256 + 127) // 255
        return cls(x, y, (rgba[:, :, :3] * alpha).astype(np.uint16), (256 - alpha).astype(np.uint16))

    def apply(self, frame: npt.NDArray[np.uint8]) -> None:
        height, width = self.inverse_alpha.shape[:2]
        region = frame[self.y : self.y + height, self.x : self.x + width]
        mixed = region.astype(np.uint16)
        mixed *= self.inverse_alpha
        mixed += self.premultiplied
        mixed >>= 8
        region[...] = mixed


def card_overlay(prompt: str, negative_prompt: str | None, width: int, height: int) -> Overlay:
    """The prompt, wrapped and as large as fits, on a translucent panel centred in the frame."""
    short = min(width, height)
    card_w = round(width * (0.8 if width > height else 0.88))
    pad = round(short * 0.045)
    text_w = card_w - 2 * pad
    max_card_h = round(height * (0.62 if width >= height else 0.55))

    neg_lines: list[str] = []
    neg_font = load_font(max(12, round(short * 0.03)))
    neg_line_h = round(_font_size(neg_font) * 1.3)
    if negative_prompt:
        neg_lines = _fit_lines(f"avoid: {negative_prompt}", neg_font, text_w, max_lines=2)
    neg_block = (pad // 2 + len(neg_lines) * neg_line_h) if neg_lines else 0

    max_text_h = max_card_h - 2 * pad - neg_block
    size = round(short * 0.072)
    min_size = max(12, round(short * 0.028))
    while True:
        font = load_font(size)
        line_h = round(_font_size(font) * 1.3)
        max_lines = max(1, max_text_h // line_h)
        lines = wrap_text(prompt, font, text_w)
        if len(lines) <= max_lines or size <= min_size:
            lines = _fit_lines(prompt, font, text_w, max_lines=max_lines)
            break
        size = max(min_size, int(size * 0.88))

    card_h = 2 * pad + len(lines) * line_h + neg_block
    panel = Image.new("RGBA", (card_w, card_h), (0, 0, 0, 0))
    ImageDraw.Draw(panel).rounded_rectangle(
        (0, 0, card_w - 1, card_h - 1), radius=max(4, round(pad * 0.6)), fill=PANEL_RGBA
    )
    text = Image.new("RGBA", (card_w, card_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(text)
    y = pad
    for line in lines:
        line_w = draw.textlength(line, font=font)
        draw.text(((card_w - line_w) / 2, y), line, font=font, fill=TEXT_RGBA)
        y += line_h
    y += pad // 2 if neg_lines else 0
    for line in neg_lines:
        line_w = draw.textlength(line, font=neg_font)
        draw.text(((card_w - line_w) / 2, y), line, font=neg_font, fill=MUTED_RGBA)
        y += neg_line_h
    card = Image.alpha_composite(panel, text)
    return Overlay.from_image(card, (width - card_w) // 2, (height - card_h) // 2)


def label_overlay(width: int, height: int) -> Overlay:
    """The honest label, small, on a dark pill in the bottom-left corner (above the progress line)."""
    short = min(width, height)
    font = load_font(max(11, round(short * 0.024)))
    text = displayable(LABEL, font)
    pad_x, pad_y = round(short * 0.014), round(short * 0.008)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    pill_w = min(width - 2 * pad_x, int(right - left) + 2 * pad_x)
    pill_h = int(bottom - top) + 2 * pad_y
    pill = Image.new("RGBA", (pill_w, pill_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(pill)
    draw.rounded_rectangle((0, 0, pill_w - 1, pill_h - 1), radius=pill_h // 2, fill=(0, 0, 0, 150))
    draw.text((pad_x - left, pad_y - top), text, font=font, fill=(235, 235, 235, 255))
    margin = round(short * 0.025)
    return Overlay.from_image(pill, margin, height - margin - pill_h - max(4, round(short / 120)))


@functools.lru_cache(maxsize=64)
def load_font(size: int) -> Font:
    """A scalable font of `size` px: a system font if one is installed, else Pillow's bundled one."""
    for name in FONT_CANDIDATES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    if features.check_module("freetype2"):
        return ImageFont.load_default(size=size)
    log.warning("no FreeType support in Pillow; the preview card uses the small bitmap font")
    return ImageFont.load_default()


def wrap_text(text: str, font: Font, max_width: int) -> list[str]:
    """Greedy word wrap by measured width; words wider than a line are split; newlines are kept."""
    text = displayable(text, font)
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}" if current else word
            if font.getlength(candidate) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            for char in word:
                if current and font.getlength(current + char) > max_width:
                    lines.append(current)
                    current = ""
                current += char
        lines.append(current)
    while lines and not lines[-1]:
        lines.pop()
    return lines or [""]


def displayable(text: str, font: Font) -> str:
    """`text` with characters the font has no glyph for replaced by close ASCII, when there is one."""
    if text.isascii():
        return text
    missing = _notdef_mask(font)
    out: list[str] = []
    for char in text:
        if char.isspace() or char.isascii() or _glyph_mask(font, char) != missing:
            out.append(char)
            continue
        plain = char.translate(_ASCII_FALLBACKS)
        if plain == char:
            plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        out.append(plain or char)
    return "".join(out)


def _fit_lines(text: str, font: Font, max_width: int, *, max_lines: int) -> list[str]:
    lines = wrap_text(text, font, max_width)
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1]
    while last and font.getlength(last + "…") > max_width:
        last = last[:-1]
    kept[-1] = last.rstrip() + "…"
    return kept


def _font_size(font: Font) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        return int(font.size)
    _, top, _, bottom = font.getbbox("Ag")
    return int(bottom - top) or 11


def _glyph_mask(font: Font, char: str) -> bytes:
    return bytes(font.getmask(char))


def _notdef_mask(font: Font) -> bytes:
    """What a missing glyph looks like in `font` (a private-use character is never in these fonts)."""
    return _glyph_mask(font, "\ue000")
