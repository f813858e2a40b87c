"""Errors carry data, and one Discord-side renderer turns them into words (`bot.discord.messages`).

Every `UserError` has a sentence, every sentence is used, and nothing below `bot/discord/` writes Discord
markup, names a slash command, or raises a refusal with words of its own.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import string
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po

import bot.errors
import cogs.admin  # noqa: F401  (its `AdminOnly` is a `UserError` too)
from bot.discord.messages import ENGLISH, describe, text
from bot.domain import JobState, QuotaLimits
from bot.errors import BadOption, QueueFull, QuotaExceeded, UserError
from bot.i18n import SOURCE_LANGUAGE
from bot.i18n.catalogs import DOMAIN, po_path
from bot.i18n.extraction import used_ids

REPO = Path(__file__).resolve().parents[1]
ENGINE = ("bot/jobs", "bot/store", "bot/providers")
BELOW_DISCORD = (*ENGINE, "bot/domain.py", "bot/errors", "bot/images.py", "bot/text.py")
MARKUP = re.compile(r"<t:|<#|<@|(?<![\w.}/-])(?<!GET )(?<!POST )/(?:video|queue|quota|videoadmin)\b")
"""Discord timestamps, channel/user/role chips, and slash-command names (not URL paths like `{base}/videos` or
ComfyUI's `GET /queue` route)."""
OTHER_IDS = {"server-only", "check-failed", "internal-error"}
"""Sentences of the error handler for errors that are not ours (discord.py's checks, crashes)."""

SAMPLES: dict[str, Any] = {
    "str": "fake/video",
    "int": 7,
    "float": 1_773_187_200.0,
    "tuple[int, ...]": (2, 4, 5, 8),
    "tuple[str, ...]": ("16:9", "1:1"),
    "JobState": JobState.DELIVERED,
    "QuotaLimits": QuotaLimits(credits=60, period="day", max_queued=3, max_running=1),
}
"""A value of each field type an error uses, to render every error; a new field type must be added here."""


def user_errors() -> list[type[UserError]]:
    found: list[type[UserError]] = []
    pending: list[type[UserError]] = [UserError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def sample(cls: type[UserError]) -> UserError:
    if not dataclasses.is_dataclass(cls):
        return cls()
    missing = [f"{f.name}: {f.type}" for f in dataclasses.fields(cls) if f.type not in SAMPLES]
    assert not missing, f"add a sample value for {missing} of {cls.__name__}"
    return cls(**{f.name: SAMPLES[str(f.type)] for f in dataclasses.fields(cls)})


def english_ids() -> list[str]:
    """Every id of the English catalogue (the source language: each text the bot says has one)."""
    with po_path(SOURCE_LANGUAGE).open("rb") as source:
        found = read_po(source, locale=SOURCE_LANGUAGE, domain=DOMAIN)
    return [str(m.id[0] if isinstance(m.id, tuple) else m.id) for m in found if m.id]  # a plural's id: its first


def english(message_id: str) -> str:
    """The English template of an id (of a text with plural forms, all its forms)."""
    with po_path(SOURCE_LANGUAGE).open("rb") as source:
        found = read_po(source, locale=SOURCE_LANGUAGE, domain=DOMAIN).get(message_id)
    assert found is not None and found.string, message_id
    return found.string if isinstance(found.string, str) else "\n".join(found.string)


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("cls", user_errors(), ids=lambda cls: cls.__name__)
def test_every_user_error_has_a_sentence(cls: type[UserError]) -> None:
    assert ENGLISH.has(cls.message_id), f"{cls.__name__}: no sentence for {cls.message_id!r}"
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    unknown = placeholders(english(cls.message_id)) - names - {
        "max_prompt_chars", "max_negative_prompt_chars", "max_seed", "all_aspects",
    }  # fmt: skip
    if cls is not BadOption:  # its refined sentences are checked below
        assert not unknown, f"{cls.__name__}: the sentence uses {unknown}, which the error does not carry"
    error = sample(cls)
    said = describe(error)
    assert said and "{" not in said and "}" not in said and "None" not in said, said
    assert said != str(error), f"{cls.__name__}: the member reads the developer message"


def test_each_error_class_has_its_own_message_id() -> None:
    own = [cls for cls in user_errors() if cls.__module__ == bot.errors.__name__]
    assert all("message_id" in vars(cls) for cls in own), [c.__name__ for c in own if "message_id" not in vars(c)]
    ids = [cls.message_id for cls in own]
    assert len(ids) == len(set(ids)), "two errors share a sentence id"


def test_every_sentence_is_used() -> None:
    used = {cls.message_id for cls in user_errors()} | OTHER_IDS | set(used_ids())
    stale = {key for key in english_ids() if key not in used and not key.startswith(f"{BadOption.message_id}.")}
    assert not stale, f"sentences nothing says: {stale}"


def test_the_facts_are_written_the_discord_way() -> None:
    said = describe(QuotaExceeded(cost=5, left=3, resets_at=1_773_187_200.0))
    assert said == (
        "This video costs 5 credits but you have 3 left; your credits refill <t:1773187200:R>. "
        "Try a shorter duration or a cheaper model."
    )
    model_with_backtick = bot.errors.UnknownModel("evil/`x`")
    assert describe(model_with_backtick).startswith("Unknown model `evil/'x'`."), "a backtick cannot end the span"
    assert (
        text(ENGLISH, "internal-error", reference="beef")
        == "Sorry, something went wrong on our side. Reference: `beef`."
    )


def test_bad_options_get_their_own_sentence_or_the_validators() -> None:
    assert describe(BadOption("seed", "less_than_equal", "Input should be ≤ 2147483647")) == (
        "`seed`: use a whole number from 0 to 2,147,483,647."
    )
    assert describe(BadOption("model", "string_pattern_mismatch", "String should match pattern")) == (
        "`model`: String should match pattern"
    )


def engine_files(roots: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        path = REPO / root
        assert path.exists(), f"{root} moved: update the list"
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".py", ".sql")]
    assert files
    return sorted(files)


def test_no_discord_markup_or_command_names_below_the_discord_layer() -> None:
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in engine_files(ENGINE)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if MARKUP.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_markup_check_bites() -> None:
    for line in ('f"refill <t:{at}:R>"', '"see /queue"', '"`/video model:`"', '"<#1>"', '"<@&1>"', "/videoadmin"):
        assert MARKUP.search(line), line
    for line in ('f"{base}/videos"', '"https://queue.fal.run"', '"v1/quota/x"', '"a video queue"'):
        assert not MARKUP.search(line), line


def worded_refusals(source: str, names: set[str]) -> list[int]:
    """Lines of `raise SomeUserError("a sentence")` (or an f-string): words where only facts belong."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        func = node.exc.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in names and any(_is_text(arg) for arg in node.exc.args):
            lines.append(node.lineno)
    return lines


def test_refusals_below_the_discord_layer_carry_no_words() -> None:
    names = {cls.__name__ for cls in user_errors()}
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for path in engine_files(BELOW_DISCORD)
        if path.suffix == ".py"
        for line in worded_refusals(path.read_text(encoding="utf-8"), names)
    ]
    assert not found, found
    bites = 'raise QueueFull("You already have 3")\nraise errors.Blocked(f"no {x}")\nraise QueueFull(3, 3)'
    assert worded_refusals(bites, names) == [1, 2]


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def test_counted_sentences_take_the_form_of_their_number() -> None:
    assert "have 1 video waiting" in describe(QueueFull(queued=1, max_queued=1))
    assert "have 3 videos waiting" in describe(QueueFull(queued=3, max_queued=3))
    assert "costs 1 credit but" in describe(QuotaExceeded(cost=1, left=0, resets_at=0.0))
    assert "costs 2 credits but" in describe(QuotaExceeded(cost=2, left=0, resets_at=0.0))
