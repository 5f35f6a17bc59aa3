//! The closed-loop load generator: N keep-alive HTTP/1.1 connections, each sending its next
//! request as soon as the previous answer arrived. Every request is a fresh GoCardless
//! delivery (event ids never seen before) signed as GoCardless signs it: hex HMAC-SHA256 of
//! the raw body in `Webhook-Signature`. Latency (request written → answer read) goes into an
//! HdrHistogram in microseconds; building and signing the body is outside the timed span.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpStream;

/// When a load run ends.
#[derive(Clone)]
pub enum Stop {
    /// Send until this instant (the requests in flight then still complete and count).
    At(Instant),
    /// Send exactly this many requests in all, across the connections.
    Requests(Arc<AtomicU64>, u64),
}

impl Stop {
    pub fn requests(n: u64) -> Self {
        Stop::Requests(Arc::new(AtomicU64::new(0)), n)
    }

    /// Whether the caller may send one more request.
    fn claim(&self) -> bool {
        match self {
            Stop::At(deadline) => Instant::now() < *deadline,
            Stop::Requests(sent, max) => sent.fetch_add(1, Ordering::Relaxed) < *max,
        }
    }
}

/// What one load run measured.
pub struct LoadResult {
    /// Latency of the accepted (204) answers, µs.
    pub hist: Histogram<u64>,
    /// 204 answers.
    pub ok: u64,
    /// Anything else: another status, a broken connection.
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    pub events_per_body: usize,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn events_per_s(&self) -> f64 {
        self.rps() * self.events_per_body as f64
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs `connections` closed loops against `addr` until `stop`. `tag` makes this run's event
/// ids unique (ids are `<tag>-<connection>-<sequence>-<index>`).
pub async fn run(
    addr: SocketAddr,
    secret: &str,
    tag: &str,
    connections: usize,
    events_per_body: usize,
    stop: Stop,
) -> LoadResult {
    let secret: Arc<[u8]> = Arc::from(secret.as_bytes());
    let tag: Arc<str> = Arc::from(tag);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            tokio::spawn(connection(
                addr,
                secret.clone(),
                tag.clone(),
                c,
                events_per_body,
                stop.clone(),
            ))
        })
        .collect();
    let mut result = LoadResult {
        hist: new_histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        events_per_body,
    };
    for t in tasks {
        let r = match t.await {
            Ok(r) => r,
            Err(e) => ConnResult {
                hist: new_histogram(),
                ok: 0,
                errors: 1,
                first_error: Some(format!("load task panicked: {e}")),
            },
        };
        result.hist.add(&r.hist).expect("same histogram bounds");
        result.ok += r.ok;
        result.errors += r.errors;
        if result.first_error.is_none() {
            result.first_error = r.first_error;
        }
    }
    result.elapsed = started.elapsed();
    result
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

struct ConnResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn connection(
    addr: SocketAddr,
    secret: Arc<[u8]>,
    tag: Arc<str>,
    conn: usize,
    events_per_body: usize,
    stop: Stop,
) -> ConnResult {
    let mut r = ConnResult {
        hist: new_histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
    };
    let mut sender = match connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            r.errors += 1;
            r.first_error = Some(format!("connecting to ingest: {e}"));
            return r;
        }
    };
    let mut seq = 0u64;
    while stop.claim() {
        let body = gocardless_body(&tag, conn, seq, events_per_body);
        seq += 1;
        let signature = sign(&secret, body.as_bytes());
        let request = Request::post("/webhooks/gocardless")
            .header(HOST, addr.to_string())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "payhook-bench")
            .header("Webhook-Signature", signature)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let started = Instant::now();
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        }
        .await;
        let micros = started.elapsed().as_micros() as u64;
        match answer {
            Ok((StatusCode::NO_CONTENT, _)) => {
                r.hist.saturating_record(micros.max(1));
                r.ok += 1;
            }
            Ok((status, body)) => {
                r.errors += 1;
                if r.first_error.is_none() {
                    r.first_error = Some(format!(
                        "ingest answered {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ));
                }
            }
            Err(e) => {
                // The connection is gone; this run has failed, stop using it.
                r.errors += 1;
                if r.first_error.is_none() {
                    r.first_error = Some(format!("connection to ingest broke: {e}"));
                }
                break;
            }
        }
    }
    r
}

async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Hex HMAC-SHA256 of `body`, as GoCardless sends it in `Webhook-Signature`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
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
    }
}
