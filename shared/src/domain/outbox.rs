//! Domain events for downstream systems, written into `domain_outbox` in the same transaction
//! as the change they describe (the relay publishes them to the domain exchange). The payload
//! is `{"type", "occurred_at", "payment"|"member"|"transaction": {...the row...}}`, the row as
//! it is after the change.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// The outbox write as part of another statement: a data-modifying CTE that inserts one
/// domain event per row of the CTE `rows` (the changed rows, as RETURNING gave them), under the
/// key `key` (`payment`, `member`). `type_sql` and `at_sql` are SQL expressions (usually bind
/// parameters) for the event type and its time. One round trip for the change and its event,
/// and the payload shape stays the one written below.
pub fn insert_from(rows: &str, key: &str, type_sql: &str, at_sql: &str) -> String {
    format!(
        "INSERT INTO domain_outbox (event_type, payload)
         SELECT {type_sql}, jsonb_build_object('type', ({type_sql})::text,
                                               'occurred_at', ({at_sql})::timestamptz,
                                               '{key}', to_jsonb({rows}))
         FROM {rows}"
    )
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

/// `transaction.recorded` for each new ledger row of the CTE `rows`, with the row and its
/// payment as the statement sees it (see [`insert_from`]).
pub fn transaction_from(rows: &str, at_sql: &str) -> String {
    format!(
        "INSERT INTO domain_outbox (event_type, payload)
         SELECT 'transaction.recorded',
                jsonb_build_object('type', 'transaction.recorded',
                                   'occurred_at', ({at_sql})::timestamptz,
                                   'transaction', to_jsonb({rows}), 'payment', to_jsonb(p))
         FROM {rows} JOIN payments p ON p.id = {rows}.payment_id"
    )
}
