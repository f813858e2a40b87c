"""A remote job that never finishes is given up once the poll deadline passes: failed, and refunded."""

from __future__ import annotations

from pathlib import Path

from bot.clock import FakeClock
from bot.domain import JobState, Requester, VideoRequest
from bot.jobs.notify import FileSink
from bot.jobs.service import JobService
from bot.jobs.worker import MAX_POLL_SECONDS
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.conftest import make_worker
from tests.fakes.scripted_provider import ScriptedProvider

ALICE = Requester(guild_id=1, user_id=10, channel_id=100)
POLL_INTERVAL = 600.0  # ten minutes between polls: the deadline is reached in a handful of polls
EVER = (0.0, 1e12)  # a quota window that holds every charge and refund, whatever the clock says


async def test_a_remote_job_past_the_poll_deadline_fails_and_is_refunded(
    store: Store,
    registry: ProviderRegistry,
    service: JobService,
    provider: ScriptedProvider,
    sink: FileSink,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    deadline_polls = int(MAX_POLL_SECONDS // POLL_INTERVAL) + 1
    # The provider "finishes" only far beyond the deadline: that bounds the test if the worker has no deadline
    # (it then delivers, and the assertions below fail) instead of polling forever.
    provider.polls_to_finish = 10 * deadline_polls
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w1", poll_interval=POLL_INTERVAL)
    job = await service.enqueue(ALICE, VideoRequest(prompt="a very slow sunrise", model="fake/video", duration=4))
    assert (await store.admission(ALICE.guild_id, ALICE.user_id, EVER)).charged == 4

    await worker.drain()

    done = await store.get_job(job.id)
    assert done is not None
    assert done.state is JobState.FAILED, f"job ended {done.state} after {provider.calls['poll']} polls"
    assert done.error, "the member is told why"
    assert job.id not in sink.delivered
    # Given up at the deadline: not before it, and without polling on long after it.
    assert done.started_at is not None and done.finished_at is not None
    waited = done.finished_at - done.started_at
    assert MAX_POLL_SECONDS <= waited <= MAX_POLL_SECONDS + 2 * POLL_INTERVAL, waited
    assert provider.calls["poll"] <= deadline_polls + 1, provider.calls["poll"]
    # Credits returned: the reservation is matched by a refund, and nothing stays reserved.
    standing = await store.admission(ALICE.guild_id, ALICE.user_id, EVER)
    assert (standing.charged, standing.reserved) == (0, 0), standing
    states = [event.to_state for event in await store.job_events(job.id)]
    assert states[-2:] == [JobState.RUNNING, JobState.FAILED], states
