"""The ``lance-bridge`` command line.

User mistakes (bad config, a locked ledger, an unknown id) print one line saying what is
wrong and how to fix it, and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import errors, ledger, logs
from bridge import settings as settings_mod

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lance-bridge",
        description="Keeps CRMs in sync with Lance enrichments.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return _command(commands, name, text)

    command("serve", "run the daemon until SIGTERM/SIGINT, then drain and exit 0")
    demo = command("demo", "the whole pipeline on this machine with the bundled simulator")
    demo.add_argument("--count", type=int, default=200, help="enrichments to run (default 200)")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up after seconds")
    demo.add_argument("--quiet", action="store_true", help="no live progress, summary only")
    check = command("check-config", "validate the config")
    check.add_argument("--online", action="store_true", help="also check Lance and connectors")
    command("status", "counts by state, oldest in-flight age, dead deliveries, last poll")
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
        choices=("poll", "ingest"),
        default=[],
        metavar="SCENARIO",
        help="poll, ingest (default: all)",
    )
    bench.add_argument("--count", type=int, default=100_000, help="poll: enrichments in flight")
    bench.add_argument("--seconds", type=float, default=10.0, help="ingest: load duration")
    bench.add_argument("--concurrency", type=int, default=32, help="ingest: clients at once")
    bench.add_argument("--json", type=Path, help="also write the figures to this file")
    _inspection_commands(commands)
    return parser


Commands = argparse._SubParsersAction  # argparse exposes no public name for it


def _command(
    commands: Commands[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=text, description=text)
    _config_option(sub, default=None)
    return sub


def _config_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, default=default, help="config file (lance-bridge.toml)"
    )


def _action(
    actions: Commands[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    # `-c` is accepted after the action too; SUPPRESS keeps a value given before it.
    parser = actions.add_parser(name, help=text, description=text)
    _config_option(parser, default=argparse.SUPPRESS)
    return parser


def _inspection_commands(commands: Commands[argparse.ArgumentParser]) -> None:
    enrichments = _command(commands, "enrichments", "inspect enrichments in the ledger")
    sub = enrichments.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _action(sub, "list", "list enrichments")
    listing.add_argument("--state", choices=sorted((*ledger.IN_FLIGHT, *ledger.TERMINAL)))
    listing.add_argument("--entity", help="only this entity id")
    listing.add_argument("--limit", type=int, default=50)
    show = _action(sub, "show", "one enrichment with its deliveries")
    show.add_argument("id", type=int)
    deliveries = _command(commands, "deliveries", "inspect and replay deliveries")
    sub = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _action(sub, "list", "list deliveries")
    listing.add_argument("--state", choices=("pending", "delivered", "dead"))
    listing.add_argument("--connector")
    listing.add_argument("--limit", type=int, default=50)
    retry = _action(sub, "retry", "replay dead deliveries (never re-triggers Lance)")
    retry.add_argument("ids", type=int, nargs="*", help="delivery ids")
    retry.add_argument("--all-dead", action="store_true", help="every dead delivery")
    retry.add_argument("--connector", help="with --all-dead: only this connector's")


def _version() -> str:
    import bridge  # noqa: PLC0415 - avoids a cycle at import time

    return f"lance-bridge {bridge.__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except errors.BridgeError as exc:
        print(f"lance-bridge {args.command}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, errors.ConfigError) else EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from bridge import commands  # noqa: PLC0415 - keeps `--help` fast

    if args.command == "simulate":
        logs.configure("info", "console")
        return asyncio.run(commands.simulate(args))
    if args.command == "bench":
        from bridge import bench  # noqa: PLC0415 - pulls in the simulator

        logs.configure("warning", "console")
        return asyncio.run(
            bench.run(
                args.scenarios or ["poll", "ingest"],
                count=args.count,
                seconds=args.seconds,
                concurrency=args.concurrency,
                json_path=args.json,
            )
        )
    settings = _settings(args)
    logs.configure(settings.log.level, settings.log.format)
    if args.command == "demo":
        from bridge import demo  # noqa: PLC0415 - pulls in the simulator

        return asyncio.run(demo.run(args.count, timeout_s=args.timeout, quiet=args.quiet))
    runner = {
        "serve": commands.serve,
        "check-config": commands.check_config,
        "status": commands.status,
        "enrichments": commands.enrichments,
        "deliveries": commands.deliveries,
    }[args.command]
    return asyncio.run(runner(settings, args))


def _settings(args: argparse.Namespace) -> settings_mod.Settings:
    if args.command == "demo":
        return settings_mod.Settings()
    return settings_mod.load(args.config)


if __name__ == "__main__":  # pragma: no cover
    logging.captureWarnings(True)
    raise SystemExit(main())
