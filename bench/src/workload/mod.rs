//! The workload the chaos run and the benchmark send, generated up front from a seed: payments
//! of all four gateways with realistic lifecycles, the exact bodies each gateway would send, in
//! an order where one payment's events often arrive out of order (and a payment before its
//! mandate), plus verbatim duplicate deliveries and, on request, poison events meant to go
//! dead. [`Mix`] says which gateways and which GoCardless shape; [`stream`] cuts an endless
//! load for time-limited steps into generated chunks.
//!
//! Every event also carries what it means ([`Effect`]), so the checks ([`crate::verdict`])
//! can say what state the database must end in without asking payhook's own code:
//! DESIGN.md's "Domain rules" and its forward-only status order, read independently.
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`lifecycles`] | each gateway's payment lifecycles (and GoCardless mandates, poison) |
//! | [`account`] | GoCardless as a real account: a mandate, then four confirmed payments |
//! | [`bank`] | GoCardless bank-account data (chaos only): credits paying invoices, debits, connections |
//! | [`stream`] | chunk after chunk of a workload for a load that runs for a time, and its model |

mod account;
pub mod bank;
mod lifecycles;
pub mod stream;

use bytes::Bytes;

use crate::load::Gateway;
use crate::rng::Rng;

/// A payment status. Declaration order is the forward-only rank of DESIGN.md ("A payment's
/// status only moves forward"; the order itself is documented in shared/src/domain/status.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Pending,
    Submitted,
    Failed,
    Expired,
    Cancelled,
    Completed,
    PaidOut,
    Refunded,
    ChargedBack,
}

impl Status {
    /// The `payments.status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted => "submitted",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
            Self::PaidOut => "paid_out",
            Self::Refunded => "refunded",
            Self::ChargedBack => "charged_back",
        }
    }
}

/// What an event means for the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The payment reports this status. Completed, paid out and charged back mean the money was
    /// taken (the payment's one positive ledger row); charged back also takes it back (one
    /// negative row).
    Payment(Status),
    /// Paystack `refund.processed`: status refunded and one negative row of this amount.
    Refund(i64),
    /// A GoCardless mandate event: the member is active (`created`, `reinstated`) or suspended
    /// (`cancelled`) as of `at` (unix seconds; the latest event wins, DESIGN.md "Domain rules").
    Member { active: bool, at: i64 },
    /// An event built to fail permanently (an amount that cannot be converted exactly): it
    /// must end `dead` and change nothing.
    Poison,
    /// Bank data `transaction.created`: the transaction of [`Target::BankTransaction`] is
    /// stored (once, however many events report it) and matched ([`bank::Transaction`]).
    BankTransaction,
    /// Bank data `connection.revoked`: the connection is `revoked` for good.
    ConnectionRevoked,
    /// Bank data `authorization.updated` as of `at` (unix seconds): the newest one decides the
    /// connection's `authorization_status` and `authorization_expires_at` (unix seconds).
    Authorization {
        status: &'static str,
        at: i64,
        expires_at: i64,
    },
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Payment(usize),
    Mandate(usize),
    /// Indices into [`Workload::bank`]'s transactions and connections.
    BankTransaction(usize),
    BankConnection(usize),
    None,
}

/// One event, as ingest will key it.
#[derive(Debug, Clone)]
pub struct Event {
    pub gateway: Gateway,
    /// The dedup key ingest derives (DESIGN.md "Providers": GoCardless `events[].id`,
    /// Paystack/Flutterwave `event:data.id` or `event:sha256(body)`, PayQI `id`).
    pub external_id: String,
    /// As stored: GoCardless `<resource_type>.<action>`, the others as sent.
    pub event_type: String,
    pub target: Target,
    pub effect: Effect,
}

/// A payment of the model.
#[derive(Debug, Clone)]
pub struct Payment {
    pub gateway: Gateway,
    /// `payments.external_id` (DESIGN.md "Data").
    pub external_id: String,
    pub amount_minor: i64,
    pub currency: &'static str,
}

/// A GoCardless mandate (one member) of the model; the fake gateway API answers with it.
#[derive(Debug, Clone)]
pub struct Mandate {
    pub id: String,
    pub customer_id: String,
    pub given_name: String,
    pub family_name: String,
    pub email: String,
    pub mandate_type: &'static str,
    pub created_at: String,
}

/// One HTTP delivery: a body and the events in it. Copies share the original's bytes.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub gateway: Gateway,
    pub body: Bytes,
    /// Indices into [`Workload::events`].
    pub events: Vec<usize>,
    /// For a verbatim re-send: the index of the original in [`Workload::deliveries`].
    pub copy_of: Option<usize>,
}

/// Everything the run sends, in sending order, and the model behind it.
#[derive(Debug, Default)]
pub struct Workload {
    pub events: Vec<Event>,
    pub payments: Vec<Payment>,
    pub mandates: Vec<Mandate>,
    pub deliveries: Vec<Delivery>,
    /// Bank data (only [`Mix::Chaos`] has any): the expected payments of provider `bank` to
    /// register before the load ([`bank::seed`]), and the transactions and connections.
    pub bank: bank::Bank,
    /// The last of the numeric ids it used (Paystack and Flutterwave ids are numbers): the
    /// next workload sent to the same database starts above it.
    pub last_id: u64,
}

/// How to generate a workload.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unique per run: every id carries it, so runs never share a key.
    pub tag: String,
    /// Distinct events (not counting duplicates or poison): at least this many.
    pub events: usize,
    /// Share of deliveries sent a second time, verbatim, later on.
    pub duplicates: f64,
    /// Poison events to inject.
    pub poison: usize,
    /// Numeric ids start above this: workloads sent to one database need disjoint ranges
    /// (the other ids carry the tag).
    pub id_base: u64,
    /// Which gateways, and how GoCardless traffic is shaped.
    pub mix: Mix,
}

/// Which traffic a workload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// The chaos run's: all four gateways; GoCardless as payment lifecycles (created,
    /// submitted, confirmed, failed and retried, charged back), 30 % of them on a new mandate,
    /// and bank-account data (about 7 % of the events, [`bank`]).
    Chaos,
    /// Issue 11's realistic mix: all four gateways; GoCardless as accounts (each mandate's
    /// `mandates.created`, then four `payments.confirmed`); the others as in [`Mix::Chaos`].
    Realistic,
    /// Issue 11's GoCardless accounts alone: what the Flask + Celery peer can take.
    GoCardless,
}

impl Mix {
    /// Draw weights of the gateways: one draw is one payment lifecycle (or, for GoCardless
    /// accounts, one mandate and its payments).
    fn weights(self) -> &'static [(u32, Gateway)] {
        match self {
            Self::Chaos | Self::Realistic => &[
                (40, Gateway::GoCardless),
                (20, Gateway::Paystack),
                (20, Gateway::Flutterwave),
                (20, Gateway::PayQi),
            ],
            Self::GoCardless => &[(1, Gateway::GoCardless)],
        }
    }
}

/// Event timestamps are spread from here (2026-11-01T00:00:00Z), one minute per payment.
const BASE_UNIX: i64 = 1_793_491_200;

impl Workload {
    pub fn generate(spec: &Spec, rng: &mut Rng) -> Workload {
        let mut g = Generator {
            w: Workload::default(),
            tag: spec.tag.clone(),
            units: Vec::new(),
            mandate_units: Vec::new(),
            next_id: spec.id_base,
        };
        while g.w.events.len() < spec.events {
            // Only the chaos mix draws here: the others stay what the benchmark measured.
            if spec.mix == Mix::Chaos && rng.chance(bank::DRAW_SHARE) {
                g.bank(rng);
                continue;
            }
            match rng.weighted(spec.mix.weights()) {
                Gateway::GoCardless if spec.mix == Mix::Chaos => g.gocardless(rng),
                Gateway::GoCardless => g.gocardless_account(rng),
                Gateway::Paystack => g.paystack(rng),
                Gateway::Flutterwave => g.flutterwave(rng),
                Gateway::PayQi => g.payqi(rng),
            }
        }
        for _ in 0..spec.poison {
            g.poison();
        }
        g.schedule(spec, rng);
        g.w.last_id = g.next_id;
        g.w
    }

    /// Distinct events meant to be processed (poison excluded).
    pub fn real_events(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.effect != Effect::Poison)
            .count()
    }
}

/// A unit of ordering: the events of one payment or one mandate, in lifecycle order, each with
/// its body (the whole body, or for GoCardless the event object that goes into a body).
struct Unit {
    events: Vec<(usize, String)>,
    /// The mandate a GoCardless payment belongs to.
    mandate: Option<usize>,
}

struct Generator {
    w: Workload,
    tag: String,
    units: Vec<Unit>,
    /// For each mandate, its unit.
    mandate_units: Vec<usize>,
    next_id: u64,
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .expect("a time in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `minor` as a decimal of `exponent` places, as Flutterwave and PayQI write major units.
fn decimal(minor: i64, exponent: u32) -> String {
    if exponent == 0 {
        return minor.to_string();
    }
    let unit = 10i64.pow(exponent);
    format!(
        "{}.{:0width$}",
        minor / unit,
        minor % unit,
        width = exponent as usize
    )
}

impl Generator {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn event(
        &mut self,
        gateway: Gateway,
        key: String,
        event_type: &str,
        target: Target,
        effect: Effect,
    ) -> usize {
        self.w.events.push(Event {
            gateway,
            external_id: key,
            event_type: event_type.to_owned(),
            target,
            effect,
        });
        self.w.events.len() - 1
    }

    fn payment(
        &mut self,
        gateway: Gateway,
        external_id: String,
        amount_minor: i64,
        currency: &'static str,
    ) -> usize {
        self.w.payments.push(Payment {
            gateway,
            external_id,
            amount_minor,
            currency,
        });
        self.w.payments.len() - 1
    }

    /// Orders every event and cuts the deliveries. Each unit starts at a random point of the
    /// run and spreads its events over a random stretch; a third of the units are shuffled
    /// first (their events then arrive out of lifecycle order). A mandate usually comes just
    /// before its first payment, sometimes after it (then the worker must fetch the member
    /// from the gateway API). GoCardless events are cut into bodies of 1–5 events; some
    /// deliveries are then sent again, verbatim, a little later.
    fn schedule(&mut self, spec: &Spec, rng: &mut Rng) {
        let total = self.w.events.len() as u64;
        let max_gap = (total / 40).clamp(2, 300);
        let mut keyed: Vec<(u64, usize, String)> = Vec::with_capacity(self.w.events.len());
        let mut first_payment_start: Vec<Option<u64>> = vec![None; self.w.mandates.len()];
        let mut starts = vec![0u64; self.units.len()];
        let is_mandate: std::collections::HashSet<usize> =
            self.mandate_units.iter().copied().collect();
        for (u, unit) in self.units.iter().enumerate() {
            if is_mandate.contains(&u) {
                continue;
            }
            let start = rng.range(0, total.max(1));
            starts[u] = start;
            if let Some(m) = unit.mandate {
                let s = first_payment_start[m].get_or_insert(start);
                *s = (*s).min(start);
            }
        }
        for (m, &u) in self.mandate_units.iter().enumerate() {
            let first = first_payment_start[m].unwrap_or(0);
            starts[u] = if rng.chance(0.8) {
                first.saturating_sub(rng.range(1, 40))
            } else {
                first + rng.range(0, 3 * max_gap)
            };
        }
        for (u, unit) in self.units.iter_mut().enumerate() {
            let mut events = std::mem::take(&mut unit.events);
            if rng.chance(1.0 / 3.0) {
                rng.shuffle(&mut events);
            }
            let gap = rng.range(1, max_gap + 1);
            for (k, (i, json)) in events.into_iter().enumerate() {
                let key = starts[u] + k as u64 * gap + rng.range(0, gap);
                keyed.push((key, i, json));
            }
        }
        keyed.sort_by_key(|(key, i, _)| (*key, *i));

        let mut deliveries: Vec<(f64, Delivery)> = Vec::new();
        let mut batch: Vec<(usize, String)> = Vec::new();
        let mut batch_size = rng.range(1, 6) as usize;
        let tag = self.tag.clone();
        for (_, i, json) in keyed {
            let gateway = self.w.events[i].gateway;
            if gateway != Gateway::GoCardless {
                let at = deliveries.len() as f64;
                deliveries.push((
                    at,
                    Delivery {
                        gateway,
                        body: Bytes::from(json),
                        events: vec![i],
                        copy_of: None,
                    },
                ));
                continue;
            }
            batch.push((i, json));
            if batch.len() >= batch_size {
                let at = deliveries.len() as f64;
                deliveries.push((at, gocardless_body(&tag, self.id(), &mut batch)));
                batch_size = rng.range(1, 6) as usize;
            }
        }
        if !batch.is_empty() {
            let at = deliveries.len() as f64;
            deliveries.push((at, gocardless_body(&tag, self.id(), &mut batch)));
        }
        let originals = deliveries.len();
        for d in 0..originals {
            if rng.chance(spec.duplicates) {
                let at = d as f64 + rng.range(1, 300) as f64 + 0.5;
                let copy = Delivery {
                    copy_of: Some(d),
                    ..deliveries[d].1.clone()
                };
                deliveries.push((at, copy));
            }
        }
        // Sorting moves the originals; remember where each went so copies point at it.
        let mut order: Vec<usize> = (0..deliveries.len()).collect();
        order.sort_by(|a, b| deliveries[*a].0.total_cmp(&deliveries[*b].0));
        let mut new_index = vec![0usize; deliveries.len()];
        for (new, old) in order.iter().enumerate() {
            new_index[*old] = new;
        }
        let mut slots: Vec<Option<Delivery>> =
            deliveries.into_iter().map(|(_, d)| Some(d)).collect();
        self.w.deliveries = order
            .iter()
            .map(|old| {
                let mut d = slots[*old].take().expect("each delivery once");
                d.copy_of = d.copy_of.map(|o| new_index[o]);
                d
            })
            .collect();
    }
}

/// A GoCardless body of the events in `batch` (emptied).
fn gocardless_body(tag: &str, webhook: u64, batch: &mut Vec<(usize, String)>) -> Delivery {
    let events: Vec<usize> = batch.iter().map(|(i, _)| *i).collect();
    let objects: Vec<String> = batch.drain(..).map(|(_, json)| json).collect();
    let body = format!(
        r#"{{"events":[{}],"meta":{{"webhook_id":"WB{tag}X{webhook}"}}}}"#,
        objects.join(",")
    );
    Delivery {
        gateway: Gateway::GoCardless,
        body: Bytes::from(body),
        events,
        copy_of: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(events: usize, duplicates: f64, poison: usize) -> Workload {
        let spec = Spec {
            tag: "t".into(),
            events,
            duplicates,
            poison,
            id_base: 0,
            mix: Mix::Chaos,
        };
        Workload::generate(&spec, &mut Rng::new(1))
    }

    #[test]
    fn every_event_is_in_exactly_one_original_delivery() {
        let w = workload(2000, 0.1, 3);
        assert!(w.real_events() >= 2000 && w.real_events() < 2010);
        let mut seen = vec![0u32; w.events.len()];
        for d in w.deliveries.iter().filter(|d| d.copy_of.is_none()) {
            for &i in &d.events {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        let keys: std::collections::HashSet<_> = w
            .events
            .iter()
            .map(|e| (e.gateway, &e.external_id))
            .collect();
        assert_eq!(keys.len(), w.events.len(), "dedup keys are unique");
    }

    #[test]
    fn copies_are_verbatim_and_come_after_their_original() {
        let w = workload(2000, 0.1, 0);
        let copies: Vec<_> = w
            .deliveries
            .iter()
            .enumerate()
            .filter(|(_, d)| d.copy_of.is_some())
            .collect();
        assert!(copies.len() > 50, "{}", copies.len());
        for (at, c) in copies {
            let o = c.copy_of.unwrap();
            assert!(o < at);
            assert_eq!(w.deliveries[o].body, c.body);
            assert!(w.deliveries[o].copy_of.is_none());
        }
    }

    #[test]
    fn bodies_parse_and_gocardless_events_carry_what_the_worker_needs() {
        let w = workload(500, 0.0, 1);
        for d in &w.deliveries {
            let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
            if d.gateway == Gateway::GoCardless {
                for e in v["events"].as_array().unwrap() {
                    if e["resource_type"] == "payments" {
                        assert!(e["metadata"]["amount"].is_string());
                        assert!(e["links"]["mandate"].is_string());
                    }
                }
            }
        }
    }

    #[test]
    fn some_payments_arrive_out_of_order() {
        let w = workload(3000, 0.0, 0);
        let mut last_rank: std::collections::HashMap<usize, Status> = Default::default();
        let mut backwards = 0;
        for d in &w.deliveries {
            for &i in &d.events {
                if let (Target::Payment(p), Effect::Payment(s)) =
                    (w.events[i].target, w.events[i].effect)
                {
                    if last_rank.get(&p).is_some_and(|prev| *prev > s) {
                        backwards += 1;
                    }
                    last_rank.insert(p, s);
                }
            }
        }
        assert!(backwards > 50, "{backwards}");
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(150_050, 2), "1500.50");
        assert_eq!(decimal(7, 2), "0.07");
        assert_eq!(decimal(1500, 0), "1500");
    }
}
