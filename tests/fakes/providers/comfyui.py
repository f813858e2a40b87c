"""A loopback ComfyUI server, as strict as the real one where the bot can go wrong.

Routes (each also under `/api`, as ComfyUI mounts them): `POST /prompt`, `GET /prompt`, `GET /queue`,
`POST /queue` (`delete`, `clear`), `POST /interrupt`, `GET /history`, `GET /history/{id}`, `GET /view`,
`POST /upload/image`, `GET /object_info`, `GET /system_stats` and the WebSocket `/ws?clientId=`.

`POST /prompt` validates the graph as ComfyUI does, with its 400 shapes: an unknown `class_type`
(`missing_node_type`), no output node (`prompt_no_outputs`), and per node (`node_errors`) a missing required
input, a link to a node that is not there or of the wrong type, a value of the wrong type (an unreplaced
`"{{seed}}"` in an INT input), a value outside a list (model files, samplers), a `LoadImage` of a file never
uploaded. Scalars must have their JSON type (ComfyUI itself would also take `"81"` for an INT; the bot has no
reason to send one). ComfyUI has no credentials; `basic_auth` puts the fake behind a proxy that wants them.

Prompts run one at a time in queue order. Each `GET /history/{id}` of the running prompt is one step of it
(`FakeVendor.advance`): `execution_start`, then `executing`/`progress` frames to the client that queued it,
and at the end `executed`, `execution_success` and `executing` with `node: null`, and its history entry. The
knobs in ComfyUI's terms: `refuse_reason` is an `execution_error` of a safety-checking node, `never_finish`
keeps the sampler running, `expire_first_url` does not apply (files stay in the output folder; `result_urls`
is False).
"""

from __future__ import annotations

import base64
import mimetypes
import re
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.providers.base import FakeJob, FakeVendor, Handler, read_json
from tests.fakes.providers.comfyui_nodes import NODES, object_info, problem, validate

WORKFLOWS = Path(__file__).resolve().parents[3] / "workflows"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
"""ComfyUI takes a client's prompt_id only as a canonical lowercase UUID."""


class ComfyUIFake(FakeVendor):
    provider = "comfyui"
    model = "comfyui/wan22-t2v"
    image_model = "comfyui/wan22-i2v"
    durations = (5,)
    result_urls = False
    reports_progress = True
    reports_queue_position = False
    """A lone prompt runs at once here; positions behind other prompts are tested in test_provider_comfyui."""
    create_is_idempotent = True
    """The bot chooses the prompt id: a create repeated after a lost answer finds the prompt already queued."""

    def __init__(self, workflow: Path = WORKFLOWS) -> None:
        self.workflow = workflow
        self.nodes = dict(NODES)
        self.basic_auth: tuple[str, str] | None = None
        self.uploads: dict[str, bytes] = {}
        self.files: set[tuple[str, str, str]] = set()
        """(type, subfolder, filename) of every file the outputs wrote: what `/view` serves."""
        self.order: list[str] = []
        """Prompts not finished, in queue order: the first one runs."""
        self.history: dict[str, dict[str, Any]] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.upload_forms: list[dict[str, str]] = []
        """The text fields of each `/upload/image` (the file itself is in `uploads`)."""
        self.deleted: list[str] = []
        self.interrupted: list[str] = []
        self.number = 0
        super().__init__()

    # --- FakeVendor ------------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        for prefix in ("", "/api"):
            for method, path, handler in (
                ("POST", "/prompt", self._post_prompt),
                ("GET", "/prompt", self._get_prompt),
                ("GET", "/queue", self._get_queue),
                ("POST", "/queue", self._post_queue),
                ("POST", "/interrupt", self._interrupt),
                ("GET", "/history", self._all_history),
                ("GET", "/history/{prompt_id}", self._one_history),
                ("GET", "/view", self._view),
                ("POST", "/upload/image", self._upload),
                ("GET", "/object_info", self._object_info),
                ("GET", "/system_stats", self._system_stats),
                ("GET", "/ws", self._socket),
            ):
                router.add_route(method, prefix + path, self._guarded(handler))

    def kind_of(self, request: web.Request) -> str:
        path, method = request.path.removeprefix("/api"), request.method
        if method == "POST":
            return {"/prompt": "create", "/upload/image": "upload", "/queue": "cancel", "/interrupt": "cancel"}.get(
                path, "other"
            )
        if path.startswith("/history/") and path.removeprefix("/history/") in self.jobs:
            # A status poll. The same request for a prompt not queued yet is a submit looking before it sends
            # (and `GET /queue` is asked by submit, poll and cancel alike): neither counts as a poll.
            return "poll"
        return "download" if path == "/view" else "other"

    def env(self) -> dict[str, str]:
        return {"COMFYUI_URL": self.base_url, "COMFYUI_WORKFLOW": str(self.workflow)}

    def error_body(self, status: int, message: str) -> Any:
        return {"error": problem("server_error", message), "node_errors": {}}

    async def close(self) -> None:
        for socket in list(self.sockets.values()):
            await socket.close()
        await super().close()

    # --- for tests -------------------------------------------------------------------------------------
    async def drop_sockets(self) -> None:
        """Cut every WebSocket, as a ComfyUI restart or a proxy timeout does."""
        for socket in list(self.sockets.values()):
            await socket.close()

    # --- handlers ----------------------------------------------------------------------------------------
    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            origin = request.headers.get("Origin")
            if origin is not None and origin.split("://")[-1] != request.host:
                return web.Response(status=403)  # ComfyUI's origin check on a loopback server
            if self.basic_auth is not None:
                expected = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
                if request.headers.get("Authorization") != expected:
                    return web.Response(
                        status=401,
                        text="401 Authorization Required",
                        headers={"WWW-Authenticate": 'Basic realm="comfyui"'},
                    )
            return await handler(request)

        return guarded

    async def _post_prompt(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict) or "prompt" not in body:
            return self._reject(problem("no_prompt", "No prompt provided", "No prompt provided"))
        prompt_id = body.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif not isinstance(prompt_id, str) or not UUID.match(prompt_id):
            return self._reject(problem("invalid_prompt_id", "prompt_id must be a valid UUID"))
        if not isinstance(body.get("client_id", ""), str) or not isinstance(body["prompt"], dict):
            return self._reject(problem("invalid_prompt", "Cannot execute because the prompt is malformed."))
        error, node_errors = validate(body["prompt"], self.nodes, self.uploads)
        if error is not None:
            return self._reject(error, node_errors)
        self.number += 1
        outputs = [key for key, node in body["prompt"].items() if self.nodes[node["class_type"]].output_node]
        self.new_job(prompt_id, body).extra.update(
            number=self.number, client_id=body.get("client_id"), messages=[], outputs=outputs, started=False
        )
        self.order.append(prompt_id)
        await self._broadcast_status()
        return web.json_response({"prompt_id": prompt_id, "number": self.number, "node_errors": {}})

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": len(self.order)}})

    async def _get_queue(self, request: web.Request) -> web.Response:
        items = [self._queue_item(self.jobs[prompt_id]) for prompt_id in self.order]
        return web.json_response({"queue_running": items[:1], "queue_pending": items[1:]})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            return web.Response(status=400)
        waiting = self.order[1:] if body.get("clear") else [i for i in body.get("delete") or () if i in self.order[1:]]
        for prompt_id in waiting:
            self.order.remove(prompt_id)
            self.jobs[prompt_id].cancelled = True
            self.deleted.append(prompt_id)
        await self._broadcast_status()
        return web.Response(status=200)

    async def _interrupt(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if self.order and wanted in (None, self.order[0]):  # no prompt id: whatever runs (ComfyUI's global interrupt)
            job = self.jobs[self.order[0]]
            job.cancelled = True
            self.interrupted.append(job.id)
            node = job.extra["outputs"][0]
            await self._end(
                job,
                "error",
                "execution_interrupted",
                {"node_id": node, "executed": [], "node_type": self._class_of(job, node)},
            )
        return web.Response(status=200)

    async def _one_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        if self.order and self.order[0] == prompt_id:
            await self._step(self.jobs[prompt_id])
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _all_history(self, request: web.Request) -> web.Response:
        return web.json_response(self.history)

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        key = (query.get("type", "output"), query.get("subfolder", ""), query.get("filename", ""))
        if key not in self.files:
            return web.Response(status=404)
        kind = mimetypes.guess_type(key[2])[0] or "application/octet-stream"
        return web.Response(body=self.video, content_type=kind, headers={"Content-Disposition": f'filename="{key[2]}"'})

    async def _upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return web.Response(status=400)
        form = await request.post()
        image, kind = form.get("image"), form.get("type", "input")
        if not isinstance(image, web.FileField) or not image.filename or kind not in ("input", "temp", "output"):
            return web.Response(status=400)
        self.upload_forms.append({key: value for key, value in form.items() if isinstance(value, str)})
        name, data = image.filename, image.file.read()
        if form.get("overwrite") not in ("true", "1"):
            stem, dot, extension = name.rpartition(".")
            count = 1
            while name in self.uploads and self.uploads[name] != data:
                name, count = f"{stem} ({count}){dot}{extension}", count + 1
        self.uploads[name] = data
        return web.json_response({"name": name, "subfolder": form.get("subfolder", ""), "type": kind})

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.json_response(object_info(self.nodes, self.uploads))

    async def _system_stats(self, request: web.Request) -> web.Response:
        system = {"os": "posix", "comfyui_version": "0.3.60", "python_version": "3.12", "embedded_python": False}
        device = {"name": "cuda:0 NVIDIA GeForce RTX 4090", "type": "cuda", "index": 0, "vram_total": 25386352640}
        return web.json_response({"system": system, "devices": [device]})

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = socket
        try:
            await socket.send_json({"type": "status", "data": {"status": self._queue_info(), "sid": sid}})
            async for message in socket:
                if message.type is WSMsgType.TEXT and '"feature_flags"' in message.data:
                    await socket.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        finally:
            if self.sockets.get(sid) is socket:
                del self.sockets[sid]
        return socket

    # --- a prompt's life ---------------------------------------------------------------------------------
    async def _step(self, job: FakeJob) -> None:
        if not job.extra["started"]:
            job.extra["started"] = True
            await self._emit(job, "execution_start", {}, record=True)
            await self._emit(job, "execution_cached", {"nodes": []}, record=True)
        outcome = self.advance(job)
        node = self._sampler(job)
        if outcome == "running":
            total = self.polls_to_finish + 1
            await self._emit(job, "executing", {"node": node, "display_node": node})
            await self._emit(job, "progress", {"value": min(job.polls, total - 1), "max": total, "node": node})
        elif outcome == "refused":
            # ComfyUI has no content policy: a safety-checking node of the workflow raises instead.
            output = job.extra["outputs"][0]
            await self._end(
                job,
                "error",
                "execution_error",
                {
                    "node_id": output,
                    "node_type": self._class_of(job, output),
                    "executed": [node],
                    "exception_message": f"Content blocked by the safety checker: {job.refused}",
                    "exception_type": "RuntimeError",
                    "traceback": [],
                    "current_inputs": {},
                    "current_outputs": [],
                },
            )
        elif outcome == "succeeded":
            outputs = {}
            for output in job.extra["outputs"]:
                outputs[output] = self._write_output(job, output)
                await self._emit(job, "executed", {"node": output, "display_node": output, "output": outputs[output]})
            await self._end(job, "success", "execution_success", {}, outputs)

    async def _end(
        self, job: FakeJob, status: str, event: str, data: dict[str, Any], outputs: dict[str, Any] | None = None
    ) -> None:
        await self._emit(job, event, data, record=True)
        await self._emit(job, "executing", {"node": None, "display_node": None})
        self.history[job.id] = {
            "prompt": self._queue_item(job),
            "outputs": outputs or {},
            "status": {"status_str": status, "completed": status == "success", "messages": job.extra["messages"]},
            "meta": {
                node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
                for node in outputs or {}
            },
        }
        self.order.remove(job.id)
        await self._broadcast_status()

    def _write_output(self, job: FakeJob, node_id: str) -> dict[str, Any]:
        """The UI output of an output node, shaped as that node type writes it."""
        inputs = job.body["prompt"][node_id]["inputs"]
        subfolder, _, prefix = str(inputs.get("filename_prefix", "ComfyUI")).rpartition("/")
        kind = self._class_of(job, node_id)
        if kind == "VHS_VideoCombine":
            extension = {"image/gif": "gif", "video/webm": "webm"}.get(inputs["format"], "mp4")
            name = f"{prefix}_{job.extra['number']:05}.{extension}"
            folder = "output" if inputs["save_output"] else "temp"  # VHS previews land in temp when not saved
            self.files.add((folder, subfolder, name))
            return {
                "gifs": [
                    {
                        "filename": name,
                        "subfolder": subfolder,
                        "type": folder,
                        "format": inputs["format"],
                        "frame_rate": inputs["frame_rate"],
                        "workflow": name.rsplit(".", 1)[0] + ".png",
                        "fullpath": f"/comfy/{folder}/{subfolder}/{name}",
                    }
                ]
            }
        extension = "webp" if kind == "SaveAnimatedWEBP" else "webm" if inputs.get("format") == "webm" else "mp4"
        name = f"{prefix}_{job.extra['number']:05}_.{extension}"
        self.files.add(("output", subfolder, name))
        return {"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [True]}

    async def _emit(self, job: FakeJob, event: str, data: dict[str, Any], *, record: bool = False) -> None:
        data = {**data, "prompt_id": job.id}
        if record:
            data["timestamp"] = int(time.time() * 1000)
            job.extra["messages"].append([event, data])
        socket = self.sockets.get(job.extra["client_id"] or "")
        if socket is not None and not socket.closed:
            await socket.send_json({"type": event, "data": data})

    async def _broadcast_status(self) -> None:
        for socket in list(self.sockets.values()):
            if not socket.closed:
                await socket.send_json({"type": "status", "data": {"status": self._queue_info()}})

    # --- shapes ----------------------------------------------------------------------------------------------
    def _reject(self, error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> web.Response:
        return web.json_response({"error": error, "node_errors": node_errors or {}}, status=400)

    def _queue_item(self, job: FakeJob) -> list[Any]:
        extra_data = {"client_id": job.extra["client_id"], "create_time": 1767225600000}
        return [job.extra["number"], job.id, job.body["prompt"], extra_data, job.extra["outputs"]]

    def _queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.order)}}

    def _class_of(self, job: FakeJob, node_id: str) -> str:
        return str(job.body["prompt"][node_id]["class_type"])

    def _sampler(self, job: FakeJob) -> str:
        prompt = job.body["prompt"]
        return str(
            next((key for key, node in prompt.items() if "Sampler" in node["class_type"]), job.extra["outputs"][0])
        )
