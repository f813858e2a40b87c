"""The Vidu API (Shengshu), as strict as its documentation, on loopback, with its result storage beside it.

The API (`{base}/ent/v2`), every call with `Authorization: Token <key>` (missing, Bearer or another key → 401
`Unauthorized`): `POST text2video` and `POST img2video` (`Content-Type: application/json`; body fields checked by
name, type and per-model value), answered with the task (`task_id`, `state: created`, the settings, `credits`);
`GET tasks/{id}/creations` (`state` created/queueing/processing/success/failed, `err_code`, `credits`,
`creations[{id, url, cover_url}]`); `POST tasks/{id}/cancel` with `{"id"}` in the body (only a task not yet
scheduled: else 400 "task state is scheduled, can not cancel"); `GET credits` (the account's packages). Failures
are `{"code", "reason", "message", "metadata": {"trace_id"}}`, `reason` from Vidu's error-code table
(`FieldLacking`, `FieldUnwanted`, `FieldInvalid`, `AuditSubmitIllegal`, `CreditInsufficient`, `TaskNotFound`…).

A finished task's `url` is a presigned object-storage URL on a second server (another origin), as S3 serves
one: signature and expiry in the query, an `Authorization` header refused (400), an expired or forged URL 403.
A task answers the same URL on every poll until a download found it expired; the next poll signs a fresh one.

Knobs in Vidu's words: a job answers `queueing` on its first poll, then `processing`, then `success`
(`polls_to_finish`); `refuse_reason` refuses the create with 400 `AuditSubmitIllegal`, the reason as the
message (the real service words it "submit is illegal"; the fake carries the scripted reason there, where Vidu
puts its words); `expire_first_url` hands out an expired URL first. Beyond `FakeVendor`'s: `task_failure` (an
`err_code` the next jobs fail with, e.g. `CreationPolicyViolation`), `credit_remain` (the account's credits:
each create spends the task's, and one costing more is refused with `CreditInsufficient`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web
from PIL import Image

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json
from tests.fakes.providers.storage import StorageHost, xml_error

API = "/ent/v2"
BUCKET = "vidu-results-fake"
MAX_SEED = 2_147_483_647
IMAGE_MAX_BYTES = 10 * 1024 * 1024
URL_LIFETIME = 24 * 3600
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
           429: "TooManyRequests", 499: "Canceled"}  # fmt: skip
DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(.+)$", re.DOTALL)
CANCELLABLE = frozenset({"created", "queueing"})


@dataclass(frozen=True)
class ViduSpec:
    """What one model takes, as the API reference lists it."""

    endpoints: frozenset[str]
    resolutions: dict[int, frozenset[str]]
    """Duration → the resolutions offered at it."""
    prompt_max: int
    credits_per_second: int
    """What the fake bills, in the range of Vidu's credit table."""
    wide_aspects: bool = False
    """Also 3:4 and 4:3 (the q2 and q3 models)."""

    @property
    def default_duration(self) -> int:
        return 5 if 5 in self.resolutions else 4


BOTH = frozenset({"text2video", "img2video"})
_Q = frozenset({"540p", "720p", "1080p"})
_CLASSIC = {4: frozenset({"360p", "720p", "1080p"}), 8: frozenset({"720p"})}
MODELS = {
    "viduq3-pro": ViduSpec(BOTH, dict.fromkeys(range(1, 17), _Q), 5000, 30, True),
    "viduq3-turbo": ViduSpec(BOTH, dict.fromkeys(range(1, 17), _Q), 5000, 20, True),
    "viduq2": ViduSpec(frozenset({"text2video"}), dict.fromkeys(range(1, 11), _Q | {"360p"}), 5000, 10, True),
    "viduq2-pro": ViduSpec(frozenset({"img2video"}), dict.fromkeys(range(1, 11), _Q), 5000, 15),
    "viduq1": ViduSpec(BOTH, {5: frozenset({"1080p"})}, 1500, 16),
    "vidu2.0": ViduSpec(frozenset({"img2video"}), _CLASSIC, 1500, 25),
    "vidu1.5": ViduSpec(BOTH, _CLASSIC, 1500, 25),
}
COMMON_FIELDS = {"model": str, "prompt": str, "duration": int, "seed": int, "resolution": str,
                 "movement_amplitude": str, "bgm": bool, "payload": str, "callback_url": str, "off_peak": bool,
                 "watermark": bool, "audio": bool}  # fmt: skip
FIELDS = {
    "text2video": {**COMMON_FIELDS, "style": str, "aspect_ratio": str},
    "img2video": {**COMMON_FIELDS, "images": list, "voice_id": str, "is_rec": bool},
}
CHOICES = {"movement_amplitude": ("auto", "small", "medium", "large"), "style": ("general", "anime")}


class ViduError(Exception):
    """A request Vidu refuses: answered with its status, `reason` and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def vidu_error(status: int, reason: str, message: str) -> web.Response:
    body = {"code": status, "reason": reason, "message": message, "metadata": {"trace_id": secrets.token_hex(16)}}
    return web.json_response(body, status=status)


class ViduFake(FakeVendor):
    provider: ClassVar[str] = "vidu"
    model: ClassVar[str] = "vidu/viduq1"
    image_model: ClassVar[str | None] = "vidu/vidu2.0"
    durations: ClassVar[tuple[int, ...]] = (5,)
    result_urls: ClassVar[bool] = True
    reports_progress: ClassVar[bool] = False
    reports_queue_position: ClassVar[bool] = False
    can_cancel: ClassVar[bool] = True
    create_is_idempotent: ClassVar[bool] = False
    api_key: ClassVar[str] = "vda_test_key"

    def __init__(self) -> None:
        super().__init__()
        self.task_failure: str | None = None
        self.credit_remain = 1_000_000
        self.storage = StorageHost(self._middleware, self._object)
        self._secret = secrets.token_bytes(16)

    # --- FakeVendor -----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(f"{API}/text2video", self._create)
        router.add_post(f"{API}/img2video", self._create)
        router.add_get(f"{API}/tasks/{{task_id}}/creations", self._poll)
        router.add_post(f"{API}/tasks/{{task_id}}/cancel", self._cancel)
        router.add_get(f"{API}/credits", self._credits)
        router.add_route("*", "/{tail:.*}", self._unknown)

    def kind_of(self, request: web.Request) -> str:
        path, method = request.path, request.method
        if method == "POST" and path in (f"{API}/text2video", f"{API}/img2video"):
            return "create"
        if method == "GET" and re.fullmatch(f"{API}/tasks/[^/]+/creations", path):
            return "poll"
        if method == "POST" and re.fullmatch(f"{API}/tasks/[^/]+/cancel", path):
            return "cancel"
        return "other"

    def env(self) -> dict[str, str]:
        return {"VIDU_API_KEY": self.api_key, "VIDU_BASE_URL": f"{self.base_url}{API}"}

    def error_body(self, status: int, message: str) -> Any:
        reason = REASONS.get(status, "InternalServiceFailure")
        return {"code": status, "reason": reason, "message": message, "metadata": {"trace_id": secrets.token_hex(16)}}

    # --- the API --------------------------------------------------------------------------------------
    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            raise ViduError(401, "Unauthorized", "unauthorized")

    async def _create(self, request: web.Request) -> web.Response:
        endpoint = request.path.rsplit("/", 1)[1]
        try:
            self._check_auth(request)
            if request.content_type != "application/json":
                raise ViduError(400, "BadRequest", "bad request")
            body = await read_json(request)
            spec = check_create(endpoint, body)
            if self.refuse_reason is not None:
                raise ViduError(400, "AuditSubmitIllegal", self.refuse_reason)
            credits = spec.credits_per_second * body.get("duration", spec.default_duration)
            if credits > self.credit_remain:
                raise ViduError(400, "CreditInsufficient", "insufficient credits")
        except ViduError as exc:
            return vidu_error(exc.status, exc.reason, str(exc))
        self.credit_remain -= credits
        job = self.new_job(str(800_000_000_000_000 + secrets.randbelow(10**14)), body)
        job.extra.update(state="created", credits=credits, failure=self.task_failure)
        answer = {key: body[key] for key in ("model", "prompt", "images", "aspect_ratio", "bgm") if key in body}
        answer.update(task_id=job.id, state="created", duration=body.get("duration", spec.default_duration),
                      seed=body.get("seed", secrets.randbelow(MAX_SEED)), resolution=body.get("resolution"),
                      movement_amplitude=body.get("movement_amplitude", "auto"), payload=body.get("payload", ""),
                      off_peak=body.get("off_peak", False), credits=credits,
                      created_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"))  # fmt: skip
        return web.json_response(answer)

    async def _poll(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            job = self._job(request)
        except ViduError as exc:
            return vidu_error(exc.status, exc.reason, str(exc))
        outcome = self.advance(job)
        err_code, creations, credits = "", [], job.extra["credits"]
        if outcome == "cancelled":
            state, err_code, credits = "failed", "UserCancelled", 0
        elif outcome == "running":
            state = "queueing" if job.polls == 1 else "processing"
        elif job.extra["failure"] is not None:
            state, err_code, credits = "failed", job.extra["failure"], 0  # a failed task costs nothing
        else:
            state, url = "success", self._video_url(job)
            creations = [{"id": f"c{job.id}", "url": url, "cover_url": url.replace(".mp4", ".jpg", 1)}]
        job.extra["state"] = state
        return web.json_response({"id": job.id, "state": state, "err_code": err_code, "credits": credits,
                                  "payload": job.body.get("payload", ""), "bgm": job.body.get("bgm", False),
                                  "off_peak": False, "creations": creations})  # fmt: skip

    async def _cancel(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            body = await read_json(request)
            if not isinstance(body, dict) or not body.get("id"):
                raise ViduError(400, "FieldLacking", "field is missing or empty: id")
            if body["id"] != request.match_info["task_id"]:
                raise ViduError(400, "FieldInvalid", "invalid field: id")
            job = self._job(request)
            if job.extra["state"] not in CANCELLABLE or job.cancelled:
                raise ViduError(400, "BadRequest", "task state is scheduled, can not cancel")
        except ViduError as exc:
            return vidu_error(exc.status, exc.reason, str(exc))
        job.cancelled = True
        return web.json_response({})

    async def _credits(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            if request.query.get("show_detail", "false") not in ("true", "false"):
                raise ViduError(400, "FieldInvalid", "invalid field: show_detail")
        except ViduError as exc:
            return vidu_error(exc.status, exc.reason, str(exc))
        running = sum(1 for job in self.jobs.values() if job.extra["state"] == "processing")
        return web.json_response({"remains": [{"type": "metered", "credit_remain": self.credit_remain,
                                               "concurrency_limit": 5, "current_concurrency": running,
                                               "queue_count": 0}], "packages": []})  # fmt: skip

    async def _unknown(self, request: web.Request) -> web.Response:
        return vidu_error(404, "NotFound", "not found")

    def _job(self, request: web.Request) -> FakeJob:
        job = self.jobs.get(request.match_info["task_id"])
        if job is None:
            raise ViduError(404, "TaskNotFound", "task not found")
        return job

    # --- the result storage ---------------------------------------------------------------------------
    def _video_url(self, job: FakeJob) -> str:
        """The task's presigned URL, the same on every poll until a download found it expired."""
        return self.current_url(job, lambda version: self._presigned_url(job, version))

    def _presigned_url(self, job: FakeJob, version: int) -> str:
        signed_at = int(time.time()) - (2 * URL_LIFETIME if version < 0 else 0)
        key = f"/{BUCKET}/{job.id}/v{max(version, 0)}.mp4"
        query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={signed_at}&X-Amz-Expires={URL_LIFETIME}"
                 f"&X-Amz-Signature={self._sign(key, signed_at)}")  # fmt: skip
        return f"{self.storage_url}{key}?{query}"

    def _sign(self, key: str, signed_at: int) -> str:
        return hmac.new(self._secret, f"GET\n{key}\n{signed_at}\n{URL_LIFETIME}".encode(), hashlib.sha256).hexdigest()

    async def _object(self, request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            return xml_error(400, "InvalidArgument", "Only one auth mechanism allowed")
        if request.method not in ("GET", "HEAD"):
            return xml_error(405, "MethodNotAllowed", "The specified method is not allowed")
        signed_at, signature = request.query.get("X-Amz-Date", ""), request.query.get("X-Amz-Signature", "")
        if not signed_at.isdigit() or not hmac.compare_digest(signature, self._sign(request.path, int(signed_at))):
            return xml_error(403, "SignatureDoesNotMatch", "The request signature does not match")
        match = re.fullmatch(f"/{BUCKET}/([^/]+)/v\\d+\\.mp4", request.path)
        job = self.jobs.get(match.group(1)) if match else None
        if int(signed_at) + URL_LIFETIME < time.time():
            self.refuse_url(job)
            return xml_error(403, "AccessDenied", "Request has expired")
        if job is None:
            return xml_error(404, "NoSuchKey", "The specified key does not exist.")
        return self.video_response()


def check_create(endpoint: str, body: Any) -> ViduSpec:
    """Refuse the body as Vidu would (`ViduError`); returns the model's spec."""
    if not isinstance(body, dict):
        raise ViduError(400, "BadRequest", "bad request")
    fields = FIELDS[endpoint]
    for name, value in body.items():
        if name not in fields:
            raise ViduError(400, "FieldUnwanted", f"unwanted field: {name}")
        if type(value) is not fields[name] or value not in CHOICES.get(name, (value,)):
            raise ViduError(400, "FieldInvalid", f"invalid field: {name}")
    for name in ("model", "prompt" if endpoint == "text2video" else "images"):
        if not body.get(name):
            raise ViduError(400, "FieldLacking", f"field is missing or empty: {name}")
    spec = MODELS.get(body["model"])
    if spec is None or endpoint not in spec.endpoints:
        raise ViduError(400, "FieldInvalid", "invalid field: model")
    if len(body.get("prompt", "")) > spec.prompt_max:
        raise ViduError(400, "FieldInvalid", "invalid field: prompt")
    duration = body.get("duration", spec.default_duration)
    if duration not in spec.resolutions:
        raise ViduError(400, "FieldInvalid", "invalid field: duration")
    if "resolution" in body and body["resolution"] not in spec.resolutions[duration]:
        raise ViduError(400, "FieldInvalid", "invalid field: resolution")
    aspects = ("16:9", "9:16", "1:1") + (("3:4", "4:3") if spec.wide_aspects else ())
    if body.get("aspect_ratio", "16:9") not in aspects:
        raise ViduError(400, "FieldInvalid", "invalid field: aspect_ratio")
    if not 0 <= body.get("seed", 0) <= MAX_SEED:
        raise ViduError(400, "FieldInvalid", "invalid field: seed")
    if "images" in body:
        if len(body["images"]) != 1:
            raise ViduError(400, "FieldItemCountOutOfRange", "field item count out of range: images")
        check_image(body["images"][0])
    return spec


def check_image(image: Any) -> None:
    """A public URL, or a base64 data URI of a PNG/JPEG/WebP within 10 MB, between 1:4 and 4:1."""
    if not isinstance(image, str):
        raise ViduError(400, "FieldInvalid", "invalid field: images")
    if image.startswith(("http://", "https://")):
        return
    match = DATA_URI.match(image)
    if match is None:
        raise ViduError(400, "ImageFormatInvalid", "invalid image format")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise ViduError(400, "ImageFormatInvalid", "invalid image format") from None
    if len(data) > IMAGE_MAX_BYTES:
        raise ViduError(400, "PageSizeOutOfRange", "page size out of range")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = str(img.format).lower(), img.size
    except Exception:
        raise ViduError(400, "ImageFormatInvalid", "invalid image format") from None
    if fmt != match.group(1).replace("jpg", "jpeg"):
        raise ViduError(400, "ImageFormatInvalid", "invalid image format")
    if max(width, height) > 4 * min(width, height):
        raise ViduError(400, "PageSizeOutOfRange", "page size out of range")
