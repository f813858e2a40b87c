"""Server rules as errors: the admin side of the blocklist, allowed channels and settings, and the refusals a
rule makes (the blocklist, a channel, the monthly budget). Import them from `bot.errors`."""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors.base import InvalidRequest, UserError
from bot.i18n.ids import N_


# --- server rules: the blocklist, allowed channels and settings (admin side) --------------------------------
@dataclass(eq=False)
class EmptyPattern(InvalidRequest):
    message_id = N_("empty-pattern")


@dataclass(eq=False)
class PatternTooLong(InvalidRequest):
    length: int
    max_length: int
    message_id = N_("pattern-too-long")


# A `/regex/` Python cannot compile; `problem` is the compiler's own complaint (shown to the admin who typed it).
@dataclass(eq=False)
class InvalidRegex(InvalidRequest):
    problem: str
    message_id = N_("invalid-regex")


class UnsafeRegex(InvalidRequest):
    """A `/regex/` whose matching could take too long on some prompt (the subclass says why)."""

    message_id = N_("unsafe-regex")


@dataclass(eq=False)
class RegexBackreference(UnsafeRegex):
    message_id = N_("regex-backreference")


# A quantifier inside a repeated group, e.g. `(a+)+`: the classic catastrophic backtracking.
@dataclass(eq=False)
class RegexNestedQuantifier(UnsafeRegex):
    message_id = N_("regex-nested-quantifier")


@dataclass(eq=False)
class RegexRepeatTooLarge(UnsafeRegex):
    max_repeat: int
    message_id = N_("regex-repeat-too-large")


# It passed the syntax checks but took too long on a trial against adversarial prompts.
@dataclass(eq=False)
class RegexTooSlow(UnsafeRegex):
    message_id = N_("regex-too-slow")


@dataclass(eq=False)
class PatternAlreadyListed(InvalidRequest):
    pattern: str
    message_id = N_("pattern-already-listed")


@dataclass(eq=False)
class PatternNotListed(InvalidRequest):
    pattern: str
    message_id = N_("pattern-not-listed")


@dataclass(eq=False)
class BlocklistFull(InvalidRequest):
    max_patterns: int
    message_id = N_("blocklist-full")


@dataclass(eq=False)
class TooManyRegexes(InvalidRequest):
    max_regexes: int
    message_id = N_("too-many-regexes")


@dataclass(eq=False)
class ChannelAlreadyAllowed(InvalidRequest):
    channel_id: int
    message_id = N_("channel-already-allowed")


@dataclass(eq=False)
class ChannelNotListed(InvalidRequest):
    channel_id: int
    message_id = N_("channel-not-listed")


@dataclass(eq=False)
class ChannelListFull(InvalidRequest):
    max_channels: int
    message_id = N_("channel-list-full")


# A monthly budget below 0 or above `max_usd` US dollars (0 turns it off).
@dataclass(eq=False)
class BudgetOutOfRange(InvalidRequest):
    max_usd: int
    message_id = N_("budget-out-of-range")


# `/videoadmin settings` was asked to set `setting` and to clear it at once.
@dataclass(eq=False)
class SetAndClear(InvalidRequest):
    setting: str
    message_id = N_("set-and-clear")


@dataclass(eq=False)
class UnknownLanguage(InvalidRequest):
    language: str
    languages: tuple[str, ...]
    message_id = N_("unknown-language")


# --- refusals by a server rule (costless; the log channel hears of them) -----------------------------------
class RefusedByRule(UserError):
    """A request a server rule refuses; the subclass names the rule."""

    message_id = N_("refused-by-rule")


# `/video` or Animate outside the allowed channels (and their threads); `allowed` lists them.
@dataclass(eq=False)
class ChannelNotAllowed(RefusedByRule):
    allowed: tuple[int, ...]
    message_id = N_("channel-not-allowed")


# A prompt (`option`: `prompt` or `negative_prompt`) hit the blocklist.
@dataclass(eq=False)
class BlocklistMatch(RefusedByRule):
    option: str
    message_id = N_("blocklist-match")


# A blocklisted word or phrase, named as the admin typed it.
@dataclass(eq=False)
class BlockedWord(BlocklistMatch):
    word: str
    message_id = N_("blocked-word")


# A blocklisted `/regex/`, named only by its place in the list (its text is not shown to the member).
@dataclass(eq=False)
class BlockedPattern(BlocklistMatch):
    rule: int
    message_id = N_("blocked-pattern")


# The server's monthly provider budget (US dollars by list price) has `left_usd` left until `resets_at`, less than
# this job's `cost_usd`.
@dataclass(eq=False)
class BudgetExceeded(RefusedByRule):
    cost_usd: float
    left_usd: float
    resets_at: float
    message_id = N_("budget-exceeded")
