"""What the member is told about a failure, as data: a catalogue id and its facts, stored as one string.

Engine errors say why a job failed without choosing words (`Said`); the front end writes them in the language of
whoever reads the job (for Discord, `bot.discord.messages.reason_text`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.i18n.ids import N_
from bot.i18n.languages import SOURCE_LANGUAGE
from bot.i18n.texts import texts_for

_STORED = re.compile(r"@([a-z0-9][a-z0-9_.-]*) (\{.*\})", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Said:
    """Why a job failed (or a model of an alias could not take it), as data: the catalogue id of the sentence
    (marked with `N_`) and its facts, whole numbers or plain text (a vendor's own reason, which no catalogue
    translates). The front end puts it in words in the language of whoever reads it (for Discord,
    `bot.discord.messages.reason_text`).

    It is stored as one string, `str(said)`: `@<id> <facts as JSON>` (the `jobs.error` column, a fallback's
    reason); `Said.parse` reads it back. Logs show that form: nothing of the reason is lost."""

    message_id: str
    facts: Mapping[str, str | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.facts.items():
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise TypeError(f"fact {name!r} of {self.message_id} is a {type(value).__name__}, not str or int")
        object.__setattr__(self, "facts", dict(self.facts))  # a copy: the caller's dict may change after

    def __hash__(self) -> int:
        return hash((self.message_id, tuple(sorted(self.facts.items()))))

    def __str__(self) -> str:
        return "@" + self.message_id + " " + json.dumps(self.facts, sort_keys=True, ensure_ascii=False)

    @classmethod
    def parse(cls, stored: str | None) -> Said | None:
        """The reason `stored` as `str(said)` wrote it; None for anything else (a reason stored as words before
        reasons were stored as ids, or a vendor's raw text), which is shown as it is."""
        found = _STORED.fullmatch(stored or "")
        if found is None:
            return None
        try:
            facts = json.loads(found.group(2))
        except ValueError:
            return None
        if not isinstance(facts, dict) or not all(
            isinstance(value, str | int) and not isinstance(value, bool) for value in facts.values()
        ):
            return None
        return cls(found.group(1), facts)


def untold(detail: str) -> Said:
    """A failure nobody put in words for the member: its developer's text, shown as it is in every language."""
    return Said(N_("failure.detail"), {"detail": detail})


def vendor_said(reason: str) -> Said:
    """A vendor's own words on why it failed, with nothing of ours around them (no catalogue translates them)."""
    return Said(N_("failure.provider-said"), {"reason": reason})


def in_english(said: Said) -> str:
    """`said` in the English catalogue's words, for the log and the admin (logs stay English): a reason the
    bot wrote itself is written once, in the catalogue, and read from there in every language. Its facts are
    filled as given, so a reason meant for this keeps to facts the front end also shows as given."""
    return texts_for(SOURCE_LANGUAGE)(said.message_id, **said.facts)
