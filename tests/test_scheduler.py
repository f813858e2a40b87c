"""Fair dispatch under member, provider and global limits; queue positions and ETAs."""

from __future__ import annotations

from bot.clock import FakeClock
from bot.domain import JobState, QuotaLimits, Requester, VideoRequest
from bot.jobs.admin import AdminService
from bot.jobs.service import DEFAULT_JOB_SECONDS, JobService
from bot.store.base import ClaimLimits, Store
from tests.store_moves import walk


def who(user: int, guild: int = 1) -> Requester:
    return Requester(guild_id=guild, user_id=user, channel_id=100)


def req() -> VideoRequest:
    return VideoRequest(prompt="p", model="fake/video", duration=2)


async def finish(store: Store, job_id: str, now: float) -> None:
    job = await store.get_job(job_id)
    assert job is not None
    await walk(store, job, JobState.DELIVERED, now=now)


async def generous(service: JobService, store: Store, clock: FakeClock, guild: int = 1) -> None:
    await AdminService(store, service, clock).set_default_quota(
        guild, QuotaLimits(credits=10_000, max_queued=100, max_running=1)
    )


async def test_a_burst_does_not_delay_others_first_jobs(service: JobService, store: Store, clock: FakeClock) -> None:
    await generous(service, store, clock)
    burst = [await service.enqueue(who(1), req()) for _ in range(10)]
    clock.advance(1)
    bob = await service.enqueue(who(2), req())
    carol = await service.enqueue(who(3), req())

    order = []
    limits = ClaimLimits(global_limit=1)
    for _ in range(12):
        job = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=limits)
        assert job is not None
        order.append(job.id)
        clock.advance(1)
        await finish(store, job.id, clock.now())
    assert order[:3] == [burst[0].id, bob.id, carol.id]
    assert order[3:] == [j.id for j in burst[1:]]  # then the burst, in arrival order


async def test_a_member_who_comes_back_queues_behind_those_waiting_not_ahead(
    service: JobService, store: Store, clock: FakeClock
) -> None:
    """A new job ranks with the head of the queue: a member submitting one job at a time, each after the last
    ran, must not jump ahead every time of another member who queued several (and starve them)."""
    await generous(service, store, clock)
    bob = [await service.enqueue(who(2), req()) for _ in range(4)]
    order = []
    for _ in range(2):  # bob's first two run, one at a time
        job = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits())
        assert job is not None
        order.append(job.id)
        await finish(store, job.id, clock.now())
    alice = await service.enqueue(who(1), req())  # alice comes back with an empty queue
    while (job := await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits())) is not None:
        order.append(job.id)
        await finish(store, job.id, clock.now())
    assert order == [bob[0].id, bob[1].id, bob[2].id, alice.id, bob[3].id]


async def test_member_provider_and_global_limits(service: JobService, store: Store, clock: FakeClock) -> None:
    await generous(service, store, clock)
    a1 = await service.enqueue(who(1), req())
    await service.enqueue(who(1), req())
    b1 = await service.enqueue(who(2), req())
    first = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits())
    second = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits())
    assert first is not None and second is not None
    assert (first.id, second.id) == (a1.id, b1.id)  # a1's member already runs one: their 2nd waits
    assert await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits()) is None

    await service.enqueue(who(3), req())
    assert await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits(global_limit=2)) is None
    provider_cap = ClaimLimits(provider_limits={"fake": 2})
    assert await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=provider_cap) is None
    other_providers_only = ClaimLimits(providers=frozenset({"other"}))
    assert await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=other_providers_only) is None
    third = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits(global_limit=3))
    assert third is not None and third.user_id == 3


async def test_paused_server_is_skipped_not_blocking_others(
    service: JobService, store: Store, clock: FakeClock
) -> None:
    admin = AdminService(store, service, clock)
    paused_job = await service.enqueue(who(1, guild=1), req())
    other = await service.enqueue(who(1, guild=2), req())
    await admin.pause(1)
    job = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits())
    assert job is not None and job.id == other.id
    assert await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits()) is None
    await admin.resume(1)
    job = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits())
    assert job is not None and job.id == paused_job.id


async def test_positions_and_eta_from_recent_durations(service: JobService, store: Store, clock: FakeClock) -> None:
    await generous(service, store, clock)
    jobs = [await service.enqueue(who(u), req()) for u in (1, 2, 3)]
    entries = [await service.entry(j) for j in jobs]
    assert [e.position for e in entries] == [1, 2, 3]
    # the scripted provider allows 100 at once: everyone is one "round" away
    assert entries[2].eta == clock.now() + 2 * DEFAULT_JOB_SECONDS

    done = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits())
    assert done is not None
    clock.advance(12)
    await finish(store, done.id, clock.now())
    assert await store.recent_durations("fake/video") == [12.0]
    entry = await service.entry(jobs[1])
    assert entry.position == 1 and entry.eta == clock.now() + 24
    assert await store.queue_depth(1) == 2 and await store.queue_depth(99) == 0
    assert [e.job.id for e in await service.queue_entries(1, 3)] == [jobs[2].id]
