"""Recovery: a restarted worker takes over a dead one's jobs at once, never a live one's, never its own; its loops
survive database errors; stopping hands jobs back at once but lets a post in flight finish."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.clock import FakeClock
from bot.domain import Job, JobState, WorkerInfo
from bot.errors import StoreError
from bot.jobs import liveness
from bot.jobs.notify import FileSink
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store, Transition
from tests.conftest import make_worker
from tests.fakes.scripted_provider import ScriptedProvider
from tests.test_worker import ALICE, left, request

LEASE = 30.0


def dead_pid() -> int:
    """The pid of a process that has really run and exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def other_worker(worker_id: str, clock: FakeClock, *, host: str | None = None, pid: int | None = None,
                 pid_started: str | None = None) -> WorkerInfo:  # fmt: skip
    return WorkerInfo(worker_id, host or liveness.host_key(), pid or dead_pid(), pid_started, clock.now(), clock.now())


async def claim_as(store: Store, worker_id: str, clock: FakeClock, worker: Worker) -> Job:
    """Claim the next job as another worker and take it as far as the provider (a remote id recorded)."""
    job = await store.claim_job(worker_id, now=clock.now(), lease_seconds=LEASE, limits=worker.limits)
    assert job is not None
    change = Transition(JobState.RUNNING, worker_id=worker_id, remote_id=f"remote-{job.id}")
    return await store.transition(job.id, change, now=clock.now())


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait for `condition` (the tests' clock is fake: this waits for the event loop and the database thread,
    never for time to pass)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.001)


class FlakyStore:
    """A real store whose named methods fail with `StoreError` for their next N calls (a database outage)."""

    def __init__(self, store: Store, **failures: int) -> None:
        self._store = store
        self.failures = dict(failures)
        self.failed: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if name not in self.failures:
            return method

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            if self.failures[name] > 0:
                self.failures[name] -= 1
                self.failed[name] = self.failed.get(name, 0) + 1
                raise StoreError(f"database error: injected failure of {name}")
            return await method(*args, **kwargs)

        return flaky


async def test_restart_takes_over_a_dead_workers_jobs_without_waiting_for_the_lease(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="new", lease_seconds=LEASE)
    await store.register_worker(other_worker("old", clock))
    await claim_as(store, "old", clock, worker)

    assert await worker.fill_slots() == 0, "before the registry is read, the lease still holds"
    await worker.register()
    await worker.drain()  # no clock advance: the dead worker's lease is not waited out

    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert any("taken over by new from old" in e.detail for e in await store.job_events(job.id))
    assert [w.id for w in await store.workers()] == ["new"], "the dead worker is forgotten"


def test_a_reused_pid_does_not_keep_a_dead_worker_alive(clock: FakeClock) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = liveness.process_started(sleeper.pid)
        assert started is not None
        alive = other_worker("a", clock, pid=sleeper.pid, pid_started=started)
        reused = other_worker("b", clock, pid=sleeper.pid, pid_started=str(int(started) - 1))
        assert not liveness.is_dead(alive, now=clock.now(), stale_after=LEASE)
        assert liveness.is_dead(reused, now=clock.now(), stale_after=LEASE)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert liveness.is_dead(other_worker("c", clock), now=clock.now(), stale_after=LEASE)


async def test_a_live_worker_on_another_machine_is_never_taken_over_early(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="here", lease_seconds=LEASE)
    # Its pid means nothing here (another pid namespace): only its heartbeat counts.
    await store.register_worker(other_worker("there", clock, host="elsewhere/boot/pid:[1]"))
    await claim_as(store, "there", clock, worker)

    clock.advance(LEASE / 2)
    await worker.register()
    assert await worker.fill_slots() == 0, "a live worker's job must not be taken"
    assert {w.id for w in await store.workers()} == {"here", "there"}

    clock.advance(LEASE)  # no heartbeat for longer than a lease: presumed dead
    assert await worker.reap_dead_workers() == [job.id]
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED


async def test_a_worker_never_takes_over_a_job_it_is_driving(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path,
) -> None:  # fmt: skip
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w1", lease_seconds=LEASE)
    provider.gate = asyncio.Event()
    assert await worker.fill_slots() == 1
    clock.advance(LEASE * 3)  # its renewals failed: the lease lapsed while it still drives the job
    assert await worker.fill_slots() == 0
    provider.gate.set()
    await worker.drain()
    events = await store.job_events(job.id)
    assert not [e for e in events if "taken over" in e.detail], [e.detail for e in events]
    assert len(sink.delivered) == 1


async def test_database_errors_do_not_end_the_worker_loop_or_lease_renewal(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path,
) -> None:  # fmt: skip
    flaky = FlakyStore(store, claim_job=3, heartbeat=2)
    worker = make_worker(flaky, registry, sink, clock, tmp_path, worker_id="w", lease_seconds=LEASE,  # type: ignore[arg-type]
                         idle_interval=0.001)  # fmt: skip
    rival = make_worker(store, registry, sink, clock, tmp_path, worker_id="rival", lease_seconds=LEASE)
    job = await service.enqueue(ALICE, request())
    provider.gate = asyncio.Event()
    running = asyncio.create_task(worker.run())
    try:

        async def driving() -> bool:
            current = await store.get_job(job.id)
            return current is not None and current.lease_owner == "w"

        await until(driving, "the worker claims the job after three failed claims")
        start = clock.now()

        async def leases_passed() -> bool:
            return clock.now() > start + 5 * LEASE

        # The heartbeat loop keeps running on the fake clock: five leases pass while the job is held.
        await until(leases_passed, "five leases pass")
        assert await rival.fill_slots() == 0, "the lease is still renewed after the failed heartbeats"
        assert flaky.failed == {"claim_job": 3, "heartbeat": 2}
        provider.gate.set()

        async def delivered() -> bool:
            current = await store.get_job(job.id)
            return current is not None and current.state is JobState.DELIVERED

        await until(delivered, "the job is delivered")
    finally:
        await worker.stop()
        await asyncio.wait_for(running, 10)
    assert await left(service) == 60 - 4


async def test_a_database_outage_mid_job_does_not_lose_the_step(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path,
) -> None:  # fmt: skip
    # The first record after the submit fails: dropping it would lose the remote id and, with it, the job.
    flaky = FlakyStore(store, transition=2)
    job = await service.enqueue(ALICE, request())
    worker = make_worker(flaky, registry, sink, clock, tmp_path, worker_id="w", lease_seconds=LEASE)  # type: ignore[arg-type]
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED, done.error
    assert provider.submitted == [job.id], "submitted once"
    assert await left(service) == 60 - 4


async def test_a_long_outage_leaves_the_job_for_a_retry_not_failed(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path,
) -> None:  # fmt: skip
    provider.polls_to_finish = 3
    flaky = FlakyStore(store, get_job=100)  # polls reload the job: the database is gone mid-poll
    job = await service.enqueue(ALICE, request())
    worker = make_worker(flaky, registry, sink, clock, tmp_path, worker_id="w", lease_seconds=LEASE)  # type: ignore[arg-type]
    await worker.drain()
    stuck = await store.get_job(job.id)
    assert stuck is not None and stuck.state is JobState.RUNNING, "an outage is not the job's fault"
    flaky.failures["get_job"] = 0
    clock.advance(LEASE + 1)
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert await left(service) == 60 - 4


async def test_stopping_hands_jobs_back_at_once(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path,
) -> None:  # fmt: skip
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w", lease_seconds=LEASE,
                         idle_interval=0.001)  # fmt: skip
    provider.gate = asyncio.Event()
    running = asyncio.create_task(worker.run())

    async def polling() -> bool:
        current = await store.get_job(job.id)
        return current is not None and current.state is JobState.RUNNING

    await until(polling, "the job is running")
    await worker.stop()
    await asyncio.wait_for(running, 10)
    handed_back = await store.get_job(job.id)
    assert handed_back is not None and handed_back.lease_owner is None
    assert await store.workers() == [], "a stopped worker leaves the registry"

    provider.gate.set()
    successor = make_worker(store, registry, sink, clock, tmp_path, worker_id="next", lease_seconds=LEASE)
    assert await successor.fill_slots() == 1, "taken over at once, at the same moment"
    await successor.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED


class SlowSink(FileSink):
    """Delivers only when the test opens the gate, so a stop can arrive while a post is in flight."""

    def __init__(self, target: Path) -> None:
        super().__init__(target)
        self.posting = asyncio.Event()
        self.gate = asyncio.Event()

    async def deliver(self, job: Job, clip: Path) -> int | None:
        self.posting.set()
        await self.gate.wait()
        return await super().deliver(job, clip)


async def test_stopping_lets_a_post_in_flight_finish(
    service: JobService, store: Store, registry: ProviderRegistry, clock: FakeClock, tmp_path: Path
) -> None:
    sink = SlowSink(tmp_path / "out")
    (tmp_path / "out").mkdir()
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w", lease_seconds=LEASE,
                         idle_interval=0.001)  # fmt: skip
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(sink.posting.wait(), 10)
    await worker.stop()
    for _ in range(50):
        await asyncio.sleep(0)
    assert not running.done(), "the worker waits for the post in flight"
    sink.gate.set()
    await asyncio.wait_for(running, 10)
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert list(sink.delivered) == [job.id]


async def test_a_busy_worker_looks_for_lapsed_leases_once_a_second(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    """Each claim need not look for lapsed leases (a statement per claim): a worker looks at most once a second,
    so a dead worker's job is taken over within a second of its lease lapsing, not at the next claim."""
    job = await service.enqueue(ALICE, request())
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="new", lease_seconds=LEASE)
    await claim_as(store, "old", clock, worker)  # "old" is not registered: no reaping, only its lease counts

    clock.advance(LEASE - 0.5)
    assert await worker.fill_slots() == 0, "the lease holds: this look finds nothing"
    clock.advance(0.75)  # the lease has lapsed, but the last look was under a second ago
    assert await worker.fill_slots() == 0
    clock.advance(0.25)
    assert await worker.fill_slots() == 1, "a second after the last look"
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
