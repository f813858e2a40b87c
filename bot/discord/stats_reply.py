"""The server stats reply: an embed with the totals, the top members (as mentions, which ping nobody: an embed
never pings, and `answer`-style replies send no allowed mentions) and the refusals by rule, around the chart."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.discord.chart import FILENAME
from bot.discord.replies import timestamp
from bot.jobs.balances import Balance
from bot.jobs.stats import ServerStats

RULE_NAMES = {
    "blocked": "Member blocked",
    "paused": "Queue paused",
    "queue_full": "Too many videos waiting",
    "quota": "Credits used up",
    "budget": "Monthly budget reached",
    "blocklist": "Blocklisted words",
    "channel": "Channel not allowed",
    "provider_content": "Refused by the provider's content policy",
}
"""How each rule of `bot.jobs.refusals` reads; a rule not named here shows as its own name."""
FOOTER = (
    "Credits: those kept by finished videos, as /quota's Used counts them. "
    "Spend: videos that did not fail or get cancelled, as the monthly budget counts it."
)


def stats_embed(stats: ServerStats, balances: Sequence[Balance] = ()) -> discord.Embed:
    days = stats.days
    span = f"{days[0].isoformat()} to {days[-1].isoformat()} (UTC)" if len(days) > 1 else f"{days[0]} (UTC)"
    embed = discord.Embed(
        title="Today's video stats" if len(days) == 1 else f"Video stats: the last {len(days)} days",
        description=f"{span}\n**{stats.total_credits:,}** credits used · **${stats.total_spend_usd:,.2f}** "
        "provider spend at list price",
        colour=discord.Colour.blurple(),
    )
    embed.add_field(name="Top members by credits", value=_top_members(stats), inline=False)
    if stats.models:
        lines = [
            f"`{model}` · {sum(stats.credits[model]):,} credits · ${sum(stats.spend_usd[model]):,.2f}"
            for model in stats.models[:10]
        ]
        if len(stats.models) > 10:
            lines.append(f"…and {len(stats.models) - 10} more")
        embed.add_field(name="By model", value="\n".join(lines)[:1024], inline=False)
    embed.add_field(name="Refusals by rule", value=_refusals(stats), inline=False)
    if stats.vendor_credits:
        lines = [f"`{name}` · {credits:,.0f} of its credits" for name, credits in stats.vendor_credits.items()]
        embed.add_field(name="By the vendors' own count", value="\n".join(lines)[:1024], inline=False)
    if balances:
        lines = [f"`{b.provider}` · {b.balance} (checked {timestamp(b.checked_at, 'R')})" for b in balances]
        embed.add_field(name="Provider accounts", value="\n".join(lines)[:1024], inline=False)
    embed.set_image(url=f"attachment://{FILENAME}")
    embed.set_footer(text=FOOTER)
    return embed


def _top_members(stats: ServerStats) -> str:
    if not stats.top_members:
        return "No credits used in these days."
    lines = [
        f"{rank}. <@{member.user_id}> · {member.credits:,} credit{'s' if member.credits != 1 else ''}"
        for rank, member in enumerate(stats.top_members, 1)
    ]
    return "\n".join(lines)[:1024]


def _refusals(stats: ServerStats) -> str:
    if not stats.refusals:
        return "None in these days."
    ranked = sorted(stats.refusals.items(), key=lambda item: (-item[1], item[0]))
    return "\n".join(f"{RULE_NAMES.get(rule, rule)}: {count:,}" for rule, count in ranked)[:1024]
