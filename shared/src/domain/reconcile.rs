//! `reconcile.<status>`: what a gateway's API said about a payment when the reconciler asked
//! (DESIGN.md, "Gateway APIs"), for every provider. The reconciler stores the answer as an
//! event (`delivery_id` NULL, external_id `reconcile:<payment external_id>:<status>`), so the
//! payment's history shows where the status came from, and the normal worker path applies it
//! here. The gateways' own webhook handlers don't fit: there is no webhook event for an
//! expired Paystack or GoCardless payment, and the API answers carry other fields.
//!
//! Payload (written by the reconciler): `{"source": "reconciler", "external_id", "status"
//! (a payhook payment status), "gateway_status", "amount_minor", "currency", "gateway_id",
//! "reason", "checked_at"}`.
//!
//! Ledger rows follow the webhook handlers: completed and paid_out add the payment's row,
//! charged_back its chargeback too (both keyed by the payment's external_id, so the webhook
//! reporting the same later adds nothing). refunded sets the status only: the API answer has
//! no refund id or refunded amount, and a guessed row would double the webhook's.

use serde_json::{Map, Value};
use sqlx::PgConnection;

use super::payments::{self, PaymentUpdate};
use super::status::PaymentStatus;
use super::{id_at, required_str, str_at, when, DomainError, Event};

/// The event type of a reconciler answer that moves a payment to `status`.
pub fn event_type(status: PaymentStatus) -> String {
    format!("reconcile.{status}")
}

/// The dedup key (`webhook_events.external_id`) of that answer: the same answer found twice
/// (two passes, a re-run after a crash) is one event.
pub fn dedup_key(payment_external_id: &str, status: PaymentStatus) -> String {
    format!("reconcile:{payment_external_id}:{status}")
}

pub(super) async fn payment(conn: &mut PgConnection, event: &Event) -> Result<(), DomainError> {
    let p = &event.payload;
    let external_id = required_str(p, &["external_id"])?;
    let status: PaymentStatus = required_str(p, &["status"])?
        .parse()
        .map_err(DomainError::Permanent)?;
    let amount = p.get("amount_minor").and_then(Value::as_i64);
    let currency = str_at(p, &["currency"]);

    let mut metadata = Map::new();
    // The same keys the webhook handlers use for the gateway's own ids.
    let id_key = match event.provider.as_str() {
        "paystack" => Some("paystack_id"),
        "flutterwave" => Some("flutterwave_id"),
        _ => None,
    };
    if let (Some(key), Some(id)) = (id_key, id_at(p, &["gateway_id"])) {
        metadata.insert(key.into(), Value::String(id));
    }

    let mut update = PaymentUpdate::new(&event.provider, external_id, status, when(event));
    if currency.is_some() {
        update.amount_minor = amount;
        update.currency = currency;
    }
    update.failure_reason = str_at(p, &["reason"]);
    update.metadata = metadata;
    let payment = payments::apply(conn, &update).await?;
    match status {
        PaymentStatus::Completed | PaymentStatus::PaidOut => {
            payments::record_completion(conn, &payment, when(event)).await?;
        }
        PaymentStatus::ChargedBack => {
            payments::record_completion(conn, &payment, when(event)).await?;
            payments::record_chargeback(conn, &payment, when(event)).await?;
        }
        _ => {}
    }
    Ok(())
}
