-- Genuinely signed deliveries that payhook could not read (DESIGN.md, "Webhook routes and
-- answers"): answered 400 and kept here, never in webhook_deliveries / webhook_events, so a
-- gateway's format change is an alert and a reparse after the upgrade, not a loss.
-- A gateway's retries of the same body add attempts to its row (body_sha256 is the hex
-- SHA-256 of the raw body).
CREATE TABLE rejected_deliveries (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider      TEXT        NOT NULL,
    body_sha256   TEXT        NOT NULL,
    headers       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    body          BYTEA       NOT NULL,
    reason        TEXT        NOT NULL,
    attempts      INTEGER     NOT NULL DEFAULT 1,
    first_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when a reparse ingested it (payhook-worker reparse, POST /admin/rejected/{id}/reparse).
    reparsed_at   TIMESTAMPTZ,
    UNIQUE (provider, body_sha256)
);
-- The console's and `reparse --all`'s list: the ones still waiting.
CREATE INDEX rejected_deliveries_waiting ON rejected_deliveries (id) WHERE reparsed_at IS NULL;
