"""Every provider adapter, through the real engine (store, worker, retry loop, refunds), against its vendor's
loopback fake over real HTTP: the same promises, in each vendor's own words.

One test per promise, parametrized over the fakes in `tests/fakes/providers/`; a fake honours the common knobs
(`FakeVendor`), so these tests need know nothing of any vendor. A worker on an injected clock drives each job:
the provider's waits (Retry-After, poll hints, backoff) cost no real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.config import Settings
from bot.discord.messages import ENGLISH, reason_text
from bot.discord.render import status_text
from bot.domain import Job, JobState, QuotaLimits, Requester, VideoRequest
from bot.jobs.notify import FileSink, JobTransition
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers import build_registry
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.conftest import close_test_store, make_worker, open_test_store
from tests.fakes.providers import ALL_FAKES
from tests.fakes.providers.base import FakeVendor
from tests.fakes.providers.runway import RunwayFake

ALICE = Requester(guild_id=1, user_id=10, channel_id=100)
EVER = (0.0, 1e12)
REASON = "the prompt depicts a real public figure"


@pytest.fixture(params=ALL_FAKES, ids=lambda cls: cls.provider)
async def vendor(request: pytest.FixtureRequest) -> AsyncIterator[FakeVendor]:
    async with request.param() as fake:
        yield fake


@dataclass
class Rig:
    vendor: FakeVendor
    store: Store
    registry: ProviderRegistry
    service: JobService
    worker: Worker
    sink: FileSink
    clock: FakeClock

    async def run(self, **request: object) -> Job:
        job = await self.enqueue(**request)
        await self.worker.drain()
        return await self.service.get(job.id)

    async def enqueue(self, **request: object) -> Job:
        fields: dict[str, object] = {"prompt": "a lighthouse in a storm", "model": self.vendor.model,
                                     "duration": self.vendor.durations[0]}  # fmt: skip
        fields.update(request)
        return await self.service.enqueue(ALICE, VideoRequest(**fields))  # type: ignore[arg-type]

    async def standing(self) -> tuple[int, int]:
        admission = await self.store.admission(ALICE.guild_id, ALICE.user_id, EVER)
        return admission.charged, admission.reserved


@contextlib.asynccontextmanager
async def rig(vendor: FakeVendor, tmp_path: Path, **worker_options: object) -> AsyncIterator[Rig]:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", **vendor.settings())  # type: ignore[call-arg]
    registry = build_registry(settings)
    await registry.start()
    store = await open_test_store("sqlite", tmp_path)
    clock = FakeClock()
    sink = FileSink(tmp_path / "out")
    (tmp_path / "out").mkdir()
    options: dict[str, object] = {"worker_id": "w1", "poll_interval": 5.0, "max_poll_seconds": 900.0}
    options.update(worker_options)
    worker = make_worker(store, registry, sink, clock, tmp_path, **options)
    service = JobService(store, registry, clock)
    await store.update_policy(ALICE.guild_id, "user", ALICE.user_id, QuotaLimits(credits=10_000, max_queued=10))
    try:
        yield Rig(vendor, store, registry, service, worker, sink, clock)
    finally:
        await registry.aclose()
        await close_test_store(store)


def delivered_bytes(r: Rig, job: Job) -> bytes:
    assert job.state is JobState.DELIVERED, f"{job.state}: {job.error}"
    return r.sink.delivered[job.id].read_bytes()


async def test_success_with_progress(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.polls_to_finish = 3
    async with rig(vendor, tmp_path) as r:
        job = await r.run()
        assert delivered_bytes(r, job) == vendor.video
        assert vendor.creates == 1
        running = [p for job_id, state, p in r.sink.updates if job_id == job.id and state == "running"]
        if vendor.reports_progress:
            assert any(0 < p < 1 for p in running), f"progress shown while running: {running}"
        assert await r.standing() == (job.credits, 0)


async def test_queue_position_reaches_the_job(vendor: FakeVendor, tmp_path: Path) -> None:
    if not vendor.reports_queue_position:
        pytest.skip(f"{vendor.provider} does not report a queue position")
    vendor.polls_to_finish = 3
    async with rig(vendor, tmp_path) as r:
        seen: list[int | None] = []

        async def record(event: JobTransition) -> None:
            seen.append(event.job.remote_position)

        r.worker.transitions.subscribe(record)
        job = await r.run()
        assert job.state is JobState.DELIVERED
        assert any(p is not None for p in seen), seen


async def test_a_rate_limited_create_waits_the_retry_after_then_succeeds(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.fail_next("create", 429, retry_after=7)
    async with rig(vendor, tmp_path) as r:
        job = await r.run()
        assert delivered_bytes(r, job) == vendor.video
        assert vendor.creates == 1
        assert 7 in r.clock.slept, f"Retry-After honoured: {r.clock.slept}"


async def test_a_burst_of_5xx_on_polls_is_waited_out(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.polls_to_finish = 1
    vendor.fail_next("poll", 503, times=6)
    async with rig(vendor, tmp_path) as r:
        job = await r.run()
        assert delivered_bytes(r, job) == vendor.video
        assert vendor.creates == 1 and vendor.count("poll") >= 7


async def test_a_content_refusal_reaches_the_member_and_refunds(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.refuse_reason = REASON
    async with rig(vendor, tmp_path) as r:
        job = await r.run()
        assert job.state is JobState.FAILED
        assert job.error is not None and REASON in reason_text(job.error, ENGLISH), job.error
        assert await r.standing() == (0, 0), "credits come back"
        counted = await r.store.refusals_by_rule(ALICE.guild_id, 0.0, 1e12)  # type: ignore[attr-defined]
        expected = {"provider_content": 1} if vendor.has_content_policy else {}
        assert counted == expected, "the provider's refusal counts in the stats, at submit or at a poll"


async def test_a_job_past_its_deadline_fails_and_refunds(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.never_finish = True
    async with rig(vendor, tmp_path, max_poll_seconds=600.0, poll_interval=30.0) as r:
        started = r.clock.now()
        job = await r.run()
        assert job.state is JobState.FAILED and job.error
        assert 600 <= r.clock.now() - started <= 600 + 120
        assert vendor.count("poll") <= 600 / 1 + 2
        assert await r.standing() == (0, 0)
        if vendor.can_cancel:
            assert vendor.count("cancel") == 1, "a job given up on is stopped at the provider, not left to bill"


async def test_an_expired_result_url_is_fetched_again(vendor: FakeVendor, tmp_path: Path) -> None:
    if not vendor.result_urls:
        pytest.skip(f"{vendor.provider} serves results from its API, not from expiring URLs")
    vendor.expire_first_url = True
    async with rig(vendor, tmp_path) as r:
        job = await r.run()
        assert delivered_bytes(r, job) == vendor.video
        assert vendor.count("download") == 2 and vendor.creates == 1


async def test_cancel_reaches_the_provider_and_refunds(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.never_finish = True
    async with rig(vendor, tmp_path, max_poll_seconds=1e9, poll_interval=1.0) as r:
        job = await r.enqueue()
        draining = asyncio.create_task(r.worker.drain())
        for _ in range(2000):
            if vendor.count("poll") >= 2:
                break
            await asyncio.sleep(0.005)
        assert vendor.count("poll") >= 2, "the job is running at the provider"
        await r.service.cancel(job.id, by_user=ALICE.user_id)
        await asyncio.wait_for(draining, timeout=30)
        done = await r.service.get(job.id)
        assert done.state is JobState.CANCELLED
        assert await r.standing() == (0, 0)
        if vendor.can_cancel:
            assert vendor.count("cancel") == 1, vendor.counts()


async def test_a_create_whose_answer_was_lost_is_not_sent_again(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.drop_create_answer = True
    async with rig(vendor, tmp_path) as r:
        job = await r.run()
        assert vendor.creates == 1, "a second create could make (and bill) the video twice"
        if vendor.create_is_idempotent:
            assert delivered_bytes(r, job) == vendor.video
        else:
            assert job.state is JobState.FAILED and await r.standing() == (0, 0)


async def test_a_job_waiting_at_the_provider_says_so(tmp_path: Path) -> None:
    """Runway's THROTTLED, fal's IN_QUEUE: the status message says the job waits at the service, with its place
    when the service gives one, and never claims progress it has not made."""
    async with RunwayFake() as vendor:
        vendor.throttled_polls = 2  # then PENDING, then RUNNING with progress
        vendor.polls_to_finish = 5
        async with rig(vendor, tmp_path) as r:
            shown: list[str] = []

            async def record(event: JobTransition) -> None:
                if event.job.state is JobState.RUNNING:
                    shown.append(status_text(event.job, ENGLISH).splitlines()[0])

            r.worker.transitions.subscribe(record)
            job = await r.run()
            assert job.state is JobState.DELIVERED
            waited = shown.index("🕒 Waiting at the video service")  # raises when never shown
            assert any(line.startswith("🎬 Generating") for line in shown[waited:]), shown
    waiting = dataclasses.replace(job, state=JobState.RUNNING, progress=0.0, remote_waiting=True, remote_position=2)
    assert status_text(waiting, ENGLISH).startswith("🕒 Waiting at the video service (#3 in its queue)")
