-- What the worker needs beyond the initial schema.

-- When the member's current status was set, by the gateway's clock (the event's created_at):
-- a late, older mandate event (a `created` after a `cancelled`) must not undo a newer status.
-- NULL: set without a dated event (a member created from the API for a payment); any dated
-- status event wins over it.
ALTER TABLE members ADD COLUMN status_changed_at TIMESTAMPTZ;

-- A member created after its payments (out-of-order events) is linked to them by mandate.
CREATE INDEX payments_mandate ON payments (mandate_id);
