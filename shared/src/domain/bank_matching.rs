//! Matching a bank credit to the expected payment it pays (DESIGN.md, "Bank data"): the one
//! payment, pending or submitted, of any provider, whose `reference` appears in the credit's
//! remittance text (case and spaces ignored) with the same amount and currency. One → the
//! payment completes with a ledger row `bank:<transaction_id>`; none → `unmatched`; several →
//! `ambiguous`; debits are `ignored` and never matched.
//!
//! Concurrency: the worker (a `transaction.created`), the reconciler (every pass), a payment's
//! registration and an operator may all try the same credit or the same payment at once. Each
//! attempt locks the credit's row first, then its candidate payments (`FOR UPDATE`, which
//! re-reads a payment another transaction just completed and drops it from the candidates),
//! so one credit is matched once and one payment is taken once; the ledger's
//! `transactions_one_completion` index is the last guard against a second completion row.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};

use super::payments::{self, Kind, Payment, PaymentUpdate, COLUMNS as PAYMENT_COLUMNS};
use super::status::PaymentStatus;
use super::DomainError;

/// A `bank_transactions` row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct BankTransaction {
    pub id: i64,
    pub connection_id: String,
    pub transaction_id: String,
    pub account_id: Option<String>,
    pub booked_on: NaiveDate,
    pub amount_minor: i64,
    pub currency: String,
    pub reference: Option<String>,
    pub counterparty: Option<String>,
    pub match_status: String,
    pub payment_id: Option<i64>,
    pub matched_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, connection_id, transaction_id, account_id, booked_on, amount_minor, \
                           currency, reference, counterparty, match_status, payment_id, matched_at, \
                           created_at";

/// The SQL form of "case and spaces ignored", applied to both sides of the comparison.
fn normalized(expr: &str) -> String {
    format!("lower(regexp_replace({expr}, '\\s', '', 'g'))")
}

/// What an attempt to match a credit ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// Matched now, to this payment.
    Now {
        payment_id: i64,
    },
    /// Matched before (by another attempt, or by hand), to this payment.
    Already {
        payment_id: i64,
    },
    Unmatched,
    Ambiguous {
        candidates: usize,
    },
    /// A debit (or nothing): never matched.
    Ignored,
}

/// Tries to match the credit `id` inside the caller's transaction (see the module doc).
pub async fn match_credit(
    conn: &mut PgConnection,
    id: i64,
    at: DateTime<Utc>,
) -> Result<Matched, DomainError> {
    let credit = lock(conn, id)
        .await?
        .ok_or_else(|| DomainError::permanent(format!("bank transaction {id} does not exist")))?;
    match (credit.match_status.as_str(), credit.payment_id) {
        ("matched", Some(payment_id)) => return Ok(Matched::Already { payment_id }),
        ("ignored", _) => return Ok(Matched::Ignored),
        _ if credit.amount_minor <= 0 => {
            set_status(conn, id, "ignored").await?;
            return Ok(Matched::Ignored);
        }
        _ => {}
    }
    let mut candidates: Vec<Payment> = sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments
         WHERE status IN ('pending', 'submitted') AND amount_minor = $1 AND currency = $2
           AND {reference} <> ''
           AND strpos({remittance}, {reference}) > 0
         ORDER BY id
         FOR UPDATE",
        reference = normalized("reference"),
        remittance = normalized("$3"),
    ))
    .bind(credit.amount_minor)
    .bind(&credit.currency)
    .bind(credit.reference.as_deref().unwrap_or_default())
    .fetch_all(&mut *conn)
    .await?;
    match candidates.len() {
        0 => {
            set_status(conn, id, "unmatched").await?;
            Ok(Matched::Unmatched)
        }
        1 => {
            let payment = candidates.remove(0);
            let payment_id = payment.id;
            complete(conn, &credit, payment, at).await?;
            Ok(Matched::Now { payment_id })
        }
        n => {
            set_status(conn, id, "ambiguous").await?;
            Ok(Matched::Ambiguous { candidates: n })
        }
    }
}

/// The credit's row, locked until the transaction ends.
async fn lock(conn: &mut PgConnection, id: i64) -> Result<Option<BankTransaction>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bank_transactions WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

async fn set_status(conn: &mut PgConnection, id: i64, status: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE bank_transactions SET match_status = $2 WHERE id = $1 AND match_status <> $2",
    )
    .bind(id)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

/// The payment (locked, pending or submitted) completes: status, its ledger row
/// `bank:<transaction_id>`, the credit `matched`, and `bank_transaction.matched` with both
/// rows.
async fn complete(
    conn: &mut PgConnection,
    credit: &BankTransaction,
    payment: Payment,
    at: DateTime<Utc>,
) -> Result<(), DomainError> {
    let (provider, external_id) = (payment.provider.clone(), payment.external_id.clone());
    let mut update = PaymentUpdate::new(&provider, &external_id, PaymentStatus::Completed, at);
    update.metadata = Map::from_iter([(
        "bank_transaction_id".to_owned(),
        Value::String(credit.transaction_id.clone()),
    )]);
    let paid = payments::apply_to(conn, &update, Some(payment)).await?;
    let external_ref = format!("bank:{}", credit.transaction_id);
    let recorded = payments::record_transaction(
        conn,
        &paid,
        Kind::Payment,
        &external_ref,
        credit.amount_minor,
        &credit.currency,
        at,
    )
    .await?;
    if !recorded {
        // Only a payment with a completion already in the ledger gets here, and such a payment
        // is never pending: the savepoint (or transaction) around us is rolled back.
        return Err(DomainError::permanent(format!(
            "payment {} already has a completion in the ledger",
            paid.id
        )));
    }
    sqlx::query(
        "WITH b AS (
             UPDATE bank_transactions SET match_status = 'matched', payment_id = $2, matched_at = now()
             WHERE id = $1 RETURNING *)
         INSERT INTO domain_outbox (event_type, payload)
         SELECT 'bank_transaction.matched',
                jsonb_build_object('type', 'bank_transaction.matched', 'occurred_at', $3::timestamptz,
                                   'bank_transaction', to_jsonb(b), 'payment', to_jsonb(p))
         FROM b JOIN payments p ON p.id = b.payment_id",
    )
    .bind(credit.id)
    .bind(paid.id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many waiting credits a pass of [`retry_waiting`] tried, and what came of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Retried {
    pub tried: u64,
    pub matched: u64,
}

/// Tries every `unmatched` and `ambiguous` credit again, one transaction each (the reconciler's
/// pass): a payment registered or corrected since may now be its one candidate.
pub async fn retry_waiting(pool: &PgPool) -> Result<Retried, DomainError> {
    let mut after = 0_i64;
    let mut r = Retried::default();
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM bank_transactions
             WHERE match_status IN ('unmatched', 'ambiguous') AND id > $1
             ORDER BY id LIMIT 500",
        )
        .bind(after)
        .fetch_all(pool)
        .await?;
        let Some(&last) = ids.last() else {
            return Ok(r);
        };
        after = last;
        for id in ids {
            r.tried += 1;
            if let Matched::Now { .. } = in_transaction(pool, id).await? {
                r.matched += 1;
            }
        }
    }
}

/// Tries the waiting credits that could pay `payment_id` (its amount, currency, and its
/// reference in their remittance text): what registering an expected payment does once it is
/// committed. Returns the credits matched to it (at most one).
pub async fn retry_for_payment(pool: &PgPool, payment_id: i64) -> Result<Vec<i64>, DomainError> {
    let ids: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT b.id FROM bank_transactions b JOIN payments p ON p.id = $1
         WHERE b.match_status IN ('unmatched', 'ambiguous')
           AND b.amount_minor = p.amount_minor AND b.currency = p.currency
           AND {reference} <> ''
           AND strpos({remittance}, {reference}) > 0
         ORDER BY b.id",
        reference = normalized("p.reference"),
        remittance = normalized("COALESCE(b.reference, '')"),
    ))
    .bind(payment_id)
    .fetch_all(pool)
    .await?;
    let mut matched = Vec::new();
    for id in ids {
        if let Matched::Now { payment_id: p } = in_transaction(pool, id).await? {
            if p == payment_id {
                matched.push(id);
            }
        }
    }
    Ok(matched)
}

async fn in_transaction(pool: &PgPool, id: i64) -> Result<Matched, DomainError> {
    let mut tx = pool.begin().await?;
    let m = match_credit(&mut tx, id, Utc::now()).await?;
    tx.commit().await?;
    Ok(m)
}

/// Why an operator's match was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManualMatchError {
    #[error("no bank transaction {0}")]
    NoTransaction(i64),
    #[error("no payment {0}")]
    NoPayment(i64),
    #[error("bank transaction {0} is a debit: debits are never matched")]
    Debit(i64),
    #[error("bank transaction {id} is already matched to payment {payment_id}")]
    AlreadyMatched { id: i64, payment_id: i64 },
    #[error("payment {id} is {status}: only a pending or submitted payment can be matched")]
    NotExpected { id: i64, status: String },
    #[error(
        "payment {payment_id} expects {expected}, bank transaction {id} brought {got}: \
             amounts and currencies must be equal"
    )]
    AmountDiffers {
        id: i64,
        payment_id: i64,
        expected: String,
        got: String,
    },
    #[error(transparent)]
    Domain(#[from] DomainError),
}

impl From<sqlx::Error> for ManualMatchError {
    fn from(e: sqlx::Error) -> Self {
        Self::Domain(e.into())
    }
}

/// An operator matches credit `id` to payment `payment_id` by hand (an ambiguous credit, a
/// reference mistyped by the payer). Same locks, same completion as the automatic match; the
/// payment must still be expected and the amounts equal. Returns the matched credit.
pub async fn match_by_hand(
    pool: &PgPool,
    id: i64,
    payment_id: i64,
) -> Result<BankTransaction, ManualMatchError> {
    let mut tx = pool.begin().await?;
    let credit = lock(&mut tx, id)
        .await?
        .ok_or(ManualMatchError::NoTransaction(id))?;
    if let (Some(p), "matched") = (credit.payment_id, credit.match_status.as_str()) {
        return Err(ManualMatchError::AlreadyMatched { id, payment_id: p });
    }
    if credit.amount_minor <= 0 {
        return Err(ManualMatchError::Debit(id));
    }
    let payment: Payment = sqlx::query_as(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1 FOR UPDATE"
    ))
    .bind(payment_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ManualMatchError::NoPayment(payment_id))?;
    if !matches!(
        payment.status(),
        PaymentStatus::Pending | PaymentStatus::Submitted
    ) {
        return Err(ManualMatchError::NotExpected {
            id: payment_id,
            status: payment.status.clone(),
        });
    }
    if payment.amount_minor != Some(credit.amount_minor)
        || payment.currency.as_deref() != Some(credit.currency.as_str())
    {
        return Err(ManualMatchError::AmountDiffers {
            id,
            payment_id,
            expected: format!(
                "{} {}",
                payment
                    .amount_minor
                    .map_or("no amount".into(), |a| a.to_string()),
                payment.currency.as_deref().unwrap_or("")
            ),
            got: format!("{} {}", credit.amount_minor, credit.currency),
        });
    }
    complete(&mut tx, &credit, payment, Utc::now()).await?;
    let matched = lock(&mut tx, id)
        .await?
        .ok_or(ManualMatchError::NoTransaction(id))?;
    tx.commit().await?;
    Ok(matched)
}
