//! GoCardless bank-account data as the chaos run sends it (DESIGN.md "Bank data"; only
//! [`Mix::Chaos`](super::Mix::Chaos) draws it, about 7 % of its events):
//!
//! - `transaction.created` credits that pay invoices: expected payments of provider `bank`,
//!   registered in the database before the load ([`seed`]). The remittance text names the
//!   invoice's reference, sometimes in lower case or cut by a space (both ignored by the
//!   matching);
//! - invoices paid twice (two credits, same reference and amount: one is matched, the other
//!   stays `unmatched`) and credits reported by two events (one row);
//! - credits that name no invoice, or an invoice with another amount (`unmatched`), and debits,
//!   some naming an invoice (`ignored`);
//! - per connection, one to three `authorization.updated` (half the time the newest sent before
//!   an older one) and sometimes `connection.revoked`, then a late credit of that connection
//!   (still stored and matched).
//!
//! Every scenario is one unit of the schedule, so its events go into GoCardless bodies with the
//! rest, out of order and re-sent like everything else. Amounts are integers in pence; the
//! decimal text is written from them. What the database must end with is the verdict's to say
//! ([`crate::verdict`]), from [`Bank`] and the events that were stored.

use serde::Serialize;
use sqlx::PgPool;

use super::{decimal, rfc3339, Effect, Generator, Target, Unit, Workload, BASE_UNIX};
use crate::load::Gateway;
use crate::rng::Rng;

/// Chance that one draw of the chaos mix is a bank scenario instead of a gateway's payment.
pub(super) const DRAW_SHARE: f64 = 0.12;

/// The currency of every invoice and transaction (pence).
const CURRENCY: &str = "GBP";

/// An invoice paid by bank transfer: a `payments` row of provider `bank`, `pending` until a
/// credit pays it.
#[derive(Debug, Clone)]
pub struct Invoice {
    /// `payments.external_id` and `payments.reference`.
    pub reference: String,
    pub amount_minor: i64,
    pub currency: &'static str,
}

/// One bank transaction: one `bank_transactions` row (connection + transaction id), however
/// many events report it.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Index into [`Bank::connections`].
    pub connection: usize,
    pub transaction_id: String,
    /// Signed: a debit is negative.
    pub amount_minor: i64,
    pub currency: &'static str,
    /// The invoice whose reference its remittance text names, with its amount and currency:
    /// the one payment it can pay. `None` for every other transaction (a debit naming an
    /// invoice, a credit of another amount).
    pub pays: Option<usize>,
}

/// A bank connection (a requisition) and its account.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: String,
    pub account: String,
}

/// The bank data of a workload.
#[derive(Debug, Clone, Default)]
pub struct Bank {
    pub invoices: Vec<Invoice>,
    pub transactions: Vec<Transaction>,
    pub connections: Vec<Connection>,
}

impl Bank {
    pub fn is_empty(&self) -> bool {
        self.invoices.is_empty() && self.transactions.is_empty() && self.connections.is_empty()
    }

    /// Appends `other` (the next chunk of a stream); the offsets its transaction and
    /// connection indices move by.
    pub(super) fn append(&mut self, other: &Bank) -> (usize, usize) {
        let (invoices, transactions, connections) = (
            self.invoices.len(),
            self.transactions.len(),
            self.connections.len(),
        );
        self.invoices.extend(other.invoices.iter().cloned());
        self.transactions
            .extend(other.transactions.iter().cloned().map(|mut t| {
                t.connection += connections;
                t.pays = t.pays.map(|p| p + invoices);
                t
            }));
        self.connections.extend(other.connections.iter().cloned());
        (transactions, connections)
    }
}

/// Registers every invoice as a `pending` payment of provider `bank` (what
/// `POST /admin/payments` with `"provider": "bank"` does, minus the retry of waiting credits:
/// none can be waiting yet). Must run after the database is migrated and before the first
/// credit is sent. Returns the rows inserted.
pub async fn seed(pool: &PgPool, bank: &Bank) -> Result<u64, sqlx::Error> {
    if bank.invoices.is_empty() {
        return Ok(0);
    }
    let references: Vec<&str> = bank.invoices.iter().map(|i| i.reference.as_str()).collect();
    let amounts: Vec<i64> = bank.invoices.iter().map(|i| i.amount_minor).collect();
    let currencies: Vec<&str> = bank.invoices.iter().map(|i| i.currency).collect();
    let done = sqlx::query(
        "INSERT INTO payments (provider, external_id, reference, amount_minor, currency, status,
                               metadata)
         SELECT 'bank', r, r, a, c, 'pending', '{\"registered_by\": \"payhook-chaos\"}'::jsonb
         FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS i (r, a, c)",
    )
    .bind(&references)
    .bind(&amounts)
    .bind(&currencies)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// What a bank draw sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// A credit paying a new invoice.
    Paid,
    /// Two credits (two transactions) paying the same new invoice.
    PaidTwice,
    /// A credit paying a new invoice, reported by two events.
    SentTwice,
    /// A credit naming no invoice.
    Unmatched,
    /// A credit naming an invoice with another amount.
    OtherAmount,
    /// A debit; half of them name an invoice (with its amount, negative).
    Debit,
}

const SCENARIOS: &[(u32, Scenario)] = {
    use Scenario::*;
    &[
        (46, Paid),
        (12, PaidTwice),
        (12, SentTwice),
        (10, Unmatched),
        (6, OtherAmount),
        (14, Debit),
    ]
};

/// Chance that a transaction comes from a new connection rather than a known one.
const NEW_CONNECTION: f64 = 0.12;
/// Chance that a new connection is revoked (then a late credit follows).
const REVOKED: f64 = 0.3;
/// Statuses of the authorization updates after the first (which is `valid`).
const AUTHORIZATION_STATUSES: &[(u32, &str)] = &[
    (40, "valid"),
    (30, "expiring"),
    (20, "expired"),
    (10, "revoked"),
];

const PAYERS: &[&str] = &[
    "Jane Smith",
    "ACME Ltd",
    "R Patel",
    "Northwind Traders",
    "M Okafor",
    "Lee & Daughters",
];

const OTHER_CREDITS: &[&str] = &[
    "Transfer from savings",
    "Rent december",
    "Gift",
    "Refund of deposit",
];

const DEBITS: &[&str] = &[
    "Card payment STATIONERY",
    "Direct debit ELECTRICITY",
    "Bank fee",
];

/// `minor` pence as the bank writes it: `"42.00"`, `"-12.30"`.
fn bank_amount(minor: i64) -> String {
    if minor < 0 {
        format!("-{}", decimal(-minor, 2))
    } else {
        decimal(minor, 2)
    }
}

/// A remittance text naming `reference`, as payers write it: as is, in lower case, or with a
/// space inside (the matching ignores case and spaces).
fn naming(reference: &str, rng: &mut Rng) -> String {
    match rng.range(0, 4) {
        0 => format!("Invoice {reference}"),
        1 => format!("{} thank you", reference.to_lowercase()),
        2 => {
            let (a, b) = reference.split_at(reference.len() / 2);
            format!("PAYMENT {a} {b}")
        }
        _ => reference.to_owned(),
    }
}

fn pick<T: Copy>(items: &[T], rng: &mut Rng) -> T {
    items[rng.range(0, items.len() as u64) as usize]
}

impl Generator {
    /// One bank scenario, one unit.
    pub(super) fn bank(&mut self, rng: &mut Rng) {
        let t = BASE_UNIX + self.units.len() as i64 * 60;
        let payer = pick(PAYERS, rng);
        let mut events = Vec::new();
        match rng.weighted(SCENARIOS) {
            Scenario::Paid => {
                let invoice = self.invoice(rng);
                let remittance = naming(&self.w.bank.invoices[invoice].reference, rng);
                let tx = self.paying(rng, invoice);
                events.push(self.transaction_event(tx, t, t, &remittance, payer));
            }
            Scenario::PaidTwice => {
                let invoice = self.invoice(rng);
                for k in 0..2 {
                    let remittance = naming(&self.w.bank.invoices[invoice].reference, rng);
                    let tx = self.paying(rng, invoice);
                    let at = t + k * 2 * 86_400;
                    events.push(self.transaction_event(tx, at, at, &remittance, payer));
                }
            }
            Scenario::SentTwice => {
                let invoice = self.invoice(rng);
                let remittance = naming(&self.w.bank.invoices[invoice].reference, rng);
                let tx = self.paying(rng, invoice);
                for k in 0..2 {
                    events.push(self.transaction_event(
                        tx,
                        t + k * 3 * 3600,
                        t,
                        &remittance,
                        payer,
                    ));
                }
            }
            Scenario::Unmatched => {
                let connection = self.connection(rng);
                let amount = rng.range(100, 100_000) as i64;
                let tx = self.transaction(connection, amount, None);
                let remittance = pick(OTHER_CREDITS, rng);
                events.push(self.transaction_event(tx, t, t, remittance, payer));
            }
            Scenario::OtherAmount => {
                // A known invoice, else a new one that nothing will pay.
                let invoice = if self.w.bank.invoices.is_empty() || rng.chance(0.3) {
                    self.invoice(rng)
                } else {
                    rng.range(0, self.w.bank.invoices.len() as u64) as usize
                };
                let i = &self.w.bank.invoices[invoice];
                let amount = i.amount_minor + rng.range(1, 1_000) as i64;
                let remittance = naming(&i.reference.clone(), rng);
                let connection = self.connection(rng);
                let tx = self.transaction(connection, amount, None);
                events.push(self.transaction_event(tx, t, t, &remittance, payer));
            }
            Scenario::Debit => {
                let named = (!self.w.bank.invoices.is_empty() && rng.chance(0.5))
                    .then(|| rng.range(0, self.w.bank.invoices.len() as u64) as usize);
                let (amount, remittance) = match named {
                    Some(i) => {
                        let i = &self.w.bank.invoices[i];
                        (-i.amount_minor, format!("Refund {}", i.reference))
                    }
                    None => (-(rng.range(1, 50_000) as i64), pick(DEBITS, rng).to_owned()),
                };
                let connection = self.connection(rng);
                let tx = self.transaction(connection, amount, None);
                events.push(self.transaction_event(tx, t, t, &remittance, "ACME Supplies"));
            }
        }
        self.units.push(Unit {
            events,
            mandate: None,
        });
    }

    /// A new invoice of a few pounds to a few thousand.
    fn invoice(&mut self, rng: &mut Rng) -> usize {
        let tag = self.tag.clone();
        let n = self.id();
        self.w.bank.invoices.push(Invoice {
            // Fixed width: no reference is part of another, so a remittance text names one.
            reference: format!("INV-{tag}-{n:08}"),
            amount_minor: rng.range(500, 250_000) as i64,
            currency: CURRENCY,
        });
        self.w.bank.invoices.len() - 1
    }

    /// A new credit paying `invoice` (its amount), from some connection.
    fn paying(&mut self, rng: &mut Rng, invoice: usize) -> usize {
        let connection = self.connection(rng);
        let amount = self.w.bank.invoices[invoice].amount_minor;
        self.transaction(connection, amount, Some(invoice))
    }

    fn transaction(&mut self, connection: usize, amount_minor: i64, pays: Option<usize>) -> usize {
        let tag = self.tag.clone();
        let n = self.id();
        self.w.bank.transactions.push(Transaction {
            connection,
            transaction_id: format!("TX{tag}X{n}"),
            amount_minor,
            currency: CURRENCY,
            pays,
        });
        self.w.bank.transactions.len() - 1
    }

    /// A known connection, or a new one (with its own unit of connection events).
    fn connection(&mut self, rng: &mut Rng) -> usize {
        let known = self.w.bank.connections.len();
        if known > 0 && !rng.chance(NEW_CONNECTION) {
            return rng.range(0, known as u64) as usize;
        }
        let tag = self.tag.clone();
        self.w.bank.connections.push(Connection {
            id: format!("CN{tag}X{known}"),
            account: format!("AC{tag}X{known}"),
        });
        let c = known;
        let t0 = BASE_UNIX + self.units.len() as i64 * 60;
        let updates = rng.range(1, 4) as i64;
        let mut events = Vec::new();
        for k in 0..updates {
            // A day apart: never two updates of one connection at the same time.
            let at = t0 + k * 86_400 + rng.range(0, 3600) as i64;
            let status = if k == 0 {
                "valid"
            } else {
                rng.weighted(AUTHORIZATION_STATUSES)
            };
            let expires_at = match status {
                "valid" => at + 90 * 86_400,
                "expiring" => at + 5 * 86_400,
                "expired" => at - 3600,
                _ => at,
            };
            events.push(self.authorization_event(c, status, at, expires_at));
        }
        // The newest update sent before the one it replaces.
        if updates >= 2 && rng.chance(0.5) {
            let n = events.len();
            events.swap(n - 2, n - 1);
        }
        if rng.chance(REVOKED) {
            let at = t0 + updates * 86_400 + 7200;
            events.push(self.revoked_event(c, at));
            // Money that arrived after the revocation: still stored, still matched.
            let invoice = self.invoice(rng);
            let remittance = naming(&self.w.bank.invoices[invoice].reference, rng);
            let amount = self.w.bank.invoices[invoice].amount_minor;
            let tx = self.transaction(c, amount, Some(invoice));
            let late = at + 86_400;
            events.push(self.transaction_event(tx, late, late, &remittance, pick(PAYERS, rng)));
        }
        self.units.push(Unit {
            events,
            mandate: None,
        });
        c
    }

    /// A `transaction.created` about transaction `tx`, sent at `at`, booked at `booked`.
    fn transaction_event(
        &mut self,
        tx: usize,
        at: i64,
        booked: i64,
        remittance: &str,
        party: &str,
    ) -> (usize, String) {
        let tag = self.tag.clone();
        let key = format!("EV{tag}B{}", self.id());
        let t = &self.w.bank.transactions[tx];
        let c = &self.w.bank.connections[t.connection];
        let date = chrono::DateTime::from_timestamp(booked, 0)
            .expect("a time in range")
            .format("%Y-%m-%d");
        let party_field = if t.amount_minor < 0 {
            "creditorName"
        } else {
            "debtorName"
        };
        let json = format!(
            r#"{{"id":"{key}","created_at":"{}","resource_type":"transaction","action":"created","links":{{"connection":"{}","account":"{}","transaction":"{}"}},"details":{{"transactionId":"{}","bookingDate":"{date}","valueDate":"{date}","transactionAmount":{{"amount":"{}","currency":"{}"}},"remittanceInformationUnstructured":"{remittance}","{party_field}":"{party}"}},"metadata":{{}}}}"#,
            rfc3339(at),
            c.id,
            c.account,
            t.transaction_id,
            t.transaction_id,
            bank_amount(t.amount_minor),
            t.currency,
        );
        let i = self.event(
            Gateway::GoCardless,
            key,
            "transaction.created",
            Target::BankTransaction(tx),
            Effect::BankTransaction,
        );
        (i, json)
    }

    fn authorization_event(
        &mut self,
        c: usize,
        status: &'static str,
        at: i64,
        expires_at: i64,
    ) -> (usize, String) {
        let tag = self.tag.clone();
        let key = format!("EV{tag}B{}", self.id());
        let json = format!(
            r#"{{"id":"{key}","created_at":"{}","resource_type":"authorization","action":"updated","links":{{"connection":"{}"}},"details":{{"origin":"bank","status":"{status}","expires_at":"{}"}},"metadata":{{}}}}"#,
            rfc3339(at),
            self.w.bank.connections[c].id,
            rfc3339(expires_at),
        );
        let i = self.event(
            Gateway::GoCardless,
            key,
            "authorization.updated",
            Target::BankConnection(c),
            Effect::Authorization {
                status,
                at,
                expires_at,
            },
        );
        (i, json)
    }

    fn revoked_event(&mut self, c: usize, at: i64) -> (usize, String) {
        let tag = self.tag.clone();
        let key = format!("EV{tag}B{}", self.id());
        let json = format!(
            r#"{{"id":"{key}","created_at":"{}","resource_type":"connection","action":"revoked","links":{{"connection":"{}"}},"details":{{"origin":"customer","cause":"access_revoked","description":"The account holder revoked access."}},"metadata":{{}}}}"#,
            rfc3339(at),
            self.w.bank.connections[c].id,
        );
        let i = self.event(
            Gateway::GoCardless,
            key,
            "connection.revoked",
            Target::BankConnection(c),
            Effect::ConnectionRevoked,
        );
        (i, json)
    }
}

/// The bank part of a workload in figures, for the run's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// Bank events in all (`transaction.created`, `connection.revoked`,
    /// `authorization.updated`).
    pub events: usize,
    /// Expected payments of provider `bank` registered before the load.
    pub invoices: usize,
    /// Distinct credits, and those that pay an invoice (name it with its amount).
    pub credits: usize,
    pub paying: usize,
    /// Invoices two credits pay.
    pub paid_twice: usize,
    /// Transactions reported by two events.
    pub sent_twice: usize,
    pub debits: usize,
    pub connections: usize,
    pub revoked: usize,
    pub authorization_updates: usize,
}

impl Figures {
    /// One line: "N bank events (…)".
    pub fn summary(&self) -> String {
        format!(
            "{} bank events: {} credits ({} paying {} invoices, {} invoices paid twice, {} \
             reported twice), {} debits; {} connections ({} revoked), {} authorization updates",
            self.events,
            self.credits,
            self.paying,
            self.invoices,
            self.paid_twice,
            self.sent_twice,
            self.debits,
            self.connections,
            self.revoked,
            self.authorization_updates
        )
    }
}

impl Workload {
    pub fn bank_figures(&self) -> Figures {
        let b = &self.bank;
        let mut reports = vec![0usize; b.transactions.len()];
        let mut f = Figures {
            invoices: b.invoices.len(),
            connections: b.connections.len(),
            ..Figures::default()
        };
        for e in &self.events {
            match (e.target, e.effect) {
                (Target::BankTransaction(t), _) => {
                    f.events += 1;
                    reports[t] += 1;
                }
                (_, Effect::ConnectionRevoked) => {
                    f.events += 1;
                    f.revoked += 1;
                }
                (_, Effect::Authorization { .. }) => {
                    f.events += 1;
                    f.authorization_updates += 1;
                }
                _ => {}
            }
        }
        let mut paid_by = vec![0usize; b.invoices.len()];
        for t in &b.transactions {
            if t.amount_minor > 0 {
                f.credits += 1;
            } else {
                f.debits += 1;
            }
            if let Some(i) = t.pays {
                f.paying += 1;
                paid_by[i] += 1;
            }
        }
        f.paid_twice = paid_by.iter().filter(|&&n| n >= 2).count();
        f.sent_twice = reports.iter().filter(|&&n| n >= 2).count();
        f
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::Value;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::workload::{Mix, Spec};

    fn chaos(events: usize, seed: u64) -> Workload {
        let spec = Spec {
            tag: "t".into(),
            events,
            duplicates: 0.05,
            poison: 0,
            id_base: 0,
            mix: Mix::Chaos,
        };
        Workload::generate(&spec, &mut Rng::new(seed))
    }

    /// Every GoCardless event object sent, by its id (originals only).
    fn objects(w: &Workload) -> HashMap<String, Value> {
        let mut out = HashMap::new();
        for d in w.deliveries.iter().filter(|d| d.copy_of.is_none()) {
            if d.gateway != Gateway::GoCardless {
                continue;
            }
            let v: Value = serde_json::from_slice(&d.body).unwrap();
            for e in v["events"].as_array().unwrap() {
                out.insert(e["id"].as_str().unwrap().to_owned(), e.clone());
            }
        }
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_bank_data() {
        let (a, b) = (chaos(3000, 5), chaos(3000, 5));
        assert_eq!(a.deliveries.len(), b.deliveries.len());
        for (x, y) in a.deliveries.iter().zip(&b.deliveries) {
            assert_eq!(x.body, y.body);
        }
        assert_eq!(a.bank_figures(), b.bank_figures());
        let refs = |w: &Workload| -> Vec<(String, i64)> {
            w.bank
                .invoices
                .iter()
                .map(|i| (i.reference.clone(), i.amount_minor))
                .collect()
        };
        assert_eq!(refs(&a), refs(&b));
        assert_ne!(refs(&a), refs(&chaos(3000, 6)));
    }

    #[test]
    fn bank_events_are_five_to_ten_percent_with_every_scenario() {
        for seed in [1, 2, 3, 4] {
            let w = chaos(3000, seed);
            let f = w.bank_figures();
            let share = f.events as f64 / w.real_events() as f64;
            assert!((0.05..=0.10).contains(&share), "seed {seed}: {share} {f:?}");
            assert!(f.paying > 50 && f.invoices > 50, "{f:?}");
            assert!(f.paid_twice >= 3, "{f:?}");
            assert!(f.sent_twice >= 3, "{f:?}");
            assert!(f.debits >= 3, "{f:?}");
            assert!(f.credits > f.paying + 3, "unmatched credits: {f:?}");
            assert!(f.revoked >= 1 && f.connections >= 5, "{f:?}");
            assert!(f.authorization_updates > f.connections, "{f:?}");
        }
    }

    #[test]
    fn other_mixes_have_no_bank_data() {
        for mix in [Mix::Realistic, Mix::GoCardless] {
            let spec = Spec {
                tag: "r".into(),
                events: 2000,
                duplicates: 0.05,
                poison: 0,
                id_base: 0,
                mix,
            };
            let w = Workload::generate(&spec, &mut Rng::new(1));
            assert!(w.bank.is_empty());
            assert_eq!(w.bank_figures(), Figures::default());
        }
    }

    /// The benchmark's mixes generate exactly what they generated before bank data existed
    /// (digests of their bodies taken from the code before this module).
    #[test]
    fn realistic_and_gocardless_mixes_are_unchanged() {
        for (mix, deliveries, digest) in [
            (
                Mix::Realistic,
                1886,
                "30df769264ee9a042c6b7fa865832da25542dbae78fc9205ce8b6dfc42430fe2",
            ),
            (
                Mix::GoCardless,
                1062,
                "991fe993e72ed8f306f18a84632e4ab2d06481e978fdcfee0254830b65381eb1",
            ),
        ] {
            let spec = Spec {
                tag: "f".into(),
                events: 3000,
                duplicates: 0.05,
                poison: 2,
                id_base: 10,
                mix,
            };
            let w = Workload::generate(&spec, &mut Rng::new(42));
            let mut h = Sha256::new();
            for d in &w.deliveries {
                h.update(&d.body);
                h.update(b"\n");
            }
            assert_eq!(w.deliveries.len(), deliveries, "{mix:?}");
            assert_eq!(hex::encode(h.finalize()), digest, "{mix:?}");
        }
    }

    #[test]
    fn bank_events_have_the_shape_the_worker_reads() {
        let w = chaos(3000, 1);
        let objects = objects(&w);
        let b = &w.bank;
        let mut seen = 0;
        for e in &w.events {
            let Some(o) = objects.get(&e.external_id) else {
                assert_ne!(e.gateway, Gateway::GoCardless);
                continue;
            };
            assert!(o["created_at"].is_string());
            match (e.target, e.effect) {
                (Target::BankTransaction(t), Effect::BankTransaction) => {
                    let t = &b.transactions[t];
                    assert_eq!(o["resource_type"], "transaction");
                    assert_eq!(o["action"], "created");
                    assert_eq!(
                        o["links"]["connection"],
                        b.connections[t.connection].id.as_str()
                    );
                    assert_eq!(
                        o["links"]["account"],
                        b.connections[t.connection].account.as_str()
                    );
                    assert_eq!(o["links"]["transaction"], t.transaction_id.as_str());
                    let d = &o["details"];
                    assert_eq!(d["transactionId"], t.transaction_id.as_str());
                    assert!(d["bookingDate"].as_str().unwrap().len() == 10);
                    let amount = d["transactionAmount"]["amount"].as_str().unwrap();
                    assert_eq!(amount, bank_amount(t.amount_minor));
                    assert!(amount.split_once('.').unwrap().1.len() == 2);
                    assert_eq!(d["transactionAmount"]["currency"], "GBP");
                    let remittance = d["remittanceInformationUnstructured"].as_str().unwrap();
                    let squashed = remittance.replace(' ', "").to_lowercase();
                    // Names its invoice (case and spaces ignored), or no invoice of its amount.
                    for (i, inv) in b.invoices.iter().enumerate() {
                        let named = squashed.contains(&inv.reference.to_lowercase());
                        let candidate = named && inv.amount_minor == t.amount_minor;
                        assert_eq!(candidate, t.pays == Some(i), "{remittance} {t:?}");
                    }
                    if t.amount_minor > 0 {
                        assert!(d["debtorName"].is_string());
                    }
                    seen += 1;
                }
                (
                    Target::BankConnection(c),
                    Effect::Authorization {
                        status,
                        at,
                        expires_at,
                    },
                ) => {
                    assert_eq!(o["resource_type"], "authorization");
                    assert_eq!(o["action"], "updated");
                    assert_eq!(o["links"]["connection"], b.connections[c].id.as_str());
                    assert_eq!(o["details"]["status"], status);
                    assert_eq!(o["created_at"], rfc3339(at).as_str());
                    let exp = o["details"]["expires_at"].as_str().unwrap();
                    assert_eq!(
                        chrono::DateTime::parse_from_rfc3339(exp)
                            .unwrap()
                            .timestamp(),
                        expires_at
                    );
                    seen += 1;
                }
                (Target::BankConnection(c), Effect::ConnectionRevoked) => {
                    assert_eq!(o["resource_type"], "connection");
                    assert_eq!(o["action"], "revoked");
                    assert_eq!(o["links"]["connection"], b.connections[c].id.as_str());
                    seen += 1;
                }
                _ => assert_ne!(e.event_type.split('.').next(), Some("transaction")),
            }
        }
        assert_eq!(seen, w.bank_figures().events);
        // Debits are negative text.
        assert!(b.transactions.iter().any(|t| t.amount_minor < 0));
        assert_eq!(bank_amount(-1230), "-12.30");
        assert_eq!(bank_amount(-5), "-0.05");
        assert_eq!(bank_amount(4200), "42.00");
        // References and ids never repeat.
        let refs: HashSet<_> = b.invoices.iter().map(|i| &i.reference).collect();
        assert_eq!(refs.len(), b.invoices.len());
        let ids: HashSet<_> = b
            .transactions
            .iter()
            .map(|t| (t.connection, &t.transaction_id))
            .collect();
        assert_eq!(ids.len(), b.transactions.len());
    }

    #[test]
    fn bank_events_share_bodies_and_arrive_out_of_order() {
        let w = chaos(3000, 2);
        // In bodies with payment or mandate events.
        let mixed = w
            .deliveries
            .iter()
            .filter(|d| {
                let bank = d
                    .events
                    .iter()
                    .filter(|&&i| matches!(w.events[i].effect, Effect::BankTransaction))
                    .count();
                bank > 0 && bank < d.events.len()
            })
            .count();
        assert!(mixed > 10, "{mixed}");
        // Re-sent verbatim like the rest.
        let resent = w
            .deliveries
            .iter()
            .filter(|d| d.copy_of.is_some())
            .filter(|d| {
                d.events
                    .iter()
                    .any(|&i| matches!(w.events[i].target, Target::BankTransaction(_)))
            })
            .count();
        assert!(resent > 0);
        // An older authorization update sent after a newer one of the same connection; a
        // credit sent after its connection's revocation.
        let mut newest: HashMap<usize, i64> = HashMap::new();
        let mut revoked: HashSet<usize> = HashSet::new();
        let (mut older_after_newer, mut late_credits) = (0, 0);
        for d in w.deliveries.iter().filter(|d| d.copy_of.is_none()) {
            for &i in &d.events {
                match (w.events[i].target, w.events[i].effect) {
                    (Target::BankConnection(c), Effect::Authorization { at, .. }) => {
                        let n = newest.entry(c).or_insert(at);
                        if *n > at {
                            older_after_newer += 1;
                        }
                        *n = (*n).max(at);
                    }
                    (Target::BankConnection(c), Effect::ConnectionRevoked) => {
                        revoked.insert(c);
                    }
                    (Target::BankTransaction(t), _)
                        if revoked.contains(&w.bank.transactions[t].connection) =>
                    {
                        late_credits += 1;
                    }
                    _ => {}
                }
            }
        }
        assert!(older_after_newer >= 3, "{older_after_newer}");
        assert!(late_credits >= 1, "{late_credits}");
    }

    #[test]
    fn the_stream_model_joins_bank_data_of_several_chunks() {
        use crate::load::Source as _;
        use crate::workload::stream::{model, Stream};
        let spec = Spec {
            tag: "s".into(),
            events: 400,
            duplicates: 0.0,
            poison: 0,
            id_base: 0,
            mix: Mix::Chaos,
        };
        let s = Stream::new(spec, 3, Some(3));
        while s.next().is_some() {}
        let (w, _) = model(&[&s]);
        let objects = objects(&w);
        assert!(w.bank.connections.len() > 3);
        for e in &w.events {
            if let Target::BankTransaction(t) = e.target {
                let t = &w.bank.transactions[t];
                let o = &objects[&e.external_id];
                assert_eq!(o["links"]["transaction"], t.transaction_id.as_str());
                assert_eq!(
                    o["links"]["connection"],
                    w.bank.connections[t.connection].id.as_str()
                );
                if let Some(i) = t.pays {
                    assert_eq!(w.bank.invoices[i].amount_minor, t.amount_minor);
                }
            }
            if let Target::BankConnection(c) = e.target {
                let o = &objects[&e.external_id];
                assert_eq!(o["links"]["connection"], w.bank.connections[c].id.as_str());
            }
        }
    }
}
