-- Status changes without index churn. PostgreSQL updates a row in place (a HOT update, no
-- index touched) only when no indexed column changes, and the columns of a partial index's
-- WHERE count as indexed. The worker's write per event (status → processed, processed_at)
-- now changes no indexed column: the index on status goes, and the partial indexes that find
-- unfinished events are keyed on columns that the worker's hot path leaves alone.
DROP INDEX IF EXISTS webhook_events_status;
DROP INDEX IF EXISTS webhook_events_unpublished;
DROP INDEX IF EXISTS webhook_events_retrying;

-- Never published (the event relay, the oldest-unpublished gauge): published_at is stamped
-- once, by ingest (or the relay) after the broker's confirm.
CREATE INDEX webhook_events_unpublished ON webhook_events (received_at) WHERE published_at IS NULL;

-- Retrying events by when their delayed copy is due. retry_due is set with every retry
-- (never NULL on a retrying row from now on) and cleared when the event is done.
UPDATE webhook_events SET retry_due = now() WHERE status = 'retrying' AND retry_due IS NULL;
UPDATE webhook_events SET retry_due = NULL WHERE status IN ('processed', 'ignored') AND retry_due IS NOT NULL;
CREATE INDEX webhook_events_retrying ON webhook_events (retry_due) WHERE retry_due IS NOT NULL;

-- Events that ever failed (dead lists, replay --dead): last_error is written on failure only.
CREATE INDEX webhook_events_failed ON webhook_events (id) WHERE last_error IS NOT NULL;

-- Room on each page for the processed version of its rows, so it stays on the same page
-- (a HOT update needs that too).
ALTER TABLE webhook_events SET (fillfactor = 80);
