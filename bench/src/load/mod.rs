//! Deliveries as the gateways send them, and the benchmark's closed-loop load generator.
//!
//! Shared pieces (the chaos run uses them too): [`Gateway`] (route, secret variable and the
//! headers that authenticate a body, signed exactly as each gateway signs it), [`connect`] and
//! [`post`] (one keep-alive HTTP/1.1 connection to ingest, one request on it).
//!
//! The benchmark's generator is [`closed`] ([`run`]): N keep-alive connections, each sending
//! the next delivery of a [`Source`] as soon as the previous answer arrived. Sources: the
//! realistic workload ([`crate::workload::stream`]) and issue 7's friendly one ([`Fresh`]:
//! every request a fresh GoCardless delivery of `payments.created` events).

mod closed;

pub use closed::{run, Fresh, Load, LoadResult, Outgoing, Secrets, Source, Stop, Window};

use std::net::SocketAddr;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Sha256, Sha512};
use tokio::net::TcpStream;

/// The four gateways payhook takes webhooks from, as a sender sees them (DESIGN.md,
/// "Providers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gateway {
    GoCardless,
    Paystack,
    Flutterwave,
    PayQi,
}

impl Gateway {
    pub const ALL: [Gateway; 4] = [
        Self::GoCardless,
        Self::Paystack,
        Self::Flutterwave,
        Self::PayQi,
    ];

    /// The `provider` column value and the last segment of the route.
    pub fn name(self) -> &'static str {
        match self {
            Self::GoCardless => "gocardless",
            Self::Paystack => "paystack",
            Self::Flutterwave => "flutterwave",
            Self::PayQi => "payqi",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Self::GoCardless => "/webhooks/gocardless",
            Self::Paystack => "/webhooks/paystack",
            Self::Flutterwave => "/webhooks/flutterwave",
            Self::PayQi => "/webhooks/payqi",
        }
    }

    /// The environment variable that gives payhook-ingest this gateway's webhook secret.
    pub fn secret_env(self) -> &'static str {
        match self {
            Self::GoCardless => "GOCARDLESS_WEBHOOK_SECRET",
            Self::Paystack => "PAYSTACK_SECRET_KEY",
            Self::Flutterwave => "FLUTTERWAVE_SECRET_HASH",
            Self::PayQi => "PAYQI_WEBHOOK_SECRET",
        }
    }

    /// The status ingest answers an accepted delivery with.
    pub fn accepted(self) -> StatusCode {
        match self {
            Self::GoCardless | Self::PayQi => StatusCode::NO_CONTENT,
            Self::Paystack | Self::Flutterwave => StatusCode::OK,
        }
    }

    /// The headers that authenticate `body` as this gateway sends them, at unix time `now`
    /// (only PayQI's timestamp header uses it; its signature covers the body alone).
    pub fn auth_headers(self, secret: &[u8], body: &[u8], now: i64) -> Vec<(&'static str, String)> {
        match self {
            Self::GoCardless => vec![("Webhook-Signature", sign(secret, body))],
            Self::Paystack => vec![("x-paystack-signature", sign_sha512(secret, body))],
            // Flutterwave sends the configured "secret hash" itself; there is no HMAC.
            Self::Flutterwave => vec![("verif-hash", String::from_utf8_lossy(secret).into_owned())],
            Self::PayQi => vec![
                ("X-PayQI-Signature", sign(secret, body)),
                ("X-PayQI-Timestamp", now.to_string()),
            ],
        }
    }
}

/// One keep-alive connection to ingest, as hyper's sending half.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens a keep-alive HTTP/1.1 connection to `addr` (Nagle off: requests are small).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// POSTs `body` to `path` on `sender`'s connection with `headers`; the status and the whole
/// answer body. An error means the connection is gone: open a new one.
pub async fn post(
    sender: &mut Sender,
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
    body: Bytes,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    let mut request = Request::post(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, "payhook-bench");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new(body)).expect("a valid request");
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Hex HMAC-SHA256 of `body`, as GoCardless sends it in `Webhook-Signature` (and PayQI in
/// `X-PayQI-Signature`).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Hex HMAC-SHA512 of `body`, as Paystack sends it in `x-paystack-signature`.
pub fn sign_sha512(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// One GoCardless `payments.created` event the worker applies without calling the API:
/// `links.mandate` and `metadata.amount` + `metadata.currency` are present.
pub fn gocardless_event(id: &str, mandate: usize) -> String {
    format!(
        r#"{{"id":"EV{id}","created_at":"2026-11-24T10:00:00.000Z","resource_type":"payments","action":"created","links":{{"payment":"PM{id}","mandate":"MDBENCH{mandate:04}"}},"details":{{"origin":"api","cause":"payment_created","description":"Payment created via the API."}},"metadata":{{"amount":"2750","currency":"GBP","reference":"BENCH-{id}"}}}}"#
    )
}

/// A GoCardless delivery of `events` fresh events.
pub fn gocardless_body(tag: &str, conn: usize, seq: u64, events: usize) -> String {
    let mut body = String::with_capacity(64 + events * 420);
    body.push_str(r#"{"events":["#);
    for i in 0..events {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&gocardless_event(
            &format!("{tag}-{conn}-{seq}-{i}"),
            conn % 64,
        ));
    }
    body.push_str(&format!(
        r#"],"meta":{{"webhook_id":"WB{tag}-{conn}-{seq}"}}}}"#
    ));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_unique_event_ids() {
        let body = gocardless_body("t1", 3, 7, 10);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), 10);
        let ids: std::collections::HashSet<_> =
            events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 10);
        assert_eq!(events[0]["metadata"]["amount"], "2750");
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign_sha512(b"Jefe", b"what do ya want for nothing?"),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    #[test]
    fn each_gateway_authenticates_its_own_way() {
        let body = br#"{"id":"x"}"#;
        let h = |g: Gateway| g.auth_headers(b"s3cret", body, 1_700_000_000);
        assert_eq!(h(Gateway::GoCardless)[0].0, "Webhook-Signature");
        assert_eq!(h(Gateway::Paystack)[0].1.len(), 128);
        assert_eq!(
            h(Gateway::Flutterwave),
            vec![("verif-hash", "s3cret".to_owned())]
        );
        let payqi = h(Gateway::PayQi);
        assert_eq!(payqi[0].1, sign(b"s3cret", body));
        assert_eq!(payqi[1], ("X-PayQI-Timestamp", "1700000000".to_owned()));
    }
}
