"""The installed CLI over a ledger file that is corrupt, empty, hard-linked or deleted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.test_serve import _cli

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
