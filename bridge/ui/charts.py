"""The overview's figures and its charts, drawn on the server as inline SVG (no script).

Counting a 1,000,000-row ledger by state takes longer than a page may, so the overview reads
the ledger's figures (:func:`bridge.ledger_figures.read_ledger`) at most every
:data:`FRESH_S` and, once they are older, answers with the last ones while a fresh read runs
beside it: every page answers at once, and a page shows figures at most one refresh old.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from html import escape

from bridge import ledger, ledger_figures

FRESH_S = 2.0  # the overview re-reads the ledger's figures at most this often
# Charged rows are counted this many ids per read, so a page read waits for one short chunk.
CHARGE_CHUNK_IDS = 10_000
MINUTES = 60  # the charts show the last hour, a bar per minute
WIDTH, HEIGHT, TOP, BOTTOM, LEFT = 720, 150, 16, 22, 44
COLOURS = ("#2f6fd6", "#e08a1e")


class Figures:
    """The last ledger figures the overview read, refreshed beside the requests."""

    def __init__(self) -> None:
        self._charges = ledger_figures.Charges(CHARGE_CHUNK_IDS)  # the metrics' incremental count
        self._last: tuple[float, ledger_figures.LedgerFigures] | None = None
        self._refresh: asyncio.Task[ledger_figures.LedgerFigures] | None = None

    async def get(self, store: ledger.Ledger, now: float) -> ledger_figures.LedgerFigures:
        """The figures: read now the first time, then at most :data:`FRESH_S` old plus one
        read's duration (a stale answer starts the read that replaces it)."""
        if self._last is None:
            return await self._read(store, now)
        read_at, figures = self._last
        if time.monotonic() - read_at >= FRESH_S and self._refresh is None:
            self._refresh = asyncio.create_task(self._read(store, now))
            self._refresh.add_done_callback(self._done)
        return figures

    def _done(self, task: asyncio.Task[ledger_figures.LedgerFigures]) -> None:
        self._refresh = None
        if not task.cancelled():
            task.exception()  # a failed read keeps the last figures; the next page retries

    async def _read(self, store: ledger.Ledger, now: float) -> ledger_figures.LedgerFigures:
        figures = await ledger_figures.read_ledger(store, now, self._charges, {})
        self._last = (time.monotonic(), figures)
        return figures

    async def close(self) -> None:
        """Cancel a read still running (the app is stopping)."""
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: its name and a count per minute."""

    name: str
    counts: Sequence[int]


def last_hour(per_minute: Mapping[int, int], now: float) -> list[int]:
    """The counts of the :data:`MINUTES` minutes up to ``now``'s, oldest first."""
    current = int(now // 60)
    return [per_minute.get(minute, 0) for minute in range(current - MINUTES + 1, current + 1)]


def bar_chart(title: str, series: Sequence[Series], now: float) -> str:
    """An SVG bar chart of ``series`` over the last hour, bars side by side per minute.

    Every bar has a ``<title>`` (its minute and count: a tooltip, and text for screen
    readers); the chart's own ``<title>`` names it and gives the totals. Every text in it is
    escaped here, so the template includes it as it is.
    """
    peak = max([1, *(n for s in series for n in s.counts)])
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - TOP - BOTTOM
    slot = plot_w / MINUTES
    bar = max(1.0, (slot - 1) / max(1, len(series)))
    totals = ", ".join(f"{s.name}: {sum(s.counts):,}" for s in series)
    first_minute = int(now // 60) - MINUTES + 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-labelledby="{_slug(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_slug(title)}">{escape(title)} per minute, last hour ({escape(totals)})'
        "</title>",
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 4}" y2="{TOP + plot_h}"'
        ' stroke="#8a93a3"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end" font-size="11">{peak:,}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 6}" font-size="11">-60 min</text>',
        f'<text x="{WIDTH - 4}" y="{HEIGHT - 6}" text-anchor="end" font-size="11">now</text>',
    ]
    for index, line in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        legend_x = LEFT + 90 + index * 190
        parts.append(
            f'<rect x="{legend_x}" y="{HEIGHT - 15}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{HEIGHT - 6}" font-size="11">{escape(line.name)}'
            "</text>"
        )
        for minute, count in enumerate(line.counts):
            if not count:
                continue
            h = max(1.0, plot_h * count / peak)
            x = LEFT + minute * slot + index * bar
            at = time.strftime("%H:%M UTC", time.gmtime((first_minute + minute) * 60))
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" height="{h:.1f}"'
                f' fill="{colour}"><title>{at}: {count:,} {escape(line.name)}</title></rect>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _slug(title: str) -> str:
    return "chart-" + "".join(c if c.isalnum() else "-" for c in title.lower())


def charts(
    minutes: Mapping[str, Mapping[int, int]], lance: Mapping[int, int], now: float
) -> dict[str, str]:
    """The overview's two charts: throughput, and Lance requests."""
    return {
        "throughput": bar_chart(
            "Throughput",
            [
                Series("enrichments ended", last_hour(minutes.get("enrichments", {}), now)),
                Series("deliveries acknowledged", last_hour(minutes.get("deliveries", {}), now)),
            ],
            now,
        ),
        "lance": bar_chart("Lance requests", [Series("requests", last_hour(lance, now))], now),
    }
