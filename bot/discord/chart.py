"""The server stats as a PNG chart: credits per day and provider spend per day, stacked by model.

Drawn with matplotlib on its Agg backend (a raster canvas, no display, no pyplot state shared between calls), so
it works in a thread of a headless bot. matplotlib is imported only when a chart is drawn: it takes a while to
import, and a bot that is never asked for stats should not pay for it at start. Drawing is CPU work: call
`render_chart` through `asyncio.to_thread`.

The PNG carries the numbers it was drawn from as text (`DATA_KEY`): the days, and per model the credits and the
spend of each day, so what the picture shows can be checked against the ledger without reading pixels.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

from bot.jobs.stats import ServerStats

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DATA_KEY = "videobot-stats"
"""The PNG text chunk holding the chart's numbers as JSON."""
FILENAME = "stats.png"
MAX_LEGEND = 8
"""Models named in a legend; the rest are drawn as one "other" (a legend of 30 models hides the bars)."""
OTHER = "other"


def chart_series(stats: ServerStats) -> tuple[list[str], dict[str, list[int]], dict[str, list[float]]]:
    """What the chart draws: the day labels (ISO dates), and per model (the top `MAX_LEGEND`, then "other")
    the credits and the spend of each day."""
    shown, rest = list(stats.models[:MAX_LEGEND]), stats.models[MAX_LEGEND:]
    credits = {m: list(stats.credits[m]) for m in shown}
    spend = {m: list(stats.spend_usd[m]) for m in shown}
    if rest:
        credits[OTHER] = [sum(stats.credits[m][n] for m in rest) for n in range(len(stats.days))]
        spend[OTHER] = [sum(stats.spend_usd[m][n] for m in rest) for n in range(len(stats.days))]
    return [day.isoformat() for day in stats.days], credits, spend


def render_chart(stats: ServerStats) -> bytes:
    """The chart as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, explicitly: no display needed
    from matplotlib.figure import Figure

    days, credits, spend = chart_series(stats)
    figure = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the figure draws on an Agg canvas from now on
    top, bottom = figure.subplots(2, 1, sharex=True)
    _stacked(top, len(days), credits, "Credits used per day")
    _stacked(bottom, len(days), spend, "Provider spend per day (US$, list price)")
    if credits:
        top.legend(loc="upper left", fontsize="small", ncols=min(4, len(credits)), frameon=False)
    step = max(1, len(days) // 10)  # about ten dates along the axis, whatever the span
    ticks = list(range(0, len(days), step))
    bottom.set_xticks(ticks, [days[n][5:] for n in ticks], rotation=45, ha="right")  # MM-DD
    bottom.set_xlabel(f"UTC day, {days[0]} to {days[-1]}")
    span = "Today" if len(days) == 1 else f"Last {len(days)} days"
    figure.suptitle(f"{span}: {stats.total_credits:,} credits, ${stats.total_spend_usd:,.2f}")
    data = {"days": days, "credits": credits, "spend_usd": spend}
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={DATA_KEY: json.dumps(data, separators=(",", ":"))})
    return buffer.getvalue()


def _stacked(axes: Axes, count: int, series: dict[str, list[int]] | dict[str, list[float]], title: str) -> None:
    positions = list(range(count))
    base = [0.0] * count
    for model, values in series.items():
        axes.bar(positions, values, bottom=base, label=model, width=0.8)
        base = [b + v for b, v in zip(base, values, strict=True)]
    axes.set_title(title, loc="left", fontsize="medium")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_xlim(-0.6, count - 0.4)  # every day of the span, those with nothing too
    if not series:  # nothing happened: an empty chart still shows its days
        axes.set_ylim(0, 1)
