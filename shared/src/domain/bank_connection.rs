//! GoCardless bank-account data `connection.revoked` → the `bank_connections` row `revoked`
//! (created so if it is the first we hear of the connection). Revoked is final: nothing in the
//! feed makes a connection active again, so a late event of any kind leaves it revoked, and
//! the connection's transactions, late ones included, are still stored.

use sqlx::PgConnection;

use super::outbox;
use super::{str_at, when, DomainError, Event};

pub(super) async fn revoked(conn: &mut PgConnection, event: &Event) -> Result<(), DomainError> {
    let connection = str_at(&event.payload, &["links", "connection"])
        .ok_or_else(|| DomainError::permanent("links.connection is missing"))?;
    sqlx::query(&format!(
        "WITH c AS (
             INSERT INTO bank_connections (connection_id, status, status_changed_at)
             VALUES ($1, 'revoked', $2)
             ON CONFLICT (connection_id) DO UPDATE
                 SET status = 'revoked', status_changed_at = EXCLUDED.status_changed_at,
                     updated_at = now()
                 WHERE bank_connections.status <> 'revoked'
             RETURNING *)
         {outbox}",
        outbox = outbox::insert_from("c", "bank_connection", "'bank_connection.revoked'", "$2"),
    ))
    .bind(connection)
    .bind(when(event))
    .execute(conn)
    .await?;
    Ok(())
}
