"""Shengshu's Vidu models through the Vidu API (`VIDU_API_KEY`, `VIDU_BASE_URL`).

The vendor's task protocol, with `Authorization: Token <key>` (not Bearer): a create (`POST text2video`, or
`POST img2video` with the first frame inline as a data URI in `images`) answers with a `task_id`, the task's
`state` and the `credits` it will cost; the task is polled at `GET tasks/{id}/creations` until `created` or
`queueing` or `processing` turns into `success` (the video at `creations[0].url`, a signed storage URL on another
origin, valid 24 hours) or `failed` (with an `err_code` and nothing more). `POST tasks/{id}/cancel` stops a task
that has not been scheduled yet. Failures are `{"code", "reason", "message", "metadata"}`, `reason` being the
error code of the vendor's table.

The remote id is `<task_id>|<credits>`: the task id finds the job again after a restart (the region is
`VIDU_BASE_URL`'s), and the credits Vidu announced at create are kept with the job for the stats
(`vendor_credits`). Vidu reports no progress, no queue position and no polling hint; `POLL_SECONDS` paces polls.

A content refusal comes at create (`AuditSubmitIllegal`: the prompt or image failed the safety review) as
`ContentRefused`, or later as a failed task (`CreationPolicyViolation`: the video made was blocked); Vidu gives
the credits of a moderated task back.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, replace
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
from bot.errors.providers import no_such_model
from bot.errors.said import Said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.frames import data_uri, fitted_frame, read_frame
from bot.providers.hosted import HostedProvider
from bot.providers.http import Kind, ProviderHttp

log = logging.getLogger(__name__)

NAME = "vidu"
CREDENTIAL_VARIABLE = "VIDU_API_KEY"
POLL_SECONDS = 5.0
"""Vidu gives no hint; a clip takes half a minute to a few minutes, and too frequent calls are refused with
429 TooManyRequests for the whole account."""

REFUSED_AT_CREATE = {
    "AuditSubmitIllegal": N_("failure.refused.vidu.audit-submit-illegal"),
    "TaskPromptPolicyViolation": N_("failure.refused.vidu.prompt-policy-violation"),
    "CreationPolicyViolation": N_("failure.refused.vidu.creation-policy-violation"),
}
"""A refusal's `err_code` at create in words (Vidu's error-code table), Vidu's message after them."""
REFUSAL_CODES = frozenset(REFUSED_AT_CREATE)
FAILED_TASKS = {
    "AuditSubmitIllegal": N_("failure.vidu.audit-submit-illegal"),
    "TaskPromptPolicyViolation": N_("failure.vidu.prompt-policy-violation"),
    "CreationPolicyViolation": N_("failure.vidu.creation-policy-violation"),
    "ModelUnavailable": N_("failure.vidu.model-unavailable"),
    "CreditInsufficient": N_("failure.vidu.credit-insufficient"),
    "ImageFormatInvalid": N_("failure.vidu.image-format-invalid"),
}
"""A failed task's `err_code` as the member reads it, `({code})` after the words; other codes are named as they
come."""
IMAGE_CODES = frozenset({"ImageFormatInvalid", "PageSizeOutOfRange", "ImageDownloadFailure"})
FIELD_CODES = frozenset({"FieldLacking", "FieldUnwanted", "FieldInvalid", "FieldItemCountOutOfRange", "BadRequest"})
VENDOR_FIELDS = {"images": "image", "aspect_ratio": "aspect", "duration": "duration", "seed": "seed",
                 "prompt": "prompt", "model": "model"}  # fmt: skip
"""Vendor field names in a `field is missing or empty: …` / `invalid field: …` message → the member's option."""

TASK_ID = r"[A-Za-z0-9_-]{1,128}"
"""A task id goes into URL paths: anything else could point a poll or a cancel elsewhere."""
REMOTE_ID = re.compile(rf"^(?P<task>{TASK_ID})(?:\|(?P<credits>\d{{1,9}}))?$")
"""`<task_id>|<credits>`, or the bare task id when Vidu announced no credits."""

IMAGE_MAX_BYTES = 10 * 1024 * 1024
"""The decoded size of a base64 image Vidu takes."""
IMAGE_MAX_RATIO = 4.0
"""Vidu refuses a first frame more elongated than 1:4 or 4:1."""
IMAGE_SHRINK_SIDE = 2048
"""A frame too heavy to send as it is goes as a JPEG at most this long: far more than a 1080p video needs."""


@dataclass(frozen=True, slots=True)
class ViduModel:
    """A model, the resolution the bot asks of it (one per model, so that a second costs the same whatever the
    duration), and Vidu's prompt limit for it."""

    info: ModelInfo
    resolution: str
    prompt_limit: int

    @property
    def vendor_id(self) -> str:
        return self.info.id.split("/", 1)[1]


MODELS: tuple[ViduModel, ...] = (
    ViduModel(
        ModelInfo(
            id="vidu/viduq1", label="Vidu Q1", durations=(5,), aspects=ASPECTS, supports_image=True,
            description="Shengshu's Vidu Q1 at 1080p, 5 seconds; from text, or animating your image (the video "
            "then keeps the image's shape).",
        ),
        resolution="1080p", prompt_limit=1500,
    ),
    ViduModel(
        ModelInfo(
            id="vidu/viduq3-pro", label="Vidu Q3 Pro", durations=tuple(range(1, 17)), aspects=ASPECTS,
            supports_image=True,
            description="Vidu Q3 Pro at 720p with its own sound, 1 to 16 seconds; from text or from your image.",
        ),
        resolution="720p", prompt_limit=5000,
    ),
    ViduModel(
        ModelInfo(
            id="vidu/viduq2", label="Vidu Q2", durations=tuple(range(1, 11)), aspects=ASPECTS,
            description="Vidu Q2 text-to-video at 720p, 1 to 10 seconds.",
        ),
        resolution="720p", prompt_limit=5000,
    ),
    ViduModel(
        ModelInfo(
            id="vidu/vidu2.0", label="Vidu 2.0", durations=(4, 8), aspects=ASPECTS, supports_image=True,
            requires_image=True,
            description="Animates your image (required) at 720p, 4 or 8 seconds; the video keeps its shape.",
        ),
        resolution="720p", prompt_limit=1500,
    ),
    ViduModel(
        ModelInfo(
            id="vidu/vidu1.5", label="Vidu 1.5", durations=(4, 8), aspects=ASPECTS, supports_image=True,
            description="Vidu 1.5 at 720p, 4 or 8 seconds; from text or from your image.",
        ),
        resolution="720p", prompt_limit=1500,
    ),
)  # fmt: skip
_BY_ID = {model.info.id: model for model in MODELS}

TASK_STATES = {
    "created": RemoteState.QUEUED,
    "queueing": RemoteState.QUEUED,
    "processing": RemoteState.RUNNING,
    "success": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
}


class ViduProvider(HostedProvider):
    """`VideoProvider` for the Vidu API."""

    name = NAME
    max_concurrency = 3
    """Vidu accounts run a few tasks at once (`concurrency_limit` of the account's package); more are refused
    with 429 QuotaExceeded, which the worker waits out, holding a slot for nothing."""
    safe_resubmit = False
    """A create has no idempotency key: sending one twice makes, and bills, two videos."""
    catalogue = tuple(model.info for model in MODELS)

    def __init__(self, api_key: str, base_url: str, *, max_download_bytes: int) -> None:
        self.http = ProviderHttp(
            NAME,
            base_url,
            credential_variable=CREDENTIAL_VARIABLE,
            headers={"Authorization": f"Token {api_key}"},
            map_error=map_error,
            max_download_bytes=max_download_bytes,
        )

    async def health(self) -> ProviderHealth:
        """Reads the account (`GET credits`): authenticated, read-only, and it tells whether credits are left."""
        health, account = await self.http.probe("GET", "credits", base_variable="VIDU_BASE_URL",
                                                models=self.model_ids)  # fmt: skip
        left = credits_left(account)
        if left is not None:
            health = replace(health, balance=f"{left:,} credits")
        if left == 0:
            return replace(health, problem="the Vidu account has no credits left: top it up at platform.vidu.com")
        return health

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = _BY_ID.get(request.model)
        if model is None:
            raise no_such_model(NAME, request.model)
        if len(request.prompt) > model.prompt_limit:
            too_long = {"label": model.info.label, "max_chars": str(model.prompt_limit)}  # `1500`, as Vidu writes it
            raise RequestRejected(NAME, Said(N_("failure.rejected.vidu.prompt-too-long"), too_long), field="prompt")
        path, body = await _create(model, request)
        # The answer is read by hand: a create the service took but answered oddly must not be repeated.
        response = await self.http.create("POST", path, json=body)
        try:
            answer = response.json()
            task_id = answer["task_id"]
        except (ValueError, KeyError, TypeError):
            raise CreateOutcomeUnknown(NAME, f"HTTP {response.status_code} without a task id") from None
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            task_id = str(task_id)  # the docs show a string; the ids are digits, which a relay may send as a number
        if not isinstance(task_id, str) or not re.fullmatch(TASK_ID, task_id):
            raise CreateOutcomeUnknown(NAME, f"unusable task id {task_id!r}")
        credits = answer.get("credits")
        log.info("job %s: Vidu task %s (%s credits)", job_id, task_id, credits)
        if isinstance(credits, int) and not isinstance(credits, bool) and 0 <= credits < 10**9:
            return f"{task_id}|{credits}"
        return task_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        task_id = _task_id(remote)
        answer = await self.http.json("GET", f"tasks/{task_id}/creations")
        status = answer.get("state") if isinstance(answer, dict) else None
        if not isinstance(answer, dict) or not isinstance(status, str):
            raise ProviderError(f"{NAME} task answer without a state: {str(answer)[:200]}", retryable=True)
        state = TASK_STATES.get(status)
        if state is None:
            raise ProviderError(f"{NAME} task in an unknown state {status!r}", retryable=True)
        if state is RemoteState.SUCCEEDED:
            reported = answer.get("credits")
            log.info("job %s: Vidu task %s done (%s credits)", remote.job_id, task_id, reported)
            credits = reported if isinstance(reported, int) and not isinstance(reported, bool) else None
            if credits is None:
                credits = vendor_credits(remote.remote_id)  # what Vidu announced at create
            return PollResult(state, progress=1.0, output_url=_video_url(answer), vendor_credits=credits)
        if state is RemoteState.FAILED:
            code = str(answer.get("err_code") or "")
            if code == "UserCancelled":
                return PollResult(RemoteState.CANCELLED, error=Said(N_("failure.cancelled-at"), {"service": "Vidu"}))
            return PollResult(state, error=failure_reason(code), refused=code in REFUSAL_CODES)
        return PollResult(state, poll_after=POLL_SECONDS)

    async def cancel(self, remote: RemoteJob) -> None:
        """Vidu cancels a task not yet scheduled; one already being made is left to finish (the worker ends
        the job either way)."""
        task_id = _task_id(remote)
        try:
            # The documented call repeats the id in the body.
            await self.http.read("POST", f"tasks/{task_id}/cancel", json={"id": task_id})
        except RequestRejected as exc:
            log.info("job %s: Vidu did not cancel task %s: %s", remote.job_id, task_id, exc.reason)


def from_settings(settings: Settings) -> ViduProvider | None:
    key = settings.vidu_api_key.get_secret_value() if settings.vidu_api_key else ""
    if not key:
        return None
    return ViduProvider(key, settings.vidu_base_url, max_download_bytes=settings.max_download_bytes)


def vendor_credits(remote_id: str) -> int | None:
    """The credits Vidu announced at create for the job with this remote id (None when it announced none)."""
    match = REMOTE_ID.match(remote_id)
    return int(match["credits"]) if match and match["credits"] is not None else None


def map_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """Vidu's `{"code", "reason", "message"}` failures whose `reason` says more than the HTTP status."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        return None
    code: str = body["reason"]
    message = str(body.get("message") or code)
    status = response.status_code
    if code in REFUSAL_CODES:
        return ContentRefused(NAME, Said(REFUSED_AT_CREATE[code], {"reason": message}))
    if code == "CreditInsufficient":
        return ProviderBilling(NAME, f"{code}: {message}", status=status)
    if code == "ModelUnavailable":
        return RequestRejected(NAME, f"{code}: {message}", field="model", status=status)
    if code in IMAGE_CODES:
        return RequestRejected(NAME, f"{code}: {message}", field="image", status=status)
    if code in FIELD_CODES and status == 400:
        return RequestRejected(NAME, f"{code}: {message}", field=_field_in(message), status=status)
    return None


def credits_left(account: Any) -> int | None:
    """The credits left across the account's packages, from `GET credits` (None when it says nothing). The
    docs name the list `remaining_credits` in the field table and `remains` in the example."""
    if not isinstance(account, dict):
        return None
    packages = account.get("remains", account.get("remaining_credits"))
    if not isinstance(packages, list):
        return None
    remains = [p.get("credit_remain") for p in packages if isinstance(p, dict)]
    counted = [r for r in remains if isinstance(r, int) and not isinstance(r, bool)]
    return sum(counted) if counted else None


def failure_reason(code: str) -> Said:
    """What the member reads when the task failed: Vidu gives only a code, put in words where it is known."""
    if not code:
        return Said(N_("failure.service-could-not-make"), {"service": "Vidu"})
    return Said(FAILED_TASKS.get(code, N_("failure.service-could-not-make.code")), {"service": "Vidu", "code": code})


def _task_id(remote: RemoteJob) -> str:
    match = REMOTE_ID.match(remote.remote_id)
    if match is None:
        raise RemoteJobLost(f"{NAME}: unusable remote id {remote.remote_id!r}")
    return match["task"]


def _video_url(answer: dict[str, Any]) -> str | None:
    creations = answer.get("creations")
    first = creations[0] if isinstance(creations, list) and creations else None
    url = first.get("url") if isinstance(first, dict) else None
    return url if isinstance(url, str) and url else None


def _field_in(message: str) -> str | None:
    for vendor_name, field in VENDOR_FIELDS.items():
        if re.search(rf"\b{vendor_name}\b", message):
            return field
    return None


async def _create(model: ViduModel, request: VideoRequest) -> tuple[str, dict[str, Any]]:
    """The create's path and body: text-to-video with the aspect asked, or image-to-video, whose video keeps
    the image's own shape (Vidu takes no aspect there)."""
    body: dict[str, Any] = {"model": model.vendor_id, "prompt": request.prompt, "duration": request.duration,
                            "resolution": model.resolution}  # fmt: skip
    if request.seed is not None:
        body["seed"] = request.seed
    if request.image_path:
        body["images"] = [await asyncio.to_thread(image_data_uri, Path(request.image_path))]
        return "img2video", body
    body["aspect_ratio"] = request.aspect
    return "text2video", body


def image_data_uri(path: Path) -> str:
    """The first frame as a `data:` URI within Vidu's limits: sent as it is when it fits, else scaled down
    (keeping its shape) and sent as JPEG. Runs in a thread."""
    with read_frame(NAME, path) as frame:
        if max(frame.size) > IMAGE_MAX_RATIO * min(frame.size):
            shape = {"width": str(frame.width), "height": str(frame.height)}
            raise RequestRejected(NAME, Said(N_("failure.rejected.vidu.image-too-elongated"), shape), field="image")
        if frame.file_bytes() <= IMAGE_MAX_BYTES:
            return frame.data_uri()
        return data_uri("image/jpeg", fitted_frame(path, frame.within(IMAGE_SHRINK_SIDE)))
