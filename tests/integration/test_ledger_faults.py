"""A ledger that fails underneath: locked by identity, refused when empty, and unavailable
(503, /readyz failing) when deleted, replaced or full, on real SQLite files."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import errors, ledger, model, runtime, scheduler, schemas
from bridge.sim import salesforce as sf
from tests.conftest import BridgeFactory, LedgerFactory, auth, make_settings
from tests.integration import test_salesforce as sf_tests
from tests.integration.test_salesforce import rsa_keys, salesforce  # noqa: F401 - fixtures

# A file deleted, hard-linked, truncated or filled: faults of the SQLite file itself.
pytestmark = pytest.mark.sqlite_only

NOW = 1_800_000_000.0
LANCE_ID = "Lance_Person_Id__c"


def _task() -> model.Task:
    return model.Task("person", str(uuid.uuid4()), "emails")


def _body(n: int = 1) -> dict[str, Any]:
    return {"tasks": [{"entityId": str(uuid.uuid4()), "field": "emails"} for _ in range(n)]}


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


@pytest.mark.parametrize("alias", ["hard link", "symlink", "dotdot"])
async def test_the_lock_follows_the_file_whatever_its_name(
    open_ledger: LedgerFactory, tmp_path: Path, alias: str
) -> None:
    path = tmp_path / "ledger.db"
    store = await open_ledger(path)
    other = tmp_path / "other.db"
    if alias == "hard link":
        os.link(path, other)
    elif alias == "symlink":
        other.symlink_to(path)
    else:
        (tmp_path / "x").mkdir()
        other = tmp_path / "x" / ".." / "ledger.db"
    try:
        with pytest.raises(errors.LedgerLockedError, match=f"pid {os.getpid()}"):
            await open_ledger(other)
    finally:
        await store.close()
    # Released on close: the other name opens now.
    reopened = await open_ledger(other)
    await reopened.close()


async def test_an_empty_existing_file_is_refused_unless_initialized(
    open_ledger: LedgerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.db"
    path.touch()
    with pytest.raises(errors.LedgerError, match=r"empty \(0 bytes\).*--init-ledger"):
        await open_ledger(path)
    with pytest.raises(errors.LedgerError, match="empty"):
        await open_ledger(path, exclusive=False)
    assert path.stat().st_size == 0  # the refusal wrote nothing
    store = await open_ledger(path, initialize=True)
    await store.accept([_task()], NOW)
    await store.close()
    # Once it is a ledger again, it opens as usual.
    store = await open_ledger(path)
    assert len(await store.fetch("SELECT id FROM enrichments")) == 1
    await store.close()


async def test_a_path_with_no_file_still_gets_a_new_ledger(
    open_ledger: LedgerFactory, tmp_path: Path
) -> None:
    store = await open_ledger(tmp_path / "new" / "ledger.db")
    await store.accept([_task()], NOW)
    await store.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_ledger_file_gone_while_serving_answers_503_and_is_not_ready(
    make_bridge: BridgeFactory,
    simulator: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    _, lance_url = simulator
    client = await make_bridge(make_settings(tmp_path, lance_url))
    assert (await client.post("/v1/triggers", json=_body(), headers=auth())).status == 202
    assert (await client.get("/readyz")).status == 200
    path = tmp_path / "ledger.db"
    if how == "deleted":
        path.unlink()
    else:
        with sqlite3.connect(tmp_path / "elsewhere.db") as other:
            other.execute("CREATE TABLE t (x)")
        os.replace(tmp_path / "elsewhere.db", path)
    caplog.set_level(logging.DEBUG)

    response = await client.post("/v1/triggers", json=_body(), headers=auth())
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "ledger_unavailable"
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert schemas.NotReady.model_validate(await ready.json()).status == "ledger_unavailable"
    # Every later write is refused before it is attempted, and the watch job says stop.
    assert (await client.post("/v1/triggers", json=_body(), headers=auth())).status == 503
    store = client.app[runtime.BRIDGE].ledger
    with pytest.raises(errors.LedgerLostError):
        await store.watch()
    [lost] = _records(caplog, "ledger.lost")
    assert lost.levelno == logging.ERROR
    assert f"file was {how}" in lost.getMessage()
    assert "nothing has been accepted since" in lost.getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR][1:]


async def test_the_watch_job_notices_a_deleted_file_without_any_request(
    open_ledger: LedgerFactory, tmp_path: Path
) -> None:
    store = await open_ledger(tmp_path / "ledger.db")
    try:
        assert await store.watch() is None
        (tmp_path / "ledger.db").unlink()
        with pytest.raises(errors.LedgerLostError, match="deleted"):
            await store.watch()
    finally:
        await store.close()


async def _fill(store: ledger.Ledger) -> None:
    """Cap the file at its current size: SQLite then answers SQLITE_FULL, as on a full disk."""
    [(pages,)] = await store.fetch("PRAGMA page_count")
    async with store.db.transaction() as db:
        await db.execute(f"PRAGMA max_page_count = {pages}")


async def test_a_full_ledger_answers_503_fails_readiness_and_recovers(
    make_bridge: BridgeFactory,
    simulator: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, lance_url = simulator
    client = await make_bridge(make_settings(tmp_path, lance_url))
    store = client.app[runtime.BRIDGE].ledger
    await _fill(store)
    caplog.set_level(logging.DEBUG)

    for _ in range(3):
        response = await client.post("/v1/triggers", json=_body(500), headers=auth())
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert (await response.json())["error"]["code"] == "ledger_unavailable"
    assert (await client.get("/readyz")).status == 503
    assert await store.watch() == "database or disk is full"  # still full: stays unready
    [line] = _records(caplog, "ledger.unavailable")
    assert line.levelno == logging.ERROR
    assert "database or disk is full" in line.getMessage()
    assert not any(r.exc_info for r in caplog.records)
    assert await store.fetch("SELECT id FROM enrichments") == []  # nothing half-stored

    async with store.db.transaction() as db:  # space returns
        await db.execute("PRAGMA max_page_count = 1073741823")
    assert await store.watch() is None
    assert (await client.get("/readyz")).status == 200
    assert (await client.post("/v1/triggers", json=_body(500), headers=auth())).status == 202
    assert len(_records(caplog, "ledger.recovered")) == 1


async def test_a_job_on_a_full_ledger_gets_one_translated_error_and_the_process_lives(
    make_bridge: BridgeFactory, simulator: Any, tmp_path: Path
) -> None:
    _, lance_url = simulator
    client = await make_bridge(make_settings(tmp_path, lance_url))
    assert (await client.post("/v1/triggers", json=_body(300), headers=auth())).status == 202
    store = client.app[runtime.BRIDGE].ledger
    await _fill(store)
    jobs = client.app[runtime.BRIDGE].jobs
    assert jobs is not None
    with pytest.raises(errors.LedgerUnavailableError) as raised:
        await jobs.triggerer.run_once()
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)  # the cause chained

    supervisor = scheduler.Supervisor({})
    await supervisor._runner("trigger", jobs.triggerer.run_once)()
    assert not supervisor.failed.is_set()  # skipped the run; the next one tries again


async def test_a_lost_ledger_stops_the_supervised_jobs(
    open_ledger: LedgerFactory, tmp_path: Path
) -> None:
    store = await open_ledger(tmp_path / "ledger.db")
    try:
        supervisor = scheduler.Supervisor({})
        (tmp_path / "ledger.db").unlink()
        await supervisor._runner("ledger", store.watch)()
        assert supervisor.failed.is_set()
        assert isinstance(supervisor.failure, errors.LedgerLostError)
    finally:
        await store.close()


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs): needs root, as CI has; skipped elsewhere."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def _fill_disk(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


async def test_a_really_full_disk_answers_503_and_recovers_when_space_returns(
    small_filesystem: Path,
    make_bridge: BridgeFactory,
    simulator: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, lance_url = simulator
    settings = make_settings(tmp_path, lance_url, ledger={"path": small_filesystem / "l.db"})
    client = await make_bridge(settings)
    assert (await client.post("/v1/triggers", json=_body(), headers=auth())).status == 202
    filler = _fill_disk(small_filesystem)
    caplog.set_level(logging.DEBUG)

    statuses = [
        (await client.post("/v1/triggers", json=_body(500), headers=auth())).status
        for _ in range(5)
    ]
    assert statuses[-1] == 503, statuses
    assert set(statuses) <= {202, 503}  # what fitted in the WAL's last pages was stored
    assert (await client.get("/readyz")).status == 503
    assert len(_records(caplog, "ledger.unavailable")) == 1
    assert not any(r.exc_info for r in caplog.records)

    filler.unlink()  # space returns
    store = client.app[runtime.BRIDGE].ledger
    assert await store.watch() is None
    assert (await client.get("/readyz")).status == 200
    assert (await client.post("/v1/triggers", json=_body(500), headers=auth())).status == 202


async def test_a_crm_hook_on_a_full_ledger_answers_503_so_the_crm_retries(
    make_bridge: BridgeFactory,
    simulator: Any,
    salesforce: tuple[sf.SalesforceSandbox, str],  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    sandbox, sf_url = salesforce
    client = await sf_tests.start(make_bridge, tmp_path, simulator[1], sf_tests.sf_table(sf_url))
    callout = [
        {"recordId": i, "objectType": "Contact", "lanceId": sandbox.record("Contact", i)[LANCE_ID]}
        for i in sf_tests.people(sandbox, 200)
    ]
    await _fill(client.app[runtime.BRIDGE].ledger)
    body = json.dumps(callout).encode()
    response = await client.post(sf_tests.HOOK, data=body, headers=sf_tests.flow_headers())
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "ledger_unavailable"


def _posix_locks(path: Path) -> list[str]:
    st = path.stat()
    identity = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    text = Path("/proc/locks").read_text(encoding="ascii")
    # Each line without its leading ordinal, which moves as other processes' locks come and go.
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if identity in line and " POSIX " in line
    ]


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
async def test_closing_a_second_ledger_on_the_file_keeps_sqlites_own_locks(
    open_ledger: LedgerFactory,
    tmp_path: Path,
) -> None:
    # Closing any descriptor of a file drops the process's POSIX locks on it, SQLite's too
    # (then another process could checkpoint and delete the WAL under the running serve).
    path = tmp_path / "ledger.db"
    serving = await open_ledger(path)
    try:
        await serving.fetch("SELECT count(*) FROM meta")
        held = _posix_locks(path)
        assert held  # WAL mode: each connection holds a shared lock on the database file
        reader = await open_ledger(path, exclusive=False)
        await reader.close()
        with pytest.raises(errors.LedgerLockedError):
            await open_ledger(path)
        assert _posix_locks(path) == held
    finally:
        await serving.close()
