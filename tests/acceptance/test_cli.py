"""The installed CLI as a user meets it: demo, check-config, status, inspection, replay."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import logging
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bridge import cli, ledger, model, outbox
from tests.acceptance.test_serve import _cli

NOW = 1_800_000_000.0


def _run(
    *args: str, cwd: Path | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cli(), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
        check=False,
    )


def _call(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI's own entry point run in this process, as the installed script runs it.

    For the long option matrices: a second interpreter's start-up costs about a second a call.
    The logging set-up the CLI installs is undone afterwards (pytest's capture lives there).
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "lance-bridge.toml"
    path.write_text(f'[ledger]\npath = "{tmp_path / "ledger.db"}"\n{extra}', encoding="utf-8")
    return path


def test_demo_runs_the_whole_pipeline_and_says_so() -> None:
    done = _run("demo", "--count", "60", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo: ok" in done.stdout
    assert "webhooks verified by the receiver" in done.stdout


@pytest.mark.parametrize(
    ("crm", "written", "of"),
    # HubSpot's 20 contacts carry LinkedIn URLs, not Lance ids: 16 name one Lance person.
    [("hubspot", "HubSpot", "16 of 16"), ("salesforce", "Salesforce", "20 of 20")],
)
def test_demo_runs_through_each_crm_sandbox(crm: str, written: str, of: str) -> None:
    done = _run("demo", "--crm", crm, "--count", "40", "--quiet")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo: ok" in done.stdout
    assert f"{written} contacts written back" in done.stdout
    assert of in done.stdout
    if crm == "hubspot":
        for line in ("contacts matched", "contacts ambiguous", "searches per contact"):
            assert line in done.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[poll]\nintervl_seconds = 1\n", "poll.intervl_seconds: unknown key"),
        ("[poll]\ninterval_seconds = -1\n", "poll.interval_seconds:"),
        ("[lance\n", "invalid TOML"),
        ('[[connectors]]\nname = "x"\ntype = "carrier-pigeon"\n', "unknown connector type"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_problem(
    tmp_path: Path, content: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content, encoding="utf-8")
    done = _run("check-config", "-c", str(config))
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    done = _run("serve", "-c", str(tmp_path / "nope.toml"))
    assert done.returncode == 2
    assert "nope.toml: no such config file" in done.stderr


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "config" / "lance-bridge.example.toml"
    done = _run("check-config", "-c", str(example))
    assert done.returncode == 0, done.stderr
    assert "config ok" in done.stdout


def test_secrets_from_the_environment_never_print(tmp_path: Path) -> None:
    config = _config(tmp_path)
    secret = "tok-" + uuid.uuid4().hex
    done = subprocess.run(
        [*_cli(), "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        env={"LANCE_BRIDGE_LANCE__TOKEN": secret, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr


def _seed_ledger(path: Path) -> int:
    async def seed() -> int:
        router = outbox.Router([outbox.Route("hook", False, frozenset({"enrichment.failed"}))])
        store = await ledger.open(path, router=router)
        try:
            accepted = await store.accept(
                [model.Task("person", str(uuid.uuid4()), "emails") for _ in range(3)], NOW
            )
            await store.apply([ledger.Change(accepted[0].id, "failed", error="boom")], NOW)
            [delivery] = await store.due_deliveries(NOW, 10)
            await store.record_attempts(
                [ledger.Attempt(delivery.id, "dead", None, "HTTP 410: gone", 410)], NOW
            )
            return delivery.id
        finally:
            await store.close()

    return asyncio.run(seed())


def test_status_and_inspection_read_the_ledger(tmp_path: Path) -> None:
    config = _config(tmp_path)
    delivery_id = _seed_ledger(tmp_path / "ledger.db")

    status = _run("status", "-c", str(config))
    assert status.returncode == 0, status.stderr
    assert "queued" in status.stdout
    assert "oldest in flight" in status.stdout

    listing = _call("enrichments", "list", "--state", "failed", "-c", str(config))
    assert listing.returncode == 0
    assert "boom" in listing.stdout

    shown = _call("enrichments", "show", "1", "-c", str(config))
    assert '"state": "failed"' in shown.stdout
    missing = _call("enrichments", "show", "99", "-c", str(config))
    assert missing.returncode == 1
    assert "no enrichment 99" in missing.stderr

    dead = _call("deliveries", "list", "--state", "dead", "-c", str(config))
    assert "HTTP 410" in dead.stdout
    replay = _call("deliveries", "retry", str(delivery_id), "-c", str(config))
    assert replay.returncode == 0, replay.stderr
    assert "replaying 1 dead deliveries" in replay.stdout
    again = _call("deliveries", "retry", str(delivery_id), "-c", str(config))
    assert again.returncode == 1
    assert "not dead or unknown" in again.stdout


def _seed_aged_ledger(path: Path, now: float) -> dict[str, int]:
    """Enrichments and dead deliveries of different ages (relative to the real clock)."""

    async def seed() -> dict[str, int]:
        router = outbox.Router([outbox.Route("hook", False, frozenset({"enrichment.failed"}))])
        store = await ledger.open(path, router=router)
        try:
            tasks = [model.Task("person", str(uuid.uuid4()), "emails") for _ in range(3)]
            [old] = await store.accept(tasks[:1], now - 3 * 3600)
            young = await store.accept(tasks[1:], now - 600)
            await store.apply([ledger.Change(old.id, "failed", error="old")], now - 3 * 3600)
            await store.apply([ledger.Change(young[0].id, "failed", error="young")], now - 600)
            due = {d.enrichment_id: d.id for d in await store.due_deliveries(now, 10)}
            ids = {"HTTP 410: gone": due[old.id], "HTTP 500": due[young[0].id]}
            for when, reason in ((now - 3 * 3600, "HTTP 410: gone"), (now - 300, "HTTP 500")):
                await store.record_attempts(
                    [ledger.Attempt(ids[reason], "dead", None, reason, 410)], when
                )
            return {
                "old": old.id,
                "young": young[0].id,
                "queued": young[1].id,
                "old_dead": ids["HTTP 410: gone"],
                "young_dead": ids["HTTP 500"],
            }
        finally:
            await store.close()

    return asyncio.run(seed())


def _ids(done: subprocess.CompletedProcess[str]) -> list[int]:
    assert done.returncode == 0, done.stderr
    return [row["id"] for row in json.loads(done.stdout)]


def test_inspection_filters_by_age_and_time_and_prints_json(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    seeded = _seed_aged_ledger(tmp_path / "ledger.db", time.time())

    listing = ("enrichments", "list", "--json", "-c", config)
    assert _ids(_call(*listing, "--older-than", "1h")) == [seeded["old"]]
    assert _ids(_call(*listing, "--newer-than", "30m")) == [seeded["young"], seeded["queued"]]
    assert _ids(_call(*listing, "--older-than", "60", "--newer-than", "2h")) == [
        seeded["young"],
        seeded["queued"],
    ]
    [row] = json.loads(_call(*listing, "--older-than", "1h").stdout)
    assert row["state"] == "failed"
    assert row["error"] == "old"
    assert _ids(_call(*listing, "--older-than", "4h")) == []

    dead = ("deliveries", "list", "--state", "dead", "--json", "-c", config)
    assert _ids(_call(*dead, "--since", "1h")) == [seeded["young_dead"]]
    assert _ids(_call(*dead, "--until", "1h")) == [seeded["old_dead"]]
    four_h_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=4)
    iso = four_h_ago.isoformat(timespec="seconds").replace("+00:00", "Z")
    assert _ids(_call(*dead, "--since", iso, "--until", "2h")) == [seeded["old_dead"]]
    table = _call("deliveries", "list", "--since", "1h", "-c", config)
    assert "HTTP 500" in table.stdout
    assert "HTTP 410" not in table.stdout

    nothing = _call("deliveries", "retry", "--all-dead", "--connector", "other", "-c", config)
    assert nothing.returncode == 0, nothing.stderr
    assert "nothing to replay" in nothing.stdout
    replay = _call("deliveries", "retry", "--all-dead", "--since", "30m", "-c", config)
    assert replay.returncode == 0, replay.stderr
    assert "replaying 1 dead deliveries" in replay.stdout
    assert _ids(_call(*dead)) == [seeded["old_dead"]]
    pending = _call("deliveries", "list", "--state", "pending", "--json", "-c", config)
    assert _ids(pending) == [seeded["young_dead"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("enrichments", "list", "--older-than", "2x"), "argument --older-than: bad duration '2x'"),
        (("enrichments", "list", "--newer-than", "-5"), "argument --newer-than: bad duration"),
        (("enrichments", "list", "--limit", "0"), "argument --limit: must be a whole number"),
        (
            ("enrichments", "list", "--older-than", "2h", "--newer-than", "1h"),
            "--newer-than is shorter than --older-than",
        ),
        (("deliveries", "list", "--since", "yesterday"), "argument --since: bad time 'yesterday'"),
        (("deliveries", "list", "--until", "2026-13-01"), "argument --until: bad time"),
        (("deliveries", "list", "--since", "1h", "--until", "2h"), "--since is later than --until"),
        (("deliveries", "retry", "--since", "1h"), "--since only select with --all-dead"),
        (("deliveries", "retry", "--connector", "hook"), "--connector only select with --all-dead"),
        (("inbound", "list", "--state", "lost"), "argument --state: invalid choice: 'lost'"),
        (("inbound", "list", "--limit", "-1"), "argument --limit: must be a whole number"),
    ],
)
def test_bad_inspection_options_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    _seed_ledger(tmp_path / "ledger.db")
    done = _call(*args, "-c", str(_config(tmp_path)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_status_without_a_ledger_says_where_it_looked(tmp_path: Path) -> None:
    done = _run("status", "-c", str(_config(tmp_path)))
    assert done.returncode == 1
    assert "no ledger here" in done.stderr


def test_python_dash_m_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stdout.startswith("lance-bridge ")


def _seed_inbound(path: Path) -> None:
    async def seed() -> None:
        store = await ledger.open(path)
        try:
            record = model.Target("hubspot", "contacts", "42")
            junk = model.Match("", ("emails",), (record,), problem="hs_linkedin_url: empty")
            key = "linkedin:https://www.linkedin.com/in/ada-l"
            waiting = model.Match(key, ("emails",), (record,))
            events = [
                model.Inbound("e1", match=junk, record=("contacts", "42")),
                model.Inbound("e2", match=waiting, record=("contacts", "43")),
            ]
            await store.receive("hubspot", events, NOW)
            [event] = await store.waiting_matches(NOW, 10)
            candidates = (str(uuid.uuid4()), str(uuid.uuid4()))
            found = ledger.Found(key, "ambiguous", None, candidates, "2 Lance people match")
            await store.settle_matches([(event, found)], NOW)
        finally:
            await store.close()

    asyncio.run(seed())


def test_inbound_list_shows_unmatched_and_ambiguous_records_with_their_reasons(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    _seed_inbound(tmp_path / "ledger.db")

    unmatched = _run("inbound", "list", "--state", "unmatched", "-c", str(config))
    ambiguous = _call("inbound", "list", "--state", "ambiguous", "--json", "-c", str(config))
    bad = _call("inbound", "list", "--state", "lost", "-c", str(config))

    assert unmatched.returncode == 0, unmatched.stderr
    assert "hs_linkedin_url" in unmatched.stdout
    assert "42" in unmatched.stdout
    assert "43" not in unmatched.stdout
    [row] = json.loads(ambiguous.stdout)
    assert (row["objectId"], row["state"], len(row["candidates"])) == ("43", "ambiguous", 2)
    assert row["reason"] == "2 Lance people match"
    assert bad.returncode == 2


def _seed_more_inbound(path: Path) -> None:
    async def seed() -> None:
        store = await ledger.open(path)
        try:
            skipped = [
                model.Inbound(f"s{n}", skipped="no Lance id and no LinkedIn URL") for n in (1, 2)
            ]
            await store.receive("salesforce", skipped, NOW)
            record = model.Target("hook", "", "")
            key = "linkedin:https://www.linkedin.com/in/grace-h"
            waiting = model.Match(key, ("emails",), (record,))
            await store.receive("api", [model.Inbound("api:1", match=waiting)], NOW)
        finally:
            await store.close()

    asyncio.run(seed())


def test_status_counts_inbound_events_by_source_and_state(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    _seed_inbound(tmp_path / "ledger.db")
    _seed_more_inbound(tmp_path / "ledger.db")

    table = _run("status", "-c", config)
    as_json = _call("status", "--json", "-c", config)

    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    header = next(line for line in lines if "salesforce" in line)
    assert [cell.strip() for cell in header.strip("│┃ ").split("┃")] == [
        "state",
        "api",
        "hubspot",
        "salesforce",
    ]
    rows = {
        cells[0]: cells[1:]
        for line in lines
        if (cells := [c.strip() for c in line.strip("│ ").split("│")])[0] in set(model.InboundState)
    }
    assert rows == {
        "accepted": ["0", "0", "0"],
        "lookup": ["0", "0", "0"],
        "skipped": ["0", "0", "2"],
        "matching": ["1", "0", "0"],
        "matched": ["0", "0", "0"],
        "unmatched": ["0", "1", "0"],
        "ambiguous": ["0", "1", "0"],
    }
    assert as_json.returncode == 0, as_json.stderr
    facts = json.loads(as_json.stdout)
    assert facts["inbound"] == {
        "api": dict.fromkeys(model.InboundState, 0) | {"matching": 1},
        "hubspot": dict.fromkeys(model.InboundState, 0) | {"unmatched": 1, "ambiguous": 1},
        "salesforce": dict.fromkeys(model.InboundState, 0) | {"skipped": 2},
    }
    assert facts["enrichments"] == dict.fromkeys(model.EnrichmentState, 0)
    assert facts["lastPollAt"] is None


def test_status_with_no_inbound_event_says_so(tmp_path: Path) -> None:
    _seed_ledger(tmp_path / "ledger.db")
    done = _call("status", "--json", "-c", str(_config(tmp_path)))
    table = _run("status", "-c", str(_config(tmp_path)))

    assert json.loads(done.stdout)["inbound"] == {}
    assert "inbound events: none" in table.stdout
