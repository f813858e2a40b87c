"""The monthly budget: every job reserves its list-price cost at enqueue and gives it back when it fails or is
cancelled; a job that would take the server past its budget is refused, for free, with what is left and when it
resets. Fifty concurrent `/video` from fifty members never pass it, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bot.clock import FakeClock
from bot.discord.messages import describe
from bot.domain import JobState, QuotaLimits, Requester, VideoRequest
from bot.errors import BudgetExceeded
from bot.jobs.service import JobService
from bot.providers.catalog import Catalogue, ModelOverride
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.fakes.scripted_provider import ScriptedProvider

GUILD = 1
PRICED = {"fake/video": ModelOverride(usd_per_second=0.10)}  # a 4 s job costs $0.40


def member(user_id: int) -> Requester:
    return Requester(guild_id=GUILD, user_id=user_id, channel_id=100)


def request(seconds: int = 4) -> VideoRequest:
    return VideoRequest(prompt="a lighthouse", model="fake/video", duration=seconds)


async def service_with(store: Store, clock: FakeClock, budget: float | None, *, priced: bool = True) -> JobService:
    catalogue = Catalogue(PRICED) if priced else Catalogue()
    service = JobService(store, ProviderRegistry([ScriptedProvider()], catalogue=catalogue), clock)
    await store.update_guild_settings(GUILD, lambda s: dataclasses.replace(s, monthly_budget=budget))
    await store.update_policy(GUILD, "default", 0, QuotaLimits(credits=100_000, max_queued=1000))
    return service


async def test_fifty_concurrent_videos_never_pass_the_budget(store: Store, clock: FakeClock) -> None:
    service = await service_with(store, clock, budget=10.0)  # room for exactly 25 jobs of $0.40

    async def one(user_id: int) -> bool:
        try:
            await service.enqueue(member(user_id), request())
        except BudgetExceeded:
            return False
        return True

    admitted = await asyncio.gather(*(one(1000 + i) for i in range(50)))
    assert sum(admitted) == 25, sum(admitted)
    jobs = [job for i in range(50) for job in await store.member_jobs(GUILD, 1000 + i)]
    assert len(jobs) == 25 and round(sum(job.cost_usd for job in jobs), 6) == 10.0


async def test_a_refusal_says_what_is_left_and_a_cancel_gives_the_money_back(store: Store, clock: FakeClock) -> None:
    service = await service_with(store, clock, budget=1.0)
    first = await service.enqueue(member(1), request(4))  # $0.40
    second = await service.enqueue(member(2), request(4))  # $0.80 in all
    with pytest.raises(BudgetExceeded) as refused:
        await service.enqueue(member(3), request(4))
    assert (refused.value.cost_usd, refused.value.left_usd) == (0.40, 0.20)
    said = describe(refused.value)
    assert "has $0.20 left" in said and "about $0.40" in said and "<t:" in said, said
    assert await store.member_jobs(GUILD, 3) == [], "a refused request costs nothing"
    await service.cancel(first.id, by_user=1)
    third = await service.enqueue(member(3), request(4))
    assert third.state is JobState.QUEUED and second.cost_usd == 0.40


async def test_the_budget_starts_again_with_the_month(store: Store, clock: FakeClock) -> None:
    clock.set(1_798_761_600.0 - 3600)  # 2026-12-31 23:00 UTC
    service = await service_with(store, clock, budget=0.50)
    await service.enqueue(member(1), request(4))
    with pytest.raises(BudgetExceeded):
        await service.enqueue(member(2), request(4))
    clock.set(1_798_761_600.0 + 60)  # 2027-01-01 00:01 UTC
    assert (await service.enqueue(member(2), request(4))).cost_usd == 0.40


async def test_a_model_with_no_known_price_counts_at_the_highest_price(store: Store, clock: FakeClock) -> None:
    service = await service_with(store, clock, budget=5.0, priced=False)
    highest = Catalogue().highest_price()
    assert highest >= 0.40  # Veo 3.1's list price is in the catalogue
    job = await service.enqueue(member(1), request(4))
    assert job.cost_usd == pytest.approx(4 * highest)


async def test_no_budget_means_no_cap_and_no_server_lock(store: Store, clock: FakeClock) -> None:
    service = await service_with(store, clock, budget=None)
    jobs = [await service.enqueue(member(i), request(8)) for i in range(1, 6)]
    assert [job.cost_usd for job in jobs] == [0.80] * 5
