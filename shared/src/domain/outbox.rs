//! Domain events for downstream systems, written into `domain_outbox` in the same transaction
//! as the change they describe (the relay publishes them to the domain exchange). The payload
//! is `{"type", "occurred_at", "payment"|"member"|"transaction": {...the row...}}`, the row as
//! it is after the change.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// `payment.<status>` or `payment.updated`, with the payment row.
pub async fn payment(
    conn: &mut PgConnection,
    event_type: &str,
    payment_id: i64,
    occurred_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO domain_outbox (event_type, payload)
         SELECT $1, jsonb_build_object('type', $1::text, 'occurred_at', $2::timestamptz,
                                       'payment', to_jsonb(p))
         FROM payments p WHERE p.id = $3",
    )
    .bind(event_type)
    .bind(occurred_at)
    .bind(payment_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// `member.created`, `member.updated`, `member.suspended`, `member.reinstated`, with the row.
pub async fn member(
    conn: &mut PgConnection,
    event_type: &str,
    member_id: i64,
    occurred_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO domain_outbox (event_type, payload)
         SELECT $1, jsonb_build_object('type', $1::text, 'occurred_at', $2::timestamptz,
                                       'member', to_jsonb(m))
         FROM members m WHERE m.id = $3",
    )
    .bind(event_type)
    .bind(occurred_at)
    .bind(member_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// `transaction.recorded`: a new ledger row, with the row and its payment.
pub async fn transaction(
    conn: &mut PgConnection,
    transaction_id: i64,
    occurred_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO domain_outbox (event_type, payload)
         SELECT 'transaction.recorded',
                jsonb_build_object('type', 'transaction.recorded', 'occurred_at', $1::timestamptz,
                                   'transaction', to_jsonb(t), 'payment', to_jsonb(p))
         FROM transactions t JOIN payments p ON p.id = t.payment_id WHERE t.id = $2",
    )
    .bind(occurred_at)
    .bind(transaction_id)
    .execute(conn)
    .await?;
    Ok(())
}
