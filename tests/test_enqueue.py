"""Enqueue: validation against model capabilities, member caps, blocks, pause, model enablement."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.clock import FakeClock
from bot.domain import JobState, QuotaLimits, Requester, VideoRequest
from bot.errors import Blocked, InvalidRequest, QueueFull, QueuePaused
from bot.jobs.admin import AdminService
from bot.jobs.service import JobService
from bot.store.base import Store

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
        {"model": "no-slash"},
    ],
)
def test_request_validation_refuses_bad_input(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        req(**bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "nope/model"}, "Unknown model"),
        ({"duration": 3}, "makes videos of 2, 4, 5 or 8 seconds"),
        ({"negative_prompt": "blurry"}, "does not take a negative prompt"),
        ({"image_path": "/tmp/x.png"}, "cannot start from an image"),
    ],
)
async def test_capabilities_are_checked_and_refusals_cost_nothing(
    service: JobService, change: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await service.enqueue(ALICE, req(**change))
    usage = await service.usage(ALICE)
    assert (usage.left, usage.queued) == (60, 0)


async def test_caps_blocks_pause_and_disabled_models(service: JobService, store: Store, clock: FakeClock) -> None:
    admin = AdminService(store, service, clock)
    for _ in range(3):
        await service.enqueue(ALICE, req())
    with pytest.raises(QueueFull, match="limit is 3"):
        await service.enqueue(ALICE, req())
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

    with pytest.raises(InvalidRequest, match="At least one model"):
        await admin.set_model_enabled(1, "fake/video", False)
    cleared = await admin.clear_queue(1)
    assert len(cleared) == 5 and all(j.state is JobState.CANCELLED for j in cleared)
    assert (await service.usage(ALICE)).left == 60
