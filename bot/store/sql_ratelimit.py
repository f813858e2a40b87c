"""Discord's global REST pause in SQL, once for every dialect: one row, read before each bot-token request and
written only when Discord answers a global 429 (`bot.discord.ratelimit` says why a pause and not a bucket)."""

from __future__ import annotations

from bot.store.dialect import Dialect, fetchrow


class RateLimitSql:
    dialect: Dialect

    async def discord_paused_until(self) -> float:
        row = await fetchrow(self.dialect, "discord_paused_until")
        return 0.0 if row is None else float(row["paused_until"])

    async def pause_discord(self, until: float) -> None:
        await self.dialect.write_one("pause_discord", until=until)
