"""What a job leaves in PostgreSQL, and what the tables and indexes weigh per million jobs.

    python bench/pg_size.py [--jobs 1000000] [--database-url URL]

Fills a fresh, migrated schema with finished jobs shaped like real ones (a delivered job's columns, its six
history rows, its ledger reserve; every tenth job failed with its refund row), runs VACUUM ANALYZE, and prints
each table's and index's size, then the same scaled to 10 million jobs (sizes grow linearly with rows). It then
queues 10,000 jobs on top and times claims (each claim: the engine's own `claim_job`), to show what the
history costs the hot path: nothing, when the claim stays on the partial queue indexes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.store.base import ClaimLimits
from bot.store.dialects.postgres import PostgresDialect
from bot.store.sql_store import SqlStore

JOB_ROW = """
INSERT INTO jobs (id, guild_id, user_id, channel_id, model, provider, request_json, credits, max_running, state,
                  priority, fair_rank, created_at, updated_at, started_at, finished_at, remote_id, progress,
                  attempts, lease_owner, error, result_path, delivered_message_id, delivery_ref, status_state,
                  cost_usd, route)
SELECT md5(g::text), 1100000000000000000 + g % 50, 1200000000000000000 + g % 20000, 1300000000000000000 + g % 200,
       'fal/wan-2.2', 'fal',
       '{"prompt":"a red fox running through fresh snow at golden hour, cinematic","model":"fal/wan-2.2",'
       || '"duration":5,"aspect":"16:9","seed":null,"negative_prompt":null}',
       10, 2, CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'delivered' END, 0, g / 20000 + 1,
       1.7e9 + g, 1.7e9 + g + 95, 1.7e9 + g + 1, 1.7e9 + g + 95, 'req_' || md5(g::text || 'r'), 1, 1, NULL,
       CASE WHEN g % 10 = 0 THEN 'The video service refused this prompt.' END, NULL,
       CASE WHEN g % 10 = 0 THEN NULL ELSE 1400000000000000000 + g END,
       '{"application_id":1500000000000000000,"token":"' || repeat(md5(g::text), 5) || '","created_at":'
       || (1.7e9 + g)::text || ',"attachment_size_limit":10485760,"app_permissions":562949953421311,'
       || '"status_message_id":' || (1400000000000000000 + g)::text || '}',
       CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'delivered' END, 0.25, NULL
FROM generate_series($1::bigint, $2::bigint) AS g
"""
EVENTS = """
INSERT INTO job_events (job_id, at, from_state, to_state, detail)
SELECT md5(g::text), 1.7e9 + g + s.n, s.from_state, s.to_state, s.detail
FROM generate_series($1::bigint, $2::bigint) AS g,
     (VALUES (0, NULL, 'queued', ''), (1, 'queued', 'submitting', 'worker worker-3f2a9c1d7e4b'),
             (2, 'submitting', 'running', ''), (3, 'running', 'downloading', ''),
             (4, 'downloading', 'delivering', ''), (5, 'delivering', 'delivered', ''))
         AS s(n, from_state, to_state, detail)
"""
LEDGER = """
INSERT INTO usage_ledger (guild_id, user_id, job_id, kind, credits, at)
SELECT 1100000000000000000 + g % 50, 1200000000000000000 + g % 20000, md5(g::text), k.kind, k.credits, 1.7e9 + g
FROM generate_series($1::bigint, $2::bigint) AS g, (VALUES ('reserve', 10), ('refund', -10)) AS k(kind, credits)
WHERE k.kind = 'reserve' OR g % 10 = 0
"""
SIZES = """
SELECT c.relname, c.relkind, pg_relation_size(c.oid) AS bytes, c.reltuples::bigint AS rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i') AND c.relname <> 'schema_migrations'
ORDER BY bytes DESC
"""


def mb(value: float) -> str:
    return f"{value / 2**20:,.0f} MB" if value < 2**30 else f"{value / 2**30:,.1f} GB"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url", default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()
    schema = f"size_{uuid.uuid4().hex[:10]}"
    dialect = await PostgresDialect.open(args.database_url, schema=schema, max_size=2)
    store = SqlStore(dialect)
    pool = dialect._pool  # a benchmark reads the catalogue directly
    try:
        started = time.perf_counter()
        async with pool.acquire() as conn:
            for first in range(1, args.jobs + 1, 100_000):
                last = min(args.jobs, first + 99_999)
                for statement in (JOB_ROW, EVENTS, LEDGER):
                    await conn.execute(statement, first, last)
            await conn.execute("VACUUM ANALYZE")
            rows = await conn.fetch(SIZES)
        print(f"{args.jobs:,} finished jobs written in {time.perf_counter() - started:.0f} s")
        scale = 10_000_000 / args.jobs
        print(f"{'table / index':34} {'rows':>12} {'size':>10}   at 10 million jobs")
        total = 0
        for row in rows:
            total += row["bytes"]
            kind = "" if row["relkind"] == "r" else "  "
            name, size = kind + row["relname"], row["bytes"]
            print(f"{name:34} {max(0, row['rows']):>12,} {mb(size):>10}   {mb(size * scale)}")
        print(f"{'all':34} {'':>12} {mb(total):>10}   {mb(total * scale)}")
        async with pool.acquire() as conn:
            await conn.execute(JOB_ROW.replace("CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'delivered' END, 0,",
                                               "'queued', 0,"), args.jobs + 1, args.jobs + 10_000)  # fmt: skip
        limits = ClaimLimits(provider_limits={"fal": 10_000}, providers=frozenset({"fal"}))
        timings = []
        for n in range(500):
            t0 = time.perf_counter()
            job = await store.claim_job(f"w{n}", now=2e9, lease_seconds=60, limits=limits)
            timings.append(time.perf_counter() - t0)
            assert job is not None
        timings.sort()
        print(
            f"claims with {args.jobs:,} finished and 10,000 queued jobs: p50 {timings[250] * 1000:.2f} ms, "
            f"p99 {timings[494] * 1000:.2f} ms ({len(timings) / sum(timings):,.0f} claims/s on one connection)"
        )
    finally:
        await store.drop_schema()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
