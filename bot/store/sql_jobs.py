"""Jobs in SQL, once for every dialect: enqueue, the fair claim, the state machine, cancels and the views.

Each method is one transaction (a body run by the dialect, see `bot.store.dialect`); the statements are named
queries (`bot/store/queries/*.sql`), and where the dialects differ (PostgreSQL's row and advisory locks) the
difference is in the SQL, not here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from bot.domain import ALLOWED, AuditDraft, Job, JobEvent, JobState
from bot.errors import InvalidTransition, LeaseLost
from bot.store.base import AdmitFn, ClaimLimits, Reroute, Transition
from bot.store.dialect import Connection, Dialect, Row, fetch, fetchrow, one
from bot.store.rows import admission_from_row, event_from_row, job_from_row, job_insert_params, route_json
from bot.store.sql_audit import write_audit

log = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 3
"""Claims tried in a row when another claimer took the last free slot first (PostgreSQL only): each new try
sees that claim, so it picks another member's or provider's job or finds none."""
CLAIM_LANES = 8
"""Claims of one provider that may be in flight at once without taking turns (PostgreSQL's claim_next): each
leaves room for the other seven it cannot see, so a provider within 8 jobs of its limit is claimed one at a
time instead."""
UNLIMITED = 1 << 31


class _ClaimRace(Exception):
    """Raised inside a claim's transaction to roll it back: a limit was passed by a concurrent claim."""

    def __init__(self, job_id: str, provider: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.provider = provider


class JobsSql:
    dialect: Dialect

    async def insert_job(
        self,
        job: Job,
        *,
        max_running: int,
        window: tuple[float, float],
        admit: AdmitFn,
        budget_month: tuple[float, float] | None = None,
    ) -> Job:
        async def insert(conn: Connection) -> int:
            member = {"guild_id": job.guild_id, "user_id": job.user_id}
            await conn.execute("lock_member", **member)
            spent = 0.0
            if budget_month is not None:
                # Always after the member's lock (one order: no deadlock). Held to the commit, like it.
                await conn.execute("lock_guild_spend", guild_id=job.guild_id)
                row = await conn.fetchrow("guild_spend", guild_id=job.guild_id, start=budget_month[0],
                                          end=budget_month[1])  # fmt: skip
                spent = float(one(row, "guild_spend")["spent"])
            # Read after the lock: this snapshot includes every enqueue of this member committed before.
            admitted = await conn.fetchrow("admission", **member, start=window[0], end=window[1])
            admit(admission_from_row(one(admitted, "admission"), spent))
            floor = one(await conn.fetchrow("fair_rank_floor", **member), "fair_rank_floor")
            rank = max(int(floor["head_rank"]), int(floor["member_last"]) + 1)
            await conn.execute("insert_job", **job_insert_params(job, max_running, rank))
            await conn.execute(
                "insert_ledger", **member, job_id=job.id, kind="reserve", credits=job.credits, at=job.created_at
            )
            await _event(conn, job.id, job.created_at, None, JobState.QUEUED, "")
            await conn.execute("notify_job_queued")
            return rank

        job.fair_rank = await self.dialect.write(insert, on_indexes=True)
        return job

    async def get_job(self, job_id: str) -> Job | None:
        row = await fetchrow(self.dialect, "get_job", id=job_id)
        return job_from_row(row) if row else None

    async def claim_job(
        self,
        worker_id: str,
        *,
        now: float,
        lease_seconds: float,
        limits: ClaimLimits,
        holding: Sequence[str] = (),
        take_over: bool = True,
    ) -> Job | None:
        until = now + lease_seconds
        exclusive: set[str] = set()  # providers a lost race says to claim one at a time

        async def claim(conn: Connection) -> Job | None:
            if take_over:
                expired = await _lapsed_lease(conn, limits, holding, now)
                if expired is not None:
                    return await _take_over(conn, expired, worker_id=worker_id, lease_until=until, now=now)
            providers = limits.providers
            if providers is None:
                providers = frozenset(str(row["provider"]) for row in await conn.fetch("queued_providers"))
            names = sorted(providers)
            # Which providers have room (and which are tight) is worked out by claim_next itself, from what runs
            # when it does: one statement, where reading the counts first cost a round trip per claim.
            row = await conn.fetchrow(
                "claim_next", worker_id=worker_id, lease_until=until, now=now, providers=names,
                limits=[limits.provider_limits.get(p, UNLIMITED) for p in names], exclusive=sorted(exclusive),
                lanes=CLAIM_LANES, lane_offset=random.randrange(CLAIM_LANES), global_limit=limits.global_limit,
            )  # fmt: skip
            if row is None:
                return None
            detail = f"worker {worker_id}"
            check = await conn.fetchrow(
                "claim_check", id=row["id"], now=now, detail=detail, guild_id=row["guild_id"],
                user_id=row["user_id"], provider=row["provider"], global_limit=limits.global_limit,
            )  # fmt: skip
            if check is None:  # SQLite: nothing to check, and the history row is ours to write
                await _event(conn, row["id"], now, JobState.QUEUED, JobState.SUBMITTING, detail)
            elif _over_a_limit(check, row, limits, laned=bool(row["laned"])):
                raise _ClaimRace(str(row["id"]), str(row["provider"]))
            return job_from_row(row)

        for _ in range(CLAIM_ATTEMPTS):
            try:
                return await self.dialect.write(claim, on_indexes=True)
            except _ClaimRace as race:
                log.debug("claim of job %s lost a race for a free slot; trying again", race.job_id)
                exclusive.add(race.provider)
        return None

    async def transition(self, job_id: str, change: Transition, *, now: float) -> Job:
        if change.reroute is None and self.dialect.runs("transition_checked"):
            # PostgreSQL makes the whole change in one statement; no row back means a check failed, and the steps
            # below say which.
            rows = await self.dialect.write_one("transition_checked", **_checked_params(job_id, change, now))
            if rows:
                return job_from_row(rows[0])
        return await self.dialect.write(lambda conn: apply_transition(conn, job_id, change, now))

    async def set_progress(
        self,
        job_id: str,
        worker_id: str,
        progress: float,
        *,
        remote_waiting: bool = False,
        remote_position: int | None = None,
        now: float,
    ) -> None:
        await self.dialect.write_one("set_progress", id=job_id, worker_id=worker_id, progress=progress,
                                     remote_waiting=remote_waiting, remote_position=remote_position,
                                     now=now)  # fmt: skip

    async def request_cancel(self, job_id: str, *, now: float) -> Job:
        async def cancel(conn: Connection) -> Job:
            row = await conn.fetchrow("job_for_update", id=job_id)
            if row is None:
                raise InvalidTransition(job_id)
            state = JobState(row["state"])
            if state is JobState.QUEUED:
                change = Transition(JobState.CANCELLED, refund=True, detail="cancelled while queued")
                return await apply_transition(conn, job_id, change, now)
            if state.is_active and not row["cancel_requested"]:
                row = one(await conn.fetchrow("flag_cancel", id=job_id, now=now), "flag_cancel")
                await _event(conn, job_id, now, state, state, "cancel requested")
            return job_from_row(row)

        return await self.dialect.write(cancel)

    async def cancel_queued(self, guild_id: int, *, now: float, audit: AuditDraft | None = None) -> list[Job]:
        change = Transition(JobState.CANCELLED, refund=True, detail="queue cleared by an admin")

        async def clear(conn: Connection) -> list[Job]:
            rows = await conn.fetch("queued_jobs_of_guild", guild_id=guild_id)
            cancelled = [await apply_transition(conn, row["id"], change, now) for row in rows]
            await write_audit(conn, audit, None, cancelled)
            return cancelled

        return await self.dialect.write(clear)

    async def set_delivery_ref(self, job_id: str, delivery_ref: str) -> None:
        await self.dialect.write_one("set_delivery_ref", id=job_id, delivery_ref=delivery_ref)

    async def mark_status_shown(self, job_id: str, state: JobState) -> None:
        await self.dialect.write_one("mark_status_shown", id=job_id, state=state.value)

    # --- views ----------------------------------------------------------------------------------------
    async def jobs_with_stale_status(self, since: float) -> list[Job]:
        return [job_from_row(row) for row in await fetch(self.dialect, "stale_status_jobs", since=since)]

    async def job_events(self, job_id: str) -> list[JobEvent]:
        return [event_from_row(row) for row in await fetch(self.dialect, "job_events", job_id=job_id)]

    async def member_jobs(self, guild_id: int, user_id: int, *, include_finished: bool = False) -> list[Job]:
        rows = await fetch(
            self.dialect, "member_jobs", guild_id=guild_id, user_id=user_id, include_finished=include_finished
        )
        return [job_from_row(row) for row in rows]

    async def queue_positions(self, job_ids: Sequence[str]) -> dict[str, int]:
        rows = await fetch(self.dialect, "queue_positions", ids=list(job_ids)) if job_ids else []
        return {str(row["id"]): int(row["position"]) for row in rows}

    async def queue_depth(self, guild_id: int | None = None) -> int:
        return _count(await fetchrow(self.dialect, "queue_depth", guild_id=guild_id))

    async def running_count(self, provider: str | None = None) -> int:
        return _count(await fetchrow(self.dialect, "running_count", provider=provider))

    async def recent_durations(self, model: str, limit: int = 20) -> list[float]:
        rows = await fetch(self.dialect, "recent_durations", model=model, limit=limit)
        return [float(row["seconds"]) for row in rows]

    async def unfinished_jobs(self) -> list[Job]:
        return [job_from_row(row) for row in await fetch(self.dialect, "unfinished_jobs")]

    # --- metrics ----------------------------------------------------------------------------------------
    async def queue_depth_by_model(self) -> dict[str, int]:
        return {str(row["model"]): int(row["n"]) for row in await fetch(self.dialect, "queue_depth_by_model")}

    async def leases_held(self, worker_id: str, *, now: float) -> int:
        return _count(await fetchrow(self.dialect, "leases_held", worker_id=worker_id, now=now))


async def apply_transition(conn: Connection, job_id: str, change: Transition, now: float) -> Job:
    """The one place a job changes state: checked against `ALLOWED` (and the lease), recorded with its history
    row and refund, in the caller's transaction."""
    row = await conn.fetchrow("transition_row", id=job_id)
    if row is None:
        raise InvalidTransition(job_id)
    state = JobState(row["state"])
    if change.worker_id is not None and row["lease_owner"] != change.worker_id:
        raise LeaseLost(job_id, holder=row["lease_owner"], worker_id=change.worker_id)
    if change.to_state not in ALLOWED[state]:
        raise InvalidTransition(job_id, state, change.to_state)
    if change.reroute is not None:
        updated = await _reroute(conn, job_id, row, change.reroute, now)
    elif change.to_state.is_terminal:
        updated = await conn.fetchrow(
            "end_job", id=job_id, state=change.to_state.value, now=now, error=change.error,
            delivered_message_id=change.delivered_message_id,
        )  # fmt: skip
    else:
        updated = await conn.fetchrow(
            "move_job", id=job_id, state=change.to_state.value, now=now, remote_id=change.remote_id,
            result_path=change.result_path, post_attempted_at=change.post_attempted_at,
            vendor_credits=change.vendor_credits,
        )  # fmt: skip
    if change.refund:  # dated at the reservation: it lands in the window that paid
        await conn.execute(
            "insert_ledger", guild_id=row["guild_id"], user_id=row["user_id"], job_id=job_id, kind="refund",
            credits=-row["credits"], at=row["created_at"],
        )  # fmt: skip
    await _event(conn, job_id, now, state, change.to_state, change.detail or change.error or "")
    return job_from_row(one(updated, change.to_state.value))


async def _reroute(conn: Connection, job_id: str, row: Row, reroute: Reroute, now: float) -> Row | None:
    """The new model's cost is kept, never more than was reserved; the difference goes back at once."""
    credits = min(int(row["credits"]), reroute.credits)
    request = reroute.request
    updated = await conn.fetchrow(
        "reroute_job", id=job_id, state=JobState.SUBMITTING.value, now=now, model=request.model,
        provider=request.provider, request_json=request.model_dump_json(), credits=credits,
        route=route_json(reroute.route), cost_usd=reroute.cost_usd,
    )  # fmt: skip
    if credits < int(row["credits"]):
        await conn.execute(
            "insert_ledger", guild_id=row["guild_id"], user_id=row["user_id"], job_id=job_id, kind="refund",
            credits=credits - int(row["credits"]), at=row["created_at"],
        )  # fmt: skip
    return updated


async def _lapsed_lease(conn: Connection, limits: ClaimLimits, holding: Sequence[str], now: float) -> Row | None:
    """An active job of this worker's providers whose lease ran out (not one it holds itself), locked."""
    running = {str(row["provider"]) for row in await conn.fetch("running_by_provider")}
    # Only a provider with active jobs can have a lapsed lease: naming them lets the lookup use the index.
    with_active = running & limits.providers if limits.providers is not None else running
    if not with_active:
        return None
    return await conn.fetchrow("find_expired_lease", now=now, providers=sorted(with_active), holding=list(holding))


async def _take_over(conn: Connection, expired: Row, *, worker_id: str, lease_until: float, now: float) -> Job:
    """A job whose lease ran out (its worker died, or handed it back on shutdown) goes on where it stands."""
    taken = await conn.fetchrow("take_over", seq=expired["seq"], worker_id=worker_id, lease_until=lease_until, now=now)
    state, previous = JobState(expired["state"]), expired["lease_owner"]
    detail = f"taken over by {worker_id} from {previous}" if previous else f"resumed by {worker_id} after a handover"
    await _event(conn, expired["id"], now, state, state, detail)
    log.warning("job %s: lease of %s ran out, %s", expired["id"], previous, detail)
    return job_from_row(one(taken, "take_over"))


async def _event(
    conn: Connection, job_id: str, at: float, from_state: JobState | None, to_state: JobState, detail: str
) -> None:
    await conn.execute(
        "insert_event", job_id=job_id, at=at, from_state=from_state.value if from_state else None,
        to_state=to_state.value, detail=detail,
    )  # fmt: skip


def _checked_params(job_id: str, change: Transition, now: float) -> dict[str, object]:
    """transition_checked's parameters: apply_transition's checks, as data."""
    return {
        "id": job_id, "state": change.to_state.value, "now": now, "worker_id": change.worker_id,
        "terminal": change.to_state.is_terminal,
        "from_states": [state.value for state in JobState if change.to_state in ALLOWED[state]],
        "detail": change.detail or change.error or "", "refund": change.refund, "error": change.error,
        "delivered_message_id": change.delivered_message_id, "remote_id": change.remote_id,
        "result_path": change.result_path, "post_attempted_at": change.post_attempted_at,
        "vendor_credits": change.vendor_credits,
    }  # fmt: skip


def _over_a_limit(check: Row, claimed: Row, limits: ClaimLimits, *, laned: bool) -> bool:
    """The counts include the claimed job itself. A laned claim (no exclusive provider lock) cannot see up to
    CLAIM_LANES - 1 others in flight, so it passes only with room for all of them; with no lane free it fails."""
    provider_limit = limits.provider_limits.get(str(claimed["provider"]), UNLIMITED)
    unseen = CLAIM_LANES - 1 if laned else 0
    return (
        (laned and claimed["lane"] is None)
        or int(check["member_running"]) > int(claimed["max_running"])
        or int(check["provider_running"]) + unseen > provider_limit
        or (limits.global_limit is not None and int(check["all_running"]) > limits.global_limit)
    )


def _count(row: Row | None) -> int:
    return 0 if row is None or row["n"] is None else int(row["n"])
