"""What speaking eight languages costs: loading the catalogues, and writing a status line or a refusal.

Prints, per language, the time to load its compiled catalogue (`.mo`) and to compile its `.po` in memory (what a
checkout with an edited `.po` pays once at start), then the time per status line and per refusal in each
language against English. Run: .venv/bin/python bench/i18n.py [--calls N]
"""

from __future__ import annotations

import argparse
import gettext
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.discord.messages import describe
from bot.discord.render import status_text
from bot.domain import Job, JobState, VideoRequest
from bot.errors import QuotaExceeded
from bot.i18n import LANGUAGES, texts_for
from bot.i18n.catalogs import compiled, mo_path


def best_of(runs: int, work: object) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    calls = parser.parse_args().calls
    request = VideoRequest(prompt="a red fox trotting through fresh snow", model="fake/video", duration=5)
    job = Job(id="0" * 32, guild_id=1, user_id=2, channel_id=3, credits=12, state=JobState.QUEUED, request=request,
              created_at=0.0, updated_at=0.0)  # fmt: skip
    refusal = QuotaExceeded(cost=1200, left=35, resets_at=1_800_000_000.0)
    print(f"{'language':8} {'load .mo':>9} {'.po→.mo':>9} {'status line':>12} {'refusal':>9}")
    for language in LANGUAGES:
        data = mo_path(language).read_bytes()
        load = best_of(5, lambda: gettext.GNUTranslations(io.BytesIO(data)))  # noqa: B023
        build = best_of(3, lambda: compiled(language))  # noqa: B023
        tr = texts_for(language)
        status = best_of(3, lambda: [status_text(job, tr, position=3) for _ in range(calls)]) / calls  # noqa: B023
        said = best_of(3, lambda: [describe(refusal, tr) for _ in range(calls)]) / calls  # noqa: B023
        print(f"{language:8} {load * 1e3:7.2f}ms {build * 1e3:7.1f}ms {status * 1e6:10.1f}µs {said * 1e6:7.1f}µs")
    print(f"{calls:,} calls each, best of 3")


if __name__ == "__main__":
    main()
