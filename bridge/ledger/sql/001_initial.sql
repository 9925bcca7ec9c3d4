-- The ledger: every accepted enrichment, its CRM targets and the deliveries it caused.
-- Times are Unix seconds (REAL). JSON columns hold Lance's own objects verbatim.

CREATE TABLE enrichments (
    id            INTEGER PRIMARY KEY,
    entity_type   TEXT    NOT NULL,
    entity_id     TEXT    NOT NULL,
    field         TEXT    NOT NULL,
    key           BLOB    NOT NULL,             -- compact (entityType, entityId, field)
    mode          TEXT    NOT NULL,             -- trigger | track
    state         TEXT    NOT NULL,             -- queued | pending | finished | failed | timeout
                                                -- | cancelled | lost | expired
    lance_id      TEXT,
    record        TEXT,                         -- the latest Lance Enrichment object (JSON)
    data_found    INTEGER,
    needs_fetch   INTEGER NOT NULL DEFAULT 0,   -- finished with data, values not read yet
    enriched      TEXT,                         -- the values read from the entity (JSON)
    error         TEXT,
    trigger_sent_at REAL,                       -- a trigger naming it was sent (answer unknown
                                                -- until the row leaves `queued`)
    polls         INTEGER NOT NULL DEFAULT 0,
    created_at    REAL    NOT NULL,
    updated_at    REAL    NOT NULL,
    started_at    REAL,                         -- when Lance first had it (or tracking began)
    next_poll_at  REAL,
    finished_at   REAL
);

-- Every row of one (entityType, entityId, field), in flight or ended. The key is 18 bytes
-- (UUID + two codes) rather than ~50 of text. It is written once, at insert, and never again:
-- a partial unique index over in-flight rows would lose an entry at every terminal state
-- change, and entity ids are random, so each of those removals lands on its own page (it was
-- two thirds of the cost of a status update). One in-flight row per key is kept by the insert
-- itself (INSERT ... WHERE NOT EXISTS an in-flight row), which only the ledger's single
-- writer connection runs, inside its write transaction.
CREATE INDEX enrichments_by_key ON enrichments (key);
CREATE INDEX enrichments_queued ON enrichments (field, id) WHERE state = 'queued';
CREATE INDEX enrichments_due ON enrichments (next_poll_at) WHERE state = 'pending';
CREATE INDEX enrichments_fetch ON enrichments (id) WHERE needs_fetch = 1;
CREATE INDEX enrichments_by_state ON enrichments (state, id);
CREATE INDEX enrichments_by_entity ON enrichments (entity_id);

CREATE TABLE targets (
    enrichment_id INTEGER NOT NULL REFERENCES enrichments (id),
    connector     TEXT    NOT NULL,
    object_type   TEXT    NOT NULL DEFAULT '',
    object_id     TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (enrichment_id, connector, object_type, object_id)
) WITHOUT ROWID;

-- A CRM record's other enrichments, so its results can be written together.
CREATE INDEX targets_by_record ON targets (connector, object_type, object_id)
    WHERE object_id != '';

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    enrichment_id   INTEGER NOT NULL REFERENCES enrichments (id),
    connector       TEXT    NOT NULL,
    object_type     TEXT    NOT NULL DEFAULT '',
    object_id       TEXT    NOT NULL DEFAULT '',
    event_type      TEXT    NOT NULL,
    message_id      TEXT    NOT NULL UNIQUE,     -- stable across retries (webhook-id)
    body            BLOB    NOT NULL,            -- the exact event bytes, re-sent on every retry
    state           TEXT    NOT NULL,            -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_error      TEXT,
    response_status INTEGER,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    UNIQUE (enrichment_id, connector, object_type, object_id)
);

CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_state ON deliveries (state, connector, id);

-- Small facts the jobs keep: last poll time, credit holds.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Events CRMs sent to /hooks/*, kept so a retried or duplicated event never triggers twice
-- (HubSpot retries for a day, Salesforce for 24 h). Pruned after `inbound.retention_days`.
CREATE TABLE inbound (
    source      TEXT NOT NULL,                  -- the connector that received it
    key         TEXT NOT NULL,                  -- the provider's identity of the event
    state       TEXT NOT NULL,                  -- accepted | lookup | skipped
    object_type TEXT NOT NULL DEFAULT '',       -- the CRM record it is about
    object_id   TEXT NOT NULL DEFAULT '',
    detail      TEXT,                           -- why it was skipped
    received_at REAL NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;

CREATE INDEX inbound_lookups ON inbound (source, received_at) WHERE state = 'lookup';
CREATE INDEX inbound_received ON inbound (received_at);
