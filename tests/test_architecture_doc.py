"""docs/architecture.md shows the state machine the store enforces: its table is `ALLOWED`, move for move."""

from __future__ import annotations

import re
from pathlib import Path

from bot.domain import ALLOWED, JobState

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def documented_moves(text: str) -> dict[JobState, frozenset[JobState]]:
    """The "from | may move to" table under "## The job state machine"."""
    section = text.split("## The job state machine", 1)[1].split("\n## ", 1)[0]
    moves: dict[JobState, frozenset[JobState]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        source = JobState(cells[0].strip("`"))
        assert source not in moves, f"{source} is listed twice"
        moves[source] = frozenset(JobState(name) for name in re.findall(r"`([a-z]+)`", cells[1]))
    return moves


def test_the_documented_state_machine_is_the_enforced_one() -> None:
    assert documented_moves(DOC.read_text(encoding="utf-8")) == {s: frozenset(t) for s, t in ALLOWED.items()}


def test_a_documented_move_the_store_refuses_is_caught() -> None:
    text = DOC.read_text(encoding="utf-8")
    row = "| `queued` | `submitting`, `cancelled` |"
    wrong = text.replace(row, "| `queued` | `submitting`, `cancelled`, `failed` |")
    assert wrong != text
    assert documented_moves(wrong) != {s: frozenset(t) for s, t in ALLOWED.items()}
    missing = text.replace("| `cancelled` | — (final) |\n", "")
    assert JobState.CANCELLED not in documented_moves(missing)
