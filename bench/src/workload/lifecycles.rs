//! The lifecycles each gateway's payments go through, as the chaos run sends them (and the
//! benchmark for Paystack, Flutterwave and PayQI): GoCardless mandates and payments that fail,
//! are retried, charged back; Paystack charges and partial refunds; Flutterwave
//! failed-then-successful charges; PayQI payments that complete, fail or expire; and poison.

use sha2::{Digest, Sha256};

use super::{decimal, rfc3339, Effect, Generator, Mandate, Status, Target, Unit, BASE_UNIX};
use crate::load::Gateway;
use crate::rng::Rng;

/// Membership types of new mandates, with weights.
pub(super) const MANDATE_TYPES: &[(u32, &str)] = &[
    (70, "individual"),
    (20, "household"),
    (7, "corporate"),
    (3, "lifetime"),
];

/// GoCardless payment lifecycles (action, status it reports), with weights.
const GOCARDLESS_LIFECYCLES: &[(u32, &[(&str, Status)])] = {
    use Status::*;
    &[
        (
            50,
            &[
                ("created", Pending),
                ("submitted", Submitted),
                ("confirmed", Completed),
                ("paid_out", PaidOut),
            ],
        ),
        (
            10,
            &[
                ("created", Pending),
                ("submitted", Submitted),
                ("confirmed", Completed),
                ("paid_out", PaidOut),
                ("charged_back", ChargedBack),
            ],
        ),
        (
            12,
            &[
                ("created", Pending),
                ("submitted", Submitted),
                ("failed", Failed),
            ],
        ),
        // A failed collection retried by GoCardless, which then goes through.
        (
            10,
            &[
                ("created", Pending),
                ("submitted", Submitted),
                ("failed", Failed),
                ("submitted", Submitted),
                ("confirmed", Completed),
                ("paid_out", PaidOut),
            ],
        ),
        (5, &[("created", Pending), ("cancelled", Cancelled)]),
        (
            13,
            &[
                ("created", Pending),
                ("submitted", Submitted),
                ("confirmed", Completed),
            ],
        ),
    ]
};

/// Flutterwave charges of one `tx_ref`, with weights: mostly one successful charge; a
/// declined card; a declined card then a second attempt that goes through.
const FLUTTERWAVE_OUTCOMES: &[(u32, &[&str])] = &[
    (78, &["successful"]),
    (10, &["failed"]),
    (12, &["failed", "successful"]),
];

/// How a PayQI payment ends (after `created` and `pending`), with weights.
const PAYQI_ENDS: &[(u32, &[(&str, Status)])] = &[
    (70, &[("completed", Status::Completed)]),
    (15, &[("failed", Status::Failed)]),
    (15, &[("expired", Status::Expired)]),
];

impl Generator {
    /// A GoCardless mandate: created; with `changes`, sometimes cancelled later, and some of
    /// those reinstated. `mandates.created` carries the member in `metadata`, as ka-member
    /// sends it.
    pub(super) fn mandate(&mut self, rng: &mut Rng, changes: bool) -> usize {
        let m = self.w.mandates.len();
        let tag = self.tag.clone();
        let created = BASE_UNIX + self.units.len() as i64 * 60;
        let mandate = Mandate {
            id: format!("MD{tag}X{m}"),
            customer_id: format!("CU{tag}X{m}"),
            given_name: format!("Given{m}"),
            family_name: format!("Family{m}"),
            email: format!("member{m}.{tag}@example.org"),
            mandate_type: rng.weighted(MANDATE_TYPES),
            created_at: rfc3339(created),
        };
        let mut steps = vec![("created", true, created)];
        if changes && rng.chance(0.1) {
            steps.push(("cancelled", false, created + 10 * 86_400));
            if rng.chance(0.4) {
                steps.push(("reinstated", true, created + 20 * 86_400));
            }
        }
        let mut events = Vec::new();
        for (action, active, at) in steps {
            let key = format!("EV{tag}M{}", self.id());
            let metadata = if action == "created" {
                format!(
                    r#"{{"name":"{} {}","email":"{}","mandate_type":"{}","address_line1":"{m} High Street","city":"Leeds","county":"West Yorkshire","postcode":"LS1 4AP"}}"#,
                    mandate.given_name, mandate.family_name, mandate.email, mandate.mandate_type
                )
            } else {
                "{}".to_owned()
            };
            let cause = match action {
                "created" => "mandate_created",
                "cancelled" => "bank_account_closed",
                _ => "mandate_reinstated",
            };
            let json = format!(
                r#"{{"id":"{key}","created_at":"{}","resource_type":"mandates","action":"{action}","links":{{"mandate":"{}"}},"details":{{"origin":"bank","cause":"{cause}","description":"Mandate {action}."}},"metadata":{metadata}}}"#,
                rfc3339(at),
                mandate.id
            );
            let i = self.event(
                Gateway::GoCardless,
                key,
                &format!("mandates.{action}"),
                Target::Mandate(m),
                Effect::Member { active, at },
            );
            events.push((i, json));
        }
        self.w.mandates.push(mandate);
        self.units.push(Unit {
            events,
            mandate: None,
        });
        self.mandate_units.push(self.units.len() - 1);
        m
    }

    pub(super) fn gocardless(&mut self, rng: &mut Rng) {
        let mandate = if self.w.mandates.is_empty() || rng.chance(0.3) {
            self.mandate(rng, true)
        } else {
            rng.range(0, self.w.mandates.len() as u64) as usize
        };
        let tag = self.tag.clone();
        let n = self.id();
        let pm = format!("PM{tag}X{n}");
        let amount = rng.range(500, 20_000) as i64;
        let p = self.payment(Gateway::GoCardless, pm.clone(), amount, "GBP");
        let lifecycle = rng.weighted(GOCARDLESS_LIFECYCLES);
        let start = BASE_UNIX + self.units.len() as i64 * 60;
        let mandate_id = self.w.mandates[mandate].id.clone();
        let mut events = Vec::new();
        for (step, (action, status)) in lifecycle.iter().enumerate() {
            let key = format!("EV{tag}P{}", self.id());
            let cause = match *action {
                "failed" => "insufficient_funds",
                "cancelled" => "mandate_cancelled",
                "charged_back" => "payment_charged_back",
                other => other,
            };
            // Amount and currency in the metadata (strings, as GoCardless metadata is) and the
            // mandate link: the worker never needs the API for the payment itself.
            let json = format!(
                r#"{{"id":"{key}","created_at":"{}","resource_type":"payments","action":"{action}","links":{{"payment":"{pm}","mandate":"{mandate_id}"}},"details":{{"origin":"gocardless","cause":"{cause}","description":"Payment {action}."}},"metadata":{{"amount":"{amount}","currency":"GBP","reference":"CHAOS-{tag}-{n}"}}}}"#,
                rfc3339(start + step as i64 * 3600)
            );
            let i = self.event(
                Gateway::GoCardless,
                key,
                &format!("payments.{action}"),
                Target::Payment(p),
                Effect::Payment(*status),
            );
            events.push((i, json));
        }
        self.units.push(Unit {
            events,
            mandate: Some(mandate),
        });
    }

    pub(super) fn paystack(&mut self, rng: &mut Rng) {
        let tag = self.tag.clone();
        let n = self.id();
        let reference = format!("ps-{tag}-{n}");
        let amount = rng.range(10_000, 5_000_000) as i64;
        let p = self.payment(Gateway::Paystack, reference.clone(), amount, "NGN");
        let t = BASE_UNIX + self.units.len() as i64 * 60;
        let charge_id = 100_000_000 + self.id();
        let charge = format!(
            r#"{{"event":"charge.success","data":{{"id":{charge_id},"domain":"live","status":"success","reference":"{reference}","amount":{amount},"currency":"NGN","channel":"card","paid_at":"{}","created_at":"{}","customer":{{"email":"payer{n}.{tag}@example.org"}}}}}}"#,
            rfc3339(t),
            rfc3339(t - 30)
        );
        let i = self.event(
            Gateway::Paystack,
            format!("charge.success:{charge_id}"),
            "charge.success",
            Target::Payment(p),
            Effect::Payment(Status::Completed),
        );
        let mut events = vec![(i, charge)];
        // Refunds: none, one (full or partial), or two partial ones.
        let refunds: Vec<i64> = match rng.range(0, 100) {
            0..=74 => vec![],
            75..=86 => vec![amount],
            87..=94 => vec![amount / 3],
            _ => vec![amount / 4, amount / 2],
        };
        for (k, refund) in refunds.into_iter().enumerate() {
            // Refund events carry no id: ingest keys them on the body's SHA-256. Half name
            // the refund (its ledger row is keyed on that), half don't (keyed on the event).
            let named = if rng.chance(0.5) {
                format!(r#""refund_reference":"rf-{tag}-{n}-{k}","#)
            } else {
                String::new()
            };
            let body = format!(
                r#"{{"event":"refund.processed","data":{{"status":"processed",{named}"transaction_reference":"{reference}","amount":{refund},"currency":"NGN","processor":"card","createdAt":"{}","customer":{{"email":"payer{n}.{tag}@example.org"}}}}}}"#,
                rfc3339(t + 86_400 * (k as i64 + 1))
            );
            let key = format!(
                "refund.processed:{}",
                hex::encode(Sha256::digest(body.as_bytes()))
            );
            let i = self.event(
                Gateway::Paystack,
                key,
                "refund.processed",
                Target::Payment(p),
                Effect::Refund(refund),
            );
            events.push((i, body));
        }
        self.units.push(Unit {
            events,
            mandate: None,
        });
    }

    pub(super) fn flutterwave(&mut self, rng: &mut Rng) {
        let tag = self.tag.clone();
        let n = self.id();
        let tx_ref = format!("fw-{tag}-{n}");
        let amount = rng.range(1_000, 2_000_000) as i64;
        let currency = rng.weighted(&[(60, "NGN"), (25, "KES"), (15, "USD")]);
        let p = self.payment(Gateway::Flutterwave, tx_ref.clone(), amount, currency);
        let outcomes = rng.weighted(FLUTTERWAVE_OUTCOMES);
        let t = BASE_UNIX + self.units.len() as i64 * 60;
        let mut events = Vec::new();
        for (k, outcome) in outcomes.iter().enumerate() {
            let id = 500_000_000 + self.id();
            let (status, response) = if *outcome == "successful" {
                (Status::Completed, "Approved")
            } else {
                (Status::Failed, "Insufficient funds")
            };
            let body = format!(
                r#"{{"event":"charge.completed","data":{{"id":{id},"tx_ref":"{tx_ref}","flw_ref":"FLW-MOCK-{id}","amount":{},"currency":"{currency}","charged_amount":{},"status":"{outcome}","processor_response":"{response}","payment_type":"card","created_at":"{}","customer":{{"email":"payer{n}.{tag}@example.org"}}}},"event.type":"CARD_TRANSACTION"}}"#,
                decimal(amount, 2),
                decimal(amount, 2),
                rfc3339(t + k as i64 * 600)
            );
            let i = self.event(
                Gateway::Flutterwave,
                format!("charge.completed:{id}"),
                "charge.completed",
                Target::Payment(p),
                Effect::Payment(status),
            );
            events.push((i, body));
        }
        self.units.push(Unit {
            events,
            mandate: None,
        });
    }

    pub(super) fn payqi(&mut self, rng: &mut Rng) {
        use Status::*;
        let tag = self.tag.clone();
        let n = self.id();
        let id = format!("pq_{tag}_{n}");
        let (currency, exponent) =
            rng.weighted(&[(50, ("GHS", 2)), (35, ("KES", 2)), (15, ("JPY", 0))]);
        let amount = rng.range(100, 500_000) as i64;
        let p = self.payment(Gateway::PayQi, id.clone(), amount, currency);
        let end = rng.weighted(PAYQI_ENDS);
        let steps: Vec<(&str, Status)> = [("created", Pending), ("pending", Pending)]
            .into_iter()
            .chain(end.iter().copied())
            .collect();
        let t = BASE_UNIX + self.units.len() as i64 * 60;
        let mut events = Vec::new();
        for (k, (what, status)) in steps.into_iter().enumerate() {
            let key = format!("evt_{tag}_{}", self.id());
            let failure = if what == "failed" {
                r#","failure_reason":"card_declined""#
            } else {
                ""
            };
            let body = format!(
                r#"{{"id":"{key}","type":"payment.{what}","created":{},"data":{{"id":"{id}","amount":"{}","currency":"{currency}","status":"{what}"{failure},"metadata":{{"order_id":"ORD-{tag}-{n}"}}}}}}"#,
                t + k as i64 * 300,
                decimal(amount, exponent)
            );
            let i = self.event(
                Gateway::PayQi,
                key,
                &format!("payment.{what}"),
                Target::Payment(p),
                Effect::Payment(status),
            );
            events.push((i, body));
        }
        self.units.push(Unit {
            events,
            mandate: None,
        });
    }

    /// A Flutterwave charge of 10.005 NGN: kobo can't hold it, so the worker must send it to
    /// dead letters at once (a permanent error) without touching any payment.
    pub(super) fn poison(&mut self) {
        let tag = self.tag.clone();
        let id = 900_000_000 + self.id();
        let body = format!(
            r#"{{"event":"charge.completed","data":{{"id":{id},"tx_ref":"poison-{tag}-{id}","amount":10.005,"currency":"NGN","status":"successful","created_at":"{}"}}}}"#,
            rfc3339(BASE_UNIX)
        );
        let i = self.event(
            Gateway::Flutterwave,
            format!("charge.completed:{id}"),
            "charge.completed",
            Target::None,
            Effect::Poison,
        );
        self.units.push(Unit {
            events: vec![(i, body)],
            mandate: None,
        });
    }
}
