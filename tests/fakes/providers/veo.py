"""A loopback Gemini API serving Veo's `predictLongRunning`, as strict as Google's.

What it checks, answering as Google does (`{"error": {"code", "message", "status", "details"}}`):
- the key, in `x-goog-api-key` (or `?key=`): missing → 403 PERMISSION_DENIED, wrong → 400 INVALID_ARGUMENT with
  ErrorInfo reason API_KEY_INVALID;
- exact paths and methods; a model that is not one of the four Veo models → 404 NOT_FOUND;
- the body: JSON, camelCase names only, one instance with a non-empty `prompt`, an image only as
  `bytesBase64Encoded` (valid base64 of a PNG/JPEG/WebP) + a matching `mimeType`; `durationSeconds` an integer
  in 4/6/8, `aspectRatio` 16:9 or 9:16, `sampleCount` an integer 1..4; Vertex-only parameters (`seed`,
  `generateAudio`…) → 400 INVALID_ARGUMENT "isn't supported", unknown names → 400 "Unknown name", with a
  BadRequest field violation naming the field;
- downloads need `alt=media`.

The knobs in Veo's terms: while `polls_to_finish`/`never_finish`/`finish_after` hold a job, a poll answers the
operation without `done` (Veo reports no progress); `fail_next` kinds are `create`, `poll` and `download` (the
rest is `other`); `refuse_reason` ends the job `done` with no sample and `raiMediaFilteredReasons`;
`operation_error` (this fake's own) ends it `done` with an `error`. Veo's file URI never changes, so
`result_urls` is False and `expire_first_url` means the job's file was deleted: its download answers 404
NOT_FOUND, on every try, as Google does for a file it no longer keeps. Veo has no cancel: nothing to serve.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from typing import Any, ClassVar

from aiohttp import web

from tests.fakes.providers.base import FakeJob, FakeVendor, read_json

API_KEY = "test-gemini-key"
VEO_MODELS = (
    "veo-3.1-generate-preview",
    "veo-3.1-fast-generate-preview",
    "veo-3.0-generate-001",
    "veo-3.0-fast-generate-001",
)
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
VERTEX_ONLY = ("seed", "generateAudio", "fps", "storageUri", "pubsubTopic", "compressionQuality", "resizeMode")
PARAMETER_NAMES = {"sampleCount", "durationSeconds", "aspectRatio", "negativePrompt", "resolution",
                   "personGeneration", "enhancePrompt"}  # fmt: skip
INSTANCE_NAMES = {"prompt", "image", "lastFrame", "referenceImages", "video"}
IMAGE_TYPES = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",), "image/webp": (b"RIFF",)}

_CREATE = re.compile(r"^/v1beta/models/([^/:]+):predictLongRunning$")
_OPERATION = re.compile(r"^/v1beta/models/([^/:]+)/operations/([^/:]+)$")
_MODEL = re.compile(r"^/v1beta/models/([^/:]+)$")
_FILE = re.compile(r"^/v1beta/files/([^/:]+):download$")


class BadField(Exception):
    """A body field Google would refuse: 400 INVALID_ARGUMENT naming it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class VeoFake(FakeVendor):
    provider: ClassVar[str] = "veo"
    model: ClassVar[str] = "veo/veo-3.1-fast-generate-preview"
    image_model: ClassVar[str | None] = "veo/veo-3.1-generate-preview"
    durations: ClassVar[tuple[int, ...]] = (4, 6, 8)
    result_urls: ClassVar[bool] = False
    can_cancel: ClassVar[bool] = False
    """The Gemini API has no cancel for Veo operations."""

    def __init__(self) -> None:
        super().__init__()
        self.operation_error: str | None = None
        """The next jobs end `done` with this `error.message` (a failure at Google, e.g. an internal error)."""
        self.files: dict[str, str] = {}
        """File id → job id."""
        self._ids = itertools.count(1)

    # --- FakeVendor -------------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/{path:.*}", self._dispatch)

    def kind_of(self, request: web.Request) -> str:
        path = request.path
        if request.method == "POST" and _CREATE.match(path):
            return "create"
        if request.method == "GET" and _OPERATION.match(path):
            return "poll"
        if request.method == "GET" and _FILE.match(path):
            return "download"
        return "other"

    def env(self) -> dict[str, str]:
        return {"GEMINI_API_KEY": API_KEY, "GEMINI_BASE_URL": self.base_url}

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}

    # --- the API -----------------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        refused = self._check_key(request)
        if refused is not None:
            return refused
        path, method = request.path, request.method
        if method == "POST" and (found := _CREATE.match(path)):
            return await self._create(request, found.group(1))
        if method == "GET" and (found := _OPERATION.match(path)):
            return self._poll(found.group(1), found.group(2))
        if method == "GET" and (found := _FILE.match(path)):
            return self._download(request, found.group(1))
        if method == "GET" and path == "/v1beta/models":
            return self._list_models(request)
        if method == "GET" and (found := _MODEL.match(path)):
            return self._get_model(found.group(1))
        return self.reply_error(404, f"Method not found: {method} {path}")

    def _check_key(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return self.reply_error(403, "Method doesn't allow unregistered callers (callers without established "
                                         "identity). Please use API Key or other form of API consumer identity "
                                         "to call this API.")  # fmt: skip
        if key != API_KEY:
            body = self.error_body(400, "API key not valid. Please pass a valid API key.")
            body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                         "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                                         "metadata": {"service": "generativelanguage.googleapis.com"}}]  # fmt: skip
            return web.json_response(body, status=400)
        return None

    async def _create(self, request: web.Request, model: str) -> web.Response:
        if model not in VEO_MODELS:
            return self.reply_error(404, f"models/{model} is not found for API version v1beta, or is not "
                                         "supported for predictLongRunning.")  # fmt: skip
        if request.content_type != "application/json":
            return self.reply_error(400, f"Invalid content type: {request.content_type or 'none'}")
        body = await read_json(request)
        try:
            _check_body(body)
        except BadField as exc:
            return self._bad_field(exc)
        op_id = f"op{next(self._ids):04d}"
        job = self.new_job(op_id, body)
        job.extra.update(model=model, error=self.operation_error)
        return web.json_response({"name": f"models/{model}/operations/{op_id}"})

    def _poll(self, model: str, op_id: str) -> web.Response:
        job = self.jobs.get(op_id)
        if job is None or job.extra["model"] != model:
            return self.reply_error(404, "Requested entity was not found.")
        name = f"models/{model}/operations/{op_id}"
        outcome = self.advance(job)
        if outcome == "running":  # Veo says nothing while it works: no `done`, no progress
            return web.json_response({"name": name})
        answer: dict[str, Any]
        if outcome == "refused":
            answer = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": [job.refused]}
        elif job.extra["error"] is not None:
            # A google.rpc.Status: `code` is the gRPC code (13 INTERNAL), not an HTTP status.
            return web.json_response({"name": name, "done": True, "error": {"code": 13, "message": job.extra["error"]}})
        else:
            answer = {"generatedSamples": [{"video": {"uri": self._file_uri(job)}}]}
        return web.json_response({
            "name": name,
            "done": True,
            "response": {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                "generateVideoResponse": answer,
            },
        })  # fmt: skip

    def _file_uri(self, job: FakeJob) -> str:
        """The video's file, one per job and for good: Veo hands out the same URI on every poll."""
        if "file" not in job.extra:
            file_id = f"file{job.id}"
            job.extra.update(file=file_id, file_version=self.hand_out_url(job))
            self.files[file_id] = job.id
        return f"{self.base_url}/v1beta/files/{job.extra['file']}:download?alt=media"

    def _download(self, request: web.Request, file_id: str) -> web.Response:
        if request.query.get("alt") != "media":
            return self.reply_error(400, "The download needs alt=media.")
        job = self.jobs.get(self.files.get(file_id, ""))
        if job is None or job.extra["file_version"] < 0:
            return self.reply_error(404, "Requested entity was not found.")
        return self.video_response()

    def _list_models(self, request: web.Request) -> web.Response:
        size = request.query.get("pageSize", "50")
        if not size.isdigit():
            return self._bad_field(BadField("pageSize", f"Invalid value at 'page_size' (TYPE_INT32), \"{size}\""))
        names = ["gemini-2.5-flash", *VEO_MODELS]
        return web.json_response({"models": [self._model_entry(name) for name in names]})

    def _get_model(self, model: str) -> web.Response:
        if model not in VEO_MODELS:
            return self.reply_error(404, f"models/{model} is not found for API version v1beta.")
        return web.json_response(self._model_entry(model))

    @staticmethod
    def _model_entry(name: str) -> dict[str, Any]:
        method = "predictLongRunning" if name.startswith("veo-") else "generateContent"
        return {"name": f"models/{name}", "version": "1", "displayName": name,
                "supportedGenerationMethods": [method]}  # fmt: skip

    def _bad_field(self, exc: BadField) -> web.Response:
        body = self.error_body(400, str(exc))
        body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                     "fieldViolations": [{"field": exc.field, "description": str(exc)}]}]  # fmt: skip
        return web.json_response(body, status=400)


def _check_body(body: Any) -> None:
    """Google's checks of a `predictLongRunning` body for Veo on the Gemini API."""
    if not isinstance(body, dict):
        raise BadField("", "Invalid JSON payload received. Expected an object.")
    _known(body, {"instances", "parameters", "webhookConfig"}, "")
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise BadField("instances", "`instances` must hold exactly one instance.")
    instance = instances[0]
    _known(instance, INSTANCE_NAMES, "instances[0]")
    prompt = instance.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadField("instances[0].prompt", "A non-empty `prompt` is required.")
    for name in ("image", "lastFrame"):
        if name in instance:
            _check_image(instance[name], f"instances[0].{name}")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadField("parameters", "`parameters` must be an object.")
    for name in VERTEX_ONLY:
        if name in parameters:
            message = f"`{name}` isn't supported by this model. Please remove it or refer to the Gemini API docs."
            raise BadField(f"parameters.{name}", message)
    _known(parameters, PARAMETER_NAMES, "parameters")
    _integer(parameters, "sampleCount", range(1, 5))
    _integer(parameters, "durationSeconds", (4, 6, 8))
    aspect = parameters.get("aspectRatio", "16:9")
    if aspect not in ("16:9", "9:16"):
        raise BadField("parameters.aspectRatio", f"Aspect ratio {aspect!r} is not supported: use 16:9 or 9:16.")
    if not isinstance(parameters.get("negativePrompt", ""), str):
        raise BadField("parameters.negativePrompt", "`negativePrompt` must be a string.")


def _known(obj: dict[str, Any], names: set[str], where: str) -> None:
    for name in obj:
        if name not in names:
            at = f" at '{where}'" if where else ""
            raise BadField(f"{where}.{name}".lstrip("."),
                           f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')  # fmt: skip


def _integer(parameters: dict[str, Any], name: str, allowed: Any) -> None:
    if name not in parameters:
        return
    value = parameters[name]
    if type(value) is not int:
        raise BadField(f"parameters.{name}", f"`{name}` must be an integer, got {value!r}.")
    if value not in allowed:
        raise BadField(f"parameters.{name}", f"`{name}` {value} is out of the supported range.")


def _check_image(image: Any, where: str) -> None:
    if not isinstance(image, dict):
        raise BadField(where, "An image must be an object.")
    if set(image) != {"bytesBase64Encoded", "mimeType"}:
        names = ", ".join(sorted(image))
        raise BadField(where, f"An image takes `bytesBase64Encoded` and `mimeType` (inline data only), got {names}.")
    mime_type = image["mimeType"]
    if mime_type not in IMAGE_TYPES:
        raise BadField(f"{where}.mimeType", f"Unsupported MIME type: {mime_type}")
    try:
        data = base64.b64decode(str(image["bytesBase64Encoded"]), validate=True)
    except (binascii.Error, ValueError):
        raise BadField(f"{where}.bytesBase64Encoded", "Invalid value: not base64.") from None
    if not data.startswith(IMAGE_TYPES[mime_type]):
        raise BadField(f"{where}.bytesBase64Encoded", f"The image bytes are not {mime_type}.")
