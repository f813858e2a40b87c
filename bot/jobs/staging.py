"""Files a job leaves on disk, and the sweep that keeps `DATA_DIR` bounded.

A job stages up to three kinds of file: its input image (`staging/inputs/<random>.<ext>`, written by the front
end before the job exists), its clip and the clip re-encoded to fit (`staging/<job id>.mp4`, `.fit.mp4`, partial
`.part` downloads), and an offline render (`renders/<job id>.render.mp4`). They are deleted when the job ends;
a crash can still strand some, and a member must not be able to fill the disk for free, so a sweep at start and
every hour deletes every file that no live job needs.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bot.domain import Job
from bot.store.base import JobStore

log = logging.getLogger(__name__)

JOB_FILE = re.compile(r"^\.?(?P<job>[0-9a-f]{32})[.]")
CLIP_GRACE = 5 * 60.0
"""A clip younger than this may belong to a job queued after the sweep read the live jobs."""
INPUT_GRACE = 15 * 60.0
"""An input image younger than this may belong to a request still being queued: the sweep leaves it alone."""


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


def discard_job_files(job: Job, dirs: StagingDirs) -> None:
    """Everything staged for a job that has ended: its clip in every form, its render and its input image."""
    for path in _job_files(job.id, dirs):
        path.unlink(missing_ok=True)
    discard_input(job.request.image_path, dirs)


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
    """Delete staged files that no unfinished job needs; returns how many were deleted."""
    live = await store.unfinished_jobs()
    live_ids = {job.id for job in live}
    live_inputs = {Path(job.request.image_path).name for job in live if job.request.image_path}
    wall = time.time() if now is None else now
    removed = 0
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
        log.info("staging sweep: deleted %d file(s) no live job needs", removed)
    return removed


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []


def _older(path: Path, now: float, seconds: float) -> bool:
    try:
        return now - path.stat().st_mtime >= seconds
    except FileNotFoundError:
        return False
