//! Genuine deliveries payhook could not read (DESIGN.md, "Webhook routes and answers"): the
//! signature was right, the body was not something this version parses. They are answered
//! 400 and kept in `rejected_deliveries`, one row per body (a gateway's retries add
//! attempts), so that a gateway changing its format is an alert and, after the upgrade, a
//! [`reparse`], never a loss. Ingest keeps them ([`keep`]); the admin API and
//! `payhook-worker reparse` list and reparse them.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::intake::{Accepted, Delivery, Intake, IntakeError};
use crate::lookup::{Page, PageRequest};
use crate::providers::{self, Secrets};

/// A `rejected_deliveries` row without its body (lists).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RejectedRow {
    pub id: i64,
    pub provider: String,
    pub body_sha256: String,
    pub reason: String,
    pub attempts: i32,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub reparsed_at: Option<DateTime<Utc>>,
    pub headers: Value,
}

/// A row with its body, as text for a person to read (invalid UTF-8 shown as U+FFFD; the
/// bytes themselves stay untouched in the table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedDetail {
    #[serde(flatten)]
    pub row: RejectedRow,
    pub body: String,
}

const COLUMNS: &str = "id, provider, body_sha256, reason, attempts, first_seen_at, last_seen_at,
    reparsed_at, headers";

/// Keeps a refused body: a new row, or one more attempt (and the latest reason) on the row of
/// the same body. Returns the row's id.
pub async fn keep(
    pool: &PgPool,
    provider: &str,
    headers: &Value,
    body: &[u8],
    reason: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO rejected_deliveries (provider, body_sha256, headers, body, reason)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (provider, body_sha256) DO UPDATE SET
             attempts = rejected_deliveries.attempts + 1, last_seen_at = now(),
             reason = EXCLUDED.reason, headers = EXCLUDED.headers
         RETURNING id",
    )
    .bind(provider)
    .bind(hex::encode(Sha256::digest(body)))
    .bind(headers)
    .bind(body)
    .bind(reason)
    .fetch_one(pool)
    .await
}

/// Rejected deliveries, newest first; only `provider`'s when given.
pub async fn list(
    pool: &PgPool,
    provider: Option<&str>,
    page: PageRequest,
) -> Result<Page<RejectedRow>, sqlx::Error> {
    let rows: Vec<RejectedRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM rejected_deliveries
         WHERE ($1::text IS NULL OR provider = $1) AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(provider)
    .bind(page.cursor)
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(page.page(rows, |r| r.id))
}

/// One rejected delivery with its body.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<RejectedDetail>, sqlx::Error> {
    let Some((row, body)) = fetch(pool, id).await? else {
        return Ok(None);
    };
    Ok(Some(RejectedDetail {
        row,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// How many wait for a reparse (the console's count).
pub async fn waiting(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM rejected_deliveries WHERE reparsed_at IS NULL")
        .fetch_one(pool)
        .await
}

/// The ids of those still waiting, oldest first (`reparse --all`).
pub async fn waiting_ids(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM rejected_deliveries WHERE reparsed_at IS NULL ORDER BY id")
        .fetch_all(pool)
        .await
}

async fn fetch(pool: &PgPool, id: i64) -> Result<Option<(RejectedRow, Vec<u8>)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct WithBody {
        #[sqlx(flatten)]
        row: RejectedRow,
        body: Vec<u8>,
    }
    let found: Option<WithBody> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, body FROM rejected_deliveries WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|w| (w.row, w.body)))
}

/// What a reparse did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Reparsed {
    /// This version reads it: stored, published and confirmed as a normal delivery (its
    /// events then processed by the workers). Reparsing it again stores only duplicates.
    Ingested {
        delivery_id: i64,
        new_event_ids: Vec<i64>,
        duplicates: usize,
    },
    /// This version refuses it too, for `reason` (now the row's reason).
    StillRejected { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ReparseError {
    #[error("no rejected delivery {0}")]
    NotFound(i64),
    /// A row no provider of this version claims (written by a newer one).
    #[error("no provider {0:?} in this version")]
    UnknownProvider(String),
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// Storing or publishing the delivery failed on our side; nothing is marked, try again.
    #[error("{0}")]
    Intake(#[from] IntakeError),
}

/// Parses rejected delivery `id` again with this version; what now parses goes through
/// `intake` exactly as a delivery from the gateway would (stored, published with confirms,
/// deduplicated on the gateway's event ids) and the row is stamped `reparsed_at`. Returns
/// the outcome and the row as it is now.
pub async fn reparse(
    pool: &PgPool,
    intake: &Intake,
    id: i64,
    timeout: Duration,
) -> Result<(Reparsed, RejectedRow), ReparseError> {
    let (row, body) = fetch(pool, id).await?.ok_or(ReparseError::NotFound(id))?;
    // Parsing needs no secret: the signature was verified when the body arrived.
    let provider = providers::by_name(&row.provider, Secrets::new(Vec::<&[u8]>::new()), 0)
        .ok_or_else(|| ReparseError::UnknownProvider(row.provider.clone()))?;
    let outcome = match provider.parse(&body) {
        Err(e) => {
            sqlx::query("UPDATE rejected_deliveries SET reason = $2 WHERE id = $1")
                .bind(id)
                .bind(&e.0)
                .execute(pool)
                .await?;
            Reparsed::StillRejected { reason: e.0 }
        }
        Ok(events) => {
            let accepted: Accepted = intake
                .submit(
                    Delivery {
                        provider: provider.name(),
                        headers: row.headers.clone(),
                        body: Bytes::from(body),
                        events,
                    },
                    timeout,
                )
                .await?;
            sqlx::query(
                "UPDATE rejected_deliveries SET reparsed_at = COALESCE(reparsed_at, now())
                 WHERE id = $1",
            )
            .bind(id)
            .execute(pool)
            .await?;
            Reparsed::Ingested {
                delivery_id: accepted.delivery_id,
                new_event_ids: accepted.new_event_ids,
                duplicates: accepted.duplicates,
            }
        }
    };
    let (row, _) = fetch(pool, id).await?.ok_or(ReparseError::NotFound(id))?;
    Ok((outcome, row))
}
