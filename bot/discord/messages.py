"""The one place where engine errors and engine values become what members read on Discord.

An error carries a stable `message_id` and its facts (`bot.errors`); `describe` looks the id up in the member's
catalogue (`bot.i18n`) and fills the template with the facts written the Discord way: names in code spans,
times as relative timestamps, roles as mentions, numbers and lists as the member's locale writes them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

from bot.discord.replies import timestamp
from bot.domain import (
    ASPECTS,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    JobState,
    QuotaLimits,
    Usage,
)
from bot.errors import BadOption, UserError
from bot.errors.said import Said
from bot.i18n import N_, SOURCE_LANGUAGE, Np_, Texts, texts_for

ENGLISH = texts_for(SOURCE_LANGUAGE)
"""For what is not said to a member (the command line) and the tests."""

OPTION_MESSAGES = (
    N_("bad-option.prompt.no_visible_text"),
    N_("bad-option.prompt"),
    N_("bad-option.negative_prompt"),
    N_("bad-option.duration"),
    N_("bad-option.seed"),
    N_("bad-option.aspect"),
)
"""`bad-option.<option>[.<problem>]`: an option's own sentence, more helpful than validation's English one."""

COUNTED_BY = {Np_("queue-full"): "queued", Np_("quota-exceeded"): "cost"}
"""Sentences with plural forms, and the fact whose number picks the form ("1 video waiting", "3 videos")."""

STATE_NAMES = {
    JobState.QUEUED: N_("state.queued"),
    JobState.SUBMITTING: N_("state.submitting"),
    JobState.RUNNING: N_("state.running"),
    JobState.DOWNLOADING: N_("state.downloading"),
    JobState.DELIVERING: N_("state.delivering"),
    JobState.DELIVERED: N_("state.delivered"),
    JobState.FAILED: N_("state.failed"),
    JobState.CANCELLED: N_("state.cancelled"),
}
PER_PERIOD = {"hour": N_("per-hour"), "day": N_("per-day"), "week": N_("per-week"), "month": N_("per-month")}
"""`{amount} per day`…, by quota period."""
UNLIMITED_PER_PERIOD = {"hour": N_("allowance.unlimited.hour"), "day": N_("allowance.unlimited.day"),
                        "week": N_("allowance.unlimited.week"), "month": N_("allowance.unlimited.month")}  # fmt: skip
THIS_WINDOW = {"hour": N_("window.hour"), "day": N_("window.day"), "week": N_("window.week"),
               "month": N_("window.month")}  # fmt: skip
"""`this hour`, `today`…: how a member thinks of the current quota window."""


def describe(error: UserError, tr: Texts = ENGLISH) -> str:
    """What the member reads about `error`, in the language of `tr`."""
    message_id = error.message_id
    if isinstance(error, BadOption):
        refined = (f"{message_id}.{error.option}.{error.problem}", f"{message_id}.{error.option}")
        message_id = next((key for key in refined if key in OPTION_MESSAGES), message_id)
    facts: dict[str, Any] = {}
    if dataclasses.is_dataclass(error):
        facts = {field.name: getattr(error, field.name) for field in dataclasses.fields(error)}
    return text(tr, message_id, **facts)


def reason_text(stored: Said | str | None, tr: Texts) -> str:
    """A reason as stored (a failed job's `error`, a fallback's reason), or as said, in the language of `tr`: a
    `Said` put in words; a plain text (stored before reasons were ids, or a vendor's raw words) as it is."""
    said = stored if isinstance(stored, Said) else Said.parse(stored)
    if said is None or not tr.has(said.message_id):
        return str(stored or "")
    return text(tr, said.message_id, **said.facts)


def text(tr: Texts, message_id: str, **facts: Any) -> str:
    """The template of `message_id` filled with `facts`, each written the way Discord shows it."""
    values = {name: _SHOW[name](value, tr) if name in _SHOW else value for name, value in facts.items()}
    constants = _constants(tr)
    counted = COUNTED_BY.get(message_id)
    if counted is not None:
        return tr.plural(message_id, facts[counted], **(constants | values))
    return tr(message_id, **(constants | values))


@functools.cache
def _constants(tr: Texts) -> dict[str, str]:
    """The limits every template may name, written once per language."""
    return {
        "max_prompt_chars": tr.number(MAX_PROMPT_CHARS),
        "max_negative_prompt_chars": tr.number(MAX_NEGATIVE_PROMPT_CHARS),
        "max_seed": tr.number(MAX_SEED),
        "all_aspects": ", ".join(ASPECTS),
    }


def code(name: str) -> str:
    """A name as a code span (a backtick inside would end it early)."""
    return "`" + name.replace("`", "'") + "`"


def durations(seconds: Sequence[int], tr: Texts) -> str:
    """ "5", "4 or 8", "2, 4, 5 or 8", or a run as "1 to 10"."""
    if len(seconds) > 3 and list(seconds) == list(range(seconds[0], seconds[-1] + 1)):
        return tr("number-range", low=seconds[0], high=seconds[-1])
    return tr.either(tr.number(second) for second in seconds)


def megapixels(pixels: int, tr: Texts) -> str:
    return tr.number(round(pixels / 1e6))


def credits(tr: Texts, amount: int) -> str:
    """ "1 credit", "5 credits"."""
    return tr.plural("credits", amount)


def describe_limits(limits: QuotaLimits, tr: Texts) -> str:
    """The fields one policy layer sets, e.g. "100 credits per day, 3 queued, 1 running"."""
    parts: list[str] = []
    if limits.unlimited:
        parts.append(tr("credits.unlimited"))
    elif limits.credits is not None:
        amount = credits(tr, limits.credits)
        parts.append(tr(PER_PERIOD[limits.period], amount=amount) if limits.period else amount)
    elif limits.unlimited is False:
        parts.append(tr("credits.limited"))
    if limits.max_queued is not None:
        parts.append(tr("limits.queued", count=limits.max_queued))
    if limits.max_running is not None:
        parts.append(tr("limits.running", count=limits.max_running))
    return tr("list-separator").join(parts) or tr("limits.none")


def allowance(usage: Usage, tr: Texts) -> str:
    """One line on what the member gets per window, e.g. "60 credits per day, plus 10 granted today"."""
    policy = usage.policy
    window = tr(THIS_WINDOW[policy.period])
    if policy.unlimited:
        return tr(UNLIMITED_PER_PERIOD[policy.period])
    line = tr(PER_PERIOD[policy.period], amount=credits(tr, policy.credits))
    if usage.granted > 0:
        return tr("allowance.plus-granted", allowance=line, granted=usage.granted, window=window)
    if usage.granted < 0:
        return tr("allowance.minus-taken", allowance=line, taken=-usage.granted, window=window)
    return tr("allowance", allowance=line)


def credits_left(usage: Usage, tr: Texts) -> str:
    """E.g. "5 credits left today (resets in 3 hours)"."""
    left = tr("credits.unlimited") if usage.policy.unlimited else credits(tr, usage.left)
    return tr(
        "credits-left",
        credits=left,
        window=tr(THIS_WINDOW[usage.policy.period]),
        resets_at=timestamp(usage.window_end, "R"),
    )


def _codes(names: Sequence[str], tr: Texts) -> str:
    return tr("list-separator").join(code(name) for name in names)


def _usd(usd: float, tr: Texts) -> str:
    return tr.money(usd)


_SHOW: dict[str, Callable[[Any, Texts], str]] = {
    "model": lambda name, tr: code(name),
    "filename": lambda name, tr: code(name),
    "name": lambda name, tr: code(name),
    "configured": _codes,
    "options": lambda names, tr: tr.either(code(name) for name in names),
    "expected": lambda names, tr: tr.either(names),
    "durations": durations,
    "aspects": lambda aspects, tr: ", ".join(aspects),
    "resets_at": lambda epoch, tr: timestamp(epoch, "R"),
    "cost_usd": _usd,
    "left_usd": _usd,
    "role_id": lambda role_id, tr: f"<@&{role_id}>",
    "state": lambda state, tr: tr(STATE_NAMES[state]),
    "max_pixels": megapixels,
    "size": lambda size, tr: tr.number(size / 1048576, digits=1),
    "max_bytes": lambda size, tr: tr.number(round(size / 1048576)),
    "current": describe_limits,
    "pattern": lambda name, tr: code(name),
    "word": lambda name, tr: code(name),
    "language": lambda name, tr: code(name),
    "languages": _codes,
    "channel_id": lambda channel_id, tr: f"<#{channel_id}>",
    "allowed": lambda channel_ids, tr: tr.either(f"<#{channel_id}>" for channel_id in channel_ids),
}
"""How a fact is written, by its field name; whole numbers the locale's way, anything else as it is."""
