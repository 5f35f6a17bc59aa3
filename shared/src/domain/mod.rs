//! Domain rules: events → members, payments, ledger, domain outbox (DESIGN.md, "Domain rules").
//!
//! [`process_events`] applies stored events in one PostgreSQL transaction ([`batch`]): lock
//! the event rows, skip those already done, run each handler behind a savepoint, mark each
//! processed (or ignored when no handler exists), or, when its handler failed, retrying or
//! dead, alone. [`process_event`] is a batch of one. Every business write is keyed by a
//! gateway id, so running an event twice changes nothing; every change writes a domain event
//! into `domain_outbox` in the same transaction.
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`batch`] | the worker's transaction: savepoint per event, failures marked alone |
//! | [`status`] | the forward-only payment state machine (pure) |
//! | [`payments`] | upsert a payment through the state machine, ledger rows |
//! | [`members`] | upsert members on mandate_id, member status over time |
//! | [`outbox`] | domain events written beside the change |
//! | [`events`] | the event row: load and lock, mark processed / retrying / dead, replay |
//! | `gocardless_*`, `paystack`, `flutterwave`, `payqi` | one handler per event type |
//! | `bank_transaction`, `bank_connection`, `bank_authorization` | GoCardless bank-account data, one handler per event type |
//! | [`bank_matching`] | a bank credit → the expected payment it pays (worker, reconciler, admin) |
//! | [`reconcile`] | `reconcile.<status>`: a gateway API's answer the reconciler stored |

mod bank_authorization;
mod bank_connection;
pub mod bank_matching;
mod bank_transaction;
pub mod batch;
pub mod events;
mod flutterwave;
mod gocardless_mandates;
mod gocardless_payments;
pub mod members;
pub mod outbox;
pub mod payments;
mod payqi;
mod paystack;
pub mod reconcile;
pub mod status;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::gateway::{GatewayError, Gateways};
use crate::money::MoneyError;

pub use bank_authorization::STATUSES as BANK_AUTHORIZATION_STATUSES;
pub use events::{Event, Processed};

/// Why an event could not be applied. Transient: try again later (the database or a gateway
/// is away). Permanent: retrying won't help (the event is malformed, the gateway says 404, an
/// amount cannot be converted exactly) — the event goes dead until an operator replays it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl DomainError {
    pub fn permanent(msg: impl Into<String>) -> Self {
        Self::Permanent(msg.into())
    }
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl From<sqlx::Error> for DomainError {
    fn from(e: sqlx::Error) -> Self {
        if is_transient_db_error(&e) {
            Self::Transient(format!("database: {e}"))
        } else {
            Self::Permanent(format!("database: {e}"))
        }
    }
}

impl From<GatewayError> for DomainError {
    fn from(e: GatewayError) -> Self {
        match e {
            // Retried, then dead with the message naming the variable to set: the event is
            // fine, the installation is not (yet) configured to read it.
            GatewayError::Transient(m) | GatewayError::NotConfigured(m) => Self::Transient(m),
            // While processing an event a 404 is an answer: the thing does not exist.
            GatewayError::NotFound(m) | GatewayError::Permanent(m) => Self::Permanent(m),
        }
    }
}

impl From<MoneyError> for DomainError {
    fn from(e: MoneyError) -> Self {
        Self::Permanent(format!("amount: {e}"))
    }
}

/// Connection trouble, lock conflicts, an overloaded or restarting server: worth a retry.
/// Constraint violations and decoding errors are the event's (or our code's) fault: not.
pub fn is_transient_db_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // 08: connection exception, 40: serialization failure / deadlock,
            // 53: insufficient resources, 57: operator intervention (admin shutdown), 58: I/O.
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| c.starts_with(class))
        }),
        _ => false,
    }
}

/// What handlers may use besides the database.
#[derive(Debug, Clone)]
pub struct Context {
    pub gateways: Gateways,
    /// `GOCARDLESS_RETRY_FAILED_PAYMENTS`: retry a payment that failed for insufficient funds,
    /// once.
    pub gocardless_retry_failed_payments: bool,
}

/// Whether an event had a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Applied,
    /// No rule for this event type: kept as `ignored`, counted, never an error.
    NoHandler,
}

/// Runs the handler of `event` inside the caller's transaction.
pub async fn apply(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<Handled, DomainError> {
    match (event.provider.as_str(), event.event_type.as_str()) {
        ("gocardless", "mandates.created") => {
            gocardless_mandates::created(conn, ctx, event).await?
        }
        ("gocardless", "mandates.cancelled" | "mandates.failed" | "mandates.expired") => {
            gocardless_mandates::suspended(conn, event).await?
        }
        ("gocardless", "mandates.reinstated") => {
            gocardless_mandates::reinstated(conn, event).await?
        }
        ("gocardless", "payments.created") => {
            gocardless_payments::created(conn, ctx, event).await?
        }
        ("gocardless", "payments.submitted") => {
            gocardless_payments::submitted(conn, ctx, event).await?
        }
        ("gocardless", "payments.confirmed") => {
            gocardless_payments::confirmed(conn, ctx, event).await?
        }
        ("gocardless", "payments.paid_out") => {
            gocardless_payments::paid_out(conn, ctx, event).await?
        }
        ("gocardless", "payments.failed") => gocardless_payments::failed(conn, ctx, event).await?,
        ("gocardless", "payments.cancelled") => {
            gocardless_payments::cancelled(conn, ctx, event).await?
        }
        ("gocardless", "payments.charged_back") => {
            gocardless_payments::charged_back(conn, ctx, event).await?
        }
        ("gocardless", "transaction.created") => {
            bank_transaction::created(conn, ctx, event).await?
        }
        ("gocardless", "connection.revoked") => bank_connection::revoked(conn, event).await?,
        ("gocardless", "authorization.updated") => bank_authorization::updated(conn, event).await?,
        ("paystack", "charge.success") => paystack::charge_success(conn, event).await?,
        ("paystack", "refund.processed") => paystack::refund_processed(conn, event).await?,
        ("flutterwave", "charge.completed") => flutterwave::charge_completed(conn, event).await?,
        (
            "payqi",
            "payment.created" | "payment.pending" | "payment.completed" | "payment.failed"
            | "payment.expired",
        ) => payqi::payment(conn, event).await?,
        // Any provider: the reconciler's record of what the gateway's API answered.
        (_, t) if t.starts_with("reconcile.") => reconcile::payment(conn, event).await?,
        _ => return Ok(Handled::NoHandler),
    }
    Ok(Handled::Applied)
}

/// Applies the event with id `event_id` in one transaction: a batch of one.
pub async fn process_event(
    pool: &PgPool,
    ctx: &Context,
    event_id: i64,
) -> Result<Processed, DomainError> {
    let mut results = batch::process(pool, ctx, &[event_id]).await?;
    Ok(results.remove(0))
}

/// Applies several events in one transaction, each failing alone (see [`batch`]). An `Err`
/// means the transaction itself failed: nothing was kept.
pub async fn process_events(
    pool: &PgPool,
    ctx: &Context,
    event_ids: &[i64],
) -> Result<Vec<Processed>, DomainError> {
    batch::process(pool, ctx, event_ids).await
}

/// Whether an event may share a transaction with others. Not when its handler asks a
/// gateway to DO something (retry a payment): a transaction that fails (its connection lost,
/// its commit refused) is tried again for every event in it, and the gateway must not be asked
/// twice because of another event's transaction.
pub fn may_batch(ctx: &Context, provider: &str, event_type: &str) -> bool {
    !(ctx.gocardless_retry_failed_payments
        && provider == "gocardless"
        && event_type == "payments.failed")
}

// ---- small readers over event payloads, shared by the handlers ------------------------------

/// The string at `path`, if present and a string.
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path)?.as_str().filter(|s| !s.is_empty())
}

/// An id at `path`: a non-empty string, or an integer written as text.
pub(crate) fn id_at(v: &Value, path: &[&str]) -> Option<String> {
    match at(v, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    (!cur.is_null()).then_some(cur)
}

/// A required string, or a permanent error naming the field.
pub(crate) fn required_str<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, DomainError> {
    str_at(v, path).ok_or_else(|| DomainError::permanent(format!("{} is missing", path.join("."))))
}

/// The event's time (the gateway's, else when we received it).
pub(crate) fn when(event: &Event) -> DateTime<Utc> {
    event.occurred_at
}
