"""Quota policy: which limits apply to a member, the window they apply in, and whether a job is admitted.

Pure functions: the store reads the rows and the member's standing inside its transaction and calls
`check_admission`, so the rules live here once for both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain import DEFAULT_LIMITS, EffectivePolicy, Period, QuotaLimits
from bot.errors import Blocked, BudgetExceeded, QueueFull, QueuePaused, QuotaExceeded
from bot.store.base import Admission, PolicyLayers


def resolve_policy(layers: PolicyLayers) -> EffectivePolicy:
    """Server default (over the built-in default), then the best of the member's roles, then the member's
    own override. For each limit a role sets, the highest value among the member's roles wins."""
    merged = DEFAULT_LIMITS.overlaid(layers.default).overlaid(_best_of(layers.roles)).overlaid(layers.user)
    assert merged.credits is not None and merged.period is not None
    assert merged.max_queued is not None and merged.max_running is not None
    return EffectivePolicy(
        credits=merged.credits,
        unlimited=bool(merged.unlimited),
        period=merged.period,
        max_queued=merged.max_queued,
        max_running=merged.max_running,
    )


def window_bounds(period: Period, now: float) -> tuple[float, float]:
    """The calendar window (UTC) that contains `now`: hours on the hour, days from 00:00, weeks from Monday,
    months from the 1st."""
    moment = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "week":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=moment.weekday())
        end = start + timedelta(days=7)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.timestamp(), end.timestamp()


def check_admission(policy: EffectivePolicy, cost: int, standing: Admission, resets_at: float) -> None:
    """Raise the `UserError` that says why this job cannot be queued; return if it can."""
    if standing.blocked:
        raise Blocked()
    if standing.paused:
        raise QueuePaused()
    if standing.queued >= policy.max_queued:
        raise QueueFull(queued=standing.queued, max_queued=policy.max_queued)
    if policy.unlimited:
        return
    left = policy.credits + standing.granted - standing.charged
    if cost > left:
        raise QuotaExceeded(cost=cost, left=max(0, left), resets_at=resets_at)


def check_budget(budget: float, cost_usd: float, spent_usd: float, resets_at: float) -> None:
    """Refuse a job whose list-price cost would take the server past its monthly budget."""
    left = budget - spent_usd
    if cost_usd > left + 1e-9:
        raise BudgetExceeded(cost_usd=round(cost_usd, 2), left_usd=round(max(0.0, left), 2), resets_at=resets_at)


def _best_of(roles: tuple[QuotaLimits, ...]) -> QuotaLimits | None:
    if not roles:
        return None

    def best(values: list[int | None]) -> int | None:
        present = [v for v in values if v is not None]
        return max(present) if present else None

    unlimited = [r.unlimited for r in roles if r.unlimited is not None]
    return QuotaLimits(
        credits=best([r.credits for r in roles]),
        unlimited=any(unlimited) if unlimited else None,
        max_queued=best([r.max_queued for r in roles]),
        max_running=best([r.max_running for r in roles]),
    )
