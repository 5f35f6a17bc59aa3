//! GoCardless bank-account data `authorization.updated` → the connection's
//! `authorization_status` (`details.status`: valid, expiring, expired, revoked) and
//! `authorization_expires_at` (`details.expires_at`, RFC 3339). Updates arrive out of order:
//! one older than the last applied (`authorization_updated_at`) changes nothing. A lapsed
//! authorization silently stops the bank feed, so the reconciler turns these columns into
//! `payhook_bank_authorizations{status}` for an alert.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::outbox;
use super::{str_at, when, DomainError, Event};

pub const STATUSES: [&str; 4] = ["valid", "expiring", "expired", "revoked"];

pub(super) async fn updated(conn: &mut PgConnection, event: &Event) -> Result<(), DomainError> {
    let p = &event.payload;
    let connection = str_at(p, &["links", "connection"])
        .ok_or_else(|| DomainError::permanent("links.connection is missing"))?;
    let status = str_at(p, &["details", "status"])
        .filter(|s| STATUSES.contains(s))
        .ok_or_else(|| {
            DomainError::permanent("details.status is not valid, expiring, expired or revoked")
        })?;
    let expires_at = str_at(p, &["details", "expires_at"])
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| DomainError::permanent("details.expires_at is not an RFC 3339 time"))
        })
        .transpose()?;
    sqlx::query(&format!(
        "WITH c AS (
             INSERT INTO bank_connections (connection_id, authorization_status,
                                           authorization_expires_at, authorization_updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (connection_id) DO UPDATE
                 SET authorization_status = EXCLUDED.authorization_status,
                     authorization_expires_at = COALESCE(EXCLUDED.authorization_expires_at,
                                                         bank_connections.authorization_expires_at),
                     authorization_updated_at = EXCLUDED.authorization_updated_at,
                     updated_at = now()
                 WHERE bank_connections.authorization_updated_at IS NULL
                    OR bank_connections.authorization_updated_at <= EXCLUDED.authorization_updated_at
             RETURNING *)
         {outbox}",
        outbox = outbox::insert_from(
            "c",
            "bank_connection",
            "'bank_connection.authorization_updated'",
            "$4"
        ),
    ))
    .bind(connection)
    .bind(status)
    .bind(expires_at)
    .bind(when(event))
    .execute(conn)
    .await?;
    Ok(())
}
