-- What the dashboard's pages read at 1,000,000 rows without scanning a table. Each is written
-- once per row, at insert or at the one change it covers, in nearly ascending order: the write
-- paths pay little for them.

-- The overview's throughput chart: enrichments ended and deliveries acknowledged per minute.
CREATE INDEX enrichments_finished ON enrichments (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX deliveries_acknowledged ON deliveries (updated_at) WHERE state = 'delivered';
-- The connectors page: each connector's most recent delivery error.
CREATE INDEX deliveries_errors ON deliveries (connector, updated_at) WHERE last_error IS NOT NULL;
-- The enrichments page's field and CRM record filters (field never changes after insert).
CREATE INDEX enrichments_by_field ON enrichments (field, id);
-- The enrichments page's creation-time filter (created_at never changes after insert).
CREATE INDEX enrichments_by_created ON enrichments (created_at);
CREATE INDEX targets_by_object ON targets (object_id) WHERE object_id != '';
