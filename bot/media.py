"""Video files on disk, through PyAV: what a clip is, how to make it fit Discord's upload limit, a poster frame.

Every function here blocks (decoding and encoding are CPU work); async callers wrap them in
`asyncio.to_thread`. Every output is written to a temporary file next to its destination and renamed, so the
destination is either the whole result or absent, never a torn file a later step could pick up.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
from PIL import Image

from bot.errors import VideoBotError

log = logging.getLogger(__name__)

CONTAINER_MARGIN = 0.05
"""Share of the byte budget kept back for the MP4 container and rate control overshoot."""
MIN_VIDEO_BITRATE = 24_000
"""Below this (bits/s) a clip is not worth sending: `fit_to_size` gives up instead of producing mush."""
MIN_BITS_PER_PIXEL = 0.04
"""Bits per pixel per frame under which H.264 falls apart; the resolution is lowered to stay above it."""
MIN_HEIGHT = 240
MAX_ATTEMPTS = 3


class MediaError(VideoBotError):
    """A file is not a usable video, or cannot be made to fit; the message says which and why."""


@dataclass(frozen=True, slots=True)
class MediaInfo:
    duration: float
    """Seconds."""
    width: int
    height: int
    codec: str
    frame_count: int
    bit_rate: int | None
    """Bits per second of the whole file, when the container says."""
    size_bytes: int
    fps: float | None = None
    pix_fmt: str | None = None
    has_audio: bool = False


def probe(path: Path | str) -> MediaInfo:
    """Describe the first video stream of `path`; `MediaError` if it is missing, unreadable or has no video."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise MediaError(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            frame_count = stream.frames
            if frame_count <= 0:
                frame_count = sum(1 for packet in container.demux(stream) if packet.size)
            duration = _duration(stream.duration, stream.time_base, container.duration)
            if duration is None:
                duration = frame_count / fps if fps else 0.0
            bit_rate = container.bit_rate or stream.bit_rate or None
            return MediaInfo(
                duration=duration,
                width=ctx.width,
                height=ctx.height,
                codec=ctx.name,
                frame_count=frame_count,
                bit_rate=bit_rate,
                size_bytes=size,
                fps=fps,
                pix_fmt=ctx.pix_fmt,
                has_audio=bool(container.streams.audio),
            )
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{path.name} is not a readable video: {exc}") from exc


def fit_to_size(src: Path | str, dest: Path | str, max_bytes: int) -> MediaInfo:
    """Re-encode `src` to an H.264/yuv420p MP4 (faststart, no audio) of at most `max_bytes` at `dest`.

    The bitrate comes from the byte budget over the duration; the picture is scaled down (never below
    240 px high) when that bitrate would be too thin for the source size. A result that is still too big is
    encoded again at a proportionally lower rate, up to three times. Raises `MediaError` ("cannot fit …") when
    the budget cannot hold a watchable clip. Callers check the size first: this always re-encodes.
    """
    src, dest = Path(src), Path(dest)
    info = probe(src)
    if info.duration <= 0 or info.frame_count <= 0:
        raise MediaError(f"cannot fit {src.name}: it has no frames")
    fps = Fraction(info.fps or 24).limit_denominator(1001)
    # mp4 index tables grow per frame (sizes, offsets, timestamps); the header is a few KB
    overhead = 4096 + 24 * info.frame_count
    bitrate = (max_bytes - overhead) * (1 - CONTAINER_MARGIN) * 8 / info.duration
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if bitrate < MIN_VIDEO_BITRATE:
                break
            width, height = _scaled_size(info.width, info.height, float(fps), bitrate)
            _encode(src, tmp, width, height, fps, int(bitrate))
            size = tmp.stat().st_size
            log.info(
                "fit %s: attempt %d at %dx%d %d kb/s -> %d bytes (budget %d)",
                src.name,
                attempt,
                width,
                height,
                bitrate // 1000,
                size,
                max_bytes,
            )
            if size <= max_bytes:
                os.replace(tmp, dest)
                return probe(dest)
            bitrate *= max_bytes / size * 0.9
    finally:
        tmp.unlink(missing_ok=True)
    raise MediaError(f"cannot fit {src.name} ({info.duration:.1f} s, {info.size_bytes} bytes) into {max_bytes} bytes")


def poster_frame(src: Path | str, dest_png: Path | str) -> None:
    """Save the first frame of `src` as a PNG (for embeds and previews)."""
    src, dest_png = Path(src), Path(dest_png)
    tmp = dest_png.with_name(f".{dest_png.name}.part")
    try:
        with av.open(str(src), mode="r") as container:
            if not container.streams.video:
                raise MediaError(f"{src.name} has no video stream")
            frame = next(container.decode(video=0), None)
            if frame is None:
                raise MediaError(f"{src.name} has no frames")
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(tmp, format="PNG")
        os.replace(tmp, dest_png)
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"no poster frame from {src.name}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _duration(stream_duration: int | None, time_base: Fraction | None, container_us: int | None) -> float | None:
    if stream_duration and time_base:
        return float(stream_duration * time_base)
    if container_us:
        return container_us / av.time_base
    return None


def _scaled_size(width: int, height: int, fps: float, bitrate: float) -> tuple[int, int]:
    """The largest size (same aspect, even sides) that `bitrate` can feed at `MIN_BITS_PER_PIXEL`."""
    max_area = bitrate / (MIN_BITS_PER_PIXEL * fps)
    if width * height <= max_area:
        return _even(width), _even(height)
    scale = math.sqrt(max_area / (width * height))
    new_height = max(min(MIN_HEIGHT, height), round(height * scale))
    new_width = round(width * new_height / height)
    return _even(new_width), _even(new_height)


def _even(value: int) -> int:
    return max(2, value - value % 2)


def _encode(src: Path, dest: Path, width: int, height: int, fps: Fraction, bitrate: int) -> None:
    """One pass of libx264 at `bitrate` with a VBV cap, frames renumbered at a constant `fps`."""
    time_base = 1 / fps
    with (
        av.open(str(src), mode="r") as inp,
        av.open(str(dest), mode="w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        in_stream = inp.streams.video[0]
        in_stream.thread_type = "AUTO"
        stream = out.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        stream.bit_rate = bitrate
        stream.options = {
            "preset": "veryfast",
            "maxrate": str(bitrate),
            "bufsize": str(bitrate * 2),
        }
        for index, frame in enumerate(inp.decode(in_stream)):
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
            scaled.pts = index
            scaled.time_base = time_base
            scaled.pict_type = 0  # let x264 place keyframes, not copy the source's
            out.mux(stream.encode(scaled))
        out.mux(stream.encode(None))
