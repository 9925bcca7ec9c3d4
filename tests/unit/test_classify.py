"""What is worth retrying, and when: ``classify.classify`` and the timing rules of ``pacing``.

hypothesis is not installed, so the properties of ``poll_delay`` are checked over a dense,
parametrized sweep of ages and configurations instead.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Sequence

import aiohttp
import pytest

from bridge import connector, model, pacing, settings
from bridge.classify import (
    ERROR_EXCERPT_CHARS,
    THROTTLE_MIN_DELAY_S,
    Outcome,
    classify,
    parse_retry_after,
)

# -- classify: HTTP statuses -----------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    outcome = classify(status)
    assert (outcome.kind, outcome.status, outcome.error) == ("delivered", status, None)


@pytest.mark.parametrize(
    "status",
    [
        pytest.param(301, id="301-moved"),
        pytest.param(302, id="302-found"),
        pytest.param(303, id="303-see-other"),
        pytest.param(304, id="304-not-modified"),
        pytest.param(307, id="307-temporary-redirect"),
        pytest.param(308, id="308-permanent-redirect"),
    ],
)
def test_a_redirect_is_a_permanent_failure(status: int) -> None:
    outcome = classify(status, body="moved to https://elsewhere.example")
    assert (outcome.kind, outcome.status, outcome.retry_after_s) == ("dead", status, None)
    assert outcome.error == f"HTTP {status}: moved to https://elsewhere.example"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 413, 415, 422])
def test_a_client_error_is_dead_with_the_reason(status: int) -> None:
    outcome = classify(status, body='  {"message": "email is invalid"}  ', retry_after="5")
    assert outcome.kind == "dead"
    assert outcome.status == status
    assert outcome.error == f'HTTP {status}: {{"message": "email is invalid"}}'
    assert outcome.retry_after_s is None


@pytest.mark.parametrize("status", [408, 425, 500, 501, 502, 503, 504, 599])
def test_timeouts_too_early_and_5xx_are_retried(status: int) -> None:
    outcome = classify(status)
    assert (outcome.kind, outcome.status, outcome.error) == ("retry", status, f"HTTP {status}")
    assert outcome.retry_after_s is None


@pytest.mark.parametrize(("status", "header"), [(503, "120"), (500, "7"), (408, "0")])
def test_retry_after_is_honoured_on_retried_statuses(status: int, header: str) -> None:
    assert classify(status, retry_after=header).retry_after_s == float(header)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, THROTTLE_MIN_DELAY_S, id="no-header"),
        pytest.param("1", THROTTLE_MIN_DELAY_S, id="smaller-header"),
        pytest.param("60", 60.0, id="equal"),
        pytest.param("3600", 3600.0, id="larger-header"),
        pytest.param("garbage", THROTTLE_MIN_DELAY_S, id="unparseable-header"),
    ],
)
def test_429_waits_at_least_a_minute_and_longer_if_asked(
    header: str | None, expected: float
) -> None:
    outcome = classify(429, retry_after=header)
    assert (outcome.kind, outcome.status) == ("retry", 429)
    assert outcome.retry_after_s == expected
    assert THROTTLE_MIN_DELAY_S == 60.0


def test_429_honours_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 600, usegmt=True)
    outcome = classify(429, retry_after=later)
    assert outcome.retry_after_s is not None
    assert 590 <= outcome.retry_after_s <= 601


def test_the_error_excerpt_is_bounded() -> None:
    outcome = classify(500, body="x" * 10_000)
    assert outcome.error is not None
    assert len(outcome.error) <= len("HTTP 500: ") + ERROR_EXCERPT_CHARS


# -- classify: transport errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(TimeoutError(), id="TimeoutError"),
        pytest.param(TimeoutError("read"), id="TimeoutError-with-message"),
        pytest.param(aiohttp.ServerTimeoutError("read timed out"), id="aiohttp-ServerTimeout"),
        pytest.param(aiohttp.ConnectionTimeoutError("connect"), id="aiohttp-ConnectionTimeout"),
    ],
)
def test_a_timeout_is_retried_no_sooner_than_a_minute(error: BaseException) -> None:
    outcome = classify(error=error)
    assert (outcome.kind, outcome.status) == ("retry", None)
    assert outcome.retry_after_s is not None
    assert outcome.retry_after_s >= 60
    assert outcome.error is not None
    assert outcome.error.startswith("timeout (")


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ConnectionResetError(104, "Connection reset by peer"), id="reset"),
        pytest.param(ConnectionRefusedError(111, "Connection refused"), id="refused"),
        pytest.param(aiohttp.ClientConnectionError("boom"), id="ClientConnectionError"),
        pytest.param(aiohttp.ServerDisconnectedError(), id="ServerDisconnected"),
        pytest.param(aiohttp.ClientPayloadError("truncated"), id="ClientPayloadError"),
    ],
)
def test_a_connection_failure_is_retried_on_schedule(error: BaseException) -> None:
    outcome = classify(error=error)
    assert (outcome.kind, outcome.status, outcome.retry_after_s) == ("retry", None, None)
    assert outcome.error is not None
    assert outcome.error.startswith(type(error).__name__)


def test_an_error_without_a_message_has_no_dangling_colon() -> None:
    assert classify(error=ConnectionResetError()).error == "ConnectionResetError"


# -- parse_retry_after -----------------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 30 ", 30.0, id="padded"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("-5", None, id="negative-is-not-delay-seconds"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(email.utils.formatdate(NOW + 90, usegmt=True), 90.0, id="http-date"),
        pytest.param(email.utils.formatdate(NOW - 90, usegmt=True), 0.0, id="http-date-past"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="rfc-example-in-the-past"),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now_s=NOW) == expected


@pytest.mark.parametrize("header", ["inf", "Infinity", "1e400"])
def test_a_non_finite_retry_after_is_ignored(header: str) -> None:
    assert parse_retry_after(header, now_s=NOW) is None


# -- pacing.retry_delay ----------------------------------------------------------------------

SCHEDULE = settings.DEFAULT_RETRY_SCHEDULE_S


@pytest.mark.parametrize("attempts", range(1, len(SCHEDULE)))
@pytest.mark.parametrize("seed", range(20))
def test_retry_delay_follows_the_schedule_within_the_jitter(attempts: int, seed: int) -> None:
    delay = pacing.retry_delay(attempts, SCHEDULE, 0.2, random.Random(seed))
    assert delay is not None
    assert SCHEDULE[attempts] * 0.8 <= delay <= SCHEDULE[attempts] * 1.2


def test_the_default_schedule_is_the_documented_one() -> None:
    # DESIGN §8: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    assert SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def test_retry_delay_without_jitter_is_exact() -> None:
    rng = random.Random(1)
    assert [pacing.retry_delay(n, SCHEDULE, 0.0, rng) for n in range(len(SCHEDULE))] == list(
        SCHEDULE
    )


def test_retry_delay_jitter_spreads_both_ways() -> None:
    rng = random.Random(3)
    delays = [pacing.retry_delay(2, SCHEDULE, 0.2, rng) for _ in range(500)]
    assert min(d for d in delays if d is not None) < 300 < max(d for d in delays if d is not None)


@pytest.mark.parametrize("attempts", [len(SCHEDULE), len(SCHEDULE) + 1, 100])
def test_retry_delay_is_none_once_the_schedule_is_exhausted(attempts: int) -> None:
    assert pacing.retry_delay(attempts, SCHEDULE, 0.2, random.Random(0)) is None
    assert pacing.retry_delay(attempts, SCHEDULE, 0.2, random.Random(0), at_least_s=60) is None


@pytest.mark.parametrize(("attempts", "at_least", "floor"), [(1, 60.0, 60.0), (2, 60.0, 240.0)])
def test_retry_delay_never_undercuts_retry_after(
    attempts: int, at_least: float, floor: float
) -> None:
    for seed in range(50):
        delay = pacing.retry_delay(
            attempts, SCHEDULE, 0.2, random.Random(seed), at_least_s=at_least
        )
        assert delay is not None
        assert delay >= floor


def test_a_throttled_delivery_waits_a_minute_even_when_the_schedule_says_5_s() -> None:
    outcome = classify(429)
    delay = pacing.retry_delay(1, SCHEDULE, 0.2, random.Random(0), at_least_s=outcome.retry_after_s)
    assert delay == THROTTLE_MIN_DELAY_S


# -- pacing.poll_delay -----------------------------------------------------------------------

AGES = sorted(
    {0.0, 0.5, 1.0, 29.9, 30.0, 30.1, 31.0}
    | {float(a) for a in range(0, 1200, 7)}
    | {10.0**e for e in range(0, 9)}
    | {-5.0}
)
POLL_CONFIGS = [
    pytest.param({}, id="defaults"),
    pytest.param({"jitter": 0.0}, id="no-jitter"),
    pytest.param({"jitter": 0.99}, id="max-jitter"),
    pytest.param({"backoff_factor": 10.0, "jitter": 0.5}, id="steep"),
    pytest.param({"backoff_factor": 1.0}, id="flat"),
    pytest.param({"interval_seconds": 0.001, "max_delay_seconds": 0.5}, id="tiny"),
    pytest.param({"interval_seconds": 5.0, "max_delay_seconds": 5.0}, id="cap-equals-interval"),
    pytest.param({"young_seconds": 0.0}, id="never-young"),
    pytest.param({"max_delay_seconds": 3600.0, "backoff_factor": 3.0}, id="high-cap"),
]


@pytest.mark.parametrize("overrides", POLL_CONFIGS)
@pytest.mark.parametrize("seed", range(5))
def test_poll_delay_never_exceeds_the_cap(overrides: dict[str, float], seed: int) -> None:
    config = settings.PollSettings(**overrides)
    rng = random.Random(seed)
    for age in AGES:
        delay = pacing.poll_delay(age, config, rng)
        assert 0 < delay <= config.max_delay_seconds, (age, delay)


@pytest.mark.parametrize("overrides", POLL_CONFIGS)
def test_young_rows_are_polled_every_interval(overrides: dict[str, float]) -> None:
    config = settings.PollSettings(**overrides)
    rng = random.Random(0)
    for age in (0.0, config.young_seconds / 2, config.young_seconds):
        assert pacing.poll_delay(age, config, rng) == config.interval_seconds


def test_poll_delay_backs_off_with_age_up_to_the_cap() -> None:
    config = settings.PollSettings(jitter=0.0)
    delays = [pacing.poll_delay(age, config, random.Random(0)) for age in AGES]
    assert delays == sorted(delays), "older rows never wait less than younger ones"
    assert delays[0] == config.interval_seconds
    assert delays[-1] == config.max_delay_seconds
    assert config.interval_seconds < pacing.poll_delay(60.0, config, random.Random(0))


# -- pacing.Gate -----------------------------------------------------------------------------


def test_the_gate_starts_open() -> None:
    gate = pacing.Gate(random.Random(0))
    assert gate.is_open(0.0)


def test_the_gate_doubles_its_pause_up_to_the_cap() -> None:
    gate = pacing.Gate(random.Random(0))
    now = 1000.0
    for failure in range(1, 12):
        pause = gate.fail(now)
        nominal = min(pacing.GATE_MAX_DELAY_S, pacing.GATE_FIRST_DELAY_S * 2 ** (failure - 1))
        assert nominal * 0.8 <= pause <= nominal * 1.2
        assert gate.open_at == now + pause
        assert not gate.is_open(now + pause * 0.99)
        assert gate.is_open(now + pause)


def test_the_gate_honours_a_longer_retry_after() -> None:
    gate = pacing.Gate(random.Random(0))
    assert gate.fail(0.0, retry_after_s=300.0) == 300.0
    assert not gate.is_open(299.0)
    assert gate.is_open(300.0)


def test_a_shorter_retry_after_does_not_shorten_the_backoff() -> None:
    gate = pacing.Gate(random.Random(0))
    for _ in range(5):
        gate.fail(0.0)
    assert gate.fail(0.0, retry_after_s=1.0) >= 32 * 0.8


def test_success_resets_the_backoff() -> None:
    gate = pacing.Gate(random.Random(0))
    for _ in range(6):
        gate.fail(0.0)
    gate.succeed()
    assert gate.failures == 0
    first = gate.fail(100.0)
    assert pacing.GATE_FIRST_DELAY_S * 0.8 <= first <= pacing.GATE_FIRST_DELAY_S * 1.2


def test_hold_only_ever_lengthens_the_pause() -> None:
    gate = pacing.Gate(random.Random(0))
    gate.hold(0.0, 300.0)
    gate.hold(0.0, 10.0)
    assert gate.open_at == 300.0
    assert not gate.is_open(299.0)


class _Miscounting(connector.Connector):
    """A plugin bug: one outcome for a chunk of several events."""

    max_batch = 10

    async def _send(self, chunk: Sequence[model.Delivery]) -> list[Outcome]:
        return [Outcome.delivered(200)]


async def test_a_connector_miscounting_its_outcomes_gets_retries_not_an_exception() -> None:
    config = connector.ConnectorConfig(name="plugin", type="plugin")
    events = [
        model.Delivery(i, i, "plugin", "", "", "enrichment.finished", f"msg_{i}", b"{}")
        for i in range(3)
    ]
    async with aiohttp.ClientSession() as session:
        outcomes = await _Miscounting(config, session).send(events)

    assert [o.kind for o in outcomes] == ["retry"] * 3
    assert all("wrong number of outcomes" in (o.error or "") for o in outcomes)


class _Forgetful(connector.Connector):
    """A plugin bug: batches() leaves the last event out."""

    max_batch = 10

    def batches(self, events: Sequence[model.Delivery]) -> list[list[int]]:
        return [list(range(len(events) - 1))]

    async def _send(self, chunk: Sequence[model.Delivery]) -> list[Outcome]:
        return [Outcome.delivered(200)] * len(chunk)


async def test_an_event_a_connector_never_batches_gets_a_retry_not_an_exception() -> None:
    config = connector.ConnectorConfig(name="plugin", type="plugin")
    events = [
        model.Delivery(i, i, "plugin", "", "", "enrichment.finished", f"msg_{i}", b"{}")
        for i in range(3)
    ]
    async with aiohttp.ClientSession() as session:
        outcomes = await _Forgetful(config, session).send(events)

    assert [o.kind for o in outcomes] == ["delivered", "delivered", "retry"]
