"""Enqueue: validation against model capabilities, member caps, blocks, pause, model enablement."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.clock import FakeClock
from bot.discord.messages import describe
from bot.domain import JobState, QuotaLimits, Requester, VideoRequest
from bot.errors import (
    Blocked,
    DurationNotOffered,
    ImageNotOffered,
    ImageRequired,
    LastEnabledModel,
    NegativePromptNotOffered,
    QueueFull,
    QueuePaused,
    UnknownModel,
    UserError,
)
from bot.jobs.admin import AdminService
from bot.jobs.service import JobService
from bot.store.base import Store
from tests.fakes.scripted_provider import ScriptedProvider

ALICE = Requester(guild_id=1, user_id=10, channel_id=100)


def req(**kwargs: object) -> VideoRequest:
    fields: dict[str, object] = {"prompt": "a fox", "model": "fake/video", "duration": 4}
    fields.update(kwargs)
    return VideoRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": "x" * 2001},
        {"duration": 0},
        {"duration": 61},
        {"seed": -1},
        {"seed": 2**31},
        {"aspect": "4:3"},
        {"negative_prompt": "n" * 1001},
        {"model": "has space/x"},
        {"model": "/no-provider"},
    ],
)
def test_request_validation_refuses_bad_input(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        req(**bad)


@pytest.mark.parametrize(
    ("change", "refusal", "message"),
    [
        ({"model": "nope/model"}, UnknownModel("nope/model"), "Unknown model `nope/model`"),
        ({"duration": 3}, DurationNotOffered("fake/video", 3, (2, 4, 5, 8)), "makes videos of 2, 4, 5 or 8 seconds"),
        ({"negative_prompt": "blurry"}, NegativePromptNotOffered("fake/video"), "does not take a negative prompt"),
        ({"image_path": "/tmp/x.png"}, ImageNotOffered("fake/video"), "`fake/video` cannot start from an image"),
    ],
)
async def test_capabilities_are_checked_and_refusals_cost_nothing(
    service: JobService, change: dict[str, object], refusal: UserError, message: str
) -> None:
    with pytest.raises(type(refusal)) as refused:
        await service.enqueue(ALICE, req(**change))
    assert vars(refused.value) == vars(refusal), "the facts the member is told"
    assert message in describe(refused.value)
    usage = await service.usage(ALICE)
    assert (usage.left, usage.queued) == (60, 0)


async def test_a_name_that_is_neither_a_model_nor_an_alias_is_unknown(service: JobService) -> None:
    with pytest.raises(UnknownModel) as refused:
        await service.enqueue(ALICE, req(model="no-slash"))
    assert refused.value.model == "no-slash"


async def test_an_image_to_video_model_without_an_image_is_refused_for_free(
    service: JobService, provider: ScriptedProvider
) -> None:
    provider.supports_image = provider.requires_image = True
    await service.registry.start()  # the registry reads capabilities when it (re)starts
    with pytest.raises(ImageRequired) as refused:
        await service.enqueue(ALICE, req())
    assert "makes a video from an image: attach one with `image`" in describe(refused.value)
    assert (await service.usage(ALICE)).left == 60


async def test_caps_blocks_pause_and_disabled_models(service: JobService, store: Store, clock: FakeClock) -> None:
    admin = AdminService(store, service, clock)
    for _ in range(3):
        await service.enqueue(ALICE, req())
    with pytest.raises(QueueFull) as full:
        await service.enqueue(ALICE, req())
    assert (full.value.queued, full.value.max_queued) == (3, 3)
    assert "(the limit is 3)" in describe(full.value) and "/queue" in describe(full.value)
    await admin.set_user_quota(1, 10, QuotaLimits(max_queued=4))
    job = await service.enqueue(ALICE, req())
    assert job.state is JobState.QUEUED

    bob = Requester(guild_id=1, user_id=11)
    await admin.block(1, 11)
    with pytest.raises(Blocked):
        await service.enqueue(bob, req())
    await admin.unblock(1, 11)
    await admin.pause(1)
    with pytest.raises(QueuePaused):
        await service.enqueue(bob, req())
    await admin.resume(1)
    await service.enqueue(bob, req())

    with pytest.raises(LastEnabledModel) as last:
        await admin.set_model_enabled(1, "fake/video", False)
    assert last.value.model == "fake/video" and "At least one model" in describe(last.value)
    cleared = await admin.clear_queue(1)
    assert len(cleared) == 5 and all(j.state is JobState.CANCELLED for j in cleared)
    assert (await service.usage(ALICE)).left == 60
