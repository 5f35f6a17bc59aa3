//! Paystack events: `charge.success` → payment completed + ledger row; `refund.processed` →
//! payment refunded + a negative ledger row for the refunded amount (partial refunds are
//! separate rows). Amounts are minor units (kobo); the payment's external_id and reference
//! are both `data.reference`.

use serde_json::{Map, Value};
use sqlx::PgConnection;

use super::payments::{self, Kind, PaymentUpdate};
use super::status::PaymentStatus;
use super::{at, id_at, required_str, str_at, when, DomainError, Event};
use crate::money;

const PROVIDER: &str = "paystack";

pub(super) async fn charge_success(
    conn: &mut PgConnection,
    event: &Event,
) -> Result<(), DomainError> {
    let data = &event.payload["data"];
    let reference = required_str(data, &["reference"])
        .map_err(|_| DomainError::permanent("data.reference is missing"))?;
    let amount =
        at(data, &["amount"]).ok_or_else(|| DomainError::permanent("data.amount is missing"))?;
    let amount = money::minor_units(amount)?;
    let currency = str_at(data, &["currency"])
        .ok_or_else(|| DomainError::permanent("data.currency is missing"))?;
    money::exponent(currency)?;

    let mut update = PaymentUpdate::new(PROVIDER, reference, PaymentStatus::Completed, when(event));
    update.reference = Some(reference);
    update.amount_minor = Some(amount);
    update.currency = Some(currency);
    update.metadata = gateway_ids(data);
    let payment = payments::apply(conn, &update).await?;
    payments::record_completion(conn, &payment, when(event)).await?;
    Ok(())
}

pub(super) async fn refund_processed(
    conn: &mut PgConnection,
    event: &Event,
) -> Result<(), DomainError> {
    let data = &event.payload["data"];
    // Paystack names the refunded transaction either way, depending on the API version.
    let reference = str_at(data, &["transaction_reference"])
        .or_else(|| str_at(data, &["transaction", "reference"]))
        .ok_or_else(|| DomainError::permanent("data.transaction_reference is missing"))?;
    let amount =
        at(data, &["amount"]).ok_or_else(|| DomainError::permanent("data.amount is missing"))?;
    let amount = money::minor_units(amount)?;
    let currency = str_at(data, &["currency"])
        .ok_or_else(|| DomainError::permanent("data.currency is missing"))?;
    money::exponent(currency)?;
    // The refund's own id, else the event's dedup key: each refund is its own ledger row.
    let refund_ref = id_at(data, &["id"])
        .or_else(|| str_at(data, &["refund_reference"]).map(str::to_owned))
        .unwrap_or_else(|| event.external_id.clone());

    // A refund may overtake its charge (out-of-order delivery): the payment is created now
    // without an amount; the charge fills it in and adds its own row when it comes.
    let mut update = PaymentUpdate::new(PROVIDER, reference, PaymentStatus::Refunded, when(event));
    update.reference = Some(reference);
    let payment = payments::apply(conn, &update).await?;
    let negative = amount
        .checked_neg()
        .ok_or_else(|| DomainError::permanent("data.amount out of range"))?;
    // A second (partial) refund leaves the status as it is; downstream still hears of it
    // through `transaction.recorded`.
    payments::record_transaction(
        conn,
        &payment,
        Kind::Refund,
        &refund_ref,
        negative,
        currency,
        when(event),
    )
    .await?;
    Ok(())
}

/// Paystack's own ids, kept in the payment's metadata.
fn gateway_ids(data: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(id) = id_at(data, &["id"]) {
        m.insert("paystack_id".into(), Value::String(id));
    }
    m
}
