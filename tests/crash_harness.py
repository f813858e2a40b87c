"""Helpers for the crash tests and the recovery benchmark: the bot as real subprocesses against the loopback
fake Discord (which runs in the caller's event loop), a database the caller can read behind the bot's back,
and the exactly-once checks.

Why subprocesses: the promise under test is about `kill -9` and SIGTERM, which only a real process can take.
Why read the database directly (sqlite3 / asyncpg, not the bot's store): the checks must not share the code
they check, and they run after the bot is gone.

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
import datetime as dt
import fnmatch
import json
import os
import re
import signal
import sqlite3
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from tests.fakes.discord import GUILD_ID, FakeDiscord, InteractionRecord, StoredMessage

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


@dataclass
class Snapshot:
    """Every job, ledger row and job event, as plain dicts (columns the checks do not know are kept)."""

    jobs: list[dict[str, Any]]
    ledger: list[dict[str, Any]]
    events: list[dict[str, Any]]

    def job(self, job_id: str) -> dict[str, Any] | None:
        return next((j for j in self.jobs if j["id"] == job_id), None)

    @property
    def pending(self) -> list[dict[str, Any]]:
        return [j for j in self.jobs if j["state"] not in TERMINAL]

    def events_of(self, job_id: str) -> list[dict[str, Any]]:
        return sorted((e for e in self.events if e["job_id"] == job_id), key=lambda e: e["at"])


class Database(Protocol):
    url: str
    label: str

    async def prepare(self, *, max_queued: int, credits: int) -> None:
        """Create and migrate the database (through the bot's own store, once) and raise the default quota."""
        ...

    async def snapshot(self) -> Snapshot: ...

    async def cleanup(self) -> None: ...


async def _raise_default_quota(url: str, *, max_queued: int, credits: int) -> None:
    from bot.domain import QuotaLimits
    from bot.store import open_store

    store = await open_store(url)
    try:
        await store.update_policy(GUILD_ID, "default", 0, QuotaLimits(credits=credits, max_queued=max_queued))
    finally:
        await store.close()


class SqliteDatabase:
    label = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    async def prepare(self, *, max_queued: int = 50, credits: int = 1000) -> None:
        await _raise_default_quota(self.url, max_queued=max_queued, credits=credits)

    def _read(self) -> Snapshot:
        # Read-only, beside the running bot (WAL: readers never block the writer).
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            jobs = [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY seq")]
            ledger = [dict(r) for r in db.execute("SELECT * FROM usage_ledger ORDER BY id")]
            events = [dict(r) for r in db.execute("SELECT * FROM job_events")]
        finally:
            db.close()
        return Snapshot(jobs, ledger, events)

    async def snapshot(self) -> Snapshot:
        return await asyncio.to_thread(self._read)

    async def cleanup(self) -> None:
        return None


class PostgresDatabase:
    """A fresh schema per test, selected for the bot processes through the URL.

    asyncpg passes every query parameter it does not know as a server setting, so
    `postgresql://…/test?search_path=crash_ab12` makes each connection of the bot's pool work in that schema
    (`PostgresStore.open(url)` without `schema=` uses the connection's `current_schema()`). The schema must
    exist first: with a missing one, `current_schema()` is NULL and the migrations have nowhere to go.
    """

    label = "postgres"

    def __init__(self, base_url: str, schema: str | None = None) -> None:
        self.base_url = base_url
        self.schema = schema or f"crash_{uuid.uuid4().hex[:12]}"
        self.url = f"{base_url}{'&' if '?' in base_url else '?'}search_path={self.schema}"

    async def _connect(self, *, in_schema: bool) -> Any:
        import asyncpg

        from bot.store.postgres import postgres_dsn

        settings = {"search_path": self.schema} if in_schema else None
        return await asyncpg.connect(postgres_dsn(self.base_url), server_settings=settings)

    async def prepare(self, *, max_queued: int = 50, credits: int = 1000) -> None:
        conn = await self._connect(in_schema=False)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
        finally:
            await conn.close()
        await _raise_default_quota(self.url, max_queued=max_queued, credits=credits)

    async def snapshot(self) -> Snapshot:
        conn = await self._connect(in_schema=True)
        try:
            jobs = [dict(r) for r in await conn.fetch("SELECT * FROM jobs ORDER BY seq")]
            ledger = [dict(r) for r in await conn.fetch("SELECT * FROM usage_ledger ORDER BY id")]
            events = [dict(r) for r in await conn.fetch("SELECT * FROM job_events")]
        finally:
            await conn.close()
        return Snapshot(jobs, ledger, events)

    async def cleanup(self) -> None:
        conn = await self._connect(in_schema=False)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()


# ------------------------------------------------------------------------------------------------ fake Discord


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


def is_clip(message: StoredMessage) -> str | None:
    """The job id of a clip message (a bot message with an mp4 and the job's Delete button), else None."""
    if not any(a.filename.lower().endswith(".mp4") for a in message.attachments):
        return None
    for custom_id in message.custom_ids():
        match = CLIP_DELETE.match(custom_id)
        if match:
            return match["job"]
    return None


def clip_messages(fake: FakeDiscord, channel_id: int | None = None) -> list[tuple[str, StoredMessage]]:
    """Every clip message the bot ever posted (in one channel, or anywhere), deleted ones included (a deleted
    clip means the bot posted a duplicate and took it back: members saw two)."""
    out = []
    for message in fake.messages(channel_id, include_deleted=True):
        if message.author_id != fake.app_id:
            continue
        job_id = is_clip(message)
        if job_id is not None:
            out.append((job_id, message))
    return out


def message_time(message: StoredMessage) -> float:
    """When the fake stored the message, on the fake's clock (epoch seconds)."""
    return dt.datetime.fromisoformat(message.timestamp).timestamp()


def answered(rec: InteractionRecord) -> bool:
    """Did the member see a public answer (the status message) to this `/video`? Deferred-only ("thinking…")
    or never acknowledged counts as not answered; an ephemeral answer is a refusal."""
    cb = rec.callback
    if cb is None:
        return False
    original = rec.original
    if cb.type == 4:
        return original is not None and not original.ephemeral
    if cb.type == 5:
        return original is not None and not original.loading and not original.ephemeral and not original.deleted
    return False


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


def describe_pending(snap: Snapshot, now: float) -> str:
    lines = []
    for job in snap.pending:
        lease = ""
        if job.get("lease_owner"):
            left = (job.get("lease_expires_at") or now) - now
            lease = f", lease held by {job['lease_owner']} for {left:.0f}s more"
        last = snap.events_of(job["id"])[-3:]
        trail = " → ".join(f"{e['to_state']}" + (f" ({e['detail']})" if e.get("detail") else "") for e in last)
        lines.append(f"job {job['id'][:8]} (member {job['user_id']}) is {job['state']}{lease}; last events: {trail}")
    return f"{len(snap.pending)} of {len(snap.jobs)} unfinished:\n  " + "\n  ".join(lines)


# ------------------------------------------------------------------------------------------------ the checks


@dataclass
class Report:
    problems: list[str]
    table: list[str]
    summary: str

    @property
    def ok(self) -> bool:
        return not self.problems

    def explain(self) -> str:
        head = f"{len(self.problems)} problem(s): {self.problems[0] if self.problems else ''}"
        return "\n".join([head, *(f"  - {p}" for p in self.problems), "jobs:", *(f"  {t}" for t in self.table)])


def _duration(job: dict[str, Any]) -> float:
    try:
        return float(json.loads(job["request_json"]).get("duration") or 0)
    except (TypeError, ValueError, KeyError):
        return 0.0


def verify(snap: Snapshot, fake: FakeDiscord, interactions: Iterable[InteractionRecord] = ()) -> Report:
    """Exactly once and credits right:

    - a job whose `/video` was answered publicly is `delivered` with exactly one clip message, and its
      `delivered_message_id` is that message;
    - a job whose `/video` was never answered may instead be `cancelled` with a refund and no clip;
    - no clip message for an unknown job, no clip taken back (deleted), no clip for a job that did not deliver;
    - every job has one reservation; a refund (exactly one, of the whole amount) iff it did not deliver;
      per member, nothing reserved and used = delivered seconds × the model's weight;
    - every publicly answered `/video` has a job (nothing acknowledged was lost).
    """
    problems: list[str] = []
    table: list[str] = []
    by_token = {r.token: r for r in (interactions or fake.interactions.values())}
    clips: dict[str, list[StoredMessage]] = {}
    for job_id, message in clip_messages(fake):
        clips.setdefault(job_id, []).append(message)
    known = {j["id"] for j in snap.jobs}
    for job_id, messages in clips.items():
        if job_id not in known:
            problems.append(f"{len(messages)} clip message(s) for job {job_id[:8]}, which is not in the database")

    ledger: dict[str, list[dict[str, Any]]] = {}
    for row in snap.ledger:
        if row.get("job_id"):
            ledger.setdefault(row["job_id"], []).append(row)

    for job in snap.jobs:
        jid, state = job["id"], job["state"]
        short = jid[:8]
        rec = by_token.get(job.get("interaction_token") or "")
        was_answered = rec is not None and answered(rec)
        live = [m for m in clips.get(jid, []) if not m.deleted]
        deleted = [m for m in clips.get(jid, []) if m.deleted]
        rows = ledger.get(jid, [])
        reserves = [r for r in rows if r["kind"] == "reserve"]
        refunds = [r for r in rows if r["kind"] == "refund"]
        table.append(
            f"{short} member={job['user_id']} answered={'yes' if was_answered else 'no'} state={state} "
            f"clips={len(live)}{f' (+{len(deleted)} deleted)' if deleted else ''} "
            f"delivered_message_id={job.get('delivered_message_id')} credits={job['credits']} "
            f"ledger={[(r['kind'], r['credits']) for r in rows]}"
            + (f" error={job.get('error')!r}" if job.get("error") else "")
        )
        if state not in TERMINAL:
            problems.append(f"job {short} is still {state}")
        elif state == "delivered":
            if len(live) != 1:
                problems.append(f"job {short} is delivered with {len(live)} clip messages (wanted exactly 1)")
            elif job.get("delivered_message_id") is not None and int(job["delivered_message_id"]) != live[0].id:
                problems.append(
                    f"job {short} records message {job['delivered_message_id']} but its clip is {live[0].id}"
                )
            elif job.get("delivered_message_id") is None:
                problems.append(f"job {short} is delivered without a delivered_message_id")
        elif was_answered:
            problems.append(
                f"job {short} was answered (status message shown) but ended {state}, not delivered: {job.get('error')}"
            )
        elif state != "cancelled":
            problems.append(f"job {short} was never answered and ended {state} (wanted delivered, or cancelled)")
        if state != "delivered" and live:
            problems.append(f"job {short} ended {state} but {len(live)} clip message(s) were posted for it")
        if deleted:
            problems.append(f"job {short}: {len(deleted)} clip message(s) were posted and later deleted (a duplicate)")
        if len(reserves) != 1 or reserves[0]["credits"] != job["credits"]:
            problems.append(f"job {short}: reservations {[r['credits'] for r in reserves]}, wanted [{job['credits']}]")
        want_refunds = [-job["credits"]] if state in ("failed", "cancelled") else []
        if sorted(r["credits"] for r in refunds) != want_refunds:
            problems.append(f"job {short} ({state}): refunds {[r['credits'] for r in refunds]}, wanted {want_refunds}")

    members = sorted({j["user_id"] for j in snap.jobs})
    totals = []
    for member in members:
        mine = [j for j in snap.jobs if j["user_id"] == member]
        reserved = sum(j["credits"] for j in mine if j["state"] not in TERMINAL)
        used = sum(r["credits"] for r in snap.ledger if r["user_id"] == member and r["kind"] in ("reserve", "refund"))
        delivered = [j for j in mine if j["state"] == "delivered"]
        kept = sum(j["credits"] for j in delivered)
        seconds = sum(_duration(j) for j in delivered)
        if reserved:
            problems.append(f"member {member}: {reserved} credits still reserved")
        if used != kept:
            problems.append(f"member {member}: ledger says {used} credits used, delivered jobs kept {kept}")
        if abs(kept - seconds * MODEL_WEIGHT) > 1e-6:
            problems.append(f"member {member}: {kept} credits kept for {seconds:g} delivered seconds × {MODEL_WEIGHT}")
        totals.append(used)

    tokens = {j.get("interaction_token") for j in snap.jobs}
    for rec in by_token.values():
        if rec.type == 2 and rec.payload["data"].get("name") == "video" and answered(rec) and rec.token not in tokens:
            problems.append(f"/video interaction {rec.id} of member {rec.user.id} was answered but has no job")

    delivered_n = sum(1 for j in snap.jobs if j["state"] == "delivered")
    cancelled_n = sum(1 for j in snap.jobs if j["state"] == "cancelled")
    summary = (
        f"{len(snap.jobs)} jobs: {delivered_n} delivered, {cancelled_n} cancelled, "
        f"{len(snap.jobs) - delivered_n - cancelled_n} other; "
        f"{sum(len(v) for v in clips.values())} clip messages; credits used {sum(totals)}"
    )
    return Report(problems, table, summary)


# ------------------------------------------------------------------------------------------------ misc


async def gather_callbacks(records: Iterable[InteractionRecord], timeout: float) -> None:  # noqa: ASYNC109
    """Give interactions time to be acknowledged (best effort: a killed process never answers)."""
    waits: list[Awaitable[Any]] = [r.wait_callback(timeout=timeout) for r in records if r.callback is None]
    await asyncio.gather(*waits, return_exceptions=True)
