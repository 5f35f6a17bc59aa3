//! Step 3, pending payments: payments still `pending` or `submitted` whose last change is
//! older than `PENDING_AFTER` (and that were not asked about within `PENDING_AFTER`) are
//! checked with their gateway's API. An answer that moves the payment forward is stored as a
//! `reconcile.<status>` event (`delivery_id` NULL, external_id
//! `reconcile:<payment external_id>:<status>`, deduplicated) and published like ingest
//! publishes; the normal worker path applies it, so the payment's history shows where its
//! status came from. A 404 means the gateway has no such payment: expired.
//!
//! Gateways are checked side by side, each at most one call per `RECONCILE_GATEWAY_INTERVAL`
//! and `RECONCILE_CHECKS_PER_PASS` calls per pass. A failing gateway (5xx, timeout, refusal)
//! is logged and counted (`payhook_reconciler_gateway_errors_total{provider}`); after a few
//! failures in a row the rest of its payments wait for the next pass. The others go on.
//! A gateway without an API token is not asked at all (the worker says so at start).

use std::time::Duration;

use payhook_shared::amqp::{EventMessage, Outgoing};
use payhook_shared::domain::reconcile;
use payhook_shared::domain::status::PaymentStatus;
use payhook_shared::gateway::{GatewayError, RemotePayment};
use payhook_shared::intake::mark_published;
use serde_json::json;
use tokio::time::MissedTickBehavior;

use super::{Reconciler, CONFIRM_TIMEOUT};

/// The gateways the reconciler can ask (`Gateways::payment_status`).
const PROVIDERS: [&str; 4] = ["gocardless", "paystack", "flutterwave", "payqi"];

/// Failures in a row after which a gateway is left alone until the next pass: a gateway that
/// times out would otherwise hold the pass for `checks × timeout`.
const GIVE_UP_AFTER: u32 = 3;

/// What the checks of one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Gateway calls answered (a 404 included).
    pub checked: u64,
    /// New `reconcile.*` events: payments whose status the gateway moved forward.
    pub changed: u64,
    /// Gateway calls that failed.
    pub gateway_errors: u64,
}

/// A payment due for a check.
#[derive(Debug, sqlx::FromRow)]
struct Due {
    id: i64,
    provider: String,
    external_id: String,
    status: String,
}

/// Checks every gateway's due payments, side by side. Database and broker errors fail the
/// step; gateway errors are counted, not errors of the pass.
pub async fn run(r: &Reconciler) -> anyhow::Result<Checked> {
    let results = futures::future::join_all(PROVIDERS.map(|p| provider(r, p))).await;
    let mut total = Checked::default();
    let mut first_error = None;
    for result in results {
        match result {
            Ok(c) => {
                total.checked += c.checked;
                total.changed += c.changed;
                total.gateway_errors += c.gateway_errors;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

async fn provider(r: &Reconciler, provider: &str) -> anyhow::Result<Checked> {
    // No token, no API: asking would only fill reconciler_checks with the same error.
    if !r.gateways.is_configured(provider) {
        return Ok(Checked::default());
    }
    let due: Vec<Due> = sqlx::query_as(
        "SELECT p.id, p.provider, p.external_id, p.status FROM payments p
         LEFT JOIN reconciler_checks c ON c.payment_id = p.id
         WHERE p.status IN ('pending', 'submitted') AND p.provider = $1
           AND p.updated_at < now() - $2::interval
           AND (c.checked_at IS NULL OR c.checked_at < now() - $2::interval)
         ORDER BY c.checked_at NULLS FIRST, p.updated_at, p.id
         LIMIT $3",
    )
    .bind(provider)
    .bind(r.settings.pending_after)
    .bind(i64::from(r.settings.reconcile_checks_per_pass))
    .fetch_all(&r.pool)
    .await?;

    let mut done = Checked::default();
    let mut failures_in_a_row = 0;
    // The first call goes at once, then one per interval.
    let mut pace = tokio::time::interval(
        r.settings
            .reconcile_gateway_interval
            .max(Duration::from_millis(1)),
    );
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for payment in due {
        if r.shutdown.is_cancelled() {
            break;
        }
        pace.tick().await;
        let answer = r
            .gateways
            .payment_status(&payment.provider, &payment.external_id)
            .await;
        let remote = match answer {
            Ok(remote) => Some(remote),
            Err(GatewayError::NotFound(_)) => None,
            Err(e) => {
                done.gateway_errors += 1;
                failures_in_a_row += 1;
                metrics::counter!("payhook_reconciler_gateway_errors_total", "provider" => provider.to_owned()).increment(1);
                // The error names method, path and status; the path holds the payment's id
                // (a gateway reference, not personal data).
                tracing::warn!(provider, payment_id = payment.id, error = %e, "gateway check failed");
                record_check(r, payment.id, None, Some(&e.to_string())).await?;
                if failures_in_a_row >= GIVE_UP_AFTER {
                    tracing::warn!(
                        provider,
                        "gateway keeps failing; its other payments wait for the next pass"
                    );
                    break;
                }
                continue;
            }
        };
        failures_in_a_row = 0;
        done.checked += 1;
        let gateway_status = remote.as_ref().map(|p| p.gateway_status.as_str());
        record_check(r, payment.id, gateway_status, None).await?;
        if enter(r, &payment, remote.as_ref()).await? {
            done.changed += 1;
        }
    }
    Ok(done)
}

/// Stores the answer as an event when it moves the payment forward, and publishes it.
/// `remote` `None`: the gateway answered 404 (expired). True when a new event was stored.
async fn enter(
    r: &Reconciler,
    payment: &Due,
    remote: Option<&RemotePayment>,
) -> anyhow::Result<bool> {
    let ours: PaymentStatus = payment.status.parse().map_err(anyhow::Error::msg)?;
    let (status, reason) = match remote {
        None => (
            PaymentStatus::Expired,
            Some("the gateway does not know this payment (HTTP 404)"),
        ),
        // A gateway status with no payhook equivalent yet (an abandoned checkout): no news.
        Some(RemotePayment { status: None, .. }) => return Ok(false),
        Some(RemotePayment {
            status: Some(s), ..
        }) => (s.parse().map_err(anyhow::Error::msg)?, None),
    };
    if ours.merge(status) == ours {
        return Ok(false);
    }
    let external_id = reconcile::dedup_key(&payment.external_id, status);
    let event_type = reconcile::event_type(status);
    let payload = json!({
        "source": "reconciler",
        "external_id": payment.external_id,
        "status": status.as_str(),
        "gateway_status": remote.map(|p| p.gateway_status.as_str()),
        "amount_minor": remote.and_then(|p| p.amount_minor),
        "currency": remote.and_then(|p| p.currency.as_deref()),
        "gateway_id": remote.and_then(|p| p.gateway_id.as_deref()),
        "reason": reason.map(str::to_owned).or_else(|| {
            matches!(status, PaymentStatus::Failed | PaymentStatus::Cancelled)
                .then(|| format!("gateway status: {}", remote.map_or("", |p| p.gateway_status.as_str())))
        }),
    });
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_events (delivery_id, provider, external_id, event_type, resource_id,
                                     payload, occurred_at)
         VALUES (NULL, $1, $2, $3, $4, $5::jsonb || jsonb_build_object('checked_at', now()), now())
         ON CONFLICT (provider, external_id) DO NOTHING
         RETURNING id",
    )
    .bind(&payment.provider)
    .bind(&external_id)
    .bind(&event_type)
    .bind(&payment.external_id)
    .bind(&payload)
    .fetch_optional(&r.pool)
    .await?;
    let Some(id) = id else {
        // Found before; if that event was never published the event relay sends it.
        return Ok(false);
    };
    tracing::info!(provider = %payment.provider, payment_id = payment.id, event_id = id, status = %status, "gateway moved a payment; event stored");
    let msg = EventMessage {
        id,
        provider: payment.provider.clone(),
        external_id,
        event_type,
    };
    // Published like ingest publishes; if the broker is away the event stays `received` and
    // the event relay sends it on a later pass.
    match r
        .broker
        .publish_confirmed(&[Outgoing::event(r.broker.names(), &msg)], CONFIRM_TIMEOUT)
        .await
    {
        Ok(()) => mark_published(&r.pool, &[id]).await?,
        Err(e) => {
            tracing::warn!(event_id = id, error = %e, "publishing a reconcile event failed; the relay will send it")
        }
    }
    Ok(true)
}

async fn record_check(
    r: &Reconciler,
    payment_id: i64,
    gateway_status: Option<&str>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reconciler_checks (payment_id, checked_at, gateway_status, last_error)
         VALUES ($1, now(), $2, $3)
         ON CONFLICT (payment_id) DO UPDATE SET checked_at = now(),
             gateway_status = COALESCE(EXCLUDED.gateway_status, reconciler_checks.gateway_status),
             last_error = EXCLUDED.last_error",
    )
    .bind(payment_id)
    .bind(gateway_status)
    .bind(error)
    .execute(&r.pool)
    .await?;
    Ok(())
}
