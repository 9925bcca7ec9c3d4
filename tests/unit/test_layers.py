"""Which layers a module pulls in: the connector contract and settings know no storage."""

from __future__ import annotations

import subprocess
import sys

# Run in a fresh interpreter: this test process has long imported the ledger by now.
_CONTRACT_WITHOUT_STORAGE = (
    "import bridge.settings, connectors.hubspot, connectors.salesforce, connectors.webhook,"
    " bridge.connector; import sys;"
    " assert 'aiosqlite' not in sys.modules and 'bridge.ledger' not in sys.modules,"
    " sorted(m for m in sys.modules if m.startswith(('aiosqlite', 'bridge.')))"
)
_MODEL_IS_A_LEAF = (
    "import sys; before = set(sys.modules); import bridge.model;"
    " ours = sorted(m for m in set(sys.modules) - before"
    " if m.startswith(('bridge.', 'connectors')) and m != 'bridge.model');"
    " assert not ours, ours"
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_loading_settings_and_the_connectors_imports_no_storage() -> None:
    done = _run(_CONTRACT_WITHOUT_STORAGE)
    assert done.returncode == 0, done.stderr


def test_the_domain_values_import_nothing_of_the_bridge() -> None:
    done = _run(_MODEL_IS_A_LEAF)
    assert done.returncode == 0, done.stderr
