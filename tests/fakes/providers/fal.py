"""A loopback fal.ai queue serving Wan 2.2 A14B, as strict as fal documents it, and fal's media CDN beside it.

Two servers, two origins (two ports), as at fal: the queue API (`FAL_BASE_URL`, `queue.fal.run`) and the CDN the
result's video URL points at (`v3.fal.media`). The queue:

- `POST /{model id}` (`fal-ai/wan/v2.2-a14b/{text,image}-to-video`): JSON input checked field by field against
  the endpoint's schema (unknown field, wrong type, value out of range → 422 `{"detail": [{loc, msg, type}]}`),
  answered with `{status: IN_QUEUE, request_id, response_url, status_url, cancel_url, queue_position}`;
- `GET /fal-ai/wan/requests/{id}/status[?logs=0|1]`: owner/alias only (the full model path is a 404, as it is at
  fal), 202 while IN_QUEUE / IN_PROGRESS (logs only when asked for), 200 when COMPLETED (`error` set on failure);
- `GET /fal-ai/wan/requests/{id}`: the output `{video: {url, content_type, file_name, file_size}, seed, prompt}`,
  or the failure: a content refusal is 422 with a `content_policy_violation` detail;
- `PUT /fal-ai/wan/requests/{id}/cancel`: 202 CANCELLATION_REQUESTED, 400 ALREADY_COMPLETED, 404 NOT_FOUND.

Every queue request needs `Authorization: Key <FAL_KEY>` (missing, another scheme or another key → 401). The CDN
refuses any `Authorization` header (400: a media URL carries its own access) and answers 403 for a URL that
expired; the same URL is handed out again until a download finds it expired, then a fresh one.

Vendor knobs beyond `FakeVendor`'s: `queue_ahead` (the queue position on the first poll), `fail_reason` (jobs
end failed at the model with these words), `errors_in_status` (False: a COMPLETED status carries no `error`,
as older fal apps answer, and only the result tells the failure).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json
from tests.fakes.providers.storage import StorageHost

KEY = "test-fal-key"
APP = "fal-ai/wan"
TEXT_MODEL = "fal-ai/wan/v2.2-a14b/text-to-video"
IMAGE_MODEL = "fal-ai/wan/v2.2-a14b/image-to-video"
TERMINAL = frozenset({"succeeded", "refused", "failed", "cancelled"})


@dataclass(frozen=True)
class Field:
    kind: type
    required: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


_COMMON: dict[str, Field] = {
    "prompt": Field(str, required=True),
    "negative_prompt": Field(str),
    "num_frames": Field(int, low=17, high=161),
    "frames_per_second": Field(int, low=4, high=60),
    "seed": Field(int),
    "resolution": Field(str, choices=("480p", "580p", "720p")),
    "num_inference_steps": Field(int, low=2, high=40),
    "enable_safety_checker": Field(bool),
    "enable_output_safety_checker": Field(bool),
    "enable_prompt_expansion": Field(bool),
    "acceleration": Field(str, choices=("none", "regular")),
    "guidance_scale": Field(float, low=1, high=10),
    "guidance_scale_2": Field(float, low=1, high=10),
    "shift": Field(float, low=1, high=10),
    "interpolator_model": Field(str, choices=("none", "film", "rife")),
    "num_interpolated_frames": Field(int, low=0, high=4),
    "adjust_fps_for_interpolation": Field(bool),
    "video_quality": Field(str, choices=("low", "medium", "high", "maximum")),
    "video_write_mode": Field(str, choices=("fast", "balanced", "small")),
}
SCHEMAS: dict[str, dict[str, Field]] = {
    TEXT_MODEL: {**_COMMON, "aspect_ratio": Field(str, choices=("16:9", "9:16", "1:1"))},
    IMAGE_MODEL: {
        **_COMMON,
        "aspect_ratio": Field(str, choices=("auto", "16:9", "9:16", "1:1")),
        "image_url": Field(str, required=True),
        "end_image_url": Field(str),
    },
}
_TYPE_ERRORS = {
    str: ("string_type", "Input should be a valid string"),
    int: ("int_type", "Input should be a valid integer"),
    float: ("float_type", "Input should be a valid number"),
    bool: ("bool_type", "Input should be a valid boolean"),
}
_IMAGE_DATA_PREFIXES = ("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/webp;base64,")


def detail(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def validate(body: Any, schema: dict[str, Field]) -> list[dict[str, Any]]:
    """fal's (pydantic's) validation errors for a model input, empty when the input is valid."""
    if not isinstance(body, dict):
        return [detail(["body"], "Input should be a valid dictionary", "dict_type")]
    errors = [detail(["body", name], "Field required", "missing")
              for name, spec in schema.items() if spec.required and name not in body]  # fmt: skip
    for name, value in body.items():
        spec = schema.get(name)
        if spec is None:
            errors.append(detail(["body", name], "Extra inputs are not permitted", "extra_forbidden"))
            continue
        problem = _problem(value, spec)
        if problem is not None:
            errors.append(detail(["body", name], problem[1], problem[0]))
        elif name in ("image_url", "end_image_url") and not _is_image_reference(value):
            errors.append(detail(["body", name], "Input should be an image URL or an image data URI", "value_error"))
    return errors


def _problem(value: Any, spec: Field) -> tuple[str, str] | None:
    numeric = spec.kind is float and isinstance(value, int | float) and not isinstance(value, bool)
    exact = type(value) is spec.kind
    if not (exact or numeric):
        return _TYPE_ERRORS[spec.kind]
    if spec.choices and value not in spec.choices:
        return "literal_error", "Input should be " + " or ".join(repr(c) for c in spec.choices)
    if spec.low is not None and value < spec.low:
        return "greater_than_equal", f"Input should be greater than or equal to {spec.low:g}"
    if spec.high is not None and value > spec.high:
        return "less_than_equal", f"Input should be less than or equal to {spec.high:g}"
    return None


def _is_image_reference(value: str) -> bool:
    if value.startswith(("http://", "https://")):
        return True
    prefix = next((p for p in _IMAGE_DATA_PREFIXES if value.startswith(p)), None)
    if prefix is None:
        return False
    try:
        return bool(base64.b64decode(value[len(prefix) :], validate=True))
    except binascii.Error:
        return False


class FalFake(FakeVendor):
    provider: ClassVar[str] = "fal"
    model: ClassVar[str] = f"fal/{TEXT_MODEL}"
    image_model: ClassVar[str | None] = f"fal/{IMAGE_MODEL}"
    durations: ClassVar[tuple[int, ...]] = tuple(range(2, 11))
    result_urls: ClassVar[bool] = True
    reports_progress: ClassVar[bool] = True
    reports_queue_position: ClassVar[bool] = True
    can_cancel: ClassVar[bool] = True
    create_is_idempotent: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.queue_ahead = 1
        self.fail_reason: str | None = None
        self.errors_in_status = True
        self.storage = StorageHost(self._middleware, self._media, "/files/{job}/{version}/{name}", "GET")

    # --- FakeVendor -----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/{tail:.*}", self._queue)

    def kind_of(self, request: web.Request) -> str:
        if request.method == "POST":
            return "create"
        parts = request.path.strip("/").split("/")
        if len(parts) < 4 or parts[2] != "requests":
            return "other"
        if len(parts) == 4 and request.method == "GET":
            return "result"
        if len(parts) == 5 and (request.method, parts[4]) == ("GET", "status"):
            return "poll"
        if len(parts) == 5 and (request.method, parts[4]) == ("PUT", "cancel"):
            return "cancel"
        return "other"

    def env(self) -> dict[str, str]:
        return {"FAL_KEY": KEY, "FAL_BASE_URL": self.base_url}

    def error_body(self, status: int, message: str) -> Any:
        return {"detail": message}

    # --- the queue ------------------------------------------------------------------------------------
    async def _queue(self, request: web.Request) -> web.StreamResponse:
        refused = self._auth_problem(request.headers.get("Authorization"))
        if refused is not None:
            return self.reply_error(401, refused)
        kind = self.kind_of(request)
        if kind == "create":
            return await self._create(request)
        parts = request.path.strip("/").split("/")
        if kind == "other" or "/".join(parts[:2]) != APP:
            return self.reply_error(404, "Not Found")
        job = self.jobs.get(parts[3])
        if job is None:
            status = {"cancel": {"status": "NOT_FOUND"}}.get(kind, {"detail": "Request not found"})
            return web.json_response(status, status=404)
        if kind == "poll":
            return self._status(request, job)
        if kind == "result":
            return self._result(job)
        return self._cancel(job)

    @staticmethod
    def _auth_problem(header: str | None) -> str | None:
        if not header:
            return "Missing authorization header"
        scheme, _, key = header.partition(" ")
        if scheme != "Key":
            return "Invalid authorization header format: use 'Key <FAL_KEY>'"
        if key != KEY:
            return "No user found for Key ID and Secret"
        return None

    async def _create(self, request: web.Request) -> web.Response:
        model = request.path.strip("/")
        schema = SCHEMAS.get(model)
        if schema is None:
            return self.reply_error(404, f"Application '{model}' not found")
        body = await read_json(request) if request.content_type == "application/json" else None
        errors = validate(body, schema)
        if errors:
            return web.json_response({"detail": errors}, status=422)
        request_id = str(uuid.uuid4())
        job = self.new_job(request_id, body)
        job.extra.update(state="queued", fail=self.fail_reason)
        return web.json_response({"status": "IN_QUEUE", **self._urls(job), "queue_position": self.queue_ahead})

    def _urls(self, job: FakeJob) -> dict[str, str]:
        base = f"{self.base_url}/{APP}/requests/{job.id}"
        return {"request_id": job.id, "response_url": base, "status_url": f"{base}/status",
                "cancel_url": f"{base}/cancel"}  # fmt: skip

    def _status(self, request: web.Request, job: FakeJob) -> web.Response:
        flag = request.query.get("logs", "0")
        if flag not in ("0", "1", "true", "false"):
            return web.json_response({"detail": [detail(["query", "logs"], "Input should be a valid boolean",
                                                        "bool_parsing")]}, status=422)  # fmt: skip
        state = self.advance(job)
        if state == "succeeded" and job.extra["fail"]:
            state = "failed"
        job.extra["state"] = state
        logs = self._logs(job, state) if flag in ("1", "true") else None
        answer: dict[str, Any] = {**self._urls(job), "logs": logs}
        if state == "running" and job.polls == 1:
            return web.json_response({**answer, "status": "IN_QUEUE", "queue_position": self.queue_ahead}, status=202)
        if state == "running":
            return web.json_response({**answer, "status": "IN_PROGRESS"}, status=202)
        error = {"refused": job.refused, "failed": job.extra["fail"], "cancelled": "Request was cancelled"}.get(state)
        reported = error if self.errors_in_status else None
        return web.json_response({**answer, "status": "COMPLETED", "metrics": {"inference_time": 41.7},
                                  "error": reported, "error_type": None})  # fmt: skip

    def _logs(self, job: FakeJob, state: str) -> list[dict[str, str]]:
        lines = ["Loading Wan 2.2 A14B"]
        if state != "running" or job.polls > 1:
            percent = 100 if state in TERMINAL else int(self.progress(job) * 100)
            steps = round(27 * percent / 100)
            lines.append(f"{percent:3d}%|{'█' * (percent // 10):<10}| {steps}/27 [00:{steps:02d}<00:30,  1.1s/it]")
        now = datetime.datetime.now(datetime.UTC).isoformat()
        return [{"message": line, "level": "INFO", "source": "USER", "timestamp": now} for line in lines]

    def _result(self, job: FakeJob) -> web.Response:
        state = job.extra["state"]
        if state == "succeeded":
            prompt = job.body["prompt"]
            video = {"url": self._media_url(job), "content_type": "video/mp4", "file_name": "output.mp4",
                     "file_size": len(self.video)}  # fmt: skip
            return web.json_response({"video": video, "seed": job.body.get("seed", 1234), "prompt": prompt})
        if state == "refused":
            refusal = detail(["body", "prompt"], job.refused or "", "content_policy_violation")
            refusal.update(url="https://docs.fal.ai/errors#content_policy_violation", input=job.body["prompt"])
            return web.json_response({"detail": [refusal]}, status=422)
        if state == "failed":
            return self.reply_error(500, job.extra["fail"])
        if state == "cancelled":
            return self.reply_error(400, "Request was cancelled")
        return self.reply_error(400, "Request is still in progress")

    def _cancel(self, job: FakeJob) -> web.Response:
        if job.extra["state"] in TERMINAL - {"cancelled"}:
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        job.cancelled = True
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    # --- the CDN --------------------------------------------------------------------------------------
    def _media_url(self, job: FakeJob) -> str:
        """The URL in the result: the same one until a download finds it expired, then a fresh one."""
        if "url_version" not in job.extra or job.extra.get("url_expired"):
            job.extra.update(url_version=self.hand_out_url(job), url_expired=False)
        return f"{self.storage_url}/files/{job.id}/v{job.extra['url_version']}/output.mp4"

    async def _media(self, request: web.Request) -> web.StreamResponse:
        if "Authorization" in request.headers:
            return web.Response(status=400, text="Authorization is not accepted on media URLs")
        job = self.jobs.get(request.match_info["job"])
        if job is None or request.match_info["name"] != "output.mp4":
            return web.Response(status=404, text="Not Found")
        version = int(request.match_info["version"].removeprefix("v"))
        if version < 0 or version != job.url_version:
            job.extra["url_expired"] = True
            return web.Response(status=403, text="AccessDenied: Request has expired")
        return self.video_response()
