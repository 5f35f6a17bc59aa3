-- payhook's schema. Column names are part of the contract (../shared/DESIGN.md, "Data").

-- Every verified delivery, duplicates included: the audit trail of the gateway's retries.
CREATE TABLE webhook_deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    headers     JSONB       NOT NULL DEFAULT '{}'::jsonb,
    body        BYTEA       NOT NULL
);

CREATE TABLE webhook_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL for events the reconciler creates from a gateway's API answer.
    delivery_id  BIGINT REFERENCES webhook_deliveries (id),
    provider     TEXT        NOT NULL,
    external_id  TEXT        NOT NULL,
    event_type   TEXT        NOT NULL,
    resource_id  TEXT,
    payload      JSONB       NOT NULL,
    status       TEXT        NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'published', 'processed', 'retrying', 'dead', 'ignored')),
    attempts     INTEGER     NOT NULL DEFAULT 0,
    last_error   TEXT,
    occurred_at  TIMESTAMPTZ,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ,
    processed_at TIMESTAMPTZ,
    UNIQUE (provider, external_id)
);
-- The relay scans for events never published; keep that scan off the whole table.
CREATE INDEX webhook_events_unpublished ON webhook_events (received_at) WHERE status = 'received';
CREATE INDEX webhook_events_status ON webhook_events (status);
CREATE INDEX webhook_events_resource ON webhook_events (resource_id);
CREATE INDEX webhook_events_delivery ON webhook_events (delivery_id);

CREATE TABLE members (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mandate_id      TEXT        NOT NULL UNIQUE,
    name            TEXT,
    email           TEXT,
    membership_type TEXT        NOT NULL DEFAULT 'individual'
        CHECK (membership_type IN ('individual', 'household', 'corporate', 'lifetime')),
    address_line1   TEXT,
    address_line2   TEXT,
    city            TEXT,
    county          TEXT,
    postcode        TEXT,
    status          TEXT        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    status_reason   TEXT,
    joined_on       DATE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX members_email ON members (lower(email));

CREATE TABLE payments (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider       TEXT        NOT NULL,
    external_id    TEXT        NOT NULL,
    reference      TEXT,
    member_id      BIGINT REFERENCES members (id),
    mandate_id     TEXT,
    amount_minor   BIGINT,
    currency       TEXT,
    status         TEXT        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'submitted', 'completed', 'paid_out', 'failed', 'cancelled',
                          'expired', 'refunded', 'charged_back')),
    failure_reason TEXT,
    metadata       JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, external_id)
);
CREATE INDEX payments_reference ON payments (reference);
CREATE INDEX payments_pending ON payments (updated_at) WHERE status IN ('pending', 'submitted');

-- The ledger. UNIQUE(payment_id, kind, external_ref) makes a payment reported complete twice
-- (webhook and reconciler) still one row.
CREATE TABLE transactions (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id   BIGINT      NOT NULL REFERENCES payments (id),
    member_id    BIGINT REFERENCES members (id),
    kind         TEXT        NOT NULL CHECK (kind IN ('payment', 'refund', 'chargeback')),
    external_ref TEXT        NOT NULL,
    amount_minor BIGINT      NOT NULL,
    currency     TEXT        NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (payment_id, kind, external_ref)
);

-- Domain events written in the same transaction as the change they describe; the relay
-- publishes them to the domain exchange in id order and stamps published_at.
CREATE TABLE domain_outbox (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type   TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX domain_outbox_unpublished ON domain_outbox (id) WHERE published_at IS NULL;
