"""LocalPreviewProvider on real renders: submit → poll → download, cancel, crash recovery, image input."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from bot.discord.messages import ENGLISH, reason_text
from bot.domain import ASPECTS, Aspect, VideoRequest
from bot.errors import ProviderError
from bot.media import probe
from bot.providers.base import PollResult, RemoteJob, RemoteState, VideoProvider
from bot.providers.local import LocalPreviewProvider
from bot.providers.local_render import render_card

FPS = 24
SIZES = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalPreviewProvider]:
    provider = LocalPreviewProvider(tmp_path / "work", fps=FPS)
    try:
        yield provider
    finally:
        await provider.aclose()


def make_request(**overrides: object) -> VideoRequest:
    fields: dict[str, object] = {"prompt": "a paper boat on a rainy street", "model": "local/preview"}
    fields.update({"duration": 1, "aspect": "1:1", "seed": 5})
    fields.update(overrides)
    return VideoRequest.model_validate(fields)


async def poll_until_done(
    provider: LocalPreviewProvider, remote: RemoteJob, progress: list[float] | None = None
) -> PollResult:
    async with asyncio.timeout(60):
        while True:
            result = await provider.poll(remote)
            if result.state is not RemoteState.RUNNING:
                return result
            if progress is not None and result.progress is not None:
                progress.append(result.progress)
            await asyncio.sleep(0.02)


async def render_and_download(provider: LocalPreviewProvider, job_id: str, request: VideoRequest, dest: Path) -> None:
    remote = RemoteJob(job_id, await provider.submit(job_id, request), request)
    result = await poll_until_done(provider, remote)
    assert result.state is RemoteState.SUCCEEDED, result
    await provider.download(remote, result, dest)


def first_frame(path: Path) -> npt.NDArray[np.uint8]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "yuv420p"
        array: npt.NDArray[np.uint8] = frame.to_ndarray(format="rgb24")
        return array


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(kind.decode("latin-1"))
        offset += size if size else len(data)
    return boxes


def test_the_provider_describes_one_honest_model(tmp_path: Path) -> None:
    provider = LocalPreviewProvider(tmp_path)
    assert isinstance(provider, VideoProvider)
    assert provider.name == "local"
    assert provider.max_concurrency == 1
    assert provider.safe_resubmit is True
    (model,) = provider.models()
    assert model.id == "local/preview"
    assert model.durations == tuple(range(1, 61))
    assert model.aspects == ASPECTS
    assert model.supports_image and model.supports_seed and model.supports_negative_prompt
    assert "not an AI model" in model.description


@pytest.mark.parametrize("aspect", ["16:9", "9:16", "1:1"])
async def test_render_poll_download(local: LocalPreviewProvider, tmp_path: Path, aspect: Aspect) -> None:
    request = make_request(aspect=aspect, negative_prompt="fog")
    dest = tmp_path / "out" / "clip.mp4"

    await render_and_download(local, f"job-{aspect.replace(':', 'x')}", request, dest)

    info = probe(dest)
    assert info.codec == "h264"
    assert (info.width, info.height) == SIZES[aspect]
    assert info.frame_count == request.duration * FPS
    assert abs(info.duration - request.duration) <= 1 / FPS
    assert first_frame(dest).shape == (SIZES[aspect][1], SIZES[aspect][0], 3)
    boxes = top_level_boxes(dest)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    assert list((tmp_path / "work").iterdir()) == []  # moved out, nothing partial left


async def test_a_two_second_clip_has_exactly_48_frames(local: LocalPreviewProvider, tmp_path: Path) -> None:
    dest = tmp_path / "two.mp4"
    await render_and_download(local, "two", make_request(duration=2), dest)
    info = probe(dest)
    assert info.frame_count == 48
    assert abs(info.duration - 2.0) <= 1 / FPS


def test_seeds_decide_the_pixels(tmp_path: Path) -> None:
    paths = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        paths[name] = tmp_path / f"{name}.mp4"
        render_card(make_request(seed=seed), paths[name], fps=FPS)
    a, b, c = (first_frame(paths[name]).astype(np.int16) for name in "abc")
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 5


def test_without_a_seed_the_prompt_decides(tmp_path: Path) -> None:
    for name, prompt in (("a", "same words"), ("b", "same words"), ("c", "other words")):
        render_card(make_request(seed=None, prompt=prompt), tmp_path / f"{name}.mp4", fps=FPS)
    a, b, c = (first_frame(tmp_path / f"{name}.mp4").astype(np.int16) for name in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


async def test_progress_rises_then_cancel_removes_everything(local: LocalPreviewProvider) -> None:
    request = make_request(duration=30, aspect="16:9")
    remote = RemoteJob("long", await local.submit("long", request), request)
    seen: list[float] = []
    async with asyncio.timeout(60):
        while len(set(seen)) < 3:
            result = await local.poll(remote)
            assert result.state is RemoteState.RUNNING
            assert result.progress is not None and 0.0 <= result.progress < 1.0
            seen.append(result.progress)
            await asyncio.sleep(0.02)
    assert seen == sorted(seen)
    assert seen[-1] > 0

    await local.cancel(remote)

    assert (await local.poll(remote)).state is RemoteState.CANCELLED
    assert list(local.work_dir.iterdir()) == []


async def test_poll_after_a_restart_renders_again(tmp_path: Path) -> None:
    request = make_request(duration=2)
    first = LocalPreviewProvider(tmp_path / "work", fps=FPS)
    remote = RemoteJob("crashy", await first.submit("crashy", request), request)
    await first.aclose()  # the process "dies": its render stops and leaves nothing
    assert not first.output_path(remote.remote_id).exists()

    second = LocalPreviewProvider(tmp_path / "work", fps=FPS)
    try:
        progress: list[float] = []
        assert (await second.poll(remote)).state is RemoteState.RUNNING
        result = await poll_until_done(second, remote, progress)
        assert result.state is RemoteState.SUCCEEDED
        assert progress == sorted(progress)
        dest = tmp_path / "recovered.mp4"
        await second.download(remote, result, dest)
        assert probe(dest).frame_count == 48
    finally:
        await second.aclose()


async def test_poll_finds_a_finished_render_from_before_a_restart(tmp_path: Path) -> None:
    request = make_request()
    first = LocalPreviewProvider(tmp_path / "work", fps=FPS)
    remote = RemoteJob("done", await first.submit("done", request), request)
    assert (await poll_until_done(first, remote)).state is RemoteState.SUCCEEDED
    await first.aclose()

    second = LocalPreviewProvider(tmp_path / "work", fps=FPS)
    result = await second.poll(remote)
    assert result.state is RemoteState.SUCCEEDED
    await second.download(remote, result, tmp_path / "done.mp4")
    assert probe(tmp_path / "done.mp4").frame_count == FPS
    await second.aclose()


async def test_an_image_becomes_the_background(local: LocalPreviewProvider, tmp_path: Path) -> None:
    colour = (200, 60, 90)
    image_path = tmp_path / "solid.png"
    Image.new("RGB", (640, 360), colour).save(image_path)
    request = make_request(aspect="16:9", image_path=str(image_path))
    dest = tmp_path / "with_image.mp4"

    await render_and_download(local, "img", request, dest)

    frame = first_frame(dest).astype(np.float64)
    corner = frame[20:150, 20:300]  # outside the centred card and the bottom label
    assert np.abs(corner.reshape(-1, 3).mean(axis=0) - colour).max() < 8


async def test_an_unreadable_image_fails_with_the_reason(local: LocalPreviewProvider, tmp_path: Path) -> None:
    bogus = tmp_path / "not-an-image.png"
    bogus.write_text("hello")
    request = make_request(image_path=str(bogus))
    remote = RemoteJob("bad", await local.submit("bad", request), request)
    result = await poll_until_done(local, remote)
    assert result.state is RemoteState.FAILED
    assert result.error is not None and "image" in reason_text(result.error, ENGLISH)
    assert list(local.work_dir.iterdir()) == []


async def test_submit_refuses_what_it_cannot_render(local: LocalPreviewProvider, tmp_path: Path) -> None:
    with pytest.raises(ProviderError) as caught:
        await local.submit("x", make_request(model="openai/sora-2"))
    assert not caught.value.retryable
    with pytest.raises(ProviderError):
        await local.submit("../escape", make_request())
    with pytest.raises(ProviderError):
        await local.submit("y", make_request(image_path=str(tmp_path / "missing.png")))
