"""The server stats as a PNG chart: credits per day and provider spend per day, stacked by model.

Drawn with matplotlib on its Agg backend (a raster canvas, no display, no pyplot state shared between calls), so
it works in a thread of a headless bot. matplotlib is imported only when a chart is drawn: it takes a while to
import, and a bot that is never asked for stats should not pay for it at start. Drawing is CPU work: call
`render_chart` through `asyncio.to_thread`.

The PNG carries the numbers it was drawn from as text (`DATA_KEY`): the days, and per model the credits and the
spend of each day, so what the picture shows can be checked against the ledger without reading pixels.

Titles, axis label and legend are in the admin's language when an installed font can draw them: matplotlib's own
DejaVu Sans has Latin, Greek and Cyrillic but no Chinese, Japanese or Korean, and a machine may have no CJK font
(`fonts-noto-cjk` adds one). A language no installed font can draw gets English labels rather than empty boxes;
the embed around the chart is in the admin's language either way.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

from bot.discord.messages import ENGLISH
from bot.discord.messages import credits as credits_text
from bot.i18n import Texts
from bot.jobs.stats import ServerStats

if TYPE_CHECKING:
    from matplotlib.axes import Axes

UPPER_LEFT = 2
"""matplotlib's code for the legend's "upper left" location (a code, not words: nothing here is for members)."""

DATA_KEY = "videobot-stats"
"""The PNG text chunk holding the chart's numbers as JSON."""
FILENAME = "stats.png"
MAX_LEGEND = 8
"""Models named in a legend; the rest are drawn as one "other" (a legend of 30 models hides the bars)."""
OTHER = "other"
"""The key of the rest in the chart's data; its legend says it in the admin's language (`chart.other`)."""


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


@dataclass(frozen=True, slots=True)
class _Labels:
    credits: str
    spend: str
    days: str
    title: str
    other: str

    @classmethod
    def of(cls, stats: ServerStats, days: list[str], tr: Texts) -> _Labels:
        span = tr("chart.span.today") if len(days) == 1 else tr.plural("chart.span.days", len(days))
        return cls(
            credits=tr("chart.credits-title"),
            spend=tr("chart.spend-title"),
            days=tr("chart.days-label", first=days[0], last=days[-1]),
            title=tr("chart.title", span=span, credits=credits_text(tr, stats.total_credits),
                     spend=tr.money(stats.total_spend_usd)),
            other=tr("chart.other"),
        )  # fmt: skip


def render_chart(stats: ServerStats, tr: Texts = ENGLISH) -> bytes:
    """The chart as PNG bytes, labelled in the language of `tr` when a font can draw it, else in English."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg, explicitly: no display needed
    from matplotlib.figure import Figure

    days, credits, spend = chart_series(stats)
    labels = _Labels.of(stats, days, tr)
    fonts = font_families("".join((labels.credits, labels.spend, labels.days, labels.title, labels.other)))
    if fonts is None:
        labels, fonts = _Labels.of(stats, days, ENGLISH), ()
    family = list(fonts) or None  # None: matplotlib's default font
    figure = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the figure draws on an Agg canvas from now on
    top, bottom = figure.subplots(2, 1, sharex=True)
    _stacked(top, len(days), credits, labels.credits, labels.other, family)
    _stacked(bottom, len(days), spend, labels.spend, labels.other, family)
    if credits:
        legend_font = {"size": "small", "family": family}
        top.legend(loc=UPPER_LEFT, prop=legend_font, ncols=min(4, len(credits)), frameon=False)
    step = max(1, len(days) // 10)  # about ten dates along the axis, whatever the span
    ticks = list(range(0, len(days), step))
    bottom.set_xticks(ticks, [days[n][5:] for n in ticks], rotation=45, ha="right")  # MM-DD
    bottom.set_xlabel(labels.days, fontfamily=family)
    figure.suptitle(labels.title, fontfamily=family)
    data = {"days": days, "credits": credits, "spend_usd": spend}
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={DATA_KEY: json.dumps(data, separators=(",", ":"))})
    return buffer.getvalue()


def font_families(text: str) -> tuple[str, ...] | None:
    """The font families that draw every character of `text`: () when matplotlib's default font does, the
    default then an installed font that has the rest (matplotlib falls back along the list), or None when no
    installed font has them all."""
    return _font_families(frozenset(text))


_PLACEHOLDER_FONT = "lastresort"
"""matplotlib ships "Last Resort High-Efficiency" (`LastResortHE-Regular.ttf`), whose glyphs for every character
are boxes naming the character's Unicode block: it draws nothing readable."""


@functools.cache
def _font_families(characters: frozenset[str]) -> tuple[str, ...] | None:
    from matplotlib import font_manager, rcParams

    default = font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"]))
    missing = {ord(c) for c in characters if not c.isspace()} - _glyphs(default)
    if not missing:
        return ()
    for font in font_manager.fontManager.ttflist:
        if PurePath(font.fname).name.lower().startswith(_PLACEHOLDER_FONT):
            continue
        if missing <= _glyphs(font.fname):
            return font_manager.get_font(default).family_name, font.name
    return None


@functools.cache
def _glyphs(path: str) -> frozenset[int]:
    """The characters a font file has glyphs for."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError):  # a font matplotlib lists but cannot open: it draws nothing
        return frozenset()


def _stacked(
    axes: Axes,
    count: int,
    series: dict[str, list[int]] | dict[str, list[float]],
    title: str,
    other: str,
    family: list[str] | None,
) -> None:
    positions = list(range(count))
    base = [0.0] * count
    for model, values in series.items():
        axes.bar(positions, values, bottom=base, label=other if model == OTHER else model, width=0.8)
        base = [b + v for b, v in zip(base, values, strict=True)]
    axes.set_title(title, loc="left", fontsize="medium", fontfamily=family)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_xlim(-0.6, count - 0.4)  # every day of the span, those with nothing too
    if not series:  # nothing happened: an empty chart still shows its days
        axes.set_ylim(0, 1)
