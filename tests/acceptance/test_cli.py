"""The installed CLI as a user meets it: demo, check-config, status, inspection, replay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bridge import ledger, outbox
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
        store = await ledger.Ledger.open(path, router=router)
        try:
            accepted = await store.accept(
                [ledger.Task("person", str(uuid.uuid4()), "emails") for _ in range(3)], NOW
            )
            await store.apply([ledger.Change(accepted[0].id, "failed", error="boom")], NOW)
            [delivery] = await store.due_deliveries(NOW, 10)
            await store.record_attempts(
                [outbox.Attempt(delivery.id, "dead", None, "HTTP 410: gone", 410)], NOW
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

    listing = _run("enrichments", "list", "--state", "failed", "-c", str(config))
    assert listing.returncode == 0
    assert "boom" in listing.stdout

    shown = _run("enrichments", "show", "1", "-c", str(config))
    assert '"state": "failed"' in shown.stdout
    missing = _run("enrichments", "show", "99", "-c", str(config))
    assert missing.returncode == 1
    assert "no enrichment 99" in missing.stderr

    dead = _run("deliveries", "list", "--state", "dead", "-c", str(config))
    assert "HTTP 410" in dead.stdout
    replay = _run("deliveries", "retry", str(delivery_id), "-c", str(config))
    assert replay.returncode == 0, replay.stderr
    assert "replaying 1 dead deliveries" in replay.stdout
    again = _run("deliveries", "retry", str(delivery_id), "-c", str(config))
    assert again.returncode == 1
    assert "not dead or unknown" in again.stdout


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
