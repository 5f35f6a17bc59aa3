//! A workload as a load [`Source`]: chunk after chunk of a [`Spec`]'s workload, so a step that
//! runs for a time never runs out, while each chunk keeps the workload's ordering (lifecycles
//! interleaved and out of order, payments before their mandate, verbatim re-sends a little
//! later; all within the chunk). Each chunk has its own tag (`<tag>c<n>`: ids never repeat)
//! and its own seeded stream, and numbers its numeric ids on from the chunk before, so two
//! streams built alike send byte-identical deliveries — the benchmark gives payhook and the
//! peer exactly the same load that way. Streams sent to one database need `id_base`s far
//! enough apart.
//!
//! The next chunk is generated on a thread while the current one is sent, so generation never
//! stalls the connections. The stream remembers which deliveries were sent and acknowledged;
//! [`model`] joins the chunks of one or more streams into the one model the verdict needs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{Delivery, Spec, Target, Workload};
use crate::load::{Outgoing, Source};
use crate::rng::Rng;

/// One generated chunk and what became of its deliveries.
struct Chunk {
    workload: Arc<Workload>,
    /// Deliveries handed out so far (always a prefix: they go out in order).
    sent: usize,
    acked: Vec<AtomicBool>,
    event_acked: Vec<AtomicBool>,
}

struct State {
    chunks: Vec<Chunk>,
    /// The chunk generated ahead, if more may come.
    ahead: Option<JoinHandle<Workload>>,
}

/// An endless (or `limit`-chunk) workload.
pub struct Stream {
    spec: Spec,
    rng: Rng,
    limit: Option<usize>,
    state: Mutex<State>,
    accepted_deliveries: AtomicU64,
    accepted_events: AtomicU64,
}

fn generate(spec: &Spec, rng: &Rng, n: usize, id_base: u64) -> Workload {
    let chunk = Spec {
        tag: format!("{}c{n}", spec.tag),
        id_base,
        ..spec.clone()
    };
    Workload::generate(&chunk, &mut rng.fork(n as u64))
}

impl Stream {
    /// Chunks of `spec.events` events each; at most `limit` of them (`None`: no end).
    pub fn new(spec: Spec, seed: u64, limit: Option<usize>) -> Arc<Self> {
        let rng = Rng::new(seed);
        let first = generate(&spec, &rng, 0, spec.id_base);
        let s = Self {
            state: Mutex::new(State {
                chunks: vec![Chunk::new(first)],
                ahead: None,
            }),
            spec,
            rng,
            limit,
            accepted_deliveries: AtomicU64::new(0),
            accepted_events: AtomicU64::new(0),
        };
        s.generate_ahead(&mut s.state.lock().expect("not poisoned"));
        Arc::new(s)
    }

    fn generate_ahead(&self, state: &mut State) {
        let n = state.chunks.len();
        if state.ahead.is_none() && self.limit.is_none_or(|l| n < l) {
            let (spec, rng) = (self.spec.clone(), self.rng.clone());
            let base = state.chunks[n - 1].workload.last_id;
            state.ahead = Some(std::thread::spawn(move || generate(&spec, &rng, n, base)));
        }
    }

    /// Deliveries answered 2xx so far, and the distinct events they carried.
    pub fn accepted_totals(&self) -> (u64, u64) {
        (
            self.accepted_deliveries.load(Ordering::Relaxed),
            self.accepted_events.load(Ordering::Relaxed),
        )
    }

    /// Deliveries handed out so far.
    pub fn sent(&self) -> usize {
        let state = self.state.lock().expect("not poisoned");
        state.chunks.iter().map(|c| c.sent).sum()
    }

    /// Every acknowledged event: its gateway, dedup key, and whether it is poison (built to
    /// go dead).
    pub fn acked_event_keys(&self) -> Vec<(crate::load::Gateway, String, bool)> {
        let state = self.state.lock().expect("not poisoned");
        let mut keys = Vec::new();
        for c in &state.chunks {
            for (i, e) in c.workload.events.iter().enumerate() {
                if c.event_acked[i].load(Ordering::Relaxed) {
                    keys.push((
                        e.gateway,
                        e.external_id.clone(),
                        e.effect == super::Effect::Poison,
                    ));
                }
            }
        }
        keys
    }
}

impl Chunk {
    fn new(w: Workload) -> Self {
        Self {
            acked: (0..w.deliveries.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
            event_acked: (0..w.events.len())
                .map(|_| AtomicBool::new(false))
                .collect(),
            sent: 0,
            workload: Arc::new(w),
        }
    }
}

impl Source for Stream {
    fn next(&self) -> Option<Outgoing> {
        let mut state = self.state.lock().expect("not poisoned");
        loop {
            let n = state.chunks.len() - 1;
            let c = &mut state.chunks[n];
            if c.sent < c.workload.deliveries.len() {
                let d = &c.workload.deliveries[c.sent];
                c.sent += 1;
                return Some(Outgoing {
                    gateway: d.gateway,
                    body: d.body.clone(),
                    slot: (n, c.sent - 1),
                });
            }
            let next = state.ahead.take()?;
            let w = next.join().expect("the generator thread does not panic");
            state.chunks.push(Chunk::new(w));
            self.generate_ahead(&mut state);
        }
    }

    fn accepted(&self, o: &Outgoing) -> u64 {
        let state = self.state.lock().expect("not poisoned");
        let c = &state.chunks[o.slot.0];
        if c.acked[o.slot.1].swap(true, Ordering::Relaxed) {
            return 0;
        }
        let fresh = c.workload.deliveries[o.slot.1]
            .events
            .iter()
            .filter(|&&e| !c.event_acked[e].swap(true, Ordering::Relaxed))
            .count() as u64;
        self.accepted_deliveries.fetch_add(1, Ordering::Relaxed);
        self.accepted_events.fetch_add(fresh, Ordering::Relaxed);
        fresh
    }
}

/// One model of everything `streams` sent (into one database): every chunk's workload joined,
/// cut to the deliveries actually sent, and which of those were acknowledged.
pub fn model(streams: &[&Stream]) -> (Workload, Vec<bool>) {
    let mut w = Workload::default();
    let mut acked = Vec::new();
    for s in streams {
        let state = s.state.lock().expect("not poisoned");
        for c in &state.chunks {
            let part = &c.workload;
            let (events, payments, mandates, deliveries) = (
                w.events.len(),
                w.payments.len(),
                w.mandates.len(),
                w.deliveries.len(),
            );
            let (transactions, connections) = w.bank.append(&part.bank);
            w.events.extend(part.events.iter().cloned().map(|mut e| {
                e.target = match e.target {
                    Target::Payment(p) => Target::Payment(p + payments),
                    Target::Mandate(m) => Target::Mandate(m + mandates),
                    Target::BankTransaction(t) => Target::BankTransaction(t + transactions),
                    Target::BankConnection(c) => Target::BankConnection(c + connections),
                    Target::None => Target::None,
                };
                e
            }));
            w.payments.extend(part.payments.iter().cloned());
            w.mandates.extend(part.mandates.iter().cloned());
            // Copies always follow their original, so a sent prefix holds its originals.
            w.deliveries
                .extend(part.deliveries[..c.sent].iter().map(|d| Delivery {
                    gateway: d.gateway,
                    body: d.body.clone(),
                    events: d.events.iter().map(|e| e + events).collect(),
                    copy_of: d.copy_of.map(|o| o + deliveries),
                }));
            acked.extend(c.acked[..c.sent].iter().map(|a| a.load(Ordering::Relaxed)));
        }
    }
    (w, acked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Mix;

    fn spec(events: usize) -> Spec {
        Spec {
            tag: "s".into(),
            events,
            duplicates: 0.05,
            poison: 0,
            id_base: 0,
            mix: Mix::Realistic,
        }
    }

    #[test]
    fn chunks_follow_one_another_with_fresh_ids_and_the_model_joins_them() {
        let s = Stream::new(spec(200), 7, None);
        let mut out = Vec::new();
        for _ in 0..500 {
            out.push(s.next().unwrap());
        }
        assert!(
            out.iter().any(|o| o.slot.0 >= 2),
            "several chunks were used"
        );
        for o in out.iter().step_by(3) {
            s.accepted(o);
        }
        let (w, acked) = model(&[&s]);
        assert_eq!(acked.len(), 500);
        assert_eq!(acked.iter().filter(|a| **a).count(), out.len().div_ceil(3));
        for (d, o) in w.deliveries.iter().zip(&out) {
            assert_eq!(d.body, o.body);
        }
        let keys: std::collections::HashSet<_> = w
            .events
            .iter()
            .map(|e| (e.gateway, &e.external_id))
            .collect();
        assert_eq!(keys.len(), w.events.len(), "ids never repeat across chunks");
        for d in &w.deliveries {
            if let Some(o) = d.copy_of {
                assert_eq!(w.deliveries[o].body, d.body);
            }
        }
    }

    #[test]
    fn two_streams_built_alike_send_the_same_bytes_and_a_limit_ends_them() {
        let a = Stream::new(spec(100), 9, Some(2));
        let b = Stream::new(spec(100), 9, Some(2));
        let mut n = 0;
        while let Some(x) = a.next() {
            assert_eq!(x.body, b.next().unwrap().body);
            n += 1;
        }
        assert!(b.next().is_none());
        assert!(n > 40);
    }

    #[test]
    fn a_resend_acknowledges_no_new_event() {
        let s = Stream::new(spec(300), 1, Some(1));
        let all: Vec<_> = std::iter::from_fn(|| s.next()).collect();
        let total: u64 = all.iter().map(|o| s.accepted(o)).sum();
        let (w, _) = model(&[&s]);
        assert_eq!(total as usize, w.events.len());
        assert_eq!(s.accepted_totals().1 as usize, w.events.len());
    }
}
