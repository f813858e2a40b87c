"""The PostgreSQL claim at scale: it stays on its indexes with no planner statistics, and the limits hold with no
lock shared by every claimer (`bot/store/queries/postgres.sql`: claim_next, claim_check).

A fresh database (or one whose autovacuum is off) has no statistics: the planner then guesses the queue is tiny
and would scan and sort every queued row on each claim. These tests fill the queue the way a burst would, run no
ANALYZE, and read what the plans actually touched.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.clock import FakeClock
from bot.domain import QuotaLimits, Requester
from bot.jobs.service import JobService
from bot.providers.registry import ProviderRegistry
from bot.store.base import ClaimLimits
from bot.store.queries import queries
from bot.store.sql_jobs import CLAIM_LANES, _over_a_limit
from tests.conftest import TEST_DATABASE_URL
from tests.fakes.scripted_provider import ScriptedProvider
from tests.test_postgres_store import LEASE, PgStore, fresh_schema, open_pg, req, url

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")

if TEST_DATABASE_URL:
    import asyncpg

QUEUED = 10_000
MEMBERS = 500


class RolledBack(Exception):
    pass


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    name = fresh_schema()
    store = await open_pg(schema=name)  # migrated, then left alone: no ANALYZE ever runs on it
    try:
        yield name
    finally:
        await store.drop_schema()
        await store.close()


async def fill_queue(conn: Any, *, providers: tuple[str, ...] = ("fake",)) -> None:
    """QUEUED queued jobs from MEMBERS members, ranked as a burst would be (every member's n-th job at rank n)."""
    await conn.execute(
        """
        INSERT INTO jobs (id, guild_id, user_id, channel_id, model, provider, request_json, credits, max_running,
                          state, priority, fair_rank, created_at, updated_at)
        SELECT md5(g::text), 1, g % $2, 5, p || '/video', p,
               json_build_object('prompt', 'burst', 'model', p || '/video', 'duration', 2)::text,
               1, 1, 'queued', 0, g / $2 + 1, g, g
        FROM generate_series(1, $1) AS g, LATERAL (SELECT ($3::text[])[1 + g % cardinality($3::text[])] AS p) AS x
        """,
        QUEUED, MEMBERS, list(providers),
    )  # fmt: skip


def scans_of_jobs(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) tree that reads the jobs table."""
    reads = plan.get("Relation Name") == "jobs" and plan["Node Type"] != "ModifyTable"
    found = [plan] if reads else []
    for child in plan.get("Plans", []):
        found += scans_of_jobs(child)
    return found


async def explain(conn: Any, name: str, **params: Any) -> list[dict[str, Any]]:
    query = queries("postgres")[name]
    rows = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query.sql}", *query.args(params))
    return scans_of_jobs(json.loads(rows)[0]["Plan"])


async def test_claim_and_enqueue_reads_stay_on_indexes_at_ten_thousand_queued_without_statistics(schema: str) -> None:
    conn = await asyncpg.connect(url(), server_settings={"search_path": schema, "jit": "off"})
    try:
        await fill_queue(conn, providers=("fake", "other"))
        assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'jobs'::regclass") < 1  # never analysed
    finally:
        await conn.close()
    plans: dict[str, list[dict[str, Any]]] = {}

    async def explain_both(on: Any) -> None:  # on the connection the store runs a claim and an enqueue on
        plans["claim"] = await explain(on._raw, "claim_next", worker_id="w", lease_until=1e12, now=1e9,
                                       providers=["fake", "other"], limits=[100, 100], exclusive=[], lanes=8,
                                       lane_offset=0, global_limit=None)  # fmt: skip
        plans["floor"] = await explain(on._raw, "fair_rank_floor", guild_id=1, user_id=7)
        raise RolledBack  # EXPLAIN ANALYZE really claims: roll it back

    store = await open_pg(schema=schema)
    try:
        with pytest.raises(RolledBack):
            await store.dialect.write(explain_both, on_indexes=True)
    finally:
        await store.close()
    claim, floor = plans["claim"], plans["floor"]
    for nodes in (claim, floor):
        assert nodes, "the plan reads jobs"
        assert all(node["Node Type"] in ("Index Scan", "Index Only Scan") for node in nodes), nodes
        # The queue's length must not show: a handful of rows per provider head, never the 10,000.
        assert sum(node["Actual Rows"] * node["Actual Loops"] for node in nodes) < 50, nodes
    assert {node["Index Name"] for node in claim} >= {"ix_jobs_queue"}


async def test_claims_from_a_ten_thousand_deep_queue_follow_the_fair_order(schema: str) -> None:
    store = await open_pg(schema=schema)
    conn = await asyncpg.connect(url(), server_settings={"search_path": schema})
    try:
        await fill_queue(conn)
        limits = ClaimLimits(provider_limits={"fake": 100}, providers=frozenset({"fake"}))
        claimed = [await store.claim_job(f"w{i}", now=1e9, lease_seconds=LEASE, limits=limits) for i in range(20)]
    finally:
        await conn.close()
        await store.close()
    # Every member's first job comes first (fair_rank 1), in arrival order, one member each.
    assert [(job.fair_rank, job.user_id) for job in claimed if job] == [(1, member) for member in range(1, 21)]


@pytest.fixture
async def two_pools(schema: str) -> AsyncIterator[tuple[PgStore, PgStore]]:
    first, second = await open_pg(schema=schema), await open_pg(schema=schema)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def test_concurrent_claimers_never_pass_a_provider_or_the_global_limit(
    two_pools: tuple[PgStore, PgStore],
) -> None:
    first, second = two_pools
    clock = FakeClock()
    registry = ProviderRegistry([ScriptedProvider(name="a"), ScriptedProvider(name="b")])
    service = JobService(first, registry, clock)
    await first.update_policy(1, "default", 0, QuotaLimits(credits=10**6, max_queued=100, max_running=10))
    for member in range(30):
        who = Requester(guild_id=1, user_id=100 + member, channel_id=5)
        for model in ("a/video", "b/video"):
            await service.enqueue(who, req().model_copy(update={"model": model}))

    async def claim_all(limits: ClaimLimits) -> list[str]:
        claimed: list[str] = []

        async def claimer(store: PgStore, name: str) -> None:
            while (job := await store.claim_job(name, now=clock.now(), lease_seconds=LEASE, limits=limits)) is not None:
                claimed.append(job.provider)

        await asyncio.gather(*(claimer(store, f"w{i}") for i, store in enumerate([first, second] * 4)))
        return claimed

    # Limits under CLAIM_LANES: every claim takes the provider's exclusive lock.
    per_provider = Counter(await claim_all(ClaimLimits(provider_limits={"a": 3, "b": 2})))
    assert per_provider == {"a": 3, "b": 2}, "eight claimers filled each provider's slots, and no more"
    assert await first.running_count() == 5
    more = Counter(await claim_all(ClaimLimits(provider_limits={"a": 20, "b": 20}, global_limit=9)))
    assert sum(more.values()) == 4, "the global limit counts what runs already"
    assert await first.running_count() == 9
    # Room for many: claims run side by side in lanes until the provider is within CLAIM_LANES of its limit,
    # then one at a time; either way the limit is met exactly.
    laned = Counter(await claim_all(ClaimLimits(provider_limits={"a": 24, "b": 3})))
    running_b = per_provider["b"] + more["b"]
    assert laned["a"] + per_provider["a"] + more["a"] == 24
    assert running_b + laned["b"] == max(3, running_b)
    assert await first.running_count() == 24 + max(3, running_b)


async def test_a_laned_claim_leaves_room_for_the_claims_it_cannot_see(two_pools: tuple[PgStore, PgStore]) -> None:
    """Two claims in lanes (the provider had room for many when they began) reach their checks after others
    have filled the provider to one short of its limit. Neither sees the other, so both must give way: had each
    counted only what it sees, both would pass and the provider would run one job over its limit."""
    first, _ = two_pools
    clock = FakeClock()
    service = JobService(first, ProviderRegistry([ScriptedProvider(name="a")]), clock)
    await first.update_policy(1, "default", 0, QuotaLimits(credits=10**6, max_queued=10, max_running=1))
    for member in range(20):
        await service.enqueue(Requester(guild_id=1, user_id=100 + member, channel_id=5), req().model_copy(
            update={"model": "a/video"}))  # fmt: skip
    limits = ClaimLimits(provider_limits={"a": 10}, providers=frozenset({"a"}))
    pg = queries("postgres")
    late = [await asyncpg.connect(url(), server_settings={"search_path": first.dialect.namespace}) for _ in range(2)]
    try:
        for conn in late:
            await conn.execute("BEGIN")
        for n in range(9):  # others fill the provider to one short of the limit
            assert await first.claim_job(f"w{n}", now=clock.now(), lease_seconds=LEASE, limits=limits)
        verdicts = []
        for n, conn in enumerate(late):
            claim_next, claim_check = pg["claim_next"], pg["claim_check"]
            # claim_next decides from what its own snapshot shows: these two are told of a limit with room for
            # every lane, as two claims whose snapshots were taken before the nine committed would have seen.
            row = await conn.fetchrow(claim_next.sql, *claim_next.args(dict(
                worker_id=f"late{n}", lease_until=clock.now() + LEASE, now=clock.now(), providers=["a"],
                limits=[10 + CLAIM_LANES], exclusive=[], lanes=CLAIM_LANES, lane_offset=n,
                global_limit=None)))  # fmt: skip
            assert row is not None and row["laned"] and row["lane"] is not None
            check = await conn.fetchrow(claim_check.sql, *claim_check.args(dict(
                id=row["id"], now=clock.now(), detail="late", guild_id=row["guild_id"], user_id=row["user_id"],
                provider="a", global_limit=None)))  # fmt: skip
            assert check["provider_running"] == 10, "each sees the nine committed claims and its own, not the other"
            verdicts.append(_over_a_limit(check, row, limits, laned=True))
        assert verdicts == [True, True], "both late claims give way (the store rolls them back and retries)"
    finally:
        for conn in late:
            await conn.close()  # rolls back
    assert await first.running_count() == 9
    assert await first.claim_job("w9", now=clock.now(), lease_seconds=LEASE, limits=limits) is not None
    assert await first.claim_job("w10", now=clock.now(), lease_seconds=LEASE, limits=limits) is None
    assert await first.running_count() == 10
