//! GoCardless bank-account data `transaction.created` → a `bank_transactions` row, keyed by
//! connection + the bank's transaction id, then the matching process
//! ([`super::bank_matching`]). The transaction is in `details` with the Bank Account Data
//! API's field names; when `details` carries only ids, the booked transaction is fetched from
//! that API (not booked yet: retried). A transaction may come before anything else about its
//! connection (the connection row is created), twice (one row, matched once), or after its
//! connection was revoked (still stored: the money did arrive).

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::PgConnection;

use super::bank_matching;
use super::{at, str_at, when, Context, DomainError, Event};
use crate::money;

pub(super) async fn created(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    let p = &event.payload;
    let connection = str_at(p, &["links", "connection"])
        .ok_or_else(|| DomainError::permanent("links.connection is missing"))?;
    let transaction_id = str_at(p, &["links", "transaction"])
        .or_else(|| str_at(p, &["details", "transactionId"]))
        .ok_or_else(|| DomainError::permanent("links.transaction is missing"))?;
    let account = str_at(p, &["links", "account"]);

    let fetched;
    let (details, amount_text) = if at(p, &["details", "transactionAmount"]).is_some() {
        // From the stored JSON text, so a number keeps its digits (see `money`).
        let text = money::raw_scalar_at(
            &event.payload_text,
            &["details", "transactionAmount", "amount"],
        )?;
        (&p["details"], text)
    } else {
        let account = account.ok_or_else(|| {
            DomainError::permanent(
                "details carry no transactionAmount and links.account is missing: \
                 nothing to fetch the transaction with",
            )
        })?;
        fetched = ctx
            .gateways
            .bank
            .booked_transaction(account, transaction_id)
            .await?;
        let text = match at(&fetched, &["transactionAmount", "amount"]) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        (&fetched, text)
    };
    let currency = str_at(details, &["transactionAmount", "currency"])
        .ok_or_else(|| DomainError::permanent("transactionAmount.currency is missing"))?;
    let amount =
        amount_text.ok_or_else(|| DomainError::permanent("transactionAmount.amount is missing"))?;
    let amount_minor = money::to_minor(&amount, currency)?;
    let booked_on = match str_at(details, &["bookingDate"]) {
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            DomainError::permanent("bookingDate is not a date (YYYY-MM-DD)".to_owned())
        })?,
        None => when(event).date_naive(),
    };
    let reference = remittance(details);
    let counterparty = str_at(details, &["debtorName"]);

    let id = store(
        conn,
        &NewTransaction {
            connection,
            transaction_id,
            account,
            booked_on,
            amount_minor,
            currency: &currency.to_ascii_uppercase(),
            reference: reference.as_deref(),
            counterparty,
        },
        event,
    )
    .await?;
    bank_matching::match_credit(conn, id, when(event)).await?;
    Ok(())
}

/// The remittance text: the unstructured field, else its array form joined.
fn remittance(details: &Value) -> Option<String> {
    if let Some(s) = str_at(details, &["remittanceInformationUnstructured"]) {
        return Some(s.to_owned());
    }
    let parts: Vec<&str> = at(details, &["remittanceInformationUnstructuredArray"])?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

struct NewTransaction<'a> {
    connection: &'a str,
    transaction_id: &'a str,
    account: Option<&'a str>,
    booked_on: NaiveDate,
    amount_minor: i64,
    currency: &'a str,
    reference: Option<&'a str>,
    counterparty: Option<&'a str>,
}

/// Inserts the transaction (and its connection, if new) with `bank_transaction.recorded`;
/// the row's id, new or already there.
async fn store(
    conn: &mut PgConnection,
    t: &NewTransaction<'_>,
    event: &Event,
) -> Result<i64, DomainError> {
    let id: Option<i64> = sqlx::query_scalar(
        "WITH c AS (
             INSERT INTO bank_connections (connection_id) VALUES ($1)
             ON CONFLICT (connection_id) DO NOTHING),
         b AS (
             INSERT INTO bank_transactions (connection_id, transaction_id, account_id, booked_on,
                                            amount_minor, currency, reference, counterparty,
                                            match_status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                     CASE WHEN $5 > 0 THEN 'unmatched' ELSE 'ignored' END)
             ON CONFLICT (connection_id, transaction_id) DO NOTHING
             RETURNING *),
         o AS (
             INSERT INTO domain_outbox (event_type, payload)
             SELECT 'bank_transaction.recorded',
                    jsonb_build_object('type', 'bank_transaction.recorded',
                                       'occurred_at', $9::timestamptz,
                                       'bank_transaction', to_jsonb(b))
             FROM b)
         SELECT id FROM b",
    )
    .bind(t.connection)
    .bind(t.transaction_id)
    .bind(t.account)
    .bind(t.booked_on)
    .bind(t.amount_minor)
    .bind(t.currency)
    .bind(t.reference)
    .bind(t.counterparty)
    .bind(when(event))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = id {
        return Ok(id);
    }
    // Seen before (the same transaction in another event): the row that exists.
    let id = sqlx::query_scalar(
        "SELECT id FROM bank_transactions WHERE connection_id = $1 AND transaction_id = $2",
    )
    .bind(t.connection)
    .bind(t.transaction_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}
