//! GoCardless payment events → payments and the ledger. Each event needs the payment's
//! amount, currency and mandate: from our row, else the event's `metadata` (`amount` in
//! pence as a string, `currency`, `reference`) and `links.mandate`, else the API
//! (`GET /payments/{id}`). A status that means money was taken (`confirmed`, `paid_out`,
//! `charged_back`) writes the payment's ledger row (once, whichever arrives first); a
//! `confirmed` payment for a mandate we don't know creates its member first, from the API
//! when it has a token and answers, else it is recorded by mandate and linked later. Only an
//! amount that a ledger row needs and nobody can tell us is an error (retried: the message
//! names the variable to set).

use serde_json::{Map, Value};
use sqlx::PgConnection;

use super::members;
use super::payments::{self, Payment, PaymentUpdate};
use super::status::PaymentStatus;
use super::{gocardless_mandates, id_at, str_at, when, Context, DomainError, Event};
use crate::gateway::GatewayError;
use crate::money;

const PROVIDER: &str = "gocardless";

pub(super) async fn created(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    apply(conn, ctx, event, PaymentStatus::Pending)
        .await
        .map(drop)
}

pub(super) async fn submitted(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    apply(conn, ctx, event, PaymentStatus::Submitted)
        .await
        .map(drop)
}

pub(super) async fn confirmed(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    let payment = apply(conn, ctx, event, PaymentStatus::Completed).await?;
    payments::record_completion(conn, &payment, when(event)).await?;
    Ok(())
}

pub(super) async fn paid_out(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    // Paid out implies confirmed: if that event is late or lost, the ledger row comes now.
    let payment = apply(conn, ctx, event, PaymentStatus::PaidOut).await?;
    payments::record_completion(conn, &payment, when(event)).await?;
    Ok(())
}

pub(super) async fn failed(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    let payment = apply(conn, ctx, event, PaymentStatus::Failed).await?;
    let cause = str_at(&event.payload, &["details", "cause"]);
    if ctx.gocardless_retry_failed_payments && cause == Some("insufficient_funds") {
        retry_once(conn, ctx, &payment).await?;
    }
    Ok(())
}

pub(super) async fn cancelled(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    apply(conn, ctx, event, PaymentStatus::Cancelled)
        .await
        .map(drop)
}

pub(super) async fn charged_back(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
) -> Result<(), DomainError> {
    let payment = apply(conn, ctx, event, PaymentStatus::ChargedBack).await?;
    // A chargeback takes back money that was taken: both rows, so the ledger sums to zero.
    payments::record_completion(conn, &payment, when(event)).await?;
    payments::record_chargeback(conn, &payment, when(event)).await?;
    Ok(())
}

/// What we know about the payment before applying the event.
#[derive(Debug, Default)]
struct Known {
    amount_minor: Option<i64>,
    currency: Option<String>,
    mandate_id: Option<String>,
    reference: Option<String>,
    metadata: Map<String, Value>,
    /// Our row, locked, when the batch had locked the mandate first (lock order: mandate,
    /// then payment), so applying the event need not read it again.
    locked: Option<Payment>,
}

async fn apply(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
    status: PaymentStatus,
) -> Result<Payment, DomainError> {
    let payment_id = event
        .resource_id
        .clone()
        .or_else(|| id_at(&event.payload, &["links", "payment"]))
        .ok_or_else(|| DomainError::permanent("links.payment is missing"))?;
    let known = resolve(conn, ctx, event, &payment_id, status).await?;
    let mut locked = known.locked;
    if let Some(mandate) = &known.mandate_id {
        // The batch locked the mandate the event names; one learnt from our row or the API
        // is locked here, before anything about it is written (and the row read again after).
        if gocardless_mandates::named_mandate(event).as_deref() != Some(mandate.as_str()) {
            members::lock_mandates(conn, std::slice::from_ref(mandate), &[]).await?;
            locked = None;
        }
    }

    if status == PaymentStatus::Completed {
        if let Some(mandate) = &known.mandate_id {
            member_first(conn, ctx, event, mandate).await?;
        }
    }

    let mut update = PaymentUpdate::new(PROVIDER, &payment_id, status, when(event));
    update.amount_minor = known.amount_minor;
    update.currency = known.currency.as_deref();
    update.mandate_id = known.mandate_id.as_deref();
    update.reference = known.reference.as_deref();
    update.failure_reason = str_at(&event.payload, &["details", "cause"]);
    update.metadata = known.metadata;
    match locked {
        Some(row) => payments::apply_to(conn, &update, Some(row)).await,
        None => payments::apply(conn, &update).await,
    }
}

/// A confirmed payment for a mandate we don't know: its member comes first, from the API, so
/// the payment and its ledger row point at it. Best effort: without a token, or while the API
/// is away or does not know the mandate, the payment is recorded with its `mandate_id` and no
/// member, and `mandates.created` links it later ([`members::upsert`]). The money is real
/// either way; arrival order must never send it dead.
async fn member_first(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
    mandate: &str,
) -> Result<(), DomainError> {
    if !ctx.gateways.gocardless.is_configured() {
        return Ok(());
    }
    if members::find(conn, mandate).await?.is_some() {
        return Ok(());
    }
    match gocardless_mandates::fetch_details(ctx, mandate).await {
        Ok(details) => {
            members::upsert(conn, mandate, &details, None, when(event)).await?;
        }
        Err(e) => tracing::info!(
            error = %e,
            "member not fetched; the payment is recorded by mandate and linked when the mandate arrives"
        ),
    }
    Ok(())
}

/// Whether a payment in this status needs its amount: the ones that write a ledger row.
fn needs_amount(status: PaymentStatus) -> bool {
    matches!(
        status,
        PaymentStatus::Completed | PaymentStatus::PaidOut | PaymentStatus::ChargedBack
    )
}

/// The payment's amount, currency, mandate and reference: our row, then the event, then the
/// API for whatever is still missing. Only a missing amount that a ledger row needs is an
/// error; everything else the API would add is filled in by a later event if the API cannot
/// be asked now.
async fn resolve(
    conn: &mut PgConnection,
    ctx: &Context,
    event: &Event,
    payment_id: &str,
    status: PaymentStatus,
) -> Result<Known, DomainError> {
    let mut k = Known::default();
    // Locked now only if the batch already holds the mandate's lock (see `Known::locked`).
    let row = if gocardless_mandates::named_mandate(event).is_some() {
        payments::find_for_update(conn, PROVIDER, payment_id).await?
    } else {
        payments::find(conn, PROVIDER, payment_id).await?
    };
    if let Some(p) = &row {
        k.amount_minor = p.amount_minor;
        k.currency = p.currency.clone();
        k.mandate_id = p.mandate_id.clone();
        k.reference = p.reference.clone();
    }
    if gocardless_mandates::named_mandate(event).is_some() {
        k.locked = row;
    }
    let meta = event
        .payload
        .get("metadata")
        .cloned()
        .unwrap_or(Value::Null);
    if k.amount_minor.is_none() {
        if let (Some(amount), Some(currency)) = (
            meta.get("amount").filter(|v| !v.is_null()),
            str_at(&meta, &["currency"]),
        ) {
            k.amount_minor = Some(money::minor_units(amount)?);
            k.currency = Some(currency.to_owned());
        }
    }
    k.mandate_id = k
        .mandate_id
        .or_else(|| id_at(&event.payload, &["links", "mandate"]))
        .or_else(|| id_at(&meta, &["mandate_id"]));
    k.reference = k
        .reference
        .or_else(|| str_at(&meta, &["reference"]).map(str::to_owned));

    if k.amount_minor.is_some() && k.mandate_id.is_some() {
        return Ok(k);
    }
    let must = k.amount_minor.is_none() && needs_amount(status);
    let p = match ctx.gateways.gocardless.payment(payment_id).await {
        Ok(p) => p,
        // A 404 is an answer (the payment does not exist): the event is wrong.
        Err(e @ GatewayError::NotFound(_)) => return Err(e.into()),
        Err(e) if must => return Err(e.into()),
        Err(GatewayError::NotConfigured(_)) => return Ok(k),
        Err(e) if k.amount_minor.is_some() => {
            tracing::info!(error = %e, "payment's mandate not fetched; recorded without it");
            return Ok(k);
        }
        Err(e) => return Err(e.into()),
    };
    if k.amount_minor.is_none() {
        k.amount_minor = Some(p.amount);
        k.currency = Some(p.currency);
    }
    k.mandate_id = k.mandate_id.or(p.links.mandate);
    k.reference = k.reference.or(p.reference);
    if let Some(d) = p.charge_date {
        k.metadata.insert("charge_date".into(), Value::String(d));
    }
    Ok(k)
}

/// `GOCARDLESS_RETRY_FAILED_PAYMENTS`: asks GoCardless to collect again, once per payment
/// (the payment's metadata remembers it). A refusal (4xx: the payment is not retryable) is
/// logged and remembered too; an outage is retried with the event.
async fn retry_once(
    conn: &mut PgConnection,
    ctx: &Context,
    payment: &Payment,
) -> Result<(), DomainError> {
    if payment.status() != PaymentStatus::Failed
        || payment.metadata.get("retry_requested_at").is_some()
    {
        return Ok(());
    }
    match ctx
        .gateways
        .gocardless
        .retry_payment(&payment.external_id)
        .await
    {
        Ok(()) => tracing::info!(
            payment_id = payment.id,
            "asked GoCardless to retry a failed payment"
        ),
        Err(e) if e.is_transient() => return Err(e.into()),
        Err(GatewayError::NotConfigured(e)) => {
            // Not remembered: once the token is set, a replay asks.
            tracing::warn!(payment_id = payment.id, error = %e, "GOCARDLESS_RETRY_FAILED_PAYMENTS is on but the API has no token");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(payment_id = payment.id, error = %e, "GoCardless refused to retry a failed payment")
        }
    }
    sqlx::query(
        "UPDATE payments SET metadata = metadata || jsonb_build_object('retry_requested_at', now()),
                             updated_at = now()
         WHERE id = $1",
    )
    .bind(payment.id)
    .execute(conn)
    .await?;
    Ok(())
}
