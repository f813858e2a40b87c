"""MiniMax's video generation API (Hailuo), as strict as the real service, on loopback.

The API (`{base}` = `https://api.minimax.io`): `POST /v1/video_generation` (JSON, `Authorization: Bearer`) →
`task_id`; `GET /v1/query/video_generation?task_id=` → `status` Preparing, Queueing, Processing, Success (with
`file_id`) or Fail; `GET /v1/files/retrieve?file_id=` → `file.download_url`, a signed object-storage URL on
another origin (served here by a second server, as Alibaba OSS serves MiniMax's files: signature and `Expires`
in the query, an Authorization header refused, an expired or forged signature answered 403 with OSS's XML);
`GET /v1/files/list?purpose=` lists the account's files. There is no cancel call.

MiniMax answers its own errors with HTTP 200 and a non-zero `base_resp.status_code`: 1004 no key, 2049 invalid
key, 2013 bad parameter, 1026 sensitive input, 1027 sensitive output, 1002 rate limit, 1008 balance. Scripted
HTTP faults (`fail_next`) carry the same `base_resp` shape. Every API answer has a `Trace-Id` header.

Stricter than the real service on purpose: an unknown field name, and a model other than the three Hailuo
models the bot uses, are refused with 2013 (MiniMax ignores unknown fields), so an adapter's typo cannot pass.

Knobs in MiniMax's words: a task answers Preparing, then Queueing, then Processing, then Success
(`polls_to_finish`); `refuse_reason` ends it Fail with code 1027 and the reason as `status_msg`; `task_failure`
ends it Fail with that `error_message`; `expire_first_url` makes retrieves hand out an expired URL until a
download of it was refused, then fresh ones (each retrieve signs a new URL, as MiniMax does).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from PIL import Image

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json
from tests.fakes.providers.storage import OssBucket, StorageHost

CREATE_PATH = "/v1/video_generation"
QUERY_PATH = "/v1/query/video_generation"
RETRIEVE_PATH = "/v1/files/retrieve"
LIST_PATH = "/v1/files/list"
BUCKET = "public-cdn-video-data-fake"
OBJECT_KEY = re.compile(f"/{BUCKET}/inference_output/video/([0-9]+)/output\\.mp4")
URL_LIFETIME = 3600
"""A `download_url` is valid for one hour."""
MAX_PROMPT = 2000
IMAGE_MAX_BYTES = 20 * 1024 * 1024
IMAGE_MIN_SIDE = 300
IMAGE_RATIOS = (2 / 5, 5 / 2)
LIST_PURPOSES = frozenset({"voice_clone", "prompt_audio", "t2a_async_input"})
DATA_URI = re.compile(r"^data:image/(jpeg|jpg|png|webp);base64,(.+)$", re.DOTALL)
CODES_BY_STATUS = {400: 2013, 401: 1004, 402: 1008, 403: 1004, 404: 2013, 429: 1002, 504: 1001}
"""The `base_resp.status_code` a scripted HTTP fault carries; other statuses carry 1000 (unknown error)."""
BOOLEANS = ("prompt_optimizer", "fast_pretreatment", "aigc_watermark")


@dataclass(frozen=True)
class HailuoSpec:
    """What one model takes, as MiniMax documents it."""

    resolutions: frozenset[str]
    text_to_video: bool = True
    last_frame: bool = False


MODELS = {
    "MiniMax-Hailuo-2.3": HailuoSpec(frozenset({"768P", "1080P"})),
    "MiniMax-Hailuo-2.3-Fast": HailuoSpec(frozenset({"768P", "1080P"}), text_to_video=False),
    "MiniMax-Hailuo-02": HailuoSpec(frozenset({"512P", "768P", "1080P"}), last_frame=True),
}
FIELDS = {"model", "prompt", "duration", "resolution", "first_frame_image", "last_frame_image", "callback_url",
          "subject_reference", *BOOLEANS}  # fmt: skip


class Refusal(Exception):
    """A request MiniMax refuses: answered HTTP 200 with this `base_resp`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class MiniMaxFake(FakeVendor):
    provider = "minimax"
    model = "minimax/MiniMax-Hailuo-2.3"
    image_model = "minimax/MiniMax-Hailuo-2.3-Fast"
    durations = (6, 10)
    result_urls = True
    reports_progress = False
    reports_queue_position = False
    can_cancel = False
    create_is_idempotent = False
    api_key: ClassVar[str] = "mm-test-key"

    def __init__(self) -> None:
        super().__init__()
        self.storage = StorageHost(self._middleware, self._stored_object)
        self.bucket = OssBucket(BUCKET, URL_LIFETIME)
        self.task_failure: str | None = None
        """The next tasks end Fail with this `error_message`, as a task fails at MiniMax for its own reasons."""

    # --- FakeVendor -----------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(CREATE_PATH, self._create)
        router.add_get(QUERY_PATH, self._query)
        router.add_get(RETRIEVE_PATH, self._retrieve)
        router.add_get(LIST_PATH, self._list)
        router.add_route("*", "/{tail:.*}", self._unknown_url)

    def kind_of(self, request: web.Request) -> str:
        kinds = {("POST", CREATE_PATH): "create", ("GET", QUERY_PATH): "poll", ("GET", RETRIEVE_PATH): "result"}
        return kinds.get((request.method, request.path), "other")

    def env(self) -> dict[str, str]:
        return {"MINIMAX_API_KEY": self.api_key, "MINIMAX_BASE_URL": self.base_url}

    def error_body(self, status: int, message: str) -> Any:
        return base_resp(CODES_BY_STATUS.get(status, 1000), message)

    # --- the API --------------------------------------------------------------------------------------
    def _answer(self, body: dict[str, Any]) -> web.Response:
        return web.json_response(body, headers={"Trace-Id": secrets.token_hex(16)})

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if not header:
            raise Refusal(1004, "login fail: Please carry the API secret key in the 'Authorization' field of the "
                          "request header")  # fmt: skip
        if header != f"Bearer {self.api_key}":
            raise Refusal(2049, "invalid api key")

    async def _create(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            if request.content_type != "application/json":
                raise Refusal(2013, f"invalid params, Content-Type {request.content_type!r}: use application/json")
            body = await read_json(request)
            check_create(body)
        except Refusal as exc:
            return self._answer(base_resp(exc.code, str(exc)))
        job = self.new_job(str(10**14 + secrets.randbelow(9 * 10**14)), body)
        job.extra.update(failure=self.task_failure, created=int(time.time()))
        return self._answer({"task_id": job.id, **base_resp(0, "success")})

    async def _query(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            job = self.jobs.get(_id_param(request, "task_id"))
            if job is None:
                raise Refusal(2013, "invalid params, task not found")
        except Refusal as exc:
            return self._answer(base_resp(exc.code, str(exc)))
        outcome = self.advance(job)
        answer: dict[str, Any] = {"task_id": job.id, "status": "Processing", "file_id": ""}
        status = base_resp(0, "success")
        if outcome == "refused":
            answer["status"], status = "Fail", base_resp(1027, str(job.refused))
        elif outcome == "succeeded" and job.extra["failure"] is not None:
            answer.update(status="Fail", error_message=job.extra["failure"])
        elif outcome == "running":
            answer["status"] = ("Preparing", "Queueing")[job.polls - 1] if job.polls <= 2 else "Processing"
        else:
            file_id = job.extra.setdefault("file_id", str(10**14 + secrets.randbelow(9 * 10**14)))
            answer.update(status="Success", file_id=file_id, video_width=1366, video_height=768)
        return self._answer({**answer, **status})

    async def _retrieve(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            file_id = _id_param(request, "file_id")
            job = next((j for j in self.jobs.values() if j.extra.get("file_id") == file_id), None)
            if job is None:
                raise Refusal(2013, "invalid params, file not found")
        except Refusal as exc:
            return self._answer(base_resp(exc.code, str(exc)))
        url = self._download_url(job)
        file = {"file_id": int(file_id), "bytes": len(self.video), "created_at": job.extra["created"],
                "filename": "output.mp4", "purpose": "video_generation", "download_url": url,
                "backup_download_url": url}  # fmt: skip
        return self._answer({"file": file, **base_resp(0, "success")})

    async def _list(self, request: web.Request) -> web.Response:
        try:
            self._check_auth(request)
            if request.query.get("purpose") not in LIST_PURPOSES:
                raise Refusal(2013, f"invalid params, purpose {request.query.get('purpose')!r}")
        except Refusal as exc:
            return self._answer(base_resp(exc.code, str(exc)))
        return self._answer({"files": [], **base_resp(0, "success")})

    async def _unknown_url(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found")

    # --- the result storage ---------------------------------------------------------------------------
    def _download_url(self, job: FakeJob) -> str:
        """A newly signed URL; while `expire_first_url` holds, the expired one until a download refused it."""
        stale: str | None = job.extra.get("stale_url")
        if stale is not None and not job.extra.get("url_refused"):
            return stale
        version = self.hand_out_url(job)
        key = f"/{BUCKET}/inference_output/video/{job.id}/output.mp4"
        url = self.bucket.signed_url(self.storage_url, key, expired=version < 0)
        if version < 0:
            job.extra["stale_url"] = url
        return url

    async def _stored_object(self, request: web.Request) -> web.Response:
        return self.bucket.answer(request, self, OBJECT_KEY)


def base_resp(code: int, message: str) -> dict[str, Any]:
    return {"base_resp": {"status_code": code, "status_msg": message}}


def check_create(body: Any) -> None:
    """Refuse the body as MiniMax would (`Refusal`, code 2013)."""
    if not isinstance(body, dict):
        raise Refusal(2013, "invalid params, the body is not a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise Refusal(2013, f"invalid params, unknown field {unknown[0]}")
    model = body.get("model")
    spec = MODELS.get(model) if isinstance(model, str) else None
    if spec is None:
        raise Refusal(2013, f"invalid params, model {model!r} is not supported")
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise Refusal(2013, "invalid params, prompt must be a string")
    if prompt is not None and len(prompt) > MAX_PROMPT:
        raise Refusal(2013, f"invalid params, prompt exceeds {MAX_PROMPT} characters")
    for name in (*BOOLEANS, "callback_url"):
        wanted = str if name == "callback_url" else bool
        if name in body and not isinstance(body[name], wanted):
            raise Refusal(2013, f"invalid params, {name} must be a {wanted.__name__}")
    image = body.get("first_frame_image")
    if image is None and not spec.text_to_video:
        raise Refusal(2013, f"invalid params, first_frame_image is required for {model}")
    if image is None and not prompt:
        raise Refusal(2013, "invalid params, prompt is required")
    if image is not None:
        check_image("first_frame_image", image)
    if "last_frame_image" in body:
        if not spec.last_frame or image is None:
            raise Refusal(2013, f"invalid params, last_frame_image is not supported here by {model}")
        check_image("last_frame_image", body["last_frame_image"])
    if "subject_reference" in body:
        raise Refusal(2013, f"invalid params, subject_reference is not supported by {model}")
    duration, resolution = body.get("duration", 6), body.get("resolution", "768P")
    if type(duration) is not int or duration not in (6, 10):
        raise Refusal(2013, f"invalid params, duration {duration!r}: 6 or 10")
    if not isinstance(resolution, str) or resolution not in spec.resolutions:
        raise Refusal(2013, f"invalid params, resolution {resolution!r} is not supported by {model}")
    if resolution == "1080P" and duration != 6:
        raise Refusal(2013, "invalid params, 1080P supports duration 6 only")
    if resolution == "512P" and image is None:
        raise Refusal(2013, "invalid params, 512P is for image-to-video only")


def check_image(field: str, value: Any) -> None:
    """A public URL, or a base64 data URL of a JPG/PNG/WebP under 20 MB, short side over 300 px, 2:5 to 5:2."""
    if not isinstance(value, str):
        raise Refusal(2013, f"invalid params, {field} must be a string")
    if value.startswith(("http://", "https://")):
        return
    match = DATA_URI.match(value)
    if match is None:
        raise Refusal(2013, f"invalid params, {field} must be a URL or data:image/<type>;base64,<data>")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise Refusal(2013, f"invalid params, {field} is not valid base64") from None
    if len(data) >= IMAGE_MAX_BYTES:
        raise Refusal(2013, f"invalid params, {field} must be smaller than 20MB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = str(img.format).lower(), img.size
    except Exception:
        raise Refusal(2013, f"invalid params, {field} could not be decoded") from None
    if fmt != match.group(1).replace("jpg", "jpeg"):
        raise Refusal(2013, f"invalid params, {field} is declared {match.group(1)} but is {fmt}")
    if min(width, height) <= IMAGE_MIN_SIDE:
        raise Refusal(2013, f"invalid params, {field} short side must exceed {IMAGE_MIN_SIDE}px")
    if not IMAGE_RATIOS[0] <= width / height <= IMAGE_RATIOS[1]:
        raise Refusal(2013, f"invalid params, {field} aspect ratio must be between 2:5 and 5:2")


def _id_param(request: web.Request, name: str) -> str:
    """A task or file id from the query: MiniMax's ids are digit strings."""
    value = request.query.get(name, "")
    if not value.isdigit():
        raise Refusal(2013, f"invalid params, {name} {value!r}")
    return value
