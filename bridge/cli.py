"""The ``lance-bridge`` command line.

User mistakes (bad config, a locked ledger, an unknown id) print one line saying what is
wrong and how to fix it, and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import enum
import gc
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from bridge import errors, logs, model
from bridge import settings as settings_mod

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_HELP = "seconds, or a number with s, m, h or d: 90, 30m, 2h, 1d"
MOMENT_HELP = (
    "ISO 8601 (2026-01-15T10:00:00Z; UTC when no offset is given) or a duration ago (30m, 2h)"
)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line naming the command and the problem, then exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``2h`` or ``1d``.

    Raises:
        argparse.ArgumentTypeError: Anything else, with the accepted forms.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use {DURATION_HELP}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def moment(text: str) -> float:
    """Unix seconds from an ISO 8601 time, or from a duration meaning that long ago.

    Raises:
        argparse.ArgumentTypeError: Neither form, with the accepted forms.
    """
    try:
        return time.time() - duration(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad time {text!r}: use {MOMENT_HELP}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _values(states: type[enum.StrEnum]) -> list[str]:
    # Plain strings: argparse names a wrong choice by the repr of each allowed one.
    return [state.value for state in states]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lance-bridge",
        description="Keeps CRMs in sync with Lance enrichments.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> _Parser:
        return _command(commands, name, text)

    serve = command("serve", "run the daemon until SIGTERM/SIGINT, then drain and exit 0")
    serve.add_argument(
        "--init-ledger",
        action="store_true",
        help="start a new, empty ledger in an existing empty (0-byte) ledger file, which is"
        " otherwise refused as a truncated ledger",
    )
    demo = command("demo", "the whole pipeline on this machine with the bundled simulator")
    demo.add_argument("--count", type=int, default=200, help="enrichments to run (default 200)")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up after seconds")
    demo.add_argument("--quiet", action="store_true", help="no live progress, summary only")
    demo.add_argument(
        "--crm",
        choices=("webhook", "hubspot", "salesforce"),
        default="webhook",
        help="where results go: a signed webhook receiver (default), or the HubSpot or"
        " Salesforce sandbox, which then also starts the enrichments",
    )
    check = command("check-config", "validate the config")
    check.add_argument("--online", action="store_true", help="also check Lance and connectors")
    command(
        "migrate",
        "create or upgrade the ledger's schema (PostgreSQL: run before `serve`; safe from"
        " several replicas at once)",
    )
    status = command(
        "status",
        "counts by state, oldest in-flight age, dead deliveries, last poll, inbound events",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object, not tables")
    command("healthcheck", "exit 0 if the daemon of this config answers /healthz, else 1")
    sim = command("simulate", "run the Lance simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8900)
    sim.add_argument("--token", default="sim-token", help="bearer token it accepts")
    sim.add_argument(
        "--completion",
        type=float,
        nargs=2,
        default=(1.0, 5.0),
        metavar=("MIN_S", "MAX_S"),
        help="completion time range",
    )
    bench = command("bench", "measure throughput and API economy against the design's bars")
    bench.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help="poll, ingest, deliver, e2e, scale, ui (default: poll ingest e2e)",
    )
    bench.add_argument(
        "--count",
        type=int,
        help="poll/e2e: enrichments, deliver: events (100,000); scale, ui: rows (1,000,000)",
    )
    bench.add_argument("--seconds", type=float, default=10.0, help="ingest: load duration")
    bench.add_argument("--concurrency", type=int, default=32, help="ingest: clients at once")
    bench.add_argument("--json", type=Path, help="also write the figures to this file")
    bench.add_argument(
        "--ledger",
        metavar="URL",
        help="also run poll, ingest, e2e and scale on this PostgreSQL server, in a schema of"
        " their own that the bench creates and drops (SQLite always runs, as the baseline)",
    )
    bench.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="with --ledger: also run ingest and e2e behind N serve processes, poll with N"
        " pollers (default 1)",
    )
    bench.add_argument(
        "--crm",
        choices=("webhook", "hubspot"),
        default="webhook",
        help="e2e: deliver to a webhook receiver (default) or from/to the HubSpot sandbox",
    )
    _inspection_commands(commands)
    return parser


Commands = argparse._SubParsersAction  # argparse exposes no public name for it


def _command(commands: Commands[_Parser], name: str, text: str) -> _Parser:
    sub = commands.add_parser(name, help=text, description=text)
    _config_option(sub, default=None)
    return sub


def _config_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, default=default, help="config file (lance-bridge.toml)"
    )


def _action(actions: Commands[_Parser], name: str, text: str) -> _Parser:
    # `-c` is accepted after the action too; SUPPRESS keeps a value given before it.
    parser = actions.add_parser(name, help=text, description=text)
    _config_option(parser, default=argparse.SUPPRESS)
    return parser


def _inspection_commands(commands: Commands[_Parser]) -> None:
    enrichments = _command(commands, "enrichments", "inspect enrichments in the ledger")
    sub = enrichments.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _action(sub, "list", "list enrichments")
    listing.add_argument("--state", choices=sorted(_values(model.EnrichmentState)))
    listing.add_argument("--entity", help="only this entity id")
    listing.add_argument(
        "--older-than",
        type=duration,
        metavar="DURATION",
        help=f"only those created at least this long ago ({DURATION_HELP})",
    )
    listing.add_argument(
        "--newer-than",
        type=duration,
        metavar="DURATION",
        help="only those created at most this long ago",
    )
    _list_options(listing)
    show = _action(sub, "show", "one enrichment with its deliveries")
    show.add_argument("id", type=int)
    deliveries = _command(commands, "deliveries", "inspect and replay deliveries")
    sub = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _action(sub, "list", "list deliveries")
    listing.add_argument("--state", choices=_values(model.DeliveryState))
    listing.add_argument("--connector")
    _time_range(listing)
    _list_options(listing)
    retry = _action(sub, "retry", "replay dead deliveries (never re-triggers Lance)")
    retry.add_argument("ids", type=int, nargs="*", help="delivery ids")
    retry.add_argument("--all-dead", action="store_true", help="every dead delivery")
    retry.add_argument("--connector", help="with --all-dead: only this connector's")
    _time_range(retry, "that died (with --all-dead)")
    inbound = _command(commands, "inbound", "inspect CRM events received and what became of them")
    sub = inbound.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _action(sub, "list", "list inbound events, oldest first, with their reasons")
    listing.add_argument("--state", choices=_values(model.InboundState))
    listing.add_argument("--source", help="only this connector's events (api: match tasks)")
    _list_options(listing)


def _list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_positive, default=50, help="at most this many (50)")
    parser.add_argument("--json", action="store_true", help="print a JSON array, not a table")


def _time_range(parser: argparse.ArgumentParser, what: str = "last changed") -> None:
    # Deliveries are placed in time by their last change: for a dead one, when it died.
    parser.add_argument(
        "--since", type=moment, metavar="TIME", help=f"only those {what} at or after TIME"
    )
    parser.add_argument(
        "--until",
        type=moment,
        metavar="TIME",
        help=f"only those {what} at or before TIME; TIME is {MOMENT_HELP}",
    )


def _conflict(args: argparse.Namespace) -> str | None:
    """A combination of options that cannot be meant, or ``None``."""
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since > until:
        return "--since is later than --until: nothing can match"
    older, newer = getattr(args, "older_than", None), getattr(args, "newer_than", None)
    if older is not None and newer is not None and newer < older:
        return "--newer-than is shorter than --older-than: nothing can match"
    if args.command == "bench":
        return _bench_conflict(args)
    if args.command == "deliveries" and args.action == "retry" and not args.all_dead:
        used = [
            flag
            for flag, value in (
                ("--connector", args.connector),
                ("--since", args.since),
                ("--until", args.until),
            )
            if value is not None
        ]
        if used:
            return f"{', '.join(used)} only select with --all-dead"
    return None


def _bench_conflict(args: argparse.Namespace) -> str | None:
    if args.replicas < 1:
        return "--replicas must be at least 1"
    if args.replicas > 1 and not args.ledger:
        return "--replicas needs --ledger postgresql://…: replicas share a PostgreSQL ledger"
    if args.ledger and not args.ledger.startswith(("postgresql://", "postgres://")):
        return "--ledger must be a postgresql:// URL"
    return None


def _version() -> str:
    import bridge  # noqa: PLC0415 - avoids a cycle at import time

    return f"lance-bridge {bridge.__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    conflict = _conflict(args)
    if conflict is not None:
        where = " ".join(filter(None, ("lance-bridge", args.command, getattr(args, "action", ""))))
        parser.exit(EXIT_USAGE, f"{where}: {conflict}\n")
    try:
        return _dispatch(args)
    except errors.BridgeError as exc:
        print(f"lance-bridge {args.command}: {exc.message}", file=sys.stderr)
        # Docker reserves a health check's exit code 2: a broken config is simply unhealthy.
        usage = isinstance(exc, errors.ConfigError) and args.command != "healthcheck"
        return EXIT_USAGE if usage else EXIT_FAILED
    except KeyboardInterrupt:
        return 130


# The cyclic collector's default first threshold (700 allocations) makes it run every few
# rows of a poll tick, and each older-generation pass walks every live record: a fifth of a
# tick's CPU went there. A long-running daemon does better collecting less often.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Collect cycles less often, and never re-examine what start-up created."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _dispatch(args: argparse.Namespace) -> int:
    from bridge import commands  # noqa: PLC0415 - keeps `--help` fast

    if args.command in ("serve", "bench", "demo", "simulate"):
        tune_gc()

    if args.command == "simulate":
        logs.configure("info", "console")
        return asyncio.run(commands.simulate(args))
    if args.command == "bench":
        from bridge import bench  # noqa: PLC0415 - pulls in the simulator

        logs.configure("warning", "console")
        unknown = sorted(set(args.scenarios) - set(bench.SCENARIOS))
        if unknown:
            known = ", ".join(bench.SCENARIOS)
            raise errors.ConfigError(f"unknown scenario {unknown[0]!r} (choose from {known})")
        return asyncio.run(
            bench.run(
                args.scenarios or ["poll", "ingest", "e2e"],
                count=args.count,
                seconds=args.seconds,
                concurrency=args.concurrency,
                json_path=args.json,
                crm=args.crm,
                ledger_url=args.ledger,
                replicas=args.replicas,
            )
        )
    settings = _settings(args)
    logs.configure(settings.log.level, settings.log.format)
    if args.command == "demo":
        from bridge import demo  # noqa: PLC0415 - pulls in the simulator

        return asyncio.run(
            demo.run(args.count, timeout_s=args.timeout, quiet=args.quiet, crm=args.crm)
        )
    runner = {
        "serve": commands.serve,
        "check-config": commands.check_config,
        "status": commands.status,
        "migrate": commands.migrate,
        "enrichments": commands.enrichments,
        "deliveries": commands.deliveries,
        "inbound": commands.inbound,
        "healthcheck": commands.healthcheck,
    }[args.command]
    return asyncio.run(runner(settings, args))


def _settings(args: argparse.Namespace) -> settings_mod.Settings:
    if args.command == "demo":
        return settings_mod.Settings()
    return settings_mod.load(args.config)


if __name__ == "__main__":  # pragma: no cover
    logging.captureWarnings(True)
    raise SystemExit(main())
