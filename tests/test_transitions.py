"""The job state machine is the table `bot.domain.ALLOWED`, and the store enforces it on both dialects: every
legal move is accepted, every other one refused with `InvalidTransition`, leaving no trace."""

from __future__ import annotations

import itertools
import uuid

import pytest

from bot.clock import FakeClock
from bot.domain import ACTIVE_STATES, ALLOWED, TERMINAL_STATES, Job, JobState, VideoRequest
from bot.errors import InvalidTransition, LeaseLost, VideoBotError
from bot.store.base import Store, Transition
from tests.store_moves import walk


async def new_job(store: Store, clock: FakeClock) -> Job:
    now = clock.now()
    job = Job(
        id=uuid.uuid4().hex, guild_id=1, user_id=10, channel_id=5, credits=2, state=JobState.QUEUED,
        request=VideoRequest(prompt="a cat surfing", model="fake/video", duration=2), created_at=now, updated_at=now,
    )  # fmt: skip
    return await store.insert_job(job, max_running=100, window=(now - 1, now + 1), admit=lambda _: None)


def test_the_table_covers_every_state_and_ends_stay_ends() -> None:
    assert set(ALLOWED) == set(JobState)
    assert all(not ALLOWED[state] for state in TERMINAL_STATES)
    # Every state can be reached from QUEUED, and every unfinished job can still be failed or cancelled.
    assert all(ALLOWED[state] >= {JobState.CANCELLED} for state in set(JobState) - TERMINAL_STATES)
    assert all(JobState.FAILED in ALLOWED[state] for state in ACTIVE_STATES)


async def test_every_legal_move_is_accepted_and_every_other_refused(store: Store, clock: FakeClock) -> None:
    accepted, refused = set(), set()
    for source, target in itertools.product(JobState, JobState):
        job = await walk(store, await new_job(store, clock), source, now=clock.now())
        assert job.state is source
        history = await store.job_events(job.id)
        try:
            moved = await store.transition(job.id, Transition(target, detail="probe"), now=clock.now())
        except InvalidTransition as refusal:
            refused.add((source, target))
            assert (refusal.job_id, refusal.from_state, refusal.to_state) == (job.id, source, target)
            after = await store.get_job(job.id)
            assert after is not None and after.state is source, "a refused move changed the job"
            assert await store.job_events(job.id) == history, "a refused move left a history row"
        else:
            accepted.add((source, target))
            assert moved.state is target
            assert (await store.job_events(job.id))[-1].detail == "probe"
    legal = {(source, target) for source, targets in ALLOWED.items() for target in targets}
    assert accepted == legal
    assert refused == set(itertools.product(JobState, JobState)) - legal


async def test_a_move_by_a_worker_that_lost_the_lease_is_refused(store: Store, clock: FakeClock) -> None:
    job = await walk(store, await new_job(store, clock), JobState.RUNNING, now=clock.now())
    with pytest.raises(LeaseLost) as lost:
        await store.transition(job.id, Transition(JobState.DOWNLOADING, worker_id="w2"), now=clock.now())
    assert (lost.value.job_id, lost.value.holder, lost.value.worker_id) == (job.id, None, "w2")
    with pytest.raises(InvalidTransition) as missing:
        await store.transition("no-such-job", Transition(JobState.RUNNING), now=clock.now())
    assert missing.value.from_state is None
    assert isinstance(lost.value, VideoBotError) and isinstance(missing.value, VideoBotError), "one exception tree"


def test_a_move_records_only_what_belongs_to_where_it_goes() -> None:
    assert Transition(JobState.RUNNING, remote_id="r").remote_id == "r"
    assert Transition(JobState.DELIVERED, delivered_message_id=7).delivered_message_id == 7
    with pytest.raises(ValueError, match="cannot record"):
        Transition(JobState.FAILED, remote_id="r")
    with pytest.raises(ValueError, match="cannot record"):
        Transition(JobState.DELIVERING, error="an end's reason on a working state")


@pytest.mark.parametrize("end", [JobState.FAILED, JobState.CANCELLED, JobState.DELIVERED])
async def test_an_end_with_a_refund_returns_the_credits_once_and_one_without_keeps_them(
    store: Store, clock: FakeClock, end: JobState
) -> None:
    window = (clock.now() - 1, clock.now() + 1)
    source = JobState.DELIVERING if end is JobState.DELIVERED else JobState.RUNNING
    refunded = await walk(store, await new_job(store, clock), source, now=clock.now())
    kept = await walk(store, await new_job(store, clock), source, now=clock.now())
    assert (await store.admission(1, 10, window)).charged == 4
    await store.transition(refunded.id, Transition(end, refund=True, detail="probe"), now=clock.now())
    await store.transition(kept.id, Transition(end, detail="probe"), now=clock.now())
    assert (await store.admission(1, 10, window)).charged == 2, "exactly the refunded job's 2 credits came back"
    with pytest.raises(InvalidTransition):  # an end is final: no second refund
        await store.transition(refunded.id, Transition(end, refund=True), now=clock.now())
    assert (await store.admission(1, 10, window)).charged == 2
