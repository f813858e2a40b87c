"""One step per state a worker drives: submit, wait for the remote job, download, deliver (and cancel).

Each step reads the job's recorded state, makes at most one kind of side effect, and records its outcome
before the next side effect depends on it, so that a worker dying anywhere leaves a job the next worker can
finish: a job with a remote id is polled again, never submitted again; a job marked delivered is never
delivered again; a job whose post was begun is looked for in the channel before it is posted again. A step
returns the job as it left it; `STEPS` maps each state to its step, and the worker runs them until the job
ends.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bot.domain import Fallback, Job, JobState, Route, VideoRequest
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CredentialsRejected,
    DeliveryError,
    JobFailed,
    ProviderBilling,
    ProviderError,
    ProviderUnavailable,
    RequestRejected,
)
from bot.errors.said import Said
from bot.faults import crash_point
from bot.i18n.ids import N_
from bot.jobs.staging import input_copy, materialise_input
from bot.providers.base import PollResult, RemoteJob, RemoteState, VideoProvider
from bot.store.base import Reroute

if TYPE_CHECKING:
    from bot.jobs.worker import Worker

log = logging.getLogger(__name__)

Step = Callable[["Worker", Job, VideoProvider], Awaitable[Job]]
POLL_GROWTH = 1.5
POLL_INTERVAL_CAP = 15.0
INPUT_LOST = Said(N_("failure.input-lost"))


async def submit(w: Worker, job: Job, provider: VideoProvider) -> Job:
    if job.remote_id is None and job.attempts > 0 and not provider.safe_resubmit:
        # A worker died between sending the create and recording its answer: the provider may be making
        # the video already, and sending it again could cost twice.
        raise JobFailed(Said(N_("failure.interrupted-at-submit")))
    request = job.request if job.remote_id else await provider_request(w, job, required=True)
    with w.side_effect(job):
        try:
            remote_id = job.remote_id or await w.provider_call(job, "submit", lambda: provider.submit(job.id, request))
        except JobFailed as failure:
            moved = await fall_back(w, job, failure)
            if moved is None:
                raise
            return moved
        crash_point("submitted")
        job = await w.move(job, JobState.RUNNING, remote_id=remote_id, detail=f"remote id {remote_id}")
    crash_point("running")
    return job


async def fall_back(w: Worker, job: Job, failure: JobFailed) -> Job | None:
    """Move a job on a model alias to the next model of its chain, when the provider failed in a way that
    cannot have made anything: an outage past the retry budget, the vendor account out of quota, or an open
    circuit breaker. Never after a content refusal or a bad request (the next model would refuse too, or the
    member must change something), and never when the create may have been taken (it could be paid twice).
    None when the job cannot fall back."""
    cause = failure.__cause__
    route = job.route
    if route is None or not isinstance(cause, ProviderError) or not falls_through(cause):
        return None
    for index, model_id in enumerate(route.remaining):
        model = w.registry.model(model_id)
        if model is None:
            continue  # no longer configured here
        request = job.request.model_copy(update={"model": model_id})
        tried = (*route.tried, Fallback(job.model, str(failure.reason)))  # stored as its id and facts
        reroute = Reroute(request, model.credits_for(request.duration),
                          Route(route.alias, route.remaining[index + 1 :], tried),
                          cost_usd=w.registry.catalogue.cost_usd(model, request.duration))  # fmt: skip
        log.warning("job %s: %s failed (%s); falling back to %s", job.id, job.model, cause, model_id)
        return await w.move(job, JobState.SUBMITTING, reroute=reroute,
                            detail=f"fell back from {job.model} to {model_id}: {cause}")  # fmt: skip
    return None


def falls_through(error: ProviderError) -> bool:
    if isinstance(error, ContentRefused | RequestRejected | CreateOutcomeUnknown | CredentialsRejected):
        return False
    return error.retryable or isinstance(error, ProviderBilling | ProviderUnavailable)


async def wait_remote(w: Worker, job: Job, provider: VideoProvider) -> Job:
    """Poll until the remote job ends, reporting progress, within `w.max_poll_seconds`. Returns early when the
    job is to be cancelled, was moved elsewhere, or the worker stops."""
    deadline = w.clock.now() + w.max_poll_seconds
    interval = w.poll_interval
    while True:
        result = await _poll(w, job, provider, until=deadline)
        crash_point("polled")
        if result.state is RemoteState.SUCCEEDED:
            return await w.move(job, JobState.DOWNLOADING, vendor_credits=result.vendor_credits)
        if result.state is RemoteState.CANCELLED:
            return await w.end(job, JobState.CANCELLED, Said(N_("failure.cancelled-at-provider")))
        if result.state is RemoteState.FAILED:
            reason = result.error or Said(N_("failure.could-not-make"))
            if result.refused:  # the same refusal as at submit: counted in the metrics and the stats
                refusal = ContentRefused(provider.name, str(reason))
                if w.on_provider_error is not None:
                    w.on_provider_error(provider.name, refusal)
                raise JobFailed(reason) from refusal
            raise JobFailed(reason)
        progress = job.progress if result.progress is None else result.progress
        waiting = result.state is RemoteState.QUEUED
        if (progress, waiting, result.queue_position) != (job.progress, job.remote_waiting, job.remote_position):
            job = await w.report_progress(job, progress, waiting=waiting, position=result.queue_position)
        if w.clock.now() >= deadline:
            await stop_at_provider(job, provider)  # or it runs on, and is billed, for nobody
            raise JobFailed(Said(N_("failure.took-too-long")))
        # Never sooner than the provider asks; otherwise ever less often as the job runs on: from the worker's
        # `poll_interval` (0.5 s: a short offline render is noticed at once) growing by half each time up to
        # POLL_INTERVAL_CAP, so a 60 s job costs about eleven polls and a ten-minute one about fifty.
        await w.clock.sleep(max(result.poll_after or 0.0, interval))
        interval = min(interval * POLL_GROWTH, max(POLL_INTERVAL_CAP, w.poll_interval))
        job = await w.reload(job)
        if job.cancel_requested or job.state is not JobState.RUNNING or w.stopping:
            return job


async def download(w: Worker, job: Job, provider: VideoProvider) -> Job:
    """Fetch the finished video. Each try asks the provider afresh first: result URLs expire, and one that has
    (`ResultExpired`, retryable) is replaced by the next poll's."""
    dest = w.staging_dir / f"{job.id}.mp4"
    dest.parent.mkdir(parents=True, exist_ok=True)
    remote = remote_job(job, await provider_request(w, job, required=False))

    async def fetch() -> PollResult:
        result = await provider.poll(remote)
        if result.state is RemoteState.SUCCEEDED:
            await provider.download(remote, result, dest)
        return result

    result = await w.provider_call(job, "download", fetch)
    if result.state in (RemoteState.QUEUED, RemoteState.RUNNING):
        # The provider is making it again (an offline render restarted after a crash): wait once more.
        return await w.move(job, JobState.RUNNING, detail="result not ready after all; waiting again")
    if result.state is not RemoteState.SUCCEEDED:
        raise JobFailed(result.error or Said(N_("failure.result-gone")))
    crash_point("downloaded")
    # The clip and the intent to post it are recorded in one write: a worker that dies after it looks for the
    # post before posting again, as after any attempt (one history row and one round trip less per job).
    job = await w.move(job, JobState.DELIVERING, result_path=str(dest), post_attempted_at=w.clock.now(),
                       detail=posting_try(1))  # fmt: skip
    crash_point("post_intent")
    if job.cancel_requested or w.stopping:
        return job  # cancelled (the worker's loop ends it) or handed back: the next worker looks before posting
    return await post_clip(w, job, intent_recorded=True)


async def deliver(w: Worker, job: Job, provider: VideoProvider) -> Job:
    """A job resumed while delivering (an earlier life of it died): post the clip unless it was posted."""
    if job.delivered_message_id is not None:
        return await w.move(job, JobState.DELIVERED, detail="already delivered")
    return await post_clip(w, job, intent_recorded=False)


async def post_clip(w: Worker, job: Job, *, intent_recorded: bool) -> Job:
    """Post the clip exactly once: record the intent before each post, and after any attempt that may have
    gone through (an earlier life of this job, an ambiguous failure) look for the post before posting again.
    `intent_recorded`: the first try's intent was recorded just now and nothing was sent since."""
    tries = itertools.count(1)

    async def attempt() -> int | None:
        nonlocal job
        number = next(tries)
        fresh = number == 1 and intent_recorded
        if job.post_attempted_at is not None and not fresh:
            found = await w.delivery.find_post(job)
            if found is not None:
                log.info("job %s: found the clip posted by an earlier attempt (%s)", job.id, found)
                return found
        clip = Path(job.result_path or w.staging_dir / f"{job.id}.mp4")
        if not clip.exists():
            raise JobFailed(Said(N_("failure.clip-lost")))
        if not fresh:
            job = await w.move(job, JobState.DELIVERING, post_attempted_at=w.clock.now(),
                               detail=posting_try(number))  # fmt: skip
            crash_point("post_intent")
        return await w.delivery.deliver(job, clip)

    with w.side_effect(job):
        try:
            message_id = await w.retrying(job, "delivery", attempt, retry_on=DeliveryError)
        except DeliveryError as exc:
            raise JobFailed(exc.user_message) from exc
        crash_point("posted")
        job = await w.move(job, JobState.DELIVERED, delivered_message_id=message_id)
    crash_point("recorded")
    return job


def posting_try(number: int) -> str:
    """The history's note of an intent to post: which try it is."""
    return f"posting, try {number}"


async def cancel(w: Worker, job: Job, provider: VideoProvider) -> Job:
    """A member or an admin asked to stop: tell the provider (best effort) and end the job with a refund."""
    if job.state in (JobState.RUNNING, JobState.SUBMITTING):
        await stop_at_provider(job, provider)
    return await w.end(job, JobState.CANCELLED, Said(N_("failure.cancelled-by-request")))


async def stop_at_provider(job: Job, provider: VideoProvider) -> None:
    """Ask the provider to stop a job it has (best effort: the job ends here whatever it answers)."""
    if job.remote_id is None:
        return
    try:
        await provider.cancel(remote_job(job))
    except ProviderError as exc:
        log.warning("job %s: provider could not cancel (%s)", job.id, exc)


STEPS: dict[JobState, Step] = {
    JobState.SUBMITTING: submit,
    JobState.RUNNING: wait_remote,
    JobState.DOWNLOADING: download,
    JobState.DELIVERING: deliver,
}
"""The step that drives a job on from each state a worker holds; the other states are not a worker's."""


async def _poll(w: Worker, job: Job, provider: VideoProvider, *, until: float) -> PollResult:
    """A status poll. A provider's passing trouble (429s, a 5xx burst, a dropped connection) is waited out up
    to the job's poll deadline, not a fixed number of tries: the video is still being made meanwhile."""
    remote = remote_job(job, await provider_request(w, job, required=False))
    return await w.provider_call(job, "poll", lambda: provider.poll(remote), until=until)


async def provider_request(w: Worker, job: Job, *, required: bool) -> VideoRequest:
    """The job's request as the provider reads it: an input image stored in the database (by a front end that
    may run on another machine) copied to this worker's disk, `image_path` pointing at the copy. The submit
    requires the image (`JobFailed`, refunded, when it is gone); a poll or a download only hands it on, for a
    provider that makes the video again after a crash (the offline renderer), which fails on its own without
    it."""
    request = await materialise_input(w.store, job.request, w.dirs)
    if request is not None:
        return request
    if required:
        log.warning("job %s: its input image %s is gone", job.id, job.request.image_ref)
        raise JobFailed(INPUT_LOST)
    assert job.request.image_ref is not None
    return job.request.model_copy(update={"image_path": str(input_copy(job.request.image_ref, w.dirs))})


def remote_job(job: Job, request: VideoRequest | None = None) -> RemoteJob:
    assert job.remote_id is not None
    return RemoteJob(job_id=job.id, remote_id=job.remote_id, request=request or job.request)
