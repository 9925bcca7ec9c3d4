"""``lance-bridge healthcheck``, the image's HEALTHCHECK, against a real ``serve``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from tests.acceptance.test_serve import Serve, _cli, _free_port
from tests.conftest import API_TOKEN


def _config(tmp_path: Path, port: int) -> Path:
    # The port is set only in the file: the check must find it there, as serve does.
    path = tmp_path / "lance-bridge.toml"
    path.write_text(
        f"""
[lance]
base_url = "http://127.0.0.1:{_free_port()}"
token = "sim-token"

[ledger]
path = "{tmp_path / "ledger.db"}"

[server]
port = {port}
api_tokens = ["{API_TOKEN}"]

[log]
level = "warning"
""",
        encoding="utf-8",
    )
    return path


async def _healthcheck(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANCE_BRIDGE_")}
    process = await asyncio.create_subprocess_exec(
        *_cli(),
        "healthcheck",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return subprocess.CompletedProcess([], process.returncode, out.decode(), err.decode())


async def test_healthcheck_is_0_against_serve_on_the_configured_port(tmp_path: Path) -> None:
    port = _free_port()
    config = _config(tmp_path, port)
    serve = Serve(config, port, tmp_path / "serve.log")
    await serve.start()
    try:
        done = await _healthcheck(config)
    finally:
        assert await serve.stop(signal.SIGTERM) == 0

    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


async def test_healthcheck_is_1_with_one_line_when_nothing_listens(tmp_path: Path) -> None:
    port = _free_port()

    done = await _healthcheck(_config(tmp_path, port))

    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith(f"lance-bridge healthcheck: http://127.0.0.1:{port}/healthz: ")


async def test_a_broken_config_is_unhealthy_not_dockers_reserved_exit_2(tmp_path: Path) -> None:
    done = await _healthcheck(tmp_path / "missing.toml")

    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1
