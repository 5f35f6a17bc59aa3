//! Operator look-ups of bank data (DESIGN.md, "Bank data"): the credits and debits the bank
//! feed reported, with the payment each one paid, for the admin API, the console and
//! `payhook-worker show`. Matching itself is domain logic: [`crate::domain::bank_matching`].

use serde::Serialize;
use sqlx::PgPool;

use crate::domain::bank_matching::COLUMNS;
pub use crate::domain::bank_matching::{match_by_hand, BankTransaction, ManualMatchError};
use crate::lookup::{Page, PageRequest, PaymentRow};

/// Every `bank_transactions.match_status`.
pub const MATCH_STATUSES: [&str; 4] = ["unmatched", "ambiguous", "matched", "ignored"];

/// A bank transaction with the payment it paid (matched ones).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BankTransactionDetail {
    #[serde(flatten)]
    pub transaction: BankTransaction,
    pub payment: Option<PaymentRow>,
}

/// Bank transactions, newest first; only those of `status` when given.
pub async fn list(
    pool: &PgPool,
    status: Option<&str>,
    page: PageRequest,
) -> Result<Page<BankTransaction>, sqlx::Error> {
    let rows: Vec<BankTransaction> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bank_transactions
         WHERE ($1::text IS NULL OR match_status = $1) AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(status)
    .bind(page.cursor)
    .bind(page.limit + 1)
    .fetch_all(pool)
    .await?;
    Ok(page.page(rows, |r| r.id))
}

/// One bank transaction (payhook's id) with its payment.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<BankTransactionDetail>, sqlx::Error> {
    let Some(transaction) = sqlx::query_as::<_, BankTransaction>(&format!(
        "SELECT {COLUMNS} FROM bank_transactions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let payment = match transaction.payment_id {
        Some(p) => crate::lookup::payment_by_id(pool, p).await?,
        None => None,
    };
    Ok(Some(BankTransactionDetail {
        transaction,
        payment,
    }))
}

/// The bank transactions with this bank transaction id (one per connection that reported it).
pub async fn by_transaction_id(
    pool: &PgPool,
    transaction_id: &str,
) -> Result<Vec<BankTransaction>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bank_transactions WHERE transaction_id = $1 ORDER BY id"
    ))
    .bind(transaction_id)
    .fetch_all(pool)
    .await
}

/// The credit that completed a payment, if a bank credit did.
pub async fn paid_by(
    pool: &PgPool,
    payment_id: i64,
) -> Result<Option<BankTransaction>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM bank_transactions WHERE payment_id = $1 ORDER BY id LIMIT 1"
    ))
    .bind(payment_id)
    .fetch_optional(pool)
    .await
}

/// How many credits wait for a payment (unmatched, ambiguous): the console's count.
pub async fn waiting(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM bank_transactions WHERE match_status IN ('unmatched', 'ambiguous')",
    )
    .fetch_one(pool)
    .await
}
