"""Luma's Dream Machine API, as strict as the real service, on loopback.

The API (`{base}/dream-machine/v1`, `Authorization: Bearer <key>`): `POST generations/video` (the SDK's path;
the docs also show `POST generations`) answers 201 with the generation object; `GET generations/{id}` polls
it; `DELETE generations/{id}` deletes it (Luma's only way to drop a job; a later poll answers 404);
`GET credits` gives the account's balance in US cents. Failures are `{"detail": ...}`: a message for the
documented request errors (400: "Prompt is required", "Prompt is too short, minimum length is 3 characters"…),
a list of field errors for a body that does not fit the schema (422, as FastAPI answers). A finished
generation's `assets.video` is a signed URL on a second server (Luma's CDN, another origin), which refuses an
`Authorization` header and answers an expired or forged signature 403.

From the SDK (`lumalabs/lumaai-python`) and the docs' Errors page; UNCONFIRMED, so chosen here: the exact
401, 422 and insufficient-credit bodies, the 201, the CDN's URL scheme. Stricter than Luma in one way, on
purpose: an unknown field name is refused, so that an adapter's typo cannot pass unnoticed.

Knobs in Luma's words: a job answers `queued` on its first poll, then `dreaming`, then `completed`
(`polls_to_finish`); `refuse_reason` ends it `failed` with that `failure_reason` (Luma moderates after the
create); `generation_failure` (this fake's own) ends it failed for Luma's own reasons ("Job failed");
`expire_first_url` hands out a `video` URL whose signature has expired, and a fresh one on the first poll after
that URL was refused; `credit_balance` at 0 makes creates fail for want of credit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

from aiohttp import web

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json
from tests.fakes.providers.storage import StorageHost, xml_error

API = "/dream-machine/v1"
CREATE_PATHS = (f"{API}/generations/video", f"{API}/generations")
MODELS = ("ray-1-6", "ray-2", "ray-flash-2")
ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21")
DURATIONS = ("5s", "9s")
RESOLUTIONS = ("540p", "720p", "1080p", "4k")
FIELDS = {"model", "prompt", "aspect_ratio", "duration", "resolution", "loop", "keyframes", "concepts",
          "callback_url", "generation_type"}  # fmt: skip
PROMPT_LENGTH = (3, 5000)
URL_LIFETIME = 3600
_GENERATION = re.compile(f"^{API}/generations/([^/]+)$")


class Invalid(Exception):
    """A body Luma refuses: 400 with a message, or 422 with FastAPI's list of field errors."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status, self.detail = status, detail


def field_error(loc: list[str | int], kind: str, msg: str, value: Any = None) -> Invalid:
    return Invalid(422, [{"type": kind, "loc": ["body", *loc], "msg": msg, "input": value}])


class LumaFake(FakeVendor):
    provider = "luma"
    model = "luma/ray-flash-2"
    image_model = None
    durations = (5, 9)
    result_urls = True
    reports_progress = False
    reports_queue_position = False
    can_cancel = True
    create_is_idempotent = False
    api_key: ClassVar[str] = "luma-test-key"

    def __init__(self) -> None:
        super().__init__()
        self.storage = StorageHost(self._middleware, self._cdn_file)
        self._cdn_secret = secrets.token_bytes(16)
        self.generation_failure: str | None = None
        """A `failure_reason` the next jobs end with, as a generation fails at Luma for its own reasons."""
        self.credit_balance = 10_000.0
        """The account's balance in US cents (`GET credits`); at 0 a create is refused."""

    # --- FakeVendor -----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        for path in CREATE_PATHS:
            router.add_post(path, self._create)
        router.add_get(f"{API}/credits", self._credits)
        router.add_get(f"{API}/generations/{{id}}", self._poll)
        router.add_delete(f"{API}/generations/{{id}}", self._delete)
        router.add_route("*", "/{tail:.*}", self._not_found)

    def kind_of(self, request: web.Request) -> str:
        path, method = request.path, request.method
        if method == "POST" and path in CREATE_PATHS:
            return "create"
        if _GENERATION.match(path) and method in ("GET", "DELETE"):
            return "poll" if method == "GET" else "cancel"
        return "other"

    def env(self) -> dict[str, str]:
        return {"LUMAAI_API_KEY": self.api_key, "LUMAAI_BASE_URL": f"{self.base_url}{API}"}

    def error_body(self, status: int, message: str) -> Any:
        return {"detail": message}

    # --- the API --------------------------------------------------------------------------------------
    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _unauthorised(self) -> web.Response:
        return self.reply_error(401, "Invalid API key")

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        try:
            if request.content_type != "application/json":
                raise field_error([], "model_attributes_type", "Input should be a valid dictionary or object")
            body = await read_json(request)
            unreadable_frame = check_create(body)
            if self.credit_balance <= 0:
                raise Invalid(400, "Insufficient credits")
        except Invalid as exc:
            return web.json_response({"detail": exc.detail}, status=exc.status)
        job = self.new_job(str(uuid.uuid4()), body)
        failure = "Failed to read user input frames" if unreadable_frame else self.generation_failure
        job.extra.update(created=datetime.now(UTC).isoformat().replace("+00:00", "Z"), state="queued", failure=failure)
        return web.json_response(self._generation(job), status=201)

    async def _poll(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        job = self.jobs.get(request.match_info["id"])
        if job is None or job.cancelled:
            return self.reply_error(404, "Generation not found")
        outcome = self.advance(job)
        if outcome == "refused":
            # Luma words its moderation failures itself ("Advanced prompt moderation failed"); a scripted reason
            # is carried after them.
            reason = job.refused or ""
            worded = reason if "moderation" in reason.lower() else f"Advanced prompt moderation failed: {reason}"
            job.extra.update(state="failed", failure_reason=worded)
        elif outcome == "running":
            job.extra["state"] = "queued" if job.polls == 1 else "dreaming"
        elif job.extra["failure"] is not None:
            job.extra.update(state="failed", failure_reason=job.extra["failure"])
        else:
            job.extra["state"] = "completed"
        return web.json_response(self._generation(job))

    async def _delete(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        job = self.jobs.get(request.match_info["id"])
        if job is None or job.cancelled:
            return self.reply_error(404, "Generation not found")
        job.cancelled = True
        return web.Response(status=204)

    async def _credits(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        return web.json_response({"credit_balance": self.credit_balance})

    async def _not_found(self, request: web.Request) -> web.Response:
        return self.reply_error(404, "Not Found")

    def _generation(self, job: FakeJob) -> dict[str, Any]:
        state = job.extra["state"]
        return {
            "id": job.id,
            "generation_type": "video",
            "state": state,
            "failure_reason": job.extra.get("failure_reason"),
            "created_at": job.extra["created"],
            "assets": {"video": self._video_url(job), "image": None, "progress_video": None}
            if state == "completed"
            else None,
            "model": job.body["model"],
            "request": {"generation_type": "video", **job.body},
        }

    # --- the CDN --------------------------------------------------------------------------------------
    def _video_url(self, job: FakeJob) -> str:
        """The generation's signed URL, the same on every poll until it was refused as expired."""
        return self.current_url(job, lambda version: self._signed_url(job, version))

    def _signed_url(self, job: FakeJob, version: int) -> str:
        expires = int(time.time()) + (-60 if version < 0 else URL_LIFETIME)
        path = f"/dream_machine/{job.id}/v{max(version, 0)}/video.mp4"
        signature = quote(self._sign(path, expires), safe="")
        return f"{self.storage_url}{path}?Expires={expires}&Key-Pair-Id=KFAKE&Signature={signature}"

    def _sign(self, path: str, expires: int) -> str:
        digest = hmac.new(self._cdn_secret, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()

    async def _cdn_file(self, request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            # A signed URL already authenticates: a second mechanism is refused (and the key must not leak).
            return xml_error(400, "InvalidArgument", "Only one auth mechanism allowed")
        if request.method not in ("GET", "HEAD"):
            return xml_error(405, "MethodNotAllowed", "The specified method is not allowed against this resource.")
        expires, signature = request.query.get("Expires", ""), request.query.get("Signature", "")
        if not expires.isdigit() or not signature or "Key-Pair-Id" not in request.query:
            return xml_error(403, "AccessDenied", "Missing Key-Pair-Id query parameter or cookie value")
        if not hmac.compare_digest(signature, self._sign(request.path, int(expires))):
            return xml_error(403, "AccessDenied", "Access denied")
        match = re.fullmatch(r"/dream_machine/([^/]+)/v\d+/video\.mp4", request.path)
        job = self.jobs.get(match.group(1)) if match else None
        if int(expires) < time.time():
            self.refuse_url(job)
            return xml_error(403, "AccessDenied", "Request has expired")
        if job is None or job.cancelled:
            return xml_error(404, "NoSuchKey", "The specified key does not exist.")
        return self.video_response()


def check_create(body: Any) -> bool:
    """Refuse the body as Luma would (`Invalid`); returns whether a keyframe image cannot be fetched (Luma takes
    the create, then fails the generation with "Failed to read user input frames")."""
    if not isinstance(body, dict):
        raise field_error([], "model_attributes_type", "Input should be a valid dictionary or object", body)
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise field_error([unknown[0]], "extra_forbidden", "Extra inputs are not permitted", body[unknown[0]])
    if "model" not in body:
        raise field_error(["model"], "missing", "Field required")
    _one_of(body, "model", MODELS)
    _one_of(body, "aspect_ratio", ASPECT_RATIOS)
    _one_of(body, "duration", DURATIONS)
    _one_of(body, "resolution", RESOLUTIONS)
    _one_of(body, "generation_type", ("video",))
    for name in ("prompt", "callback_url"):
        if name in body and not isinstance(body[name], str):
            raise field_error([name], "string_type", "Input should be a valid string", body[name])
    if "loop" in body and not isinstance(body["loop"], bool):
        raise field_error(["loop"], "bool_type", "Input should be a valid boolean", body["loop"])
    concepts = body.get("concepts", [])
    if not isinstance(concepts, list) or not all(isinstance(c, dict) and isinstance(c.get("key"), str)
                                                 for c in concepts):  # fmt: skip
        raise field_error(["concepts"], "list_type", "Input should be a valid list of {key}", concepts)
    frames = _keyframes(body.get("keyframes"))
    prompt = body.get("prompt")
    if not frames and not prompt:
        raise Invalid(400, "Prompt is required")
    if prompt is not None and len(prompt) < PROMPT_LENGTH[0]:
        raise Invalid(400, f"Prompt is too short, minimum length is {PROMPT_LENGTH[0]} characters")
    if prompt is not None and len(prompt) > PROMPT_LENGTH[1]:
        raise Invalid(400, f"Prompt is too long, maximum length is {PROMPT_LENGTH[1]} characters")
    if body.get("loop") and len(frames) == 2:
        raise Invalid(400, "Loop is not supported for keyframes")
    urls = [frame["url"] for frame in frames.values() if frame["type"] == "image"]
    return any(not url.startswith(("http://", "https://")) for url in urls)


def _keyframes(keyframes: Any) -> dict[str, dict[str, Any]]:
    """`keyframes.frame0/frame1`: an image by URL or an earlier generation by id."""
    if keyframes is None:
        return {}
    if not isinstance(keyframes, dict) or set(keyframes) - {"frame0", "frame1"}:
        raise field_error(["keyframes"], "dict_type", "Input should be an object of frame0 and frame1", keyframes)
    frames = {name: frame for name, frame in keyframes.items() if frame is not None}
    if not frames:
        raise Invalid(400, "No keyframes provided")
    for name, frame in frames.items():
        kind = frame.get("type") if isinstance(frame, dict) else None
        needed = {"image": "url", "generation": "id"}.get(kind) if isinstance(kind, str) else None
        if needed is None or not isinstance(frame.get(needed), str) or set(frame) != {"type", needed}:
            raise field_error(["keyframes", name], "union_tag_invalid",
                              "Input tag should be 'generation' or 'image', with its id or url", frame)  # fmt: skip
    return frames


def _one_of(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> None:
    if name in body and body[name] not in allowed:
        expected = ", ".join(f"'{value}'" for value in allowed)
        raise field_error([name], "literal_error", f"Input should be one of {expected}", body[name])
