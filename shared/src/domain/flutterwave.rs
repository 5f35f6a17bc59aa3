//! Flutterwave `charge.completed`: `data.status` successful → completed (+ ledger row),
//! failed → failed, pending → pending. Amounts are decimal major units, converted exactly
//! from the event's JSON text; external_id and reference are both `data.tx_ref`.

use serde_json::{Map, Value};
use sqlx::PgConnection;

use super::payments::{self, PaymentUpdate};
use super::status::PaymentStatus;
use super::{id_at, str_at, when, DomainError, Event};
use crate::money;

const PROVIDER: &str = "flutterwave";

pub(super) async fn charge_completed(
    conn: &mut PgConnection,
    event: &Event,
) -> Result<(), DomainError> {
    let data = &event.payload["data"];
    let tx_ref = str_at(data, &["tx_ref"])
        .ok_or_else(|| DomainError::permanent("data.tx_ref is missing"))?;
    let status = match str_at(data, &["status"]) {
        Some("successful") => PaymentStatus::Completed,
        Some("failed") => PaymentStatus::Failed,
        Some("pending") => PaymentStatus::Pending,
        Some("cancelled") => PaymentStatus::Cancelled,
        _ => {
            return Err(DomainError::permanent(
                "data.status is not successful, failed, pending or cancelled",
            ))
        }
    };
    let currency = str_at(data, &["currency"])
        .ok_or_else(|| DomainError::permanent("data.currency is missing"))?;
    let amount = money::raw_scalar_at(&event.payload_text, &["data", "amount"])?
        .ok_or_else(|| DomainError::permanent("data.amount is missing"))?;
    let amount = money::to_minor(&amount, currency)?;

    let mut metadata = Map::new();
    for (ours, theirs) in [("flutterwave_id", "id"), ("flw_ref", "flw_ref")] {
        if let Some(v) = id_at(data, &[theirs]) {
            metadata.insert(ours.into(), Value::String(v));
        }
    }
    let mut update = PaymentUpdate::new(PROVIDER, tx_ref, status, when(event));
    update.reference = Some(tx_ref);
    update.amount_minor = Some(amount);
    update.currency = Some(currency);
    update.failure_reason = str_at(data, &["processor_response"]);
    update.metadata = metadata;
    let payment = payments::apply(conn, &update).await?;
    if status == PaymentStatus::Completed {
        payments::record_completion(conn, &payment, when(event)).await?;
    }
    Ok(())
}
