"""Runway's developer API on loopback, as strict as the real service, with a second server for its CDN.

The API (`{base}/v1`): `POST text_to_video`, `POST image_to_video`, `GET tasks/{id}`, `DELETE tasks/{id}`,
`GET organization`. Every request needs `Authorization: Bearer <secret>` (missing or wrong: 401) and
`X-Runway-Version: 2024-11-06` (missing or another date: 400). Failures are `{"error": "..."}`. A create's body
is JSON checked against the model's published fields (the official SDK's `*_create_params.py`): names, types,
enums, ranges and the 1000 UTF-16 unit prompt limit; `promptImage` an HTTPS URL or a base64 data URI of a
JPEG/PNG/WebP under 5 MB. A bad body is a 400 whose `error` names the field, with zod-style `issues` (`path`,
`message`); that detail of the shape is an assumption, Runway documents only the `error` member. Stricter than
Runway in one way, on purpose: an unknown field is refused, so that an adapter's typo cannot pass unnoticed.

A task's life in Runway's words: `throttled_polls` (this fake's own knob) polls answer THROTTLED, the next one
PENDING, then RUNNING with `progress`, until `polls_to_finish` is past: SUCCEEDED with `output`, a signed URL on
the second server standing in for Runway's CDN (`_jwt` in the query), the same on every poll until it expired,
then signed afresh. The CDN answers 403 to an expired or forged URL and 400 to a request carrying an
`Authorization` header. `refuse_reason` ends a task FAILED with
`failureCode` `SAFETY.INPUT.TEXT` and the reason as `failure`; `task_failure` (this fake's own) ends it FAILED
with another code; `expire_first_url` hands out an already expired first URL. `DELETE` cancels a task that has
not ended (its polls answer CANCELLED) and deletes one that has (its polls answer 404). `credit_balance` is what
`GET organization` reports; at 0 or below a create is refused as Runway refuses it.
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
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from PIL import Image

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json
from tests.fakes.providers.storage import StorageHost

API_VERSION = "2024-11-06"
SECRET = "key_" + "0123456789abcdef" * 8
MAX_PROMPT_UTF16 = 1000
MAX_SEED = 4_294_967_295
DATA_URI_MAX_CHARS = 5 * 1024 * 1024
URL_LIFETIME = 24 * 3600
TASK_PATH = re.compile(r"^/v1/tasks/([^/]+)$")
DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(.+)$", re.DOTALL)
ENDED = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

VEO_RATIOS = frozenset({"1280:720", "720:1280", "1080:1920", "1920:1080"})
GEN4_I2V_RATIOS = frozenset({"1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"})
TWO_TO_TEN = frozenset(range(2, 11))


@dataclass(frozen=True)
class ModelSpec:
    """What one model takes on one endpoint, as the SDK's params types list it."""

    ratios: frozenset[str]
    durations: frozenset[int]
    extras: frozenset[str]
    """Optional fields beyond model, promptText, ratio, duration and promptImage."""
    duration_required: bool = False
    prompt_required: bool = True
    positions: frozenset[str] = frozenset({"first"})
    """Keyframe positions `promptImage` may take as an array (image-to-video)."""


_GEN = frozenset({"seed", "contentModeration"})
_VEO = frozenset({"audio", "negativePrompt"})
TEXT_TO_VIDEO = {
    "gen4.5": ModelSpec(frozenset({"1280:720", "720:1280"}), TWO_TO_TEN, _GEN, duration_required=True),
    "veo3.1": ModelSpec(VEO_RATIOS, frozenset({4, 6, 8}), _VEO),
    "veo3.1_fast": ModelSpec(VEO_RATIOS, frozenset({4, 6, 8}), _VEO),
    "veo3": ModelSpec(VEO_RATIOS, frozenset({8}), frozenset({"negativePrompt"}), duration_required=True),
}
_VEO31_I2V = ModelSpec(VEO_RATIOS, frozenset({4, 6, 8}), _VEO, prompt_required=False,
                       positions=frozenset({"first", "last"}))  # fmt: skip
IMAGE_TO_VIDEO = {
    "gen4.5": ModelSpec(GEN4_I2V_RATIOS, TWO_TO_TEN, _GEN, duration_required=True),
    "gen4_turbo": ModelSpec(GEN4_I2V_RATIOS, TWO_TO_TEN, _GEN, prompt_required=False),
    "veo3.1": _VEO31_I2V,
    "veo3.1_fast": _VEO31_I2V,
    "veo3": ModelSpec(
        VEO_RATIOS, frozenset({8}), frozenset({"negativePrompt"}), duration_required=True, prompt_required=False
    ),
}
ENDPOINTS = {"/v1/text_to_video": TEXT_TO_VIDEO, "/v1/image_to_video": IMAGE_TO_VIDEO}


class RunwayFake(FakeVendor):
    provider: ClassVar[str] = "runway"
    model: ClassVar[str] = "runway/gen4.5"
    image_model: ClassVar[str | None] = "runway/gen4_turbo"
    durations: ClassVar[tuple[int, ...]] = tuple(range(2, 11))
    result_urls: ClassVar[bool] = True
    reports_progress: ClassVar[bool] = True
    reports_queue_position: ClassVar[bool] = False
    can_cancel: ClassVar[bool] = True
    create_is_idempotent: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.throttled_polls = 0
        """The first polls of a task answer THROTTLED: the organisation's concurrency for the model is in use."""
        self.task_failure: tuple[str, str] | None = None
        """(failureCode, failure): the next tasks end FAILED with it instead of succeeding."""
        self.credit_balance = 10_000
        self.storage = StorageHost(self._middleware, self._cdn_object)
        self._cdn_secret = secrets.token_bytes(16)

    # --- FakeVendor -----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        for path in ENDPOINTS:
            router.add_post(path, self._create)
        router.add_get("/v1/tasks/{task_id}", self._poll)
        router.add_delete("/v1/tasks/{task_id}", self._delete)
        router.add_get("/v1/organization", self._organization)
        router.add_route("*", "/{tail:.*}", self._unknown)

    def kind_of(self, request: web.Request) -> str:
        if request.method == "POST" and request.path in ENDPOINTS:
            return "create"
        if TASK_PATH.match(request.path):
            return {"GET": "poll", "DELETE": "cancel"}.get(request.method, "other")
        return "other"

    def env(self) -> dict[str, str]:
        return {"RUNWAYML_API_SECRET": SECRET, "RUNWAYML_BASE_URL": self.base_url}

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    # --- the API --------------------------------------------------------------------------------------
    def _refused(self, request: web.Request) -> web.Response | None:
        """The answer to a request Runway turns away before reading it: credentials, then the API version."""
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            return self.reply_error(401, "Incorrect API key provided, or the key has been disabled.")
        version = request.headers.get("X-Runway-Version")
        if version is None:
            return self.reply_error(400, "The X-Runway-Version header is required. Use the version 2024-11-06.")
        if version != API_VERSION:
            return self.reply_error(400, f"The API version {version!r} is not a valid version.")
        return None

    async def _create(self, request: web.Request) -> web.Response:
        if (refusal := self._refused(request)) is not None:
            return refusal
        if request.content_type != "application/json":
            return self.reply_error(400, "The request body must be JSON (Content-Type: application/json).")
        body = await read_json(request)
        issues = check_create(ENDPOINTS[request.path], body, image=request.path == "/v1/image_to_video")
        if issues:
            message = "; ".join(f"{'.'.join(map(str, i['path']))}: {i['message']}" for i in issues)
            return web.json_response({"error": message, "issues": issues}, status=400)
        if self.credit_balance <= 0:
            return self.reply_error(400, "You do not have enough credits to run this task.")
        job = self.new_job(str(uuid.uuid4()), body)
        job.extra.update(status="PENDING", failure=self.task_failure,
                         created=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))  # fmt: skip
        return web.json_response({"id": job.id})

    async def _poll(self, request: web.Request) -> web.Response:
        if (refusal := self._refused(request)) is not None:
            return refusal
        job = self.jobs.get(request.match_info["task_id"])
        if job is None or job.extra.get("deleted"):
            return self.reply_error(404, "Task not found.")
        task = {"id": job.id, "createdAt": job.extra["created"], **self._life(job)}
        job.extra["status"] = task["status"]
        return web.json_response(task)

    def _life(self, job: FakeJob) -> dict[str, Any]:
        """The task's state fields at this poll (one step of the common knobs)."""
        outcome = self.advance(job)
        if outcome == "cancelled":
            return {"status": "CANCELLED"}
        if outcome == "refused":
            return {"status": "FAILED", "failure": job.refused, "failureCode": "SAFETY.INPUT.TEXT"}
        if outcome == "running":
            if job.polls <= self.throttled_polls:
                return {"status": "THROTTLED"}
            if job.polls == self.throttled_polls + 1:
                return {"status": "PENDING"}
            return {"status": "RUNNING", "progress": round(min(self.progress(job), 0.99), 3)}
        if job.extra["failure"] is not None:
            code, failure = job.extra["failure"]
            return {"status": "FAILED", "failure": failure, "failureCode": code}
        return {"status": "SUCCEEDED", "output": [self._output_url(job)]}

    async def _delete(self, request: web.Request) -> web.Response:
        if (refusal := self._refused(request)) is not None:
            return refusal
        job = self.jobs.get(request.match_info["task_id"])
        if job is None or job.extra.get("deleted"):
            return self.reply_error(404, "Task not found.")
        if job.extra["status"] in ENDED:
            job.extra["deleted"] = True  # an ended task is deleted, its output with it
        else:
            job.cancelled = True
            job.extra["status"] = "CANCELLED"
        return web.Response(status=204)

    async def _organization(self, request: web.Request) -> web.Response:
        if (refusal := self._refused(request)) is not None:
            return refusal
        limits = {"maxConcurrentGenerations": 2, "maxDailyGenerations": 200}
        used = {"dailyGenerations": self.creates}
        models = sorted(set(TEXT_TO_VIDEO) | set(IMAGE_TO_VIDEO))
        return web.json_response({
            "creditBalance": self.credit_balance,
            "tier": {"maxMonthlyCreditSpend": 10_000, "models": dict.fromkeys(models, limits)},
            "usage": {"models": dict.fromkeys(models, used)},
        })  # fmt: skip

    async def _unknown(self, request: web.Request) -> web.Response:
        if request.path in ENDPOINTS or TASK_PATH.match(request.path) or request.path == "/v1/organization":
            return self.reply_error(405, f"Method {request.method} is not allowed here.")
        return self.reply_error(404, "Not found.")

    # --- the CDN ----------------------------------------------------------------------------------------
    def _output_url(self, job: FakeJob) -> str:
        """The task's signed CDN URL: the same on every poll until it has expired, then signed afresh (Runway:
        "fetch the task again to get fresh URLs")."""
        return self.current_url(job, lambda version: self._signed_url(job, version))

    def _signed_url(self, job: FakeJob, version: int) -> str:
        expires = int(time.time()) + (-60 if version < 0 else URL_LIFETIME)
        claims = base64.urlsafe_b64encode(json.dumps({"task": job.id, "exp": expires}).encode()).decode()
        return f"{self.storage_url}/{job.id}/video.mp4?_jwt={claims}.{self._sign(claims)}"

    def _sign(self, claims: str) -> str:
        return hmac.new(self._cdn_secret, claims.encode(), hashlib.sha256).hexdigest()

    async def _cdn_object(self, request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            # A signed URL authenticates by itself: an API secret must never travel to the CDN.
            return web.Response(status=400, text="Authorization header not allowed on signed URLs")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method not allowed")
        claims, _, signature = request.query.get("_jwt", "").partition(".")
        if not claims or not hmac.compare_digest(signature, self._sign(claims)):
            return web.Response(status=403, text="Access denied: invalid signature")
        payload = json.loads(base64.urlsafe_b64decode(claims))
        job = self.jobs.get(payload["task"])
        if payload["exp"] < time.time():
            self.refuse_url(job)
            return web.Response(status=403, text="Access denied: the URL has expired")
        if job is None or job.extra.get("deleted") or request.path != f"/{job.id}/video.mp4":
            return web.Response(status=404, text="Not found")
        return self.video_response()


def check_create(models: dict[str, ModelSpec], body: Any, *, image: bool) -> list[dict[str, Any]]:
    """What Runway would refuse in a create body, as zod-style issues (empty when nothing)."""
    if not isinstance(body, dict):
        return [_issue([], "invalid_type", "Expected a JSON object")]
    model = body.get("model")
    spec = models.get(model) if isinstance(model, str) else None
    if spec is None:
        expected = " | ".join(f"'{name}'" for name in models)
        return [_issue(["model"], "invalid_union_discriminator", f"Invalid discriminator value. Expected {expected}")]
    allowed = {"model", "promptText", "ratio", "duration"} | spec.extras | ({"promptImage"} if image else set())
    issues = [_issue([name], "unrecognized_keys", f"Unrecognized key '{name}'") for name in body if name not in allowed]
    required = {"ratio"} | ({"duration"} if spec.duration_required else set())
    required |= ({"promptText"} if spec.prompt_required else set()) | ({"promptImage"} if image else set())
    issues += [_issue([name], "invalid_type", "Required") for name in sorted(required - set(body))]
    for name, value in body.items():
        problem = _field_problem(spec, name, value) if name in allowed else None
        if problem is not None:
            issues.append(_issue([name], "invalid", problem))
    return issues


def _field_problem(spec: ModelSpec, name: str, value: Any) -> str | None:
    if name == "promptText":
        if not isinstance(value, str) or not value.strip():
            return "Expected a non-empty string"
        return "String must contain at most 1000 UTF-16 code units" if _utf16(value) > MAX_PROMPT_UTF16 else None
    if name == "ratio":
        if isinstance(value, str) and value in spec.ratios:
            return None
        return f"Invalid enum value. Expected {' | '.join(sorted(spec.ratios))}"
    if name == "duration":
        if type(value) is not int:
            return "Expected integer"
        return None if value in spec.durations else f"Invalid duration {value} for this model"
    if name == "seed":
        return None if type(value) is int and 0 <= value <= MAX_SEED else f"Expected an integer in 0..{MAX_SEED}"
    if name == "audio":
        return None if isinstance(value, bool) else "Expected boolean"
    if name == "negativePrompt":
        return None if isinstance(value, str) else "Expected string"
    if name == "contentModeration":
        good = isinstance(value, dict) and set(value) <= {"publicFigureThreshold"}
        return None if good and value.get("publicFigureThreshold", "auto") in ("auto", "low") else "Invalid object"
    if name == "promptImage":
        return _prompt_image_problem(spec, value)
    return None


def _prompt_image_problem(spec: ModelSpec, value: Any) -> str | None:
    if isinstance(value, list):
        if not 1 <= len(value) <= len(spec.positions):
            return "Expected one image per keyframe position"
        for item in value:
            if not isinstance(item, dict) or set(item) != {"uri", "position"} or item["position"] not in spec.positions:
                return f"Expected {{uri, position}} with position {' | '.join(sorted(spec.positions))}"
            if (problem := _asset_problem(item["uri"])) is not None:
                return problem
        return None
    return _asset_problem(value)


def _asset_problem(uri: Any) -> str | None:
    """An image asset as Runway's troubleshooting guide words its refusals."""
    if not isinstance(uri, str):
        return "Expected string"
    if uri.startswith("https://"):
        return None
    if not uri.startswith("data:"):
        return "Only HTTPS URLs are allowed."
    if len(uri) >= DATA_URI_MAX_CHARS:
        return "Data URI is too large (5MB maximum)."
    match = DATA_URI.match(uri)
    if match is None:
        return "Unsupported asset type. Data URIs must include the content type of the value they encode."
    try:
        data = base64.b64decode(match.group(2), validate=True)
        with Image.open(io.BytesIO(data)) as img:
            fmt = str(img.format).lower()
    except (binascii.Error, OSError, ValueError):
        return "Invalid data URI."
    declared = match.group(1).replace("jpg", "jpeg")
    return None if fmt == declared else f"The data URI declares image/{declared} but holds {fmt}."


def _issue(path: list[str], code: str, message: str) -> dict[str, Any]:
    return {"code": code, "path": path, "message": message}


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
