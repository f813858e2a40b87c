"""Drives jobs from claim to delivery under a renewable lease, one step per state (see `steps`).

The worker claims jobs while it has free slots and runs each one's steps until the job ends; it records every
step in the store and then tells the subscribers of `Transitions` (status messages, later metrics and the
audit trail). Every retried call (a provider call, a post, the record of a step through a database outage, the
worker's own loops) goes through the one `retrying` loop with the `RetryPolicy`'s backoff.

The worker registers itself with a heartbeat and its pid, so a restarted process takes over the jobs of a dead
one on the same host at once (see `liveness`). Its loops survive any single error: they log, back off and carry
on. On shutdown, a job in the middle of a side effect that cannot be repeated blindly (a submit, a post) gets a
bounded grace period to finish it; every other job is handed back at once for the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from bot.clock import Clock
from bot.domain import Job, JobState
from bot.errors import (
    CredentialsRejected,
    InvalidTransition,
    JobFailed,
    LeaseLost,
    ProviderBilling,
    ProviderError,
    ProviderUnavailable,
    StoreError,
)
from bot.errors.said import Said
from bot.faults import crash_point
from bot.i18n.ids import N_
from bot.jobs import liveness
from bot.jobs.breaker import CircuitBreaker
from bot.jobs.notify import Delivery, Transitions
from bot.jobs.refusals import count_provider_refusal
from bot.jobs.retry import FOREVER, RetryPolicy, retrying
from bot.jobs.staging import StagingDirs, discard_job_files, discard_stored_input
from bot.jobs.steps import STEPS, cancel
from bot.providers.registry import ProviderRegistry
from bot.store.base import ClaimLimits, JobStore, Transition

log = logging.getLogger(__name__)
T = TypeVar("T")

CLAIMS_AT_ONCE = 4
"""Claims one worker makes side by side (see `Worker.fill_slots`)."""
TAKEOVER_LOOK_EVERY = 1.0
"""Seconds between a worker's looks for jobs whose lease lapsed (their worker died)."""
MAX_POLL_SECONDS = 2 * 60 * 60
"""A remote job still unfinished after two hours is given up (and refunded)."""


class Worker:
    def __init__(
        self,
        store: JobStore,
        registry: ProviderRegistry,
        delivery: Delivery,
        clock: Clock,
        *,
        staging_dir: Path,
        transitions: Transitions | None = None,
        concurrency: int = 4,
        lease_seconds: float = 60.0,
        global_limit: int | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float = 0.5,
        idle_interval: float = 1.0,
        worker_id: str | None = None,
        heartbeat_interval: float | None = None,
        shutdown_grace: float = 30.0,
        max_poll_seconds: float = MAX_POLL_SECONDS,
    ) -> None:
        self.store = store
        self.registry = registry
        self.delivery = delivery
        self.clock = clock
        self.staging_dir = staging_dir
        self.dirs = StagingDirs(staging_dir.parent)
        self.transitions = transitions or Transitions()
        """Told of every change this worker commits to a job (the claim, each step, the end, progress)."""
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self.heartbeat_interval = heartbeat_interval or min(5.0, lease_seconds / 3)
        """Leases are renewed, the heartbeat written and dead workers looked for this often."""
        self.shutdown_grace = shutdown_grace
        """Seconds a submit or a post in flight may take to finish when the worker is stopped."""
        self.max_poll_seconds = max_poll_seconds
        self.breaker = CircuitBreaker(clock)
        """Skips a provider for new submits while it keeps failing (what this process sees)."""
        self.on_provider_error: Callable[[str, ProviderError], None] | None = None
        """Told of every failed provider call, retried or not (metrics count them by provider and kind)."""
        self.limits = ClaimLimits(
            provider_limits=registry.concurrency_limits(),
            global_limit=global_limit,
            providers=frozenset(p.name for p in registry.providers),
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._looked_for_lapsed = float("-inf")
        self._critical: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    # --- the loop -------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Something was queued or finished: look for work now instead of at the next idle tick."""
        self._wake.set()

    async def run(self) -> None:
        keeper: asyncio.Task[None] | None = None
        try:
            await self._survive("register", self.register)
            keeper = asyncio.create_task(self._keep_alive_forever(), name=f"{self.worker_id}-heartbeat")
            while not self._stopping:
                await self._survive("claiming", self.fill_slots)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle_interval)
        finally:
            if keeper is not None:
                keeper.cancel()
            await self._shutdown()

    async def register(self) -> None:
        """Join the registry, then free the jobs of workers that are provably dead (a restart's predecessor)."""
        await self.store.register_worker(liveness.this_process(self.worker_id, self.clock.now()))
        await self.reap_dead_workers()

    async def fill_slots(self) -> int:
        """Claim jobs while there are free slots; returns how many were started. Up to CLAIMS_AT_ONCE claims run
        side by side: each is a transaction of several round trips, and one at a time would cap a process at
        one such chain per claim however many slots are free (claimers never take the same job)."""
        started = 0
        while (free := self.concurrency - len(self._tasks)) > 0 and not self._stopping:
            holding = tuple(self._tasks)
            batch = min(free, CLAIMS_AT_ONCE)
            claims = await asyncio.gather(*(self._claim(holding) for _ in range(batch)), return_exceptions=True)
            for claimed in claims:
                if isinstance(claimed, Job) and claimed.id not in self._tasks:  # never drive one job twice
                    crash_point("claimed")
                    task = asyncio.create_task(self.drive(claimed), name=f"job-{claimed.id}")
                    self._tasks[claimed.id] = task
                    task.add_done_callback(self._finished)
                    started += 1
            if failed := next((c for c in claims if isinstance(c, BaseException)), None):
                raise failed  # after starting what the other claims took: their jobs are not left to a lease
            if any(claimed is None for claimed in claims):
                break  # nothing more to claim now
        return started

    async def _claim(self, holding: tuple[str, ...]) -> Job | None:
        now = self.clock.now()
        # Lapsed leases are rare (a worker died) and a lease lasts many seconds: looking for them once a second
        # takes them over soon enough, and spares each of a busy worker's claims a statement.
        take_over = now - self._looked_for_lapsed >= TAKEOVER_LOOK_EVERY or now < self._looked_for_lapsed
        if take_over:
            self._looked_for_lapsed = now
        return await self.store.claim_job(
            self.worker_id, now=now, lease_seconds=self.lease_seconds, limits=self.limits, holding=holding,
            take_over=take_over,
        )  # fmt: skip

    async def drain(self) -> None:
        """Run until nothing is claimable and nothing is running (tests, benchmarks, `generate`)."""
        while True:
            await self.fill_slots()
            if not self._tasks:
                return
            await asyncio.wait(list(self._tasks.values()), return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        """Stop claiming; `run` then hands its jobs back (after the grace period for side effects in flight)."""
        self._stopping = True
        self._wake.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        job_id = task.get_name().removeprefix("job-")
        self._tasks.pop(job_id, None)
        self._wake.set()

    async def _shutdown(self) -> None:
        """Let submits and posts in flight finish (bounded), stop everything else, and hand every job back so
        the next worker picks it up at once rather than after the lease."""
        tasks = dict(self._tasks)
        for job_id, task in tasks.items():
            if job_id not in self._critical:
                task.cancel()
        if tasks:
            _, late = await asyncio.wait(tasks.values(), timeout=self.shutdown_grace)
            for task in late:
                log.warning("worker %s: %s still busy after %.0fs; stopping it", self.worker_id, task.get_name(),
                            self.shutdown_grace)  # fmt: skip
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        for job_id in tasks:
            with contextlib.suppress(Exception):
                await self.store.release_lease(job_id, self.worker_id)
        with contextlib.suppress(Exception):
            await self.store.unregister_worker(self.worker_id)

    # --- staying alive --------------------------------------------------------------------------------
    async def _keep_alive_forever(self) -> None:
        while True:
            await self.clock.sleep(self.heartbeat_interval)
            await self._survive("heartbeat", self.keep_alive, attempts=1)

    async def keep_alive(self) -> None:
        await self.renew_leases()
        await self.reap_dead_workers()

    async def renew_leases(self) -> None:
        held = list(self._tasks)
        now = self.clock.now()
        kept = await self.store.heartbeat(self.worker_id, held, now=now, until=now + self.lease_seconds)
        for job_id in set(held) - kept:
            task = self._tasks.get(job_id)
            if task is not None and not task.done():
                log.warning("job %s: lease lost, stopping here", job_id)
                task.cancel()

    async def reap_dead_workers(self) -> list[str]:
        now = self.clock.now()
        dead = [
            w for w in await self.store.workers()
            if w.id != self.worker_id and liveness.is_dead(w, now=now, stale_after=self.lease_seconds)
        ]  # fmt: skip
        if not dead:
            return []
        freed = await self.store.reap_workers([w.id for w in dead])
        for w in dead:
            log.warning("worker %s (pid %d on %s) is dead; its jobs are free to take over", w.id, w.pid,
                        w.host.split("/", 1)[0])  # fmt: skip
        if freed:
            log.info("%d job(s) of dead workers freed: %s", len(freed), ", ".join(freed))
            self._looked_for_lapsed = float("-inf")  # their leases lapsed just now: take them at the next claim
            self.wake()
        return freed

    async def _survive(self, what: str, call: Callable[[], Awaitable[object]], *, attempts: int = FOREVER) -> None:
        """Run `call`, retrying with backoff on any error (forever unless `attempts` is given) until the worker
        stops: one failing database round trip must not end a loop that the whole bot depends on."""
        try:
            await retrying(call, what=f"worker {self.worker_id}: {what}", policy=self.retry, clock=self.clock,
                           attempts=attempts, keep_going=lambda: not self._stopping, trace=True)  # fmt: skip
        except Exception:
            log.exception("worker %s: %s failed", self.worker_id, what)

    # --- one job --------------------------------------------------------------------------------------
    async def drive(self, job: Job) -> None:
        """Take a claimed job to its end, step by step, from whatever state it was left in."""
        # A first claim moved the job out of the queue; a takeover (a later attempt) left its state as it was.
        await self.transitions.fire(job, JobState.QUEUED if job.attempts == 0 else job.state)
        try:
            while not job.state.is_terminal:
                if self._stopping:
                    await self.store.release_lease(job.id, self.worker_id)
                    return
                provider = self.registry.provider(job.provider)  # a job on an alias may move to another
                if job.cancel_requested:
                    job = await cancel(self, job, provider)
                    break
                step = STEPS.get(job.state)
                if step is None:
                    raise InvalidTransition(job.id, job.state)  # not a state a worker drives
                job = await step(self, job, provider)
        except LeaseLost:
            log.warning("job %s: another worker holds it now", job.id)
            return
        except StoreError as exc:
            # The database is down or busy: the job is fine where it is. Once its lease lapses, this or another
            # worker takes it over and carries on from the recorded state.
            log.warning("job %s: database unavailable (%s); it will be resumed", job.id, exc)
            return
        except JobFailed as failure:
            job = await self.end(job, JobState.FAILED, failure.reason)
            await count_provider_refusal(self.store, job, failure, at=self.clock.now())  # the server stats
        except Exception:
            log.exception("job %s: unexpected error", job.id)
            job = await self.end(job, JobState.FAILED, Said(N_("failure.internal"), {"reference": job.id[:8]}))
        if job.state.is_terminal:
            discard_job_files(job, self.dirs)
            await discard_stored_input(self.store, job.request, job_id=job.id)

    # --- what the steps use ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def side_effect(self, job: Job) -> Iterator[None]:
        """Mark a step that must not be cut short by a shutdown (it would be repeated, or lost, after it)."""
        self._critical.add(job.id)
        try:
            yield
        finally:
            self._critical.discard(job.id)

    async def retrying(self, job: Job, what: str, call: Callable[[], Awaitable[T]], *, retry_on: type[Exception]) -> T:
        return await retrying(call, what=f"job {job.id}: {what}", policy=self.retry, clock=self.clock,
                              retry_on=retry_on)  # fmt: skip

    async def provider_call(
        self, job: Job, what: str, call: Callable[[], Awaitable[T]], *, until: float | None = None
    ) -> T:
        """A provider call, retried while the provider says it may pass (a fixed number of tries, or until the
        clock reaches `until`); a final error fails the job with the provider's own words. Outage-like failures
        feed the provider's circuit breaker, and a submit skips a provider whose breaker is open."""
        provider = job.provider

        async def attempt() -> T:
            if what == "submit" and self.breaker.is_open(provider):
                raise ProviderUnavailable(provider, self.breaker.reopens_in(provider))
            try:
                result = await call()
            except ProviderError as exc:
                if exc.retryable:
                    self.breaker.failed(provider)
                if self.on_provider_error is not None:
                    self.on_provider_error(provider, exc)
                raise
            self.breaker.succeeded(provider)
            return result

        try:
            if until is None:
                return await self.retrying(job, what, attempt, retry_on=ProviderError)
            return await retrying(attempt, what=f"job {job.id}: {what}", policy=self.retry, clock=self.clock,
                                  retry_on=ProviderError, attempts=FOREVER,
                                  keep_going=lambda: self.clock.now() < until and not self.stopping)  # fmt: skip
        except ProviderError as exc:
            log.log(logging.ERROR if isinstance(exc, CredentialsRejected | ProviderBilling) else logging.INFO,
                    "job %s: %s failed for good: %s", job.id, what, exc)  # fmt: skip
            raise JobFailed(exc.user_message) from exc

    async def move(self, job: Job, state: JobState, **fields: object) -> Job:
        """Record a step. Retried through a short outage: the record often follows a side effect (a submit, a
        post) whose result would otherwise be lost with it."""
        change = Transition(state, worker_id=self.worker_id, **fields)  # type: ignore[arg-type]
        moved = await retrying(
            lambda: self.store.transition(job.id, change, now=self.clock.now()),
            what=f"job {job.id}: recording {state.value}", policy=self.retry, clock=self.clock, retry_on=StoreError,
            transient=lambda exc: not isinstance(exc, LeaseLost | InvalidTransition),
        )  # fmt: skip
        await self.transitions.fire(moved, job.state)  # which logs the move, once (`notify.log_move`)
        return moved

    async def end(self, job: Job, state: JobState, reason: Said) -> Job:
        """Fail or cancel with a refund, whatever state the job was in. The reason is stored as its id and facts,
        and put in words by whoever shows it."""
        change = Transition(state, worker_id=self.worker_id, refund=True, error=str(reason))
        try:
            ended = await self.store.transition(job.id, change, now=self.clock.now())
        except (InvalidTransition, LeaseLost):
            return await self.reload(job)
        except StoreError as exc:
            log.warning("job %s: could not record that it %s (%s); it will be resumed", job.id, state.value, exc)
            return job
        await self.transitions.fire(ended, job.state)
        return ended

    async def report_progress(
        self, job: Job, progress: float, *, waiting: bool = False, position: int | None = None
    ) -> Job:
        await self.store.set_progress(job.id, self.worker_id, progress, remote_waiting=waiting,
                                      remote_position=position, now=self.clock.now())  # fmt: skip
        # A new job: an event already fired keeps what it said.
        job = dataclasses.replace(job, progress=progress, remote_waiting=waiting, remote_position=position)
        await self.transitions.fire(job, job.state)
        return job

    async def reload(self, job: Job) -> Job:
        fresh = await self.store.get_job(job.id)
        if fresh is None:
            raise InvalidTransition(job.id)  # vanished
        return fresh
