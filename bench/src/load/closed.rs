//! The benchmark's closed-loop load: N keep-alive HTTP/1.1 connections, each sending the next
//! delivery of a [`Source`] as soon as the previous answer arrived, signed as its gateway
//! signs it. Latency (request written → whole answer read) goes into an HdrHistogram in
//! microseconds; building and signing the body is outside the timed span.
//!
//! A [`Window`] restricts what is counted to the requests started inside it, so a step can
//! warm up and then measure a steady period without stopping the connections in between.
//! A server that closes the connection after an answer (gunicorn's sync workers do) is
//! reconnected to, outside the timed span; the reconnections are counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::{connect, gocardless_body, post, Gateway, Sender};

/// One delivery to send, as a [`Source`] hands it out.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub gateway: Gateway,
    pub body: Bytes,
    /// The source's own handle on it, given back to [`Source::accepted`].
    pub slot: (usize, usize),
}

/// Where the deliveries come from.
pub trait Source: Send + Sync + 'static {
    /// The next delivery to send; `None` once there is none left.
    fn next(&self) -> Option<Outgoing>;
    /// `o` was answered 2xx; how many of its events had never been acknowledged before (a
    /// verbatim re-send carries none).
    fn accepted(&self, o: &Outgoing) -> u64;
}

/// Issue 7's friendly load: every request a fresh GoCardless delivery of `events_per_body`
/// `payments.created` events (ids `<tag>-<connection>-<sequence>-<index>`).
pub struct Fresh {
    tag: String,
    events_per_body: usize,
    seq: AtomicU64,
}

impl Fresh {
    pub fn new(tag: &str, events_per_body: usize) -> Arc<Self> {
        Arc::new(Self {
            tag: tag.to_owned(),
            events_per_body,
            seq: AtomicU64::new(0),
        })
    }
}

impl Source for Fresh {
    fn next(&self) -> Option<Outgoing> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // 32 pseudo-connections: 64 mandates, as issue 7's generator spread them.
        let conn = (seq % 32) as usize;
        let body = gocardless_body(&self.tag, conn, seq, self.events_per_body);
        Some(Outgoing {
            gateway: Gateway::GoCardless,
            body: Bytes::from(body),
            slot: (0, seq as usize),
        })
    }

    fn accepted(&self, _: &Outgoing) -> u64 {
        self.events_per_body as u64
    }
}

/// Each gateway's signing secret (the one ingest, or the peer, was started with).
#[derive(Debug, Clone, Default)]
pub struct Secrets(pub Vec<(Gateway, Vec<u8>)>);

impl Secrets {
    pub fn of(&self, gateway: Gateway) -> &[u8] {
        self.0
            .iter()
            .find(|(g, _)| *g == gateway)
            .map_or(&[], |(_, s)| s.as_slice())
    }
}

/// When a load run ends.
#[derive(Clone)]
pub enum Stop {
    /// Send until this instant (the requests in flight then still complete and count).
    At(Instant),
    /// Send exactly this many requests in all, across the connections.
    Requests(Arc<AtomicU64>, u64),
    /// Send until the source has nothing left.
    Exhausted,
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
            Stop::Exhausted => true,
        }
    }
}

/// The span whose requests are counted: those started at or after `from` and before `until`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub until: Instant,
}

/// A load run's parameters.
pub struct Load {
    pub addr: SocketAddr,
    pub connections: usize,
    pub secrets: Secrets,
    pub stop: Stop,
    /// Count only this span (default: everything, first request to last answer).
    pub window: Option<Window>,
}

/// What one load run measured (within its window, except `accepted_all` and the errors).
pub struct LoadResult {
    /// Latency of the accepted (2xx) answers, µs.
    pub hist: Histogram<u64>,
    /// 2xx answers.
    pub ok: u64,
    /// Events acknowledged for the first time by those answers.
    pub events: u64,
    /// 2xx answers over the whole run, window or not, and their fresh events.
    pub accepted_all: u64,
    pub events_all: u64,
    /// Anything else, whole run: another status, a broken connection.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Connections reopened because the server had closed them after an answer.
    pub reconnects: u64,
    /// The window's length, or first request to last answer.
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs the load until `load.stop` (or the source is exhausted).
pub async fn run<S: Source>(load: Load, source: Arc<S>) -> LoadResult {
    let started = Instant::now();
    let secrets = Arc::new(load.secrets);
    let tasks: Vec<_> = (0..load.connections)
        .map(|_| {
            tokio::spawn(connection(
                load.addr,
                secrets.clone(),
                source.clone(),
                load.stop.clone(),
                load.window,
            ))
        })
        .collect();
    let mut result = LoadResult {
        hist: new_histogram(),
        ok: 0,
        events: 0,
        accepted_all: 0,
        events_all: 0,
        errors: 0,
        first_error: None,
        reconnects: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let r = match t.await {
            Ok(r) => r,
            Err(e) => ConnResult {
                hist: new_histogram(),
                errors: 1,
                first_error: Some(format!("load task panicked: {e}")),
                ..ConnResult::default()
            },
        };
        result.hist.add(&r.hist).expect("same histogram bounds");
        result.ok += r.ok;
        result.events += r.events;
        result.accepted_all += r.accepted_all;
        result.events_all += r.events_all;
        result.errors += r.errors;
        result.reconnects += r.reconnects;
        if result.first_error.is_none() {
            result.first_error = r.first_error;
        }
    }
    result.elapsed = match load.window {
        Some(w) => w.until.duration_since(w.from),
        None => started.elapsed(),
    };
    result
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

struct ConnResult {
    hist: Histogram<u64>,
    ok: u64,
    events: u64,
    accepted_all: u64,
    events_all: u64,
    errors: u64,
    first_error: Option<String>,
    reconnects: u64,
}

impl Default for ConnResult {
    fn default() -> Self {
        Self {
            hist: new_histogram(),
            ok: 0,
            events: 0,
            accepted_all: 0,
            events_all: 0,
            errors: 0,
            first_error: None,
            reconnects: 0,
        }
    }
}

impl ConnResult {
    fn error(&mut self, msg: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }
}

/// A usable connection: the one we have if it is still open, else a new one.
async fn usable(addr: SocketAddr, sender: &mut Option<Sender>, r: &mut ConnResult) -> bool {
    if let Some(s) = sender.as_mut() {
        if s.ready().await.is_ok() {
            return true;
        }
        r.reconnects += 1;
    }
    match connect(addr).await {
        Ok(s) => {
            *sender = Some(s);
            true
        }
        Err(e) => {
            r.error(|| format!("connecting to {addr}: {e}"));
            *sender = None;
            false
        }
    }
}

async fn connection<S: Source>(
    addr: SocketAddr,
    secrets: Arc<Secrets>,
    source: Arc<S>,
    stop: Stop,
    window: Option<Window>,
) -> ConnResult {
    let mut r = ConnResult::default();
    let mut sender: Option<Sender> = None;
    while stop.claim() {
        let Some(o) = source.next() else { break };
        if !usable(addr, &mut sender, &mut r).await {
            break;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs() as i64);
        let headers = o.gateway.auth_headers(secrets.of(o.gateway), &o.body, now);
        let started = Instant::now();
        let counted = window.is_none_or(|w| started >= w.from && started < w.until);
        let s = sender.as_mut().expect("usable() connected");
        let answer = post(s, addr, o.gateway.path(), &headers, o.body.clone()).await;
        let micros = started.elapsed().as_micros() as u64;
        match answer {
            Ok((status, _)) if status.is_success() => {
                let fresh = source.accepted(&o);
                r.accepted_all += 1;
                r.events_all += fresh;
                if counted {
                    r.hist.saturating_record(micros.max(1));
                    r.ok += 1;
                    r.events += fresh;
                }
            }
            Ok((status, body)) => r.error(|| {
                format!(
                    "{} delivery answered {status}: {}",
                    o.gateway.name(),
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )
            }),
            Err(e) => {
                // Broken with the request on it: that delivery is lost to this run (a
                // finding); the next one gets a new connection.
                r.error(|| format!("connection to {addr} broke: {e}"));
                sender = None;
            }
        }
    }
    r
}
