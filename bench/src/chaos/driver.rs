//! The load of the chaos run: N keep-alive connections to ingest, each taking the next
//! delivery of the workload (in its order) and sending it, freshly signed, until ingest
//! answers 2xx. Like a gateway, it retries a 503, a refused or broken connection or a timeout
//! after a short backoff, and only a 2xx counts as acknowledged; every acknowledgement is
//! recorded. A gate (moved by the fault runner) holds the load at the point where the next
//! fault is due, so every fault lands with deliveries still to come.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;

use crate::load::{self, Gateway, Sender};
use crate::rng::Rng;
use crate::workload::Workload;

/// Longest wait for one answer; ingest answers 503 after `INGEST_TIMEOUT` (10 s) anyway.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Counters shared by the connections, the fault runner and the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Next delivery to claim.
    pub next: AtomicUsize,
    /// Deliveries with an index at or above this wait.
    pub gate: AtomicUsize,
    pub acked_deliveries: AtomicU64,
    /// Distinct events acknowledged (a copy's events count once, with the first 2xx).
    pub acked_events: AtomicU64,
    /// Requests sent, first tries and retries.
    pub requests: AtomicU64,
    pub answers_503: AtomicU64,
    /// Any other non-2xx answer (never expected; the delivery is not retried).
    pub answers_other: AtomicU64,
    pub connection_errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Set once every connection has finished.
    pub done: AtomicBool,
}

/// One delivery's fate.
#[derive(Debug, Default)]
pub struct Slot {
    pub acked: AtomicBool,
    pub attempts: AtomicU32,
    /// Milliseconds since the load started, when the 2xx came.
    pub acked_ms: AtomicU64,
    pub status: AtomicU32,
}

/// What the load did, for the checks and the report.
pub struct LoadOutcome {
    pub slots: Vec<Slot>,
    pub elapsed: Duration,
    /// The first answer that was neither 2xx nor 503, if any.
    pub first_rejection: Option<String>,
}

pub struct Driver {
    /// Ingest's addresses: connection `c` talks to `addrs[c % len]`, as a load balancer
    /// spreads a gateway's connections.
    pub addrs: Vec<SocketAddr>,
    pub connections: usize,
    pub secrets: Vec<(Gateway, String)>,
    /// A delivery still unacknowledged then is given up (and the run fails).
    pub deadline: Instant,
    pub seed: u64,
}

impl Driver {
    pub async fn run(&self, workload: Arc<Workload>, progress: Arc<Progress>) -> LoadOutcome {
        let n = workload.deliveries.len();
        let slots: Arc<Vec<Slot>> = Arc::new((0..n).map(|_| Slot::default()).collect());
        let event_acked: Arc<Vec<AtomicBool>> = Arc::new(
            (0..workload.events.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
        );
        let rejection = Arc::new(Mutex::new(None));
        let started = Instant::now();
        let secrets: Arc<Vec<(Gateway, Vec<u8>)>> = Arc::new(
            self.secrets
                .iter()
                .map(|(g, s)| (*g, s.as_bytes().to_vec()))
                .collect(),
        );
        let tasks: Vec<_> = (0..self.connections)
            .map(|c| {
                let conn = Connection {
                    addr: self.addrs[c % self.addrs.len()],
                    workload: workload.clone(),
                    slots: slots.clone(),
                    event_acked: event_acked.clone(),
                    progress: progress.clone(),
                    secrets: secrets.clone(),
                    rejection: rejection.clone(),
                    started,
                    deadline: self.deadline,
                    rng: Rng::new(self.seed).fork(1000 + c as u64),
                };
                tokio::spawn(conn.run())
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        progress.done.store(true, Ordering::Relaxed);
        let first_rejection = rejection.lock().expect("not poisoned").take();
        LoadOutcome {
            slots: Arc::try_unwrap(slots).unwrap_or_else(|_| unreachable!("every task ended")),
            elapsed: started.elapsed(),
            first_rejection,
        }
    }
}

struct Connection {
    addr: SocketAddr,
    workload: Arc<Workload>,
    slots: Arc<Vec<Slot>>,
    event_acked: Arc<Vec<AtomicBool>>,
    progress: Arc<Progress>,
    secrets: Arc<Vec<(Gateway, Vec<u8>)>>,
    rejection: Arc<Mutex<Option<String>>>,
    started: Instant,
    deadline: Instant,
    rng: Rng,
}

impl Connection {
    async fn run(mut self) {
        let mut sender: Option<Sender> = None;
        while let Some(i) = self.claim().await {
            self.deliver(i, &mut sender).await;
        }
    }

    /// The next delivery, waiting at the gate; `None` when all are taken.
    async fn claim(&self) -> Option<usize> {
        let n = self.workload.deliveries.len();
        loop {
            let next = self.progress.next.load(Ordering::Acquire);
            if next >= n {
                return None;
            }
            if next >= self.progress.gate.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            if self
                .progress
                .next
                .compare_exchange(next, next + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(next);
            }
        }
    }

    /// Sends delivery `i` until a 2xx, a rejection, or the deadline.
    async fn deliver(&mut self, i: usize, sender: &mut Option<Sender>) {
        let d = &self.workload.deliveries[i];
        let secret = &self
            .secrets
            .iter()
            .find(|(g, _)| *g == d.gateway)
            .expect("a secret for every gateway")
            .1;
        let slot = &self.slots[i];
        let p = &self.progress;
        let mut backoff = BACKOFF_MIN;
        while Instant::now() < self.deadline {
            slot.attempts.fetch_add(1, Ordering::Relaxed);
            if sender.is_none() {
                match load::connect(self.addr).await {
                    Ok(s) => *sender = Some(s),
                    Err(_) => {
                        p.connection_errors.fetch_add(1, Ordering::Relaxed);
                        backoff = pause(&mut self.rng, backoff).await;
                        continue;
                    }
                }
            }
            let s = sender.as_mut().expect("connected above");
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |t| t.as_secs() as i64);
            let headers = d.gateway.auth_headers(secret, &d.body, now);
            p.requests.fetch_add(1, Ordering::Relaxed);
            let answer = tokio::time::timeout(
                REQUEST_TIMEOUT,
                load::post(s, self.addr, d.gateway.path(), &headers, d.body.clone()),
            )
            .await;
            match answer {
                Ok(Ok((status, _))) if status.is_success() => {
                    slot.status
                        .store(u32::from(status.as_u16()), Ordering::Relaxed);
                    slot.acked_ms
                        .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    slot.acked.store(true, Ordering::Release);
                    p.acked_deliveries.fetch_add(1, Ordering::Relaxed);
                    let fresh = d
                        .events
                        .iter()
                        .filter(|e| !self.event_acked[**e].swap(true, Ordering::AcqRel))
                        .count();
                    p.acked_events.fetch_add(fresh as u64, Ordering::Relaxed);
                    return;
                }
                Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, _))) => {
                    p.answers_503.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok((status, body))) => {
                    // Our deliveries are well-formed and correctly signed: anything else is
                    // a finding. A gateway would retry it forever; we record it and move on,
                    // and the unacknowledged delivery fails the run.
                    p.answers_other.fetch_add(1, Ordering::Relaxed);
                    slot.status
                        .store(u32::from(status.as_u16()), Ordering::Relaxed);
                    let mut first = self.rejection.lock().expect("not poisoned");
                    if first.is_none() {
                        *first = Some(format!(
                            "{} delivery #{i} answered {status}: {}",
                            d.gateway.name(),
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        ));
                    }
                    return;
                }
                Ok(Err(_)) => {
                    // Ingest killed, or the connection dropped: a new one next time.
                    p.connection_errors.fetch_add(1, Ordering::Relaxed);
                    *sender = None;
                }
                Err(_) => {
                    p.timeouts.fetch_add(1, Ordering::Relaxed);
                    *sender = None;
                }
            }
            backoff = pause(&mut self.rng, backoff).await;
        }
    }
}

/// Sleeps about `backoff` (jittered ±50 %, so connections don't retry in lockstep); the
/// next, doubled one.
pub(super) async fn pause(rng: &mut Rng, backoff: Duration) -> Duration {
    let jitter = 0.5 + rng.unit();
    tokio::time::sleep(backoff.mul_f64(jitter)).await;
    (backoff * 2).min(BACKOFF_MAX)
}
