"""The PostgreSQL ledger on a real server: schema versions, migrate, claims, and the errors an
operator meets (wrong URL, unreachable server, wrong password, server gone, newer schema)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from bridge import errors, ledger, model, runtime
from bridge import settings as settings_mod
from bridge.ledger import postgres_db
from tests import pg
from tests.acceptance.test_serve import _cli
from tests.conftest import BridgeFactory, auth, make_settings

NOW = 1_800_000_000.0
PASSWORD = "pw-8c1e0f-never-logged"


def _config(url: str, **extra: object) -> settings_mod.LedgerSettings:
    return settings_mod.LedgerSettings(url=SecretStr(url), **extra)  # type: ignore[arg-type]


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """An empty schema of its own on the test server."""
    async with pg.schema() as found:
        yield found


@pytest.fixture
async def migrated(url: str) -> str:
    await postgres_db.migrate(_config(url))
    return url


def _task() -> model.Task:
    return model.Task("person", str(uuid.uuid4()), "emails")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _refusing_server() -> Iterator[int]:
    """A server speaking just enough of the PostgreSQL protocol to refuse every password."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(10)

    def refuse() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    length = struct.unpack("!I", conn.recv(4))[0]
                    body = conn.recv(length - 4)
                    if struct.unpack("!I", body[:4])[0] in (80877103, 80877104):  # SSL/GSS
                        conn.sendall(b"N")
                        length = struct.unpack("!I", conn.recv(4))[0]
                        conn.recv(length - 4)
                    fields = b"".join(
                        code + text + b"\0"
                        for code, text in (
                            (b"S", b"FATAL"),
                            (b"C", b"28P01"),
                            (b"M", b'password authentication failed for user "bridge"'),
                        )
                    )
                    conn.sendall(b"E" + struct.pack("!I", len(fields) + 5) + fields + b"\0")

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


async def test_an_empty_database_is_refused_until_migrate_runs(url: str) -> None:
    with pytest.raises(errors.LedgerError, match=r"run `lance-bridge migrate -c FILE` first"):
        await ledger.open(_config(url))

    before, after = await postgres_db.migrate(_config(url))

    assert (before, after) == (0, postgres_db.LATEST)
    store = await ledger.open(_config(url))
    assert store.problem is None
    await store.close()


async def test_a_schema_newer_than_the_code_is_refused(migrated: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg.URL, autocommit=True) as admin:
        schema = migrated.rsplit("%3D", 1)[1]
        await admin.execute(f'INSERT INTO "{schema}".ledger_schema (version) VALUES (999)')

    with pytest.raises(errors.LedgerTooNewError, match=r"999 is newer.*upgrade lance-bridge"):
        await ledger.open(_config(migrated))
    with pytest.raises(errors.LedgerTooNewError):
        await postgres_db.migrate(_config(migrated))


async def test_migrate_run_by_several_replicas_at_once_builds_one_schema(url: str) -> None:
    results = await asyncio.gather(*(postgres_db.migrate(_config(url)) for _ in range(4)))

    # The advisory lock let one apply the migrations; the others found them applied.
    assert sorted(results) == [(0, postgres_db.LATEST)] + [(postgres_db.LATEST,) * 2] * 3
    store = await ledger.open(_config(url))
    assert await store.accept([_task()], NOW)
    await store.close()


async def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    config = _config(f"postgresql://bridge:{PASSWORD}@127.0.0.1:{_closed_port()}/ledger")

    with pytest.raises(errors.LedgerUnavailableError) as raised:
        await ledger.open(config)

    message = raised.value.message
    assert "Connection refused" in message
    assert message.startswith("postgresql://bridge@127.0.0.1:")
    assert "\n" not in message
    assert PASSWORD not in message + repr(config) + repr(raised.value)


async def test_a_wrong_password_is_one_line_without_the_password() -> None:
    with _refusing_server() as port:
        config = _config(f"postgresql://bridge:{PASSWORD}@127.0.0.1:{port}/ledger?sslmode=disable")
        with pytest.raises(errors.LedgerUnavailableError) as raised:
            await ledger.open(config)

    assert "password authentication failed" in raised.value.message
    assert "\n" not in raised.value.message
    assert PASSWORD not in raised.value.message


def test_a_url_that_is_not_postgresql_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="must start with postgresql://") as raised:
        _config(f"mysql://bridge:{PASSWORD}@db/ledger")
    assert PASSWORD not in str(raised.value)


async def test_a_malformed_url_is_a_config_error() -> None:
    for bad in ("postgresql://bridge@db:port/ledger", "postgresql://bridge@db/ledger?bogus=1"):
        with pytest.raises(errors.ConfigError, match=r"ledger\.url"):
            await ledger.open(_config(bad))


async def test_the_password_file_supplies_the_password(tmp_path: Path, migrated: str) -> None:
    secret = tmp_path / "pgpass"
    secret.write_text("anything\n")  # the test server trusts; the file must still be read
    store = await ledger.open(_config(migrated, password_file=str(secret)))
    await store.close()

    missing = _config(migrated, password_file=str(tmp_path / "absent"))
    with pytest.raises(errors.ConfigError, match=r"ledger\.password_file .*absent"):
        await ledger.open(missing)


async def test_a_server_gone_mid_run_is_unavailable_then_recovers(
    migrated: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"lb_{uuid.uuid4().hex[:12]}"
    store = await ledger.open(_config(f"{migrated}&application_name={name}"))
    try:
        await store.accept([_task()], NOW)
        async with await psycopg.AsyncConnection.connect(pg.URL, autocommit=True) as admin:
            # Every session of the ledger's pool ends, as when the server restarts.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            )
        with (
            caplog.at_level(logging.ERROR, logger="bridge.ledger"),
            pytest.raises(errors.LedgerUnavailableError),
        ):
            await store.accept([_task()], NOW)
        assert store.problem is not None
        assert [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]

        # The pool replaces the lost sessions: the watch job's round trip clears the problem.
        assert await store.watch() is None
        assert store.problem is None
        assert await store.accept([_task()], NOW)
    finally:
        await store.close()


async def test_two_replicas_claiming_due_rows_get_disjoint_sets(migrated: str) -> None:
    first = await ledger.open(_config(migrated))
    second = await ledger.open(_config(migrated))
    try:
        tracked = [model.Task("person", str(uuid.uuid4()), "emails", "track") for _ in range(10)]
        await first.accept(tracked, NOW)

        mine = await first.due_for_poll(NOW + 1, limit=6)
        theirs = await second.due_for_poll(NOW + 1, limit=100)

        assert len(mine) == 6
        assert len(theirs) == 4
        assert {r.id for r in mine}.isdisjoint({r.id for r in theirs})
        # While the claims last only their holder gets those rows again; once written they
        # are anyone's.
        again = await second.due_for_poll(NOW + 2, limit=100)
        assert {r.id for r in again} == {r.id for r in theirs}
        await first.apply(
            [ledger.Change(r.id, "pending", next_poll_at=NOW + 3) for r in mine], NOW + 2
        )
        assert len(await second.due_for_poll(NOW + 4, limit=100)) == 10
    finally:
        await first.close()
        await second.close()


async def test_an_expired_claim_comes_back_and_its_late_write_is_refused(migrated: str) -> None:
    first = await ledger.open(_config(migrated))
    second = await ledger.open(_config(migrated))
    try:
        await first.accept([model.Task("person", str(uuid.uuid4()), "emails", "track")], NOW)
        [row] = await first.due_for_poll(NOW + 1, limit=10)

        # The first replica stalls past its lease: the row is handed to the second.
        later = NOW + 1 + 61
        [again] = await second.due_for_poll(later, limit=10)
        assert again.id == row.id

        # The first's late write is fenced off; the holder's write lands.
        await first.apply([ledger.Change(row.id, "failed", error="late")], later)
        await second.apply([ledger.Change(row.id, "pending", next_poll_at=later + 5)], later)
        [found] = (await second.enrichments([row.id])).values()
        assert (found["state"], found["error"], found["polls"]) == ("pending", None, 1)
    finally:
        await first.close()
        await second.close()


async def test_a_claim_rewrites_rows_in_place_and_a_fenced_terminal_write_emits_nothing(
    migrated: str,
) -> None:
    first = await ledger.open(_config(migrated))
    second = await ledger.open(_config(migrated))
    try:
        crm = model.Target("crm", "contacts", "7")
        tasks = [
            model.Task("person", str(uuid.uuid4()), "emails", "track", (crm,)) for _ in range(600)
        ]
        await first.accept(tasks, NOW)
        page = "SELECT id, (ctid::text::point)[0] FROM enrichments ORDER BY id"
        before = await first.fetch(page)
        assert len({r[1] for r in before}) > 4  # several full pages

        rows = await first.due_for_poll(NOW + 1, limit=1000)
        # The claim changes no indexed column and the pages kept room for it: most new row
        # versions stay on their page (heap-only), where a full page would move every one.
        after = dict(await first.fetch(page))
        assert sum(after[i] == p for i, p in before) >= 0.75 * len(before)

        # Once the lease ran out and the second replica holds a row, the first's terminal
        # write is refused, and so is its event.
        later = NOW + 1 + 61
        [taken] = await second.due_for_poll(later, limit=1)
        await first.apply([ledger.Change(taken.id, "failed", error="late")], later)
        assert await first.fetch("SELECT * FROM deliveries") == []
        mine = next(row.id for row in rows if row.id != taken.id)
        await first.apply([ledger.Change(mine, "failed", error="down")], later)
        events = await first.fetch("SELECT enrichment_id, event_type FROM deliveries")
        assert [tuple(e) for e in events] == [(mine, "enrichment.failed")]
    finally:
        await first.close()
        await second.close()


async def test_two_replicas_triggering_claim_disjoint_queued_rows(migrated: str) -> None:
    first = await ledger.open(_config(migrated))
    second = await ledger.open(_config(migrated))
    try:
        await first.accept([_task() for _ in range(5)], NOW)

        mine = [row.id for rows in (await first.queued(3)).values() for row in rows]
        theirs = [row.id for rows in (await second.queued(100)).values() for row in rows]

        assert (len(mine), len(theirs)) == (3, 2)
        assert set(mine).isdisjoint(theirs)
    finally:
        await first.close()
        await second.close()


async def test_replicas_accepting_the_same_task_at_once_create_one_row(migrated: str) -> None:
    stores = [await ledger.open(_config(migrated)) for _ in range(3)]
    try:
        task = _task()
        results = await asyncio.gather(*(s.accept([task], NOW) for s in stores))

        assert len({accepted.id for [accepted] in results}) == 1
        assert sum(accepted.created for [accepted] in results) == 1
    finally:
        for store in stores:
            await store.close()


def test_migrate_and_status_through_the_cli(migrated: str, tmp_path: Path) -> None:
    config = tmp_path / "lance-bridge.toml"
    config.write_text("[ledger]\n")
    env = {"LANCE_BRIDGE_LEDGER__URL": migrated, "PATH": "/usr/bin:/bin"}

    done = subprocess.run(
        [*_cli(), "migrate", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"schema version {postgres_db.LATEST}, up to date" in done.stdout

    status = subprocess.run(
        [*_cli(), "status", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr


async def test_a_server_gone_while_serving_answers_503_and_readyz_fails_until_it_returns(
    make_bridge: BridgeFactory, simulator: Any, tmp_path: Path, migrated: str
) -> None:
    _, lance_url = simulator
    name = f"lb_{uuid.uuid4().hex[:12]}"
    settings = make_settings(
        tmp_path, lance_url, ledger={"url": f"{migrated}&application_name={name}"}
    )
    client = await make_bridge(settings)
    body = {"tasks": [{"entityId": str(uuid.uuid4()), "field": "emails"}]}
    assert (await client.post("/v1/triggers", json=body, headers=auth())).status == 202
    store = client.app[runtime.BRIDGE].ledger

    async with await psycopg.AsyncConnection.connect(pg.URL, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        )
    response = await client.post("/v1/triggers", json=body, headers=auth())
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "ledger_unavailable"
    assert (await client.get("/readyz")).status == 503

    assert await store.watch() is None  # the server answers again: the watch job recovers
    assert (await client.get("/readyz")).status == 200
    assert (await client.post("/v1/triggers", json=body, headers=auth())).status == 202


def _matching(n: int) -> model.Inbound:
    record = model.Target("crm", "contacts", str(n))
    match = model.Match(f"linkedin:https://www.linkedin.com/in/p{n}", ("emails",), (record,), True)
    return model.Inbound(f"ev{n}", match=match, record=("contacts", str(n)))


async def test_two_replicas_searching_claim_disjoint_events_and_late_settlements_are_fenced(
    migrated: str,
) -> None:
    first = await ledger.open(_config(migrated))
    second = await ledger.open(_config(migrated))
    try:
        await first.receive("crm", [_matching(n) for n in range(5)], NOW)

        mine = await first.waiting_matches(NOW, 3)
        theirs = await second.waiting_matches(NOW, 100)
        assert (len(mine), len(theirs)) == (3, 2)
        assert {w.key for w in mine}.isdisjoint({w.key for w in theirs})

        # The first stalls past its lease: its events go to the second, and its late
        # settlement changes nothing (no tasks, no write-backs).
        later = NOW + 61
        taken = await second.waiting_matches(later, 100)
        assert {w.key for w in taken} == {w.key for w in mine + theirs}
        person = str(uuid.uuid4())
        late = await first.settle_matches(
            [(w, ledger.Found(w.match.key, "matched", person, (person,))) for w in mine], later
        )
        assert (late.events, late.accepted) == (0, ())
        assert await first.due_write_backs(later, 100) == []
        done = await second.settle_matches(
            [(w, ledger.Found(w.match.key, "matched", person, (person,))) for w in taken], later
        )
        assert done.events == 5
        writes = await second.due_write_backs(later, 2)
        assert len(writes) == 2
        assert len(await first.due_write_backs(later, 100)) == 3
    finally:
        await first.close()
        await second.close()


class _Proxy:
    """A TCP proxy to the test server that can be cut (every session dies, new ones are
    refused) and restored on the same port: a server that goes away for a while."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _closed_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def _server_address() -> tuple[str, int]:
    host, _, port = pg.URL.split("@", 1)[1].split("/", 1)[0].partition(":")
    return host, int(port or 5432)


def _through(url: str, port: int) -> str:
    """``url`` (the test server's, with its schema) through the proxy on ``port``."""
    host = pg.URL.split("@", 1)[1].split("/", 1)[0]
    return url.replace(f"@{host}/", f"@127.0.0.1:{port}/", 1)


async def test_a_server_away_for_a_while_refuses_writers_then_recovers_and_loses_nothing(
    make_bridge: BridgeFactory, simulator: Any, tmp_path: Path, migrated: str
) -> None:
    _, lance_url = simulator
    proxy = _Proxy(_server_address())
    await proxy.open()
    settings = make_settings(tmp_path, lance_url, ledger={"url": _through(migrated, proxy.port)})
    client = await make_bridge(settings)
    store = client.app[runtime.BRIDGE].ledger

    def body() -> dict[str, Any]:
        return {"tasks": [{"entityId": str(uuid.uuid4()), "field": "emails"}]}

    before = body()
    assert (await client.post("/v1/triggers", json=before, headers=auth())).status == 202

    await proxy.cut()
    response = await client.post("/v1/triggers", json=body(), headers=auth())
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "ledger_unavailable"
    readyz = await client.get("/readyz")
    assert readyz.status == 503
    assert "\n" not in (await readyz.json())["detail"]
    assert await store.watch() is not None  # still away: the watch job keeps /readyz failing
    assert (await client.get("/readyz")).status == 503

    await proxy.open()  # the server is back
    assert await store.watch() is None
    assert (await client.get("/readyz")).status == 200
    after = body()
    assert (await client.post("/v1/triggers", json=after, headers=auth())).status == 202
    await proxy.cut()

    # Straight to the server: what got a 202 is stored, what got a 503 is not.
    async with await psycopg.AsyncConnection.connect(migrated) as direct:
        cursor = await direct.execute("SELECT entity_id FROM enrichments")
        stored = {str(row[0]) for row in await cursor.fetchall()}
    assert stored == {before["tasks"][0]["entityId"], after["tasks"][0]["entityId"]}


@pytest.mark.parametrize(
    "problem", ["unknown role", "unknown database", "unreachable", "newer schema"]
)
def test_serve_meets_a_bad_ledger_with_one_line_and_exit_1(
    problem: str, migrated: str, tmp_path: Path
) -> None:
    host = pg.URL.split("@", 1)[1].split("/", 1)[0]
    urls = {
        "unknown role": f"postgresql://nobody_{uuid.uuid4().hex[:8]}:{PASSWORD}@{host}/postgres",
        "unknown database": f"postgresql://postgres:{PASSWORD}@{host}/no_{uuid.uuid4().hex[:8]}",
        "unreachable": f"postgresql://bridge:{PASSWORD}@127.0.0.1:{_closed_port()}/ledger",
        "newer schema": migrated,
    }
    expected = {
        "unknown role": "does not exist",
        "unknown database": "does not exist",
        "unreachable": "Connection refused",
        "newer schema": "upgrade lance-bridge",
    }
    if problem == "newer schema":
        schema = migrated.rsplit("%3D", 1)[1]
        with psycopg.connect(pg.URL, autocommit=True) as admin:
            admin.execute(f'INSERT INTO "{schema}".ledger_schema (version) VALUES (999)')
    config = tmp_path / "lance-bridge.toml"
    config.write_text('[lance]\ntoken = "t"\n\n[server]\nport = 0\napi_tokens = ["tok"]\n')
    env = {"LANCE_BRIDGE_LEDGER__URL": urls[problem], "PATH": "/usr/bin:/bin"}

    done = subprocess.run(
        [*_cli(), "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert expected[problem] in done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
