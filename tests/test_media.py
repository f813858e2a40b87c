"""bot.media on real files: clips rendered by the local renderer, re-encoded by PyAV, probed back."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bot.domain import VideoRequest
from bot.errors import VideoBotError
from bot.media import MediaError, MediaInfo, fit_to_size, poster_frame, probe
from bot.providers.local_render import render_card

FPS = 24


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 top-level box types in file order (ftyp, moov, mdat …)."""
    data = path.read_bytes()
    boxes: list[str] = []
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def assert_faststart(path: Path) -> None:
    boxes = top_level_boxes(path)
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat"), boxes


def decode_all(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [frame.format.name for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    request = VideoRequest(prompt="a lighthouse in a storm, waves crashing", model="local/preview", duration=2, seed=11)
    render_card(request, path, fps=FPS)
    return path


def test_probe_describes_a_rendered_clip(clip: Path) -> None:
    info = probe(clip)
    assert isinstance(info, MediaInfo)
    assert info.codec == "h264"
    assert (info.width, info.height) == (1280, 720)
    assert info.frame_count == 2 * FPS
    assert abs(info.duration - 2.0) <= 1 / FPS
    assert info.size_bytes == clip.stat().st_size
    assert info.bit_rate is None or info.bit_rate > 0
    assert info.pix_fmt == "yuv420p"
    assert info.has_audio is False


def test_probe_rejects_a_text_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(MediaError) as caught:
        probe(text)
    assert isinstance(caught.value, VideoBotError)
    assert "notes.mp4" in str(caught.value)


def test_probe_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError):
        probe(tmp_path / "nope.mp4")


def test_probe_rejects_audio_only(tmp_path: Path) -> None:
    path = tmp_path / "tone.m4a"
    write_clip(path, video=False, audio=True)
    with pytest.raises(MediaError, match="no video stream"):
        probe(path)


def test_fit_to_size_shrinks_under_the_budget(clip: Path, tmp_path: Path) -> None:
    source = probe(clip)
    budget = source.size_bytes // 3
    dest = tmp_path / "fitted.mp4"

    info = fit_to_size(clip, dest, budget)

    assert dest.stat().st_size <= budget
    assert info.size_bytes == dest.stat().st_size
    assert info.codec == "h264"
    assert info.frame_count == source.frame_count
    assert abs(info.duration - source.duration) <= 1 / FPS
    assert info.height >= 240
    assert info.width * 9 == pytest.approx(info.height * 16, rel=0.02)
    formats = decode_all(dest)
    assert len(formats) == source.frame_count
    assert set(formats) == {"yuv420p"}
    assert_faststart(dest)
    assert [p.name for p in tmp_path.iterdir()] == ["fitted.mp4"]


def test_fit_to_size_drops_audio(tmp_path: Path) -> None:
    src = tmp_path / "with_audio.mp4"
    write_clip(src, video=True, audio=True)
    assert probe(src).has_audio
    dest = tmp_path / "out.mp4"

    info = fit_to_size(src, dest, 200_000)

    assert info.has_audio is False
    assert info.frame_count == FPS
    assert dest.stat().st_size <= 200_000


def test_fit_to_size_refuses_an_impossible_budget(clip: Path, tmp_path: Path) -> None:
    dest = tmp_path / "tiny.mp4"
    with pytest.raises(MediaError, match="cannot fit"):
        fit_to_size(clip, dest, 2_000)
    assert list(tmp_path.iterdir()) == []


def test_fit_to_size_rejects_a_non_video(tmp_path: Path) -> None:
    src = tmp_path / "x.mp4"
    src.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError):
        fit_to_size(src, tmp_path / "y.mp4", 100_000)


def test_poster_frame_is_the_first_frame(clip: Path, tmp_path: Path) -> None:
    dest = tmp_path / "poster.png"
    poster_frame(clip, dest)
    with Image.open(dest) as image:
        assert image.format == "PNG"
        assert image.size == (1280, 720)
        poster = np.asarray(image.convert("RGB"), dtype=np.int16)
    with av.open(str(clip)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)
    assert np.abs(poster - first).max() == 0


def test_poster_frame_of_a_non_video_raises(tmp_path: Path) -> None:
    src = tmp_path / "x.mp4"
    src.write_text("nope")
    with pytest.raises(MediaError):
        poster_frame(src, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def write_clip(path: Path, *, video: bool, audio: bool) -> None:
    """A 1 s test file made with PyAV: grey frames and/or a sine tone."""
    with av.open(str(path), mode="w") as out:
        vstream = out.add_stream("libx264", rate=FPS) if video else None
        astream = out.add_stream("aac", rate=48_000) if audio else None
        if vstream is not None:
            vstream.width, vstream.height, vstream.pix_fmt = 320, 240, "yuv420p"
            for index in range(FPS):
                pixels = np.full((240, 320, 3), (index * 10) % 256, dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = index
                frame.time_base = Fraction(1, FPS)
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
        if astream is not None:
            samples = np.sin(np.arange(48_000, dtype=np.float32) * 2 * np.pi * 440 / 48_000) * 0.2
            size = astream.codec_context.frame_size or 1024
            for start in range(0, 48_000 - size, size):
                chunk = samples[start : start + size].reshape(1, -1)
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                aframe.sample_rate = 48_000
                aframe.pts = start
                aframe.time_base = Fraction(1, 48_000)
                out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))
