-- When a `retrying` event's delayed copy is due back on the events queue. A copy can be lost
-- (dead-lettering out of a quorum queue is at-most-once: a copy whose TTL ends while RabbitMQ
-- restarts is dropped), so the event relay republishes a `retrying` event once this is well
-- past. NULL for rows written before this column existed: those are republished at once.
ALTER TABLE webhook_events ADD COLUMN retry_due TIMESTAMPTZ;
CREATE INDEX webhook_events_retrying ON webhook_events (retry_due) WHERE status = 'retrying';
