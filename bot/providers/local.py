"""The built-in offline provider: `local/preview` renders an animated card from the prompt, in-process.

It lets the bot run end to end with no paid service and no network. Renders are free and deterministic, so the
provider is safe to resubmit, and a render lost with its process (crash, restart) is simply started again the
next time it is polled. The render itself runs in a thread (`bot.providers.local_render`); this module only
keeps track of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bot.domain import ASPECTS, ModelInfo, VideoRequest
from bot.errors import ProviderError, RemoteJobLost
from bot.errors.said import Said
from bot.i18n.ids import N_
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState
from bot.providers.local_render import RenderCancelled, RenderError, render_card

log = logging.getLogger(__name__)

MODEL_ID = "local/preview"
RENDER_NICENESS = 10
"""Renders are background work: their threads (and the encoder's, which inherit it) give way to the event loop,
which must acknowledge every interaction within Discord's 3 s however many clips are being encoded."""
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

PREVIEW_MODEL = ModelInfo(
    id=MODEL_ID,
    label="Local preview (offline, not AI)",
    durations=tuple(range(1, 61)),
    aspects=ASPECTS,
    supports_image=True,
    supports_seed=True,
    supports_negative_prompt=True,
    description=(
        "An offline animated card showing your prompt over a moving gradient (or your image). "
        "It is rendered on this machine and is not an AI model: use it to try the bot for free."
    ),
)


@dataclass(slots=True)
class _Render:
    """One render in flight or finished; `frames_done` is written by the render thread, read by `poll`."""

    job_id: str
    total: int
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    frames_done: int = 0
    error: Said | None = None
    cancelled: bool = False
    task: asyncio.Task[None] | None = None

    def on_progress(self, done: int, total: int) -> None:
        self.frames_done = done
        self.total = total


class LocalPreviewProvider:
    """`VideoProvider` for `local/preview`; outputs go to `work_dir/<job_id>.render.mp4`."""

    name = "local"
    max_concurrency = 1
    """Rendering is CPU-bound and the target host has 2 cores: one render (plus x264's threads) at a time."""
    safe_resubmit = True

    def __init__(self, work_dir: Path, fps: int = 24) -> None:
        self.work_dir = Path(work_dir)
        self.fps = fps
        self._renders: dict[str, _Render] = {}
        self._pool: ThreadPoolExecutor | None = None

    def models(self) -> Sequence[ModelInfo]:
        return (PREVIEW_MODEL,)

    def output_path(self, remote_id: str) -> Path:
        return self.work_dir / f"{_checked_id(remote_id)}.render.mp4"

    def model_for(self, model_id: str) -> ModelInfo | None:
        return None

    async def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)

    async def health(self) -> ProviderHealth:
        return ProviderHealth(reachable=True, authenticated=True, models=(MODEL_ID,))

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        """Start rendering in the background; the remote id is the job id (a resubmit joins a live render)."""
        _validate(request)
        remote_id = _checked_id(job_id)
        current = self._renders.get(remote_id)
        if current is None or current.task is None or current.task.done():
            self._start(remote_id, request)
        return remote_id

    async def poll(self, remote: RemoteJob) -> PollResult:
        render = self._renders.get(remote.remote_id)
        if render is None:
            if self.output_path(remote.remote_id).is_file():
                return PollResult(RemoteState.SUCCEEDED, progress=1.0)
            log.info("job %s: no render in this process, rendering again", remote.job_id)
            render = self._start(remote.remote_id, remote.request)
        if render.task is not None and not render.task.done():
            return PollResult(RemoteState.RUNNING, progress=render.frames_done / render.total, poll_after=0.5)
        if render.cancelled:
            return PollResult(RemoteState.CANCELLED)
        if render.error is not None:
            return PollResult(RemoteState.FAILED, error=render.error)
        if not self.output_path(remote.remote_id).is_file():
            # finished earlier but the file is gone (downloaded, or removed): render it again
            self._start(remote.remote_id, remote.request)
            return PollResult(RemoteState.RUNNING, progress=0.0, poll_after=0.5)
        return PollResult(RemoteState.SUCCEEDED, progress=1.0)

    async def cancel(self, remote: RemoteJob) -> None:
        """Stop the render between two frames and remove anything it wrote."""
        render = self._renders.get(remote.remote_id)
        if render is not None:
            render.cancel_flag.set()
            if render.task is not None:
                await asyncio.wait({render.task})
            render.cancelled = True
        else:
            self._renders[remote.remote_id] = _Render(remote.remote_id, total=1, cancelled=True)
        self.output_path(remote.remote_id).unlink(missing_ok=True)
        log.info("job %s: render cancelled", remote.job_id)

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None:
        """Move the finished render to `dest` (atomically: a rename, or a copy to a temp file and a rename)."""
        src = self.output_path(remote.remote_id)
        if not src.is_file():
            raise RemoteJobLost(f"render output for {remote.job_id} is missing")
        await asyncio.to_thread(_move_atomic, src, Path(dest))
        self._renders.pop(remote.remote_id, None)

    async def aclose(self) -> None:
        """Stop every running render and wait for the threads to notice."""
        tasks = []
        for render in self._renders.values():
            render.cancel_flag.set()
            if render.task is not None and not render.task.done():
                tasks.append(render.task)
        if tasks:
            await asyncio.wait(tasks)
        self._renders.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _start(self, remote_id: str, request: VideoRequest) -> _Render:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        render = _Render(remote_id, total=request.duration * self.fps)
        render.task = asyncio.create_task(self._run(render, request), name=f"local-render-{remote_id}")
        self._renders[remote_id] = render
        return render

    async def _run(self, render: _Render, request: VideoRequest) -> None:
        dest = self.output_path(render.job_id)
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(thread_name_prefix="local-render", initializer=_lower_priority)
            await asyncio.get_running_loop().run_in_executor(
                self._pool,
                partial(render_card, request, dest, fps=self.fps, progress=render.on_progress,
                        should_cancel=render.cancel_flag.is_set),
            )  # fmt: skip
        except RenderCancelled:
            render.cancelled = True
        except RenderError as exc:
            log.warning("job %s: local render failed: %s", render.job_id, exc)
            render.error = exc.said
        except Exception as exc:
            log.exception("job %s: local render failed", render.job_id)
            render.error = Said(N_("failure.local.render-failed"), {"detail": str(exc)})
        else:
            log.info("job %s: rendered %d frames to %s", render.job_id, render.total, dest.name)


def _lower_priority() -> None:
    """Lower this render thread's CPU priority (Linux: niceness is per thread, and threads started from here
    inherit it); elsewhere renders keep the normal priority."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICENESS)


def _validate(request: VideoRequest) -> None:
    """Refuse at submit what the render could only fail on (a local stat, cheap enough for the loop)."""
    if request.model != MODEL_ID:
        raise ProviderError(f"the local provider has no model {request.model!r}", retryable=False)
    if request.image_path and not Path(request.image_path).is_file():
        raise ProviderError(
            f"image {request.image_path} not found",
            retryable=False,
            user_message=Said(N_("failure.image-missing")),
        )


def _checked_id(remote_id: str) -> str:
    """Remote ids become file names: refuse anything that could leave `work_dir`."""
    if not _SAFE_ID.match(remote_id):
        raise ProviderError(f"unusable job id for a local render: {remote_id!r}", retryable=False)
    return remote_id


def _move_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    src.unlink(missing_ok=True)
