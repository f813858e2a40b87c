"""A server's stats for its admins: credits and provider spend per UTC day and model, the members who used the
most credits, and the refusals by rule, over the last few days. Knows nothing of Discord or of charts: the front
end draws the numbers held here, so the numbers are what a test compares with the ledger.

Credits are the ones kept, as the quota's "Used" counts them: a job's reserve net of its refund (a refund is
dated at its reservation), once the job has finished; a job still running holds its credits but has not used
them. An admin's reset or grant changes what a member may spend, not what was used, so neither shows here.
Spend is the list price of the jobs that did not fail or get cancelled, as the monthly budget counts it (a job
still running counts). A job counts on the UTC day it was queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from bot.clock import Clock
from bot.errors import LimitOutOfRange
from bot.store.base import MemberCredits, StatsStore

DEFAULT_DAYS = 30
MAX_DAYS = 90
TOP_MEMBERS = 10
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class ServerStats:
    """The numbers behind the chart and the reply. `days` lists every UTC day of the span, oldest first, those
    with nothing included; each series holds one value per day, in that order."""

    guild_id: int
    days: tuple[date, ...]
    models: tuple[str, ...]
    """Every model with credits or spend in the span, the most credits first (then the most spend, then name)."""
    credits: dict[str, tuple[int, ...]]
    """Model → credits kept per day."""
    spend_usd: dict[str, tuple[float, ...]]
    """Model → list-price spend per day, in US dollars."""
    top_members: tuple[MemberCredits, ...]
    refusals: dict[str, int]
    """Rule (`bot.jobs.refusals`) → refusals in the span; rules with none are left out."""
    vendor_credits: dict[str, float] = field(default_factory=dict)
    """Provider → its own count (credits) of what the delivered jobs cost, for vendors that report one."""

    @property
    def credits_per_day(self) -> tuple[int, ...]:
        return tuple(sum(column) for column in zip(*self.credits.values(), strict=True)) or (0,) * len(self.days)

    @property
    def spend_per_day(self) -> tuple[float, ...]:
        return tuple(sum(column) for column in zip(*self.spend_usd.values(), strict=True)) or (0.0,) * len(self.days)

    @property
    def total_credits(self) -> int:
        return sum(self.credits_per_day)

    @property
    def total_spend_usd(self) -> float:
        return sum(self.spend_per_day)


def day_span(now: float, days: int) -> tuple[float, float]:
    """[start, end) in epoch seconds: the `days` UTC calendar days ending with today's."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = today + timedelta(days=1)
    return (end - timedelta(days=days)).timestamp(), end.timestamp()


class StatsService:
    def __init__(self, store: StatsStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def server_stats(self, guild_id: int, days: int = DEFAULT_DAYS) -> ServerStats:
        if not 1 <= days <= MAX_DAYS:
            raise LimitOutOfRange(name="days", low=1, high=MAX_DAYS)
        start, end = day_span(self.clock.now(), days)
        usage = await self.store.usage_by_day(guild_id, start, end)
        first = datetime.fromtimestamp(start, UTC).date()
        every_day = tuple(first + timedelta(days=n) for n in range(days))
        index = {day: n for n, day in enumerate(every_day)}
        credits: dict[str, list[int]] = {}
        spend: dict[str, list[float]] = {}
        for row in usage:
            credits.setdefault(row.model, [0] * days)[index[row.day]] += row.credits
            spend.setdefault(row.model, [0.0] * days)[index[row.day]] += row.spend_usd
        models = tuple(sorted(credits, key=lambda m: (-sum(credits[m]), -sum(spend[m]), m)))
        return ServerStats(
            guild_id=guild_id,
            days=every_day,
            models=models,
            credits={m: tuple(credits[m]) for m in models},
            spend_usd={m: tuple(spend[m]) for m in models},
            top_members=tuple(await self.store.top_members(guild_id, start, end, limit=TOP_MEMBERS)),
            refusals=await self.store.refusals_by_rule(guild_id, start, end),
            vendor_credits=await self.store.vendor_credits_by_provider(guild_id, start, end),
        )
