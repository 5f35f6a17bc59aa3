-- Bank data (DESIGN.md, "Bank data"): GoCardless bank-account connections and the bank
-- transactions they report, each matched to the expected payment it pays.

CREATE TABLE bank_connections (
    id                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id            TEXT        NOT NULL UNIQUE,
    status                   TEXT        NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'revoked')),
    authorization_status     TEXT
        CHECK (authorization_status IN ('valid', 'expiring', 'expired', 'revoked')),
    authorization_expires_at TIMESTAMPTZ,
    -- When the gateway changed `status` (the revocation's time).
    status_changed_at        TIMESTAMPTZ,
    -- The time of the authorization event applied last: an older one that arrives late
    -- never overwrites a newer one.
    authorization_updated_at TIMESTAMPTZ,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE bank_transactions (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The gateway's connection id (bank_connections.connection_id): a transaction may arrive
    -- before anything else about its connection.
    connection_id  TEXT        NOT NULL,
    transaction_id TEXT        NOT NULL,
    account_id     TEXT,
    booked_on      DATE        NOT NULL,
    amount_minor   BIGINT      NOT NULL,
    currency       TEXT        NOT NULL,
    reference      TEXT,
    counterparty   TEXT,
    match_status   TEXT        NOT NULL
        CHECK (match_status IN ('unmatched', 'matched', 'ambiguous', 'ignored')),
    payment_id     BIGINT REFERENCES payments (id),
    matched_at     TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (connection_id, transaction_id)
);
-- Credits still waiting for their payment, tried again when one is registered and on every
-- reconciler pass.
CREATE INDEX bank_transactions_waiting ON bank_transactions (amount_minor, currency)
    WHERE match_status IN ('unmatched', 'ambiguous');
CREATE INDEX bank_transactions_payment ON bank_transactions (payment_id) WHERE payment_id IS NOT NULL;
CREATE INDEX bank_transactions_transaction ON bank_transactions (transaction_id);

-- The payments a credit can pay: looked up by amount and currency.
CREATE INDEX payments_expected ON payments (amount_minor, currency)
    WHERE status IN ('pending', 'submitted');

-- One completion per payment, whatever reported it: the gateway's own event
-- (external_ref = the payment's id) or a matched bank credit (external_ref = bank:<id>).
-- Without it a payment matched by a bank transfer and later confirmed by its gateway would
-- be two ledger rows.
CREATE UNIQUE INDEX transactions_one_completion ON transactions (payment_id) WHERE kind = 'payment';
