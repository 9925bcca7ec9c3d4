"""``lance-bridge bench``: each rate beside its bare ceiling, measured in the same run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests import pg
from tests.acceptance.test_serve import _cli


def _bench(*args: str, where: Path) -> list[dict[str, Any]]:
    out = where / "bench.json"
    done = subprocess.run(
        [*_cli(), "bench", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # 1 is "a bar not met": a tiny run on a shared machine proves nothing about the bars.
    assert done.returncode in (0, 1), done.stderr
    results: list[dict[str, Any]] = json.loads(out.read_text())
    return results


def test_bench_deliver_drains_due_events_to_the_verifying_sink_beside_its_ceiling(
    tmp_path: Path,
) -> None:
    [result] = _bench("deliver", "--count", "300", where=tmp_path)
    figures = result["figures"]
    assert isinstance(figures, dict)
    assert result["scenario"] == "deliver"
    assert figures["verified_by_receiver"] == 300
    assert figures["rejected_by_receiver"] == 0
    assert figures["events_per_s"] > 0
    assert figures["ceiling_bare_client_server_per_s"] > 0
    assert str(figures["share_of_ceiling"]).endswith("%")
    # The second ceiling: a bare client signing each event, to the same verifying receiver.
    assert figures["receiver_ceiling_bare_signed_client_per_s"] > 0
    assert figures["receiver_ceiling_requests_verified"] == 300
    assert str(figures["share_of_receiver_ceiling"]).endswith("%")
    assert figures["p99_due_to_acknowledged_ms"] > 0


def test_bench_ingest_and_poll_print_their_bare_ceilings_and_our_share(tmp_path: Path) -> None:
    ingest, poll = _bench("ingest", "poll", "--seconds", "1", "--count", "400", where=tmp_path)
    for result, ceiling in (
        (ingest, "ceiling_bare_handler_requests_per_s"),
        (poll, "ceiling_raw_update_per_200_per_s"),
    ):
        figures = result["figures"]
        assert isinstance(figures, dict)
        assert figures[ceiling] > 0, result["scenario"]
        assert str(figures["share_of_ceiling"]).endswith("%")
    assert ingest["bars"]["≥ 60 % of the bare handler"] in (True, False)


def _postgres_url() -> str:
    """The test server's URL, or skip (fail in CI) when it cannot be reached."""
    try:
        psycopg.connect(pg.URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL at {pg.URL.split('@')[-1]} unreachable: {exc}".splitlines()[0]
        if pg.IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return pg.URL


def _rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = result["rows"]
    assert isinstance(rows, list)
    return rows


def _schemas_present(names: set[str]) -> set[str]:
    with psycopg.connect(pg.URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (sorted(names),)
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_bench_on_postgresql_with_two_replicas_prints_a_row_per_ledger_and_drops_its_schemas(
    tmp_path: Path,
) -> None:
    url = _postgres_url()
    ingest, poll = _bench(
        "ingest", "poll", "--seconds", "1", "--count", "400", "--ledger", url, "--replicas", "2",
        where=tmp_path,
    )  # fmt: skip
    schemas: set[str] = set()
    for result in (ingest, poll):
        rows = _rows(result)
        assert [r["backend"] for r in rows] == ["sqlite", "postgresql x1", "postgresql x2"]
        assert [r["replicas"] for r in rows] == [1, 1, 2]
        for row in rows:
            assert row["rate_per_s"] > 0, row
            assert row["ceiling_per_s"] > 0, row
            assert str(row["share_of_ceiling"]).endswith("%")
            assert str(row["share_vs_sqlite"]).endswith("%")
            assert row["rss_mb"] > 0
        schemas |= {str(r["schema"]) for r in rows[1:]}
        bars = result["bars"]
        assert isinstance(bars, dict)
        assert "postgresql x1 ≥ 50 % of sqlite" in bars
    for row in _rows(ingest):
        assert row["durable_rows"] == row["accepted_202"] > 0
    for row in _rows(poll):
        # Two pollers over one ledger still ask Lance ⌈400/200⌉ = 2 times in all.
        assert row["status_updates"] == 400
        assert row["api_calls"] == row["api_floor"] == 2
    assert "postgresql x2 above postgresql x1" in ingest["bars"]
    assert len(schemas) == 4
    assert all(s.startswith("lance_bridge_bench_") for s in schemas)
    assert _schemas_present(schemas) == set()


def test_bench_replicas_without_a_postgresql_ledger_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [*_cli(), "bench", "ingest", "--replicas", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--replicas needs --ledger" in done.stderr
    assert not out.exists()


def test_bench_e2e_reports_its_total_time_as_a_share_of_the_slowest_ceiling_on_its_path(
    tmp_path: Path,
) -> None:
    [result] = _bench("e2e", "--count", "200", where=tmp_path)
    figures = result["figures"]
    assert isinstance(figures, dict)
    assert figures["webhooks_verified_by_receiver"] == 200
    ceilings = {name: figures[f"ceiling_{name}_per_s"] for name in ("ingest", "poll", "deliver")}
    assert all(rate > 0 for rate in ceilings.values()), ceilings
    assert figures["slowest_ceiling"] == min(ceilings, key=lambda n: ceilings[n])
    assert figures["ideal_seconds"] == round(200 / ceilings[figures["slowest_ceiling"]], 1)
    assert str(figures["share_of_ceiling"]).endswith("%")
