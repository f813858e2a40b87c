"""The one place where engine errors and engine values become what members read on Discord.

An error carries a stable `message_id` and its facts (`bot.errors`); `describe` looks the id up in `MESSAGES`
and fills the template with the facts written the Discord way: names in code spans, times as relative
timestamps, roles as mentions. Localization swaps `MESSAGES` for a catalogue per language, keyed by the same
ids and filled with the same named values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from bot.discord.replies import timestamp
from bot.domain import (
    ASPECTS,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    NO_VISIBLE_TEXT,
    QuotaLimits,
    Usage,
)
from bot.errors import BadOption, UserError

MESSAGES: dict[str, str] = {
    # bases: shown only when something raises a family without saying which member of it
    "user-error": "That cannot be done as asked.",
    "invalid-request": "That request is not valid; check its options and try again.",
    "model-rejected": "{model} cannot make this video; choose another model.",
    "image-rejected": "That image cannot be used: attach a png, jpeg or webp.",
    "not-allowed": "You are not allowed to do that.",
    # options (`bad-option.<option>[.<problem>]` first, then `bad-option`)
    "bad-option": "`{option}`: {message}",
    f"bad-option.prompt.{NO_VISIBLE_TEXT}": "`prompt`: it has nothing visible in it (only spaces or invisible "
    "characters). Describe the video in words.",
    "bad-option.prompt": "`prompt`: write a prompt of 1 to {max_prompt_chars} characters.",
    "bad-option.negative_prompt": "`negative_prompt`: keep it under {max_negative_prompt_chars} characters.",
    "bad-option.duration": "`duration`: choose 1 to 60 seconds.",
    "bad-option.seed": "`seed`: use a whole number from 0 to {max_seed}.",
    "bad-option.aspect": "`aspect`: choose one of {all_aspects}.",
    # models
    "unknown-model": "Unknown model {model}. Pick one from the list (`/video model:`).",
    "model-not-configured": "Unknown model {model}. Configured models: {configured}.",
    "no-image-model": "No model enabled on this server can animate an image.",
    "model-disabled": "The model {model} is disabled on this server.",
    "duration-not-offered": "{model} makes videos of {durations} seconds, not {duration}.",
    "aspect-not-offered": "{model} supports the aspect ratios {aspects}.",
    "image-not-offered": "{model} cannot start from an image; choose another model or drop the image.",
    "image-required": "{model} makes a video from an image: attach one with `image`, or choose another model.",
    "seed-not-offered": "{model} does not take a seed; leave `seed` empty.",
    "negative-prompt-not-offered": "{model} does not take a negative prompt; leave it empty.",
    # images
    "not-an-image": "That file is not an image I can use: attach a png, jpeg or webp.",
    "attachment-not-an-image": "{filename} is not an image I can use: attach a png, jpeg or webp.",
    "wrong-image-format": "That file is not a {expected} image, whatever its name says: attach a png, jpeg or webp.",
    "image-too-large": "That image is {width}×{height} pixels; the limit is {max_pixels} megapixels. "
    "Scale it down and attach it again.",
    "attachment-too-large": "{filename} is {width}×{height} pixels; the limit is {max_pixels} megapixels. "
    "Scale it down and try again.",
    "image-far-too-large": "That image has far too many pixels; the limit is {max_pixels} megapixels. "
    "Scale it down and attach it again.",
    "attachment-too-heavy": "{filename} is {size} MB; the limit is {max_bytes} MB.",
    "image-damaged": "That image is damaged or incomplete and cannot be read: attach a png, jpeg or webp.",
    "image-download-failed": "I could not download that image from Discord; attach it again.",
    "no-image-in-message": "That message has no png, jpeg or webp image to animate.",
    "image-not-kept": "Animate the image again from its message; the original image is not kept.",
    # jobs and buttons
    "already-ended": "This video is already {state}; there is nothing to cancel.",
    "unsupported-button": "That button is no longer supported.",
    "job-not-found": "That video job no longer exists.",
    "not-requester": "Only the member who asked for this video (or an admin) can do that.",
    # the member's standing
    "set-and-clear": "Set `{setting}` or clear it, not both at once.",
    "budget-exceeded": "This server's video budget for the month has {left_usd} left and this video would cost "
    "about {cost_usd} at the provider's list price; the budget starts again {resets_at}. Try a shorter duration or "
    "a cheaper model, or ask an admin.",
    "quota-exceeded": "This video costs {cost} credits but you have {left} left; your credits refill {resets_at}. "
    "Try a shorter duration or a cheaper model.",
    "queue-full": "You already have {queued} video(s) waiting (the limit is {max_queued}). "
    "Wait for one to start, or cancel one (see /queue).",
    "blocked": "You are blocked from generating videos on this server. Ask a server admin if this is a mistake.",
    "queue-paused": "The video queue on this server is paused by an admin. Please try again later.",
    # admin changes
    "not-admin": "Only server admins can use `/videoadmin`: it needs the Manage Server permission "
    "or the server's admin role.",
    "admin-role-needs-manage-server": "Only members with the Manage Server permission can change the admin role.",
    "limit-out-of-range": "{name} must be between {low} and {high}.",
    "running-limit-too-low": "`max_running` must be at least 1 (block the member to stop them instead).",
    "period-is-server-wide": "The period is set for the whole server, with `/videoadmin quota default`.",
    "zero-grant": "Grant a non-zero number of credits (negative takes credits back).",
    "nothing-to-change": "Nothing to change: give at least one of {options}.",
    "default-quota-unchanged": "Nothing to change. The default quota is {current}; "
    "give `credits`, `period`, `max_queued` or `max_running` to change it.",
    "clear-with-limits": "Use `clear` alone, or give the limits to set, not both.",
    "last-enabled-model": "At least one model must stay enabled.",
    "disabled-model-as-default": "{model} is disabled on this server; enable it first.",
    "everyone-as-admin-role": "Every member has @everyone, so it cannot be the admin role: choose a role only "
    "your admins have.",
    "managed-role-as-admin-role": "{role_id} is managed by an integration (a bot, boosts or a subscription), "
    "so it cannot be the admin role: choose a role your admins give out.",
    # server rules: the blocklist, allowed channels, settings (admin side)
    "empty-pattern": "That pattern has nothing visible in it: give a word, a phrase or a `/regex/`.",
    "pattern-too-long": "That pattern is {length} characters long; the limit is {max_length}.",
    "invalid-regex": "That regex does not compile ({problem}). Write it between slashes, as Python's `re` reads it.",
    "unsafe-regex": "That regex could take too long on some prompts: block words or phrases, or write a simpler regex.",
    "regex-backreference": "Backreferences (like `\\1`) and conditional groups can make matching take very long: "
    "write the regex without them, or block the words themselves.",
    "regex-nested-quantifier": "That regex repeats a group that repeats itself (like `(a+)+`), which can take very "
    "long on some prompts: drop the inner or the outer repetition.",
    "regex-repeat-too-large": "A blocklist regex may repeat something at most {max_repeat} times.",
    "regex-too-slow": "That regex took too long on a trial against long prompts and would slow down every "
    "request: anchor it, bound its repetitions, or block words or phrases instead.",
    "pattern-already-listed": "{pattern} is already on the blocklist.",
    "pattern-not-listed": "{pattern} is not on the blocklist; `/videoadmin blocklist list` shows what is.",
    "blocklist-full": "The blocklist holds at most {max_patterns} patterns; remove one first.",
    "too-many-regexes": "The blocklist holds at most {max_regexes} regexes; remove one, or block words instead.",
    "channel-already-allowed": "{channel_id} is already an allowed channel.",
    "channel-not-listed": "{channel_id} is not an allowed channel; `/videoadmin channel list` shows them.",
    "channel-list-full": "At most {max_channels} channels can be allowed; remove one first.",
    "budget-out-of-range": "`monthly_budget` must be between 0 (no budget) and {max_usd} US dollars.",
    "unknown-language": "I do not know the language {language}; choose one of {languages}, or `auto` to follow the "
    "server's own locale.",
    # refusals by a server rule (they cost nothing)
    "refused-by-rule": "A rule of this server refuses that request; it cost nothing.",
    "channel-not-allowed": "Videos can be made only in {allowed} (and their threads) on this server; it cost nothing.",
    "blocklist-match": "`{option}` contains something this server's blocklist refuses; reword it. It cost nothing.",
    "blocked-word": "`{option}` contains {word}, which this server's blocklist refuses; reword it. It cost nothing.",
    "blocked-pattern": "`{option}` matches rule #{rule} of this server's blocklist; reword it. It cost nothing.",
    # not the member's doing (bot/discord/client.py)
    "server-only": "This command works in a server, not in direct messages.",
    "check-failed": "You cannot use this command here.",
    "internal-error": "Sorry, something went wrong on our side. Reference: `{reference}`.",
}
"""Message id → English template with named values. Every `UserError`'s `message_id` has one (a test checks)."""

_CONSTANTS = {
    "max_prompt_chars": f"{MAX_PROMPT_CHARS:,}",
    "max_negative_prompt_chars": f"{MAX_NEGATIVE_PROMPT_CHARS:,}",
    "max_seed": f"{MAX_SEED:,}",
    "all_aspects": ", ".join(ASPECTS),
}


def describe(error: UserError) -> str:
    """What the member reads about `error`."""
    message_id = error.message_id
    if isinstance(error, BadOption):
        refined = (f"{message_id}.{error.option}.{error.problem}", f"{message_id}.{error.option}")
        message_id = next((key for key in refined if key in MESSAGES), message_id)
    facts: dict[str, Any] = {}
    if dataclasses.is_dataclass(error):
        facts = {field.name: getattr(error, field.name) for field in dataclasses.fields(error)}
    return text(message_id, **facts)


def text(message_id: str, **facts: Any) -> str:
    """The template of `message_id` filled with `facts`, each written the way Discord shows it."""
    values = {name: _SHOW.get(name, str)(value) for name, value in facts.items()}
    return MESSAGES[message_id].format_map(_CONSTANTS | values)


def code(name: str) -> str:
    """A name as a code span (a backtick inside would end it early)."""
    return "`" + name.replace("`", "'") + "`"


def either(items: Sequence[object]) -> str:
    """ "a", "a or b", "a, b or c"."""
    words = [str(item) for item in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" or {words[-1]}"


def durations(seconds: Sequence[int]) -> str:
    """ "5", "4 or 8", "2, 4, 5 or 8", or a run as "1 to 10"."""
    if len(seconds) > 3 and list(seconds) == list(range(seconds[0], seconds[-1] + 1)):
        return f"{seconds[0]} to {seconds[-1]}"
    return either(seconds)


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}"


def describe_limits(limits: QuotaLimits) -> str:
    """The fields one policy layer sets, e.g. "100 credits per day, 3 queued, 1 running"."""
    parts: list[str] = []
    if limits.unlimited:
        parts.append("unlimited credits")
    elif limits.credits is not None:
        parts.append(f"{limits.credits} credits" + (f" per {limits.period}" if limits.period else ""))
    elif limits.unlimited is False:
        parts.append("limited credits")
    if limits.max_queued is not None:
        parts.append(f"{limits.max_queued} queued")
    if limits.max_running is not None:
        parts.append(f"{limits.max_running} running")
    return ", ".join(parts) or "no limits of its own"


def this_window(period: str) -> str:
    """ "today", "this week"…: how a member thinks of the current quota window."""
    return "today" if period == "day" else f"this {period}"


def allowance(usage: Usage) -> str:
    """One line on what the member gets per window, e.g. "60 credits per day, plus 10 granted today"."""
    policy = usage.policy
    if policy.unlimited:
        return f"Unlimited credits per {policy.period}."
    line = f"{policy.credits} credits per {policy.period}"
    if usage.granted > 0:
        line += f", plus {usage.granted} granted {this_window(policy.period)}"
    elif usage.granted < 0:
        line += f", minus {-usage.granted} taken back {this_window(policy.period)}"
    return line + "."


def credits_left(usage: Usage) -> str:
    """E.g. "5 credits left today (resets in 3 hours)"."""
    left = "unlimited credits" if usage.policy.unlimited else f"{usage.left} credits"
    return f"{left} left {this_window(usage.policy.period)} (resets {timestamp(usage.window_end, 'R')})"


_SHOW: dict[str, Callable[[Any], str]] = {
    "model": code,
    "filename": code,
    "name": code,
    "configured": lambda names: ", ".join(code(name) for name in names),
    "options": lambda names: either([code(name) for name in names]),
    "expected": either,
    "durations": durations,
    "aspects": ", ".join,
    "resets_at": lambda epoch: timestamp(epoch, "R"),
    "cost_usd": lambda usd: f"${usd:,.2f}",
    "left_usd": lambda usd: f"${usd:,.2f}",
    "role_id": lambda role_id: f"<@&{role_id}>",
    "state": lambda state: str(state.value),
    "max_pixels": megapixels,
    "size": lambda size: f"{size / 1048576:.1f}",
    "max_bytes": lambda size: f"{size / 1048576:.0f}",
    "low": lambda number: f"{number:,}",
    "high": lambda number: f"{number:,}",
    "current": describe_limits,
    "pattern": code,
    "word": code,
    "language": code,
    "languages": lambda names: ", ".join(code(name) for name in names),
    "channel_id": lambda channel_id: f"<#{channel_id}>",
    "max_usd": lambda usd: f"{usd:,}",
    "allowed": lambda channel_ids: either([f"<#{channel_id}>" for channel_id in channel_ids]),
}
"""How a fact is written, by its field name; anything else is `str()`."""
