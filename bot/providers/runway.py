"""Runway's developer API (`RUNWAYML_API_SECRET`, `RUNWAYML_BASE_URL`): Gen-4.5, Gen-4 Turbo and Google's Veo 3.1
as Runway serves them.

Every request carries `Authorization: Bearer <secret>` and `X-Runway-Version` (the dated API version this
adapter speaks; Runway refuses a request without one). A job is one task: `POST /v1/text_to_video`, or
`POST /v1/image_to_video` when there is a first frame (camelCase JSON, its fields chosen by `model`), answers
`{"id"}`. `GET /v1/tasks/{id}` then reports PENDING, THROTTLED (the organisation's concurrency for the model is
in use: the task is accepted and waits at Runway), RUNNING with a `progress` of 0 to 1, SUCCEEDED with `output`
(URLs on Runway's CDN, another origin, that expire within 24-48 hours; each poll hands out fresh ones), FAILED
with `failure` and `failureCode`, or CANCELLED. `DELETE /v1/tasks/{id}` cancels a task that has not ended.

The remote id is the bare task id: `RUNWAYML_BASE_URL` finds it again after a restart. Runway reports no queue
position and gives no polling hint; `POLL_SECONDS` follows its SDK's pace. A failure code `SAFETY.*` is Runway's
content moderation: the member reads Runway's reason as a refusal. A first frame travels inside the create as a
data URI in `promptImage`, so there is no upload step and no public URL to host.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings
from bot.domain import Aspect, ModelInfo, VideoRequest
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
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
from bot.providers.http import Kind, ProviderHttp, error_text

log = logging.getLogger(__name__)

NAME = "runway"
CREDENTIAL_VARIABLE = "RUNWAYML_API_SECRET"
API_VERSION = "2024-11-06"
"""The `X-Runway-Version` the request shapes below belong to (the official SDK's default)."""
POLL_SECONDS = 6.0
"""The official SDK waits 6 s (± 3 s) between polls: a clip takes a minute or more."""
MAX_PROMPT_UTF16 = 1000
"""`promptText` limit of these models, counted in UTF-16 code units (an emoji counts two)."""
DATA_URI_MAX_CHARS = 5 * 1024 * 1024
"""Runway takes an image data URI shorter than 5 MB, counted on the encoded URI."""
FRAME_MAX_SIDE = 1920
"""A first frame too large to send as it is gets scaled to this longer side (more than a 720p video uses), which
keeps a JPEG of it far below the data URI limit."""

TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
"""A task id goes into URL paths: anything else could point a poll or a cancel elsewhere."""
_REFUSAL = re.compile(r"moderation|content polic|safety", re.IGNORECASE)
_BILLING = re.compile(r"enough credits|credit balance|out of credits", re.IGNORECASE)
VENDOR_FIELDS = {"promptText": "prompt", "promptImage": "image", "ratio": "aspect", "duration": "duration",
                 "seed": "seed", "negativePrompt": "negative_prompt", "model": "model"}  # fmt: skip
"""Runway's field names, as a 400's `issues[].path` names them → the request field the member set."""

TASK_STATES = {
    "PENDING": RemoteState.QUEUED,
    "THROTTLED": RemoteState.QUEUED,  # accepted, waiting for the organisation's concurrency at Runway
    "RUNNING": RemoteState.RUNNING,
    "SUCCEEDED": RemoteState.SUCCEEDED,
    "FAILED": RemoteState.FAILED,
    "CANCELLED": RemoteState.CANCELLED,
}

LANDSCAPE, PORTRAIT, SQUARE = "1280:720", "720:1280", "960:960"


@dataclass(frozen=True, slots=True)
class RunwayModel:
    """A model, the `ratio` Runway wants for each aspect, and the endpoints that serve it."""

    info: ModelInfo
    ratios: Mapping[Aspect, str]
    text_to_video: bool = True
    """Also served by `text_to_video` (every model here takes a first frame through `image_to_video`)."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Fields sent on every create, e.g. Veo's `audio`, which changes its price."""

    @property
    def vendor_id(self) -> str:
        return self.info.id.split("/", 1)[1]


_TWO_TO_TEN = tuple(range(2, 11))
MODELS: tuple[RunwayModel, ...] = (
    RunwayModel(
        ModelInfo(
            id="runway/gen4.5", label="Runway Gen-4.5", durations=_TWO_TO_TEN, aspects=("16:9", "9:16"),
            supports_image=True, supports_seed=True,
            description="Runway's Gen-4.5 at 720p, 2 to 10 seconds, from a prompt or a first frame.",
        ),
        ratios={"16:9": LANDSCAPE, "9:16": PORTRAIT},
    ),
    RunwayModel(
        ModelInfo(
            id="runway/gen4_turbo", label="Runway Gen-4 Turbo", durations=_TWO_TO_TEN,
            supports_image=True, requires_image=True, supports_seed=True,
            description="Runway's fast Gen-4 Turbo animates your image (required) at 720p, 2 to 10 seconds.",
        ),
        ratios={"16:9": LANDSCAPE, "9:16": PORTRAIT, "1:1": SQUARE},
        text_to_video=False,
    ),
    RunwayModel(
        ModelInfo(
            id="runway/veo3.1", label="Veo 3.1 (Runway)", durations=(4, 6, 8), aspects=("16:9", "9:16"),
            supports_image=True, supports_seed=False, supports_negative_prompt=True,
            description="Google's Veo 3.1 through Runway, 720p with sound, from a prompt or a first frame.",
        ),
        ratios={"16:9": LANDSCAPE, "9:16": PORTRAIT},
        fixed={"audio": True},
    ),
    RunwayModel(
        ModelInfo(
            id="runway/veo3.1_fast", label="Veo 3.1 Fast (Runway)", durations=(4, 6, 8), aspects=("16:9", "9:16"),
            supports_image=True, supports_seed=False, supports_negative_prompt=True,
            description="Google's quicker, cheaper Veo 3.1 Fast through Runway, 720p with sound.",
        ),
        ratios={"16:9": LANDSCAPE, "9:16": PORTRAIT},
        fixed={"audio": True},
    ),
)  # fmt: skip
_BY_ID = {model.info.id: model for model in MODELS}


class RunwayProvider(HostedProvider):
    """`VideoProvider` for Runway's developer API."""

    name = NAME
    max_concurrency = 2
    """Runway's default tier runs 1-2 generations per model at once; more wait at Runway as THROTTLED, each
    holding a worker, where they could wait in the bot's own queue and see their place in it."""
    safe_resubmit = False
    """A create has no idempotency key: sending one twice makes, and bills, two videos."""
    catalogue = tuple(model.info for model in MODELS)

    def __init__(self, secret: str, base_url: str, *, max_download_bytes: int) -> None:
        self.http = ProviderHttp(
            NAME,
            base_url,
            credential_variable=CREDENTIAL_VARIABLE,
            headers={"Authorization": f"Bearer {secret}", "X-Runway-Version": API_VERSION},
            map_error=map_error,
            # Runway answers 503 when it sheds load, before taking the request (its error table: safe to retry).
            not_accepted=(429, 503),
            max_download_bytes=max_download_bytes,
        )

    async def health(self) -> ProviderHealth:
        """`GET /v1/organization`: authenticated, read-only, and it tells the credit balance every job needs."""
        health, organization = await self.http.probe("GET", "v1/organization", base_variable="RUNWAYML_BASE_URL",
                                                     models=self.model_ids)  # fmt: skip
        balance = organization.get("creditBalance") if isinstance(organization, dict) else None
        if isinstance(balance, int) and not isinstance(balance, bool):
            health = replace(health, balance=f"{balance:,} credits")
        if isinstance(balance, int) and balance <= 0:
            problem = "the Runway organization has no API credits left: buy credits in Runway's developer portal"
            return replace(health, problem=problem)
        return health

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = _checked_model(request)
        image = await _prompt_image(request) if request.image_path else None
        path = "v1/image_to_video" if image is not None else "v1/text_to_video"
        response = await self.http.create("POST", path, json=create_body(model, request, image))
        # From here the task exists and is billed: an answer we cannot read must not lead to a second one.
        try:
            task_id = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            raise CreateOutcomeUnknown(NAME, f"HTTP {response.status_code} without a task id") from None
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            raise CreateOutcomeUnknown(NAME, f"unusable task id {task_id!r}")
        log.info("job %s: Runway task %s on %s", job_id, task_id, model.vendor_id)
        return task_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        return poll_result(await self.http.json("GET", f"v1/tasks/{_task_id(remote)}"))

    async def cancel(self, remote: RemoteJob) -> None:
        try:
            await self.http.read("DELETE", f"v1/tasks/{_task_id(remote)}", headers={"Accept": "*/*"})
        except RemoteJobLost:
            log.info("job %s: Runway task %s was already gone", remote.job_id, remote.remote_id)
            return
        log.info("job %s: Runway task %s cancelled", remote.job_id, remote.remote_id)


def from_settings(settings: Settings) -> RunwayProvider | None:
    """The provider when `RUNWAYML_API_SECRET` is set, else None."""
    secret = settings.runwayml_api_secret.get_secret_value().strip() if settings.runwayml_api_secret else ""
    if not secret:
        return None
    return RunwayProvider(secret, settings.runwayml_base_url, max_download_bytes=settings.max_download_bytes)


def create_body(model: RunwayModel, request: VideoRequest, image: str | None) -> dict[str, Any]:
    """The create's JSON: the model's own fields, camelCase, only those set."""
    body: dict[str, Any] = {"model": model.vendor_id, "promptText": request.prompt,
                            "ratio": model.ratios[request.aspect], "duration": request.duration}  # fmt: skip
    if image is not None:
        body["promptImage"] = image
    # Enqueue refuses a seed or a negative prompt the model does not take; one kept from before a catalogue
    # change is left out rather than refused by Runway.
    if request.seed is not None and model.info.supports_seed:
        body["seed"] = request.seed
    if request.negative_prompt and model.info.supports_negative_prompt:
        body["negativePrompt"] = request.negative_prompt
    return body | dict(model.fixed)


def poll_result(task: Any) -> PollResult:
    """A task (Runway's JSON) as the worker sees it."""
    status = task.get("status") if isinstance(task, dict) else None
    if not isinstance(task, dict) or not isinstance(status, str):
        raise ProviderError(f"{NAME} task answer without a status: {str(task)[:200]}", retryable=True)
    state = TASK_STATES.get(status)
    if state is None:
        # A status this adapter does not know: keep polling (the poll deadline ends it) rather than fail a job
        # that may still be running, and billed.
        log.warning("%s: task %s has unknown status %r", NAME, task.get("id"), status)
        return PollResult(RemoteState.RUNNING, poll_after=POLL_SECONDS)
    if state is RemoteState.SUCCEEDED:
        output = task.get("output")
        url = output[0] if isinstance(output, list) and output else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            said = Said(N_("failure.finished-without-video"), {"service": "Runway"})
            return PollResult(RemoteState.FAILED, error=said)
        return PollResult(state, progress=1.0, output_url=url)
    if state is RemoteState.FAILED:
        refused = str(task.get("failureCode") or "").startswith("SAFETY.")
        return PollResult(state, error=failure_reason(task), refused=refused)
    if state is RemoteState.CANCELLED:
        return PollResult(state, error=Said(N_("failure.cancelled-at"), {"service": "Runway"}))
    progress = task.get("progress")
    if state is RemoteState.RUNNING and isinstance(progress, int | float) and not isinstance(progress, bool):
        return PollResult(state, progress=min(1.0, max(0.0, float(progress))), poll_after=POLL_SECONDS)
    return PollResult(state, poll_after=POLL_SECONDS)


def failure_reason(task: Mapping[str, Any]) -> Said:
    """What the member reads when a task failed: a moderation refusal as such, else Runway's reason. Runway's
    `failure` is terse and meant to be given context, so the code's family decides the framing."""
    code = str(task.get("failureCode") or "")
    failure = str(task.get("failure") or "").strip()[:300]
    if code.startswith("SAFETY."):
        return Said(N_("failure.runway.moderation"), {"reason": failure or code})
    if code.startswith("INTERNAL"):  # a bad output or a fault at Runway: the same request may well pass
        return Said(N_("failure.runway.internal"), {"reason": failure or code})
    if failure and code:
        return Said(N_("failure.provider-said.code"), {"reason": failure, "code": code})
    if failure or code:
        return vendor_said(failure or code)
    return Said(N_("failure.service-could-not-make"), {"service": "Runway"})


def map_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """Runway's `{"error": "..."}` 400s whose words say more than the status: out of credits, a moderation
    refusal, or a field (named by zod-style `issues`, or by the message's `field: reason` form)."""
    if response.status_code != 400:
        return None
    reason = error_text(response)
    if _BILLING.search(reason):
        return ProviderBilling(NAME, reason, status=400)
    if _REFUSAL.search(reason):
        return ContentRefused(NAME, reason)
    field = VENDOR_FIELDS.get(_named_field(response, reason) or "")
    if field is None:
        return None  # the generic mapping: RequestRejected with Runway's words
    return RequestRejected(NAME, reason, field=field, status=400)


def _named_field(response: httpx.Response, reason: str) -> str | None:
    """The Runway field a 400 is about: the first issue's path, else the message's leading `name:`."""
    try:
        path = response.json()["issues"][0]["path"]
        if isinstance(path, list) and path and isinstance(path[0], str):
            return path[0]
    except (ValueError, LookupError, TypeError):
        pass
    leading = re.match(r"^\s*([A-Za-z]+)\s*:", reason)
    return leading.group(1) if leading else None


def _checked_model(request: VideoRequest) -> RunwayModel:
    """The model, and what its fields cannot say (`ModelInfo` covers durations, aspects, seed and the rest)."""
    model = _BY_ID.get(request.model)
    if model is None:
        raise no_such_model(NAME, request.model)
    if not request.image_path and not model.text_to_video:
        needs_image = Said(N_("failure.rejected.image-required.label"), {"label": model.info.label})
        raise RequestRejected(NAME, needs_image, field="image")
    if len(request.prompt.encode("utf-16-le")) // 2 > MAX_PROMPT_UTF16:
        too_long = Said(N_("failure.rejected.runway.prompt-too-long"), {"max_chars": str(MAX_PROMPT_UTF16)})
        raise RequestRejected(NAME, too_long, field="prompt")
    return model


def _task_id(remote: RemoteJob) -> str:
    if not TASK_ID.match(remote.remote_id):
        raise RemoteJobLost(f"{NAME}: unusable task id {remote.remote_id!r}")
    return remote.remote_id


async def _prompt_image(request: VideoRequest) -> str:
    assert request.image_path is not None
    return await asyncio.to_thread(image_data_uri, Path(request.image_path))


def image_data_uri(path: Path) -> str:
    """The first frame as a data URI: the file as it is when Runway takes it so, else scaled (keeping its
    shape) and sent as JPEG. Runs in a thread."""
    with read_frame(NAME, path) as frame:
        if len(f"data:{frame.mime};base64,") + 4 * -(-frame.file_bytes() // 3) < DATA_URI_MAX_CHARS:
            return frame.data_uri()
        uri = data_uri("image/jpeg", fitted_frame(path, frame.within(FRAME_MAX_SIDE)))
    if len(uri) >= DATA_URI_MAX_CHARS:
        raise RequestRejected(NAME, Said(N_("failure.rejected.runway.image-too-large")), field="image")
    return uri
