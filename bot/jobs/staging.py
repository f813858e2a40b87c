"""A job's input image and the files it leaves on disk, and the sweep that keeps both bounded.

The input image lives in the database (`InputStore`), stored by the front end before the job exists, so that a
worker on another machine can read it: the worker that submits the job writes it to its own
`staging/inputs/<image_ref>` (`materialise_input`) and hands the provider that path. A job also stages its clip
and the clip re-encoded to fit (`staging/<job id>.mp4`, `.fit.mp4`, partial `.part` downloads) and an offline
render (`renders/<job id>.render.mp4`). All of it is deleted when the job ends; a crash can still strand some,
and a member must not be able to fill the disk or the database for free, so a sweep at start and every hour
deletes every file and every stored input that no live job needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bot.domain import INPUT_REF, Job, VideoRequest
from bot.errors import StoreError
from bot.store.base import InputStore, JobStore

log = logging.getLogger(__name__)

JOB_FILE = re.compile(r"^\.?(?P<job>[0-9a-f]{32})[.]")
CLIP_GRACE = 5 * 60.0
"""A clip younger than this may belong to a job queued after the sweep read the live jobs."""
INPUT_GRACE = 15 * 60.0
"""An input image younger than this may belong to a request still being queued: the sweep leaves it alone."""
INPUT_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
"""The accepted image types, and the extension their stored copy is named with (providers read it)."""
_INPUT_REF = re.compile(INPUT_REF)


@dataclass(frozen=True, slots=True)
class StagingDirs:
    root: Path
    """`DATA_DIR`."""

    @property
    def clips(self) -> Path:
        return self.root / "staging"

    @property
    def inputs(self) -> Path:
        return self.root / "staging" / "inputs"

    @property
    def renders(self) -> Path:
        return self.root / "renders"


def new_input_ref(content_type: str) -> str:
    """A fresh id for an input image of an accepted type (`KeyError` for any other)."""
    return f"{uuid.uuid4().hex}{INPUT_EXTENSIONS[content_type]}"


def input_copy(image_ref: str, dirs: StagingDirs) -> Path:
    """Where this process keeps its copy of a stored input image. The ref is checked again (it came from the
    database): it becomes a file name."""
    if not _INPUT_REF.match(image_ref):
        raise ValueError(f"not an input image id: {image_ref!r}")
    return dirs.inputs / image_ref


async def materialise_input(store: InputStore, request: VideoRequest, dirs: StagingDirs) -> VideoRequest | None:
    """The request as a provider reads it: a stored input image copied to this process's disk (once: a copy
    already there is reused), and `image_path` pointing at the copy. A request without a stored image is
    returned as it is; None when its image is gone from the database and was never copied here."""
    if request.image_ref is None:
        return request
    path = input_copy(request.image_ref, dirs)
    if not path.is_file():
        stored = await store.get_input(request.image_ref)
        if stored is None:
            return None
        await asyncio.to_thread(_write_atomic, path, stored.data)
        log.info("input image %s: copied from the database to this disk (%d bytes)", path.name, len(stored.data))
    return request.model_copy(update={"image_path": str(path)})


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temp file and a rename: a provider (or a crash) never sees half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


async def discard_stored_input(store: InputStore, request: VideoRequest, *, job_id: str | None = None) -> None:
    """Delete the stored input image of an ended job or a refused request. Best effort: if the database is
    away, the sweep deletes it later."""
    if request.image_ref is None:
        return
    try:
        await store.delete_inputs([request.image_ref])
    except StoreError as exc:
        log.warning("job %s: could not delete input image %s (%s); the sweep will", job_id or "(refused)",
                    request.image_ref, exc)  # fmt: skip


def discard_job_files(job: Job, dirs: StagingDirs) -> None:
    """Everything staged on this disk for a job that has ended: its clip in every form, its render and its
    input image (this process's copy; `discard_stored_input` deletes the stored one)."""
    for path in _job_files(job.id, dirs):
        path.unlink(missing_ok=True)
    discard_input(job.request.image_path, dirs)
    if job.request.image_ref is not None:
        with contextlib.suppress(ValueError):
            input_copy(job.request.image_ref, dirs).unlink(missing_ok=True)


def _job_files(job_id: str, dirs: StagingDirs) -> list[Path]:
    """Every file the engine and the providers make for a job (the sweep catches anything else): the clip, its
    re-encode to fit and the offline render, each with the partial file it is written through."""
    clip, render = f"{job_id}.mp4", f"{job_id}.render.mp4"
    return [dirs.clips / clip, dirs.clips / f"{job_id}.fit.mp4", dirs.clips / f"{clip}.part",
            dirs.clips / f".{clip}.part", dirs.renders / render, dirs.renders / f".{render}.part"]  # fmt: skip


def discard_input(image_path: str | None, dirs: StagingDirs) -> None:
    """Delete a staged input image, but never a file outside the inputs folder (a path from elsewhere)."""
    if image_path is None:
        return
    path = Path(image_path)
    if path.resolve().is_relative_to(dirs.inputs.resolve()):
        path.unlink(missing_ok=True)


async def sweep(store: JobStore, dirs: StagingDirs, *, now: float | None = None) -> int:
    """Delete staged files and stored input images that no unfinished job needs; returns how many were
    deleted. `now` is the wall clock (file times; input images are dated by the service's clock)."""
    wall = time.time() if now is None else now
    # Stored images older than the grace, less those a live job names (the front end queues its job within
    # seconds of storing the image; an ended job deleted its own already, unless the database was away).
    stale = await store.stale_inputs(wall - INPUT_GRACE)
    live = await store.unfinished_jobs()
    live_ids = {job.id for job in live}
    live_refs = {job.request.image_ref for job in live if job.request.image_ref}
    live_inputs = {Path(job.request.image_path).name for job in live if job.request.image_path} | live_refs
    removed = await store.delete_inputs([ref for ref in stale if ref not in live_refs])
    for folder in (dirs.clips, dirs.renders):
        for path in _files(folder):
            match = JOB_FILE.match(path.name)
            if match is not None and match["job"] not in live_ids and _older(path, wall, CLIP_GRACE):
                path.unlink(missing_ok=True)
                removed += 1
    for path in _files(dirs.inputs):
        if path.name not in live_inputs and _older(path, wall, INPUT_GRACE):
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("staging sweep: deleted %d file(s) or stored image(s) no live job needs", removed)
    return removed


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []


def _older(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - path.stat().st_mtime >= seconds
    except FileNotFoundError:
        return False
