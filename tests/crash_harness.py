"""Helpers for the crash tests and the recovery benchmark: the bot as real subprocesses against the loopback
fake Discord (which runs in the caller's event loop); the exactly-once checks are in `tests.crash_checks`.

Why subprocesses: the promise under test is about `kill -9` and SIGTERM, which only a real process can take.

    rig = BotRig(fake, SqliteDatabase(tmp_path / "bot.db"), tmp_path)
    await rig.prepare()
    await rig.start("run", crash_at="posted")
    await rig.send_video(member)
    await rig.wait_crash("run", "posted")
    await rig.start("run")
    snapshot = await rig.wait_settled()
    await rig.stop_all()
    report = verify(await rig.db.snapshot(), fake)
    assert report.ok, report.explain() + rig.log_tails()
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.crash_checks import Database, Snapshot, clip_messages, describe_pending, message_time
from tests.fakes.discord import FakeDiscord, InteractionRecord

REPO = Path(__file__).resolve().parent.parent
TERMINAL = ("delivered", "failed", "cancelled")
MODEL = "local/preview"
MODEL_WEIGHT = 1.0
"""`local/preview` costs one credit per second (bot/providers/local.py); the checks compare against it."""
CLIP_DELETE = re.compile(r"^video:delete:(?P<job>[0-9a-f]{32})$")
Log = Callable[[str], None]


def _now() -> float:
    return asyncio.get_running_loop().time()


# ------------------------------------------------------------------------------------------------ databases


class UploadGate:
    """Holds clip uploads (multipart POSTs to a webhook or a channel) at the fake until released, so a test can
    signal the bot while an upload is in flight. Installed by wrapping the fake's REST handler before
    `fake.start()`; the fake itself is unchanged. Open (no holding) unless `close()` is called."""

    PATTERNS = ("/api/v10/webhooks/*/*", "/api/v10/channels/*/messages")

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self._open = asyncio.Event()
        self._open.set()
        self.held: list[tuple[str, float]] = []
        """(path, loop time) of every upload that waited at the gate."""
        self.arrived = asyncio.Event()
        inner = fake.rest.handle

        async def handle(request: web.Request) -> web.StreamResponse:
            if self._is_upload(request) and not self._open.is_set():
                self.held.append((request.path, _now()))
                self.arrived.set()
                await self._open.wait()
            return await inner(request)

        fake.rest.handle = handle  # type: ignore[method-assign]

    @classmethod
    def install(cls, fake: FakeDiscord) -> UploadGate:
        if fake._runner is not None:
            raise RuntimeError("install the upload gate before fake.start()")
        return cls(fake)

    def _is_upload(self, request: web.Request) -> bool:
        return (
            request.method == "POST"
            and request.content_type.startswith("multipart/")
            and any(fnmatch.fnmatch(request.path, p) for p in self.PATTERNS)
        )

    def close(self) -> None:
        self.arrived.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()


# ------------------------------------------------------------------------------------------------ processes


@dataclass(eq=False)
class BotProcess:
    role: str
    """run | gateway | worker"""
    index: int
    proc: asyncio.subprocess.Process
    log_path: Path
    crash_at: str | None
    spawned_at: float
    """Loop time of the spawn."""
    spawned_clock: float
    """The fake's clock at the spawn (comparable with message timestamps)."""
    ready_at: float | None = None
    signalled: str | None = None

    @property
    def name(self) -> str:
        return f"#{self.index} {self.role}" + (f" (VIDEOBOT_CRASH_AT={self.crash_at})" if self.crash_at else "")

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()[-lines:]
        return "\n".join(f"    | {line}" for line in text) or "    | (empty log)"


class RigError(AssertionError):
    """A harness-level failure (the bot would not start, a crash point never fired): always with the logs."""


@dataclass
class BotRig:
    fake: FakeDiscord
    db: Database
    workdir: Path
    lease_seconds: float | None = None
    """LEASE_SECONDS for the bot; None leaves the bot's default (the production setting)."""
    worker_concurrency: int = 2
    log: Log = print
    processes: dict[str, BotProcess] = field(default_factory=dict)
    history: list[BotProcess] = field(default_factory=list)
    members: list[int] = field(default_factory=list)
    interactions: list[InteractionRecord] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.workdir / "data"
        self.logs_dir = self.workdir / "logs"
        self.cwd = self.workdir / "cwd"  # empty: no `.env` is picked up
        for folder in (self.data_dir, self.logs_dir, self.cwd):
            folder.mkdir(parents=True, exist_ok=True)

    # --- setup ----------------------------------------------------------------------------------------
    async def prepare(self, *, members: int = 2, max_queued: int = 50, credits: int = 1000) -> None:
        await self.db.prepare(max_queued=max_queued, credits=credits)
        self.add_members(members)

    def add_members(self, count: int) -> list[int]:
        start = len(self.members)
        new = [self.fake.add_user(f"member{start + i}").id for i in range(count)]
        self.members += new
        return new

    def env(self, crash_at: str | None) -> dict[str, str]:
        """Only what the bot needs: no inherited variable can carry a real secret or a provider key."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.cwd),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO),
            "DISCORD_TOKEN": self.fake.token,
            "DISCORD_API_BASE": self.fake.api_base,
            "DISCORD_GATEWAY_URL": self.fake.gateway_url,
            "DATABASE_URL": self.db.url,
            "DATA_DIR": str(self.data_dir),
            "LOG_LEVEL": "INFO",
            "WORKER_CONCURRENCY": str(self.worker_concurrency),
            "DEFAULT_MODEL": MODEL,
        }
        if self.lease_seconds is not None:
            env["LEASE_SECONDS"] = str(self.lease_seconds)
        if crash_at:
            env["VIDEOBOT_CRASH_AT"] = crash_at
        env.update(self.extra_env)
        return env

    async def start(self, role: str = "run", *, crash_at: str | None = None, ready_timeout: float = 30.0) -> BotProcess:
        """Spawn `python -m bot <role>` and wait until it can take work: a gateway process (run, gateway) has
        IDENTIFYed on a live socket; a worker has logged in to the REST API."""
        if role in self.processes and self.processes[role].alive:
            raise RigError(f"a {role} process is already running")
        index = len(self.history) + 1
        log_path = self.logs_dir / f"{index:02d}-{role}.log"
        identifies = self.fake.identify_count
        logins = len(self.fake.requests_to("GET /users/@me"))
        with log_path.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", role,
                cwd=self.cwd, env=self.env(crash_at), stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        bp = BotProcess(role, index, proc, log_path, crash_at, _now(), self.fake.clock.now())
        self.processes[role] = bp
        self.history.append(bp)

        def ready() -> bool:
            if role == "worker":
                return len(self.fake.requests_to("GET /users/@me")) > logins
            return self.fake.identify_count > identifies and self.gateway_live()

        await self._wait(ready, ready_timeout, f"{bp.name} to be ready", watch=[bp])
        bp.ready_at = _now()
        self.log(f"[rig] {bp.name} ready in {bp.ready_at - bp.spawned_at:.2f}s (pid {proc.pid})")
        return bp

    def gateway_live(self) -> bool:
        """The newest gateway session (the one the fake dispatches to) has a live socket."""
        sessions = list(self.fake.gateway.sessions.values())
        return bool(sessions) and sessions[-1].conn is not None

    async def _wait(
        self,
        predicate: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109
        what: str,
        *,
        watch: Iterable[BotProcess] = (),
    ) -> None:
        deadline = _now() + timeout
        while not predicate():
            for bp in watch:
                if not bp.alive:
                    raise RigError(f"{bp.name} exited with {bp.proc.returncode} while waiting for {what}\n{bp.tail()}")
            if _now() > deadline:
                raise RigError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.log_tails()}")
            await asyncio.sleep(0.02)

    # --- signals --------------------------------------------------------------------------------------
    async def kill(self, role: str) -> BotProcess:
        """SIGKILL from outside (a random kill)."""
        bp = self.processes[role]
        if bp.alive:
            bp.signalled = "SIGKILL"
            with contextlib.suppress(ProcessLookupError):
                bp.proc.send_signal(signal.SIGKILL)
        await bp.proc.wait()
        return bp

    async def terminate(self, role: str, *, timeout: float = 30.0) -> tuple[int, float]:  # noqa: ASYNC109
        """SIGTERM; returns (exit code, seconds to exit). Raises RigError if it outlives `timeout` (then kills)."""
        bp = self.processes[role]
        sent = _now()
        if bp.alive:
            bp.signalled = "SIGTERM"
            with contextlib.suppress(ProcessLookupError):
                bp.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(bp.proc.wait(), timeout)
        except TimeoutError:
            await self.kill(role)
            raise RigError(f"{bp.name} did not exit within {timeout:.0f}s of SIGTERM\n{bp.tail()}") from None
        return code, _now() - sent

    async def wait_crash(
        self,
        role: str,
        point: str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
        idle_grace: float = 6.0,
    ) -> None:
        """Wait for the process to SIGKILL itself at `point`. Fails clearly, never hangs: when it exits some
        other way, when `timeout` passes, or when every job has ended and `idle_grace` more seconds passed
        without the point firing (it is not wired, or not on this path)."""
        bp = self.processes[role]
        deadline = _now() + timeout
        idle_since: float | None = None
        while bp.alive:
            if _now() > deadline:
                await self.kill(role)
                raise RigError(
                    f"crash point {point!r} did not fire within {timeout:.0f}s in {bp.name} "
                    f"(is crash_point({point!r}) called on this path?)\n{self.log_tails()}"
                )
            snap = await self.db.snapshot()
            if snap.jobs and not snap.pending:
                idle_since = idle_since or _now()
                if _now() - idle_since > idle_grace:
                    await self.kill(role)
                    states = ", ".join(f"{j['id'][:8]}={j['state']}" for j in snap.jobs)
                    raise RigError(
                        f"crash point {point!r} never fired in {bp.name}: every job ended without passing it "
                        f"({states}); is crash_point({point!r}) called on this path?\n{self.log_tails()}"
                    )
            else:
                idle_since = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(bp.proc.wait()), 0.2)
        code = bp.proc.returncode
        fired = f"crash point {point.partition(':')[0]} reached" in bp.log_text()
        if code != -signal.SIGKILL or not fired:
            raise RigError(
                f"{bp.name} exited with {code} (wanted -9 from crash point {point!r}; "
                f"the log {'does' if fired else 'does not'} say the point was reached)\n{bp.tail()}"
            )
        self.log(f"[rig] {bp.name} died at crash point {point} after {_now() - bp.spawned_at:.2f}s")

    async def stop_all(self, *, timeout: float = 20.0) -> dict[str, int | None]:  # noqa: ASYNC109
        """SIGTERM everything still running (gateway last, so nothing new arrives at a stopped worker); kill
        what does not exit within `timeout`. Returns each role's exit code."""
        codes: dict[str, int | None] = {}
        for role in sorted(self.processes, key=lambda r: r == "gateway"):
            bp = self.processes[role]
            if not bp.alive:
                codes[role] = bp.proc.returncode
                continue
            try:
                codes[role], _ = await self.terminate(role, timeout=timeout)
            except RigError as exc:
                self.log(f"[rig] warning: {exc}".splitlines()[0])
                codes[role] = None
        return codes

    async def kill_all(self) -> None:
        for role, bp in self.processes.items():
            if bp.alive:
                await self.kill(role)

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for bp in self.history[-6:]:
            status = "running" if bp.alive else f"exit {bp.proc.returncode}"
            parts.append(f"--- {bp.name} [{status}] {bp.log_path}\n{bp.tail(lines)}")
        return "\n".join(parts)

    # --- members' commands ----------------------------------------------------------------------------
    async def wait_gateway(self, timeout: float = 30.0, *, watch: bool = True) -> None:  # noqa: ASYNC109
        """Until the fake has a live gateway socket to dispatch to (interactions sent to a dead socket are lost,
        as on Discord). With `watch`, fail at once if the current gateway process exits meanwhile."""
        gateway = self.processes.get("run") or self.processes.get("gateway")
        procs = [gateway] if watch and gateway is not None else []
        await self._wait(self.gateway_live, timeout, "a live gateway connection", watch=procs)

    async def send_video(
        self, user: int, prompt: str = "a lighthouse at dusk", *, duration: int = 1, wait_live: bool = True
    ) -> InteractionRecord:
        """`/video prompt duration:1` from `user` (once the gateway is live, unless `wait_live` is False)."""
        if wait_live:
            await self.wait_gateway(watch=False)
        rec = await self.fake.slash("video", {"prompt": prompt, "duration": duration}, user=user)
        self.interactions.append(rec)
        return rec

    async def send_burst(self, prompts: Iterable[tuple[int, str]]) -> list[InteractionRecord]:
        """Several `/video` back to back on the live gateway, without waiting in between (the first may kill
        the process; the others then reach a dying socket, as they would on Discord)."""
        await self.wait_gateway()
        return [await self.send_video(user, prompt, wait_live=False) for user, prompt in prompts]

    # --- waiting for the end --------------------------------------------------------------------------
    async def wait_settled(
        self,
        timeout: float = 30.0,  # noqa: ASYNC109
        *,
        watch: Iterable[BotProcess] | None = None,
    ) -> Snapshot:
        """Wait until every job in the database is final. Raises with each unfinished job's state, lease and
        last events (and the logs) after `timeout`, or at once if a watched process exits."""
        procs = list(watch) if watch is not None else [p for p in self.processes.values() if p.alive]
        started = _now()
        while True:
            snap = await self.db.snapshot()
            if snap.jobs and not snap.pending:
                return snap
            for bp in procs:
                if not bp.alive:
                    raise RigError(f"{bp.name} exited with {bp.proc.returncode} before the jobs ended\n{bp.tail()}")
            if _now() - started > timeout:
                raise RigError(
                    f"jobs still unfinished {timeout:.0f}s after the restart: "
                    + describe_pending(snap, self.fake.clock.now())
                    + f"\n{self.log_tails()}"
                )
            await asyncio.sleep(0.2)

    def first_clip_after(self, bp: BotProcess) -> float | None:
        """Seconds from `bp`'s spawn to the first clip posted after it (None if none yet)."""
        times = [message_time(m) for _, m in clip_messages(self.fake) if message_time(m) >= bp.spawned_clock]
        return min(times) - bp.spawned_clock if times else None


# ------------------------------------------------------------------------------------------------ the checks


# ------------------------------------------------------------------------------------------------ misc


async def gather_callbacks(records: Iterable[InteractionRecord], timeout: float) -> None:  # noqa: ASYNC109
    """Give interactions time to be acknowledged (best effort: a killed process never answers)."""
    waits: list[Awaitable[Any]] = [r.wait_callback(timeout=timeout) for r in records if r.callback is None]
    await asyncio.gather(*waits, return_exceptions=True)
