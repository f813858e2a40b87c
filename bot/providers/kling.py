"""Kling AI (Kuaishou) through its own API (`KLING_ACCESS_KEY`, `KLING_SECRET_KEY`, `KLING_BASE_URL`).

Two task families with the same life: a create (`POST v1/videos/text2video`, or `v1/videos/image2video` with a
first frame) answers with a task id; the task is polled at `GET v1/videos/{family}/{task_id}`, under the same
family it was created in, while `task_status` goes from `submitted` to `processing` and ends `succeed` (with
`task_result.videos[0].url`, a file on Kling's CDN, another origin, purged after 30 days) or `failed` (with
`task_status_msg`, e.g. the content-safety system's reason). Every answer is `{code, message, request_id,
data}`; a failure's `code` says more than its HTTP status (see `map_error`). Kling has no cancel call and reports
neither progress nor a queue position.

Each request is authenticated with a JWT the bot signs from the two keys (`bot.providers.kling_auth`). The
remote id is `{family}/{task_id}`: after a restart the poll must go to the family the task was made in. The
task lives in the region of `KLING_BASE_URL` (Singapore or Beijing; keys are not interchangeable).

A first frame travels inside the create as bare base64 (no `data:` prefix, which Kling refuses); Kling takes
JPEG or PNG, each side at least 300 px, at most 10 MB, no more elongated than 2.5:1, and makes a video of the
image's own shape (image2video has no aspect ratio).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings
from bot.domain import ASPECTS, ModelInfo, VideoRequest
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
from bot.providers.frames import encoded, fitted_frame, read_frame
from bot.providers.hosted import HostedProvider
from bot.providers.http import Kind, ProviderHttp
from bot.providers.kling_auth import KlingToken

log = logging.getLogger(__name__)

NAME = "kling"
CREDENTIAL_VARIABLE = "KLING_ACCESS_KEY / KLING_SECRET_KEY"
API = "v1/videos"
TEXT_TO_VIDEO, IMAGE_TO_VIDEO = "text2video", "image2video"
REMOTE_ID = re.compile(r"^(text2video|image2video)/[A-Za-z0-9_-]{1,128}$")
"""`{family}/{task_id}`: it goes into a URL path, so nothing else may pass (no `..`, no second slash)."""
POLL_SECONDS = 5.0
"""Kling gives no polling hint; its rate limits (code 1302/1303) count task queries with creates, and a video
takes minutes, so the bot never asks more often than this."""

AUTH_CODES = frozenset({1000, 1001, 1002, 1003, 1004})
CLOCK_CODES = {1003: "is not valid yet", 1004: "has expired"}
"""A token the bot signed a moment ago cannot be early or late unless this host's clock is wrong."""
BILLING_CODES = frozenset({1100, 1101, 1102})
"""Account exception, arrears (postpaid), resource pack used up or expired (prepaid): HTTP 429, but no wait
will help; an admin must act."""
NO_ACCESS_CODE = 1103
POLICY_CODES = frozenset({1300, 1301})
"""The platform's strategy, and its content-safety policy."""
REJECTION_CODES = frozenset({1200, 1201})
NOT_FOUND_CODES = frozenset({1202, 1203})
IP_ALLOW_LIST_CODE = 1304
VENDOR_FIELDS = (("negative_prompt", "negative_prompt"), ("model_name", "model"), ("aspect_ratio", "aspect"),
                 ("duration", "duration"), ("image", "image"), ("prompt", "prompt"))  # fmt: skip
"""Vendor field names as they appear in a parameter error → the request field the member set."""

IMAGE_FORMATS = frozenset({"PNG", "JPEG"})
IMAGE_MIN_SIDE = 300
IMAGE_MAX_SIDE = 3840
"""Kling sets no upper bound; a larger frame is scaled to this, which keeps the JPEG far below 10 MB."""
IMAGE_MAX_RATIO = 2.5
IMAGE_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class KlingModel:
    info: ModelInfo
    mode: str
    """`std` (cheaper, 720p) or `pro` (1080p where the model has it): the tier the catalogue's price is for,
    always sent so that it is never left to a vendor default."""

    @property
    def vendor_id(self) -> str:
        return self.info.id.split("/", 1)[1]


def _model(vendor_id: str, label: str, mode: str, description: str, *, image_only: bool = False) -> KlingModel:
    shape = "" if image_only else "; from an image, the video keeps the image's shape"
    info = ModelInfo(id=f"{NAME}/{vendor_id}", label=label, durations=(5, 10), aspects=ASPECTS, supports_image=True,
                     requires_image=image_only, supports_seed=False, supports_negative_prompt=True,
                     description=description + shape + ".")  # fmt: skip
    return KlingModel(info, mode)


MODELS: tuple[KlingModel, ...] = (
    _model("kling-v2-5-turbo", "Kling 2.5 Turbo", "pro", "Kling 2.5 Turbo at 1080p, 5 or 10 seconds"),
    _model("kling-v2-6", "Kling 2.6", "pro", "Kling 2.6 at 1080p (silent), 5 or 10 seconds"),
    _model("kling-v2-1-master", "Kling 2.1 Master", "pro", "Kling 2.1 Master at 1080p, 5 or 10 seconds"),
    _model("kling-v2-master", "Kling 2.0 Master", "pro", "Kling 2.0 Master at 720p, 5 or 10 seconds"),
    _model("kling-v2-1", "Kling 2.1 image-to-video", "std",
           "Animates your image (required) at 720p, 5 or 10 seconds; the video keeps the image's shape",
           image_only=True),
    _model("kling-v1-6", "Kling 1.6", "std", "Kling 1.6 at 720p, 5 or 10 seconds"),
)  # fmt: skip
_BY_ID = {model.info.id: model for model in MODELS}

TASK_STATES = {
    "submitted": RemoteState.QUEUED,
    "processing": RemoteState.RUNNING,
    "succeed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
}


class KlingProvider(HostedProvider):
    """`VideoProvider` for Kling's API."""

    name = NAME
    max_concurrency = 3
    """Kling caps concurrent tasks per resource pack (code 1303 past it, retried like any rate limit); more
    would only hold workers waiting at the vendor."""
    safe_resubmit = False
    """A create has no idempotency key: sending one twice makes, and bills, two videos."""
    catalogue = tuple(model.info for model in MODELS)

    def __init__(self, access_key: str, secret_key: str, base_url: str, *, max_download_bytes: int,
                 clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:  # fmt: skip
        self.token = KlingToken(access_key, secret_key, clock=clock)
        # The token is passed per request (it changes every half hour), only on API paths: never to the CDN.
        self.http = ProviderHttp(
            NAME,
            base_url,
            credential_variable=CREDENTIAL_VARIABLE,
            map_error=map_error,
            max_download_bytes=max_download_bytes,
            transport=transport,
        )

    async def health(self) -> ProviderHealth:
        """Lists one text-to-video task: authenticated, read-only, and it makes nothing."""
        health, _ = await self.http.probe("GET", f"{API}/{TEXT_TO_VIDEO}", params={"pageNum": 1, "pageSize": 1},
                                          headers=self.token.headers(), base_variable="KLING_BASE_URL",
                                          models=self.model_ids,
                                          hint=", and that KLING_BASE_URL is the keys' region")  # fmt: skip
        return health

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = _BY_ID.get(request.model)
        if model is None:
            raise no_such_model(NAME, request.model)
        body: dict[str, Any] = {"model_name": model.vendor_id, "prompt": request.prompt, "mode": model.mode,
                                "duration": str(request.duration)}  # fmt: skip
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if request.image_path:
            family = IMAGE_TO_VIDEO
            body["image"] = await asyncio.to_thread(image_base64, Path(request.image_path))
        else:
            family = TEXT_TO_VIDEO
            body["aspect_ratio"] = request.aspect
        # The answer is read by hand: a create the service took but answered oddly must not be repeated.
        response = await self.http.create("POST", f"{API}/{family}", json=body, headers=self.token.headers())
        try:
            answer = response.json()
            task_id = answer["data"]["task_id"]
        except (ValueError, KeyError, TypeError):
            raise CreateOutcomeUnknown(NAME, f"HTTP {response.status_code} without a task id") from None
        remote_id = f"{family}/{task_id}"
        if not isinstance(task_id, str) or not REMOTE_ID.match(remote_id):
            raise CreateOutcomeUnknown(NAME, f"unusable task id {task_id!r}")
        log.info("job %s: Kling task %s (request %s)", job_id, remote_id, answer.get("request_id"))
        return remote_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        answer = await self.http.json("GET", f"{API}/{_remote_path(remote)}", headers=self.token.headers())
        data = answer.get("data") if isinstance(answer, dict) else None
        status = data.get("task_status") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(status, str):
            raise ProviderError(f"{NAME} task answer without a status: {str(answer)[:200]}", retryable=True)
        state = TASK_STATES.get(status)
        if state is None:
            raise ProviderError(f"{NAME} task in an unknown state {status!r}", retryable=True)
        if state is RemoteState.SUCCEEDED:
            return PollResult(state, progress=1.0, output_url=_video_url(data))
        if state is RemoteState.FAILED:
            reason = str(data.get("task_status_msg") or "").strip()
            # Kling's risk control (its content policy) words the refusal of a finished video this way.
            refused = "risk control" in reason.lower()
            said = vendor_said(reason) if reason else Said(N_("failure.service-could-not-make"), {"service": "Kling"})
            return PollResult(state, error=said, refused=refused)
        return PollResult(state, poll_after=POLL_SECONDS)

    async def cancel(self, remote: RemoteJob) -> None:
        """Kling has no cancel call: the task runs to its end at the vendor, and the worker ends the job."""


def from_settings(settings: Settings) -> KlingProvider | None:
    access = settings.kling_access_key.get_secret_value() if settings.kling_access_key else ""
    secret = settings.kling_secret_key.get_secret_value() if settings.kling_secret_key else ""
    if not access or not secret:
        if access or secret:
            log.warning("Kling stays off: it needs both KLING_ACCESS_KEY and KLING_SECRET_KEY, one is empty")
        return None
    return KlingProvider(access, secret, settings.kling_base_url, max_download_bytes=settings.max_download_bytes)


def map_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """Kling's `{"code", "message", "request_id"}` failures whose code says more than the HTTP status: 429 is
    a rate limit (1302, 1303: left to the generic retry) or an account that cannot pay (1100-1102: final)."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or type(body.get("code")) is not int:
        return None
    code: int = body["code"]
    words = str(body.get("message") or "")
    message = f"{words} (code {code})" if words else f"code {code}"  # for the log; a member reads ours when empty
    status = response.status_code
    if code in AUTH_CODES:
        clock = CLOCK_CODES.get(code)
        variable = f"{CREDENTIAL_VARIABLE} and this host's clock (the token {clock})" if clock else CREDENTIAL_VARIABLE
        return CredentialsRejected(NAME, variable, status=status)
    if code == IP_ALLOW_LIST_CODE:
        return CredentialsRejected(NAME, "the IP allow-list of the Kling account (this host's address)", status=status)
    if code in BILLING_CODES:
        return ProviderBilling(NAME, message, status=status)
    if code in POLICY_CODES:
        return ContentRefused(NAME, words or Said(N_("failure.refused.kling.policy")))
    if code == NO_ACCESS_CODE:
        no_access = (
            Said(N_("failure.rejected.kling.no-access"), {"reason": message})
            if words
            else Said(N_("failure.rejected.kling.no-access.no-message"), {"code": str(code)})
        )
        return RequestRejected(NAME, no_access, field="model", status=status)
    if code in REJECTION_CODES or (code in NOT_FOUND_CODES and kind is Kind.CREATE):
        field = _field_in(message)
        return RequestRejected(NAME, message if words else _no_message(code, field), field=field, status=status)
    return None


def _no_message(code: int, field: str | None) -> Said:
    """A rejection Kling gave only a code for (a code reads as it is, never grouped like an amount)."""
    if not field:
        return Said(N_("failure.rejected.no-message"), {"code": str(code)})
    return Said(N_("failure.rejected.no-message.field"), {"field": field, "code": str(code)})


def _remote_path(remote: RemoteJob) -> str:
    if not REMOTE_ID.match(remote.remote_id):
        raise RemoteJobLost(f"{NAME}: unusable remote id {remote.remote_id!r}")
    return remote.remote_id


def _video_url(data: dict[str, Any]) -> str | None:
    result = data.get("task_result")
    videos = result.get("videos") if isinstance(result, dict) else None
    first = videos[0] if isinstance(videos, list) and videos else None
    url = first.get("url") if isinstance(first, dict) else None
    return url if isinstance(url, str) and url else None


def _field_in(message: str) -> str | None:
    for vendor_name, field in VENDOR_FIELDS:
        if re.search(rf"\b{vendor_name}\b", message):
            return field
    return None


def image_base64(path: Path) -> str:
    """The first frame as Kling takes it: bare base64 of a JPEG or PNG within its limits; sent as it is when
    it fits, else scaled (keeping its shape) and sent as JPEG. Runs in a thread."""
    with read_frame(NAME, path) as frame:
        target = fitted_size(frame.width, frame.height)
        if frame.format in IMAGE_FORMATS and target == frame.size and frame.file_bytes() <= IMAGE_MAX_BYTES:
            return encoded(path.read_bytes())
        return encoded(fitted_frame(path, target, quality=92))


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """The size, of the same shape, with each side within Kling's limits; the image's own size if it fits."""
    if max(width, height) > IMAGE_MAX_RATIO * min(width, height):
        shape = {"width": str(width), "height": str(height), "ratio": f"{IMAGE_MAX_RATIO:g}"}
        raise RequestRejected(NAME, Said(N_("failure.rejected.kling.image-too-elongated"), shape), field="image")
    scale = 1.0
    if min(width, height) < IMAGE_MIN_SIDE:
        scale = IMAGE_MIN_SIDE / min(width, height)
    elif max(width, height) > IMAGE_MAX_SIDE:
        scale = IMAGE_MAX_SIDE / max(width, height)
    return max(IMAGE_MIN_SIDE, round(width * scale)), max(IMAGE_MIN_SIDE, round(height * scale))
