"""Kling AI's video API, as strict as the real service, on loopback.

The API: `POST /v1/videos/text2video` and `POST /v1/videos/image2video` (JSON), `GET /v1/videos/{family}/{id}`
(a task is found only under the family it was made in), `GET /v1/videos/{family}?pageNum=&pageSize=` (a page
of tasks). Each request carries `Authorization: Bearer <JWT>`: HS256, `iss` the access key, signed with the
secret key, checked against `exp` and `nbf` on `wall_clock`. Every answer is `{code, message, request_id}`
(+ `data`), with Kling's service codes: 1001 no token, 1002 malformed, 1000 wrong signature or issuer, 1003
not valid yet, 1004 expired (all HTTP 401); 1200/1201 bad parameters (400); 1203 no such model or task (404);
1301 content safety (400); 1302 rate limit (429); 5000-5002 server faults. Kling has no cancel call.

Finished videos are served by a second server standing for Kling's CDN (another origin, no authentication);
a purged object answers 404.

Stricter than the real service on purpose: an unknown field is refused, and so is the legacy `model` field
(Kling ignores it and silently makes a kling-v1 video), so that an adapter's typo cannot pass unnoticed.

Knobs in Kling's words: a task answers `submitted` on its first poll, then `processing`, then `succeed`
(`polls_to_finish`); `refuse_reason` ends it `failed` with the reason as `task_status_msg` (Kling's risk
control reports output refusals so); `prompt_refusal` refuses the create itself with 1301; `expire_first_url`
hands out a URL already purged, and a fresh one on the first poll after it was refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from PIL import Image

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json
from tests.fakes.providers.storage import StorageHost

API = "/v1/videos"
FAMILIES = ("text2video", "image2video")
BOTH = frozenset(FAMILIES)
MAX_TEXT = 2500
IMAGE_MIN_SIDE, IMAGE_MAX_RATIO, IMAGE_MAX_BYTES = 300, 2.5, 10 * 1024 * 1024


@dataclass(frozen=True)
class KlingSpec:
    families: frozenset[str]
    cfg_scale: bool = False
    """Takes `cfg_scale` (the v1 models; "Kling-v2.x models do not support this parameter")."""
    sound: bool = False
    """Takes `sound` (v2.6 and later)."""


MODELS = {
    "kling-v1": KlingSpec(BOTH, cfg_scale=True),
    "kling-v1-5": KlingSpec(frozenset({"image2video"}), cfg_scale=True),
    "kling-v1-6": KlingSpec(BOTH, cfg_scale=True),
    "kling-v2-master": KlingSpec(BOTH),
    "kling-v2-1": KlingSpec(frozenset({"image2video"})),
    "kling-v2-1-master": KlingSpec(BOTH),
    "kling-v2-5-turbo": KlingSpec(BOTH),
    "kling-v2-6": KlingSpec(BOTH, sound=True),
}
COMMON_FIELDS = {"model_name", "prompt", "negative_prompt", "cfg_scale", "mode", "camera_control", "duration",
                 "sound", "watermark_info", "callback_url", "external_task_id"}  # fmt: skip
FIELDS = {
    "text2video": COMMON_FIELDS | {"aspect_ratio"},
    "image2video": COMMON_FIELDS | {"image", "image_tail", "static_mask", "dynamic_masks", "voice_list"},
}
ENUMS = {"mode": ("std", "pro"), "aspect_ratio": ("16:9", "9:16", "1:1"), "duration": ("5", "10"),
         "sound": ("on", "off")}  # fmt: skip
TYPES: dict[str, type] = {"callback_url": str, "external_task_id": str, "static_mask": str, "camera_control": dict,
                          "watermark_info": dict, "dynamic_masks": list, "voice_list": list}  # fmt: skip
CODES = {  # service code → (HTTP status, Kling's definition)
    1000: (401, "Authentication failed"), 1001: (401, "Authorization is empty"),
    1002: (401, "Authorization is invalid"), 1003: (401, "Authorization is not yet valid"),
    1004: (401, "Authorization has expired"), 1102: (429, "Resource pack depleted or expired"),
    1103: (403, "No permission for the requested resource"), 1200: (400, "Invalid request parameters"),
    1201: (400, "Invalid parameters"), 1202: (404, "The requested method is invalid"),
    1203: (404, "The requested resource does not exist"), 1301: (400, "Content security policy triggered"),
    1302: (429, "API requests are too fast, exceeding the rate limit"), 5000: (500, "Server internal error"),
    5001: (503, "Server temporarily unavailable"), 5002: (504, "Server internal timeout"),
}  # fmt: skip
CODE_FOR_STATUS = {400: 1200, 401: 1000, 403: 1103, 404: 1203, 429: 1302, 500: 5000, 503: 5001, 504: 5002}


class KlingError(Exception):
    """A request Kling refuses: answered with the code's HTTP status, the code and a message."""

    def __init__(self, code: int, detail: str | None = None) -> None:
        super().__init__(detail or CODES[code][1])
        self.code = code


class KlingFake(FakeVendor):
    provider = "kling"
    model = "kling/kling-v2-5-turbo"
    image_model = "kling/kling-v2-1"
    durations = (5, 10)
    result_urls = True
    can_cancel = False
    access_key: ClassVar[str] = "ak-fake-kling"
    secret_key: ClassVar[str] = "sk-fake-kling-secret"

    def __init__(self) -> None:
        super().__init__()
        self.wall_clock: Callable[[], float] = time.time
        """What a token's `exp` and `nbf` are checked against."""
        self.prompt_refusal: str | None = None
        """The next creates are refused by the content-safety check (1301) with this message."""
        self.storage = StorageHost(self._middleware, self._cdn_object)
        self._cdn_objects: dict[str, tuple[str, bool]] = {}
        """CDN path → (task id, still there)."""

    # --- FakeVendor -----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        for family in FAMILIES:
            router.add_post(f"{API}/{family}", self._create)
            router.add_get(f"{API}/{family}", self._list)
            router.add_get(f"{API}/{family}/{{task_id}}", self._poll)
        router.add_route("*", "/{tail:.*}", self._unknown)

    def kind_of(self, request: web.Request) -> str:
        families = "|".join(FAMILIES)
        if request.method == "POST" and re.fullmatch(f"{API}/({families})", request.path):
            return "create"
        if request.method == "GET" and re.fullmatch(f"{API}/({families})/[^/]+", request.path):
            return "poll"
        return "other"

    def env(self) -> dict[str, str]:
        return {"KLING_ACCESS_KEY": self.access_key, "KLING_SECRET_KEY": self.secret_key,
                "KLING_BASE_URL": self.base_url}  # fmt: skip

    def error_body(self, status: int, message: str) -> Any:
        return {"code": CODE_FOR_STATUS.get(status, 5000), "message": message, "request_id": str(uuid.uuid4())}

    # --- the API --------------------------------------------------------------------------------------
    def _refusal(self, exc: KlingError) -> web.Response:
        body = {"code": exc.code, "message": str(exc), "request_id": str(uuid.uuid4())}
        return web.json_response(body, status=CODES[exc.code][0])

    def _answer(self, data: Any) -> web.Response:
        return web.json_response({"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data})

    def check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if not header:
            raise KlingError(1001)
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            raise KlingError(1002, "Authorization must be 'Bearer <token>'")
        parts = token.split(".")
        try:
            head, claims = (json.loads(_unb64url(part)) for part in parts[:2])
            signature = _unb64url(parts[2])
        except (ValueError, IndexError, binascii.Error):
            raise KlingError(1002) from None
        if len(parts) != 3 or head != {"alg": "HS256", "typ": "JWT"} or not isinstance(claims, dict):
            raise KlingError(1002)
        if any(type(claims.get(name)) is not int for name in ("exp", "nbf")):
            raise KlingError(1002, "exp and nbf must be integer seconds")
        expected = hmac.new(self.secret_key.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if claims.get("iss") != self.access_key or not hmac.compare_digest(signature, expected):
            raise KlingError(1000)
        now = self.wall_clock()
        if now < claims["nbf"]:
            raise KlingError(1003)
        if now >= claims["exp"]:
            raise KlingError(1004)

    async def _create(self, request: web.Request) -> web.Response:
        family = request.path.rsplit("/", 1)[1]
        try:
            self.check_auth(request)
            if request.content_type != "application/json":
                raise KlingError(1200, f"Content-Type {request.content_type!r} is not supported, use application/json")
            body = await read_json(request)
            model = check_create(family, body)
            if self.prompt_refusal is not None:
                raise KlingError(1301, self.prompt_refusal)
        except KlingError as exc:
            return self._refusal(exc)
        task_id = str(800_000_000_000_000_000 + secrets.randbelow(10**17))
        job = self.new_job(task_id, body)
        now_ms = int(self.wall_clock() * 1000)
        job.extra.update(family=family, model=model, created_at=now_ms, status="submitted")
        return self._answer({"task_id": task_id, "task_status": "submitted", "task_info": _task_info(body),
                             "created_at": now_ms, "updated_at": now_ms})  # fmt: skip

    async def _poll(self, request: web.Request) -> web.Response:
        family = request.path.split("/")[3]
        try:
            self.check_auth(request)
            job = self.jobs.get(request.match_info["task_id"])
            if job is None or job.extra["family"] != family:
                raise KlingError(1203, "task not found")
        except KlingError as exc:
            return self._refusal(exc)
        outcome = self.advance(job)
        data = self._task(job)
        if outcome == "refused":
            # Kling's risk control words an output refusal itself; a scripted reason is carried after it.
            reason = job.refused or ""
            worded = (
                reason if "risk control" in reason.lower() else f"Failure to pass the risk control system: {reason}"
            )
            data.update(task_status="failed", task_status_msg=worded)
        elif outcome == "running":
            data["task_status"] = "submitted" if job.polls == 1 else "processing"
        else:
            duration = job.body.get("duration", "5")
            video = {"id": str(uuid.uuid4()), "url": self._video_url(job), "duration": f"{duration}.042"}
            data.update(task_status="succeed", task_result={"videos": [video]})
        job.extra["status"] = data["task_status"]
        return self._answer(data)

    async def _list(self, request: web.Request) -> web.Response:
        family = request.path.rsplit("/", 1)[1]
        try:
            self.check_auth(request)
            page = _page_param(request, "pageNum", 1, 1000)
            size = _page_param(request, "pageSize", 30, 500)
        except KlingError as exc:
            return self._refusal(exc)
        jobs = [job for job in self.jobs.values() if job.extra["family"] == family]
        return self._answer([self._task(job) for job in jobs[(page - 1) * size : page * size]])

    async def _unknown(self, request: web.Request) -> web.Response:
        return self._refusal(KlingError(1202, f"{request.method} {request.path} is not a method of this API"))

    def _task(self, job: FakeJob) -> dict[str, Any]:
        return {"task_id": job.id, "task_status": job.extra["status"], "task_status_msg": "",
                "task_info": _task_info(job.body), "created_at": job.extra["created_at"],
                "updated_at": int(self.wall_clock() * 1000)}  # fmt: skip

    # --- the CDN --------------------------------------------------------------------------------------
    def _video_url(self, job: FakeJob) -> str:
        """The task's URL, the same on every poll until a purged one was asked for."""
        return self.current_url(job, lambda version: self._cdn_path(job, version))

    def _cdn_path(self, job: FakeJob, version: int) -> str:
        path = f"/bs2/upload-ylab-stunt/output/{job.id}/{secrets.token_hex(8)}/output.mp4"
        self._cdn_objects[path] = (job.id, version >= 0)
        return f"{self.storage_url}{path}"

    async def _cdn_object(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method Not Allowed")
        task_id, present = self._cdn_objects.get(request.path, ("", False))
        if not present:
            self.refuse_url(self.jobs.get(task_id))
            return web.Response(status=404, text="Not Found")
        return self.video_response()


def check_create(family: str, body: Any) -> str:
    """Refuse the body as Kling would (`KlingError`); returns the model."""
    if not isinstance(body, dict):
        raise KlingError(1200, "The request body is not a JSON object")
    if "model" in body:
        raise KlingError(1201, "model is not a parameter: use model_name")
    unknown = sorted(set(body) - FIELDS[family])
    if unknown:
        raise KlingError(1201, f"Invalid parameter: {unknown[0]}")
    model = body.get("model_name", "kling-v1")
    if not isinstance(model, str) or model not in MODELS:
        raise KlingError(1203, f"model_name {model!r} does not exist")
    spec = MODELS[model]
    if family not in spec.families:
        raise KlingError(1201, f"model_name {model} is not supported by {family}")
    for name, value in body.items():
        if name in ENUMS and value not in ENUMS[name]:
            raise KlingError(1201, f"{name} must be one of {', '.join(ENUMS[name])} (a string), not {value!r}")
        if name in TYPES and not isinstance(value, TYPES[name]):
            raise KlingError(1201, f"{name} must be of type {TYPES[name].__name__}")
    for name in ("prompt", "negative_prompt"):
        value = body.get(name, "")
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise KlingError(1201, f"{name} must be a string of at most {MAX_TEXT} characters")
    if family == "text2video" and not body.get("prompt"):
        raise KlingError(1201, "prompt is required")
    if "cfg_scale" in body:
        value = body["cfg_scale"]
        if not spec.cfg_scale:
            raise KlingError(1201, f"cfg_scale is not supported by {model}")
        if type(value) not in (int, float) or not 0 <= value <= 1:
            raise KlingError(1201, "cfg_scale must be a number in [0, 1]")
    if ("sound" in body or "voice_list" in body) and not spec.sound:
        raise KlingError(1201, f"sound is not supported by {model}")
    if body.get("sound") == "on" and body.get("mode", "std") == "std":
        raise KlingError(1201, "sound is supported in pro mode only")
    if family == "image2video":
        if not body.get("image") and not body.get("image_tail"):
            raise KlingError(1201, "image or image_tail is required")
        for name in ("image", "image_tail"):
            if name in body:
                check_image(name, body[name])
    return model


def check_image(name: str, value: Any) -> None:
    """An image URL, or bare base64 (no `data:` prefix) of a JPEG or PNG within Kling's limits."""
    if not isinstance(value, str) or not value:
        raise KlingError(1201, f"{name} must be a URL or a Base64 string")
    if value.startswith(("http://", "https://")):
        return
    if value.startswith("data:"):
        raise KlingError(1201, f"{name}: do not add a data: prefix to the Base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise KlingError(1201, f"{name} is not valid Base64") from None
    if len(data) > IMAGE_MAX_BYTES:
        raise KlingError(1201, f"{name} exceeds 10MB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = str(img.format), img.size
    except Exception:
        raise KlingError(1201, f"{name} could not be decoded") from None
    if fmt not in ("JPEG", "PNG"):
        raise KlingError(1201, f"{name} must be jpg, jpeg or png, not {fmt.lower()}")
    if min(width, height) < IMAGE_MIN_SIDE:
        raise KlingError(1201, f"{name} is {width}x{height}: each side must be at least {IMAGE_MIN_SIDE}px")
    if max(width, height) > IMAGE_MAX_RATIO * min(width, height):
        raise KlingError(1201, f"{name} is {width}x{height}: the aspect ratio must be within 1:2.5 to 2.5:1")


def _task_info(body: Any) -> dict[str, Any]:
    external = body.get("external_task_id") if isinstance(body, dict) else None
    return {"external_task_id": external} if external else {}


def _page_param(request: web.Request, name: str, default: int, high: int) -> int:
    value = request.query.get(name, str(default))
    if not value.isdigit() or not 1 <= int(value) <= high:
        raise KlingError(1201, f"{name} must be an integer in [1, {high}]")
    return int(value)


def _unb64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
