"""What a Lance record means for its ledger row: the change the trigger and poll jobs write.

A trigger's answer and a poll's answer are the same kind of record, read the same way:
terminal, still pending (poll again after a paced delay), or pending for too long.
"""

from __future__ import annotations

import random

from bridge import lance, ledger, model, pacing
from bridge import settings as settings_mod

# The states' plain string values, bound once: read for every row of the hot paths, where an
# enum attribute lookup (Python 3.11) or a str subclass bound as an SQL parameter (sqlite3
# adapts those one by one) would cost more than the string did.
_PENDING = model.EnrichmentState.PENDING.value
_EXPIRED = model.EnrichmentState.EXPIRED.value
_LOST = model.EnrichmentState.LOST.value


def interpret(
    row_id: int,
    record: lance.Enrichment,
    age_s: float,
    now: float,
    *,
    config: settings_mod.PollSettings,
    rng: random.Random,
) -> ledger.Change:
    """The ledger change a Lance record calls for."""
    # The record is the caller's own decoded answer: it is kept as is, not copied.
    status = record.get("status")
    if status in lance.TERMINAL_STATUSES:
        return ledger.Change(row_id, str(status), record, None, record.get("error"))
    if age_s >= config.expire_after_seconds:
        reason = f"still pending at Lance after {age_s:.0f} s"
        return ledger.Change(row_id, _EXPIRED, record, None, reason)
    delay = pacing.poll_delay(age_s, config, rng)
    return ledger.Change(row_id, _PENDING, record, now + delay)


def missing(
    row_id: int,
    age_s: float,
    now: float,
    *,
    config: settings_mod.PollSettings,
    rng: random.Random,
) -> ledger.Change:
    """The change for a row Lance returned no record for: wait, then call it ``lost``."""
    if age_s >= config.lost_after_seconds:
        reason = f"Lance kept no record after {age_s:.0f} s"
        return ledger.Change(row_id, _LOST, error=reason)
    return ledger.Change(row_id, _PENDING, next_poll_at=now + pacing.poll_delay(age_s, config, rng))
