"""Engine throughput and latency on this machine, with an instant in-process provider.

    python bench/engine.py [--members 1000] [--jobs 10] [--queued 100000] [--database-url URL]

Prints: full job lifecycles per second (enqueue → submit → poll → download → deliver), enqueue latency
p50/p99, claim latency p50/p99 with a deep queue, and the offline renderer's seconds per clip second.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.clock import SystemClock
from bot.domain import QuotaLimits, Requester, VideoRequest
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers.registry import ProviderRegistry
from bot.store import open_store
from bot.store.base import ClaimLimits, Store
from tests.fakes.scripted_provider import ScriptedProvider


class NullDelivery:
    """Delivery that only counts, so the figure is the engine's and not the disk's."""

    def __init__(self) -> None:
        self.delivered = 0

    async def deliver(self, job: object, clip: Path) -> int | None:
        self.delivered += 1
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def lifecycles(url: str, members: int, jobs_each: int, workdir: Path) -> None:
    store = await open_store(url)
    provider = ScriptedProvider(name="fake")
    registry = ProviderRegistry([provider])
    clock = SystemClock()
    service = JobService(store, registry, clock)
    await store.update_policy(1, "default", 0, QuotaLimits(credits=10**6, max_queued=jobs_each, max_running=jobs_each))
    request = VideoRequest(prompt="bench", model="fake/video", duration=2)

    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(jobs_each):
        for member in range(members):
            t0 = time.perf_counter()
            await service.enqueue(Requester(guild_id=1, user_id=member + 1), request)
            latencies.append(time.perf_counter() - t0)
    enqueue_seconds = time.perf_counter() - started
    delivery = NullDelivery()
    worker = Worker(store, registry, delivery, clock, staging_dir=workdir / "staging", concurrency=64)
    t0 = time.perf_counter()
    await worker.drain()
    drain_seconds = time.perf_counter() - t0
    total = members * jobs_each
    assert delivery.delivered == total, delivery.delivered
    print(f"jobs: {total:,} ({members:,} members x {jobs_each})")
    print(f"enqueue latency: p50 {pct(latencies, .5) * 1000:.2f} ms, p99 {pct(latencies, .99) * 1000:.2f} ms "
          f"({total / enqueue_seconds:,.0f} enqueues/s)")  # fmt: skip
    print(f"worker lifecycles (claim → delivered): {total / drain_seconds:,.0f} jobs/s")
    print(f"end to end (enqueue + lifecycle): {total / (enqueue_seconds + drain_seconds):,.0f} jobs/s")
    await store.close()


def seed_sqlite(path: Path, queued: int, members: int) -> None:
    """Fill a migrated SQLite file with `queued` waiting jobs quickly (bulk insert, not the enqueue path)."""
    request_json = VideoRequest(prompt="bench", model="fake/video", duration=2).model_dump_json()
    db = sqlite3.connect(path)
    now = time.time()
    rows = (
        (uuid.uuid4().hex, 1, (n % members) + 1, 0, "fake/video", "fake", request_json, 2, 1, "queued", 0,
         n // members + 1, now, now)
        for n in range(queued)
    )  # fmt: skip
    db.executemany(
        "INSERT INTO jobs (id, guild_id, user_id, channel_id, model, provider, request_json, credits, max_running,"
        " state, priority, fair_rank, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.commit()
    db.close()


async def claims(url: str, queued: int, workdir: Path, samples: int = 2000) -> None:
    store: Store = await open_store(url)
    if url.startswith("sqlite:"):
        await store.close()
        seed_sqlite(Path(url.removeprefix("sqlite:///")), queued, members=queued // 10)
        store = await open_store(url)
    else:
        print("claim benchmark seeds SQLite only; skipped", file=sys.stderr)
        await store.close()
        return
    limits = ClaimLimits(provider_limits={"fake": 10**6}, providers=frozenset({"fake"}))
    latencies = []
    for _ in range(samples):
        t0 = time.perf_counter()
        job = await store.claim_job("bench", now=time.time(), lease_seconds=60, limits=limits)
        latencies.append(time.perf_counter() - t0)
        assert job is not None
    depth = await store.queue_depth()
    print(f"claim latency with {queued:,} queued ({samples} claims, {depth:,} left): "
          f"p50 {pct(latencies, .5) * 1000:.2f} ms, p99 {pct(latencies, .99) * 1000:.2f} ms")  # fmt: skip
    await store.close()


def renderer(seconds: int = 5) -> None:
    from bot.providers.local_render import render_card

    request = VideoRequest(prompt="a lighthouse at dusk, waves rolling in", model="local/preview", duration=seconds)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        render_card(request, Path(tmp) / "clip.mp4")
        took = time.perf_counter() - t0
    print(f"renderer: {seconds} s 1280x720 clip in {took:.2f} s = {took / seconds:.3f} s per clip second")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--skip-render", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = args.database_url or f"sqlite:///{workdir / 'lifecycle.db'}"
        await lifecycles(url, args.members, args.jobs, workdir)
        await claims(f"sqlite:///{workdir / 'claims.db'}", args.queued, workdir)
    if not args.skip_render:
        renderer()


if __name__ == "__main__":
    asyncio.run(main())
