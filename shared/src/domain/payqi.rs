//! PayQI `payment.created` / `pending` / `completed` / `failed` / `expired` → payment pending /
//! pending / completed (+ ledger row) / failed / expired. external_id is `data.id`, reference
//! `data.metadata.order_id`; amounts are decimal major units, converted exactly from the
//! event's JSON text.

use serde_json::Map;
use sqlx::PgConnection;

use super::payments::{self, PaymentUpdate};
use super::status::PaymentStatus;
use super::{id_at, str_at, when, DomainError, Event};
use crate::money;

const PROVIDER: &str = "payqi";

pub(super) async fn payment(conn: &mut PgConnection, event: &Event) -> Result<(), DomainError> {
    let status = match event.event_type.as_str() {
        "payment.created" | "payment.pending" => PaymentStatus::Pending,
        "payment.completed" => PaymentStatus::Completed,
        "payment.failed" => PaymentStatus::Failed,
        "payment.expired" => PaymentStatus::Expired,
        other => return Err(DomainError::permanent(format!("no PayQI rule for {other}"))),
    };
    let data = &event.payload["data"];
    let id = id_at(data, &["id"]).ok_or_else(|| DomainError::permanent("data.id is missing"))?;
    let currency = str_at(data, &["currency"]);
    let amount = match (
        money::raw_scalar_at(&event.payload_text, &["data", "amount"])?,
        currency,
    ) {
        (Some(a), Some(c)) => Some(money::to_minor(&a, c)?),
        (Some(_), None) => return Err(DomainError::permanent("data.amount without data.currency")),
        (None, _) => None,
    };
    let order_id = id_at(data, &["metadata", "order_id"]);

    let mut update = PaymentUpdate::new(PROVIDER, &id, status, when(event));
    update.reference = order_id.as_deref();
    update.amount_minor = amount;
    update.currency = currency;
    update.failure_reason =
        str_at(data, &["failure_reason"]).or_else(|| str_at(data, &["failure_code"]));
    update.metadata = Map::new();
    let payment = payments::apply(conn, &update).await?;
    if status == PaymentStatus::Completed {
        payments::record_completion(conn, &payment, when(event)).await?;
    }
    Ok(())
}
