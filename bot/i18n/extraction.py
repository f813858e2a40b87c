"""Finding the message ids the code uses, with Babel's own Python extractor.

An id is extracted where the code names it: `tr("id", …)` (a text now), `tr.plural("id", n, …)` (a text with
plural forms), `N_("id")` (an id looked up later, such as an error's `message_id`), `Np_("id")` (the same,
with plural forms) and `command_text("id")` (a
command's description or choice name, translated by Discord's client).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from babel.messages.extract import extract_from_dir

ROOT = Path(__file__).resolve().parent.parent.parent
SOURCES = ("bot", "cogs")
KEYWORDS: dict[str, tuple[int, ...] | None] = {
    "tr": None, "N_": None, "command_text": None, "plural": (1, 1), "Np_": (1, 1),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Use:
    message_id: str
    plural: bool
    where: str
    """`path:line` of a use, for the translators' reference and for test failures."""


def uses(root: Path = ROOT) -> Iterator[Use]:
    for source in SOURCES:
        found = extract_from_dir(
            str(root / source), method_map=[("**.py", "python")], keywords=KEYWORDS, comment_tags=()
        )
        for filename, line, message, _comments, _context in found:
            message_id = message[0] if isinstance(message, tuple) else message
            yield Use(str(message_id), isinstance(message, tuple), f"{source}/{filename}:{line}")


def used_ids(root: Path = ROOT) -> dict[str, list[Use]]:
    """Every id the code uses, with where it is used, in the order first met."""
    found: dict[str, list[Use]] = {}
    for use in uses(root):
        found.setdefault(use.message_id, []).append(use)
    return found
