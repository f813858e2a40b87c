"""Luma's Ray models through the Dream Machine API (`LUMAAI_API_KEY`, `LUMAAI_BASE_URL`).

A job is one generation: `POST generations/video` (JSON: `model`, `prompt`, `aspect_ratio`, `duration` as
"5s"/"9s", `resolution`) answers with the generation object, whose `id` (a UUID) is polled at
`GET generations/{id}` while its `state` goes queued → dreaming → completed (with `assets.video`, a file on
Luma's CDN, another origin) or failed (with `failure_reason`). The remote id is the bare generation id: with
`LUMAAI_BASE_URL` it is all a restarted worker needs. Luma reports no progress, no queue position and no
polling hint. Moderation happens after the create: a refused prompt ends the generation failed, with a reason
such as "Advanced prompt moderation failed", which the member reads. Luma charges up front and refunds a
failed generation.

Luma has no cancel call. The adapter's cancel is `DELETE generations/{id}`, which *deletes* the generation:
its record and assets are gone, and a later poll finds nothing. Whether a running generation then stops being
billed is not documented.

Image-to-video is not offered: Luma takes a first frame (`keyframes.frame0`) only as a URL it fetches itself
("You should upload and use your own cdn image urls, currently this is the only way to pass an image"), it
has no upload call, and the bot has only a local file and no public place to put it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
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
from bot.errors.providers import could_not_make, no_such_model
from bot.errors.said import Said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.hosted import HostedProvider
from bot.providers.http import Kind, ProviderHttp

log = logging.getLogger(__name__)

NAME = "luma"
CREDENTIAL_VARIABLE = "LUMAAI_API_KEY"
CREATE_PATH = "generations/video"
RESOLUTION = "720p"
"""Luma offers 540p to 4k and bills by pixel: 720p is the bot's size everywhere, and keeps a clip affordable."""
MIN_PROMPT_CHARS = 3
"""Luma refuses a shorter prompt ("Prompt is too short, minimum length is 3 characters"); its 5000-character
maximum is above the bot's own."""

STATES = {
    "queued": RemoteState.QUEUED,
    "dreaming": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
}
REFUSAL = re.compile(r"moderation|blacklisted", re.IGNORECASE)
"""How Luma's content refusals read: "Contains blacklisted words", "Advanced prompt moderation failed",
"Frame moderation failed"."""
BILLING = re.compile(r"credit|balance|billing|usage limit", re.IGNORECASE)
VENDOR_FIELDS = {"prompt": "prompt", "aspect_ratio": "aspect", "duration": "duration", "model": "model",
                 "keyframes": "image"}  # fmt: skip
"""Luma's request field → the request field the member set, for a rejected create."""

GENERATION_ID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
"""Luma's generation ids are UUIDs; nothing else may reach a URL path."""

_DURATIONS = (5, 9)
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo(
        id="luma/ray-2", label="Luma Ray 2", durations=_DURATIONS, aspects=ASPECTS, supports_seed=False,
        description="Luma's Ray 2 text-to-video at 720p: realistic motion, 5 or 9 seconds.",
    ),
    ModelInfo(
        id="luma/ray-flash-2", label="Luma Ray 2 Flash", durations=_DURATIONS, aspects=ASPECTS,
        supports_seed=False,
        description="Luma's faster, cheaper Ray 2 Flash text-to-video at 720p, 5 or 9 seconds.",
    ),
)  # fmt: skip
_BY_ID = {model.id: model for model in MODELS}


class LumaProvider(HostedProvider):
    """`VideoProvider` for Luma's Dream Machine API."""

    name = NAME
    max_concurrency = 10
    """Luma's limit of concurrent Ray generations per account on its self-serve ("Build") tier."""
    safe_resubmit = False
    """A create has no idempotency key: sending one twice makes, and bills, two videos."""
    catalogue = MODELS

    def __init__(self, api_key: str, base_url: str, *, max_download_bytes: int) -> None:
        self.http = ProviderHttp(
            NAME,
            base_url,
            credential_variable=CREDENTIAL_VARIABLE,
            headers={"Authorization": f"Bearer {api_key}"},
            map_error=map_error,
            max_download_bytes=max_download_bytes,
        )

    async def health(self) -> ProviderHealth:
        """`GET credits`: authenticated, makes nothing, and tells whether the account can pay for a video."""
        health, answer = await self.http.probe("GET", "credits", base_variable="LUMAAI_BASE_URL",
                                               models=self.model_ids)  # fmt: skip
        balance = answer.get("credit_balance") if isinstance(answer, dict) else None
        if not isinstance(balance, int | float) or isinstance(balance, bool):
            return health
        health = replace(health, balance=f"${balance / 100:,.2f}")  # Luma counts US cents
        if balance <= 0:
            problem = "the Luma account has no credit left: top it up in Luma's API billing dashboard"
            return replace(health, problem=problem)
        return health

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = _BY_ID.get(request.model)
        if model is None:
            raise no_such_model(NAME, request.model)
        if request.image_path:
            # Enqueue refuses an image for these models; a job queued under another configuration must not
            # silently become text-to-video.
            raise RequestRejected(NAME, Said(N_("failure.rejected.luma.image-url")), field="image")
        if len(request.prompt.strip()) < MIN_PROMPT_CHARS:
            too_short = Said(N_("failure.rejected.luma.prompt-too-short"), {"min_chars": MIN_PROMPT_CHARS})
            raise RequestRejected(NAME, too_short, field="prompt")
        body: dict[str, Any] = {
            "model": model.id.split("/", 1)[1],
            "prompt": request.prompt,
            "aspect_ratio": request.aspect,
            "duration": f"{request.duration}s",
            "resolution": RESOLUTION,
        }
        response = await self.http.create("POST", CREATE_PATH, json=body)
        # From here the generation exists and is charged: an answer we cannot read must not lead to a second.
        try:
            generation_id = _checked_id(response.json()["id"])
        except (ValueError, KeyError, TypeError, RemoteJobLost):
            raise CreateOutcomeUnknown(NAME, f"HTTP {response.status_code} without a generation id") from None
        log.info("job %s: Luma generation %s on %s", job_id, generation_id, body["model"])
        return generation_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        return poll_result(await self.http.json("GET", f"generations/{_checked_id(remote.remote_id)}"))

    async def cancel(self, remote: RemoteJob) -> None:
        """Deletes the generation (Luma has no cancel): its record and any video are gone with it."""
        await self.http.read("DELETE", f"generations/{_checked_id(remote.remote_id)}")
        log.info("job %s: Luma generation %s deleted", remote.job_id, remote.remote_id)


def from_settings(settings: Settings) -> LumaProvider | None:
    """The provider when `LUMAAI_API_KEY` is set, else None."""
    key = settings.lumaai_api_key.get_secret_value().strip() if settings.lumaai_api_key else ""
    if not key:
        return None
    return LumaProvider(key, settings.lumaai_base_url, max_download_bytes=settings.max_download_bytes)


def poll_result(generation: Any) -> PollResult:
    """A generation object (Luma's JSON) as the worker sees it."""
    if not isinstance(generation, dict):
        raise ProviderError(f"{NAME} answered a poll with something that is not a generation", retryable=True)
    state = STATES.get(str(generation.get("state")))
    if state is None:
        # A state this adapter does not know: keep polling (the poll deadline ends it) rather than fail a job
        # that may still be running, and charged.
        log.warning("%s: generation %s has unknown state %r", NAME, generation.get("id"), generation.get("state"))
        return PollResult(RemoteState.RUNNING)
    if state is RemoteState.SUCCEEDED:
        assets = generation.get("assets")
        url = assets.get("video") if isinstance(assets, dict) else None
        return PollResult(state, progress=1.0, output_url=url if isinstance(url, str) and url else None)
    if state is RemoteState.FAILED:
        reason = generation.get("failure_reason")
        refused = isinstance(reason, str) and REFUSAL.search(reason) is not None
        return PollResult(state, error=failure_message(reason), refused=refused)
    return PollResult(state)


def failure_message(reason: object) -> Said:
    """What the member reads about a failed generation: a moderation refusal as such, else Luma's words."""
    text = (reason if isinstance(reason, str) else "").strip()[:300]
    if REFUSAL.search(text):
        return ContentRefused(NAME, text).user_message
    return could_not_make(text)


def map_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """Luma's `{"detail": ...}` failures of a create: a message (400) or a list of field errors (422)."""
    status = response.status_code
    if status not in (400, 422):
        return None
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        location = first.get("loc")
        vendor_field = str(location[1]) if isinstance(location, list) and len(location) > 1 else ""
        field, location = VENDOR_FIELDS.get(vendor_field), vendor_field or "body"
        reason: str | Said = f"{location}: {first['msg']}" if first.get("msg") else _invalid(location, field)
        return RequestRejected(NAME, reason, field=field, status=status)
    if not isinstance(detail, str) or not detail:
        return None
    if REFUSAL.search(detail):
        return ContentRefused(NAME, detail)
    if BILLING.search(detail):
        return ProviderBilling(NAME, detail, status=status)
    field = "prompt" if detail.lower().startswith("prompt") else None
    return RequestRejected(NAME, detail, field=field, status=status)


def _invalid(location: str, field: str | None) -> Said:
    """A field error Luma gave no words for."""
    if not field:
        return Said(N_("failure.rejected.luma.invalid"), {"location": location})
    return Said(N_("failure.rejected.luma.invalid.field"), {"location": location, "field": field})


def _checked_id(value: object) -> str:
    """A generation id goes into URL paths: only a UUID, as Luma hands out, is one."""
    if not isinstance(value, str) or not GENERATION_ID.match(value):
        raise RemoteJobLost(f"{NAME}: {value!r} is not a Luma generation id")
    return value
