"""What only PostgreSQL has to prove: several processes (here: several pools) sharing one database never claim a
job twice, never over-admit a member, wake each other through LISTEN/NOTIFY, and migrate safely together.

The store contract itself runs against Postgres through the parametrized `store` fixture in the other suites.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.domain import Job, JobState, QuotaLimits, Requester, VideoRequest
from bot.errors import QueueFull, QuotaExceeded
from bot.jobs.service import JobService
from bot.providers.registry import ProviderRegistry
from bot.store import migrations
from bot.store.base import ClaimLimits
from bot.store.dialects.sqlite import SqliteDialect
from bot.store.sql_store import SqlStore
from tests.conftest import TEST_DATABASE_URL
from tests.fakes.scripted_provider import ScriptedProvider
from tests.store_moves import walk

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")

if TEST_DATABASE_URL:  # asyncpg is an optional extra: import it only when the tests run
    import asyncpg

    from bot.store.dialects.postgres import PostgresDialect

LEASE = 300.0  # long enough that no lease runs out unless a test moves the clock past it


PgStore = SqlStore["PostgresDialect"]


async def open_pg(*, schema: str, max_size: int = 10) -> PgStore:
    return SqlStore(await PostgresDialect.open(url(), schema=schema, max_size=max_size))


def url() -> str:
    assert TEST_DATABASE_URL is not None
    return TEST_DATABASE_URL


def fresh_schema() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


def req(duration: int = 4) -> VideoRequest:
    return VideoRequest(prompt="a cat surfing", model="fake/video", duration=duration)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[PgStore, PgStore]]:
    """Two stores with their own pools on one schema: as two worker processes would see the database."""
    schema = fresh_schema()
    first = await open_pg(schema=schema)
    second = await open_pg(schema=schema)
    try:
        yield first, second
    finally:
        await second.close()
        await first.drop_schema()
        await first.close()


def services(pair: tuple[PgStore, PgStore], clock: FakeClock) -> tuple[JobService, JobService]:
    registry = ProviderRegistry([ScriptedProvider()])
    return JobService(pair[0], registry, clock), JobService(pair[1], registry, clock)


async def test_concurrent_claimers_never_share_a_job_and_respect_member_limits(
    pair: tuple[PgStore, PgStore], clock: FakeClock
) -> None:
    first, second = pair
    service, _ = services(pair, clock)
    members = [Requester(guild_id=1 + m % 2, user_id=100 + m, channel_id=5) for m in range(40)]
    limit: dict[tuple[int, int], int] = {}
    for guild in (1, 2):
        await first.update_policy(guild, "default", 0, QuotaLimits(credits=10_000, max_queued=100, max_running=1))
    for who in members:
        limit[(who.guild_id, who.user_id)] = 2 if who.user_id % 4 == 0 else 1
        if who.user_id % 4 == 0:
            await first.update_policy(who.guild_id, "user", who.user_id, QuotaLimits(max_running=2))
    queued = [await service.enqueue(who, req()) for _ in range(5) for who in members]
    assert len(queued) == 200

    claims: list[Job] = []

    async def claim_until_empty(store: PgStore, name: str) -> None:
        while (
            job := await store.claim_job(name, now=clock.now(), lease_seconds=LEASE, limits=ClaimLimits())
        ) is not None:
            claims.append(job)

    # Phase 1: eight claimers (four per pool) saturate every member's running slots, and no more.
    await asyncio.gather(*(claim_until_empty(store, f"w{i}") for i, store in enumerate([first, second] * 4)))
    assert len({job.id for job in claims}) == len(claims)
    per_member: dict[tuple[int, int], int] = defaultdict(int)
    for job in claims:
        per_member[(job.guild_id, job.user_id)] += 1
    assert per_member == limit
    assert await first.running_count() == sum(limit.values())

    for job in claims:
        assert job.lease_owner is not None
        await walk(first, job, JobState.DELIVERED, now=clock.now(), worker_id=job.lease_owner)

    # Phase 2: claim, hold for a moment, finish; until every job is delivered.
    delivered = {job.id for job in claims}
    active: dict[tuple[int, int], set[str]] = defaultdict(set)

    async def work(store: PgStore, name: str) -> None:
        while len(delivered) < len(queued):
            job = await store.claim_job(name, now=clock.now(), lease_seconds=LEASE, limits=ClaimLimits())
            if job is None:
                await asyncio.sleep(0)
                continue
            claims.append(job)
            key = (job.guild_id, job.user_id)
            active[key].add(job.id)  # a subset of what the database counts as running
            assert len(active[key]) <= limit[key], f"member {key} runs {len(active[key])} jobs"
            await asyncio.sleep(0)
            active[key].discard(job.id)
            await walk(store, job, JobState.DELIVERED, now=clock.now(), worker_id=name)
            delivered.add(job.id)

    await asyncio.gather(*(work(store, f"w{i}") for i, store in enumerate([first, second] * 4)))
    assert sorted(job.id for job in claims) == sorted(job.id for job in queued), "each job claimed exactly once"
    assert await first.queue_depth() == 0 and await first.running_count() == 0
    events = await second.job_events(queued[-1].id)
    assert [e.to_state for e in events] == [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING,
                                            JobState.DOWNLOADING, JobState.DELIVERING, JobState.DELIVERED]  # fmt: skip


async def test_one_expired_lease_is_taken_over_by_exactly_one_worker(
    pair: tuple[PgStore, PgStore], clock: FakeClock
) -> None:
    first, second = pair
    service, _ = services(pair, clock)
    job = await service.enqueue(Requester(guild_id=1, user_id=10), req())
    assert await first.claim_job("dead", now=clock.now(), lease_seconds=10, limits=ClaimLimits()) is not None
    clock.advance(11)
    results = await asyncio.gather(
        *(store.claim_job(f"w{i}", now=clock.now(), lease_seconds=LEASE, limits=ClaimLimits())
          for i, store in enumerate([first, second] * 3))
    )  # fmt: skip
    taken = [r for r in results if r is not None]
    assert len(taken) == 1 and taken[0].id == job.id and taken[0].attempts == 1
    details = [e.detail for e in await first.job_events(job.id)]
    assert details[-1] == f"taken over by {taken[0].lease_owner} from dead"


@pytest.mark.parametrize(
    ("limits", "admitted", "refusal"),
    [
        (QuotaLimits(credits=20, max_queued=100), 5, QuotaExceeded),  # 4 credits a job
        (QuotaLimits(credits=10_000, max_queued=3), 3, QueueFull),
    ],
)
async def test_fifty_concurrent_enqueues_from_two_pools_never_exceed_the_quota(
    pair: tuple[PgStore, PgStore],
    clock: FakeClock,
    limits: QuotaLimits,
    admitted: int,
    refusal: type[Exception],
) -> None:
    first, _ = pair
    alice = Requester(guild_id=1, user_id=10, channel_id=5)
    await first.update_policy(1, "user", alice.user_id, limits)
    service_a, service_b = services(pair, clock)
    results = await asyncio.gather(
        *((service_a if i % 2 else service_b).enqueue(alice, req()) for i in range(50)), return_exceptions=True
    )
    jobs = [r for r in results if isinstance(r, Job)]
    refused = [r for r in results if not isinstance(r, Job)]
    assert len(jobs) == admitted
    assert all(isinstance(r, refusal) for r in refused), refused[:3]
    assert len(await first.member_jobs(1, alice.user_id)) == admitted
    standing = await first.admission(1, alice.user_id, (clock.now() - 3600, clock.now() + 3600))
    assert (standing.charged, standing.reserved, standing.queued) == (4 * admitted, 4 * admitted, admitted)
    assert len({job.fair_rank for job in jobs}) == admitted, "a member's jobs get distinct ranks"


async def test_listen_wakes_another_pool_when_a_job_is_queued(pair: tuple[PgStore, PgStore], clock: FakeClock) -> None:
    _, second = pair
    woke = asyncio.Event()
    stop = await second.listen(woke.set)
    await second.listen(lambda: None)  # left running: close() must stop it
    service, _ = services(pair, clock)
    await service.enqueue(Requester(guild_id=1, user_id=10), req())
    await asyncio.wait_for(woke.wait(), timeout=5)
    await stop()
    await stop()  # stopping twice is harmless


async def test_migrating_again_is_a_no_op_and_matches_sqlite(pair: tuple[PgStore, PgStore], tmp_path: Path) -> None:
    first, second = pair
    before = await first.schema()
    await first.migrate()
    await second.migrate()
    assert await first.schema() == before
    assert await applied_versions(first) == [m.version for m in migrations.load("postgres")]

    sqlite = SqlStore(await SqliteDialect.open(str(tmp_path / "ref.db")))
    try:
        assert {name for name, _ in before} == {name for name, _ in await sqlite.schema()}
    finally:
        await sqlite.close()


async def test_stores_migrating_one_fresh_schema_together_all_succeed() -> None:
    schema = fresh_schema()
    stores = await asyncio.gather(*(open_pg(schema=schema, max_size=2) for _ in range(4)))
    try:
        schemas = [await store.schema() for store in stores]
        assert all(s == schemas[0] for s in schemas) and schemas[0]
        assert await applied_versions(stores[0]) == [m.version for m in migrations.load("postgres")]
    finally:
        await stores[0].drop_schema()
        for store in stores:
            await store.close()


async def applied_versions(store: PgStore) -> list[int]:
    """Read `schema_migrations` over a connection of our own (the store has no API for it)."""
    conn = await asyncpg.connect(url())
    try:
        rows = await conn.fetch(f'SELECT version FROM "{store.dialect.namespace}".schema_migrations ORDER BY version')
    finally:
        await conn.close()
    return [int(row["version"]) for row in rows]
