"""How fast the offline renderer is: a 5 s 1280x720 clip, rendered three times.

Prints seconds per clip and render seconds per second of clip (below 1.0 is faster than real time).
Run: .venv/bin/python bench/render.py [--runs N] [--duration S] [--aspect 16:9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.domain import ASPECTS, VideoRequest
from bot.media import probe
from bot.providers.local_render import render_card

PROMPT = (
    "A red fox trotting through fresh snow at dawn, low sun through pine trees, cinematic, "
    "shallow depth of field, soft pastel light"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--aspect", choices=ASPECTS, default="16:9")
    parser.add_argument("--fps", type=int, default=24)
    args = parser.parse_args()

    print(f"cpus: {os.cpu_count()}  clip: {args.duration} s {args.aspect} at {args.fps} fps")
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            request = VideoRequest(
                prompt=PROMPT,
                model="local/preview",
                duration=args.duration,
                aspect=args.aspect,
                seed=1000 + run,
                negative_prompt="blurry, low quality",
            )
            dest = Path(tmp) / f"run{run}.mp4"
            start = time.perf_counter()
            render_card(request, dest, fps=args.fps)
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            info = probe(dest)
            print(
                f"run {run + 1}: {elapsed:.2f} s/clip  {elapsed / args.duration:.3f} s per clip-second  "
                f"{info.width}x{info.height} {info.frame_count} frames {info.size_bytes / 1e6:.2f} MB"
            )
    mean = statistics.mean(times)
    print(f"mean: {mean:.2f} s/clip  {mean / args.duration:.3f} s per clip-second  (best {min(times):.2f} s)")


if __name__ == "__main__":
    main()
