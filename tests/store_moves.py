"""Moving a test job to a wanted state through legal moves only (`bot.domain.ALLOWED`), as the worker would."""

from __future__ import annotations

from collections import deque

from bot.domain import ALLOWED, Job, JobState
from bot.store.base import JobStore, Transition


def path(start: JobState, goal: JobState) -> list[JobState]:
    """The shortest run of states after `start` that ends at `goal` (empty if `start` is `goal`)."""
    came_from: dict[JobState, JobState | None] = {start: None}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        for nxt in sorted(ALLOWED[state]):
            if nxt not in came_from:
                came_from[nxt] = state
                todo.append(nxt)
    if goal not in came_from:
        raise ValueError(f"no legal way from {start} to {goal}")
    steps: list[JobState] = []
    at: JobState | None = goal
    while at is not None and at is not start:
        steps.append(at)
        at = came_from[at]
    return steps[::-1]


async def walk(store: JobStore, job: Job, goal: JobState, *, now: float, worker_id: str | None = None) -> Job:
    for state in path(job.state, goal):
        job = await store.transition(job.id, Transition(state, worker_id=worker_id), now=now)
    return job
