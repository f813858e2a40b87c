"""Google Veo through the Gemini API (`predictLongRunning`): one long-running operation per video.

The create answers with an operation name, `models/{model}/operations/{id}`. That name is the remote id and all
the bot needs to find the job again after a restart: a poll is `GET {base}/v1beta/{name}`. Veo reports no
progress, no queue position and no poll hint: an operation runs until `done`, and then holds the video's file
URI, a safety block (`raiMediaFilteredCount`/`raiMediaFilteredReasons`), or an `error`.

What the Gemini API lacks, so this adapter does not do it:
- cancel: Veo operations have no documented cancel; a cancelled job runs to its end at Google (and is billed).
- seed: the Gemini API refuses `seed` (Vertex only), so the models say `supports_seed=False`.
- fresh result URLs: a video's file URI never changes, and once Google deletes the file (generated files are
  kept only for a while) a 404 for it is final: no new poll can bring it back.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bot.config import Settings
from bot.domain import ModelInfo, VideoRequest
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CredentialsRejected,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.errors.said import Said, vendor_said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.frames import encoded, sniff_mime
from bot.providers.hosted import HostedProvider
from bot.providers.http import Kind, ProviderHttp, retry_after

log = logging.getLogger(__name__)

PROVIDER = "veo"
CREDENTIAL_VARIABLE = "GEMINI_API_KEY"
API_VERSION = "v1beta"
DURATIONS = (4, 6, 8)
POLL_SECONDS = 10.0
"""Veo gives no hint of its own; Google's examples poll every 10 s, and a video takes from ~11 s to minutes."""
MAX_INLINE_BYTES = 20 * 1024 * 1024
"""The Gemini API's limit for a whole request with inline data; the base64 image is nearly all of it."""

_CAPABILITIES = "4, 6 or 8 s at 720p with sound, 16:9 or 9:16, from text or a first frame"
MODELS: tuple[ModelInfo, ...] = tuple(
    ModelInfo(
        id=f"{PROVIDER}/{vendor_id}",
        label=label,
        durations=DURATIONS,
        aspects=("16:9", "9:16"),
        supports_image=True,
        supports_seed=False,
        supports_negative_prompt=True,
        description=f"Google {label} (Gemini API): {_CAPABILITIES}.",
    )
    for vendor_id, label in (
        ("veo-3.1-generate-preview", "Veo 3.1"),
        ("veo-3.1-fast-generate-preview", "Veo 3.1 Fast"),
        ("veo-3.0-generate-001", "Veo 3"),
        ("veo-3.0-fast-generate-001", "Veo 3 Fast"),
    )
)
_VENDOR_IDS = {model.id: model.id.split("/", 1)[1] for model in MODELS}

_OPERATION_NAME = re.compile(r"^models/[a-z0-9][a-z0-9.-]*/operations/[A-Za-z0-9_-]+$")
"""The remote id is put into a URL path: anything else could point the poll elsewhere."""
_FILE_ID = re.compile(r"/files/([A-Za-z0-9_-]+)(?::download)?$")
_SAFETY_WORDS = ("responsible ai", "safety", "usage guidelines", "sensitive words", "violat")
"""How Google words a prompt or image refused by its content policy inside a 400 INVALID_ARGUMENT."""
_REQUEST_FIELDS = {
    "prompt": "prompt",
    "image": "image",
    "durationSeconds": "duration",
    "aspectRatio": "aspect",
    "negativePrompt": "negative_prompt",
}
"""Gemini's field names (last part of a BadRequest field path) as the bot's request options."""
FILE_GONE = Said(N_("failure.veo.file-gone"))
"""The Gemini API keeps generated files only for a limited time, and cannot hand one out again."""


class VeoProvider(HostedProvider):
    """`VideoProvider` for the Veo models of the Gemini API."""

    name = PROVIDER
    max_concurrency = 4
    """Gemini API projects get a handful of Veo requests per minute; more jobs at once would only earn 429s."""
    safe_resubmit = False
    """Every create makes (and bills) a new video: the Gemini API has no idempotency key."""
    catalogue = MODELS

    def __init__(self, http: ProviderHttp) -> None:
        self.http = http

    async def health(self) -> ProviderHealth:
        """List the models the key's project may use (one request) and report which Veo models are among them."""
        health, listing = await self.http.probe("GET", f"{API_VERSION}/models", params={"pageSize": 1000},
                                                base_variable="GEMINI_BASE_URL")  # fmt: skip
        if not health.ok:
            return health
        listed = {entry.get("name") for entry in _dicts(_dict(listing).get("models"))}
        offered = tuple(model.id for model in MODELS if f"models/{_VENDOR_IDS[model.id]}" in listed)
        problem = None
        if not offered:
            problem = f"the project of {CREDENTIAL_VARIABLE} has no Veo model: check its access to Veo (paid tier)"
        return replace(health, models=offered, problem=problem)

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        """Start one operation; its name is the remote id. A seed is never sent: the Gemini API refuses it, and
        enqueue refuses seeds for these models."""
        vendor_model = _VENDOR_IDS.get(request.model)
        if vendor_model is None:
            no_model = Said(N_("failure.rejected.veo.no-model"), {"model_id": request.model})
            raise RequestRejected(PROVIDER, no_model, field="model")
        instance: dict[str, Any] = {"prompt": request.prompt}
        if request.image_path is not None:
            instance["image"] = await asyncio.to_thread(_inline_image, Path(request.image_path))
        parameters: dict[str, Any] = {
            "sampleCount": 1,
            "durationSeconds": request.duration,
            "aspectRatio": request.aspect,
        }
        if request.negative_prompt:
            parameters["negativePrompt"] = request.negative_prompt
        answer = await self.http.json(
            "POST",
            f"{API_VERSION}/models/{vendor_model}:predictLongRunning",
            create=True,
            json={"instances": [instance], "parameters": parameters},
        )
        name = _dict(answer).get("name")
        if not isinstance(name, str) or not _OPERATION_NAME.match(name):
            # Accepted, so maybe already being made (and billed), but without a name it can never be found.
            raise CreateOutcomeUnknown(PROVIDER, f"the answer names no operation: {str(answer)[:200]}")
        log.info("job %s: Veo operation %s", job_id, name)
        return name

    async def poll(self, remote: RemoteJob) -> PollResult:
        if not _OPERATION_NAME.match(remote.remote_id):
            raise RemoteJobLost(f"{remote.remote_id!r} is not a Veo operation name")
        operation = await self.http.json("GET", f"{API_VERSION}/{remote.remote_id}")
        return operation_result(operation)

    async def cancel(self, remote: RemoteJob) -> None:
        """Veo operations cannot be cancelled through the Gemini API: nothing to ask."""

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None:
        if result.output_url is None:
            raise ProviderError(f"Veo reported no video file for operation {remote.remote_id}", retryable=False)
        await self.http.download(file_download_url(result.output_url), dest)


def from_settings(settings: Settings) -> VeoProvider | None:
    """The Veo provider when `GEMINI_API_KEY` is set, else None."""
    key = settings.gemini_api_key.get_secret_value() if settings.gemini_api_key is not None else ""
    if not key:
        return None
    http = ProviderHttp(
        PROVIDER,
        settings.gemini_base_url,
        credential_variable=CREDENTIAL_VARIABLE,
        headers={"x-goog-api-key": key},
        map_error=vendor_error,
        max_download_bytes=settings.max_download_bytes,
    )
    return VeoProvider(http)


def operation_result(operation: Any) -> PollResult:
    """A long-running operation as the worker sees it."""
    if not isinstance(operation, dict):
        raise ProviderError("Veo answered a poll with something that is not an operation", retryable=True)
    if not operation.get("done"):
        return PollResult(RemoteState.RUNNING, poll_after=POLL_SECONDS)
    error = operation.get("error")
    if isinstance(error, dict):
        # A google.rpc.Status: `code` is a gRPC code here, not an HTTP status; the message is Google's reason.
        message = str(error.get("message") or "")
        said = vendor_said(message) if message else Said(N_("failure.service-could-not-make"), {"service": "Veo"})
        return PollResult(RemoteState.FAILED, error=said)
    answer = _dict(_dict(operation.get("response")).get("generateVideoResponse"))
    for sample in _dicts(answer.get("generatedSamples")):
        uri = _dict(sample.get("video")).get("uri")
        if isinstance(uri, str) and uri:
            return PollResult(RemoteState.SUCCEEDED, progress=1.0, output_url=uri)
    filtered = answer.get("raiMediaFilteredReasons")
    reasons = [str(reason) for reason in filtered if reason] if isinstance(filtered, list) else []
    if reasons or answer.get("raiMediaFilteredCount"):
        # Done with no video because Google's safety filters removed it: a content refusal, in Google's words.
        said = vendor_said("; ".join(reasons)) if reasons else Said(N_("failure.veo.safety-filters"))
        return PollResult(RemoteState.FAILED, error=said, refused=True)
    return PollResult(RemoteState.FAILED, error=Said(N_("failure.finished-without-video"), {"service": "Veo"}))


def file_download_url(uri: str) -> str:
    """Where to fetch a generated file. Like Google's SDK, a Gemini file URI is reduced to its file id and
    fetched from the configured base, so the API key only ever goes to that origin; anything else as given."""
    found = _FILE_ID.search(httpx.URL(uri).path)
    if found is None:
        return uri
    return f"{API_VERSION}/files/{found.group(1)}:download?alt=media"


def vendor_error(response: httpx.Response, kind: Kind) -> ProviderError | None:
    """Google's error shapes, `{"error": {"code", "message", "status", "details"}}`, where they mean more than
    the HTTP status: the rest is left to the generic mapping."""
    error = _google_error(response)
    if error is None:
        return None
    code = response.status_code
    status = str(error.get("status") or "")
    message = str(error.get("message") or "").strip() or f"HTTP {code}"
    details = _dicts(error.get("details"))
    if status == "UNAUTHENTICATED" or any(d.get("reason") == "API_KEY_INVALID" for d in details):
        # A wrong key is a 400 INVALID_ARGUMENT at Google, not a 401.
        return CredentialsRejected(PROVIDER, CREDENTIAL_VARIABLE, status=code)
    if code == 429:
        return _rate_limited(response, message, details)
    if code == 400 and status == "FAILED_PRECONDITION" and "billing" in message.lower():
        return ProviderBilling(PROVIDER, message, status=code)
    if code == 400 and status == "INVALID_ARGUMENT":
        if any(word in message.lower() for word in _SAFETY_WORDS):
            return ContentRefused(PROVIDER, message)
        return RequestRejected(PROVIDER, message, field=_violated_field(details), status=code)
    if code == 404 and "/files/" in response.request.url.path:
        return RemoteJobLost(f"{PROVIDER} no longer has the generated file", user_message=FILE_GONE)
    if code == 404 and kind is Kind.CREATE:
        return RequestRejected(PROVIDER, message, field="model", status=code)
    return None


def _rate_limited(response: httpx.Response, message: str, details: list[dict[str, Any]]) -> ProviderError | None:
    """A 429 RESOURCE_EXHAUSTED: nothing was accepted, so any request may be repeated. Google gives its wait in
    the body (`RetryInfo.retryDelay`, e.g. "37s") more often than in a Retry-After header, which wins."""
    if retry_after(response) is not None:
        return None
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = _seconds(detail.get("retryDelay"))
            if delay is not None:
                return ProviderError(f"{PROVIDER} rate limited (HTTP 429): {message}", retryable=True,
                                     retry_after=delay, status=429,
                                     user_message=Said(N_("failure.provider-busy")))  # fmt: skip
    return None


def _inline_image(path: Path) -> dict[str, str]:
    """The first frame inline, as the Gemini API wants it (it takes no image URL from us)."""
    data = path.read_bytes()
    mime_type = sniff_mime(data)
    if mime_type is None:
        raise RequestRejected(PROVIDER, Said(N_("failure.rejected.first-frame-format")), field="image")
    if len(text := encoded(data)) > MAX_INLINE_BYTES:
        too_large = Said(N_("failure.rejected.veo.image-too-large"), {"megabytes": MAX_INLINE_BYTES // (1024 * 1024)})
        raise RequestRejected(PROVIDER, too_large, field="image")
    return {"bytesBase64Encoded": text, "mimeType": mime_type}


def _google_error(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, list) and body:  # some Google front ends wrap the error in a one-element list
        body = body[0]
    error = _dict(body).get("error")
    return error if isinstance(error, dict) else None


def _violated_field(details: list[dict[str, Any]]) -> str | None:
    for detail in details:
        for violation in _dicts(detail.get("fieldViolations")):
            path = str(violation.get("field") or "")
            if path:
                return _REQUEST_FIELDS.get(path.rsplit(".", 1)[-1], path)
    return None


def _seconds(duration: Any) -> float | None:
    """A protobuf Duration in JSON ("37s", "1.5s") as seconds."""
    if isinstance(duration, str) and duration.endswith("s"):
        try:
            return max(0.0, float(duration[:-1]))
        except ValueError:
            return None
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
