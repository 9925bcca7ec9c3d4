"""``lance-bridge bench``: each rate beside its bare ceiling, measured in the same run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.acceptance.test_serve import _cli


def _bench(*args: str, where: Path) -> list[dict[str, object]]:
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
    results: list[dict[str, object]] = json.loads(out.read_text())
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
    assert ingest["bars"]["≥ 60 % of the bare handler"] in (True, False)  # type: ignore[index]
