"""``lance-bridge bench``: measured throughput and API economy against DESIGN §9's bars.

Each scenario runs the real parts on loopback; the remote side (the Lance simulator, the
webhook receiver, the load generator) runs in a child process so it does not share the
measured event loop. Each scenario also runs a deliberately naive baseline in the same run —
one request and one commit per enrichment — and reports our/baseline ratios, which stay
comparable on a noisy machine where absolute figures do not; and beside each rate its ceiling,
the bare equivalent (a bare aiohttp handler, one raw SQL statement per batch, a bare client →
server loop) measured in the same run, with our rate as a share of it.

- ``poll``: N enrichments in flight, all finished at Lance: status updates/s through
  poll → ledger, and batch queries issued against the floor ⌈N/200⌉.
- ``ingest``: concurrent single-task triggers for a fixed time: requests/s, p50/p99 latency,
  and the rows durable in the ledger afterwards (must equal the 202s).
- ``deliver``: N webhook events already due in the ledger, drained by the delivery job to the
  signature-verifying sink: events/s, p99 time from due to acknowledged, RSS.
- ``e2e``: N enrichments trigger → simulator → fetch → signed webhook, with the daemon's own
  scheduler: time from Lance having them all to the last delivery, requests per enrichment.
  ``--crm hubspot``: HubSpot-signed webhooks start them and batch updates write them back to the
  HubSpot sandbox; HubSpot requests per 1,000 contact updates against one write per record.
- ``scale``: RSS and poll tick time with 1,000,000 rows in flight.
- ``ui``: every dashboard page's p50/p99 with 1,000,000 rows in the ledger (bar: < 200 ms).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import resource
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

SCENARIOS = ("poll", "ingest", "deliver", "e2e", "scale", "ui")
TABLE_WIDTH = 160


@dataclasses.dataclass(slots=True)
class Result:
    """One scenario's figures and the bars they are held against."""

    scenario: str
    figures: dict[str, float | int | str]
    bars: dict[str, bool]
    # One row per backend and replica count (SQLite first), when the scenario compares them.
    rows: list[dict[str, float | int | str]] = dataclasses.field(default_factory=list)


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MB.

    Linux's ``VmHWM``, which starts afresh in a spawned child; ``ru_maxrss`` would report the
    parent's size at the fork when that was larger.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    [line] = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return round(int(line.split()[1]) / 1024, 1)


async def run(
    scenarios: list[str],
    *,
    count: int | None,
    seconds: float,
    concurrency: int,
    json_path: Path | None,
    crm: str = "webhook",
    ledger_url: str | None = None,
    replicas: int = 1,
) -> int:
    """Run ``scenarios``, print a table per scenario, optionally write JSON; 0 if bars met.

    With ``ledger_url``, the scenarios that compare ledgers (poll, ingest, e2e, scale) also
    run on PostgreSQL, each in a schema of its own; ``replicas`` more processes share it.
    """
    from bridge.bench import deliver, e2e, ingest, poll  # noqa: PLC0415 - they pull in the sims

    # Wide enough for the per-ledger tables when the output is a file or a pipe.
    console = Console(width=max(Console().width, TABLE_WIDTH))
    results = []
    with tempfile.TemporaryDirectory(prefix="lance-bridge-bench-") as folder:
        for name in scenarios:
            console.print(f"bench {name} …")
            where = Path(folder) / name
            where.mkdir()
            if name == "poll":
                results.append(await poll.bench_poll(count or 100_000, where, ledger_url, replicas))
            elif name == "ingest":
                results.append(
                    await ingest.bench_ingest(seconds, concurrency, where, ledger_url, replicas)
                )
            elif name == "deliver":
                results.append(await deliver.bench_deliver(count or 100_000, where))
            elif name == "e2e":
                results.append(
                    await e2e.bench_e2e(count or 100_000, where, crm, ledger_url, replicas)
                )
            elif name == "ui":
                from bridge.bench import ui  # noqa: PLC0415 - as the others, imported when run

                results.append(await ui.bench_ui(count or 1_000_000, where))
            else:
                results.append(await poll.bench_scale(count or 1_000_000, where, ledger_url))
            _print(console, results[-1])
    if json_path is not None:
        text = json.dumps([dataclasses.asdict(r) for r in results], indent=2)
        await asyncio.to_thread(json_path.write_text, text)
    return 0 if all(all(r.bars.values()) for r in results) else 1


def _print(console: Console, result: Result) -> None:
    table = Table(title=f"bench {result.scenario}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.figures.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    for bar, met in result.bars.items():
        table.add_row(f"bar: {bar}", "[green]met[/]" if met else "[red]not met[/]")
    console.print(table)
    if result.rows:
        console.print(_rows_table(result))


# The columns of the per-backend table, in order (each row has them all but ``schema``).
ROW_COLUMNS = (
    "backend",
    "rate_per_s",
    "share_vs_sqlite",
    "ceiling_per_s",
    "share_of_ceiling",
    "api_calls",
    "api_floor",
    "rss_mb",
)


# What else a scenario's per-ledger table shows, after the common columns. ``rate_per_s`` is
# status updates (poll), 202s (ingest), deliveries (e2e), rows accepted while filling (scale).
EXTRA_COLUMNS = {
    "ingest": ("p99_ms", "durable_rows"),
    "e2e": ("total_seconds", "slowest_ceiling", "ideal_seconds"),
    "scale": ("rows", "tick_seconds"),
}


def _rows_table(result: Result) -> Table:
    columns = (*ROW_COLUMNS, *EXTRA_COLUMNS.get(result.scenario, ()))
    table = Table(title=f"bench {result.scenario} by ledger")
    for column in columns:
        table.add_column(column, justify="left" if column == "backend" else "right")
    for row in result.rows:
        table.add_row(*(_cell(row.get(column, "-")) for column in columns))
    return table


def _cell(value: float | int | str) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)
