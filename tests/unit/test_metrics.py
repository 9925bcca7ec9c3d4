"""The delivery rows the invariant expects, per connector, from the routes alone."""

from __future__ import annotations

from bridge import metrics, outbox

HOOK = outbox.Route("hook", needs_record=False, events=frozenset({"enrichment.finished"}))
ALL = outbox.Route(
    "all", needs_record=False, events=frozenset({"enrichment.finished", "enrichment.lost"})
)
CRM = outbox.Route(
    "crm", needs_record=True, events=frozenset({"enrichment.finished", "enrichment.failed"})
)


def test_record_less_routes_expect_every_matching_terminal_row() -> None:
    router = outbox.Router([HOOK, ALL])
    expected = router.expected({"finished": 5, "lost": 2, "failed": 1}, {})
    assert expected == {"hook": 5, "all": 7}


def test_crm_routes_expect_their_targets_and_unknown_connectors_every_target() -> None:
    router = outbox.Router([HOOK, CRM])
    targets = {
        ("finished", "crm"): 4,
        ("failed", "crm"): 1,
        ("lost", "crm"): 3,  # not in the CRM's events
        ("finished", "hook"): 9,  # a record-less connector gets one row per event, not per target
        ("lost", "gone"): 2,  # no longer configured: still a row each, marked dead later
    }
    expected = router.expected({"finished": 6, "lost": 3, "failed": 1}, targets)
    assert expected == {"hook": 6, "crm": 5, "gone": 2}


def test_the_invariant_fails_on_a_missing_row_or_an_unknown_state() -> None:
    fine = metrics.LedgerFigures(
        read_at=0.0,
        enrichments={"finished": 1},
        awaiting=0,
        deliveries={("hook", "delivered"): 1},
        oldest_in_flight_s=0.0,
        charged={},
        events={"hook": 1},
        undelivered={"hook": 0},
        unknown_states=0,
    )
    assert fine.invariant_ok
    assert not metrics.LedgerFigures(**{**_fields(fine), "undelivered": {"hook": 1}}).invariant_ok
    assert not metrics.LedgerFigures(**{**_fields(fine), "unknown_states": 1}).invariant_ok


def _fields(figures: metrics.LedgerFigures) -> dict[str, object]:
    return {name: getattr(figures, name) for name in metrics.LedgerFigures.__dataclass_fields__}
