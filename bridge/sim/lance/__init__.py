"""A faithful fake of the Lance REST API, to test lance-bridge and your own integrations.

It serves, under one base URL, the enrichment endpoints (batch/single trigger, single status,
batch-query), the prospect person/company GETs, the person search and the credits balance, with
the documented limits, status codes and error codes. Records complete lazily from a controllable
clock; faults (500, 429, dropped connections, slow answers) can be injected per request; an
unauthenticated admin surface under ``/_sim/`` lets tests that only have a URL drive and inspect it.

Example::

    sim = LanceSimulator(SimConfig(completion_s=(0, 0), seed=1))
    runner = await serve(sim, "127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{bound_port(runner)}"  # token: sim.config.token
    ...
    assert max(sim.charges.values(), default=0) <= 1
    await runner.cleanup()

Admin surface (no auth, not counted in ``requests``): ``GET /_sim/stats``,
``POST /_sim/complete``, ``POST /_sim/enrichments`` with
``{"entityId", "field", "entityType"?, "outcome"?, "completionS"?}``, and ``POST /_sim/faults``
with any of ``fail_rate``, ``throttle_rate``, ``drop_rate``, ``slow_rate``, ``slow_s``,
``retry_after_s``.

The package: :mod:`~bridge.sim.lance.server` (routes, faults, admin surface),
:mod:`~bridge.sim.lance.state` (records and credits, no HTTP), :mod:`~bridge.sim.lance.config`,
:mod:`~bridge.sim.lance.validation`, :mod:`~bridge.sim.lance.errors` and
:mod:`~bridge.sim.lance.entities` (fake prospects).
"""

from __future__ import annotations

from bridge.sim._http import base_url, bound_port
from bridge.sim.lance.config import SimConfig
from bridge.sim.lance.errors import ApiError, error_body
from bridge.sim.lance.server import (
    API_PREFIX,
    BALANCE,
    BATCH,
    COMPANY,
    FAULT_SETTINGS,
    PERSON,
    QUERY,
    SEARCH,
    SINGLE,
    LanceSimulator,
    serve,
)
from bridge.sim.lance.validation import MAX_PERSON_IDS, MAX_TASKS, parse_tasks, parse_trigger

__all__ = [
    "API_PREFIX",
    "BALANCE",
    "BATCH",
    "COMPANY",
    "FAULT_SETTINGS",
    "MAX_PERSON_IDS",
    "MAX_TASKS",
    "PERSON",
    "QUERY",
    "SEARCH",
    "SINGLE",
    "ApiError",
    "LanceSimulator",
    "SimConfig",
    "base_url",
    "bound_port",
    "error_body",
    "parse_tasks",
    "parse_trigger",
    "serve",
]
