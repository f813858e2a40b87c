"""Drives jobs from claim to delivery: submit → poll → download → deliver, under a renewable lease.

Every step reads the job's recorded state first and records its outcome before the next side effect, so a
worker that dies anywhere leaves a job the next worker can finish: a job with a remote id is polled again,
never submitted again; a job marked delivered is never delivered again; a job whose post was begun is looked
for in the channel before it is posted again.

The worker registers itself with a heartbeat and its pid, so a restarted process takes over the jobs of a dead
one on the same host at once (see `liveness`). Its loops survive any single error: they log, back off and carry
on. On shutdown, a job in the middle of a side effect that cannot be repeated blindly (a submit, a post) gets a
bounded grace period to finish it; every other job is handed back at once for the next worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from bot.clock import Clock
from bot.domain import Job, JobState
from bot.errors import DeliveryError, ProviderError, RemoteJobLost, StoreError
from bot.faults import crash_point
from bot.jobs import liveness
from bot.jobs.notify import Delivery
from bot.jobs.retry import RetryPolicy
from bot.jobs.staging import StagingDirs, discard_job_files
from bot.providers.base import PollResult, RemoteJob, RemoteState, VideoProvider
from bot.providers.registry import ProviderRegistry
from bot.store.base import ClaimLimits, InvalidTransition, LeaseLost, Store, Transition

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_POLL_SECONDS = 2 * 60 * 60
"""A remote job still unfinished after two hours is given up (and refunded)."""


class JobFailed(Exception):
    """A step failed for good; the message is for the member."""


class Worker:
    def __init__(
        self,
        store: Store,
        registry: ProviderRegistry,
        delivery: Delivery,
        clock: Clock,
        *,
        staging_dir: Path,
        concurrency: int = 4,
        lease_seconds: float = 60.0,
        global_limit: int | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float = 2.0,
        idle_interval: float = 1.0,
        worker_id: str | None = None,
        heartbeat_interval: float | None = None,
        shutdown_grace: float = 30.0,
    ) -> None:
        self.store = store
        self.registry = registry
        self.delivery = delivery
        self.clock = clock
        self.staging_dir = staging_dir
        self.dirs = StagingDirs(staging_dir.parent)
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
        self.limits = ClaimLimits(
            provider_limits=registry.concurrency_limits(),
            global_limit=global_limit,
            providers=frozenset(p.name for p in registry.providers),
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._critical: set[str] = set()
        self._wake = asyncio.Event()
        self._stopping = False

    # --- the loop -------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Something was queued or finished: look for work now instead of at the next idle tick."""
        self._wake.set()

    async def run(self) -> None:
        keeper: asyncio.Task[None] | None = None
        try:
            await self._survive("register", self.register)
            keeper = asyncio.create_task(self._keep_alive_forever(), name=f"{self.worker_id}-heartbeat")
            failures = 0
            while not self._stopping:
                try:
                    await self.fill_slots()
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("worker %s: claiming failed (%d in a row); backing off", self.worker_id, failures)
                    await self.clock.sleep(self.retry.delay(failures))
                    continue
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
        """Claim jobs while there are free slots; returns how many were started."""
        started = 0
        while len(self._tasks) < self.concurrency and not self._stopping:
            job = await self.store.claim_job(
                self.worker_id, now=self.clock.now(), lease_seconds=self.lease_seconds, limits=self.limits,
                holding=tuple(self._tasks),
            )  # fmt: skip
            if job is None:
                break
            if job.id in self._tasks:  # never drive one job twice, whatever the store returned
                break
            crash_point("claimed")
            task = asyncio.create_task(self.drive(job), name=f"job-{job.id}")
            self._tasks[job.id] = task
            task.add_done_callback(self._finished)
            started += 1
        return started

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
            self.wake()
        return freed

    async def _survive(self, what: str, call: Callable[[], Awaitable[None]], *, attempts: int | None = None) -> None:
        """Run `call`, retrying with backoff on any error (forever unless `attempts` is given): one failing
        database round trip must not end a loop that the whole bot depends on."""
        failures = 0
        while not self._stopping:
            try:
                await call()
                return
            except Exception:
                failures += 1
                log.exception("worker %s: %s failed (%d in a row)", self.worker_id, what, failures)
                if attempts is not None and failures >= attempts:
                    return
                await self.clock.sleep(self.retry.delay(failures))

    # --- one job --------------------------------------------------------------------------------------
    async def drive(self, job: Job) -> None:
        """Take a claimed job to its end, step by step, from whatever state it was left in."""
        provider = self.registry.provider(job.provider)
        try:
            while not job.state.is_terminal:
                if self._stopping:
                    await self.store.release_lease(job.id, self.worker_id)
                    return
                if job.cancel_requested:
                    job = await self._cancel(job, provider)
                    break
                await self._notify(job)
                job = await self._step(job, provider)
        except LeaseLost:
            log.warning("job %s: another worker holds it now", job.id)
            return
        except StoreError as exc:
            # The database is down or busy: the job is fine where it is. Once its lease lapses, this or another
            # worker takes it over and carries on from the recorded state.
            log.warning("job %s: database unavailable (%s); it will be resumed", job.id, exc)
            return
        except JobFailed as failure:
            job = await self._end(job, JobState.FAILED, str(failure))
        except Exception:
            log.exception("job %s: unexpected error", job.id)
            job = await self._end(job, JobState.FAILED, f"Something went wrong on our side (reference `{job.id[:8]}`).")
        if job.state.is_terminal:
            discard_job_files(job, self.dirs)
            await self._notify(job)

    async def _step(self, job: Job, provider: VideoProvider) -> Job:
        if job.state is JobState.SUBMITTING:
            return await self._submit(job, provider)
        if job.state is JobState.RUNNING:
            return await self._wait_remote(job, provider)
        if job.state is JobState.DOWNLOADING:
            return await self._download(job, provider)
        if job.state is JobState.DELIVERING:
            return await self._deliver(job)
        raise InvalidTransition(f"job {job.id} is {job.state}, which a worker does not drive")

    async def _submit(self, job: Job, provider: VideoProvider) -> Job:
        if job.remote_id is None and job.attempts > 0 and not provider.safe_resubmit:
            # A worker died between sending the create and recording its answer: the provider may be making
            # the video already, and sending it again could cost twice.
            raise JobFailed("The video service was interrupted while taking this job; your credits are returned.")
        with self._side_effect(job):
            remote_id = job.remote_id or await self._retrying(
                job, "submit", lambda: provider.submit(job.id, job.request)
            )
            crash_point("submitted")
            job = await self._move(job, JobState.RUNNING, remote_id=remote_id, detail=f"remote id {remote_id}")
        crash_point("running")
        return job

    async def _wait_remote(self, job: Job, provider: VideoProvider) -> Job:
        deadline = self.clock.now() + MAX_POLL_SECONDS
        while True:
            result = await self._poll(job, provider)
            crash_point("polled")
            if result.state is RemoteState.SUCCEEDED:
                return await self._move(job, JobState.DOWNLOADING)
            if result.state is RemoteState.CANCELLED:
                return await self._end(job, JobState.CANCELLED, "cancelled at the video service")
            if result.state is RemoteState.FAILED:
                raise JobFailed(result.error or "The video service could not make this video.")
            if result.progress is not None and result.progress != job.progress:
                await self.store.set_progress(job.id, self.worker_id, result.progress, now=self.clock.now())
                job.progress = result.progress
                await self._notify(job)
            if self.clock.now() >= deadline:
                raise JobFailed("The video service took too long; your credits are returned.")
            await self.clock.sleep(result.poll_after or self.poll_interval)
            job = await self._reload(job)
            if job.cancel_requested or job.state is not JobState.RUNNING or self._stopping:
                return job

    async def _download(self, job: Job, provider: VideoProvider) -> Job:
        result = await self._poll(job, provider)  # a fresh result: output URLs may expire
        if result.state in (RemoteState.QUEUED, RemoteState.RUNNING):
            # The provider is making it again (an offline render restarted after a crash): wait once more.
            return await self._move(job, JobState.RUNNING, detail="result not ready after all; waiting again")
        if result.state is not RemoteState.SUCCEEDED:
            raise JobFailed(result.error or "The finished video is no longer available at the video service.")
        dest = self.staging_dir / f"{job.id}.mp4"
        dest.parent.mkdir(parents=True, exist_ok=True)
        remote = self._remote(job)
        await self._retrying(job, "download", lambda: provider.download(remote, result, dest))
        crash_point("downloaded")
        job = await self._move(job, JobState.DELIVERING, result_path=str(dest))
        crash_point("delivering")
        return job

    async def _deliver(self, job: Job) -> Job:
        """Post the clip exactly once: record the intent before each post, and after any attempt that may have
        gone through (an earlier life of this job, an ambiguous failure) look for the post before posting again."""
        if job.delivered_message_id is not None:
            return await self._move(job, JobState.DELIVERED, detail="already delivered")
        with self._side_effect(job):
            message_id: int | None = None
            for attempt in range(1, self.retry.max_attempts + 1):
                try:
                    if job.post_attempted_at is not None:
                        found = await self.delivery.find_post(job)
                        if found is not None:
                            log.info("job %s: found the clip posted by an earlier attempt (%s)", job.id, found)
                            message_id = found
                            break
                    clip = Path(job.result_path or self.staging_dir / f"{job.id}.mp4")
                    if not clip.exists():
                        raise JobFailed("The finished video was lost before it could be posted; your credits are "
                                        "returned.")  # fmt: skip
                    job = await self._move(job, JobState.DELIVERING, post_attempted_at=self.clock.now(),
                                           detail=f"posting, try {attempt}")  # fmt: skip
                    crash_point("post_intent")
                    message_id = await self.delivery.deliver(job, clip)
                    break
                except DeliveryError as exc:
                    if not exc.retryable or attempt == self.retry.max_attempts:
                        raise JobFailed(exc.user_message) from exc
                    log.warning("job %s: delivery failed (%s), try %d", job.id, exc, attempt + 1)
                    await self.clock.sleep(self.retry.delay(attempt))
            crash_point("posted")
            job = await self._move(job, JobState.DELIVERED, delivered_message_id=message_id)
        crash_point("recorded")
        return job

    async def _cancel(self, job: Job, provider: VideoProvider) -> Job:
        if job.remote_id is not None and job.state in (JobState.RUNNING, JobState.SUBMITTING):
            try:
                await provider.cancel(self._remote(job))
            except ProviderError as exc:
                log.warning("job %s: provider could not cancel (%s)", job.id, exc)
        return await self._end(job, JobState.CANCELLED, "cancelled by request")

    # --- helpers --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _side_effect(self, job: Job) -> Iterator[None]:
        """Mark a step that must not be cut short by a shutdown (it would be repeated, or lost, after it)."""
        self._critical.add(job.id)
        try:
            yield
        finally:
            self._critical.discard(job.id)

    async def _poll(self, job: Job, provider: VideoProvider) -> PollResult:
        try:
            return await self._retrying(job, "poll", lambda: provider.poll(self._remote(job)))
        except RemoteJobLost as exc:
            raise JobFailed(exc.user_message) from exc

    async def _retrying(self, job: Job, step: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return await call()
            except ProviderError as exc:
                if not exc.retryable or attempt == self.retry.max_attempts:
                    raise JobFailed(exc.user_message) from exc
                wait = self.retry.delay(attempt, exc.retry_after)
                log.warning("job %s: %s failed (%s), try %d in %.1fs", job.id, step, exc, attempt + 1, wait)
                await self.clock.sleep(wait)
        raise AssertionError("unreachable")

    async def _move(self, job: Job, state: JobState, **fields: object) -> Job:
        """Record a step. Retried through a short outage: the record often follows a side effect (a submit, a
        post) whose result would otherwise be lost with it."""
        change = Transition(state, worker_id=self.worker_id, **fields)  # type: ignore[arg-type]
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                moved = await self.store.transition(job.id, change, now=self.clock.now())
                break
            except StoreError as exc:
                if attempt == self.retry.max_attempts:
                    raise
                log.warning("job %s: recording %s failed (%s); retrying", job.id, state.value, exc)
                await self.clock.sleep(self.retry.delay(attempt))
        log.info("job %s: %s → %s (guild %s, member %s, %s)", job.id, job.state.value, state.value, job.guild_id,
                 job.user_id, job.model)  # fmt: skip
        return moved

    async def _end(self, job: Job, state: JobState, reason: str) -> Job:
        """Fail or cancel with a refund, whatever state the job was in."""
        log.info("job %s: %s (%s)", job.id, state.value, reason)
        change = Transition(state, worker_id=self.worker_id, refund=True, error=reason)
        try:
            return await self.store.transition(job.id, change, now=self.clock.now())
        except (InvalidTransition, LeaseLost):
            return await self._reload(job)
        except StoreError as exc:
            log.warning("job %s: could not record that it %s (%s); it will be resumed", job.id, state.value, exc)
            return job

    async def _reload(self, job: Job) -> Job:
        fresh = await self.store.get_job(job.id)
        if fresh is None:
            raise InvalidTransition(f"job {job.id} vanished")
        return fresh

    async def _notify(self, job: Job) -> None:
        try:
            await self.delivery.job_updated(job)
        except Exception:
            log.exception("job %s: status update failed", job.id)

    @staticmethod
    def _remote(job: Job) -> RemoteJob:
        assert job.remote_id is not None
        return RemoteJob(job_id=job.id, remote_id=job.remote_id, request=job.request)
