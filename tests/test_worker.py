"""The worker: full lifecycle, retries, crash recovery under leases, cancellation and refunds at every stage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.discord.messages import ENGLISH, reason_text
from bot.domain import Job, JobState, Requester, VideoRequest
from bot.errors import ProviderError
from bot.errors.said import vendor_said
from bot.i18n import texts_for
from bot.jobs.notify import FileSink
from bot.jobs.service import JobService
from bot.jobs.worker import MAX_POLL_SECONDS, Worker
from bot.providers.registry import ProviderRegistry
from bot.store.base import ClaimLimits, Store
from tests.conftest import make_worker
from tests.fakes.scripted_provider import CLIP_BYTES, ScriptedProvider

ALICE = Requester(guild_id=1, user_id=10, channel_id=100)


def request(prompt: str = "a cat surfing", duration: int = 4) -> VideoRequest:
    return VideoRequest(prompt=prompt, model="fake/video", duration=duration)


async def left(service: JobService, who: Requester = ALICE) -> int:
    return (await service.usage(who)).left


async def test_full_lifecycle_records_every_state_and_keeps_credits(
    service: JobService, worker: Worker, sink: FileSink, store: Store, provider: ScriptedProvider
) -> None:
    provider.polls_to_finish = 2
    job = await service.enqueue(ALICE, request())
    assert await left(service) == 60 - 4
    await worker.drain()

    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert sink.delivered[job.id].read_bytes() == CLIP_BYTES
    events = await store.job_events(job.id)
    states = [e.to_state for e in events]
    assert states == [
        JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING, JobState.DELIVERING,
        JobState.DELIVERED,
    ]  # fmt: skip
    assert events[4].detail == "posting, try 1", "the intent to post is recorded before the post"
    usage = await service.usage(ALICE)
    assert (usage.used, usage.reserved, usage.left) == (4, 0, 56)
    assert not list((worker.staging_dir).glob("*.mp4")), "staged clip must be removed once delivered"
    progress = [p for (jid, state, p) in sink.updates if jid == job.id and state == "running"]
    assert progress and max(progress) > 0


async def test_retryable_errors_are_retried_with_backoff_and_retry_after(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider, clock: FakeClock
) -> None:
    provider.fail_next("submit", ProviderError("busy", retryable=True, retry_after=7.0))
    provider.fail_next("poll", ProviderError("502", retryable=True), times=2)
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert provider.calls["submit"] == 2
    assert 7.0 in clock.slept  # Retry-After honoured as given
    assert 1.0 in clock.slept and 2.0 in clock.slept  # then exponential backoff (jitter off in tests)


async def test_final_error_fails_and_refunds_with_the_providers_words(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider
) -> None:
    provider.fail_next(
        "submit", ProviderError("policy", retryable=False, user_message=vendor_said("Prompt violates policy"))
    )
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.FAILED
    assert reason_text(done.error, ENGLISH) == "Prompt violates policy"
    assert await left(service) == 60


async def test_a_poll_outage_is_waited_out(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider, sink: FileSink
) -> None:
    # Ten failed polls in a row: more than the retry policy's tries, but the video is still being made.
    provider.fail_next("poll", ProviderError("down", retryable=True), times=10)
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED, done
    assert provider.calls["poll"] > 10 and job.id in sink.delivered


async def test_poll_errors_until_the_deadline_give_up_and_refund(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider, clock: FakeClock
) -> None:
    provider.fail_next("poll", ProviderError("down", retryable=True), times=100_000)
    job = await service.enqueue(ALICE, request())
    started = clock.now()
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.FAILED
    assert MAX_POLL_SECONDS <= clock.now() - started <= MAX_POLL_SECONDS + 120, clock.now() - started
    assert await left(service) == 60


async def test_too_many_retryable_submit_errors_give_up_and_refund(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider
) -> None:
    provider.fail_next("submit", ProviderError("busy", retryable=True), times=10)
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.FAILED
    assert provider.calls["submit"] == 4
    assert await left(service) == 60


async def test_remote_failure_refunds(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider
) -> None:
    provider.fail_with = "GPU が落ちました"  # the vendor's own words: shown as they are, in every language
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.FAILED
    assert reason_text(done.error, texts_for("ja")) == reason_text(done.error, ENGLISH) == "GPU が落ちました"
    assert await left(service) == 60


async def test_crashed_worker_job_is_taken_over_and_polled_not_resubmitted(
    service: JobService,
    store: Store,
    registry: ProviderRegistry,
    sink: FileSink,
    provider: ScriptedProvider,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    provider.polls_to_finish = 3
    provider.gate = asyncio.Event()
    job = await service.enqueue(ALICE, request())
    dead = make_worker(store, registry, sink, clock, tmp_path, worker_id="dead")
    await dead.fill_slots()
    # Let it submit and start polling, then "crash" it: the task dies, its lease stays in the database.
    for _ in range(50):
        current = await store.get_job(job.id)
        if current is not None and current.state is JobState.RUNNING:
            break
        await asyncio.sleep(0)
    dead._tasks[job.id].cancel()
    await asyncio.sleep(0)
    provider.gate.set()

    rescuer = make_worker(store, registry, sink, clock, tmp_path, worker_id="rescuer")
    assert await rescuer.fill_slots() == 0, "a live lease must not be taken over"
    clock.advance(31)
    await rescuer.drain()

    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert provider.submitted == [job.id], "a job with a remote id is never submitted again"
    details = [e.detail for e in await store.job_events(job.id)]
    assert any("taken over by rescuer from dead" in d for d in details)


async def test_job_interrupted_during_submit_is_not_resent_to_an_unsafe_provider(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    job = await service.enqueue(ALICE, request())
    dead = make_worker(store, registry, sink, clock, tmp_path, worker_id="dead")
    claimed = await store.claim_job("dead", now=clock.now(), lease_seconds=30, limits=dead.limits)
    assert claimed is not None and claimed.state is JobState.SUBMITTING  # died before the create returned
    clock.advance(31)
    await make_worker(store, registry, sink, clock, tmp_path, worker_id="rescuer").drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.FAILED
    assert await left(service) == 60


async def test_delivered_job_is_never_delivered_again(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    await worker.drain()
    sink.delivered.clear()
    clock.advance(3600)
    await make_worker(store, registry, sink, clock, tmp_path, worker_id="w2").drain()
    assert sink.delivered == {}
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED


async def test_lease_renewal_keeps_a_slow_job(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path,
) -> None:  # fmt: skip
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    provider.gate = asyncio.Event()
    await worker.fill_slots()
    for _ in range(3):
        clock.advance(20)
        await worker.renew_leases()
    other = make_worker(store, registry, sink, clock, tmp_path, worker_id="other")
    assert await other.fill_slots() == 0, "a renewed lease must not be taken over"
    provider.gate.set()
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED


@pytest.mark.parametrize("stage", [JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING])
async def test_cancel_at_every_stage_refunds(
    stage: JobState,
    service: JobService,
    store: Store,
    registry: ProviderRegistry,
    sink: FileSink,
    provider: ScriptedProvider,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    if stage is not JobState.QUEUED:
        claimed = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=worker.limits)
        assert claimed is not None
        if stage in (JobState.RUNNING, JobState.DOWNLOADING):
            await store.transition(job.id, _to(JobState.RUNNING, remote_id=f"remote-{job.id}"), now=clock.now())
            provider.submitted.append(job.id)
        if stage is JobState.DOWNLOADING:
            await store.transition(job.id, _to(JobState.DOWNLOADING), now=clock.now())
    cancelled = await service.cancel(job.id, by_user=ALICE.user_id)
    if stage is JobState.QUEUED:
        assert cancelled.state is JobState.CANCELLED
    else:
        assert cancelled.cancel_requested and cancelled.state is stage
        # the worker that holds the job notices at its next step (here: a fresh worker after takeover)
        clock.advance(31)
        await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.CANCELLED
    assert await left(service) == 60
    assert sink.delivered == {}
    if stage is JobState.RUNNING:
        assert provider.cancelled == [job.id], "the provider is asked to stop"


async def test_cancel_while_polling_stops_the_remote_job(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider
) -> None:
    provider.polls_to_finish = 1000
    job = await service.enqueue(ALICE, request())
    await worker.fill_slots()
    for _ in range(100):
        current = await store.get_job(job.id)
        if current is not None and current.progress > 0:
            break
        await asyncio.sleep(0)
    await service.cancel(job.id, by_user=ALICE.user_id)
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.CANCELLED
    assert provider.cancelled == [job.id]
    assert await left(service) == 60


async def test_cannot_cancel_someone_elses_job_unless_admin(service: JobService, store: Store) -> None:
    from bot.errors import NotAllowed

    job = await service.enqueue(ALICE, request())
    with pytest.raises(NotAllowed):
        await service.cancel(job.id, by_user=999)
    cancelled = await service.cancel(job.id, by_user=999, is_admin=True)
    assert cancelled.state is JobState.CANCELLED


def _to(state: JobState, **fields: object):  # type: ignore[no-untyped-def]
    from bot.store.base import Transition

    return Transition(state, worker_id="w", **fields)  # type: ignore[arg-type]


class Channel:
    """Where clips are posted, as a channel is: each post gets an id, and `find_post` reads the posts back as the bot
    reads a channel's history. It keeps no nonce, as a post through an interaction's webhook takes none."""

    def __init__(self) -> None:
        self.posts: list[tuple[int, str]] = []

    async def deliver(self, job: Job, clip: Path) -> int | None:
        self.posts.append((len(self.posts) + 1, job.id))
        return len(self.posts)

    async def find_post(self, job: Job) -> int | None:
        return next((message for message, posted in self.posts if posted == job.id), None)

    async def on_transition(self, event: object) -> None:
        return None


async def test_a_job_resumed_after_its_post_looks_for_it_before_posting_again(
    service: JobService, store: Store, registry: ProviderRegistry, clock: FakeClock, tmp_path: Path
) -> None:
    """A worker died after the post went out and before it was recorded: the next one finds the post and records
    it, and the member sees the clip once."""
    job = await service.enqueue(ALICE, request())
    assert await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=ClaimLimits(providers=None))
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(CLIP_BYTES)
    for change in (_to(JobState.RUNNING, remote_id="remote-1"), _to(JobState.DOWNLOADING),
                   _to(JobState.DELIVERING, result_path=str(clip), post_attempted_at=clock.now())):  # fmt: skip
        await store.transition(job.id, change, now=clock.now())
    channel = Channel()
    await channel.deliver(job, clip)  # the earlier life's post, never recorded
    worker = make_worker(store, registry, channel, clock, tmp_path, worker_id="w2")  # type: ignore[arg-type]
    clock.advance(31)  # the dead worker's lease runs out
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert channel.posts == [(1, job.id)], "posted once"
    assert done.delivered_message_id == 1, "the earlier post is the one recorded"
