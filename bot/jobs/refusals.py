"""Refusals by rule, counted for the server stats: which refusal counts under which rule, and recording it.

A server rule refused a request at enqueue (the member was blocked, the queue paused or full, the quota or the
monthly budget spent, a blocklisted word, a channel not allowed), or a provider's content policy refused a job.
Only these are counted: a wrong option or an unknown model is the member's typo, not a rule at work. Counting is
best effort: a database hiccup while counting must never change what the member is told.
"""

from __future__ import annotations

import logging

from bot.domain import Job, JobState
from bot.errors import (
    Blocked,
    BlocklistMatch,
    BudgetExceeded,
    ChannelNotAllowed,
    ContentRefused,
    JobFailed,
    QueueFull,
    QueuePaused,
    QuotaExceeded,
    StoreError,
)
from bot.store.base import JobStore

log = logging.getLogger(__name__)

PROVIDER_CONTENT = "provider_content"
"""The rule of a job the provider's content policy refused."""

RULES: dict[type[BaseException], str] = {
    Blocked: "blocked",
    QueuePaused: "paused",
    QueueFull: "queue_full",
    QuotaExceeded: "quota",
    BudgetExceeded: "budget",
    BlocklistMatch: "blocklist",
    ChannelNotAllowed: "channel",
    ContentRefused: PROVIDER_CONTENT,
}
"""Refusal type → the short rule name stored (at most 32 characters). A subclass counts as its nearest listed
base (a blocked word and a blocked pattern are both "blocklist"); a type listed nowhere is not counted."""


def rule_of(refusal: BaseException) -> str | None:
    """The rule `refusal` counts under, or None when it is not a refusal by rule."""
    for cls in type(refusal).__mro__:
        if cls in RULES:
            return RULES[cls]
    return None


async def count_refusal(store: JobStore, guild_id: int, user_id: int, refusal: BaseException, *, at: float) -> None:
    """Count an enqueue refused by a server rule; anything else is left alone."""
    rule = rule_of(refusal)
    if rule is not None:
        await _record(store, guild_id, user_id, rule, at=at)


async def count_provider_refusal(store: JobStore, job: Job, failure: JobFailed, *, at: float) -> None:
    """Count a job that ended because the provider refused its content (the failure's cause), once it is
    recorded as failed."""
    if job.state is JobState.FAILED and isinstance(failure.__cause__, ContentRefused):
        await _record(store, job.guild_id, job.user_id, PROVIDER_CONTENT, at=at)


async def _record(store: JobStore, guild_id: int, user_id: int, rule: str, *, at: float) -> None:
    try:
        await store.record_refusal(guild_id, user_id, rule, at=at)
    except StoreError as exc:
        log.warning("guild %s: could not count a refusal by %s (%s)", guild_id, rule, exc)
