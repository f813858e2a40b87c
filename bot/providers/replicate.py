"""Replicate: official video models run through the predictions API (`REPLICATE_API_TOKEN`).

A job is one prediction: `POST {base}/v1/models/{owner}/{name}/predictions` with the model's own input fields,
then `GET {base}/v1/predictions/{id}` until it ends. The remote id is the prediction id; with the base URL it
is all a restarted worker needs to find the job again. The finished video is a URL on Replicate's file host
(another origin, no credentials sent), and it expires: `download` is always handed a fresh poll's URL.

Replicate reports no queue position and no poll hint. Progress exists only in the model's logs, as tqdm bars
(` 45%|████▌     | 9/20 [...]`); the last one is the current step. A prediction refused by a safety checker
fails with an error that says so ("NSFW content detected", "flagged as sensitive (E005)"): that error is what
the member reads.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings
from bot.domain import ModelInfo, VideoRequest
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.errors.providers import could_not_make, no_such_model
from bot.errors.said import Said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.frames import cropped_frame, data_uri
from bot.providers.hosted import HostedProvider
from bot.providers.http import Kind, ProviderHttp, error_text

log = logging.getLogger(__name__)

PROVIDER = "replicate"
CREDENTIAL_VARIABLE = "REPLICATE_API_TOKEN"
PREFER_WAIT_SECONDS = 5
"""How long a create may hold for the prediction to end (`Prefer: wait=N`, 1-60 s). A prediction that fails at
once (its safety checker refusing the prompt, a rejected image) is then answered by the create itself. Longer
holds buy nothing for clips that take a minute, and widen the window in which an answer can be lost."""

WAN_RESOLUTION = "720p"
WAN_FPS = 16
"""Wan's native frame rate; the model makes 81 to 121 frames, so other lengths play at another rate."""
WAN_FRAMES = (81, 121)
FRAME_SIZES: dict[str, tuple[int, int]] = {"16:9": (1280, 720), "9:16": (720, 1280)}
"""A first frame is cropped to the asked aspect at 720p: the models follow the image's shape, and a JPEG of
this size stays well under the 1 MB Replicate recommends for a data URI."""

_PREDICTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_LOG_PROGRESS = re.compile(r"^\s*(?P<percent>\d+)%\s*\|.+?\|\s*(?P<done>\d+)/(?P<total>\d+)")
"""A tqdm progress line, as the Replicate SDK parses it."""
_REFUSAL = re.compile(r"nsfw|sensitive|content policy|safety|flagged|\(E005\)", re.IGNORECASE)
"""How a safety checker's refusal reads, in a failed prediction's error or a rejected create."""
_FIELD = re.compile(r"\binput\.(?P<field>[A-Za-z0-9_]+)")


def wan_timing(duration: int) -> tuple[int, int]:
    """(frames per second, frame count) for a Wan clip of about `duration` seconds: 16 fps where 81-121 frames
    allow it, else the nearest rate that keeps the frame count in range (4 s: 81 frames at 20 fps)."""
    fps = WAN_FPS
    if duration * fps + 1 < WAN_FRAMES[0]:
        fps = math.ceil((WAN_FRAMES[0] - 1) / duration)
    elif duration * fps + 1 > WAN_FRAMES[1]:
        fps = (WAN_FRAMES[1] - 1) // duration
    return fps, duration * fps + 1


def _wan_input(request: VideoRequest, image: str | None) -> dict[str, Any]:
    fps, frames = wan_timing(request.duration)
    fields: dict[str, Any] = {
        "prompt": request.prompt,
        "num_frames": frames,
        "frames_per_second": fps,
        "resolution": WAN_RESOLUTION,
    }
    if image is None:
        fields["aspect_ratio"] = request.aspect
    else:
        fields["image"] = image  # the image-to-video model has no aspect field: the cropped frame sets it
    if request.seed is not None:
        fields["seed"] = request.seed
    return fields


def _minimax_input(request: VideoRequest, image: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"prompt": request.prompt}
    if image is not None:
        fields["first_frame_image"] = image
    return fields


@dataclass(frozen=True, slots=True)
class ReplicateModel:
    info: ModelInfo
    build_input: Callable[[VideoRequest, str | None], dict[str, Any]]
    """The model's input fields (its schema on Replicate) for a request and an optional first-frame URI."""

    @property
    def path(self) -> str:
        """`owner/name` on Replicate."""
        return self.info.id.split("/", 1)[1]


_WAN_DURATIONS = (4, 5, 6, 7, 8)
MODELS: tuple[ReplicateModel, ...] = (
    ReplicateModel(
        ModelInfo(
            id="replicate/wan-video/wan-2.2-t2v-fast",
            label="Wan 2.2 Fast (Replicate)",
            durations=_WAN_DURATIONS,
            aspects=("16:9", "9:16"),
            supports_seed=True,
            description="Wan 2.2 text-to-video at 720p, quick; 16:9 or 9:16.",
        ),
        _wan_input,
    ),
    ReplicateModel(
        ModelInfo(
            id="replicate/wan-video/wan-2.2-i2v-fast",
            label="Wan 2.2 Fast image-to-video (Replicate)",
            durations=_WAN_DURATIONS,
            aspects=("16:9", "9:16"),
            supports_image=True,
            requires_image=True,
            supports_seed=True,
            description="Wan 2.2 animates your image at 720p (an image is required); 16:9 or 9:16.",
        ),
        _wan_input,
    ),
    ReplicateModel(
        ModelInfo(
            id="replicate/minimax/video-01",
            label="MiniMax Hailuo Video-01 (Replicate)",
            durations=(6,),
            aspects=("16:9",),
            supports_image=True,
            supports_seed=False,
            description="MiniMax's Hailuo Video-01: 6 s at 720p, from a prompt or a first frame.",
        ),
        _minimax_input,
    ),
)


class ReplicateProvider(HostedProvider):
    """`VideoProvider` for Replicate's official video models."""

    name = PROVIDER
    max_concurrency = 8
    """Replicate runs many predictions per account at once; its rate limits answer 429 with a wait when not."""
    safe_resubmit = False
    """The predictions API has no idempotency key: a repeated create is a second, billed prediction."""
    catalogue = tuple(model.info for model in MODELS)

    def __init__(self, token: str, base_url: str, *, max_download_bytes: int) -> None:
        self.http = ProviderHttp(
            PROVIDER,
            base_url,
            credential_variable=CREDENTIAL_VARIABLE,
            headers={"Authorization": f"Bearer {token}"},
            map_error=map_error,
            max_download_bytes=max_download_bytes,
        )
        self._models = {model.info.id: model for model in MODELS}

    async def health(self) -> ProviderHealth:
        """`GET /v1/account`: the cheapest request that needs a valid token."""
        health, _ = await self.http.probe("GET", "v1/account", base_variable="REPLICATE_BASE_URL",
                                           models=self.model_ids)  # fmt: skip
        return health

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        model = self._model(request)
        image = await self._first_frame(request) if request.image_path else None
        response = await self.http.create(
            "POST",
            f"v1/models/{model.path}/predictions",
            json={"input": model.build_input(request, image)},
            headers={"Prefer": f"wait={PREFER_WAIT_SECONDS}"},
        )
        # From here the prediction exists and is billed: an answer we cannot read must not lead to a second one.
        try:
            prediction = response.json()
            prediction_id = _checked_id(prediction["id"])
        except (ValueError, TypeError, KeyError, RemoteJobLost):
            raise CreateOutcomeUnknown(PROVIDER, f"HTTP {response.status_code} without a prediction id") from None
        if prediction.get("status") == "failed":
            raise _failure_error(prediction.get("error"))
        log.info("job %s: Replicate prediction %s on %s", job_id, prediction_id, model.path)
        return prediction_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        prediction = await self.http.json("GET", f"v1/predictions/{_checked_id(remote.remote_id)}")
        return poll_result(prediction)

    async def cancel(self, remote: RemoteJob) -> None:
        await self.http.read("POST", f"v1/predictions/{_checked_id(remote.remote_id)}/cancel")
        log.info("job %s: Replicate prediction %s cancelled", remote.job_id, remote.remote_id)

    def _model(self, request: VideoRequest) -> ReplicateModel:
        model = self._models.get(request.model)
        if model is None:
            raise no_such_model(PROVIDER, request.model)
        if model.info.requires_image and not request.image_path:
            raise RequestRejected(PROVIDER, Said(N_("failure.rejected.image-required")), field="image")
        if request.image_path and not model.info.supports_image:
            raise RequestRejected(PROVIDER, Said(N_("failure.rejected.text-only")), field="image")
        return model

    async def _first_frame(self, request: VideoRequest) -> str:
        """The member's image as a JPEG data URI, cropped to the asked aspect (decoded in a thread)."""
        assert request.image_path is not None
        frame = await cropped_frame(PROVIDER, Path(request.image_path), FRAME_SIZES[request.aspect])
        return data_uri("image/jpeg", frame)


def poll_result(prediction: Any) -> PollResult:
    """A prediction (Replicate's JSON) as the worker sees it."""
    if not isinstance(prediction, dict):
        raise ProviderError(f"{PROVIDER} answered a poll with something that is not a prediction", retryable=True)
    status = prediction.get("status")
    if status == "starting":  # waiting for a machine (a cold boot, or the account's queue)
        return PollResult(RemoteState.QUEUED)
    if status == "processing":
        return PollResult(RemoteState.RUNNING, progress=log_progress(prediction.get("logs")))
    if status == "succeeded":
        url = video_url(prediction.get("output"))
        if url is None:
            return PollResult(RemoteState.FAILED, error=Said(N_("failure.no-video")))
        return PollResult(RemoteState.SUCCEEDED, progress=1.0, output_url=url)
    if status == "failed":
        failure = _failure_error(prediction.get("error"))
        return PollResult(RemoteState.FAILED, error=failure.user_message, refused=isinstance(failure, ContentRefused))
    if status == "canceled":
        return PollResult(RemoteState.CANCELLED, error=Said(N_("failure.cancelled-at"), {"service": "Replicate"}))
    # A status this adapter does not know: keep polling (the poll deadline ends it) rather than fail a job
    # that may still be running, and billed.
    log.warning("%s: prediction %s has unknown status %r", PROVIDER, prediction.get("id"), status)
    return PollResult(RemoteState.RUNNING)


def log_progress(logs: object) -> float | None:
    """The last tqdm bar in the logs, 0..1; None when there is none."""
    if not isinstance(logs, str):
        return None
    for line in reversed(logs.splitlines()):
        found = _LOG_PROGRESS.match(line)
        if found and int(found["total"]) > 0:
            return min(1.0, int(found["done"]) / int(found["total"]))
    return None


def video_url(output: object) -> str | None:
    """The video among a prediction's outputs: a URL string, or a list (or object) of them; an .mp4 first."""
    if isinstance(output, str):
        candidates = [output]
    elif isinstance(output, list):
        candidates = [item for item in output if isinstance(item, str)]
    elif isinstance(output, dict):
        candidates = [item for item in output.values() if isinstance(item, str)]
    else:
        return None
    urls = [url for url in candidates if url.startswith(("https://", "http://"))]
    videos = [url for url in urls if url.split("?", 1)[0].lower().endswith(".mp4")]
    found = videos or urls
    return found[0] if found else None


def _failure_error(error: object) -> ProviderError:
    """A failed prediction's error as the member reads it: a safety refusal as such, anything else as the
    model's own words (trimmed: some are tracebacks)."""
    said = (error if isinstance(error, str) else "").strip()[:300]
    reason = said or "no reason given"
    if _REFUSAL.search(reason):
        return ContentRefused(PROVIDER, reason)
    return ProviderError(f"{PROVIDER} prediction failed: {reason}", retryable=False, user_message=could_not_make(said))


def map_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """Replicate's problem details (RFC 7807: `title`, `detail`, `status`; 422 adds `invalid_fields`). Billing
    (402), credentials and throttling (429 + Retry-After) are left to the generic mapping."""
    status = response.status_code
    if status not in (400, 404, 422):
        return None
    reason = error_text(response)
    field = _invalid_field(response, reason) if status == 422 else None
    if field is None and status in (400, 422) and _REFUSAL.search(reason):
        return ContentRefused(PROVIDER, reason)
    if status == 422:
        return RequestRejected(PROVIDER, reason, field=field, status=status)
    if status == 404 and kind is Kind.CREATE:
        no_model = Said(N_("failure.rejected.replicate.no-such-model"), {"reason": reason})
        return RequestRejected(PROVIDER, no_model, field="model", status=status)
    return None


def _invalid_field(response: httpx.Response, reason: str) -> str | None:
    """The input field a 422 names (`invalid_fields[].field` or the detail's `input.<name>`), without `input.`."""
    try:
        fields = response.json().get("invalid_fields") or []
        named = str(fields[0]["field"])
    except (ValueError, AttributeError, LookupError, TypeError):
        named = reason
    found = _FIELD.search(named)
    return found["field"] if found else None


def _checked_id(remote_id: object) -> str:
    """A prediction id goes into a URL path: anything but Replicate's id alphabet is not ours."""
    if not isinstance(remote_id, str) or not _PREDICTION_ID.match(remote_id):
        raise RemoteJobLost(f"{PROVIDER}: {remote_id!r} is not a Replicate prediction id")
    return remote_id


def from_settings(settings: Settings) -> ReplicateProvider | None:
    """The provider when `REPLICATE_API_TOKEN` is set, else None."""
    if settings.replicate_api_token is None:
        return None
    token = settings.replicate_api_token.get_secret_value().strip()
    if not token:
        return None
    return ReplicateProvider(token, settings.replicate_base_url, max_download_bytes=settings.max_download_bytes)
