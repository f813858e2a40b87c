"""fal.ai's queue API, serving Alibaba's open Wan 2.2 A14B at 720p, from text or from a first frame.

A submit (`POST {base}/{model id}`) answers with a request id and three URLs: status, result and cancel. They
name only the app's owner/alias (`fal-ai/wan/requests/{id}/status`), not the full model path, and fal asks
clients to follow them as given; so the remote id is those URLs (as JSON): all that a restarted worker needs to
poll the job again.

A poll is `GET {status_url}?logs=1`: IN_QUEUE (with the place in fal's queue), IN_PROGRESS (with the model's
log lines, whose progress bar gives a fraction), COMPLETED. A completed request may have failed (`error`): its
result (`GET {response_url}`) then holds fal's typed error, `{"detail": [{"loc", "msg", "type"}]}`, where the
type `content_policy_violation` is fal's content checker refusing the prompt or the image. A successful result
names the video on fal's CDN, another origin (the key is not sent there), whose URLs may expire: the worker then
polls again for a fresh result.

Choices:
- a duration is `num_frames` at 16 fps (fal bills the seconds at 16 fps): 16 × seconds + 1 frames, which keeps
  Wan's 4k+1 frame rule, and 2 to 10 s fit fal's 17 to 161 frames;
- both of fal's safety checkers are on (input and output): a refusal reaches the member with fal's reason;
- the first frame goes inline as a data URI (fal takes a URL or a data URI in `image_url`): the bot has no
  public URL for a member's upload, and fal's own upload goes through a second API (its CDN token service);
- fal has no idempotency key, so a create whose answer was lost is never sent again (`safe_resubmit` False).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings
from bot.domain import ASPECTS, ModelInfo, VideoRequest
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.errors.said import Said, vendor_said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.frames import data_uri, missing_image, sniff_mime
from bot.providers.hosted import HostedProvider
from bot.providers.http import MAX_DOWNLOAD_BYTES, Kind, ProviderHttp

log = logging.getLogger(__name__)

PROVIDER = "fal"
CREDENTIAL_VARIABLE = "FAL_KEY"
TEXT_MODEL = "fal-ai/wan/v2.2-a14b/text-to-video"
IMAGE_MODEL = "fal-ai/wan/v2.2-a14b/image-to-video"
FRAMES_PER_SECOND = 16
MIN_FRAMES, MAX_FRAMES = 17, 161
DURATIONS = tuple(range(2, 11))
"""fal takes 17 to 161 frames, 1 to 10 s at 16 fps; one second is too short for Wan's motion to read."""
RESOLUTION = "720p"
"""The resolution the catalogue's list price is for."""
CONTENT_POLICY = "content_policy_violation"
HEALTH_REQUEST_ID = "00000000-0000-0000-0000-000000000000"
"""fal has no account endpoint on the queue API: the status of a request that cannot exist costs nothing, and
fal checks the key before it looks the request up (404: key accepted; 401/403: refused)."""

_CAPABILITIES = "2 to 10 s at 720p, 16:9, 9:16 or 1:1, with seed and negative prompt"
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo(
        id=f"{PROVIDER}/{TEXT_MODEL}",
        label="Wan 2.2 (fal)",
        durations=DURATIONS,
        aspects=ASPECTS,
        supports_image=False,
        supports_seed=True,
        supports_negative_prompt=True,
        description=f"Alibaba's open Wan 2.2 A14B on fal.ai, from text: {_CAPABILITIES}.",
    ),
    ModelInfo(
        id=f"{PROVIDER}/{IMAGE_MODEL}",
        label="Wan 2.2 from an image (fal)",
        durations=DURATIONS,
        aspects=ASPECTS,
        supports_image=True,
        requires_image=True,
        supports_seed=True,
        supports_negative_prompt=True,
        description=f"Alibaba's open Wan 2.2 A14B on fal.ai, animating your image: {_CAPABILITIES}.",
    ),
)
_VENDOR_IDS = {model.id: model.id.split("/", 1)[1] for model in MODELS}

_PROGRESS_BAR = re.compile(r"(\d{1,3})%\|")
"""A tqdm bar in the model's log (` 45%|████▌     | 12/27 [...]`)."""
_STEP_COUNT = re.compile(r"\bsteps?\s*:?\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)
_MEMBER_FIELDS = {"num_frames": "duration", "image_url": "image", "aspect_ratio": "aspect"}
"""fal's input names that the member knows by the bot's option names."""


@dataclass(frozen=True, slots=True)
class QueueUrls:
    """Where one fal request is found: what the submit answered, kept as the remote id."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, remote_id: str) -> QueueUrls:
        try:
            fields = json.loads(remote_id)
            values = [fields[name] for name in cls.__dataclass_fields__]
        except (ValueError, TypeError, KeyError):
            values = []
        if not values or not all(isinstance(value, str) and value for value in values):
            raise ProviderError(f"fal remote id is not one this adapter wrote: {remote_id[:80]!r}", retryable=False)
        return cls(*values)

    @classmethod
    def from_answer(cls, answer: object, model: str) -> QueueUrls:
        """The URLs fal handed back, followed as given. A relay that leaves them out gets the ones fal's own SDK
        builds from a request id: the app's owner/alias, never the model's sub-path."""
        request_id = answer.get("request_id") if isinstance(answer, dict) else None
        if not isinstance(answer, dict) or not isinstance(request_id, str) or not request_id:
            # The request may exist (and be billed) but cannot be found: never submit it again.
            raise CreateOutcomeUnknown(PROVIDER, "the submit answer names no request_id")
        built = f"{_owner_alias(model)}/requests/{request_id}"

        def given(name: str, default: str) -> str:
            value = answer.get(name)
            return value if isinstance(value, str) and value.startswith(("http://", "https://")) else default

        return cls(
            request_id=request_id,
            status_url=given("status_url", f"{built}/status"),
            response_url=given("response_url", built),
            cancel_url=given("cancel_url", f"{built}/cancel"),
        )


class FalProvider(HostedProvider):
    """`VideoProvider` for Wan 2.2 A14B on fal.ai's queue."""

    name = PROVIDER
    max_concurrency = 8
    """fal queues what it cannot run at once (a request over the account's concurrency waits there), so this
    only keeps one bot from holding more paid requests in flight than its members can watch."""
    safe_resubmit = False
    catalogue = MODELS

    def __init__(self, base_url: str, key: str, *, max_download_bytes: int = MAX_DOWNLOAD_BYTES) -> None:
        self.http = ProviderHttp(
            PROVIDER,
            base_url,
            credential_variable=CREDENTIAL_VARIABLE,
            headers={"Authorization": f"Key {key}"},
            map_error=fal_error,
            max_download_bytes=max_download_bytes,
        )

    async def health(self) -> ProviderHealth:
        ids = self.model_ids
        try:
            await self.http.read("GET", f"{_owner_alias(TEXT_MODEL)}/requests/{HEALTH_REQUEST_ID}/status")
        except RemoteJobLost:
            pass  # the key was accepted; the made-up request does not exist
        except ProviderError as exc:
            return self.http.health_for(exc, base_variable="FAL_BASE_URL", models=ids)
        return ProviderHealth(reachable=True, authenticated=True, models=ids)

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = _VENDOR_IDS.get(request.model)
        if model is None:
            raise ProviderError(f"fal has no model {request.model!r} here", retryable=False)
        body = await _model_input(model, request)
        response = await self.http.create("POST", model, json=body)
        try:
            answer = response.json()
        except ValueError:
            raise CreateOutcomeUnknown(PROVIDER, f"HTTP {response.status_code} answer is not JSON") from None
        urls = QueueUrls.from_answer(answer, model)
        log.info("job %s: fal request %s queued (position %s)", job_id, urls.request_id, answer.get("queue_position"))
        return urls.encode()

    async def poll(self, remote: RemoteJob) -> PollResult:
        urls = QueueUrls.decode(remote.remote_id)
        status = await self.http.json("GET", urls.status_url, params={"logs": "1"})
        state = status.get("status") if isinstance(status, dict) else None
        if state == "IN_QUEUE":
            position = status.get("queue_position")
            return PollResult(RemoteState.QUEUED, queue_position=position if isinstance(position, int) else None)
        if state == "IN_PROGRESS":
            return PollResult(RemoteState.RUNNING, progress=progress_in(status.get("logs")))
        if state == "COMPLETED":
            return await self._outcome(urls, status)
        raise ProviderError(f"fal answered a status this adapter does not know: {state!r}", retryable=True)

    async def _outcome(self, urls: QueueUrls, status: dict[str, Any]) -> PollResult:
        """A completed request: its result holds the video, or fal's typed reason why there is none."""
        failure = _failure_in(status)
        try:
            result = await self.http.json("GET", urls.response_url)
        except ProviderError as exc:
            if failure is None or _is_typed(exc):
                raise
            return PollResult(RemoteState.FAILED, error=failure)
        video_url = _video_url_in(result)
        if video_url is not None:
            return PollResult(RemoteState.SUCCEEDED, progress=1.0, output_url=video_url)
        if failure is not None:
            return PollResult(RemoteState.FAILED, error=failure)
        raise ProviderError("fal's result for a completed request names no video", retryable=False)

    async def cancel(self, remote: RemoteJob) -> None:
        urls = QueueUrls.decode(remote.remote_id)
        try:
            await self.http.read("PUT", urls.cancel_url)
        except (RequestRejected, RemoteJobLost) as exc:
            # 400 ALREADY_COMPLETED or 404 NOT_FOUND: nothing is left to stop.
            log.info("job %s: fal had nothing to cancel (%s)", remote.job_id, exc)
            return
        log.info("job %s: fal request %s cancellation requested", remote.job_id, urls.request_id)

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None:
        if result.output_url is None:
            raise ProviderError(f"fal result for job {remote.job_id} has no video URL", retryable=False)
        await self.http.download(result.output_url, dest)


def from_settings(settings: Settings) -> FalProvider | None:
    """The fal provider when `FAL_KEY` is set (and not empty), else None."""
    if settings.fal_key is None:
        return None
    key = settings.fal_key.get_secret_value().strip()
    if not key:
        return None
    return FalProvider(settings.fal_base_url, key, max_download_bytes=settings.max_download_bytes)


async def _model_input(model: str, request: VideoRequest) -> dict[str, Any]:
    """The Wan endpoint's input, in fal's field names and types; refuses what fal would refuse."""
    frames = FRAMES_PER_SECOND * request.duration + 1
    if not MIN_FRAMES <= frames <= MAX_FRAMES:
        # A MODELS_FILE may offer durations fal cannot make: say so before anything is billed.
        raise RequestRejected(PROVIDER, Said(N_("failure.rejected.fal.duration")), field="duration")
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "num_frames": frames,
        "frames_per_second": FRAMES_PER_SECOND,
        "resolution": RESOLUTION,
        "aspect_ratio": request.aspect,
        "enable_safety_checker": True,
        "enable_output_safety_checker": True,
    }
    if request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    if request.seed is not None:
        body["seed"] = request.seed
    if model == IMAGE_MODEL:
        if not request.image_path:
            raise RequestRejected(PROVIDER, Said(N_("failure.rejected.image-required")), field="image")
        body["image_url"] = await asyncio.to_thread(_data_uri, Path(request.image_path))
    return body


def _data_uri(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        raise missing_image(path) from None
    mime = sniff_mime(data)
    if mime is None:
        raise RequestRejected(PROVIDER, Said(N_("failure.rejected.fal.image-format")), field="image")
    return data_uri(mime, data)


def _owner_alias(model: str) -> str:
    """The app a model belongs to (`fal-ai/wan` for `fal-ai/wan/v2.2-a14b/text-to-video`): fal's queue URLs
    for a request name only this."""
    return "/".join(model.split("/")[:2])


def progress_in(logs: object) -> float | None:
    """The fraction done in the latest log line that shows one (a tqdm bar, or `step n/m`), capped below 1:
    the video is not done until fal says COMPLETED. None when no line shows one."""
    if not isinstance(logs, list):
        return None
    for entry in reversed(logs):
        message = entry.get("message") if isinstance(entry, dict) else None
        if not isinstance(message, str):
            continue
        if bars := _PROGRESS_BAR.findall(message):
            return min(int(bars[-1]), 99) / 100
        if steps := _STEP_COUNT.findall(message):
            done, total = (int(n) for n in steps[-1])
            if total > 0:
                return min(done / total, 0.99)
    return None


def _failure_in(status: dict[str, Any]) -> Said | None:
    error, error_type = status.get("error"), status.get("error_type")
    if error:
        return vendor_said(str(error))
    if not error_type:
        return None
    return Said(N_("failure.service-could-not-make.code"), {"service": "fal", "code": str(error_type)})


def _video_url_in(result: object) -> str | None:
    video = result.get("video") if isinstance(result, dict) else None
    url = video.get("url") if isinstance(video, dict) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def _is_typed(error: ProviderError) -> bool:
    """A model error fal typed (a refusal, a named bad field): more precise than the status's `error`."""
    return isinstance(error, ContentRefused) or (isinstance(error, RequestRejected) and error.field is not None)


def fal_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """fal's own error shapes: typed model errors (`detail` a list of `{loc, msg, type}`), request errors
    (`detail` text with `error_type`, also in `X-Fal-Error-Type`) and a locked account (403)."""
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("detail") if isinstance(body, dict) else None
    error_type = response.headers.get("x-fal-error-type")
    if error_type is None and isinstance(body, dict):
        error_type = body.get("error_type")
    if isinstance(detail, list):
        items = [item for item in detail if isinstance(item, dict)]
        refused = next((item for item in items if item.get("type") == CONTENT_POLICY), None)
        if refused is not None:
            return ContentRefused(PROVIDER, _refusal_reason(refused))
        if items and response.status_code == 422:
            field = _field_of(items[0])
            return RequestRejected(PROVIDER, str(items[0].get("msg") or "") or _invalid_input(field), field=field,
                                   status=422)  # fmt: skip
    if error_type == CONTENT_POLICY:
        return ContentRefused(PROVIDER, str(detail or "") or Said(N_("failure.refused.flagged")))
    if response.status_code == 403 and isinstance(detail, str) and detail.startswith("User is locked"):
        # "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
        return ProviderBilling(PROVIDER, detail, status=403)
    return None


def _refusal_reason(item: dict[str, Any]) -> str | Said:
    """fal's words with the categories it flagged; without words, ours (which the member reads translated)."""
    reason = str(item.get("msg") or "")
    categories = item.get("categories")
    named = ", ".join(str(c) for c in categories) if isinstance(categories, list) and categories else ""
    if not reason:
        if named:
            return Said(N_("failure.refused.flagged.categories"), {"categories": named})
        return Said(N_("failure.refused.flagged"))
    return f"{reason} ({named})" if named else reason


def _invalid_input(field: str | None) -> Said:
    """A 422 that named no reason."""
    if not field:
        return Said(N_("failure.rejected.invalid-input"))
    return Said(N_("failure.rejected.invalid-input.field"), {"field": field})


def _field_of(item: dict[str, Any]) -> str | None:
    loc = item.get("loc")
    if not isinstance(loc, list):
        return None
    parts = [str(part) for part in loc if part not in ("body", "query")]
    if not parts:
        return None
    return _MEMBER_FIELDS.get(parts[0], ".".join(parts))
