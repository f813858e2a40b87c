"""A loopback Replicate: the predictions API as its SDK and docs describe it, and a second server standing in
for its file host (replicate.delivery).

Strict where Replicate is: `Authorization: Bearer <token>` (else a 401 problem), the official-model path
`/v1/models/{owner}/{name}/predictions` (an unknown model is a 404), a JSON body with the fields inside `input`,
each input field checked against the model's schema (name, type, range, choices: a 422 whose `invalid_fields`
name it), and the `Prefer: wait[=1..60]` header's format. Errors are RFC 7807 problem details
(`title`, `detail`, `status`).

The file host takes no credentials (a request carrying `Authorization` is refused: a signed URL must never get
the API token) and answers 404 for a URL that has expired. Replicate's own knobs, beyond the common ones:
`starting_polls` (the first polls answer `starting`, waiting for a machine), `finish_within_wait` (a create
with `Prefer: wait` comes back already ended), `output_as_list` (the output is a list of URLs).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json
from tests.fakes.providers.storage import StorageHost

TOKEN = "r8_test"
FILES_PREFIX = "/xezq/"
STEPS = 20
"""Denoising steps the fake's logs count through (a tqdm bar per step)."""
TITLES = {400: "Bad request", 401: "Unauthenticated", 402: "Insufficient credit", 404: "Not found",
          422: "Input validation failed", 429: "Request was throttled", 500: "Internal server error",
          502: "Bad gateway", 503: "Service unavailable", 504: "Gateway timeout"}  # fmt: skip
_PREFER = re.compile(r"^wait(=(?P<seconds>\d+))?$")
_DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,(?P<data>.+)$", re.DOTALL)
_BODY_FIELDS = frozenset({"input", "webhook", "webhook_completed", "webhook_events_filter", "stream"})


@dataclass(frozen=True)
class Field:
    """One input field of a model's schema."""

    kind: str
    """`string`, `uri`, `integer`, `number` or `boolean`."""
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False


_WAN = {
    "prompt": Field("string", required=True),
    "num_frames": Field("integer", 81, 121),
    "resolution": Field("string", choices=("480p", "720p")),
    "frames_per_second": Field("integer", 5, 30),
    "go_fast": Field("boolean"),
    "sample_shift": Field("number", 1, 20),
    "seed": Field("integer"),
    "interpolate_output": Field("boolean"),
    "disable_safety_checker": Field("boolean"),
}
SCHEMAS: dict[str, dict[str, Field]] = {
    "wan-video/wan-2.2-t2v-fast": {**_WAN, "aspect_ratio": Field("string", choices=("16:9", "9:16"))},
    "wan-video/wan-2.2-i2v-fast": {**_WAN, "image": Field("uri", required=True), "last_image": Field("uri")},
    "minimax/video-01": {
        "prompt": Field("string", required=True),
        "first_frame_image": Field("uri"),
        "subject_reference": Field("uri"),
        "prompt_optimizer": Field("boolean"),
    },
}
"""The input schemas of the models the adapter uses, as Replicate publishes them."""


def check_input(values: dict[str, Any], schema: dict[str, Field]) -> list[dict[str, str]]:
    """What is wrong with `values`, as Replicate's `invalid_fields` entries (empty when nothing)."""
    problems = [_problem("required", "input", f"{name} is required")
                for name, spec in schema.items() if spec.required and name not in values]  # fmt: skip
    for name, value in values.items():
        spec = schema.get(name)
        where = f"input.{name}"
        if spec is None:
            problems.append(_problem("additional_property_not_allowed", "input",
                                     f"Additional property {name} is not allowed"))  # fmt: skip
            continue
        given = _json_type(value)
        expected = "string" if spec.kind == "uri" else spec.kind
        if given != expected and not (expected == "number" and given == "integer"):
            problems.append(_problem("invalid_type", where, f"Invalid type. Expected: {expected}, given: {given}"))
        elif spec.kind == "uri" and not _is_uri(value):
            problems.append(_problem("format", where, "Does not match format 'uri'"))
        elif spec.choices and value not in spec.choices:
            allowed = ", ".join(f'"{choice}"' for choice in spec.choices)
            problems.append(_problem("enum", where, f"{where} must be one of the following: {allowed}"))
        elif spec.low is not None and value < spec.low:
            problems.append(_problem("number_gte", where, f"Must be greater than or equal to {spec.low:g}"))
        elif spec.high is not None and value > spec.high:
            problems.append(_problem("number_lte", where, f"Must be less than or equal to {spec.high:g}"))
    return problems


def _problem(kind: str, field: str, description: str) -> dict[str, str]:
    return {"type": kind, "field": field, "description": description}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "null"


def _is_uri(value: str) -> bool:
    if value.startswith(("https://", "http://")):
        return True
    found = _DATA_URI.match(value)
    if found is None:
        return False
    try:
        return bool(base64.b64decode(found["data"], validate=True))
    except binascii.Error:
        return False


def decoded_data_uri(value: str) -> bytes:
    """The bytes of a data URI the fake accepted (for tests to look at the image sent)."""
    found = _DATA_URI.match(value)
    assert found is not None, value[:40]
    return base64.b64decode(found["data"])


class ReplicateFake(FakeVendor):
    provider: ClassVar[str] = "replicate"
    model: ClassVar[str] = "replicate/wan-video/wan-2.2-t2v-fast"
    image_model: ClassVar[str | None] = "replicate/wan-video/wan-2.2-i2v-fast"
    durations: ClassVar[tuple[int, ...]] = (4, 5, 6, 7, 8)
    result_urls: ClassVar[bool] = True
    reports_progress: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.starting_polls = 0
        self.finish_within_wait = False
        self.output_as_list = False
        self.storage = StorageHost(self._middleware, self._file, FILES_PREFIX + "{job}/{version}/output.mp4", "GET")

    # --- FakeVendor ---------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/models/{owner}/{name}/predictions", self._create)
        router.add_get("/v1/predictions/{id}", self._get)
        router.add_post("/v1/predictions/{id}/cancel", self._cancel)
        router.add_get("/v1/account", self._account)

    def kind_of(self, request: web.Request) -> str:
        path = request.path
        if request.method == "POST" and path.startswith("/v1/models/") and path.endswith("/predictions"):
            return "create"
        if path.startswith("/v1/predictions/"):
            return "cancel" if path.endswith("/cancel") else "poll"
        return "other"

    def env(self) -> dict[str, str]:
        return {"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": self.base_url}

    def error_body(self, status: int, message: str) -> Any:
        return {"title": TITLES.get(status, "Error"), "detail": message, "status": status}

    # --- the API ------------------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        refused = self._unauthenticated(request)
        if refused is not None:
            return refused
        prefer = request.headers.get("Prefer")
        wait = _PREFER.match(prefer) if prefer is not None else None
        if prefer is not None and (wait is None or not 1 <= int(wait["seconds"] or 60) <= 60):
            return self.reply_error(400, f"Invalid Prefer header {prefer!r}: expected 'wait' or 'wait=N', N 1-60")
        model = f"{request.match_info['owner']}/{request.match_info['name']}"
        schema = SCHEMAS.get(model)
        if schema is None:
            return self.reply_error(404, "The requested resource could not be found.")
        if request.content_type != "application/json":
            return self.reply_error(400, "The request body must be JSON (Content-Type: application/json).")
        body = await read_json(request)
        if body is None:
            return self.reply_error(400, "The request body is not valid JSON.")
        problems = self._body_problems(body) or check_input(body["input"], schema)
        if problems:
            detail = "".join(f"- {p['field']}: {p['description']}\n" for p in problems)
            answer = {**self.error_body(422, detail), "invalid_fields": problems}
            return web.json_response(answer, status=422)
        job = self.new_job(uuid_id(), body)
        job.extra["model"] = model
        if self.finish_within_wait and wait is not None:
            job.extra["ended_at_create"] = True
            return web.json_response(self._answer(job), status=201)
        return web.json_response(self._prediction(job, "starting"), status=201)

    def _body_problems(self, body: Any) -> list[dict[str, str]]:
        if not isinstance(body, dict):
            return [_problem("invalid_type", "(root)", "Invalid type. Expected: object")]
        problems = [_problem("additional_property_not_allowed", "(root)", f"Additional property {key} is not allowed")
                    for key in body if key not in _BODY_FIELDS]  # fmt: skip
        if "input" not in body:
            problems.append(_problem("required", "(root)", "input is required"))
        elif not isinstance(body["input"], dict):
            problems.append(_problem("invalid_type", "input", "Invalid type. Expected: object"))
        return problems

    async def _get(self, request: web.Request) -> web.Response:
        refused = self._unauthenticated(request)
        if refused is not None:
            return refused
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self.reply_error(404, "The requested resource could not be found.")
        return web.json_response(self._answer(job))

    async def _cancel(self, request: web.Request) -> web.Response:
        refused = self._unauthenticated(request)
        if refused is not None:
            return refused
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return self.reply_error(404, "The requested resource could not be found.")
        if "ended" in job.extra:  # a finished prediction stays as it ended
            return web.json_response(job.extra["ended"])
        job.cancelled = True
        return web.json_response(self._prediction(job, "canceled"))

    async def _account(self, request: web.Request) -> web.Response:
        refused = self._unauthenticated(request)
        if refused is not None:
            return refused
        return web.json_response({"type": "user", "username": "videobot-test", "name": "Videobot Test",
                                  "github_url": None})  # fmt: skip

    def _unauthenticated(self, request: web.Request) -> web.Response | None:
        given = request.headers.get("Authorization")
        if given is None:
            return self.reply_error(401, "You did not pass an authentication token")
        if given != f"Bearer {TOKEN}":
            return self.reply_error(401, "You did not pass a valid authentication token")
        return None

    # --- a prediction's life ------------------------------------------------------------------------
    def _answer(self, job: FakeJob) -> dict[str, Any]:
        """One status read of `job` (counted as a poll), as Replicate's prediction object."""
        if job.extra.get("ended_at_create"):
            job.polls += 1
            outcome = "refused" if job.refused is not None else "succeeded"
        else:
            outcome = self.advance(job)
        if outcome == "cancelled":
            answer = self._prediction(job, "canceled")
        elif outcome == "refused":
            error = f"The input or output was flagged as sensitive (E005): {job.refused}"
            answer = self._prediction(job, "failed", error=error)
        elif outcome == "succeeded":
            url = f"{self.storage_url}{FILES_PREFIX}{job.id}/{self._url_version(job)}/output.mp4"
            answer = self._prediction(job, "succeeded", output=[url] if self.output_as_list else url,
                                      logs=_logs(STEPS))  # fmt: skip
        elif job.polls <= self.starting_polls:
            return self._prediction(job, "starting")
        else:
            done = min(STEPS - 1, int(self.progress(job) * STEPS))
            return self._prediction(job, "processing", logs=_logs(done))
        job.extra["ended"] = answer
        return answer

    def _url_version(self, job: FakeJob) -> int:
        """The output URL stays the same, as Replicate's does, until it has been found expired."""
        if "url" not in job.extra or job.extra.get("stale"):
            job.extra["url"] = self.hand_out_url(job)
            job.extra["stale"] = False
        version: int = job.extra["url"]
        return version

    def _prediction(self, job: FakeJob, status: str, *, output: Any = None, error: str | None = None,
                    logs: str = "") -> dict[str, Any]:  # fmt: skip
        ended = status in ("succeeded", "failed", "canceled")
        return {
            "id": job.id,
            "model": job.extra["model"],
            "version": "hidden",
            "input": job.body["input"],
            "logs": logs,
            "output": output,
            "data_removed": False,
            "error": error,
            "status": status,
            "created_at": "2026-11-02T10:00:00.000Z",
            "started_at": None if status == "starting" else "2026-11-02T10:00:01.000Z",
            "completed_at": "2026-11-02T10:00:30.000Z" if ended else None,
            "urls": {
                "get": f"{self.base_url}/v1/predictions/{job.id}",
                "cancel": f"{self.base_url}/v1/predictions/{job.id}/cancel",
                "web": f"https://replicate.com/p/{job.id}",
            },
            "metrics": {"predict_time": 29.0} if status == "succeeded" else {},
        }

    # --- the file host ------------------------------------------------------------------------------
    async def _file(self, request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            return web.Response(status=400, text="Authorization is not accepted on file URLs")
        job = self.jobs.get(request.match_info["job"])
        try:
            version = int(request.match_info["version"])
        except ValueError:
            version = 0
        if job is None or version < 1 or version != job.url_version:
            if job is not None:
                job.extra["stale"] = True  # the next status read hands out a fresh URL
            return web.Response(status=404, text="Not Found")
        return self.video_response()


def uuid_id() -> str:
    """A prediction id in Replicate's style: 26 lowercase base32 characters."""
    return base64.b32encode(uuid.uuid4().bytes).decode("ascii").rstrip("=").lower()


def _logs(done: int) -> str:
    """The model's log so far: a line, then a tqdm bar per finished step."""
    bars = [f"{100 * step // STEPS:3d}%|{'█' * (step // 2):<10}| {step}/{STEPS} [00:{step:02d}<00:10,  1.5it/s]"
            for step in range(1, done + 1)]  # fmt: skip
    return "\n".join(["Generating video...", *bars])
