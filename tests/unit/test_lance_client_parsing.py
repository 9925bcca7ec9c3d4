"""The pure parts of the Lance client: records, error mapping and the undocumented error envelope.

Lance's docs disagree with themselves (reference/lance-api.md): the batch trigger shows a bare
array but names an ``enrichments`` field, and no page shows the error body. These helpers are
where that tolerance lives, so they are tested directly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge import errors
from bridge.lance_wire import error_fields as _error_fields
from bridge.lance_wire import error_of as _error
from bridge.lance_wire import key_of
from bridge.lance_wire import records as _records
from bridge.lance_wire import template as _template

RECORD = {
    "id": "3f0c1b8e-6a51-4e0b-9a3c-5d2e7f9a1b20",
    "entityId": "0b6f6c3a-1c8e-4b8e-9a51-2f0c1d9e7a10",
    "entityType": "person",
    "field": "emails",
    "status": "finished",
    "error": None,
    "dataFound": True,
    "createdAt": "2026-01-01T00:00:00.000Z",
    "updatedAt": "2026-01-01T00:00:05.000Z",
}


# -- _records --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([RECORD], id="bare-array"),
        pytest.param({"enrichments": [RECORD]}, id="wrapped"),
    ],
)
def test_records_accepts_both_documented_shapes(data: Any) -> None:
    assert _records(data) == [RECORD]


def test_records_accepts_an_empty_answer() -> None:
    assert _records([]) == []
    assert _records({"enrichments": []}) == []


def test_records_keeps_unknown_keys_and_values() -> None:
    extra = RECORD | {
        "globalEnrichmentId": "global_123",
        "creditTransactionId": None,
        "orgId": "org_1",
        "somethingNew": {"nested": [1, 2]},
    }
    [kept] = _records([extra])
    assert kept == extra


@pytest.mark.parametrize(
    "status", ["pending", "finished", "failed", "timeout", "cancelled", "paused-by-lance"]
)
def test_records_keeps_any_status_string(status: str) -> None:
    # An unknown status is the poller's business (still pending), not a parse error.
    [kept] = _records([RECORD | {"status": status}])
    assert kept["status"] == status


def test_records_needs_only_entity_field_and_status() -> None:
    minimal = {"entityId": RECORD["entityId"], "field": "phones", "status": "pending"}
    assert _records([minimal]) == [minimal]
    assert key_of(minimal) == ("person", RECORD["entityId"], "phones")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="null"),
        pytest.param("pending", id="string"),
        pytest.param(42, id="number"),
        pytest.param([1, 2], id="array-of-numbers"),
        pytest.param([RECORD, "x"], id="one-bad-item"),
        pytest.param({"records": [RECORD]}, id="wrong-wrapper-key"),
        pytest.param({"enrichments": RECORD}, id="wrapper-not-a-list"),
        pytest.param({}, id="empty-object"),
        pytest.param([{"entityId": "x", "field": "emails"}], id="missing-status"),
        pytest.param([{"field": "emails", "status": "pending"}], id="missing-entityId"),
        pytest.param([RECORD | {"status": 3}], id="status-not-a-string"),
    ],
)
def test_records_rejects_garbage_as_retryable(data: Any) -> None:
    with pytest.raises(errors.LanceRetryableError) as caught:
        _records(data)
    assert caught.value.message.startswith("unexpected enrichment records")


def test_records_ignores_other_keys_beside_enrichments() -> None:
    assert _records({"enrichments": [RECORD], "total": 1}) == [RECORD]


# -- _error ----------------------------------------------------------------------------------

ENDPOINT = "POST enrichment/batch"


def _body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message, "details": {}}).encode()


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, errors.LancePermanentError),
        (401, errors.LanceAuthError),
        (402, errors.LanceCreditsError),
        (403, errors.LancePermanentError),
        (404, errors.LancePermanentError),
        (408, errors.LanceRetryableError),
        (409, errors.LancePermanentError),
        (422, errors.LancePermanentError),
        (425, errors.LanceRetryableError),
        (429, errors.LanceRetryableError),
        (500, errors.LanceRetryableError),
        (502, errors.LanceRetryableError),
        (503, errors.LanceRetryableError),
        (504, errors.LanceRetryableError),
    ],
)
def test_error_maps_each_status_to_its_kind(status: int, kind: type[errors.LanceError]) -> None:
    exc = _error(ENDPOINT, status, _body("SOME_CODE", "what happened"), {})
    assert type(exc) is kind
    assert exc.status == status
    assert exc.code == "SOME_CODE"
    assert ENDPOINT in exc.message
    assert f"HTTP {status}" in exc.message
    assert "what happened" in exc.message


def test_a_400_names_the_problem() -> None:
    body = _body("VALIDATION_ERROR", "personIds[3] must be a valid UUID v4")
    exc = _error(ENDPOINT, 400, body, {})
    assert isinstance(exc, errors.LancePermanentError)
    assert exc.message == (
        "POST enrichment/batch: HTTP 400 VALIDATION_ERROR: personIds[3] must be a valid UUID v4"
    )
    assert exc.retry_after_s is None


def test_a_401_says_how_to_fix_the_token() -> None:
    exc = _error(ENDPOINT, 401, _body("UNAUTHORIZED", "Missing or invalid authentication"), {})
    assert isinstance(exc, errors.LanceAuthError)
    assert "lance.token" in exc.message
    assert "LANCE_BRIDGE_LANCE__TOKEN" in exc.message


def test_a_402_is_a_credits_error() -> None:
    exc = _error(ENDPOINT, 402, _body("INSUFFICIENT_CREDITS", "200 required, 3 available"), {})
    assert isinstance(exc, errors.LanceCreditsError)
    assert exc.code == "INSUFFICIENT_CREDITS"
    assert "200 required, 3 available" in exc.message


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"Retry-After": "7"}, 7.0, id="seconds"),
        pytest.param({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0, id="past-date"),
        pytest.param({}, None, id="absent"),
        pytest.param({"Retry-After": "later"}, None, id="garbage"),
    ],
)
def test_a_429_carries_retry_after(headers: dict[str, str], expected: float | None) -> None:
    exc = _error(ENDPOINT, 429, _body("RATE_LIMITED", "Too many requests"), headers)
    assert isinstance(exc, errors.LanceRetryableError)
    assert exc.retry_after_s == expected


def test_a_500_with_retry_after_keeps_it() -> None:
    exc = _error(ENDPOINT, 503, b"Service Unavailable", {"Retry-After": "30"})
    assert isinstance(exc, errors.LanceRetryableError)
    assert exc.retry_after_s == 30.0
    assert exc.code is None
    assert exc.message == "POST enrichment/batch: HTTP 503: Service Unavailable"


def test_an_empty_error_body_still_gives_a_message() -> None:
    exc = _error(ENDPOINT, 500, b"", {})
    assert exc.message == "POST enrichment/batch: HTTP 500"


# -- _error_fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            b'{"error": "VALIDATION_ERROR", "message": "bad field", "details": {"f": "x"}}',
            ("VALIDATION_ERROR", "bad field"),
            id="code-string-and-message",
        ),
        pytest.param(
            b'{"error": {"code": "NOT_FOUND", "message": "no such person"}}',
            ("NOT_FOUND", "no such person"),
            id="nested-error-object",
        ),
        pytest.param(
            b'{"code": "FORBIDDEN", "message": "not yours"}',
            ("FORBIDDEN", "not yours"),
            id="flat-code-and-message",
        ),
        pytest.param(b'{"message": "only a message"}', (None, "only a message"), id="message"),
        pytest.param(b'{"error": "RATE_LIMITED"}', ("RATE_LIMITED", None), id="code-only"),
        pytest.param(b'{"error": {"message": "m"}}', (None, "m"), id="nested-no-code"),
        pytest.param(b'{"error": null, "message": "m"}', (None, "m"), id="null-error"),
        pytest.param(b'{"error": "", "message": ""}', (None, None), id="empty-strings"),
        pytest.param(b'{"code": 429, "message": "slow"}', ("429", "slow"), id="numeric-code"),
        pytest.param(b"{}", (None, None), id="empty-object"),
        pytest.param(b"[1, 2]", (None, None), id="array"),
        pytest.param(b'"just a string"', (None, None), id="json-string"),
        pytest.param(b"Bad Gateway", (None, "Bad Gateway"), id="plain-text"),
        pytest.param(b"  \n upstream timeout \n", (None, "upstream timeout"), id="padded-text"),
        pytest.param(
            b"<html><body>502</body></html>", (None, "<html><body>502</body></html>"), id="html"
        ),
        pytest.param(b"", (None, None), id="empty"),
        pytest.param(b"\xff\xfe bad bytes", (None, "\ufffd\ufffd bad bytes"), id="not-utf8"),
    ],
)
def test_error_fields_reads_every_envelope_shape(
    raw: bytes, expected: tuple[str | None, str | None]
) -> None:
    assert _error_fields(raw) == expected


def test_error_fields_bounds_a_long_text_body() -> None:
    code, message = _error_fields(b"x" * 5000)
    assert code is None
    assert message is not None
    assert len(message) == 200


# -- _template: the request counter's endpoint names -----------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/operations/enrichment/batch", "enrichment/batch"),
        ("/operations/enrichment/batch/query", "enrichment/batch/query"),
        ("/operations/enrichment/0b6f6c3a-1c8e-4b8e-9a51-2f0c1d9e7a10", "enrichment/{personId}"),
        ("/entities/prospects/person/0b6f6c3a", "entities/prospects/person/{id}"),
        ("/entities/prospects/company/0b6f6c3a", "entities/prospects/company/{id}"),
        ("/operations/credits/balance", "credits/balance"),
    ],
)
def test_endpoints_are_counted_by_template(path: str, expected: str) -> None:
    assert _template(path) == expected
