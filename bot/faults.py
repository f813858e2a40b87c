"""Crash points: a test-only way to kill the process with SIGKILL right after a named step.

The crash tests run the bot as real subprocesses and need it to die between two particular side effects (after
the clip was posted and before the post was recorded, say). `VIDEOBOT_CRASH_AT=posted` makes the process kill
itself the first time it passes `crash_point("posted")`; `posted:3` the third time. Unset (always, outside the
crash tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "VIDEOBOT_CRASH_AT"

POINTS = (
    "enqueued",  # gateway: the job is queued, the member not yet answered
    "claimed",  # worker: the claim is recorded
    "submitted",  # the provider accepted the job, its remote id not yet recorded
    "running",  # the remote id is recorded
    "polled",  # one poll answered
    "downloaded",  # the clip is on disk, not yet recorded
    "post_intent",  # the clip and the intent to post it are recorded, nothing sent yet
    "posted",  # Discord accepted the post, its message id not yet recorded
    "recorded",  # the delivery is recorded, the status message not yet edited
    "status_edited",  # a status message edit went out
)


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown crash point (known: {', '.join(POINTS)})")
    return name, int(count or 1)


_target = _parse(os.environ.get(ENV))
_passed: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Die here (SIGKILL, no cleanup of any kind) if the crash test asked for it."""
    if _target is None or _target[0] != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == _target[1]:
        log.warning("crash point %s reached: killing this process (%s)", name, ENV)
        os.kill(os.getpid(), signal.SIGKILL)
