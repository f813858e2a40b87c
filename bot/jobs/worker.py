"""Drives jobs from claim to delivery: submit → poll → download → deliver, under a renewable lease.

Every step reads the job's recorded state first and records its outcome before the next side effect, so a
worker that dies anywhere leaves a job the next worker can finish: a job with a remote id is polled again,
never submitted again; a job marked delivered is never delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from bot.clock import Clock
from bot.domain import Job, JobState
from bot.errors import DeliveryError, ProviderError, RemoteJobLost
from bot.jobs.notify import Delivery
from bot.jobs.retry import RetryPolicy
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
    ) -> None:
        self.store = store
        self.registry = registry
        self.delivery = delivery
        self.clock = clock
        self.staging_dir = staging_dir
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.retry = retry or RetryPolicy()
        self.poll_interval = poll_interval
        self.idle_interval = idle_interval
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.limits = ClaimLimits(
            provider_limits=registry.concurrency_limits(),
            global_limit=global_limit,
            providers=frozenset(p.name for p in registry.providers),
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    # --- the loop -------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Something was queued or finished: look for work now instead of at the next idle tick."""
        self._wake.set()

    async def run(self) -> None:
        renewer = asyncio.create_task(self._renew_leases_forever())
        try:
            while not self._stopping:
                await self.fill_slots()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.idle_interval)
        finally:
            renewer.cancel()
            await self._shutdown()

    async def fill_slots(self) -> int:
        """Claim jobs while there are free slots; returns how many were started."""
        started = 0
        while len(self._tasks) < self.concurrency:
            job = await self.store.claim_job(
                self.worker_id, now=self.clock.now(), lease_seconds=self.lease_seconds, limits=self.limits
            )
            if job is None:
                break
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
        self._stopping = True
        self._wake.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        job_id = task.get_name().removeprefix("job-")
        self._tasks.pop(job_id, None)
        self._wake.set()

    async def _shutdown(self) -> None:
        """Hand running jobs back so another worker picks them up at once rather than after the lease."""
        for job_id, task in list(self._tasks.items()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await self.store.release_lease(job_id, self.worker_id)

    async def _renew_leases_forever(self) -> None:
        while True:
            await self.clock.sleep(self.lease_seconds / 3)
            await self.renew_leases()

    async def renew_leases(self) -> None:
        held = list(self._tasks)
        kept = await self.store.renew_leases(self.worker_id, held, self.clock.now() + self.lease_seconds)
        for job_id in set(held) - kept:
            log.warning("job %s: lease lost, stopping here", job_id)
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()

    # --- one job --------------------------------------------------------------------------------------
    async def drive(self, job: Job) -> None:
        """Take a claimed job to its end, step by step, from whatever state it was left in."""
        provider = self.registry.provider(job.provider)
        try:
            while not job.state.is_terminal:
                if job.cancel_requested:
                    job = await self._cancel(job, provider)
                    break
                await self._notify(job)
                job = await self._step(job, provider)
        except LeaseLost:
            log.warning("job %s: another worker holds it now", job.id)
            return
        except JobFailed as failure:
            job = await self._end(job, JobState.FAILED, str(failure))
        except Exception:
            log.exception("job %s: unexpected error", job.id)
            job = await self._end(job, JobState.FAILED, f"Something went wrong on our side (reference `{job.id[:8]}`).")
        if job.state.is_terminal:
            self._discard_staged(job)
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
        remote_id = job.remote_id or await self._retrying(job, "submit", lambda: provider.submit(job.id, job.request))
        return await self._move(job, JobState.RUNNING, remote_id=remote_id, detail=f"remote id {remote_id}")

    async def _wait_remote(self, job: Job, provider: VideoProvider) -> Job:
        deadline = self.clock.now() + MAX_POLL_SECONDS
        while True:
            result = await self._poll(job, provider)
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
            if job.cancel_requested or job.state is not JobState.RUNNING:
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
        return await self._move(job, JobState.DELIVERING, result_path=str(dest))

    async def _deliver(self, job: Job) -> Job:
        if job.delivered_message_id is not None:
            return await self._move(job, JobState.DELIVERED, detail="already delivered")
        clip = Path(job.result_path or self.staging_dir / f"{job.id}.mp4")
        if not clip.exists():
            raise JobFailed("The finished video was lost before it could be posted; your credits are returned.")
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                message_id = await self.delivery.deliver(job, clip)
                break
            except DeliveryError as exc:
                if not exc.retryable or attempt == self.retry.max_attempts:
                    raise JobFailed(exc.user_message) from exc
                log.warning("job %s: delivery failed (%s), retrying", job.id, exc)
                await self.clock.sleep(self.retry.delay(attempt))
        return await self._move(job, JobState.DELIVERED, delivered_message_id=message_id)

    async def _cancel(self, job: Job, provider: VideoProvider) -> Job:
        if job.remote_id is not None and job.state in (JobState.RUNNING, JobState.SUBMITTING):
            try:
                await provider.cancel(self._remote(job))
            except ProviderError as exc:
                log.warning("job %s: provider could not cancel (%s)", job.id, exc)
        return await self._end(job, JobState.CANCELLED, "cancelled by request")

    # --- helpers --------------------------------------------------------------------------------------
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
        change = Transition(state, worker_id=self.worker_id, **fields)  # type: ignore[arg-type]
        return await self.store.transition(job.id, change, now=self.clock.now())

    async def _end(self, job: Job, state: JobState, reason: str) -> Job:
        """Fail or cancel with a refund, whatever state the job was in."""
        log.info("job %s: %s (%s)", job.id, state.value, reason)
        change = Transition(state, worker_id=self.worker_id, refund=True, error=reason)
        try:
            return await self.store.transition(job.id, change, now=self.clock.now())
        except (InvalidTransition, LeaseLost):
            return await self._reload(job)

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

    def _discard_staged(self, job: Job) -> None:
        """Once a job has ended, nothing of it stays on disk: its clip, and an input image staged for it."""
        (self.staging_dir / f"{job.id}.mp4").unlink(missing_ok=True)
        image = job.request.image_path
        if image is not None and Path(image).resolve().is_relative_to(self.staging_dir.resolve()):
            Path(image).unlink(missing_ok=True)

    @staticmethod
    def _remote(job: Job) -> RemoteJob:
        assert job.remote_id is not None
        return RemoteJob(job_id=job.id, remote_id=job.remote_id, request=job.request)
