//! GoCardless shaped like a real account, as issue 11 describes the traffic of an installation
//! that has only its webhook secret (no API token, as ka-member runs): each mandate's
//! `mandates.created`, carrying the member in `metadata` (the worker cannot ask the API), then
//! four monthly `payments.confirmed`, each with `links.mandate` and the amount in
//! `metadata.amount` (pence, a string, as GoCardless metadata values are) and
//! `metadata.currency`. The schedule then decides how often a payment overtakes its mandate.

use super::{rfc3339, Effect, Generator, Status, Target, Unit};
use crate::load::Gateway;
use crate::rng::Rng;

/// Collections per mandate.
const PAYMENTS_PER_MANDATE: usize = 4;

/// Monthly amounts in pence, with weights: a few membership fees, as a club's account has.
const AMOUNTS: &[(u32, i64)] = &[(50, 2750), (25, 1500), (15, 5000), (10, 12_000)];

impl Generator {
    pub(super) fn gocardless_account(&mut self, rng: &mut Rng) {
        let m = self.mandate(rng, false);
        let mandate_id = self.w.mandates[m].id.clone();
        let created = chrono::DateTime::parse_from_rfc3339(&self.w.mandates[m].created_at)
            .map_or(0, |t| t.timestamp());
        let amount = rng.weighted(AMOUNTS);
        let tag = self.tag.clone();
        for month in 1..=PAYMENTS_PER_MANDATE {
            let n = self.id();
            let pm = format!("PM{tag}X{n}");
            let p = self.payment(Gateway::GoCardless, pm.clone(), amount, "GBP");
            let key = format!("EV{tag}P{}", self.id());
            let json = format!(
                r#"{{"id":"{key}","created_at":"{}","resource_type":"payments","action":"confirmed","links":{{"payment":"{pm}","mandate":"{mandate_id}"}},"details":{{"origin":"gocardless","cause":"payment_confirmed","description":"Enough time has passed since the payment was submitted for the banks to return an error, so this payment is now confirmed."}},"metadata":{{"amount":"{amount}","currency":"GBP","reference":"ACCT-{tag}-{n}"}}}}"#,
                rfc3339(created + month as i64 * 30 * 86_400)
            );
            let i = self.event(
                Gateway::GoCardless,
                key,
                "payments.confirmed",
                Target::Payment(p),
                Effect::Payment(Status::Completed),
            );
            self.units.push(Unit {
                events: vec![(i, json)],
                mandate: Some(m),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::Gateway;
    use crate::rng::Rng;
    use crate::workload::{Mix, Spec, Workload};

    fn accounts(events: usize) -> Workload {
        let spec = Spec {
            tag: "a".into(),
            events,
            duplicates: 0.05,
            poison: 0,
            id_base: 0,
            mix: Mix::GoCardless,
        };
        Workload::generate(&spec, &mut Rng::new(3))
    }

    #[test]
    fn each_mandate_has_one_created_and_four_confirmed_payments_with_amounts() {
        let w = accounts(1000);
        assert!(w
            .deliveries
            .iter()
            .all(|d| d.gateway == Gateway::GoCardless));
        let created = w
            .events
            .iter()
            .filter(|e| e.event_type == "mandates.created")
            .count();
        let confirmed = w
            .events
            .iter()
            .filter(|e| e.event_type == "payments.confirmed")
            .count();
        assert_eq!(created, w.mandates.len());
        assert_eq!(confirmed, 4 * created);
        assert_eq!(w.events.len(), created + confirmed);
        for d in &w.deliveries {
            let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
            for e in v["events"].as_array().unwrap() {
                if e["action"] == "created" {
                    assert!(e["metadata"]["name"].is_string());
                    assert!(e["metadata"]["email"].is_string());
                } else {
                    let amount = e["metadata"]["amount"].as_str().unwrap();
                    assert!(amount.parse::<i64>().unwrap() > 0);
                    assert_eq!(e["metadata"]["currency"], "GBP");
                    assert!(e["links"]["mandate"].as_str().unwrap().starts_with("MD"));
                }
            }
        }
    }

    #[test]
    fn many_payments_are_sent_before_their_mandate() {
        let w = accounts(5000);
        let mut mandate_sent = std::collections::HashSet::new();
        let (mut before, mut after) = (0, 0);
        for d in w.deliveries.iter().filter(|d| d.copy_of.is_none()) {
            for &i in &d.events {
                let e = &w.events[i];
                let v: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
                let obj = v["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|o| o["id"] == e.external_id.as_str())
                    .unwrap()
                    .clone();
                let mandate = obj["links"]["mandate"].as_str().unwrap().to_owned();
                if e.event_type == "mandates.created" {
                    mandate_sent.insert(mandate);
                } else if mandate_sent.contains(&mandate) {
                    after += 1;
                } else {
                    before += 1;
                }
            }
        }
        // Before it in sending order, let alone in processing order.
        assert!(
            before * 20 > before + after,
            "{before} of {}",
            before + after
        );
        assert!(after > before);
    }
}
