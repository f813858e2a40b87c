"""Quota windows (UTC calendar, fake clock), policy resolution, grants, resets and refunds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.clock import FakeClock
from bot.discord.messages import describe
from bot.domain import QuotaLimits, Requester, VideoRequest
from bot.errors import QuotaExceeded
from bot.jobs.admin import AdminService
from bot.jobs.quotas import resolve_policy, window_bounds
from bot.jobs.service import JobService
from bot.store.base import PolicyLayers, Store


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("hour", "2026-03-10 14:59:59", "2026-03-10 14:00:00", "2026-03-10 15:00:00"),
        ("day", "2026-03-10 23:59:59", "2026-03-10 00:00:00", "2026-03-11 00:00:00"),
        ("day", "2026-03-11 00:00:00", "2026-03-11 00:00:00", "2026-03-12 00:00:00"),
        ("week", "2026-03-15 12:00:00", "2026-03-09 00:00:00", "2026-03-16 00:00:00"),  # Sunday → Monday start
        ("month", "2026-12-31 23:00:00", "2026-12-01 00:00:00", "2027-01-01 00:00:00"),
        ("month", "2028-02-29 10:00:00", "2028-02-01 00:00:00", "2028-03-01 00:00:00"),
    ],
)
def test_windows_are_calendar_aligned_in_utc(period: str, now: str, start: str, end: str) -> None:
    assert window_bounds(period, ts(now)) == (ts(start), ts(end))  # type: ignore[arg-type]


def test_policy_resolution_default_then_best_role_then_override() -> None:
    assert resolve_policy(PolicyLayers(None, (), None)).credits == 60  # the built-in default
    server = QuotaLimits(credits=100, period="week", max_queued=2)
    roles = (QuotaLimits(credits=150), QuotaLimits(credits=300, max_running=2), QuotaLimits(max_queued=5))
    policy = resolve_policy(PolicyLayers(server, roles, None))
    assert (policy.credits, policy.period, policy.max_queued, policy.max_running) == (300, "week", 5, 2)
    override = resolve_policy(PolicyLayers(server, roles, QuotaLimits(credits=10, unlimited=True)))
    assert override.credits == 10 and override.unlimited


ALICE = Requester(guild_id=1, user_id=10, channel_id=100)


def req(duration: int = 5) -> VideoRequest:
    return VideoRequest(prompt="waves", model="fake/video", duration=duration)


async def fill_and_finish(service: JobService, store: Store, clock: FakeClock, n: int) -> None:
    for _ in range(n):
        job = await service.enqueue(ALICE, req())
        await store.request_cancel(job.id, now=clock.now())  # refunded → not counted


async def test_quota_refusal_then_next_window_refills(service: JobService, store: Store, clock: FakeClock) -> None:
    admin = AdminService(store, service, clock)
    await admin.set_default_quota(1, QuotaLimits(credits=10, max_queued=10))
    clock.set(ts("2026-03-10 23:00:00"))
    await service.enqueue(ALICE, req(5))
    await service.enqueue(ALICE, req(5))
    with pytest.raises(QuotaExceeded) as refused:
        await service.enqueue(ALICE, req(2))
    assert (refused.value.cost, refused.value.left, refused.value.resets_at) == (2, 0, ts("2026-03-11 00:00:00"))
    assert "costs 2 credits but you have 0 left" in describe(refused.value)
    assert f"<t:{int(ts('2026-03-11 00:00:00'))}:R>" in describe(refused.value)
    clock.set(ts("2026-03-11 00:00:01"))
    await service.enqueue(ALICE, req(5))  # a new day, a new allowance
    usage = await service.usage(ALICE)
    assert (usage.reserved, usage.left) == (5, 5)


async def test_refund_lands_in_the_window_that_paid(service: JobService, store: Store, clock: FakeClock) -> None:
    clock.set(ts("2026-03-10 23:59:00"))
    job = await service.enqueue(ALICE, req(5))
    clock.set(ts("2026-03-11 00:01:00"))
    await store.request_cancel(job.id, now=clock.now())
    assert (await service.usage(ALICE)).left == 60  # today's allowance untouched by yesterday's refund


async def test_grants_resets_roles_and_overrides(service: JobService, store: Store, clock: FakeClock) -> None:
    admin = AdminService(store, service, clock)
    await admin.set_default_quota(1, QuotaLimits(credits=10, max_queued=10))
    await service.enqueue(ALICE, req(5))
    await service.enqueue(ALICE, req(5))
    with pytest.raises(QuotaExceeded):
        await service.enqueue(ALICE, req(5))
    usage = await admin.grant(ALICE, 5)
    assert usage.left == 5
    await service.enqueue(ALICE, req(5))
    usage = await admin.reset(ALICE)
    assert (usage.used, usage.left) == (0, 15)  # reset clears usage; the grant stays for the window
    await admin.grant(ALICE, -15)
    assert (await service.usage(ALICE)).left == 0

    vip = Requester(guild_id=1, user_id=10, channel_id=100, role_ids=(77,))
    await admin.set_role_quota(1, 77, QuotaLimits(credits=100))
    assert (await service.usage(vip)).policy.credits == 100
    await admin.set_user_quota(1, 10, QuotaLimits(unlimited=True))
    assert (await service.usage(ALICE)).policy.unlimited
    await service.enqueue(ALICE, req(8))
    await admin.set_user_quota(1, 10, None)
    await admin.set_role_quota(1, 77, None)
    assert (await service.usage(vip)).policy.credits == 10


async def test_fifty_concurrent_enqueues_never_exceed_the_quota(service: JobService, store: Store) -> None:
    import asyncio

    admin = AdminService(store, service, service.clock)
    await admin.set_default_quota(1, QuotaLimits(credits=20, max_queued=1000))
    results = await asyncio.gather(*(service.enqueue(ALICE, req(2)) for _ in range(50)), return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(admitted) == 10 and len(refused) == 40
    usage = await service.usage(ALICE)
    assert usage.reserved == 20 and usage.left == 0
