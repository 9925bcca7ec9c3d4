-- Matching CRM records to Lance people (DESIGN §12).

-- An inbound event of a record without a Lance id waits in state `matching` until the match
-- job has searched its key; then it is matched (tasks accepted), unmatched or ambiguous.
ALTER TABLE inbound ADD COLUMN match_key  TEXT;   -- the normalised search key
ALTER TABLE inbound ADD COLUMN request    TEXT;   -- fields, targets, write-back (JSON)
ALTER TABLE inbound ADD COLUMN entity_id  TEXT;   -- the Lance person found
ALTER TABLE inbound ADD COLUMN candidates TEXT;   -- the Lance ids of an ambiguous match (JSON)
ALTER TABLE inbound ADD COLUMN attempts   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inbound ADD COLUMN attempt_at REAL;   -- a search that failed is retried from then

CREATE INDEX inbound_matching ON inbound (received_at) WHERE state = 'matching';
CREATE INDEX inbound_by_state ON inbound (state, received_at);
-- An ambiguous record settled by a manual trigger naming it.
CREATE INDEX inbound_by_record ON inbound (source, object_type, object_id)
    WHERE state IN ('ambiguous', 'unmatched');

-- Each distinct key is searched once: a record re-sent, retried or duplicated costs nothing.
CREATE TABLE matches (
    key         TEXT PRIMARY KEY,
    outcome     TEXT NOT NULL,                  -- matched | unmatched | ambiguous
    entity_id   TEXT,                           -- the one person found
    candidates  TEXT NOT NULL DEFAULT '[]',     -- Lance ids of every person found (JSON)
    reason      TEXT,                           -- why it is not a match
    searched_at REAL NOT NULL
) WITHOUT ROWID;

-- Lance ids found for CRM records, waiting to be written to the record's Lance-id property.
CREATE TABLE write_backs (
    source          TEXT NOT NULL,              -- the connector
    object_type     TEXT NOT NULL,
    object_id       TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    state           TEXT NOT NULL,              -- pending | done | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    error           TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (source, object_type, object_id)
) WITHOUT ROWID;

CREATE INDEX write_backs_due ON write_backs (next_attempt_at) WHERE state = 'pending';
