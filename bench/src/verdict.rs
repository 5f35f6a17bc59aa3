//! The verdict shared by the chaos run and the benchmark: what the database holds after the
//! drain, against what the workload's model says it must hold given the events that were
//! stored. The expected state is computed here,
//! from DESIGN.md's rules (forward-only statuses, one `payment` ledger row per completed
//! payment, negative rows for refunds and chargebacks, the latest mandate event decides a
//! member's status), never by asking payhook's code. Bank data (payments of provider `bank`,
//! bank transactions and connections) has its own checks ([`bank`]), run when the workload
//! has any.

#[path = "verdict_bank.rs"]
mod bank;

use std::collections::HashMap;

use serde::Serialize;
use sqlx::PgPool;

use crate::workload::{Effect, Status, Target, Workload};

/// One line of the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub value: u64,
    pub expected: u64,
    pub ok: bool,
    /// A few offending keys, to start the investigation from.
    pub examples: Vec<String>,
}

impl Check {
    pub fn new(name: &'static str, value: u64, expected: u64, examples: Vec<String>) -> Self {
        Self {
            name,
            value,
            expected,
            ok: value == expected,
            examples,
        }
    }
}

/// Side figures of the database, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stored {
    pub deliveries: i64,
    pub events: i64,
    pub payments: i64,
    pub ledger_rows: i64,
    pub members: i64,
    /// Events that needed more than one attempt in the worker, and all their retries.
    pub events_retried: i64,
    pub worker_retries: i64,
    /// Bank data: `bank_transactions` rows, those `matched`, `bank_connections` rows.
    pub bank_transactions: i64,
    pub bank_credits_matched: i64,
    pub bank_connections: i64,
}

/// Collects examples, keeping the first few.
#[derive(Default)]
struct Tally {
    n: u64,
    examples: Vec<String>,
}

impl Tally {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.n += 1;
        if self.examples.len() < 5 {
            self.examples.push(example());
        }
    }
}

struct StoredEvent {
    event_type: String,
    status: String,
}

/// What one payment's stored events imply.
#[derive(Default)]
struct Implied {
    status: Option<Status>,
    money_taken: bool,
    charged_back: bool,
    refunds: Vec<i64>,
}

/// The checks, given which of `w.deliveries` were acknowledged (`acked[i]`: delivery `i`
/// got a 2xx).
pub async fn run(
    pool: &PgPool,
    w: &Workload,
    acked: &[bool],
) -> anyhow::Result<(Vec<Check>, Stored)> {
    let rows: Vec<(String, String, String, String, i32)> = sqlx::query_as(
        "SELECT provider, external_id, event_type, status, attempts FROM webhook_events",
    )
    .fetch_all(pool)
    .await?;
    let mut stored_figures = Stored {
        events: rows.len() as i64,
        events_retried: rows.iter().filter(|r| r.4 > 0).count() as i64,
        worker_retries: rows.iter().map(|r| i64::from(r.4)).sum(),
        ..Stored::default()
    };
    let dead_total = rows.iter().filter(|r| r.3 == "dead").count() as u64;
    let stored: HashMap<(String, String), StoredEvent> = rows
        .into_iter()
        .map(|(provider, external_id, event_type, status, _)| {
            ((provider, external_id), StoredEvent { event_type, status })
        })
        .collect();
    let key = |i: usize| {
        let e = &w.events[i];
        (e.gateway.name().to_owned(), e.external_id.clone())
    };
    let mut checks = Vec::new();

    // Deliveries: every one acknowledged in the end.
    let mut unacked = Tally::default();
    for (i, &ok) in acked.iter().enumerate() {
        if !ok {
            unacked.add(|| format!("delivery #{i} ({})", w.deliveries[i].gateway.name()));
        }
    }

    // 1. Every acknowledged event has a processed row (poison: a dead one).
    let mut event_acked = vec![false; w.events.len()];
    for (i, &ok) in acked.iter().enumerate() {
        if ok {
            for &e in &w.deliveries[i].events {
                event_acked[e] = true;
            }
        }
    }
    let mut lost = Tally::default();
    let mut dead_poison = 0u64;
    for (i, e) in w.events.iter().enumerate() {
        let want = if e.effect == Effect::Poison {
            "dead"
        } else {
            "processed"
        };
        let got = stored.get(&key(i)).map(|s| s.status.as_str());
        if e.effect == Effect::Poison && got == Some("dead") {
            dead_poison += 1;
        }
        if event_acked[i] && got != Some(want) {
            lost.add(|| {
                format!(
                    "{} {} is {}",
                    e.gateway.name(),
                    e.external_id,
                    got.unwrap_or("missing")
                )
            });
        }
    }
    checks.push(Check::new(
        "acknowledged events without a processed row",
        lost.n,
        0,
        lost.examples,
    ));

    // Stored events must be the ones sent, with the type sent.
    let index: HashMap<(String, String), usize> =
        (0..w.events.len()).map(|i| (key(i), i)).collect();
    let mut strange = Tally::default();
    for (k, s) in &stored {
        match index.get(k) {
            None => strange.add(|| format!("{} {} was never sent", k.0, k.1)),
            Some(&i) if w.events[i].event_type != s.event_type => strange.add(|| {
                format!(
                    "{} {} stored as {}, sent as {}",
                    k.0, k.1, s.event_type, w.events[i].event_type
                )
            }),
            Some(_) => {}
        }
    }

    // What each payment's and each mandate's stored events imply.
    let mut implied: Vec<Implied> = (0..w.payments.len()).map(|_| Implied::default()).collect();
    let mut member: Vec<Option<(i64, bool)>> = vec![None; w.mandates.len()];
    for (i, e) in w.events.iter().enumerate() {
        if !stored.contains_key(&key(i)) {
            continue;
        }
        match (e.target, e.effect) {
            (Target::Payment(p), Effect::Payment(s)) => {
                let m = &mut implied[p];
                m.status = m.status.max(Some(s));
                m.money_taken |= s >= Status::Completed && s != Status::Refunded;
                m.charged_back |= s == Status::ChargedBack;
            }
            (Target::Payment(p), Effect::Refund(amount)) => {
                let m = &mut implied[p];
                m.status = m.status.max(Some(Status::Refunded));
                m.refunds.push(amount);
            }
            (Target::Mandate(m), Effect::Member { active, at }) => {
                // The latest event decides; at equal times, suspended wins.
                let wins = match member[m] {
                    None => true,
                    Some((t, was_active)) => (at, !active) > (t, !was_active),
                };
                if wins {
                    member[m] = Some((at, active));
                }
            }
            _ => {}
        }
    }

    // 2 and 3. Ledger and status of every payment (of a gateway: the bank checks see to the
    // payments of provider `bank`).
    let payments: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT provider, external_id, status FROM payments WHERE provider <> 'bank'",
    )
    .fetch_all(pool)
    .await?;
    stored_figures.payments = payments.len() as i64;
    let status_of: HashMap<(String, String), String> =
        payments.into_iter().map(|(p, e, s)| ((p, e), s)).collect();
    let ledger: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT p.provider, p.external_id, t.kind, t.amount_minor
         FROM transactions t JOIN payments p ON p.id = t.payment_id
         WHERE p.provider <> 'bank'",
    )
    .fetch_all(pool)
    .await?;
    stored_figures.ledger_rows = ledger.len() as i64;
    // (payment rows, refund rows, chargeback rows, sum) per payment.
    let mut books: HashMap<(String, String), (u64, u64, u64, i64)> = HashMap::new();
    for (provider, external_id, kind, amount) in ledger {
        let b = books.entry((provider, external_id)).or_default();
        match kind.as_str() {
            "payment" => b.0 += 1,
            "refund" => b.1 += 1,
            _ => b.2 += 1,
        }
        b.3 += amount;
    }
    let mut twice = Tally::default();
    let mut wrong_books = Tally::default();
    let mut wrong_status = Tally::default();
    let mut model_keys = std::collections::HashSet::new();
    for (p, pay) in w.payments.iter().enumerate() {
        let k = (pay.gateway.name().to_owned(), pay.external_id.clone());
        let m = &implied[p];
        let want_rows = (
            u64::from(m.money_taken),
            m.refunds.len() as u64,
            u64::from(m.charged_back),
        );
        let want_sum = if m.money_taken { pay.amount_minor } else { 0 }
            - m.refunds.iter().sum::<i64>()
            - if m.charged_back { pay.amount_minor } else { 0 };
        let got = books.get(&k).copied().unwrap_or_default();
        let extra = got.0.saturating_sub(want_rows.0)
            + got.1.saturating_sub(want_rows.1)
            + got.2.saturating_sub(want_rows.2);
        for _ in 0..extra {
            twice.add(|| format!("{} {}", k.0, k.1));
        }
        if (got.0, got.1, got.2) != want_rows || got.3 != want_sum {
            wrong_books.add(|| {
                format!(
                    "{} {}: rows (payment, refund, chargeback) {:?} sum {}, expected {:?} sum {}",
                    k.0,
                    k.1,
                    (got.0, got.1, got.2),
                    got.3,
                    want_rows,
                    want_sum
                )
            });
        }
        let want_status = m.status.map(Status::as_str);
        let got_status = status_of.get(&k).map(String::as_str);
        if want_status != got_status {
            wrong_status.add(|| {
                format!(
                    "{} {} is {}, its events say {}",
                    k.0,
                    k.1,
                    got_status.unwrap_or("missing"),
                    want_status.unwrap_or("nothing")
                )
            });
        }
        model_keys.insert(k);
    }
    for k in status_of.keys().filter(|k| !model_keys.contains(*k)) {
        wrong_status.add(|| format!("{} {} exists but was never sent", k.0, k.1));
    }
    for k in books.keys().filter(|k| !model_keys.contains(*k)) {
        wrong_books.add(|| format!("{} {} has ledger rows but was never sent", k.0, k.1));
    }
    checks.push(Check::new(
        "ledger rows applied twice",
        twice.n,
        0,
        twice.examples,
    ));
    checks.push(Check::new(
        "payments whose ledger differs from their events",
        wrong_books.n,
        0,
        wrong_books.examples,
    ));
    checks.push(Check::new(
        "payments whose final status differs from their events",
        wrong_status.n,
        0,
        wrong_status.examples,
    ));

    // 4. Dead events: exactly the poison ones.
    let poison = w
        .events
        .iter()
        .filter(|e| e.effect == Effect::Poison)
        .count() as u64;
    let mut dead = Check::new("dead events", dead_total, poison, Vec::new());
    dead.ok = dead_total == poison && dead_poison == poison;
    if dead_total != dead_poison {
        dead.examples.push(format!(
            "{} dead event(s) that were not injected",
            dead_total - dead_poison
        ));
    }
    checks.push(dead);

    // Members: present, with the status their latest mandate event gives.
    let members: Vec<(String, String)> = sqlx::query_as("SELECT mandate_id, status FROM members")
        .fetch_all(pool)
        .await?;
    stored_figures.members = members.len() as i64;
    let member_status: HashMap<String, String> = members.into_iter().collect();
    let mut wrong_members = Tally::default();
    for (m, mandate) in w.mandates.iter().enumerate() {
        let Some((_, active)) = member[m] else {
            continue;
        };
        let want = if active { "active" } else { "suspended" };
        let got = member_status.get(&mandate.id).map(String::as_str);
        if got != Some(want) {
            wrong_members.add(|| {
                format!(
                    "{} is {}, its events say {want}",
                    mandate.id,
                    got.unwrap_or("missing")
                )
            });
        }
    }
    checks.push(Check::new(
        "members whose status differs from their mandate events",
        wrong_members.n,
        0,
        wrong_members.examples,
    ));
    if !w.bank.is_empty() {
        let event_stored: Vec<bool> = (0..w.events.len())
            .map(|i| stored.contains_key(&key(i)))
            .collect();
        checks.extend(bank::checks(pool, w, &event_stored, &mut stored_figures).await?);
    }
    checks.push(Check::new(
        "stored events never sent (or of another type)",
        strange.n,
        0,
        strange.examples,
    ));
    checks.push(Check::new(
        "deliveries never acknowledged",
        unacked.n,
        0,
        unacked.examples,
    ));
    stored_figures.deliveries = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(pool)
        .await?;
    Ok((checks, stored_figures))
}
