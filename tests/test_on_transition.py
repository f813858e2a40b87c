"""The `on_transition` hook: every committed change of a job is announced once, after the commit, whoever made
it (a worker's step or end, a member's cancel, an admin's clear); a failing subscriber stops nothing."""

from __future__ import annotations

from pathlib import Path

from bot.clock import FakeClock
from bot.discord.messages import ENGLISH, reason_text
from bot.domain import JobState
from bot.jobs.admin import AdminService
from bot.jobs.notify import FileSink, JobTransition, Transitions
from bot.jobs.service import JobService
from bot.jobs.steps import STEPS
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.conftest import make_worker
from tests.fakes.scripted_provider import ScriptedProvider
from tests.test_worker import ALICE, request

Q, SUB, RUN, DL, DLV, DONE, CANC, FAIL = (
    JobState.QUEUED, JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING, JobState.DELIVERING,
    JobState.DELIVERED, JobState.CANCELLED, JobState.FAILED,
)  # fmt: skip


class Recorder:
    """A subscriber that also reads the store at each event, to show the change was committed before it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.events: list[JobTransition] = []
        self.stored: list[tuple[JobState, float, int]] = []
        """(state, progress, history rows) in the store at each event."""

    async def __call__(self, event: JobTransition) -> None:
        self.events.append(event)
        job = await self.store.get_job(event.job.id)
        assert job is not None
        self.stored.append((job.state, job.progress, len(await self.store.job_events(job.id))))

    def moves(self) -> list[tuple[JobState, JobState]]:
        return [(e.old_state, e.job.state) for e in self.events]


async def test_a_workers_changes_are_each_announced_once_after_the_commit(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path,
) -> None:  # fmt: skip
    provider.polls_to_finish = 2
    recorder = Recorder(store)
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    worker.transitions.subscribe(recorder)
    job = await service.enqueue(ALICE, request())
    await worker.drain()

    assert recorder.moves() == [
        (Q, SUB), (SUB, RUN), (RUN, RUN), (RUN, RUN), (RUN, DL), (DL, DLV), (DLV, DONE)
    ]  # fmt: skip
    assert [e.moved for e in recorder.events] == [True, True, False, False, True, True, True]
    assert [e.job.progress for e in recorder.events[2:4]] == [1 / 3, 2 / 3], "progress reports are changes too"
    # Each event saw the store already holding what it announces (state and progress), and an event keeps what
    # it said: later changes do not rewrite the job it carries.
    assert [(s, p) for s, p, _ in recorder.stored] == [(e.job.state, e.job.progress) for e in recorder.events]
    history = await store.job_events(job.id)
    steps = [e for e in recorder.events if not (e.old_state is RUN and e.job.state is RUN)]
    assert [(h.from_state, h.to_state) for h in history[1:]] == [(e.old_state, e.job.state) for e in steps], (
        "one announcement per recorded step, in order"
    )
    rows_seen = [rows for (_, _, rows), e in zip(recorder.stored, recorder.events, strict=True) if e in steps]
    assert rows_seen == list(range(2, len(history) + 1)), "each step's history row was written before its event"


async def test_a_failure_and_a_takeover_are_announced(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path,
) -> None:  # fmt: skip
    recorder = Recorder(store)
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w", lease_seconds=30)
    worker.transitions.subscribe(recorder)
    job = await service.enqueue(ALICE, request())
    assert await store.claim_job("dead", now=clock.now(), lease_seconds=30, limits=worker.limits) is not None
    clock.advance(31)
    provider.fail_with = "the model refused"
    provider.safe_resubmit = True
    await worker.drain()

    assert recorder.moves() == [(SUB, SUB), (SUB, RUN), (RUN, FAIL)], "a takeover keeps the state it found"
    assert reason_text(recorder.events[-1].job.error, ENGLISH) == "the model refused"
    assert recorder.stored[-1][0] is FAIL
    assert recorder.events[0].job.id == job.id


async def test_cancels_and_clears_are_announced_by_the_service(
    store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    transitions = Transitions()
    recorder = Recorder(store)
    transitions.subscribe(recorder)
    service = JobService(store, registry, clock, transitions=transitions)
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w", transitions=transitions)
    queued = await service.enqueue(ALICE, request("cancelled while queued"))
    active = await service.enqueue(ALICE, request("cancelled while running"))

    await service.cancel(queued.id, by_user=ALICE.user_id)
    assert recorder.moves() == [(Q, CANC)]
    claimed = await store.claim_job("w", now=clock.now(), lease_seconds=30, limits=worker.limits)
    assert claimed is not None and claimed.id == active.id
    await service.cancel(active.id, by_user=ALICE.user_id)
    assert recorder.moves()[1:] == [(SUB, SUB)], "the flag is a change within the state"
    assert recorder.events[1].job.cancel_requested and not recorder.events[1].moved
    cleared = [await service.enqueue(ALICE, request(f"cleared {n}")) for n in range(2)]
    await AdminService(store, service, clock).clear_queue(ALICE.guild_id)
    assert recorder.moves()[2:] == [(Q, CANC), (Q, CANC)]
    assert {e.job.id for e in recorder.events[2:]} == {j.id for j in cleared}
    assert [s for s, _, _ in recorder.stored] == [CANC, SUB, CANC, CANC], "announced after the commit"

    clock.advance(31)  # the flagged job's worker is gone: the next one takes it over and ends it
    await worker.drain()
    assert recorder.moves()[4:] == [(SUB, SUB), (SUB, CANC)]


async def test_a_failing_subscriber_stops_neither_the_job_nor_the_other_subscribers(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    async def broken(event: JobTransition) -> None:
        raise RuntimeError("a subscriber bug")

    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    recorder = Recorder(store)
    worker.transitions.subscribe(broken)
    worker.transitions.subscribe(recorder)
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is DONE
    assert recorder.moves()[-1] == (DLV, DONE)


def test_every_state_a_worker_holds_has_exactly_one_step() -> None:
    assert set(STEPS) == {SUB, RUN, DL, DLV}
    assert not any(state.is_terminal or state is Q for state in STEPS)
