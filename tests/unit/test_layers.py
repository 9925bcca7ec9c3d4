"""Which layers a module pulls in: the connector contract and settings know no storage."""

from __future__ import annotations

import ast
import graphlib
import pathlib
import subprocess
import sys
from collections.abc import Iterator

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_OURS = ("bridge", "connectors")
# One module per job; what two jobs share lives in a module that is not a job.
_JOBS = ("triggerer", "poller", "fetcher", "dispatcher", "resolver", "matcher")

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


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module loads: its body, and any ``if``/``try`` outside type checks."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            pending.extend([*node.body, *node.orelse])
        elif isinstance(node, ast.Try):
            pending.extend([*node.body, *node.orelse, *node.finalbody])
            pending.extend(stmt for handler in node.handlers for stmt in handler.body)


def _imported(node: ast.Import | ast.ImportFrom, here: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = here.split(".") if is_package else here.split(".")[:-1]
        anchor = ".".join(package[: len(package) - node.level + 1])
        base = f"{anchor}.{base}" if base else anchor
    yield base
    # ``from bridge import ledger`` imports the module bridge.ledger, not a name of bridge.
    yield from (f"{base}.{alias.name}" for alias in node.names)


def _import_graph() -> dict[str, set[str]]:
    files = [p for top in _OURS for p in (_ROOT / top).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        targets = {
            target
            for node in _top_level_imports(tree)
            for target in _imported(node, name, is_package)
        }
        # Importing a submodule runs its packages' __init__ first; those edges are not cycles.
        graph[name] = {
            t for t in targets if t in modules and t != name and not name.startswith(t + ".")
        }
    return graph


def test_our_modules_import_each_other_without_a_cycle() -> None:
    graph = _import_graph()
    # The walk found our code.
    assert "bridge.app" in graph
    assert "connectors.webhook" in graph
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_no_job_imports_another_job() -> None:
    graph = _import_graph()
    jobs = {f"bridge.{name}" for name in _JOBS}
    assert jobs <= graph.keys()
    leaning = {job: sorted(graph[job] & jobs) for job in sorted(jobs) if graph[job] & jobs}
    assert not leaning, f"jobs importing jobs: {leaning}"
