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
and at the end `executed`, `execution_success` and `executing` with `node: null`, and its history entry, whose
`status.messages` carry ComfyUI's millisecond `timestamp`s (taken on `clock`). The knobs in ComfyUI's terms:
`refuse_reason` is an `execution_error` of a safety-checking node, `never_finish` keeps the sampler running,
`expire_first_url` does not apply (files stay in the output folder; `result_urls` is False), and `finish_after`
is a prompt's run time from its start, as on a GPU: the queue then moves on the clock whoever asks, each prompt
starting when the one before it ended, so two fakes with different `finish_after` are a slow and a fast host.
Of its own: `crash_after_create` (the next prompt is taken, then every request is cut, the answer included) and
`come_back()` (listen again on the same port after `close()`).
"""

from __future__ import annotations

import base64
import mimetypes
import re
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.providers.base import FakeJob, FakeVendor, Handler, read_json
from tests.fakes.providers.comfyui_nodes import NODES, object_info, problem, validate, write_output

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
    has_content_policy = False
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
        self.idle_since = float("-inf")
        """When (on `clock`) the last prompt ended: the next one waiting starts then, with `finish_after`."""
        self.crash_after_create = False
        self.crashed = False
        """Every request is cut (the port still takes connections), from a crash until `come_back()`."""
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
    async def come_back(self) -> None:
        """Listen again on the same port, as a host back after an outage, its queue and history as they were."""
        await self.close()
        self.crashed = False
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def drop_sockets(self) -> None:
        """Cut every WebSocket, as a ComfyUI restart or a proxy timeout does."""
        for socket in list(self.sockets.values()):
            await socket.close()

    # --- handlers ----------------------------------------------------------------------------------------
    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.crashed:
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError("the host crashed")
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
            await self._catch_up()
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
        if self.crash_after_create:  # taken, and then the host dies before it can answer
            self.crash_after_create, self.crashed, self.drop_create_answer = False, True, True
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
    async def _catch_up(self) -> None:
        """With `finish_after`: run the queue up to `clock()`, as the GPU did meanwhile, whoever asks."""
        while self.finish_after is not None and self.order:
            job = self.jobs[self.order[0]]
            if not job.extra["started"]:
                await self._start(job, max(self.idle_since, job.created_at))
            end = job.created_at + self.finish_after
            if job.never_finish or job.refused is not None or self.clock() < end:
                return
            await self._succeed(job, end)

    async def _start(self, job: FakeJob, at: float) -> None:
        job.extra["started"] = True
        if self.finish_after is not None:
            job.created_at = at  # one prompt runs at a time: `advance` counts its run time from its start
        await self._emit(job, "execution_start", {}, at=at)
        await self._emit(job, "execution_cached", {"nodes": []}, at=at)

    async def _step(self, job: FakeJob) -> None:
        if not job.extra["started"]:
            await self._start(job, self.clock())
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
            await self._succeed(job, self.clock())

    async def _succeed(self, job: FakeJob, at: float) -> None:
        outputs = {}
        for output in job.extra["outputs"]:
            file, outputs[output] = write_output(self._class_of(job, output), job.body["prompt"][output]["inputs"],
                                                 job.extra["number"])  # fmt: skip
            self.files.add(file)
            await self._emit(job, "executed", {"node": output, "display_node": output, "output": outputs[output]})
        await self._end(job, "success", "execution_success", {}, outputs, at=at)

    async def _end(self, job: FakeJob, status: str, event: str, data: dict[str, Any],
                   outputs: dict[str, Any] | None = None, at: float | None = None) -> None:  # fmt: skip
        self.idle_since = self.clock() if at is None else at
        await self._emit(job, event, data, at=self.idle_since)
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

    async def _emit(self, job: FakeJob, event: str, data: dict[str, Any], *, at: float | None = None) -> None:
        """Send a frame to the client that queued the prompt; one that happened `at` an instant is also kept in
        its history, stamped as ComfyUI does (milliseconds)."""
        data = {**data, "prompt_id": job.id}
        if at is not None:
            data["timestamp"] = int(at * 1000)
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
