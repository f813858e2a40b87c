"""Alibaba Model Studio's DashScope video-synthesis API (Wan), as strict as the real service, on loopback.

The API (`{base}/api/v1`): `POST services/aigc/video-generation/video-synthesis` with `Authorization: Bearer`
and `X-DashScope-Async: enable` (the service takes video jobs only asynchronously), `GET tasks/{task_id}`,
`POST tasks/{task_id}/cancel` (PENDING tasks only), `GET tasks` (a page of the account's tasks). Failures are
`{"request_id", "code", "message"}`. A finished task's `video_url` is a signed object-storage (OSS) URL, served
here by a second server on another port, as OSS would: signature and `Expires` in the query, an Authorization
header refused, an expired or forged signature answered 403 with OSS's XML error.

Stricter than the real service in one way, on purpose: an unknown field name is refused (DashScope ignores
it), so that an adapter's typo cannot pass unnoticed.

Knobs in DashScope's words: a job answers PENDING on its first poll, then RUNNING, then SUCCEEDED
(`polls_to_finish`); `refuse_reason` ends it FAILED with code `DataInspectionFailed` and the reason as the
message; `expire_first_url` hands out a `video_url` whose signature has expired, and a fresh one on the first
poll after that URL was refused.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from PIL import Image

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json
from tests.fakes.providers.storage import OssBucket, StorageHost

API = "/api/v1"
CREATE_PATH = f"{API}/services/aigc/video-generation/video-synthesis"
BUCKET = "dashscope-result-fake"
OBJECT_KEY = re.compile(f"/{BUCKET}/([^/]+)\\.mp4")
MAX_SEED = 2_147_483_647
IMAGE_SIDES = (360, 2000)
IMAGE_MAX_BYTES = 10 * 1024 * 1024
URL_LIFETIME = 24 * 3600

SIZES_480P = frozenset({"832*480", "480*832", "624*624"})
SIZES_720P = frozenset({"1280*720", "720*1280", "960*960", "1088*832", "832*1088"})
SIZES_1080P = frozenset({"1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632"})


@dataclass(frozen=True)
class WanSpec:
    """What one model takes, as its API reference lists it."""

    durations: frozenset[int]
    sizes: frozenset[str] | None = None
    """Text-to-video: `parameters.size`."""
    resolutions: frozenset[str] | None = None
    """Image-to-video: `parameters.resolution`, and `input.img_url` is required."""
    wan26: bool = False
    """Takes wan2.6's `audio`, `audio_url` and `shot_type`."""


MODELS = {
    "wan2.2-t2v-plus": WanSpec(frozenset({5}), sizes=SIZES_480P | SIZES_1080P),
    "wan2.6-t2v": WanSpec(frozenset({5, 10, 15}), sizes=SIZES_720P | SIZES_1080P, wan26=True),
    "wan2.6-i2v": WanSpec(frozenset({5, 10, 15}), resolutions=frozenset({"720P", "1080P"}), wan26=True),
}
ERROR_CODES = {400: "InvalidParameter", 401: "InvalidApiKey", 403: "AccessDenied", 404: "NotFound",
               429: "Throttling.RateQuota", 500: "InternalError", 503: "ServiceUnavailable",
               504: "RequestTimeOut"}  # fmt: skip
DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp|bmp);base64,(.+)$", re.DOTALL)


class BadRequest(Exception):
    """A request DashScope refuses: answered with its status, code and message."""

    def __init__(self, message: str, code: str = "InvalidParameter", status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


class DashScopeFake(FakeVendor):
    provider = "dashscope"
    model = "dashscope/wan2.6-t2v"
    image_model = "dashscope/wan2.6-i2v"
    durations = (5, 10, 15)
    result_urls = True
    can_cancel = True
    api_key: ClassVar[str] = "sk-test"

    def __init__(self) -> None:
        super().__init__()
        self.storage = StorageHost(self._middleware, self._oss_object)
        self.bucket = OssBucket(BUCKET, URL_LIFETIME)
        self.task_failure: tuple[str, str] | None = None
        """(code, message): the next jobs end FAILED with it, as a task fails at DashScope for its own reasons."""

    # --- FakeVendor -----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(CREATE_PATH, self._create)
        router.add_get(f"{API}/tasks", self._list)
        router.add_get(f"{API}/tasks/{{task_id}}", self._poll)
        router.add_post(f"{API}/tasks/{{task_id}}/cancel", self._cancel)
        router.add_route("*", "/{tail:.*}", self._unknown_url)

    def kind_of(self, request: web.Request) -> str:
        path, method = request.path, request.method
        if method == "POST" and path == CREATE_PATH:
            return "create"
        if method == "POST" and re.fullmatch(f"{API}/tasks/[^/]+/cancel", path):
            return "cancel"
        if method == "GET" and re.fullmatch(f"{API}/tasks/[^/]+", path):
            return "poll"
        return "other"

    def env(self) -> dict[str, str]:
        return {"DASHSCOPE_API_KEY": self.api_key, "DASHSCOPE_BASE_URL": f"{self.base_url}{API}"}

    def error_body(self, status: int, message: str) -> Any:
        return {"request_id": str(uuid.uuid4()), "code": ERROR_CODES.get(status, "InternalError"), "message": message}

    # --- the API --------------------------------------------------------------------------------------
    def _refusal(self, exc: BadRequest) -> web.Response:
        body = {"request_id": str(uuid.uuid4()), "code": exc.code, "message": str(exc)}
        return web.json_response(body, status=exc.status)

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if not header:
            raise BadRequest("No API-key provided.", "InvalidApiKey", 401)
        if header != f"Bearer {self.api_key}":
            raise BadRequest("Invalid API-key provided.", "InvalidApiKey", 401)

    async def _create(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            if request.headers.get("X-DashScope-Async") != "enable":
                raise BadRequest("current user api does not support synchronous calls", "AccessDenied", 403)
            if request.content_type != "application/json":
                raise BadRequest(f"Content-Type {request.content_type!r} is not supported, use application/json")
            body = await read_json(request)
            model = check_create(body)
        except BadRequest as exc:
            return self._refusal(exc)
        job = self.new_job(str(uuid.uuid4()), body)
        job.extra.update(status="PENDING", model=model, submitted=time.strftime("%Y-%m-%d %H:%M:%S.000"),
                         failure=self.task_failure)  # fmt: skip
        return web.json_response(
            {"request_id": str(uuid.uuid4()), "output": {"task_id": job.id, "task_status": "PENDING"}}
        )

    async def _poll(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
        except BadRequest as exc:
            return self._refusal(exc)
        task_id = request.match_info["task_id"]
        job = self.jobs.get(task_id)
        if job is None:  # never existed, or older than 24 hours
            return web.json_response(
                {"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            )
        outcome = self.advance(job)
        output: dict[str, Any] = {"task_id": job.id, "submit_time": job.extra["submitted"]}
        usage = None
        if outcome == "cancelled":
            output["task_status"] = "CANCELED"
        elif outcome == "refused":
            output.update(task_status="FAILED", code="DataInspectionFailed", message=job.refused)
        elif outcome == "succeeded" and job.extra["failure"] is not None:
            code, message = job.extra["failure"]
            output.update(task_status="FAILED", code=code, message=message)
        elif outcome == "running":
            output["task_status"] = "PENDING" if job.polls == 1 else "RUNNING"
        else:
            output.update(task_status="SUCCEEDED", video_url=self._video_url(job))
            parameters = job.body.get("parameters", {})
            usage = {"video_duration": parameters.get("duration", 5), "video_count": 1}
        job.extra["status"] = output["task_status"]
        answer: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": output}
        if usage is not None:
            answer["usage"] = usage
        return web.json_response(answer)

    async def _cancel(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            job = self.jobs.get(request.match_info["task_id"])
            if job is None:
                raise BadRequest("The task does not exist.", "InvalidParameter", 400)
            if job.extra["status"] != "PENDING" or job.cancelled:
                raise BadRequest("Failed to cancel the task, please confirm if the task is in PENDING status.",
                                 "UnsupportedOperation", 400)  # fmt: skip
        except BadRequest as exc:
            return self._refusal(exc)
        job.cancelled = True
        job.extra["status"] = "CANCELED"
        return web.json_response({"request_id": str(uuid.uuid4())})

    async def _list(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            page_no, page_size = (_positive_int(request.query, name, 1) for name in ("page_no", "page_size"))
        except BadRequest as exc:
            return self._refusal(exc)
        jobs = list(self.jobs.values())[(page_no - 1) * page_size : page_no * page_size]
        data = [{"task_id": job.id, "task_status": job.extra["status"], "model_name": job.extra["model"]}
                for job in jobs]  # fmt: skip
        total = len(self.jobs)
        return web.json_response({"request_id": str(uuid.uuid4()), "data": data, "total": total,
                                  "total_page": -(-total // page_size), "page_no": page_no,
                                  "page_size": page_size})  # fmt: skip

    async def _unknown_url(self, request: web.Request) -> web.Response:
        return self._refusal(BadRequest("Invalid URL provided in your request.", "InvalidURL", 400))

    # --- the result storage ---------------------------------------------------------------------------
    def _video_url(self, job: FakeJob) -> str:
        """The task's signed URL, the same on every poll (as DashScope answers) until it was refused as expired."""
        key = f"/{BUCKET}/{job.id}.mp4"
        return self.current_url(job, lambda version: self.bucket.signed_url(self.storage_url, key, expired=version < 0))

    async def _oss_object(self, request: web.Request) -> web.Response:
        return self.bucket.answer(request, self, OBJECT_KEY)


def check_create(body: Any) -> str:
    """Refuse the body as DashScope would (`BadRequest`); returns the model."""
    if not isinstance(body, dict):
        raise BadRequest("The request body is not valid JSON.")
    _only(body, {"model", "input", "parameters"}, "")
    if "model" not in body:
        raise BadRequest('Required parameter "model" missing from request.', "BadRequest.EmptyModel")
    model = body["model"]
    spec = MODELS.get(model) if isinstance(model, str) else None
    if not isinstance(model, str) or spec is None:
        raise BadRequest("Model not exist.")
    inputs = body.get("input")
    if inputs is None:
        raise BadRequest("Required input parameter missing from request.", "BadRequest.EmptyInput")
    if not isinstance(inputs, dict):
        raise BadRequest("input must be an object")
    _only(inputs, {"prompt", "negative_prompt", "img_url"} | ({"audio_url"} if spec.wan26 else set()), "input.")
    for name in ("prompt", "negative_prompt", "audio_url"):
        if name in inputs and not isinstance(inputs[name], str):
            raise BadRequest(f"input.{name} must be a string")
    if spec.resolutions is None and not inputs.get("prompt"):
        raise BadRequest("input.prompt is required")
    if spec.resolutions is None and "img_url" in inputs:
        raise BadRequest(f"img_url is not supported by model {model}")
    if spec.resolutions is not None:
        check_image(inputs.get("img_url"))
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("parameters must be an object")
    check_parameters(model, spec, parameters)
    return model


def check_parameters(model: str, spec: WanSpec, parameters: dict[str, Any]) -> None:
    allowed = {"duration", "seed", "prompt_extend", "watermark"}
    allowed |= {"size"} if spec.sizes is not None else {"resolution"}
    allowed |= {"audio", "shot_type"} if spec.wan26 else set()
    _only(parameters, allowed, "parameters.")
    for name in ("duration", "seed"):
        if name in parameters and (type(parameters[name]) is not int):
            raise BadRequest(f"parameters.{name} must be an integer")
    for name in ("prompt_extend", "watermark", "audio"):
        if name in parameters and not isinstance(parameters[name], bool):
            raise BadRequest(f"parameters.{name} must be a boolean")
    if "duration" in parameters and parameters["duration"] not in spec.durations:
        raise BadRequest(f"The duration {parameters['duration']} is not supported by model {model}.")
    if "seed" in parameters and not 0 <= parameters["seed"] <= MAX_SEED:
        raise BadRequest(f"The seed must be in [0, {MAX_SEED}].")
    if "size" in parameters:
        size = parameters["size"]
        if not isinstance(size, str) or not re.fullmatch(r"\d+\*\d+", size):
            raise BadRequest(f"The size {size!r} must be width*height, e.g. 1280*720.")
        if spec.sizes is not None and size not in spec.sizes:
            raise BadRequest(f"The size {size} is not supported by model {model}.")
    if "resolution" in parameters and parameters["resolution"] not in (spec.resolutions or ()):
        raise BadRequest(f"The resolution {parameters['resolution']!r} is not supported by model {model}.")
    if "shot_type" in parameters and parameters["shot_type"] not in ("single", "multi"):
        raise BadRequest("The shot_type must be single or multi.")


def check_image(img_url: Any) -> None:
    """`img_url`: an http(s) URL, or a base64 data URI of a JPEG/PNG/BMP/WebP within 10 MB and 360-2000 px."""
    if img_url is None:
        raise BadRequest("input.img_url is required for image-to-video")
    if not isinstance(img_url, str):
        raise BadRequest("input.img_url must be a string")
    if img_url.startswith(("http://", "https://")):
        return
    match = DATA_URI.match(img_url)
    if match is None:
        raise BadRequest("The img_url must be a URL or data:{MIME_type};base64,{base64_data}.")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise BadRequest("The img_url is not valid base64.") from None
    if len(data) > IMAGE_MAX_BYTES:
        raise BadRequest("The img_url image exceeds 10MB.")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = str(img.format).lower(), img.size
    except Exception:
        raise BadRequest("The img_url image could not be decoded.") from None
    declared = match.group(1).replace("jpg", "jpeg")
    if fmt != declared:
        raise BadRequest(f"The img_url is declared {declared} but is {fmt}.")
    low, high = IMAGE_SIDES
    if not (low <= width <= high and low <= height <= high):
        raise BadRequest(f"The img_url image is {width}x{height}: each side must be within [{low}, {high}].")


def _only(fields: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise BadRequest(f"Unknown parameter {where}{unknown[0]}.")


def _positive_int(query: Mapping[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < 1:
        raise BadRequest(f"{name} must be a positive integer")
    return int(value)
