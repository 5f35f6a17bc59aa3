//! Bank data in the reconciler (DESIGN.md, "Bank data"): every pass tries the credits still
//! waiting for their payment again ([`run`]), and every tick counts the active connections
//! by the state of their authorization (`payhook_bank_authorizations{status}`): a lapsed
//! bank authorization stops the feed without a word, so it must be an alert.

use payhook_shared::domain::bank_matching::{self, Retried};
use payhook_shared::domain::BANK_AUTHORIZATION_STATUSES;
use sqlx::PgPool;

/// An authorization that runs out within this many days counts as `expiring`.
const EXPIRING_DAYS: i32 = 7;

/// Tries every unmatched and ambiguous credit again.
pub async fn run(pool: &PgPool) -> anyhow::Result<Retried> {
    let r = bank_matching::retry_waiting(pool).await?;
    if r.matched > 0 {
        tracing::info!(
            tried = r.tried,
            matched = r.matched,
            "waiting bank credits matched"
        );
    }
    Ok(r)
}

/// `payhook_bank_authorizations{status}` over active connections: `expired` once the expiry
/// is past (or the bank said so), `expiring` within 7 days, `revoked` when the bank revoked
/// the authorization while the connection stands, else `valid` (no expiry known counts as
/// valid). Every status is set, to 0 when none, so an alert resolves.
pub async fn refresh_authorizations(pool: &PgPool) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s, count(*) FROM (
             SELECT CASE
                 WHEN authorization_status = 'revoked' THEN 'revoked'
                 WHEN authorization_status = 'expired' OR authorization_expires_at <= now() THEN 'expired'
                 WHEN authorization_status = 'expiring'
                      OR authorization_expires_at <= now() + make_interval(days => $1) THEN 'expiring'
                 ELSE 'valid' END AS s
             FROM bank_connections WHERE status = 'active') c
         GROUP BY s",
    )
    .bind(EXPIRING_DAYS)
    .fetch_all(pool)
    .await?;
    for status in BANK_AUTHORIZATION_STATUSES {
        let n = rows.iter().find(|(s, _)| s == status).map_or(0, |r| r.1);
        metrics::gauge!("payhook_bank_authorizations", "status" => status).set(n as f64);
    }
    Ok(())
}

pub fn register_metrics() {
    metrics::describe_gauge!(
        "payhook_bank_authorizations",
        "Active bank connections by the state of their authorization (expiring: within 7 days)"
    );
    for status in BANK_AUTHORIZATION_STATUSES {
        metrics::gauge!("payhook_bank_authorizations", "status" => status).set(0.0);
    }
}
