"""The server stats reply: an embed with the totals, the top members (as mentions, which ping nobody: an embed
never pings, and `answer`-style replies send no allowed mentions) and the refusals by rule, around the chart.
Written in the admin's language; the days stay ISO dates (UTC), as the chart's axis shows them."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.discord.chart import FILENAME
from bot.discord.messages import ENGLISH, code
from bot.discord.replies import timestamp
from bot.i18n import N_, Texts
from bot.jobs.balances import Balance
from bot.jobs.stats import ServerStats

RULE_NAMES = {
    "blocked": N_("stats.rule.blocked"),
    "paused": N_("stats.rule.paused"),
    "queue_full": N_("stats.rule.queue-full"),
    "quota": N_("stats.rule.quota"),
    "budget": N_("stats.rule.budget"),
    "blocklist": N_("stats.rule.blocklist"),
    "channel": N_("stats.rule.channel"),
    "provider_content": N_("stats.rule.provider-content"),
}
"""How each rule of `bot.jobs.refusals` reads; a rule not named here shows as its own name."""
MAX_MODELS = 10
"""Models listed one by one; the rest are counted."""


def stats_embed(stats: ServerStats, balances: Sequence[Balance] = (), tr: Texts = ENGLISH) -> discord.Embed:
    days = stats.days
    if len(days) > 1:
        span = tr("stats.span", first=tr.date(days[0]), last=tr.date(days[-1]))
        title = tr.plural("stats.title.days", len(days))
    else:
        span, title = tr("stats.span.one-day", day=tr.date(days[0])), tr("stats.title.today")
    totals = tr.plural("stats.totals", stats.total_credits, spend=tr.money(stats.total_spend_usd))
    embed = discord.Embed(title=title, description=f"{span}\n{totals}", colour=discord.Colour.blurple())
    embed.add_field(name=tr("stats.field.top-members"), value=_top_members(stats, tr), inline=False)
    if stats.models:
        lines = [
            tr.plural("stats.model-line", sum(stats.credits[model]), model=code(model),
                      spend=tr.money(sum(stats.spend_usd[model])))
            for model in stats.models[:MAX_MODELS]
        ]  # fmt: skip
        if len(stats.models) > MAX_MODELS:
            lines.append(tr.plural("stats.more-models", len(stats.models) - MAX_MODELS))
        embed.add_field(name=tr("stats.field.by-model"), value="\n".join(lines)[:1024], inline=False)
    embed.add_field(name=tr("stats.field.refusals"), value=_refusals(stats, tr), inline=False)
    if stats.vendor_credits:
        lines = [
            tr("stats.vendor-line", provider=code(name), credits=tr.number(credits))
            for name, credits in stats.vendor_credits.items()
        ]
        embed.add_field(name=tr("stats.field.vendors"), value="\n".join(lines)[:1024], inline=False)
    if balances:
        lines = [
            tr("stats.balance-line", provider=code(b.provider), balance=b.balance,
               checked_at=timestamp(b.checked_at, "R"))
            for b in balances
        ]  # fmt: skip
        embed.add_field(name=tr("stats.field.accounts"), value="\n".join(lines)[:1024], inline=False)
    embed.set_image(url=f"attachment://{FILENAME}")
    embed.set_footer(text=tr("stats.footer"))
    return embed


def _top_members(stats: ServerStats, tr: Texts) -> str:
    if not stats.top_members:
        return tr("stats.top-members.none")
    lines = []
    for rank, member in enumerate(stats.top_members, 1):
        mention = f"<@{member.user_id}>"
        lines.append(tr.plural("stats.top-member", member.credits, rank=rank, member=mention))
    return "\n".join(lines)[:1024]


def _refusals(stats: ServerStats, tr: Texts) -> str:
    if not stats.refusals:
        return tr("stats.refusals.none")
    ranked = sorted(stats.refusals.items(), key=lambda item: (-item[1], item[0]))
    lines = [tr("stats.refusal-line", rule=tr(RULE_NAMES[rule]) if rule in RULE_NAMES else rule, count=count)
             for rule, count in ranked]  # fmt: skip
    return "\n".join(lines)[:1024]
