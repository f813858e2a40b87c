"""MiniMax's Hailuo video models through the MiniMax open platform (`MINIMAX_API_KEY`, `MINIMAX_BASE_URL`).

Three steps, all with `Authorization: Bearer`: a create (`POST /v1/video_generation`) answers with a task id; a
query (`GET /v1/query/video_generation?task_id=`) says Preparing, Queueing, Processing, Success (with a
`file_id`) or Fail; a file retrieve (`GET /v1/files/retrieve?file_id=`) turns the file id into
`file.download_url`, a signed storage URL on another origin that expires within the hour. So a poll that sees
Success also retrieves the file, and every poll after that hands out a fresh URL: the worker's re-poll after an
expired one is all it takes.

MiniMax answers its errors with HTTP 200 and a non-zero `base_resp.status_code`; `vendor_error` is the one
place those codes become the bot's error tree, for every endpoint (and for the rarer HTTP error statuses whose
body carries a `base_resp`).

The remote id is the bare task id: the task lives in the region of `MINIMAX_BASE_URL` (api.minimax.io or
api.minimaxi.com, whose keys are not interchangeable), the setting that finds it again after a restart.
MiniMax reports no progress and no queue position, gives no polling hint, and has no cancel call.

Choices:
- every clip is 768P, the one resolution that all three models make at both 6 and 10 seconds (1080P is 6 s only);
- text-to-video is 16:9 (768P is 1366×768). A first frame sets the video's shape, so it is cropped to the asked
  aspect and sent inline as a JPEG data URI (MiniMax takes one in `first_frame_image`): the bot has no public URL
  for a member's upload;
- `prompt_optimizer` keeps MiniMax's default (on); no seed and no negative prompt exist in this API.
"""

from __future__ import annotations

import asyncio
import logging
import re
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
from bot.providers.frames import data_uri, fitted_frame, image_errors
from bot.providers.hosted import HostedProvider
from bot.providers.http import Kind, ProviderHttp, retry_after

log = logging.getLogger(__name__)

NAME = "minimax"
CREDENTIAL_VARIABLE = "MINIMAX_API_KEY"
CREATE_PATH = "v1/video_generation"
QUERY_PATH = "v1/query/video_generation"
RETRIEVE_PATH = "v1/files/retrieve"
LIST_PATH = "v1/files/list"
RESOLUTION = "768P"
REGION_HINT = (", and that MINIMAX_BASE_URL is the key's region (https://api.minimax.io global, "
               "https://api.minimaxi.com China)")  # fmt: skip
POLL_SECONDS = 10.0
"""MiniMax gives no hint; its guides poll every 10 s, and a clip takes one to several minutes."""

FRAME_SIZES: dict[Aspect, tuple[int, int]] = {"16:9": (1366, 768), "9:16": (768, 1366), "1:1": (768, 768)}
"""A first frame, cropped to the asked aspect at the 768P the video is made at: well inside MiniMax's limits
(short side over 300 px, sides within 2:5 to 5:2, under 20 MB)."""
TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""Task and file ids are digit strings; anything else in a stored remote id is not one of ours."""

# base_resp.status_code values, from MiniMax's error code table.
RETRY_LATER = frozenset({1002, 1039, 1041, 2045})
"""Rate limits (requests, tokens, connections, growth): MiniMax refused the call, a later one may pass."""
SERVER_TROUBLE = frozenset({1000, 1001, 1013, 1024, 1033})
"""Unknown error, timeout, internal and downstream errors: on a create, nobody can say if a task was made."""
BAD_KEY = frozenset({1004, 2049})
"""Authentication failed, or the key is invalid (a key of the other region reads as invalid too)."""
BILLING = frozenset({1008, 2056})
"""Insufficient balance; the Token Plan's limit reached."""
REFUSED = frozenset({1026, 1027})
"""Sensitive content in the input (prompt, image) or in the generated video."""
BAD_PARAMETER = 2013
NEEDS_VERIFICATION = 2038
"""The account must complete MiniMax's real-name verification before it may use this."""
VENDOR_FIELDS = (("first_frame_image", "image"), ("duration", "duration"), ("prompt", "prompt"), ("model", "model"))
"""Vendor field names as they appear in a parameter error → the request field the member set."""


def _model(vendor_id: str, label: str, aspects: tuple[Aspect, ...], requires_image: bool, what: str) -> ModelInfo:
    return ModelInfo(
        id=f"{NAME}/{vendor_id}", label=label, durations=(6, 10), aspects=aspects, supports_image=True,
        requires_image=requires_image, supports_seed=False, supports_negative_prompt=False, description=what,
    )  # fmt: skip


MODELS: tuple[ModelInfo, ...] = (
    _model("MiniMax-Hailuo-2.3", "Hailuo 2.3 (MiniMax)", ("16:9",), False,
           "MiniMax's Hailuo 2.3: 6 or 10 s at 768p, 16:9, from text or a first frame (cropped to 16:9)."),
    _model("MiniMax-Hailuo-2.3-Fast", "Hailuo 2.3 Fast (MiniMax)", ASPECTS, True,
           "MiniMax's quicker, cheaper Hailuo 2.3: animates your image (required), 6 or 10 s at 768p; the image "
           "is cropped to the aspect you choose."),
    _model("MiniMax-Hailuo-02", "Hailuo 02 (MiniMax)", ("16:9",), False,
           "MiniMax's Hailuo 02: 6 or 10 s at 768p, 16:9, from text or a first frame (cropped to 16:9)."),
)  # fmt: skip
_BY_ID = {model.id: model for model in MODELS}

TASK_STATES = {
    "Preparing": RemoteState.QUEUED,
    "Queueing": RemoteState.QUEUED,
    "Processing": RemoteState.RUNNING,
    "Success": RemoteState.SUCCEEDED,
    "Fail": RemoteState.FAILED,
}


class MiniMaxProvider(HostedProvider):
    """`VideoProvider` for the Hailuo models on MiniMax's own API."""

    name = NAME
    max_concurrency = 4
    """MiniMax limits a paid account to 20 video creates a minute and publishes no limit on running tasks; a
    few at once keeps the account's queue short without holding workers on tasks that only wait there."""
    safe_resubmit = False
    """A create has no idempotency key: sending one twice makes, and bills, two videos."""
    catalogue = MODELS

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
        """Lists the account's files of one purpose: authenticated, read-only, and it makes nothing. (The
        documented purposes of the list are the audio ones; any proves the key.)"""
        ids = self.model_ids
        try:
            await self._read(LIST_PATH, {"purpose": "voice_clone"})
        except ProviderError as exc:  # MiniMax's refusals come in `base_resp`, often with HTTP 200
            return self.http.health_for(exc, base_variable="MINIMAX_BASE_URL", models=ids, hint=REGION_HINT)
        return ProviderHealth(reachable=True, authenticated=True, models=ids)

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = _BY_ID.get(request.model)
        if model is None:
            raise no_such_model(NAME, request.model)
        if model.requires_image and not request.image_path:
            needs_image = Said(N_("failure.rejected.image-required.label"), {"label": model.label})
            raise RequestRejected(NAME, needs_image, field="image")
        body: dict[str, Any] = {"model": model.id.split("/", 1)[1], "prompt": request.prompt,
                                "duration": request.duration, "resolution": RESOLUTION}  # fmt: skip
        if request.image_path:
            body["first_frame_image"] = await _first_frame(Path(request.image_path), FRAME_SIZES[request.aspect])
        # The answer is read by hand: a create MiniMax took but answered oddly must not be repeated.
        response = await self.http.create("POST", CREATE_PATH, json=body)
        try:
            answer = response.json()
        except ValueError:
            raise CreateOutcomeUnknown(NAME, f"HTTP {response.status_code} answer is not JSON") from None
        failure = base_resp_error(answer, response, Kind.CREATE)
        if failure is not None:
            raise failure
        task_id = answer.get("task_id") if isinstance(answer, dict) else None
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            raise CreateOutcomeUnknown(NAME, f"unusable task id {task_id!r}")
        log.info("job %s: MiniMax task %s (trace %s)", job_id, task_id, response.headers.get("Trace-Id"))
        return task_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        if not TASK_ID.match(remote.remote_id):
            raise RemoteJobLost(f"{NAME}: unusable task id {remote.remote_id!r}")
        response = await self.http.read("GET", QUERY_PATH, params={"task_id": remote.remote_id})
        answer = _json(response)
        status = answer.get("status")
        code, message = _base_resp(answer)
        # A failed task is final whatever else the answer says; a refusal of the finished video comes back here.
        if status == "Fail" or code in REFUSED:
            return PollResult(RemoteState.FAILED, error=_failure_reason(answer, code, message),
                              refused=code in REFUSED)  # fmt: skip
        failure = base_resp_error(answer, response, Kind.READ)
        if failure is not None:
            raise failure
        state = TASK_STATES.get(status) if isinstance(status, str) else None
        if state is None:
            raise ProviderError(f"{NAME} task {remote.remote_id} in an unknown state {status!r}", retryable=True)
        if state is RemoteState.SUCCEEDED:
            return PollResult(state, progress=1.0, output_url=await self._download_url(answer.get("file_id")))
        return PollResult(state, poll_after=POLL_SECONDS)

    async def cancel(self, remote: RemoteJob) -> None:
        """MiniMax has no cancel call: the task runs to its end there (and is billed); the worker ends the job."""

    async def _download_url(self, file_id: object) -> str:
        """The finished video's file, retrieved afresh: each answer carries a newly signed URL."""
        if not isinstance(file_id, str) or not TASK_ID.match(file_id):
            raise ProviderError(f"{NAME} task succeeded without a usable file id ({file_id!r})", retryable=True)
        answer = await self._read(RETRIEVE_PATH, {"file_id": file_id})
        file = answer.get("file")
        url = file.get("download_url") if isinstance(file, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ProviderError(f"{NAME} file {file_id} has no download URL", retryable=True)
        return url

    async def _read(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = await self.http.read("GET", path, params=params)
        answer = _json(response)
        failure = base_resp_error(answer, response, Kind.READ)
        if failure is not None:
            raise failure
        return answer


def from_settings(settings: Settings) -> MiniMaxProvider | None:
    key = settings.minimax_api_key.get_secret_value() if settings.minimax_api_key else ""
    if not key:
        return None
    return MiniMaxProvider(key, settings.minimax_base_url, max_download_bytes=settings.max_download_bytes)


def vendor_error(code: int, message: str, kind: Kind, *, status: int | None = None,
                 wait: float | None = None) -> ProviderError:  # fmt: skip
    """The one mapping of a MiniMax `base_resp` failure into the error tree, for every endpoint."""
    said = f"{message} (code {code})"
    if code in RETRY_LATER:
        return ProviderError(f"{NAME} rate limit: {said}", retryable=True, retry_after=wait, status=status,
                             user_message=Said(N_("failure.provider-busy")))  # fmt: skip
    if code in BAD_KEY:
        return CredentialsRejected(NAME, CREDENTIAL_VARIABLE, status=status)
    if code in BILLING:
        return ProviderBilling(NAME, said, status=status)
    if code in REFUSED:
        return ContentRefused(NAME, message)
    if code == NEEDS_VERIFICATION:
        return ProviderError(
            f"{NAME}: the account must complete real-name verification on the MiniMax platform: {said}",
            retryable=False,
            status=status,
            user_message=Said(N_("failure.account-not-set-up")),
        )
    if code == BAD_PARAMETER:
        if kind is Kind.READ:  # a query or retrieve names only an id: MiniMax no longer knows it
            return RemoteJobLost(f"{NAME} no longer knows this task or file: {said}")
        return RequestRejected(NAME, said, field=_field_in(message), status=status)
    if kind is Kind.CREATE:
        # Server trouble, or a code this adapter does not know: the task may exist (and be billed) already.
        return CreateOutcomeUnknown(NAME, said)
    if code in SERVER_TROUBLE:
        return ProviderError(f"{NAME} server trouble: {said}", retryable=True, retry_after=wait, status=status,
                             user_message=Said(N_("failure.provider-trouble")))  # fmt: skip
    return ProviderError(f"{NAME} error: {said}", retryable=False, status=status)


def base_resp_error(answer: object, response: httpx.Response, kind: Kind) -> ProviderError | None:
    """The error a MiniMax answer carries in `base_resp`, None when it says success."""
    code, message = _base_resp(answer)
    if code == 0:
        return None
    return vendor_error(code, message, kind, status=response.status_code, wait=retry_after(response))


def map_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """An HTTP error status whose body is MiniMax's own `base_resp` shape; the rest is mapped by status."""
    try:
        return base_resp_error(response.json(), response, kind)
    except ValueError:
        return None


def _base_resp(answer: object) -> tuple[int, str]:
    """(status_code, status_msg); an answer without `base_resp` counts as success when it is an object."""
    base = answer.get("base_resp") if isinstance(answer, dict) else None
    if not isinstance(base, dict):
        return 0, ""
    code = base.get("status_code")
    return (code if isinstance(code, int) else 0), str(base.get("status_msg") or "")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ProviderError(f"{NAME} answered HTTP {response.status_code} with something other than an object",
                            retryable=True)  # fmt: skip
    return answer


def _failure_reason(answer: dict[str, Any], code: int, message: str) -> Said:
    """What the member reads when the task failed: a refusal's own words, else the vendor's error message."""
    if code in REFUSED:
        if not message:
            return Said(N_("failure.policy-refused.sensitive"))
        return Said(N_("failure.policy-refused"), {"reason": message})
    detail = answer.get("error_message")
    if isinstance(detail, str) and detail.strip():
        return vendor_said(detail.strip())
    if code and message:
        return vendor_said(message)
    return Said(N_("failure.service-could-not-make"), {"service": "MiniMax"})


def _field_in(message: str) -> str | None:
    for vendor_name, field in VENDOR_FIELDS:
        if vendor_name in message:
            return field
    return None


async def _first_frame(path: Path, size: tuple[int, int]) -> str:
    """The member's image cropped to `size`, as a JPEG data URI (decoded in a thread)."""
    with image_errors(NAME, path):
        return data_uri("image/jpeg", await asyncio.to_thread(fitted_frame, path, size))
