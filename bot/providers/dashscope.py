"""Alibaba's Wan models through Model Studio's DashScope API (`DASHSCOPE_API_KEY`, `DASHSCOPE_BASE_URL`).

The vendor's asynchronous task protocol: a create (`POST services/aigc/video-generation/video-synthesis`, with
`X-DashScope-Async: enable`, without which the service refuses the call) answers with a task id; the task is
polled at `GET tasks/{task_id}` until PENDING or RUNNING turns into SUCCEEDED (with `output.video_url`, a signed
object-storage URL on another origin, valid 24 hours), FAILED (with the vendor's `code` and `message`),
CANCELED, or UNKNOWN (the id expired after 24 hours, or never existed). Only a PENDING task can be cancelled.

The remote id is the bare task id: the task lives in the region of `DASHSCOPE_BASE_URL`, the same setting that
finds it again after a restart. DashScope reports no progress and no queue position, and its responses carry
no polling hint; `POLL_SECONDS` follows the official SDK's pace.

An image for image-to-video travels inside the create as a base64 data URI (the service takes one in
`img_url`), so no upload step and no public URL are needed; it is first fitted to the vendor's limits.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings
from bot.domain import ASPECTS, Aspect, ModelInfo, VideoRequest
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CredentialsRejected,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.errors.providers import no_such_model
from bot.errors.said import Said, vendor_said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.frames import data_uri, fitted_frame, read_frame
from bot.providers.hosted import HostedProvider
from bot.providers.http import Kind, ProviderHttp

log = logging.getLogger(__name__)

NAME = "dashscope"
CREDENTIAL_VARIABLE = "DASHSCOPE_API_KEY"
CREATE_PATH = "services/aigc/video-generation/video-synthesis"
POLL_SECONDS = 5.0
"""The official SDK's ceiling between polls (it starts at 1 s and doubles): a video takes minutes, and the
account's task queries are limited (20 per second, shared by every job)."""

REFUSAL_CODES = frozenset({"DataInspectionFailed", "IPInfringementSuspect"})
"""Moderation codes: the input or output was blocked, and `message` says why."""
BILLING_CODES = frozenset({
    "Arrearage", "PrepaidBillOverdue", "PostpaidBillOverdue", "CommodityNotPurchased",
    "AccessDenied.Unpurchased", "AllocationQuota.FreeTierOnly",
})  # fmt: skip
"""The account must be paid up, the model bought, or the free tier has run out: an admin has to act."""
REJECTION_PREFIXES = ("InvalidParameter", "BadRequest", "InvalidURL", "ModelNotFound")
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""A task id goes into URL paths: anything else could point a poll or a cancel elsewhere."""

VENDOR_FIELDS = (("negative_prompt", "negative_prompt"), ("img_url", "image"), ("prompt", "prompt"),
                 ("size", "aspect"), ("resolution", "image"), ("duration", "duration"), ("seed", "seed"),
                 ("model", "model"))  # fmt: skip
"""Vendor field names as they appear in an InvalidParameter message → the request field the member set."""

IMAGE_MIN_SIDE, IMAGE_MAX_SIDE = 360, 2000
"""Wan's first-frame limits: each side 360 to 2000 pixels, at most 10 MB."""
IMAGE_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WanModel:
    """A model and how its output shape is asked for: a `size` per aspect (text-to-video) or a resolution tier
    (image-to-video, whose video keeps the image's own aspect)."""

    info: ModelInfo
    sizes: dict[Aspect, str] | None = None
    resolution: str | None = None

    @property
    def vendor_id(self) -> str:
        return self.info.id.split("/", 1)[1]


MODELS: tuple[WanModel, ...] = (
    WanModel(
        ModelInfo(
            id="dashscope/wan2.6-t2v", label="Wan 2.6 (DashScope)", durations=(5, 10, 15), aspects=ASPECTS,
            supports_seed=True, supports_negative_prompt=True,
            description="Alibaba's Wan 2.6 text-to-video at 720p, 5, 10 or 15 seconds.",
        ),
        sizes={"16:9": "1280*720", "9:16": "720*1280", "1:1": "960*960"},
    ),
    WanModel(
        ModelInfo(
            id="dashscope/wan2.2-t2v-plus", label="Wan 2.2 Plus (DashScope)", durations=(5,), aspects=ASPECTS,
            supports_seed=True, supports_negative_prompt=True,
            description="Alibaba's Wan 2.2 Plus text-to-video at 1080p, 5 seconds.",
        ),
        sizes={"16:9": "1920*1080", "9:16": "1080*1920", "1:1": "1440*1440"},
    ),
    WanModel(
        ModelInfo(
            id="dashscope/wan2.6-i2v", label="Wan 2.6 image-to-video (DashScope)", durations=(5, 10, 15),
            aspects=ASPECTS, supports_image=True, requires_image=True, supports_seed=True,
            supports_negative_prompt=True,
            description="Animates your image (required) from its first frame at 720p; the video keeps the "
            "image's shape.",
        ),
        resolution="720P",
    ),
)  # fmt: skip
_BY_ID = {model.info.id: model for model in MODELS}

TASK_STATES = {
    "PENDING": RemoteState.QUEUED,
    "SUSPENDED": RemoteState.QUEUED,  # paused at the vendor; it resumes by itself
    "RUNNING": RemoteState.RUNNING,
    "SUCCEEDED": RemoteState.SUCCEEDED,
    "FAILED": RemoteState.FAILED,
    "CANCELED": RemoteState.CANCELLED,
}


class DashScopeProvider(HostedProvider):
    """`VideoProvider` for Wan on DashScope."""

    name = NAME
    max_concurrency = 2
    """DashScope caps the concurrent tasks of each model per account, and low (2 for the Wan models in its
    published limits); more would only wait at the vendor as PENDING while holding a worker."""
    safe_resubmit = False
    """A create has no idempotency key: sending one twice makes, and bills, two videos."""
    catalogue = tuple(model.info for model in MODELS)

    def __init__(self, api_key: str, base_url: str, *, max_download_bytes: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:  # fmt: skip
        self.http = ProviderHttp(
            NAME,
            base_url,
            credential_variable=CREDENTIAL_VARIABLE,
            headers={"Authorization": f"Bearer {api_key}"},
            map_error=map_error,
            max_download_bytes=max_download_bytes,
            transport=transport,
        )

    async def health(self) -> ProviderHealth:
        """Lists one task (`GET tasks?page_size=1`): authenticated, read-only, and it makes nothing."""
        health, _ = await self.http.probe("GET", "tasks", params={"page_no": 1, "page_size": 1},
                                          models=self.model_ids,
                                          base_variable="DASHSCOPE_BASE_URL",
                                          hint=", and that DASHSCOPE_BASE_URL is the key's region")  # fmt: skip
        return health

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = _BY_ID.get(request.model)
        if model is None:
            raise no_such_model(NAME, request.model)
        body = await _create_body(model, request)
        # The answer is read by hand: a create the service took but answered oddly must not be repeated.
        response = await self.http.create("POST", CREATE_PATH, json=body, headers={"X-DashScope-Async": "enable"})
        try:
            answer = response.json()
            task_id = answer["output"]["task_id"]
        except (ValueError, KeyError, TypeError):
            raise CreateOutcomeUnknown(NAME, f"HTTP {response.status_code} without a task id") from None
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            raise CreateOutcomeUnknown(NAME, f"unusable task id {task_id!r}")
        log.info("job %s: DashScope task %s (request %s)", job_id, task_id, answer.get("request_id"))
        return task_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        answer = await self.http.json("GET", f"tasks/{_task_id(remote)}")
        output = answer.get("output") if isinstance(answer, dict) else None
        status = output.get("task_status") if isinstance(output, dict) else None
        if not isinstance(output, dict) or not isinstance(status, str):
            raise ProviderError(f"{NAME} task answer without a status: {str(answer)[:200]}", retryable=True)
        if status == "UNKNOWN":
            raise RemoteJobLost(f"{NAME} no longer knows task {remote.remote_id} (tasks are kept 24 hours)")
        state = TASK_STATES.get(status)
        if state is None:
            raise ProviderError(f"{NAME} task in an unknown state {status!r}", retryable=True)
        if state is RemoteState.SUCCEEDED:
            url = output.get("video_url")
            return PollResult(state, progress=1.0, output_url=url if isinstance(url, str) and url else None)
        if state is RemoteState.FAILED:
            return PollResult(state, error=_failure_reason(output), refused=str(output.get("code")) in REFUSAL_CODES)
        if state is RemoteState.CANCELLED:
            return PollResult(state, error=Said(N_("failure.cancelled-at"), {"service": "DashScope"}))
        return PollResult(state, poll_after=POLL_SECONDS)

    async def cancel(self, remote: RemoteJob) -> None:
        """DashScope cancels only a task still PENDING; one already running is left to finish unbilled by us
        (the worker ends the job either way)."""
        try:
            await self.http.read("POST", f"tasks/{_task_id(remote)}/cancel")
        except RequestRejected as exc:
            log.info("job %s: DashScope did not cancel task %s: %s", remote.job_id, remote.remote_id, exc.reason)


def from_settings(settings: Settings) -> DashScopeProvider | None:
    key = settings.dashscope_api_key.get_secret_value() if settings.dashscope_api_key else ""
    if not key:
        return None
    return DashScopeProvider(key, settings.dashscope_base_url, max_download_bytes=settings.max_download_bytes)


def map_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """DashScope's `{"request_id", "code", "message"}` failures whose code says more than the HTTP status."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return None
    code: str = body["code"]
    message = str(body.get("message") or code)
    status = response.status_code
    if code == "InvalidApiKey":
        return CredentialsRejected(NAME, CREDENTIAL_VARIABLE, status=status)
    if code in REFUSAL_CODES:
        return ContentRefused(NAME, message)
    if code in BILLING_CODES:
        return ProviderBilling(NAME, f"{code}: {message}", status=status)
    if code == "AccessDenied" and "synchronous" in message:
        # The create went out without the async header: the bot's fault, not the key's.
        return RequestRejected(NAME, message, status=status)
    if status < 500 and status != 429 and code.startswith(REJECTION_PREFIXES):
        return RequestRejected(NAME, f"{code}: {message}", field=_field_in(message), status=status)
    return None


def _task_id(remote: RemoteJob) -> str:
    if not TASK_ID.match(remote.remote_id):
        raise RemoteJobLost(f"{NAME}: unusable task id {remote.remote_id!r}")
    return remote.remote_id


def _field_in(message: str) -> str | None:
    for vendor_name, field in VENDOR_FIELDS:
        if re.search(rf"\b{vendor_name}\b", message):
            return field
    return None


def _failure_reason(output: dict[str, Any]) -> Said:
    """What the member reads when the task failed: a moderation block's own message, else code and message."""
    code = str(output.get("code") or "")
    message = str(output.get("message") or "")
    if code in REFUSAL_CODES:
        return Said(N_("failure.policy-refused"), {"reason": message or code})
    if code and message:
        return Said(N_("failure.provider-said.code"), {"reason": message, "code": code})
    if message or code:
        return vendor_said(message or code)
    return Said(N_("failure.service-could-not-make"), {"service": "DashScope"})


async def _create_body(model: WanModel, request: VideoRequest) -> dict[str, Any]:
    inputs: dict[str, Any] = {"prompt": request.prompt}
    parameters: dict[str, Any] = {"duration": request.duration}
    if request.negative_prompt:
        inputs["negative_prompt"] = request.negative_prompt
    if request.seed is not None:
        parameters["seed"] = request.seed
    if model.sizes is not None:
        if request.image_path:
            no_image = Said(N_("failure.rejected.takes-no-image"), {"label": model.info.label})
            raise RequestRejected(NAME, no_image, field="image")
        parameters["size"] = model.sizes[request.aspect]
    else:
        if not request.image_path:
            needs_image = Said(N_("failure.rejected.needs-image"), {"label": model.info.label})
            raise RequestRejected(NAME, needs_image, field="image")
        inputs["img_url"] = await asyncio.to_thread(image_data_uri, Path(request.image_path))
        parameters["resolution"] = model.resolution
    return {"model": model.vendor_id, "input": inputs, "parameters": parameters}


def image_data_uri(path: Path) -> str:
    """The image as a `data:` URI within Wan's limits: sent as it is when it fits, else scaled (keeping its
    shape) and sent as JPEG. Runs in a thread."""
    with read_frame(NAME, path) as frame:
        target = fitted_size(frame.width, frame.height)
        if target == frame.size and frame.file_bytes() <= IMAGE_MAX_BYTES:
            return frame.data_uri()
        return data_uri("image/jpeg", fitted_frame(path, target, quality=92))


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """The size, of the same shape, with each side within Wan's limits; the image's own size if it fits."""
    scale = 1.0
    if max(width, height) > IMAGE_MAX_SIDE:
        scale = IMAGE_MAX_SIDE / max(width, height)
    elif min(width, height) < IMAGE_MIN_SIDE:
        scale = IMAGE_MIN_SIDE / min(width, height)
    fitted = (round(width * scale), round(height * scale))
    if min(fitted) < IMAGE_MIN_SIDE or max(fitted) > IMAGE_MAX_SIDE:
        # Sizes as text: a size reads `2000`, not grouped like an amount (`2,000`).
        sides = {"width": str(width), "height": str(height), "min_side": str(IMAGE_MIN_SIDE),
                 "max_side": str(IMAGE_MAX_SIDE)}  # fmt: skip
        raise RequestRejected(NAME, Said(N_("failure.rejected.dashscope.image-too-narrow"), sides), field="image")
    return fitted
