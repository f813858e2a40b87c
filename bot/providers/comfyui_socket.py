"""Progress from ComfyUI's WebSocket: one background listener per host.

ComfyUI reports a running prompt only over `ws://host/ws?clientId=<id>`, and only to the client whose
`client_id` queued it: `execution_start`, `executing` (`node: null` when the prompt is finished), `progress`
(`value`/`max` steps of the node running now, a sampler's steps in practice), `execution_error` and
`execution_interrupted`. The listener keeps the last of these per prompt for `poll()`, which still asks
`GET /history` and `GET /queue` for the truth: the socket may be down, or the prompt may have been queued by an earlier
process (another client id), and then a poll simply has no progress to show.

A dropped connection is opened again after a pause that doubles up to a limit, so a ComfyUI that is down costs
a connection attempt every half minute, not a busy loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

MAX_PROMPTS = 500
"""Prompts remembered per host (the oldest are forgotten first): far more than run at once."""
HEARTBEAT_SECONDS = 30.0
STABLE_SECONDS = 60.0
"""A connection that lasted this long was a good one: the pause before the next starts from the shortest."""


@dataclass(slots=True)
class PromptEvents:
    """What the socket said about one prompt, latest first."""

    started: bool = False
    node: str | None = None
    value: int = 0
    maximum: int = 0
    finished: bool = False
    error: str | None = None
    interrupted: bool = False

    @property
    def fraction(self) -> float | None:
        """The running node's progress, 0 to 1, when it has reported steps."""
        if self.maximum <= 0:
            return None
        return max(0.0, min(1.0, self.value / self.maximum))


class ProgressListener:
    """Listens on one ComfyUI host's WebSocket for the prompts this process queued."""

    def __init__(
        self,
        ws_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        min_backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.ws_url = ws_url
        self._headers = dict(headers or {})
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._prompts: OrderedDict[str, PromptEvents] = OrderedDict()
        self._current: str | None = None
        """The prompt running now, for the few frames that do not name theirs (older ComfyUI versions)."""
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.changed = asyncio.Event()
        """Set whenever a frame changed what is known (tests wait on it instead of sleeping)."""

    def start(self) -> None:
        """Begin listening in the background, once; safe to call before every submit and poll."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"comfyui-ws {self.ws_url.split('?')[0]}")

    def events(self, prompt_id: str) -> PromptEvents | None:
        return self._prompts.get(prompt_id)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._min_backoff
        async with aiohttp.ClientSession(headers=self._headers) as session:
            while True:
                opened = loop.time()
                try:
                    async with session.ws_connect(self.ws_url, heartbeat=HEARTBEAT_SECONDS) as socket:
                        self.connected.set()
                        await self._read(socket)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.debug("comfyui: progress socket %s: %s", self.ws_url.split("?")[0], exc)
                finally:
                    self.connected.clear()
                if loop.time() - opened >= STABLE_SECONDS:
                    delay = self._min_backoff  # it held a while: reconnect soon; one that keeps dropping waits longer
                await asyncio.sleep(delay)
                delay = min(self._max_backoff, delay * 2)

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for message in socket:
            if message.type is aiohttp.WSMsgType.TEXT:
                with contextlib.suppress(ValueError):
                    self.record(json.loads(message.data))
            elif message.type is aiohttp.WSMsgType.ERROR:
                return
            # Binary frames are preview images: not needed.

    def record(self, frame: Any) -> None:
        """Keep what one JSON frame says about its prompt."""
        if not isinstance(frame, dict) or not isinstance(frame.get("data"), dict):
            return
        kind, data = frame.get("type"), frame["data"]
        prompt_id = data.get("prompt_id") or self._current
        if kind not in _EVENTS or not isinstance(prompt_id, str):
            return
        events = self._prompts.get(prompt_id)
        if events is None:
            events = self._prompts[prompt_id] = PromptEvents()
            while len(self._prompts) > MAX_PROMPTS:
                self._prompts.popitem(last=False)
        _EVENTS[kind](events, data)
        self._current = None if events.finished else prompt_id
        self.changed.set()


def _started(events: PromptEvents, data: dict[str, Any]) -> None:
    events.started = True


def _executing(events: PromptEvents, data: dict[str, Any]) -> None:
    node = data.get("node")
    if node is None:
        events.finished = True
    else:
        events.node = str(node)


def _progress(events: PromptEvents, data: dict[str, Any]) -> None:
    value, maximum = data.get("value"), data.get("max")
    if isinstance(value, int | float) and isinstance(maximum, int | float):
        events.value, events.maximum = int(value), int(maximum)


def _error(events: PromptEvents, data: dict[str, Any]) -> None:
    events.error = str(data.get("exception_message") or "").strip() or "the workflow failed"
    events.finished = True


def _interrupted(events: PromptEvents, data: dict[str, Any]) -> None:
    events.interrupted = True
    events.finished = True


def _succeeded(events: PromptEvents, data: dict[str, Any]) -> None:
    events.finished = True


_EVENTS = {
    "execution_start": _started,
    "executing": _executing,
    "progress": _progress,
    "execution_error": _error,
    "execution_interrupted": _interrupted,
    "execution_success": _succeeded,
}
