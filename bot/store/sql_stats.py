"""The server stats and the refusals they count, in SQL, once for every dialect.

The store groups by UTC day number (whole days since the epoch, taken from the epoch seconds the tables hold);
the dates are made here, in Python, so SQLite and PostgreSQL give the same days without either one's date
functions or time zone settings.
"""

from __future__ import annotations

from datetime import date, timedelta

from bot.store.base import DailyUsage, MemberCredits
from bot.store.dialect import Dialect, fetch

EPOCH = date(1970, 1, 1)


def day_of(number: int) -> date:
    """The UTC date of a day number (days since 1970-01-01)."""
    return EPOCH + timedelta(days=number)


class StatsSql:
    dialect: Dialect

    async def record_refusal(self, guild_id: int, user_id: int, rule: str, *, at: float) -> None:
        await self.dialect.write_one("insert_refusal", guild_id=guild_id, user_id=user_id, rule=rule, at=at)

    async def usage_by_day(self, guild_id: int, start: float, end: float) -> list[DailyUsage]:
        span = {"guild_id": guild_id, "start": start, "end": end}
        credits = await fetch(self.dialect, "stats_credits_by_day", **span)
        spend = await fetch(self.dialect, "stats_spend_by_day", **span)
        usage: dict[tuple[int, str], tuple[int, float]] = {}
        for row in credits:
            usage[int(row["day"]), str(row["model"])] = (int(row["credits"]), 0.0)
        for row in spend:
            key = (int(row["day"]), str(row["model"]))
            usage[key] = (usage.get(key, (0, 0.0))[0], float(row["spend_usd"]))
        return [
            DailyUsage(day=day_of(day), model=model, credits=kept, spend_usd=spent)
            for (day, model), (kept, spent) in sorted(usage.items())
            if kept or spent
        ]

    async def top_members(self, guild_id: int, start: float, end: float, *, limit: int) -> list[MemberCredits]:
        rows = await fetch(self.dialect, "stats_top_members", guild_id=guild_id, start=start, end=end, limit=limit)
        return [MemberCredits(user_id=int(row["user_id"]), credits=int(row["credits"])) for row in rows]

    async def refusals_by_rule(self, guild_id: int, start: float, end: float) -> dict[str, int]:
        rows = await fetch(self.dialect, "stats_refusals_by_rule", guild_id=guild_id, start=start, end=end)
        return {str(row["rule"]): int(row["n"]) for row in rows}

    async def vendor_credits_by_provider(self, guild_id: int, start: float, end: float) -> dict[str, float]:
        rows = await fetch(self.dialect, "stats_vendor_credits", guild_id=guild_id, start=start, end=end)
        return {str(row["provider"]): float(row["credits"]) for row in rows}
