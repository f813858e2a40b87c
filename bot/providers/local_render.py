"""The renderer behind `local/preview`: an animated card showing the prompt, encoded to H.264 MP4.

There is no AI here. It exists so the whole bot runs (and is tested end to end) without a paid provider, so it
must be honest about what it is (the label on every frame) and cheap: a 5 s 720p clip renders in a few seconds
on 2 cores. Everything static (text layer, gradient index field, sprites) is computed once; a frame is a
palette lookup, a few small additions and blends, then the encoder. Blocking; callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt

from bot.domain import MAX_SEED, Aspect, VideoRequest
from bot.errors import InvalidRequest, VideoBotError
from bot.errors.said import Said
from bot.i18n.ids import N_
from bot.images import load_image
from bot.providers.local_card import card_overlay, label_overlay

log = logging.getLogger(__name__)

FRAME_SIZES: dict[Aspect, tuple[int, int]] = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
"""Width and height per aspect."""

PALETTE_SIZE = 1024
"""Entries in the cyclic colour palette; a power of two so wrapping is a bit mask."""

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
U8Array = npt.NDArray[np.uint8]
U16Array = npt.NDArray[np.uint16]


class RenderError(VideoBotError):
    """The card could not be rendered (unreadable image, encoder failure); the message says why, for the log, and
    `said` for the member."""

    def __init__(self, message: str, said: Said) -> None:
        super().__init__(message)
        self.said = said


class RenderCancelled(VideoBotError):
    """The cancel callback asked the render to stop; nothing was left on disk."""


def frame_size(aspect: Aspect) -> tuple[int, int]:
    return FRAME_SIZES[aspect]


def seed_for(request: VideoRequest) -> int:
    """The request's seed, or one derived from the prompt so the same prompt looks the same every time."""
    if request.seed is not None:
        return request.seed
    digest = hashlib.sha256(request.prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & MAX_SEED


def render_card(
    request: VideoRequest,
    dest: Path,
    *,
    fps: int = 24,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    threads: int = 0,
) -> None:
    """Render `request` to `dest` (written to a temporary file and renamed, so `dest` is whole or absent).

    Exactly `duration * fps` frames. `progress(done, total)` is called after every frame; `should_cancel()` is
    checked before every frame and raises `RenderCancelled` when true. `threads=0` lets x264 choose.
    """
    width, height = frame_size(request.aspect)
    total = request.duration * fps
    rng = np.random.default_rng(seed_for(request))
    background: _Background
    if request.image_path:
        background = _ImageBackground(Path(request.image_path), width, height, total, rng)
    else:
        background = _GradientBackground(width, height, fps, rng)
    overlays = [
        card_overlay(request.prompt, request.negative_prompt, width, height),
        label_overlay(width, height),
    ]
    bar_height = max(4, round(min(width, height) / 120))
    accent = background.accent

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    frame_buf = np.empty((height, width, 3), dtype=np.uint8)
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "28"}
            stream.codec_context.thread_count = threads
            stream.codec_context.time_base = Fraction(1, fps)
            for index in range(total):
                if should_cancel is not None and should_cancel():
                    raise RenderCancelled(f"render of {dest.name} cancelled at frame {index}/{total}")
                background.draw(index, frame_buf)
                for overlay in overlays:
                    overlay.apply(frame_buf)
                filled = round(width * (index + 1) / total)
                frame_buf[height - bar_height :, :filled] = accent
                frame = av.VideoFrame.from_ndarray(frame_buf, format="rgb24")
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                out.mux(stream.encode(frame))
                if progress is not None:
                    progress(index + 1, total)
            out.mux(stream.encode(None))
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Background(Protocol):
    accent: tuple[int, int, int]

    def draw(self, index: int, out: U8Array) -> None: ...


class _GradientBackground:
    """A palette cycled over a fixed index field (lines, rings, waves, diamonds or a swirl), plus soft blobs.

    The field is computed once; a frame adds a shift and looks the colours up, which is one vectorised pass.
    """

    KINDS = ("linear", "radial", "waves", "diamond", "swirl")

    def __init__(self, width: int, height: int, fps: int, rng: np.random.Generator) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.palette = _palette(rng)
        self.kind = self.KINDS[int(rng.integers(len(self.KINDS)))]
        self.field = _index_field(self.kind, width, height, rng)
        speed = float(rng.uniform(0.08, 0.3)) * (1 if rng.random() < 0.5 else -1)
        self.shift_per_frame = speed * PALETTE_SIZE / fps
        red, green, blue = (int(c) // 2 + 128 for c in self.palette[int(rng.integers(PALETTE_SIZE))])
        self.accent = (red, green, blue)
        self.blobs = [_Blob(width, height, rng) for _ in range(3)]
        self._index = np.empty_like(self.field)

    def draw(self, index: int, out: U8Array) -> None:
        shift = round(index * self.shift_per_frame) % PALETTE_SIZE
        np.add(self.field, shift, out=self._index)
        np.bitwise_and(self._index, PALETTE_SIZE - 1, out=self._index)
        np.take(self.palette, self._index, axis=0, out=out)
        seconds = index / self.fps
        for blob in self.blobs:
            blob.add_to(out, seconds)


class _ImageBackground:
    """The member's image, cover-cropped a little larger than the frame and panned slowly across."""

    OVERSCAN = 1.08

    def __init__(self, path: Path, width: int, height: int, total: int, rng: np.random.Generator) -> None:
        big_w, big_h = math.ceil(width * self.OVERSCAN), math.ceil(height * self.OVERSCAN)
        try:
            # Decoded scaled down, and refused above the pixel limit before any decoding: a small file can
            # declare a huge image, and this runs on the worker that renders everyone's jobs.
            fitted = load_image(path, (big_w, big_h))
        except (InvalidRequest, OSError) as exc:
            said = Said(N_("failure.local.image-unreadable"), {"image": path.name, "detail": str(exc)})
            raise RenderError(f"cannot read the image {path.name}: {exc}", said) from exc
        self.image: U8Array = np.asarray(fitted, dtype=np.uint8)
        self.width, self.height, self.total = width, height, total
        self.span_x, self.span_y = big_w - width, big_h - height
        self.reverse = bool(rng.random() < 0.5)
        mean = self.image.reshape(-1, 3).mean(axis=0)
        self.accent = (255, 255, 255) if float(mean.mean()) < 160 else (20, 20, 20)

    def draw(self, index: int, out: U8Array) -> None:
        t = index / max(1, self.total - 1)
        if self.reverse:
            t = 1.0 - t
        x, y = round(self.span_x * t), round(self.span_y * t)
        out[...] = self.image[y : y + self.height, x : x + self.width]


class _Blob:
    """A soft light disc drifting on a Lissajous path, added (not blended) so it is one small saturating add."""

    def __init__(self, width: int, height: int, rng: np.random.Generator) -> None:
        radius = int(min(width, height) * rng.uniform(0.1, 0.2))
        size = 2 * radius
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        dist = np.hypot(xx - radius + 0.5, yy - radius + 0.5) / radius
        falloff = np.clip(1.0 - dist, 0.0, 1.0) ** 2
        tint = rng.uniform(0.6, 1.0, size=3) * rng.uniform(35, 70)
        self.sprite: U16Array = (falloff[:, :, None] * tint[None, None, :]).astype(np.uint16)
        self.size = size
        self.span_x, self.span_y = width - size, height - size
        self.freq = rng.uniform(0.05, 0.25, size=2)
        self.phase = rng.uniform(0, 2 * math.pi, size=2)

    def add_to(self, out: U8Array, seconds: float) -> None:
        fx, fy = self.freq
        px, py = self.phase
        x = round(self.span_x * (0.5 + 0.5 * math.sin(2 * math.pi * fx * seconds + px)))
        y = round(self.span_y * (0.5 + 0.5 * math.sin(2 * math.pi * fy * seconds + py)))
        region = out[y : y + self.size, x : x + self.size]
        summed = region.astype(np.uint16)
        summed += self.sprite
        np.minimum(summed, 255, out=summed)
        region[...] = summed


def _palette(rng: np.random.Generator) -> U8Array:
    """A cyclic palette through 3-4 seed-chosen colours, eased so the bands look smooth."""
    count = int(rng.integers(3, 5))
    base_hue = rng.random()
    hues = (base_hue + np.sort(rng.uniform(0.0, 0.6, size=count))) % 1.0
    sats = rng.uniform(0.45, 0.85, size=count)
    vals = rng.uniform(0.35, 0.8, size=count)
    stops = np.array([_hsv_to_rgb(h, s, v) for h, s, v in zip(hues, sats, vals, strict=True)])
    pos = np.arange(PALETTE_SIZE) * count / PALETTE_SIZE
    left = np.floor(pos).astype(int) % count
    right = (left + 1) % count
    frac = pos - np.floor(pos)
    ease = (0.5 - 0.5 * np.cos(np.pi * frac))[:, None]
    colours = stops[left] * (1.0 - ease) + stops[right] * ease
    palette: U8Array = np.clip(np.rint(colours), 0, 255).astype(np.uint8)
    return palette


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (r * 255, g * 255, b * 255)


def _index_field(kind: str, width: int, height: int, rng: np.random.Generator) -> U16Array:
    """Palette index per pixel for the pattern `kind`; its cycles wrap seamlessly because the palette does."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    diag = math.hypot(width, height)
    cycles = float(rng.uniform(0.6, 2.0))
    cx, cy = width * rng.uniform(0.2, 0.8), height * rng.uniform(0.2, 0.8)
    angle = rng.uniform(0, 2 * math.pi)
    along = (xx * math.cos(angle) + yy * math.sin(angle)) / diag
    if kind == "linear":
        t = along * cycles
    elif kind == "radial":
        t = np.hypot(xx - cx, yy - cy) / diag * cycles * 1.5
    elif kind == "waves":
        across = (-xx * math.sin(angle) + yy * math.cos(angle)) / diag
        t = along * cycles + 0.12 * np.sin(2 * math.pi * across * rng.uniform(1.5, 4.0))
    elif kind == "diamond":
        t = (np.abs(xx - cx) + np.abs(yy - cy)) / diag * cycles * 1.5
    else:  # swirl: whole turns around a centre, plus distance, so it stays continuous
        turns = int(rng.integers(1, 4))
        theta = np.arctan2(yy - cy, xx - cx) / (2 * math.pi)
        t = theta * turns + np.hypot(xx - cx, yy - cy) / diag * cycles
    index = np.floor(t * PALETTE_SIZE).astype(np.int64) % PALETTE_SIZE
    field: U16Array = index.astype(np.uint16)
    return field
