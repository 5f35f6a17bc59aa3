//! `POST /webhooks/{provider}` (and the older integrations' paths, [`paths`]): client certificate (GoCardless, when configured), body size,
//! signature on the raw bytes, parse, then group commit; answered only once it is safe.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures::StreamExt;
use payhook_shared::intake::{Delivery, Intake, IntakeError};
use payhook_shared::providers::{Headers, Provider};
use tracing::Instrument;

use crate::error::WebhookError;
use crate::tls::ClientCert;

/// Largest body accepted; gateways send a few KiB.
pub const MAX_BODY: usize = 1 << 20;

/// The paths a gateway's deliveries are answered on: payhook's own, then those the
/// integrations payhook replaces gave their gateways (Payymo and ka-member for GoCardless,
/// Payshift for Paystack and Flutterwave), so an installation moves by changing only the host
/// in the gateway's dashboard. Those answer exactly as payhook's, with or without a trailing
/// slash (the integrations' frameworks accepted both).
pub fn paths(provider: &str) -> Vec<String> {
    let legacy: &[&str] = match provider {
        "gocardless" => &["/api/gocardless/webhook", "/api/webhook/gocardless"],
        "paystack" => &["/payment/webhooks/paystack"],
        "flutterwave" => &["/payment/webhooks/flutterwave"],
        _ => &[],
    };
    let mut out = vec![format!("/webhooks/{provider}")];
    for p in legacy {
        out.push((*p).to_owned());
        out.push(format!("{p}/"));
    }
    out
}

/// What every webhook route shares.
pub struct WebhookState {
    pub intake: Intake,
    /// For keeping the bodies that are refused after a valid signature.
    pub pool: sqlx::PgPool,
    /// Set when `INGEST_CLIENT_CA` is configured: providers that want a client certificate
    /// must present one from that CA.
    pub client_ca_required: bool,
    pub timeout: std::time::Duration,
}

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    provider: web::Data<Arc<dyn Provider>>,
    state: web::Data<WebhookState>,
) -> HttpResponse {
    let started = Instant::now();
    let provider = provider.get_ref().as_ref();
    let span = tracing::info_span!("webhook", provider = provider.name());
    let result = handle(&req, payload, provider, &state)
        .instrument(span.clone())
        .await;
    let (response, outcome) = match result {
        Ok(outcome) => {
            let status = StatusCode::from_u16(provider.accepted_status()).unwrap_or(StatusCode::OK);
            (HttpResponse::build(status).finish(), outcome)
        }
        Err(e) => {
            span.in_scope(|| match &e {
                WebhookError::Unavailable(cause) => tracing::warn!(%cause, "webhook answered 503"),
                other => tracing::info!(error = %other, "webhook refused"),
            });
            (actix_web::ResponseError::error_response(&e), e.outcome())
        }
    };
    metrics::counter!("payhook_webhook_requests_total", "provider" => provider.name(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("payhook_webhook_request_seconds", "provider" => provider.name())
        .record(started.elapsed().as_secs_f64());
    response
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    provider: &dyn Provider,
    state: &WebhookState,
) -> Result<&'static str, WebhookError> {
    if state.client_ca_required && provider.wants_client_cert() {
        let verified = req
            .conn_data::<ClientCert>()
            .is_some_and(|c| *c == ClientCert::Verified);
        if !verified {
            return Err(WebhookError::ClientCertRequired);
        }
    }
    let body = read_body(req, payload).await?;
    let headers: Headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    provider
        .verify(&headers, &body, now)
        .map_err(|source| WebhookError::Signature {
            source,
            status: provider.rejected_signature_status(),
        })?;
    let audit = audit_headers(provider, &headers);
    let events = match provider.parse(&body) {
        Ok(events) => events,
        Err(e) => return Err(keep_rejected(state, provider, &audit, &body, e).await),
    };
    let accepted = state
        .intake
        .submit(
            Delivery {
                provider: provider.name(),
                headers: audit,
                body,
                events,
            },
            state.timeout,
        )
        .await?;
    tracing::info!(
        delivery_id = accepted.delivery_id,
        event_ids = ?accepted.new_event_ids,
        duplicates = accepted.duplicates,
        published = accepted.published,
        "webhook accepted"
    );
    let outcome = if accepted.new_event_ids.is_empty() {
        "duplicate"
    } else {
        "accepted"
    };
    Ok(outcome)
}

/// The headers kept with a delivery (its signature headers: a MAC is no secret, and with it
/// an auditor can re-verify the stored body), as a JSON object.
fn audit_headers(provider: &dyn Provider, headers: &Headers) -> serde_json::Value {
    let audit: serde_json::Map<String, serde_json::Value> = provider
        .audit_headers()
        .iter()
        .filter_map(|name| {
            headers.get(name).map(|v| {
                (
                    (*name).to_owned(),
                    String::from_utf8_lossy(v).into_owned().into(),
                )
            })
        })
        .collect();
    audit.into()
}

/// A genuine body this version cannot read: kept in `rejected_deliveries` (DESIGN.md), and
/// still answered 400 so the gateway's dashboard shows the refusal. If it cannot be kept, the
/// answer is 503 instead: the gateway retries, and the body is not lost.
async fn keep_rejected(
    state: &WebhookState,
    provider: &dyn Provider,
    audit: &serde_json::Value,
    body: &[u8],
    error: payhook_shared::providers::ParseError,
) -> WebhookError {
    match payhook_shared::rejected::keep(&state.pool, provider.name(), audit, body, &error.0).await
    {
        Ok(id) => {
            metrics::counter!("payhook_rejected_deliveries_total", "provider" => provider.name())
                .increment(1);
            tracing::warn!(rejected_id = id, reason = %error, "signed body refused; kept in rejected_deliveries");
            WebhookError::BadRequest(error)
        }
        Err(e) => WebhookError::Unavailable(IntakeError::Database(e.to_string())),
    }
}

/// Reads the body up to [`MAX_BODY`]; a larger one is refused as soon as it is known to be.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<bytes::Bytes, WebhookError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(WebhookError::TooLarge { limit: MAX_BODY });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(4096).min(MAX_BODY));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| WebhookError::BodyRead)?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(WebhookError::TooLarge { limit: MAX_BODY });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
