"""Is a worker process still alive? Provably, for processes on this host; by heartbeat, for the others.

A restarted bot should take over its dead predecessor's jobs at once rather than wait out their leases. On the
same host that is provable: the registry records each worker's pid and the pid's start time, so a pid that is
gone, or reused by a process that started later, belongs to a dead worker. "The same host" must also mean the
same pid namespace (two containers may share a hostname and a kernel but not their pids), so the host key is
hostname + boot id + pid namespace. A worker on another machine is only presumed dead when its heartbeat is
older than a lease: a live worker there is never taken over early.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

from bot.domain import WorkerInfo


@functools.cache
def host_key() -> str:
    boot_id = _read("/proc/sys/kernel/random/boot_id") or "no-boot-id"
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_namespace = "no-pidns"
    return f"{socket.gethostname()}/{boot_id}/{pid_namespace}"


def process_started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None off Linux."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing parenthesis.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def this_process(worker_id: str, now: float) -> WorkerInfo:
    pid = os.getpid()
    return WorkerInfo(
        id=worker_id,
        host=host_key(),
        pid=pid,
        pid_started=process_started(pid),
        started_at=now,
        heartbeat_at=now,
    )


def is_dead(worker: WorkerInfo, *, now: float, stale_after: float) -> bool:
    """True only when the worker cannot be running any more."""
    if worker.host != host_key():
        return now - worker.heartbeat_at > stale_after
    if worker.pid == os.getpid():
        return worker.pid_started != process_started(worker.pid) if worker.pid_started else False
    try:
        os.kill(worker.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by someone else
    if worker.pid_started is None:
        return False
    started = process_started(worker.pid)
    return started is not None and started != worker.pid_started


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None
