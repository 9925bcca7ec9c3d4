"""The dashboard's pages: each reads through the ledger interface, so both backends serve them.

Query strings are checked before anything is read (:mod:`bridge.ui.params`): a value the page
does not know is a 400 page naming the parameter, an unknown id a 404 page. Lists are
keyset-paginated (a ``Next`` link carries the cursor), so a page costs the same on the
millionth row as on the first.

The pages live by group: :mod:`bridge.ui.overview` (counts, charts, the id jump),
:mod:`bridge.ui.enrichments`, :mod:`bridge.ui.deliveries` (with the replays) and
:mod:`bridge.ui.inbound` (inbound events and connectors); this module names them all.
"""

from __future__ import annotations

from bridge.ui.deliveries import (
    REPLAY_CHUNK,
    deliveries,
    delivery,
    retry,
    retry_dead,
    retry_dead_confirm,
)
from bridge.ui.enrichments import FIELDS, enrichment, enrichments
from bridge.ui.inbound import INBOUND_STATES, connectors, inbound
from bridge.ui.overview import FIGURES, counts_fragment, jump, overview
from bridge.ui.params import MAX_TEXT, PAGE, iso

__all__ = [
    "FIELDS",
    "FIGURES",
    "INBOUND_STATES",
    "MAX_TEXT",
    "PAGE",
    "REPLAY_CHUNK",
    "connectors",
    "counts_fragment",
    "deliveries",
    "delivery",
    "enrichment",
    "enrichments",
    "inbound",
    "iso",
    "jump",
    "overview",
    "retry",
    "retry_dead",
    "retry_dead_confirm",
]
