"""The installed CLI over a ledger file that is corrupt, empty, hard-linked or deleted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.acceptance.test_serve import _cli, _eventually, _free_port
from tests.conftest import API_TOKEN

EXIT_WITHIN_S = 15.0  # interpreter start-up included; a hang is what is being ruled out


def _config(tmp_path: Path, ledger_path: Path, extra: str = "") -> Path:
    path = tmp_path / "lance-bridge.toml"
    path.write_text(
        f'[ledger]\npath = "{ledger_path}"\n[server]\nport = 0\n{extra}', encoding="utf-8"
    )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANCE_BRIDGE_")}
    return subprocess.run(
        [*_cli(), *args],
        capture_output=True,
        text=True,
        timeout=EXIT_WITHIN_S,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    "command", [("serve",), ("status",), ("enrichments", "list")], ids="-".join
)
def test_a_corrupt_ledger_is_one_line_and_the_process_exits(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    bad = tmp_path / "ledger.db"
    bad.write_bytes(b"this is not a database, just text someone saved here\n" * 200)
    done = _run(*command, "-c", str(_config(tmp_path, bad)))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"lance-bridge {command[0]}: {bad}: cannot open the ledger: file is not a database"
    ]


def _serve_config(tmp_path: Path, name: str, ledger_path: Path, port: int) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[lance]
base_url = "http://127.0.0.1:9"
token = "sim-token"

[ledger]
path = "{ledger_path}"

[server]
port = {port}
api_tokens = ["{API_TOKEN}"]
drain_seconds = 1

[log]
level = "info"
""",
        encoding="utf-8",
    )
    return path


async def _start(config: Path, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANCE_BRIDGE_")}
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *_cli(), "serve", "-c", str(config), stdout=out, stderr=out, env=env
        )


async def _status(url: str, method: str = "GET", **kwargs: Any) -> int | None:
    """The answer's status, or ``None`` when the server no longer takes connections."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, **kwargs) as response,
        ):
            return response.status
    except aiohttp.ClientError:
        return None


def _trigger_body() -> dict[str, Any]:
    return {"tasks": [{"entityId": str(uuid.uuid4()), "field": "emails"}]}


@pytest.fixture
async def serving(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, Path]]:
    """One ``serve`` on ``ledger.db``, ready; stopped (if still running) afterwards."""
    port = _free_port()
    log = tmp_path / "serve.log"
    process = await _start(_serve_config(tmp_path, "a", tmp_path / "ledger.db", port), log)
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert process.returncode is None, log.read_text()
        return await _status(f"{url}/readyz") == 200

    await _eventually(ready, "readyz", timeout_s=EXIT_WITHIN_S)
    yield process, url, log
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), EXIT_WITHIN_S)


async def test_a_second_serve_through_a_hard_link_is_refused(
    tmp_path: Path, serving: tuple[asyncio.subprocess.Process, str, Path]
) -> None:
    first, _, _ = serving
    link = tmp_path / "link.db"
    os.link(tmp_path / "ledger.db", link)
    log = tmp_path / "second.log"
    second = await _start(_serve_config(tmp_path, "b", link, _free_port()), log)
    assert await asyncio.wait_for(second.wait(), EXIT_WITHIN_S) == 1
    assert log.read_text().splitlines() == [
        f"lance-bridge serve: {link}: ledger in use by another lance-bridge process"
        f" (pid {first.pid}); stop it or point ledger.path elsewhere"
    ]


async def test_a_ledger_deleted_while_serving_refuses_work_and_exits_1(
    tmp_path: Path, serving: tuple[asyncio.subprocess.Process, str, Path]
) -> None:
    process, url, log = serving
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    triggers = f"{url}/v1/triggers"
    assert await _status(triggers, "POST", json=_trigger_body(), headers=headers) == 202
    (tmp_path / "ledger.db").unlink()
    # Until the process is gone (the watch job notices within a second), nothing is a 202:
    # a write answers 503, and so does /readyz.
    answers = set()
    deadline = time.monotonic() + EXIT_WITHIN_S
    while process.returncode is None:
        assert time.monotonic() < deadline, f"still serving: {answers}"
        answers.add(await _status(triggers, "POST", json=_trigger_body(), headers=headers))
        answers.add(await _status(f"{url}/readyz"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 0.01)
    assert answers <= {503, None}
    assert 503 in answers
    assert process.returncode == 1
    text = log.read_text()
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert len(errors) == 1, text
    assert "the ledger file was deleted while open" in errors[0]
    assert "Traceback" not in text


async def test_an_empty_ledger_file_is_refused_until_init_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.touch()
    config = _serve_config(tmp_path, "a", path, _free_port())
    done = _run("serve", "-c", str(config))
    assert done.returncode == 1
    assert "the ledger file is empty (0 bytes)" in done.stderr
    assert "--init-ledger" in done.stderr
    assert path.stat().st_size == 0
    log = tmp_path / "init.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANCE_BRIDGE_")}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *_cli(), "serve", "--init-ledger", "-c", str(config), stdout=out, stderr=out, env=env
        )
    url = f"http://127.0.0.1:{config.read_text().split('port = ')[1].split()[0]}"

    async def ready() -> bool:
        assert process.returncode is None, log.read_text()
        return await _status(f"{url}/readyz") == 200

    await _eventually(ready, "readyz", timeout_s=EXIT_WITHIN_S)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), EXIT_WITHIN_S) == 0
    assert path.stat().st_size > 0
