"""A loopback server for the OpenAI Videos API, as the official SDK and vLLM-Omni document it (reference
notes §1 and §7b), standing for a self-hosted server (vLLM-Omni, SGLang) or a relay (LiteLLM) that serves
several models at once, Sora ids included.

Strict where the real services are: `Authorization: Bearer <key>` (401 in OpenAI's shape when missing or
wrong; `api_key=None` is a server started without a key, which takes any request), `POST /v1/videos` only as
multipart/form-data or JSON, OpenAI's field names and types (`seconds` a string, `size` "WxH", both among what
the model makes; an unknown field is `unknown_parameter`, and Sora takes none of vLLM-Omni's extra ones such as
`seed`), the first frame an actual PNG/JPEG/WebP file part (of exactly the video's size for Sora). A video goes
queued → in_progress → completed, or failed with `error: {code, message}`; its content is served by the API
(404 until completed), and DELETE removes it. Only the `video` variant of the content is served.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.web_request import FileField
from PIL import Image, UnidentifiedImageError

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json

WAN = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
WAN_IMAGE = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
LTX = "Lightricks/LTX-Video"
"""Listed with capability fields of its own: 5 s only, 768x512 or 512x768, no first frame."""
CHAT_MODEL = "Qwen/Qwen2.5-Omni-7B"
"""Listed as a text model (`output_modalities`); its /videos requests are refused."""
SIZE = re.compile(r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$")
OPENAI_FIELDS = frozenset({"prompt", "model", "seconds", "size", "input_reference"})
SDK_BRACKET_FIELDS = frozenset({"input_reference[image_url]", "input_reference[file_id]"})
"""How the SDK flattens an `input_reference` object in a multipart form."""
VLLM_FIELDS = frozenset({"seed", "negative_prompt", "width", "height", "num_frames", "fps", "num_inference_steps",
                         "guidance_scale"})  # fmt: skip
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


@dataclass(frozen=True)
class Served:
    """A model the fake serves and what it takes. None: any value of the right form (a self-hosted server turns
    seconds into frames and takes any size)."""

    seconds: frozenset[str] | None = None
    sizes: frozenset[str] | None = None
    extra_fields: frozenset[str] = VLLM_FIELDS
    images: bool = True
    image_must_match: bool = False
    listing: dict[str, Any] = field(default_factory=dict)
    """Extra fields of its `/v1/models` entry."""


SORA_SIZES = frozenset({"720x1280", "1280x720"})
SERVED: dict[str, Served] = {
    WAN: Served(),
    WAN_IMAGE: Served(),
    LTX: Served(
        seconds=frozenset({"5"}),
        sizes=frozenset({"768x512", "512x768"}),
        images=False,
        listing={"capabilities": {"durations": [5], "sizes": ["768x512", "512x768"], "supports_image": False}},
    ),
    "sora-2": Served(frozenset({"4", "8", "12", "16", "20"}), SORA_SIZES, frozenset(), image_must_match=True),
    "sora-2-pro": Served(
        frozenset({"4", "8", "12", "16", "20"}),
        SORA_SIZES | {"1024x1792", "1792x1024", "1080x1920", "1920x1080"},
        frozenset(),
        image_must_match=True,
    ),
}


def openai_error(message: str, type_: str = "invalid_request_error", *, param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:  # fmt: skip
    """OpenAI's error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None, code: str = "invalid_value", status: int = 400) -> None:
        super().__init__(message)
        self.body = openai_error(message, param=param, code=code)
        self.status = status


class OpenAIFake(FakeVendor):
    provider: ClassVar[str] = "openai"
    model: ClassVar[str] = f"openai/{WAN}"
    image_model: ClassVar[str | None] = f"openai/{WAN_IMAGE}"
    durations: ClassVar[tuple[int, ...]] = (4, 5, 8, 12)
    result_urls: ClassVar[bool] = False  # the API serves the bytes itself: nothing can expire
    reports_progress: ClassVar[bool] = True
    can_cancel: ClassVar[bool] = True  # DELETE /v1/videos/{id}

    def __init__(self, *, api_key: str | None = "sk-test") -> None:
        self.api_key = api_key
        self.poll_after_ms = 1500
        """Sent as `openai-poll-after-ms` with every unfinished video."""
        self.fail_reason: str | None = None
        """The next videos fail (not refused) with this message where they would have completed."""
        super().__init__()

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/models", self._models)
        router.add_post("/v1/videos", self._create)
        router.add_get("/v1/videos/{video_id}", self._retrieve)
        router.add_delete("/v1/videos/{video_id}", self._delete)
        router.add_get("/v1/videos/{video_id}/content", self._content)
        router.add_route("*", "/{tail:.*}", self._invalid_url)

    def kind_of(self, request: web.Request) -> str:
        parts = request.path.strip("/").split("/")
        if parts[:2] != ["v1", "videos"]:
            return "other"
        if len(parts) == 2:
            return "create" if request.method == "POST" else "other"
        if len(parts) == 3:
            return {"GET": "poll", "DELETE": "cancel"}.get(request.method, "other")
        return "download" if parts[3:] == ["content"] and request.method == "GET" else "other"

    def env(self) -> dict[str, str]:
        key = {"OPENAI_API_KEY": self.api_key} if self.api_key is not None else {}
        return {**key, "OPENAI_BASE_URL": f"{self.base_url}/v1"}

    def error_body(self, status: int, message: str) -> Any:
        if status == 429:
            return openai_error(message, "requests", code="rate_limit_exceeded")
        if status >= 500:
            return openai_error(message, "server_error")
        return openai_error(message)

    # --- routes -----------------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        self._authorize(request)
        entries = [{"id": mid, "object": "model", "created": 1760000000, "owned_by": "vllm-omni", **served.listing}
                   for mid, served in SERVED.items()]  # fmt: skip
        entries.append({"id": CHAT_MODEL, "object": "model", "created": 1760000000, "owned_by": "vllm-omni",
                        "output_modalities": ["text", "audio"]})  # fmt: skip
        return web.json_response({"object": "list", "data": entries})

    async def _create(self, request: web.Request) -> web.Response:
        self._authorize(request)
        try:
            fields = await self._fields(request)
            model = self._check(fields)
        except BadRequest as exc:
            return web.json_response(exc.body, status=exc.status)
        video_id = f"video_{uuid.uuid4().hex}"
        job = self.new_job(video_id, fields)
        job.extra.update(model=model, created_at=int(time.time()), status="queued", progress=0,
                         fail_reason=self.fail_reason)  # fmt: skip
        return web.json_response(self._video(job))

    async def _retrieve(self, request: web.Request) -> web.Response:
        self._authorize(request)
        job = self._job(request)
        state = self.advance(job)
        if state == "running":
            first = job.polls == 1
            job.extra.update(status="queued" if first else "in_progress",
                             progress=0 if first else min(99, int(self.progress(job) * 100)))  # fmt: skip
        elif state == "succeeded" and job.extra["fail_reason"] is not None:
            job.extra.update(status="failed", error={"code": "internal_error", "message": job.extra["fail_reason"]})
        elif state == "succeeded":
            job.extra.update(status="completed", progress=100, completed_at=int(time.time()))
        elif state == "refused":
            job.extra.update(status="failed", error={"code": "moderation_blocked", "message": job.refused})
        headers = {"openai-poll-after-ms": str(self.poll_after_ms)} if state == "running" else {}
        return web.json_response(self._video(job), headers=headers)

    async def _delete(self, request: web.Request) -> web.Response:
        self._authorize(request)
        job = self._job(request)
        job.cancelled = True
        return web.json_response({"id": job.id, "object": "video.deleted", "deleted": True})

    async def _content(self, request: web.Request) -> web.Response:
        self._authorize(request)
        job = self._job(request)
        variant = request.query.get("variant", "video")
        if variant != "video":
            return web.json_response(openai_error(f"Variant {variant!r} is not served here.", param="variant"),
                                     status=400)  # fmt: skip
        if job.extra["status"] != "completed":
            return web.json_response(openai_error(f"Video {job.id} is not ready: it is {job.extra['status']}."),
                                     status=404)  # fmt: skip
        return self.video_response()

    async def _invalid_url(self, request: web.Request) -> web.Response:
        return web.json_response(openai_error(f"Invalid URL ({request.method} {request.path})"), status=404)

    # --- the contract -----------------------------------------------------------------------------------
    def _authorize(self, request: web.Request) -> None:
        if self.api_key is None:
            return  # a server started without --api-key
        header = request.headers.get("Authorization")
        if header is None:
            raise _json_error(401, openai_error("You didn't provide an API key. You need to provide your API key "
                                                "in an Authorization header using Bearer auth."))  # fmt: skip
        if header != f"Bearer {self.api_key}":
            raise _json_error(401, openai_error("Incorrect API key provided.", code="invalid_api_key"))

    def _job(self, request: web.Request) -> FakeJob:
        job = self.jobs.get(request.match_info["video_id"])
        if job is None or job.cancelled:  # deleted videos are gone
            raise _json_error(404, openai_error(f"Video with id '{request.match_info['video_id']}' not found."))
        return job

    async def _fields(self, request: web.Request) -> dict[str, Any]:
        """The create body as `{name: value}`: strings from a form (a file part as its facts), JSON as sent."""
        if request.content_type == "application/json":
            body = await read_json(request)
            if not isinstance(body, dict):
                raise BadRequest("We could not parse the JSON body of your request.", None, "invalid_json")
            return body
        if request.content_type != "multipart/form-data":
            raise BadRequest(f"Unsupported content type: {request.content_type!r}. This endpoint takes "
                             "multipart/form-data.", None, "unsupported_content_type")  # fmt: skip
        form = await request.post()
        fields: dict[str, Any] = {}
        for name in form:
            values = form.getall(name)
            if len(values) > 1:
                raise BadRequest(f"Parameter '{name}' was given {len(values)} times.", name)
            value = values[0]
            fields[name] = _file_facts(value) if isinstance(value, FileField) else value
        return fields

    def _check(self, fields: dict[str, Any]) -> str:
        model = fields.get("model", "sora-2")  # the API's default model
        served = SERVED.get(model) if isinstance(model, str) else None
        if served is None:
            raise BadRequest(f"The model '{model}' does not exist.", "model", "model_not_found", status=404)
        for name in fields:
            if name not in OPENAI_FIELDS | SDK_BRACKET_FIELDS | served.extra_fields:
                raise BadRequest(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        seconds, size = fields.get("seconds", "4"), fields.get("size", "720x1280")
        if not _offered(seconds, served.seconds, lambda v: v.isdigit() and 1 <= int(v) <= 20):
            raise BadRequest(f"Invalid value: {seconds!r}. Supported values are: {_listed(served.seconds)}.",
                             "seconds")  # fmt: skip
        if not _offered(size, served.sizes, lambda v: SIZE.match(v) is not None):
            raise BadRequest(f"Invalid value: {size!r}. Supported values are: {_listed(served.sizes)}.", "size")
        if "seed" in fields and not _whole(fields["seed"]):
            raise BadRequest(f"Invalid value for 'seed': {fields['seed']!r} is not an integer.", "seed")
        if "negative_prompt" in fields and not isinstance(fields["negative_prompt"], str):
            raise BadRequest("Invalid type for 'negative_prompt': expected a string.", "negative_prompt")
        self._check_image(fields, served, size)
        return str(model)

    def _check_image(self, fields: dict[str, Any], served: Served, size: str) -> None:
        image = fields.get("input_reference")
        if image is None:
            return
        if not served.images:
            raise BadRequest("This model does not take an input_reference.", "input_reference")
        if isinstance(image, dict) and "format" in image:  # a file part
            if image["format"] is None or IMAGE_TYPES.get(image["content_type"]) != image["format"]:
                raise BadRequest("input_reference must be a PNG, JPEG or WebP image file.", "input_reference")
            if served.image_must_match and f"{image['width']}x{image['height']}" != size:
                raise BadRequest("Inpaint image must match the requested width and height.", "input_reference")
        elif not (isinstance(image, dict) and any(isinstance(image.get(k), str) for k in ("image_url", "file_id"))):
            raise BadRequest("input_reference must be a file, or an object with image_url or file_id.",
                             "input_reference")  # fmt: skip

    def _video(self, job: FakeJob) -> dict[str, Any]:
        """OpenAI's video object."""
        extra = job.extra
        return {"id": job.id, "object": "video", "model": extra["model"], "status": extra["status"],
                "progress": extra["progress"], "created_at": extra["created_at"],
                "completed_at": extra.get("completed_at"), "expires_at": None, "prompt": job.body["prompt"],
                "seconds": job.body.get("seconds", "4"), "size": job.body.get("size", "720x1280"),
                "remixed_from_video_id": None, "error": extra.get("error")}  # fmt: skip


def _file_facts(part: FileField) -> dict[str, Any]:
    """What the fake keeps of an uploaded file: its declared type, the format its bytes really are, its size."""
    data = part.file.read()
    facts: dict[str, Any] = {"filename": part.filename, "content_type": part.content_type, "bytes": len(data),
                             "format": None, "width": 0, "height": 0}  # fmt: skip
    try:
        with Image.open(io.BytesIO(data)) as img:
            facts.update(format=img.format, width=img.width, height=img.height)
    except (UnidentifiedImageError, OSError):
        pass
    return facts


def _offered(value: object, allowed: frozenset[str] | None, well_formed: Callable[[str], bool]) -> bool:
    """A string of the right form and, where the model lists its values, one of them."""
    return isinstance(value, str) and well_formed(value) and (allowed is None or value in allowed)


def _whole(value: object) -> bool:
    if isinstance(value, str):
        return value.isdigit()
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _listed(values: frozenset[str] | None) -> str:
    if values is None:
        return "a whole number from 1 to 20 (seconds) or WIDTHxHEIGHT (size)"
    return ", ".join(f"'{v}'" for v in sorted(values, key=lambda v: (len(v), v)))


def _json_error(status: int, body: dict[str, Any]) -> web.HTTPException:
    """An HTTP error with OpenAI's JSON body, raised so that a check can end any handler."""
    error_class = {401: web.HTTPUnauthorized, 404: web.HTTPNotFound}[status]
    return error_class(text=json.dumps(body), content_type="application/json")
