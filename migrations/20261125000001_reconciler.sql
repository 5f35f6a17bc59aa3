-- What the reconciler needs beyond the worker's schema.

-- When the reconciler last asked a payment's gateway about it, and what went wrong if the
-- call failed. A payment still pending or submitted is asked again only after PENDING_AFTER:
-- a GoCardless direct debit stays `submitted` for days, and asking about every one of them
-- every RECONCILE_INTERVAL would burn the gateway's rate limit. A table of its own, not a
-- column of `payments`: domain events carry the payments row, and this is not part of it.
CREATE TABLE reconciler_checks (
    payment_id  BIGINT PRIMARY KEY REFERENCES payments (id) ON DELETE CASCADE,
    checked_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The gateway's status word at the last successful call (`success`, `pending_submission`).
    gateway_status TEXT,
    -- The error of the last call, NULL when it succeeded. Ours: method, path, HTTP status.
    last_error  TEXT
);
