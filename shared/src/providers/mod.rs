//! Payment gateways as plugins: each one verifies a delivery on its raw bytes and splits the
//! body into normalized events. One file per gateway; adding a gateway is adding one file and
//! one line in [`configured`].

mod flutterwave;
mod gocardless;
mod payqi;
mod paystack;
#[cfg(test)]
mod properties;
pub mod signature;

pub use flutterwave::Flutterwave;
pub use gocardless::GoCardless;
pub use payqi::PayQi;
pub use paystack::Paystack;
pub use signature::Secrets;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::ProviderSecrets;

/// The request headers a provider may look at, names lower-case. Built by the HTTP layer so
/// this crate does not depend on a web framework.
#[derive(Debug, Default, Clone)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: &str, value: &[u8]) {
        self.0.push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// The first value of `name` (case-insensitive), as bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text, `None` if absent or not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

impl<'a> FromIterator<(&'a str, &'a [u8])> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a [u8])>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.insert(n, v);
        }
        h
    }
}

/// Why a delivery's signature was refused. The text is safe to log and to show the caller:
/// it never contains a secret or the signature itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp outside the accepted window")]
    StaleTimestamp,
}

/// Why a verified body could not be turned into events (answered 400, nothing persisted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// One event of a delivery, normalized across gateways; becomes a `webhook_events` row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The dedup key, unique per provider (see DESIGN.md, "Providers").
    pub external_id: String,
    /// Normalized type: GoCardless `<resource_type>.<action>`, others as sent.
    pub event_type: String,
    /// The id of the thing the event is about (payment, mandate, reference), if any.
    pub resource_id: Option<String>,
    /// The event as the gateway sent it (for GoCardless: one element of `events`).
    pub payload: serde_json::Value,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// A payment gateway: how to check that a delivery is really from it, and how to read it.
pub trait Provider: Send + Sync {
    /// The path segment and the `provider` column value: `gocardless`, `paystack`, ...
    fn name(&self) -> &'static str;

    /// The status of a successful answer (204 or 200, as the gateway expects).
    fn accepted_status(&self) -> u16 {
        200
    }

    /// The status of a refused signature (GoCardless asks for 498).
    fn rejected_signature_status(&self) -> u16 {
        401
    }

    /// Whether deliveries must come with a client certificate (when a client CA is set).
    fn wants_client_cert(&self) -> bool {
        false
    }

    /// Header names worth keeping in the audit trail, lower-case: the signature headers (a
    /// MAC is no secret, and with it an auditor re-verifies the stored body), never a header
    /// carrying a secret.
    fn audit_headers(&self) -> &'static [&'static str] {
        &[
            "content-type",
            "user-agent",
            "x-forwarded-for",
            "x-request-id",
        ]
    }

    /// Checks the delivery's signature over `body`, the raw bytes as received.
    /// `now` is unix seconds (a parameter so tests can move the clock).
    fn verify(&self, headers: &Headers, body: &[u8], now: i64) -> Result<(), VerifyError>;

    /// Splits a verified body into events. Strict: not JSON, duplicate keys, a wrong shape or a
    /// missing id is an error, never a guess.
    fn parse(&self, body: &[u8]) -> Result<Vec<NewEvent>, ParseError>;
}

/// The providers whose secret is configured; the others are not mounted (404).
pub fn configured(secrets: &ProviderSecrets) -> Vec<Arc<dyn Provider>> {
    crate::config::WEBHOOK_SECRET_VARS
        .iter()
        .filter_map(|(name, _)| {
            let s = secrets.of(name)?;
            by_name(name, s.clone(), secrets.payqi_tolerance_secs)
        })
        .collect()
}

/// The provider called `name` (the `provider` column value) checking with `secrets`; `None`
/// for a name payhook does not know.
pub fn by_name(
    name: &str,
    secrets: Secrets,
    payqi_tolerance_secs: u64,
) -> Option<Arc<dyn Provider>> {
    Some(match name {
        "gocardless" => Arc::new(GoCardless::new(secrets)),
        "paystack" => Arc::new(Paystack::new(secrets)),
        "flutterwave" => Arc::new(Flutterwave::new(secrets)),
        "payqi" => Arc::new(PayQi::new(secrets, payqi_tolerance_secs)),
        _ => return None,
    })
}
