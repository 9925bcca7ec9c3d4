-- The serve replicas sharing this database: each registers and heartbeats, so `status` and
-- /metrics can show who is alive and what each holds.
CREATE TABLE replicas (
    id             text             PRIMARY KEY,
    started_at     double precision NOT NULL,
    last_heartbeat double precision NOT NULL
);

-- The inbound lookup job claims the events it reads, as the other jobs claim their rows.
ALTER TABLE inbound ADD COLUMN claimed_by text;
ALTER TABLE inbound ADD COLUMN claim_expires_at double precision;
