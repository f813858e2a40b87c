"""What every loopback provider fake shares: the aiohttp server, the request log, scripted faults, the common
knobs the engine contract tests turn (`tests/test_provider_contract.py`), and a real MP4 to serve.

A vendor fake subclasses `FakeVendor`, adds its routes in `routes()`, says which kind of request each path is
(`kind_of`), and gives the settings that point the bot at it (`env`). A vendor that hands out its videos on
another origin (a CDN, object storage) sets `storage` to a second server (`storage.py`), whose requests are
downloads. It answers as its vendor documents, failure shapes included, and is strict: a wrong path, header,
field name or type gets the vendor's own error.

The knobs, honoured by every fake in its vendor's words:

| knob | effect |
|---|---|
| `polls_to_finish` | status polls that answer queued/running (with progress where the vendor reports it) before done |
| `finish_after`, `clock` | instead: done once `clock()` is this many seconds past the create (benchmarks) |
| `refuse_reason` | the next jobs end refused by content policy, with this reason, where the vendor reports it |
| `never_finish` | jobs stay running forever |
| `expire_first_url` | the first result URL handed out answers as expired; a later status poll hands out a fresh one |
| `fail_next(kind, status, …)` | the next requests of a kind (`create`, `poll`, `result`, `download`, `cancel`) fail |
| `drop_create_answer` | the next create is accepted (a job exists, it is billed), then the connection is cut |
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import io
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.providers.storage import StorageHost

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KINDS = ("create", "poll", "result", "download", "cancel", "upload", "other")


@dataclass
class Seen:
    method: str
    path: str
    kind: str
    headers: dict[str, str]
    query: dict[str, str]
    status: int = 0


@dataclass
class Fault:
    kind: str
    status: int
    retry_after: float | None = None
    body: Any = None
    """JSON body of the failure; None: the fake's `error_body` for the status."""


@dataclass
class FakeJob:
    """A job as a fake keeps it; vendors add their own fields in `extra`."""

    id: str
    body: Any
    polls: int = 0
    cancelled: bool = False
    refused: str | None = None
    never_finish: bool = False
    created_at: float = 0.0
    url_version: int = 0
    """Bumped when a fresh result URL is handed out; a download of an older version is expired."""
    extra: dict[str, Any] = field(default_factory=dict)


class FakeVendor:
    provider: ClassVar[str]
    """The provider id, e.g. `fal`."""
    model: ClassVar[str]
    """A text-to-video model id, `provider/…`, that the tests use."""
    image_model: ClassVar[str | None] = None
    """A model that takes a first frame, if the vendor has one."""
    durations: ClassVar[tuple[int, ...]] = (5,)
    """Durations `model` accepts; the contract tests use the first."""
    result_urls: ClassVar[bool] = True
    """The vendor hands out a result URL (that can expire) rather than serving the file from its API."""
    reports_progress: ClassVar[bool] = False
    """Status polls (or the vendor's socket) carry a progress figure while the job runs."""
    reports_queue_position: ClassVar[bool] = False
    """Status polls tell the job's place in the vendor's queue before it starts."""
    can_cancel: ClassVar[bool] = True
    """The vendor has a cancel call (the adapter must use it)."""
    has_content_policy: ClassVar[bool] = True
    """The vendor refuses content by policy (ComfyUI runs whatever the workflow says: a refusal there is a failed
    node, not a policy)."""
    create_is_idempotent: ClassVar[bool] = False
    """A create repeated after a lost answer cannot make a second job (client-chosen ids, idempotency keys)."""

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.seen: list[Seen] = []
        self.creates = 0
        """Create requests that made a job (what the vendor would bill)."""
        self.polls_to_finish = 2
        self.refuse_reason: str | None = None
        self.never_finish = False
        self.expire_first_url = False
        self.drop_create_answer = False
        self.finish_after: float | None = None
        """Seconds (on `clock`) a job runs before it is done, instead of counting polls (benchmarks)."""
        self.clock: Callable[[], float] = time.monotonic
        self.faults: deque[Fault] = deque()
        self.video = sample_clip()
        self.storage: StorageHost | None = None
        """The vendor's result storage or CDN, a second server (`tests.fakes.providers.storage`), if it has one."""
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.routes(self.app.router)

    # --- for subclasses -------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    def kind_of(self, request: web.Request) -> str:
        """`create`, `poll`, `result`, `download`, `cancel`, `upload` or `other`, from the method and path."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The environment (setting names as in `.env`) that points the bot at this fake."""
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        """The vendor's JSON error shape."""
        return {"error": {"message": message, "code": status}}

    # --- for tests ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_url(self) -> str:
        """Where `storage` listens (another origin than `base_url`)."""
        assert self.storage is not None
        return self.storage.url

    def settings(self) -> dict[str, Any]:
        """`env()` as keyword arguments for `Settings`."""
        return {name.lower(): value for name, value in self.env().items()}

    def fail_next(self, kind: str, status: int, *, times: int = 1, retry_after: float | None = None,
                  body: Any = None) -> None:  # fmt: skip
        assert kind in KINDS, kind
        for _ in range(times):
            self.faults.append(Fault(kind, status, retry_after, body))

    def count(self, kind: str) -> int:
        """Requests of a kind that reached the fake (failed ones included)."""
        return sum(1 for s in self.seen if s.kind == kind)

    def counts(self) -> Counter[str]:
        return Counter(s.kind for s in self.seen)

    def requests(self, pattern: str) -> list[Seen]:
        return [s for s in self.seen if fnmatch.fnmatch(f"{s.method} {s.path}", pattern)]

    def new_job(self, job_id: str, body: Any) -> FakeJob:
        """Record an accepted create, applying the knobs that shape a job's life."""
        job = FakeJob(job_id, body, refused=self.refuse_reason, never_finish=self.never_finish,
                      created_at=self.clock())  # fmt: skip
        self.jobs[job_id] = job
        self.creates += 1
        return job

    def advance(self, job: FakeJob) -> str:
        """One status poll of `job`: returns `running`, `succeeded`, `refused` or `cancelled`, counting polls."""
        job.polls += 1
        if job.cancelled:
            return "cancelled"
        if job.refused is not None and job.polls > 1:
            return "refused"
        if job.never_finish:
            return "running"
        if self.finish_after is not None:
            return "succeeded" if self.clock() - job.created_at >= self.finish_after else "running"
        return "running" if job.polls <= self.polls_to_finish else "succeeded"

    def progress(self, job: FakeJob) -> float:
        if self.finish_after is not None:
            return min(1.0, (self.clock() - job.created_at) / max(self.finish_after, 1e-9))
        return min(1.0, job.polls / max(1, self.polls_to_finish + 1))

    def current_url(self, job: FakeJob, sign: Callable[[int], str]) -> str:
        """The job's result URL: the same on every poll until a download found it expired (`refuse_url`), then
        `sign(version)` afresh, with `hand_out_url`'s version (negative: a URL already expired)."""
        url: str | None = job.extra.get("result_url")
        if url is None or job.extra.pop("url_refused", False):
            url = job.extra["result_url"] = sign(self.hand_out_url(job))
        return url

    def refuse_url(self, job: FakeJob | None) -> None:
        """A download found the job's URL expired: its next poll hands out a fresh one."""
        if job is not None:
            job.extra["url_refused"] = True

    def hand_out_url(self, job: FakeJob) -> int:
        """The version of a result URL handed out now: the first is stale when `expire_first_url` is set."""
        if self.expire_first_url and job.url_version == 0 and "expired_once" not in job.extra:
            job.extra["expired_once"] = True
            return -1  # a URL that answers as expired
        job.url_version += 1
        return job.url_version

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        if self.storage is not None:
            await self.storage.start()
        return self

    async def close(self) -> None:
        if self.storage is not None:
            await self.storage.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- plumbing -------------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        kind = "download" if self.storage is not None and request.app is self.storage.app else self.kind_of(request)
        seen = Seen(request.method, request.path, kind, dict(request.headers), dict(request.query))
        self.seen.append(seen)
        fault = next((f for f in self.faults if f.kind == kind), None)
        if fault is not None:
            self.faults.remove(fault)
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            body = fault.body if fault.body is not None else self.error_body(fault.status, f"scripted {fault.status}")
            seen.status = fault.status
            return web.json_response(body, status=fault.status, headers=headers)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            seen.status = exc.status
            raise
        seen.status = response.status
        if kind == "create" and self.drop_create_answer and response.status < 300:
            # The job exists (and is billed), but the answer never arrives: the connection is cut.
            self.drop_create_answer = False
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise ConnectionResetError("answer dropped")
        return response

    def reply_error(self, status: int, message: str, **headers: str) -> web.Response:
        return web.json_response(self.error_body(status, message), status=status, headers=headers)

    def video_response(self) -> web.Response:
        return web.Response(body=self.video, content_type="video/mp4")


async def read_json(request: web.Request) -> Any:
    """The body as JSON, or None when it is not JSON (the caller answers with its vendor's 400)."""
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        return json.loads(await request.read())
    return None


@functools.lru_cache(maxsize=1)
def sample_clip() -> bytes:
    """A real, small H.264 MP4 (1 s, 160x90, 8 fps) for fakes to serve: the bot probes what it posts."""
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i in range(8):
            frame = np.full((96, 160, 3), (i * 30) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
