"""Row ⇄ domain mapping shared by both dialects (their rows are mappings with the same columns)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from bot.domain import (
    STORED,
    Fallback,
    GuildSettings,
    Job,
    JobEvent,
    JobState,
    QuotaLimits,
    Route,
    VideoRequest,
    WorkerInfo,
)
from bot.store.base import Admission, PolicyLayers
from bot.store.dialect import Row

JOB_INSERT_COLUMNS = (
    "id", "guild_id", "user_id", "channel_id", "model", "provider", "request_json", "credits",
    "max_running", "state", "priority", "fair_rank", "created_at", "updated_at", "delivery_ref", "route",
    "cost_usd",
)  # fmt: skip
"""The columns a new job is inserted with; the queries' `{job_columns}` and `{job_values}` are made from it."""


def job_insert_params(job: Job, max_running: int, fair_rank: int) -> dict[str, Any]:
    values = (
        job.id, job.guild_id, job.user_id, job.channel_id, job.model, job.provider,
        job.request.model_dump_json(), job.credits, max_running, job.state.value, job.priority, fair_rank,
        job.created_at, job.updated_at, job.delivery_ref, route_json(job.route), job.cost_usd,
    )  # fmt: skip
    return dict(zip(JOB_INSERT_COLUMNS, values, strict=True))


def job_from_row(row: Row) -> Job:
    return Job(
        id=row["id"],
        guild_id=int(row["guild_id"]),
        user_id=int(row["user_id"]),
        channel_id=int(row["channel_id"]),
        request=_parse_request(row["request_json"]),
        credits=int(row["credits"]),
        state=JobState(row["state"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        fair_rank=int(row["fair_rank"]),
        priority=int(row["priority"]),
        remote_id=row["remote_id"],
        progress=float(row["progress"]),
        remote_position=row["remote_position"],
        remote_waiting=bool(row["remote_waiting"]),
        attempts=int(row["attempts"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=bool(row["cancel_requested"]),
        error=row["error"],
        result_path=row["result_path"],
        delivered_message_id=_opt_int(row["delivered_message_id"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        delivery_ref=row["delivery_ref"],
        post_attempted_at=row["post_attempted_at"],
        status_state=JobState(row["status_state"]) if row["status_state"] else None,
        route=_parse_route(row["route"]) if row["route"] else None,
        cost_usd=float(row["cost_usd"]),
        vendor_credits=None if row["vendor_credits"] is None else float(row["vendor_credits"]),
    )


def route_json(route: Route | None) -> str | None:
    if route is None:
        return None
    tried = [{"model": f.model, "reason": f.reason} for f in route.tried]
    return json.dumps({"alias": route.alias, "remaining": list(route.remaining), "tried": tried})


@functools.lru_cache(maxsize=1024)
def _parse_route(text: str) -> Route:
    data = json.loads(text)
    tried = tuple(Fallback(str(f["model"]), str(f["reason"])) for f in data.get("tried", ()))
    return Route(str(data["alias"]), tuple(str(m) for m in data.get("remaining", ())), tried)


@functools.lru_cache(maxsize=4096)
def _parse_request(text: str) -> VideoRequest:
    """Requests are immutable and re-read on every state change: parse each one once."""
    # STORED: a request accepted under older rules still loads (it must finish, not block the queue).
    return VideoRequest.model_validate_json(text, context=STORED)


def event_from_row(row: Row) -> JobEvent:
    return JobEvent(
        job_id=row["job_id"],
        at=float(row["at"]),
        from_state=JobState(row["from_state"]) if row["from_state"] else None,
        to_state=JobState(row["to_state"]),
        detail=row["detail"],
    )


def admission_from_row(row: Row, spent_usd: float = 0.0) -> Admission:
    charged, reserved, granted, queued, running = (
        int(row[name]) for name in ("charged", "reserved", "granted", "queued", "running")
    )
    return Admission(bool(row["paused"]), bool(row["blocked"]), charged, reserved, granted, queued, running,
                     spent_usd)  # fmt: skip


def limits_from_row(row: Row) -> QuotaLimits:
    return QuotaLimits(
        credits=row["credits"],
        unlimited=None if row["unlimited"] is None else bool(row["unlimited"]),
        period=row["period"],
        max_queued=row["max_queued"],
        max_running=row["max_running"],
    )


def layers_from_rows(rows: Iterable[Row]) -> PolicyLayers:
    """Policy rows of one member (scopes default, role, user) as layers for resolution."""
    by_scope: dict[str, list[QuotaLimits]] = {"default": [], "role": [], "user": []}
    for row in rows:
        by_scope[row["scope"]].append(limits_from_row(row))
    return PolicyLayers(
        default=next(iter(by_scope["default"]), None),
        roles=tuple(by_scope["role"]),
        user=next(iter(by_scope["user"]), None),
    )


def settings_from_row(guild_id: int, row: Row | None) -> GuildSettings:
    if row is None:
        return GuildSettings(guild_id=guild_id)
    return GuildSettings(
        guild_id=guild_id,
        paused=bool(row["paused"]),
        default_model=row["default_model"],
        disabled_models=frozenset(json.loads(row["disabled_models"])),
        admin_role_id=_opt_int(row["admin_role_id"]),
        log_channel_id=_opt_int(row["log_channel_id"]),
        monthly_budget=None if row["monthly_budget"] is None else float(row["monthly_budget"]),
        language=row["language"],
        blocklist=tuple(json.loads(row["blocklist"])),
        allowed_channels=frozenset(int(c) for c in json.loads(row["allowed_channels"])),
    )


def worker_from_row(row: Row) -> WorkerInfo:
    return WorkerInfo(
        id=str(row["id"]),
        host=str(row["host"]),
        pid=int(row["pid"]),
        pid_started=row["pid_started"],
        started_at=float(row["started_at"]),
        heartbeat_at=float(row["heartbeat_at"]),
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
