"""The exactly-once checks of the crash tests and the recovery benchmark, and the database they read behind
the bot's back (sqlite3 / asyncpg, not the bot's store: the checks must not share the code they check, and they
run after the bot is gone)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tests.fakes.discord import GUILD_ID, FakeDiscord, InteractionRecord, StoredMessage

TERMINAL = ("delivered", "failed", "cancelled")
MODEL = "local/preview"
MODEL_WEIGHT = 1.0
"""`local/preview` costs one credit per second (bot/providers/local.py); the checks compare against it."""
CLIP_DELETE = re.compile(r"^video:delete:(?P<job>[0-9a-f]{32})$")


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
    (`PostgresDialect.open(url)` without `schema=` uses the connection's `current_schema()`). The schema must
    exist first: with a missing one, `current_schema()` is NULL and the migrations have nowhere to go.
    """

    label = "postgres"

    def __init__(self, base_url: str, schema: str | None = None) -> None:
        self.base_url = base_url
        self.schema = schema or f"crash_{uuid.uuid4().hex[:12]}"
        self.url = f"{base_url}{'&' if '?' in base_url else '?'}search_path={self.schema}"

    async def _connect(self, *, in_schema: bool) -> Any:
        import asyncpg

        from bot.store.dialects.postgres import postgres_dsn

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
        rec = by_token.get(_token(job))
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

    tokens = {_token(j) for j in snap.jobs}
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


def _token(job: dict[str, Any]) -> str:
    """The interaction token in the job's delivery record (read as stored: JSON owned by the Discord layer)."""
    ref = job.get("delivery_ref")
    return str(json.loads(ref).get("token") or "") if ref else ""
