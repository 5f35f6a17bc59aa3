-- Retention (DESIGN.md, "Data lifecycle") deletes raw deliveries after RETAIN_DELIVERIES
-- (30d) while their events stay until RETAIN_EVENTS (90d): an event outlives its delivery,
-- and then simply no longer points at one (as the reconciler's events never did).
ALTER TABLE webhook_events DROP CONSTRAINT IF EXISTS webhook_events_delivery_id_fkey;
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_delivery_id_fkey
    FOREIGN KEY (delivery_id) REFERENCES webhook_deliveries (id) ON DELETE SET NULL;
