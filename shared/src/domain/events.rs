//! The `webhook_events` row through the worker: load and lock it, mark it processed, ignored,
//! retrying or dead, and put it back in line for a replay.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// A stored event, as its handler sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    pub provider: String,
    pub external_id: String,
    pub event_type: String,
    pub resource_id: Option<String>,
    pub payload: Value,
    /// The payload as PostgreSQL prints it: numbers keep their digits (`10.00`), so amounts
    /// are read from here, not from `payload` (see [`crate::money`]).
    pub payload_text: String,
    /// The gateway's time for the event, else when we received it.
    pub occurred_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i32,
}

/// What processing did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its handler ran; the event is `processed`.
    Processed,
    /// No handler for its type; the event is `ignored`.
    Ignored,
    /// It was already processed or ignored (a redelivery or a replay): nothing done.
    AlreadyDone,
    /// No event with that id in this database.
    Missing,
    /// Its handler failed transiently: rolled back alone, the event is `retrying` (attempt
    /// `attempt`, due back after `delay`); the message goes to that delay queue.
    Retrying {
        attempt: i32,
        delay: &'static str,
        error: String,
    },
    /// Its handler failed permanently, or after the last retry: rolled back alone, the event
    /// is `dead` with `error`; the message goes to the dead letters.
    Dead { attempts: i32, error: String },
}

impl Outcome {
    /// The `outcome` label of `payhook_events_processed_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::AlreadyDone => "duplicate",
            Self::Missing => "missing",
            Self::Retrying { .. } => "retry",
            Self::Dead { .. } => "dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    pub outcome: Outcome,
}

/// The columns of [`Event`], as the worker loads them.
pub(super) const EVENT_COLUMNS: &str =
    "id, provider, external_id, event_type, resource_id, payload,
    payload::text AS payload_text, COALESCE(occurred_at, received_at) AS occurred_at,
    status, attempts";

/// Records a transient failure: one more attempt, status `retrying`, the error, due at once
/// until [`record_retry_due`] says when (so the relay finds it either way). Returns the
/// attempt count now, or `None` if the event is already done or gone (then there is nothing
/// to retry).
pub async fn record_retry(
    pool: &PgPool,
    event_id: i64,
    error: &str,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE webhook_events SET attempts = attempts + 1, status = 'retrying', last_error = $2,
                                   retry_due = now()
         WHERE id = $1 AND status NOT IN ('processed', 'ignored')
         RETURNING attempts",
    )
    .bind(event_id)
    .bind(truncate(error))
    .fetch_optional(pool)
    .await
}

/// Records when the event's delayed copy is due back; the event relay republishes it if it
/// is still `retrying` well after that (a delayed copy can be lost in a broker restart).
pub async fn record_retry_due(
    pool: &PgPool,
    event_id: i64,
    delay: std::time::Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_events SET retry_due = now() + make_interval(secs => $2)
         WHERE id = $1 AND status = 'retrying'",
    )
    .bind(event_id)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that the event went dead with `error`. `new_attempt`: true for a permanent error
/// (this attempt is counted now), false after the last retry (already counted by
/// [`record_retry`]).
pub async fn record_dead(
    pool: &PgPool,
    event_id: i64,
    error: &str,
    new_attempt: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_events SET attempts = attempts + $3::int, status = 'dead', last_error = $2
         WHERE id = $1 AND status NOT IN ('processed', 'ignored')",
    )
    .bind(event_id)
    .bind(truncate(error))
    .bind(i32::from(new_attempt))
    .execute(pool)
    .await?;
    Ok(())
}

/// An event to publish again, as the message the worker consumes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReplayTarget {
    pub id: i64,
    pub provider: String,
    pub external_id: String,
    pub event_type: String,
    pub status: String,
}

/// The events an operator named: payhook's numeric id, or the gateway's event id (which may
/// match one event per provider). Unknown names are returned apart.
pub async fn find_for_replay(
    pool: &PgPool,
    names: &[String],
) -> Result<(Vec<ReplayTarget>, Vec<String>), sqlx::Error> {
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for name in names {
        let numeric: Option<i64> = name.parse().ok();
        let rows: Vec<ReplayTarget> = sqlx::query_as(
            "SELECT id, provider, external_id, event_type, status FROM webhook_events
             WHERE id = $1 OR external_id = $2 ORDER BY id",
        )
        .bind(numeric)
        .bind(name)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            unknown.push(name.clone());
        }
        for r in rows {
            if !found.iter().any(|f: &ReplayTarget| f.id == r.id) {
                found.push(r);
            }
        }
    }
    Ok((found, unknown))
}

/// Every event whose status is `dead`, oldest first.
pub async fn dead_events(pool: &PgPool) -> Result<Vec<ReplayTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, external_id, event_type, status FROM webhook_events
         WHERE last_error IS NOT NULL AND status = 'dead' ORDER BY id",
    )
    .fetch_all(pool)
    .await
}

/// Error texts are ours (no personal data), but may quote a long chain; keep the column tidy.
pub(super) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(2000) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
