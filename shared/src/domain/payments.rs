//! Payments and the ledger. A payment is upserted on (provider, external_id) and its status
//! goes through [`PaymentStatus::merge`], so it only moves forward; ledger rows are keyed
//! UNIQUE(payment_id, kind, external_ref), so a completion reported twice is one row.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::PgConnection;

use super::outbox;
use super::status::PaymentStatus;
use super::DomainError;

/// A `payments` row (without its timestamps).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Payment {
    pub id: i64,
    pub provider: String,
    pub external_id: String,
    pub reference: Option<String>,
    pub member_id: Option<i64>,
    pub mandate_id: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub status: String,
    pub failure_reason: Option<String>,
    pub metadata: Value,
}

impl Payment {
    pub fn status(&self) -> PaymentStatus {
        // The column's CHECK constraint lists exactly the statuses we know.
        self.status.parse().unwrap_or(PaymentStatus::Pending)
    }

    /// Amount and currency, or a permanent error: a ledger row needs both.
    pub fn amount(&self) -> Result<(i64, &str), DomainError> {
        match (self.amount_minor, self.currency.as_deref()) {
            (Some(a), Some(c)) => Ok((a, c)),
            _ => Err(DomainError::permanent(format!(
                "payment {} has no amount or currency",
                self.id
            ))),
        }
    }
}

pub(crate) const COLUMNS: &str =
    "id, provider, external_id, reference, member_id, mandate_id, amount_minor, \
                       currency, status, failure_reason, metadata";

/// What one event says about a payment. `None` fields say nothing (the row keeps its value).
#[derive(Debug, Clone)]
pub struct PaymentUpdate<'a> {
    pub provider: &'a str,
    pub external_id: &'a str,
    pub status: PaymentStatus,
    pub reference: Option<&'a str>,
    pub mandate_id: Option<&'a str>,
    pub amount_minor: Option<i64>,
    pub currency: Option<&'a str>,
    pub failure_reason: Option<&'a str>,
    /// Merged into the row's metadata (the gateway's other ids).
    pub metadata: Map<String, Value>,
    pub occurred_at: DateTime<Utc>,
}

impl<'a> PaymentUpdate<'a> {
    pub fn new(
        provider: &'a str,
        external_id: &'a str,
        status: PaymentStatus,
        occurred_at: DateTime<Utc>,
    ) -> Self {
        Self {
            provider,
            external_id,
            status,
            reference: None,
            mandate_id: None,
            amount_minor: None,
            currency: None,
            failure_reason: None,
            metadata: Map::new(),
            occurred_at,
        }
    }
}

/// The payment with this gateway id, if we have it.
pub async fn find(
    conn: &mut PgConnection,
    provider: &str,
    external_id: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE provider = $1 AND external_id = $2"
    ))
    .bind(provider)
    .bind(external_id)
    .fetch_optional(conn)
    .await
}

/// The payment with this gateway id, locked until the transaction ends, if we have it: what
/// [`apply_to`] needs to update it without reading it again.
pub async fn find_for_update(
    conn: &mut PgConnection,
    provider: &str,
    external_id: &str,
) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM payments WHERE provider = $1 AND external_id = $2 FOR UPDATE"
    ))
    .bind(provider)
    .bind(external_id)
    .fetch_optional(conn)
    .await
}

/// Creates or updates the payment, status merged forward, and writes the domain event of the
/// change (`payment.<status>` when the status moved, `payment.updated` when only details
/// were filled in, nothing when nothing changed). Two statements whether the payment is new
/// or known: lock it, then insert or update it.
pub async fn apply(conn: &mut PgConnection, u: &PaymentUpdate<'_>) -> Result<Payment, DomainError> {
    let current = find_for_update(conn, u.provider, u.external_id).await?;
    apply_to(conn, u, current).await
}

/// [`apply`] for a caller that has already locked the row ([`find_for_update`]): `current`
/// is what that found (None: no such payment then).
pub async fn apply_to(
    conn: &mut PgConnection,
    u: &PaymentUpdate<'_>,
    current: Option<Payment>,
) -> Result<Payment, DomainError> {
    let old = match current {
        Some(old) => old,
        None => match insert(conn, u).await? {
            Some(p) => return Ok(p),
            // Another transaction inserted it since we looked: now it can be locked.
            None => find_for_update(conn, u.provider, u.external_id)
                .await?
                .ok_or_else(|| DomainError::Transient("payment vanished while applying".into()))?,
        },
    };
    let metadata = Value::Object(u.metadata.clone());
    let status = old.status().merge(u.status);
    let moved = status != old.status();
    // The reason belongs to the status that stays; an older event's reason never replaces it.
    let failure_reason = if moved {
        reason_for(status, u.failure_reason).map(str::to_owned)
    } else {
        old.failure_reason.clone()
    };
    // Amount and currency go together: an event never pairs its amount with another's currency.
    let (amount, currency) = match (old.amount_minor, &old.currency) {
        (Some(a), Some(c)) => (Some(a), Some(c.clone())),
        _ => (
            u.amount_minor.or(old.amount_minor),
            u.currency
                .map(str::to_ascii_uppercase)
                .or(old.currency.clone()),
        ),
    };
    // The domain event in the same statement: `payment.<status>` when the status moved,
    // `payment.updated` when only details changed (`old` is the row before this statement).
    let new: Payment = sqlx::query_as(&format!(
        "WITH old AS (SELECT * FROM payments WHERE id = $1),
         u AS (
             UPDATE payments SET
                 reference = COALESCE(reference, $2),
                 mandate_id = COALESCE(mandate_id, $3),
                 member_id = COALESCE(member_id, (SELECT id FROM members WHERE mandate_id = COALESCE(payments.mandate_id, $3))),
                 amount_minor = $4, currency = $5, status = $6, failure_reason = $7,
                 metadata = metadata || $8, updated_at = now()
             WHERE id = $1
             RETURNING *),
         changed AS (
             SELECT u.* FROM u, old
             WHERE $9 OR (u.reference, u.member_id, u.mandate_id, u.amount_minor, u.currency,
                          u.status, u.failure_reason, u.metadata)
                         IS DISTINCT FROM
                         (old.reference, old.member_id, old.mandate_id, old.amount_minor,
                          old.currency, old.status, old.failure_reason, old.metadata)),
         o AS ({outbox})
         SELECT {COLUMNS} FROM u",
        outbox = outbox::insert_from(
            "changed",
            "payment",
            "CASE WHEN $9 THEN $10 ELSE 'payment.updated' END",
            "$11"
        ),
    ))
    .bind(old.id)
    .bind(u.reference)
    .bind(u.mandate_id)
    .bind(amount)
    .bind(currency)
    .bind(status.as_str())
    .bind(failure_reason)
    .bind(&metadata)
    .bind(moved)
    .bind(format!("payment.{status}"))
    .bind(u.occurred_at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(new)
}

/// Inserts the payment with its domain event; None when it exists already.
async fn insert(
    conn: &mut PgConnection,
    u: &PaymentUpdate<'_>,
) -> Result<Option<Payment>, sqlx::Error> {
    let metadata = Value::Object(u.metadata.clone());
    sqlx::query_as(&format!(
        "WITH p AS (
             INSERT INTO payments (provider, external_id, reference, member_id, mandate_id,
                                   amount_minor, currency, status, failure_reason, metadata)
             VALUES ($1, $2, $3, (SELECT id FROM members WHERE mandate_id = $4), $4, $5, $6, $7, $8, $9)
             ON CONFLICT (provider, external_id) DO NOTHING
             RETURNING *),
         o AS ({outbox})
         SELECT {COLUMNS} FROM p",
        outbox = outbox::insert_from("p", "payment", "$10", "$11"),
    ))
    .bind(u.provider)
    .bind(u.external_id)
    .bind(u.reference)
    .bind(u.mandate_id)
    .bind(u.amount_minor)
    .bind(u.currency.map(str::to_ascii_uppercase))
    .bind(u.status.as_str())
    .bind(reason_for(u.status, u.failure_reason))
    .bind(&metadata)
    .bind(format!("payment.{}", u.status))
    .bind(u.occurred_at)
    .fetch_optional(conn)
    .await
}

/// Only the statuses that end an attempt carry a reason.
fn reason_for(status: PaymentStatus, reason: Option<&str>) -> Option<&str> {
    match status {
        PaymentStatus::Failed
        | PaymentStatus::Cancelled
        | PaymentStatus::Expired
        | PaymentStatus::ChargedBack => reason,
        _ => None,
    }
}

/// The kinds of ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Payment,
    Refund,
    Chargeback,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
            Self::Chargeback => "chargeback",
        }
    }
}

/// Adds a ledger row unless one with the same (payment, kind, external_ref) exists, or, for
/// a `payment` row, unless the payment already has one (a payment completes once, whether its
/// gateway or a matched bank credit said so: index `transactions_one_completion`); writes
/// `transaction.recorded` when it adds one. `amount_minor` is signed: refunds and
/// chargebacks are negative.
pub async fn record_transaction(
    conn: &mut PgConnection,
    payment: &Payment,
    kind: Kind,
    external_ref: &str,
    amount_minor: i64,
    currency: &str,
    occurred_at: DateTime<Utc>,
) -> Result<bool, DomainError> {
    // The ledger row and its `transaction.recorded` in one statement; the payment as this
    // transaction sees it now.
    let id: Option<i64> = sqlx::query_scalar(&format!(
        "WITH t AS (
             INSERT INTO transactions (payment_id, member_id, kind, external_ref, amount_minor, currency, occurred_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING
             RETURNING *),
         o AS ({outbox})
         SELECT id FROM t",
        outbox = outbox::transaction_from("t", "$7"),
    ))
    .bind(payment.id)
    .bind(payment.member_id)
    .bind(kind.as_str())
    .bind(external_ref)
    .bind(amount_minor)
    .bind(currency.to_ascii_uppercase())
    .bind(occurred_at)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id.is_some())
}

/// The positive `payment` row of a completed payment (external_ref: its external_id).
pub async fn record_completion(
    conn: &mut PgConnection,
    payment: &Payment,
    occurred_at: DateTime<Utc>,
) -> Result<bool, DomainError> {
    let (amount, currency) = payment.amount()?;
    let currency = currency.to_owned();
    record_transaction(
        conn,
        payment,
        Kind::Payment,
        &payment.external_id.clone(),
        amount,
        &currency,
        occurred_at,
    )
    .await
}

/// The negative `chargeback` row (external_ref: the payment's external_id).
pub async fn record_chargeback(
    conn: &mut PgConnection,
    payment: &Payment,
    occurred_at: DateTime<Utc>,
) -> Result<bool, DomainError> {
    let (amount, currency) = payment.amount()?;
    let currency = currency.to_owned();
    let negative = amount
        .checked_neg()
        .ok_or_else(|| DomainError::permanent("amount out of range"))?;
    record_transaction(
        conn,
        payment,
        Kind::Chargeback,
        &payment.external_id.clone(),
        negative,
        &currency,
        occurred_at,
    )
    .await
}
