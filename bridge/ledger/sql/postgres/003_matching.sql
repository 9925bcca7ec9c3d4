-- Matching CRM records to Lance people (DESIGN §12).

-- An inbound event of a record without a Lance id waits in state `matching` until the match
-- job has searched its key; then it is matched (tasks accepted), unmatched or ambiguous.
ALTER TABLE inbound ADD COLUMN match_key  text;   -- the normalised search key
ALTER TABLE inbound ADD COLUMN request    text;   -- fields, targets, write-back (JSON)
ALTER TABLE inbound ADD COLUMN entity_id  text;   -- the Lance person found
ALTER TABLE inbound ADD COLUMN candidates text;   -- the Lance ids of an ambiguous match (JSON)
ALTER TABLE inbound ADD COLUMN attempts   integer NOT NULL DEFAULT 0;
ALTER TABLE inbound ADD COLUMN attempt_at double precision;   -- a search that failed is retried from then

CREATE INDEX inbound_matching ON inbound (received_at) WHERE state = 'matching';
CREATE INDEX inbound_by_state ON inbound (state, received_at);
-- An ambiguous record settled by a manual trigger naming it.
CREATE INDEX inbound_by_record ON inbound (source, object_type, object_id)
    WHERE state IN ('ambiguous', 'unmatched');

-- Each distinct key is searched once: a record re-sent, retried or duplicated costs nothing.
CREATE TABLE matches (
    key         text PRIMARY KEY,
    outcome     text NOT NULL,                  -- matched | unmatched | ambiguous
    entity_id   text,                           -- the one person found
    candidates  text NOT NULL DEFAULT '[]',     -- Lance ids of every person found (JSON)
    reason      text,                           -- why it is not a match
    searched_at double precision NOT NULL
);

-- Lance ids found for CRM records, waiting to be written to the record's Lance-id property.
CREATE TABLE write_backs (
    source          text NOT NULL,              -- the connector
    object_type     text NOT NULL,
    object_id       text NOT NULL,
    entity_id       text NOT NULL,
    state           text NOT NULL,              -- pending | done | dead
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL,
    error           text,
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL,
    PRIMARY KEY (source, object_type, object_id)
);

CREATE INDEX write_backs_due ON write_backs (next_attempt_at) WHERE state = 'pending';

-- The match job claims the write-backs it sends (its events use inbound's claim columns).
ALTER TABLE write_backs ADD COLUMN claimed_by text;
ALTER TABLE write_backs ADD COLUMN claim_expires_at double precision;
