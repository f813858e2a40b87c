"""The OpenAI Videos API shape (`/v1/videos`), as served by self-hosted vLLM-Omni, SGLang and LiteLLM.

Hosted Sora was shut down on 2026-09-24, so the main users are self-hosted servers: each serves models the bot
cannot know in advance. `start()` asks `GET {base}/models` which ids the server lists and offers each as
`openai/<id>` (an id may contain slashes: everything after the first one is the server's own id), reading
capabilities from extra fields where a server adds them; `model_for` gives generic capabilities to any id the
server takes without listing it.

A job: `POST {base}/videos` (always multipart/form-data, as the official SDK sends it) returns a video object
whose `id` is all the bot needs to find the job again, since the base URL comes from the settings. Then
`GET {base}/videos/{id}` until `completed` or `failed`, and `GET {base}/videos/{id}/content` for the MP4,
served by the API itself (no expiring URL). `DELETE {base}/videos/{id}` is the nearest thing to a cancel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bot.config import Settings
from bot.domain import ASPECTS, Aspect, ModelInfo, VideoRequest
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.errors.providers import could_not_make
from bot.errors.said import Said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.frames import cropped_frame
from bot.providers.http import Kind, ProviderHttp, parse_json

log = logging.getLogger(__name__)

PROVIDER = "openai"
CREDENTIAL = "OPENAI_API_KEY"
BASE_VARIABLE = "OPENAI_BASE_URL"
HOSTED_HOST = "api.openai.com"

SIZES: Mapping[Aspect, str] = {"16:9": "1280x720", "9:16": "720x1280"}
"""720p in both orientations: what every Sora model and the common self-hosted video models (Wan, LTX) make."""
GENERIC_DURATIONS = (4, 5, 8, 12)
"""The API's own `seconds` values (4, 8, 12), plus 5: the native clip length of Wan and LTX (81 frames at
16 fps), so that a self-hosted model defaults to what it makes best."""
SORA_DURATIONS = (4, 8, 12, 16, 20)
"""The SDK lists 4/8/12; OpenAI's newer guide adds 16 and 20 for both Sora models."""

REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
BILLING_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "billing_not_active"})
POLL_AFTER_HEADER = "openai-poll-after-ms"
SORA_LABELS = {"sora-2": "Sora 2", "sora-2-pro": "Sora 2 Pro"}

# Extra fields a server may add to a `/models` entry to say what a model can do (no standard names exist).
DURATION_KEYS = ("durations", "seconds", "supported_durations", "supported_seconds")
SIZE_KEYS = ("sizes", "supported_sizes", "resolutions")
IMAGE_KEYS = ("supports_image", "image_to_video", "supports_input_reference")


@dataclass(frozen=True, slots=True)
class _Model:
    """What the bot offers (`info`) and the `size` the server is asked for in each aspect it offers."""

    info: ModelInfo
    sizes: Mapping[Aspect, str]


def _generic(server_id: str) -> _Model:
    """Capabilities assumed for a server's model that says nothing of itself. Sora ids keep the OpenAI API's
    limits (no seed, no negative prompt); anything else is taken for a self-hosted diffusion model, whose
    vLLM-Omni server also accepts `seed` and `negative_prompt` form fields."""
    sora = server_id.startswith("sora-")
    info = ModelInfo(
        id=f"{PROVIDER}/{server_id}",
        label=SORA_LABELS.get(server_id, server_id) if sora else f"{server_id.rsplit('/', 1)[-1]} (self-hosted)",
        durations=SORA_DURATIONS if sora else GENERIC_DURATIONS,
        aspects=tuple(SIZES),
        supports_image=True,
        supports_seed=not sora,
        supports_negative_prompt=not sora,
        description=(
            "OpenAI's Sora, through a server that still speaks the OpenAI Videos API."
            if sora
            else "A model on the operator's own OpenAI-compatible video server (vLLM-Omni, SGLang, LiteLLM)."
        ),
    )
    return _Model(info, SIZES)


class OpenAIVideoProvider:
    """`VideoProvider` for every server that speaks the OpenAI Videos API."""

    name = PROVIDER
    safe_resubmit = False
    """The API has no idempotency key: a second create is a second (billed, or GPU-costly) video."""

    def __init__(self, http: ProviderHttp) -> None:
        self.http = http
        self.hosted = http.base_url.host == HOSTED_HOST
        # A self-hosted GPU makes one video at a time: a second job queued at the server keeps it busy between
        # two jobs, more would only wait there, outside the bot's fair queue.
        self.max_concurrency = 4 if self.hosted else 2
        known = ("sora-2", "sora-2-pro") if self.hosted else ()
        self._models: dict[str, _Model] = {m.info.id: m for m in map(_generic, known)}

    def models(self) -> Sequence[ModelInfo]:
        return tuple(model.info for model in self._models.values())

    def model_for(self, model_id: str) -> ModelInfo | None:
        return self._model(model_id).info if _server_id(model_id) else None

    async def start(self) -> None:
        try:
            self._models = self._parse_models(await self.http.json("GET", "models"))
        except ProviderError as exc:
            log.warning("openai: could not list the server's models (%s); keeping %d known", exc, len(self._models))
            return
        log.info("openai: the server offers %s", ", ".join(self._models) or "no video models")

    async def health(self) -> ProviderHealth:
        health, listing = await self.http.probe("GET", "models", base_variable=BASE_VARIABLE)
        if not health.ok:
            return health
        try:
            models = tuple(self._parse_models(listing))
        except ProviderError as exc:
            return replace(health, problem=f"{exc}: check {BASE_VARIABLE}")
        problem: str | None = None
        if not models:
            problem = (
                f"no Sora model is listed (hosted Sora shut down on 2026-09-24): point {BASE_VARIABLE} at a "
                "self-hosted server"
                if self.hosted
                else f"the server at {BASE_VARIABLE} lists no models"
            )
        return replace(health, models=models, problem=problem)

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = self._model(request.model)
        size = model.sizes.get(request.aspect)
        if size is None:
            facts = {"model_id": request.model, "aspect": request.aspect}
            raise RequestRejected(PROVIDER, Said(N_("failure.rejected.openai.aspect"), facts), field="size")
        fields = [
            ("prompt", request.prompt),
            ("model", _server_id(request.model)),
            ("seconds", str(request.duration)),  # a string in the API, not a number
            ("size", size),
        ]
        if request.seed is not None and model.info.supports_seed:
            fields.append(("seed", str(request.seed)))
        if request.negative_prompt and model.info.supports_negative_prompt:
            fields.append(("negative_prompt", request.negative_prompt))
        # (None, value) parts make httpx send multipart/form-data even when no file is attached.
        parts: list[tuple[str, tuple[str | None, bytes, str | None]]] = [
            (name, (None, value.encode(), None)) for name, value in fields
        ]
        if request.image_path:
            # A PNG of exactly the video's size: the API refuses a first frame whose dimensions differ.
            width, _, height = size.partition("x")
            frame = await cropped_frame(PROVIDER, Path(request.image_path), (int(width), int(height)), fmt="PNG")
            parts.append(("input_reference", ("first-frame.png", frame, "image/png")))
        response = await self.http.create("POST", "videos", files=parts)
        try:
            video_id = response.json()["id"]
        except (ValueError, KeyError, TypeError):
            video_id = None
        if not isinstance(video_id, str) or not video_id:
            # The server took the request (2xx) but its answer names no video: it may be making one anyway.
            raise CreateOutcomeUnknown(PROVIDER, f"HTTP {response.status_code} answer without a video id")
        log.info("job %s: openai video %s created with %s", job_id, video_id, request.model)
        return video_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        response = await self.http.read("GET", _video_path(remote.remote_id))
        video = parse_json(response, PROVIDER)
        if not isinstance(video, dict):
            raise ProviderError("openai answered a status poll without a video object", retryable=True)
        poll_after = _poll_after(response)
        progress = _progress(video.get("progress"))
        status = video.get("status")
        if status == "queued":
            return PollResult(RemoteState.QUEUED, progress=progress, poll_after=poll_after)
        if status == "in_progress":
            return PollResult(RemoteState.RUNNING, progress=progress, poll_after=poll_after)
        if status == "completed":
            return PollResult(RemoteState.SUCCEEDED, progress=1.0)
        if status == "failed":
            error = video.get("error")
            code = str(error.get("code") or "") if isinstance(error, dict) else ""
            return PollResult(RemoteState.FAILED, progress=progress, error=_failure_text(error),
                              refused=code in REFUSAL_CODES or "moderation" in code)  # fmt: skip
        # A status the API does not document: keep waiting (the poll deadline still bounds the job).
        log.warning("job %s: openai video %s has unknown status %r", remote.job_id, remote.remote_id, status)
        return PollResult(RemoteState.RUNNING, progress=progress, poll_after=poll_after)

    async def cancel(self, remote: RemoteJob) -> None:
        """The API has no cancel: deleting the video is what stops a self-hosted server's job."""
        try:
            await self.http.read("DELETE", _video_path(remote.remote_id))
        except RemoteJobLost:
            log.info("job %s: openai video %s was already gone", remote.job_id, remote.remote_id)

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None:
        path = f"{_video_path(remote.remote_id)}/content"
        await self.http.download(path, dest, headers={"Accept": "application/binary"})

    async def aclose(self) -> None:
        await self.http.aclose()

    def _model(self, model_id: str) -> _Model:
        return self._models.get(model_id) or _generic(_server_id(model_id))

    def _parse_models(self, body: Any) -> dict[str, _Model]:
        """`{"object": "list", "data": [{"id": …}, …]}`, keeping the video models: an entry that declares its
        modalities without video is left out, and so is every non-Sora model of OpenAI's own hosted API."""
        entries = body.get("data") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise ProviderError("openai: GET models did not answer with an OpenAI model list", retryable=True)
        models: dict[str, _Model] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
                continue
            if self.hosted and not entry["id"].startswith("sora-"):
                continue
            model = _model_from_entry(entry)
            if model is not None:
                models[model.info.id] = model
        return models


def _model_from_entry(entry: dict[str, Any]) -> _Model | None:
    """A listed model with the capabilities it declares (top-level or under `capabilities`), the generic ones
    for whatever it leaves out; None when it declares modalities that do not include video."""
    caps: dict[str, Any] = {**entry, **(entry["capabilities"] if isinstance(entry.get("capabilities"), dict) else {})}
    outputs = caps.get("output_modalities", caps.get("modalities"))
    if isinstance(outputs, list) and "video" not in outputs:
        return None
    generic = _generic(entry["id"])
    changes: dict[str, Any] = {
        f: caps[f] for f in ("supports_seed", "supports_negative_prompt") if isinstance(caps.get(f), bool)
    }
    image, inputs = _first(caps, IMAGE_KEYS), caps.get("input_modalities")
    if isinstance(image, bool) or isinstance(inputs, list):
        changes["supports_image"] = image if isinstance(image, bool) else "image" in (inputs or ())
    durations = _first(caps, DURATION_KEYS)
    if isinstance(durations, list):
        found = sorted({int(d) for d in durations if str(d).strip().isdigit() and 1 <= int(d) <= 60})
        changes["durations"] = tuple(found) or generic.info.durations
    sizes: dict[Aspect, str] = {}
    declared_sizes = _first(caps, SIZE_KEYS)
    for size in declared_sizes if isinstance(declared_sizes, list) else ():
        aspect = _orientation(size)
        if aspect is not None:
            sizes.setdefault(aspect, size)
    if sizes:
        changes["aspects"] = tuple(a for a in ASPECTS if a in sizes)
    if isinstance(caps.get("label"), str) and caps["label"].strip():
        changes["label"] = caps["label"].strip()
    return _Model(replace(generic.info, **changes), sizes or generic.sizes)


def _first(caps: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((caps[key] for key in keys if key in caps), None)


def _orientation(size: object) -> Aspect | None:
    """The aspect a "WxH" size is offered under: landscape 16:9, portrait 9:16, square 1:1."""
    if not isinstance(size, str):
        return None
    width, _, height = size.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or not int(width) or not int(height):
        return None
    w, h = int(width), int(height)
    return "16:9" if w > h else "9:16" if h > w else "1:1"


def map_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}` (vLLM's older top-level variant too) and
    FastAPI's `{"detail": [{"loc", "msg"}]}` for a bad form field; None leaves the status mapping to
    `ProviderHttp`."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    status = response.status_code
    detail = body.get("detail")
    if status == 422 and isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = detail[0].get("loc")
        field = str(loc[-1]) if isinstance(loc, list) and loc else None
        reason = str(detail[0].get("msg") or "") or (
            Said(N_("failure.rejected.invalid-field.field"), {"field": field})
            if field
            else Said(N_("failure.rejected.invalid-field"))
        )
        return RequestRejected(PROVIDER, reason, field=field, status=status)
    error = (
        body.get("error") if isinstance(body.get("error"), dict) else body if body.get("object") == "error" else None
    )
    if error is None:
        return None
    code, kind_of_error = str(error.get("code") or ""), str(error.get("type") or "")
    message = str(error.get("message") or code or kind_of_error or f"HTTP {status}")
    if {code, kind_of_error} & REFUSAL_CODES or "moderation" in code:
        return ContentRefused(PROVIDER, message)
    if {code, kind_of_error} & BILLING_CODES:
        return ProviderBilling(PROVIDER, message, status=status)
    param = error.get("param")
    # A 404 naming a parameter is an unknown model at create; on a read, a 404 is a video gone (`RemoteJobLost`).
    if isinstance(param, str) and param and (status in (400, 422) or (status == 404 and kind is Kind.CREATE)):
        return RequestRejected(PROVIDER, message, field=param, status=status)
    return None


def _failure_text(error: object) -> Said:
    """What the member reads about a failed video: the server's own reason, named a refusal when it is one."""
    code = str(error.get("code") or "") if isinstance(error, dict) else ""
    message = str(error.get("message") or "").strip() if isinstance(error, dict) else ""
    reason = message or code
    if code in REFUSAL_CODES or "moderation" in code:
        return ContentRefused(PROVIDER, reason).user_message
    return could_not_make(reason)


def _progress(value: object) -> float | None:
    """`progress` is a percentage (0-100) in the API."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return min(1.0, max(0.0, value / 100))


def _poll_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers[POLL_AFTER_HEADER]) / 1000)
    except (KeyError, ValueError):
        return None


def _server_id(model_id: str) -> str:
    """The server's own model id: everything after `openai/` (it may contain slashes itself)."""
    provider, _, server_id = model_id.partition("/")
    return server_id if provider == PROVIDER else ""


def _video_path(video_id: str) -> str:
    # Quoted whole: an id is one path segment, whatever a server puts in it.
    return f"videos/{quote(video_id, safe='')}"


def from_settings(settings: Settings) -> OpenAIVideoProvider | None:
    """The provider when `OPENAI_API_KEY` or `OPENAI_BASE_URL` is set. An empty key is a self-hosted server
    without authentication: no Authorization header is sent at all."""
    key = settings.openai_api_key
    if key is None and "openai_base_url" not in settings.model_fields_set:
        return None
    secret = key.get_secret_value().strip() if key is not None else ""
    http = ProviderHttp(
        PROVIDER,
        settings.openai_base_url,
        credential_variable=CREDENTIAL,
        headers={"Authorization": f"Bearer {secret}"} if secret else None,
        map_error=map_error,
        max_download_bytes=settings.max_download_bytes,
    )
    return OpenAIVideoProvider(http)
