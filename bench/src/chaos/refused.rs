//! Deliveries ingest must refuse, sent among the load while the faults happen (issue 16).
//! Genuinely signed bodies payhook cannot parse are answered 400 but never thrown away: each
//! must end as exactly one `rejected_deliveries` row whose attempts cover every 400 it was
//! answered (a gateway resends a refused delivery, and each resend is one more attempt, not
//! one more row), and never as a delivery or an event. Forged ones (signed with a wrong
//! secret) must be refused with the gateway's signature status and stored nowhere.
//!
//! A send is repeated, like the load's deliveries, on a 503, a broken connection or a
//! timeout, until it gets a definite answer: so attempts may exceed the 400s counted (a
//! rejection kept just before ingest was killed never got its answer), never the requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::driver::{self, Progress};
use crate::load::{self, Gateway, Sender};
use crate::rng::Rng;
use crate::verdict::Check;

/// One body the load sends to be refused.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub gateway: Gateway,
    pub body: Bytes,
    /// Signed with the gateway's secret (to be kept), or with another one (forged).
    pub genuine: bool,
    /// What is wrong with it, for the examples of a failing check.
    pub what: &'static str,
    /// Times the gateway sends it: the first time and its resends.
    pub sends: u32,
    /// The event ids ingest would have keyed it by: none of them may be stored.
    pub event_ids: Vec<String>,
}

/// The refusals and when each send goes out.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub refusals: Vec<Refusal>,
    /// (index of the load's delivery it waits for, refusal), in sending order.
    pub schedule: Vec<(usize, usize)>,
}

/// `genuine` unparseable bodies (of five kinds, in turn) and `forged` ones, their sends spread
/// at random over the middle of the load's `deliveries`.
pub fn plan(tag: &str, genuine: usize, forged: usize, deliveries: usize, rng: &mut Rng) -> Plan {
    let mut refusals: Vec<Refusal> = (0..genuine).map(|i| unparseable(tag, i)).collect();
    refusals.extend((0..forged).map(|i| forgery(tag, i)));
    let (lo, hi) = (
        deliveries / 20,
        (deliveries * 19 / 20).max(deliveries / 20 + 1),
    );
    let mut schedule = Vec::new();
    for (r, refusal) in refusals.iter().enumerate() {
        let mut at: Vec<usize> = (0..refusal.sends)
            .map(|_| rng.range(lo as u64, hi as u64) as usize)
            .collect();
        at.sort_unstable();
        schedule.extend(at.into_iter().map(|a| (a, r)));
    }
    // Stable: a resend that draws the same point as its first send still comes after it.
    schedule.sort_by_key(|(at, _)| *at);
    Plan { refusals, schedule }
}

/// Genuine body `i`: correctly signed, but nothing payhook parses (DESIGN.md: not JSON, a
/// shape it does not know, duplicate keys, a value PostgreSQL cannot hold).
fn unparseable(tag: &str, i: usize) -> Refusal {
    let mark = format!("{tag}R{i}");
    let (gateway, what, body, event_ids, sends) = match i % 5 {
        0 => (
            Gateway::GoCardless,
            "an event without its fields",
            format!(r#"{{"events":[{{"id":"EV{mark}"}}],"meta":{{"webhook_id":"WB{mark}"}}}}"#),
            vec![format!("EV{mark}")],
            3,
        ),
        1 => (
            Gateway::Paystack,
            "not JSON",
            format!("event=charge.success&reference=REF-{mark}&amount=250000&currency=NGN"),
            Vec::new(),
            1,
        ),
        2 => (
            Gateway::PayQi,
            "an event without its type",
            format!(
                r#"{{"id":"evt_{mark}","created":1793491200,"data":{{"id":"pay_{mark}","amount":"25.00","currency":"GBP","status":"completed","metadata":{{"order_id":"ORD-{mark}"}}}}}}"#
            ),
            vec![format!("evt_{mark}")],
            2,
        ),
        3 => (
            Gateway::Flutterwave,
            "a duplicate key",
            format!(
                r#"{{"event":"charge.completed","data":{{"id":9{i}001,"id":9{i}002,"tx_ref":"TX-{mark}","amount":"25.00","currency":"NGN","status":"successful"}}}}"#
            ),
            Vec::new(),
            1,
        ),
        _ => {
            // Over PAYHOOK_MAX_ID_BYTES (default 255): kept until a higher limit reparses it.
            let id = format!("EV{mark}{}", "X".repeat(300));
            (
                Gateway::GoCardless,
                "an event id over 255 bytes",
                format!(
                    r#"{{"events":[{{"id":"{id}","created_at":"2026-11-24T10:00:00.000Z","resource_type":"payments","action":"created","links":{{"payment":"PM{mark}","mandate":"MD{mark}"}},"metadata":{{"amount":"2750","currency":"GBP"}}}}],"meta":{{"webhook_id":"WB{mark}"}}}}"#
                ),
                vec![id],
                2,
            )
        }
    };
    Refusal {
        gateway,
        body: Bytes::from(body),
        genuine: true,
        what,
        sends,
        event_ids,
    }
}

/// Forged body `i`: signed with a secret that is not the gateway's. One that would parse (so
/// only the signature stands between it and a payment), one that would not (so it must not
/// end among the rejected deliveries either).
fn forgery(tag: &str, i: usize) -> Refusal {
    let mark = format!("{tag}F{i}");
    let (gateway, what, body, event_ids) = if i % 2 == 0 {
        (
            Gateway::GoCardless,
            "forged, would parse",
            format!(
                r#"{{"events":[{{"id":"EV{mark}","created_at":"2026-11-24T10:00:00.000Z","resource_type":"payments","action":"confirmed","links":{{"payment":"PM{mark}","mandate":"MD{mark}"}},"metadata":{{"amount":"990000","currency":"GBP"}}}}],"meta":{{"webhook_id":"WB{mark}"}}}}"#
            ),
            vec![format!("EV{mark}")],
        )
    } else {
        (
            Gateway::Flutterwave,
            "forged, would not parse",
            format!("<charge id=\"{mark}\" status=\"successful\"/>"),
            Vec::new(),
        )
    };
    Refusal {
        gateway,
        body: Bytes::from(body),
        genuine: false,
        what,
        sends: 1,
        event_ids,
    }
}

impl Refusal {
    /// The answer it must get: 400 when genuine, the gateway's bad-signature status when forged.
    fn expected(&self) -> StatusCode {
        match (self.genuine, self.gateway) {
            (true, _) => StatusCode::BAD_REQUEST,
            // GoCardless asks for 498 Invalid Token (DESIGN.md, "Webhook routes").
            (false, Gateway::GoCardless) => StatusCode::from_u16(498).expect("a valid status"),
            (false, _) => StatusCode::UNAUTHORIZED,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} {} body ({}, sha256 {:.12})",
            if self.genuine { "genuine" } else { "forged" },
            self.gateway.name(),
            self.what,
            sha256_hex(&self.body)
        )
    }
}

fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// What happened to one refusal's sends.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sent {
    /// HTTP requests, retries after a 503 or a lost connection included.
    pub requests: u32,
    /// Sends answered with the expected refusal (400, or 401/498 when forged).
    pub refused: u32,
    /// Any other definite answer, e.g. "answered 204".
    pub other: Vec<String>,
    /// Sends without a definite answer before the load's deadline.
    pub unanswered: u32,
}

/// Sends the plan on a connection of its own, each send when the load has claimed its
/// delivery, so the refusals meet the faults like the rest of the load. `Sent` per refusal.
pub async fn send(
    plan: &Plan,
    addr: SocketAddr,
    secrets: &[(Gateway, String)],
    progress: Arc<Progress>,
    deadline: Instant,
    mut rng: Rng,
) -> Vec<Sent> {
    let mut sent = vec![Sent::default(); plan.refusals.len()];
    let mut sender: Option<Sender> = None;
    for &(at, r) in &plan.schedule {
        while progress.next.load(Ordering::Acquire) < at
            && !progress.done.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refusal = &plan.refusals[r];
        let secret = secrets
            .iter()
            .find(|(g, _)| *g == refusal.gateway)
            .map(|(_, s)| s.clone())
            .expect("a secret for every gateway");
        let secret = if refusal.genuine {
            secret
        } else {
            format!("{secret}-not-the-gateways")
        };
        send_one(
            refusal,
            secret.as_bytes(),
            addr,
            &mut sender,
            &mut sent[r],
            deadline,
            &mut rng,
        )
        .await;
    }
    sent
}

/// One send: repeated like a gateway on 503, a lost connection or a timeout, until a definite
/// answer.
async fn send_one(
    refusal: &Refusal,
    secret: &[u8],
    addr: SocketAddr,
    sender: &mut Option<Sender>,
    sent: &mut Sent,
    deadline: Instant,
    rng: &mut Rng,
) {
    let mut backoff = driver::BACKOFF_MIN;
    while Instant::now() < deadline {
        if sender.is_none() {
            match load::connect(addr).await {
                Ok(s) => *sender = Some(s),
                Err(_) => {
                    backoff = driver::pause(rng, backoff).await;
                    continue;
                }
            }
        }
        let s = sender.as_mut().expect("connected above");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs() as i64);
        let headers = refusal.gateway.auth_headers(secret, &refusal.body, now);
        sent.requests += 1;
        let answer = tokio::time::timeout(
            driver::REQUEST_TIMEOUT,
            load::post(
                s,
                addr,
                refusal.gateway.path(),
                &headers,
                refusal.body.clone(),
            ),
        )
        .await;
        match answer {
            Ok(Ok((status, _))) if status == refusal.expected() => {
                sent.refused += 1;
                return;
            }
            Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, _))) => {}
            Ok(Ok((status, body))) => {
                sent.other.push(format!(
                    "answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ));
                return;
            }
            Ok(Err(_)) | Err(_) => *sender = None,
        }
        backoff = driver::pause(rng, backoff).await;
    }
    sent.unanswered += 1;
}

/// The figures for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub genuine: usize,
    pub forged: usize,
    /// Sends of the genuine bodies (first sends and resends), and how many were answered 400.
    pub genuine_sends: u32,
    pub answered_400: u32,
    pub forged_sends: u32,
    /// Forged sends answered 401 (498 for GoCardless).
    pub answered_bad_signature: u32,
    /// HTTP requests for all of them, retries included.
    pub requests: u32,
}

pub fn figures(plan: &Plan, sent: &[Sent]) -> Figures {
    let mut f = Figures::default();
    for (r, s) in plan.refusals.iter().zip(sent) {
        f.requests += s.requests;
        if r.genuine {
            f.genuine += 1;
            f.genuine_sends += r.sends;
            f.answered_400 += s.refused;
        } else {
            f.forged += 1;
            f.forged_sends += r.sends;
            f.answered_bad_signature += s.refused;
        }
    }
    f
}

/// The checks, after the drain.
pub async fn checks(pool: &PgPool, plan: &Plan, sent: &[Sent]) -> anyhow::Result<Vec<Check>> {
    let rows: Vec<(i64, String, String, Vec<u8>, i32, bool)> = sqlx::query_as(
        "SELECT id, provider, body_sha256, body, attempts, reparsed_at IS NOT NULL
         FROM rejected_deliveries",
    )
    .fetch_all(pool)
    .await?;
    let bodies: Vec<Vec<u8>> = plan.refusals.iter().map(|r| r.body.to_vec()).collect();
    let delivered: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT body FROM webhook_deliveries WHERE body = ANY($1)")
            .bind(&bodies)
            .fetch_all(pool)
            .await?;
    let ids: Vec<String> = plan
        .refusals
        .iter()
        .flat_map(|r| r.event_ids.iter().cloned())
        .collect();
    let events: Vec<String> =
        sqlx::query_scalar("SELECT external_id FROM webhook_events WHERE external_id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?;

    let mut by_key: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        by_key
            .entry((row.1.as_str(), row.2.as_str()))
            .or_default()
            .push(i);
    }
    let mut explained = vec![false; rows.len()];
    let mut not_kept = Vec::new();
    let mut forged_let_through = Vec::new();
    let mut stored_as_delivery = Vec::new();
    for (r, s) in plan.refusals.iter().zip(sent) {
        let sha = sha256_hex(&r.body);
        let matching = by_key
            .get(&(r.gateway.name(), sha.as_str()))
            .cloned()
            .unwrap_or_default();
        let mut problems = Vec::new();
        if !s.other.is_empty() {
            problems.push(s.other.join("; "));
        }
        if s.unanswered > 0 {
            problems.push(format!("{} send(s) never answered", s.unanswered));
        }
        if r.genuine {
            for &m in &matching {
                explained[m] = true;
            }
            match matching.as_slice() {
                [m] => {
                    let (id, _, _, body, attempts, reparsed) = &rows[*m];
                    let attempts = u32::try_from(*attempts).unwrap_or(0);
                    if body.as_slice() != r.body.as_ref() {
                        problems.push(format!("row {id} holds another body"));
                    }
                    if attempts < s.refused || attempts > s.requests {
                        problems.push(format!(
                            "row {id} has {attempts} attempt(s) for {} × 400 in {} request(s)",
                            s.refused, s.requests
                        ));
                    }
                    if *reparsed {
                        problems.push(format!("row {id} says it was reparsed"));
                    }
                }
                rows => problems.push(format!("{} rows", rows.len())),
            }
            if !problems.is_empty() {
                not_kept.push(format!(
                    "{}, sent {}×: {}",
                    r.describe(),
                    r.sends,
                    problems.join("; ")
                ));
            }
        } else {
            if !matching.is_empty() {
                problems.push(format!(
                    "kept in rejected_deliveries ({} row(s))",
                    matching.len()
                ));
            }
            if !problems.is_empty() {
                forged_let_through.push(format!("{}: {}", r.describe(), problems.join("; ")));
            }
        }
        let as_delivery = delivered
            .iter()
            .filter(|b| b.as_slice() == r.body.as_ref())
            .count();
        let as_events = r.event_ids.iter().filter(|id| events.contains(id)).count();
        if as_delivery + as_events > 0 {
            stored_as_delivery.push(format!(
                "{}: {as_delivery} webhook_deliveries row(s), {as_events} webhook_events row(s)",
                r.describe()
            ));
        }
    }
    let unexplained: Vec<String> = rows
        .iter()
        .zip(&explained)
        .filter(|(_, e)| !**e)
        .map(|(row, _)| {
            format!(
                "row {} ({}, {} attempt(s)): {}",
                row.0,
                row.1,
                row.4,
                String::from_utf8_lossy(&row.3[..row.3.len().min(120)])
            )
        })
        .collect();

    let check = |name, found: Vec<String>| {
        Check::new(
            name,
            found.len() as u64,
            0,
            found.into_iter().take(5).collect(),
        )
    };
    Ok(vec![
        check(
            "genuine unparseable deliveries not kept as one rejected row (attempts >= 400s)",
            not_kept,
        ),
        check(
            "refused deliveries stored as deliveries or events",
            stored_as_delivery,
        ),
        check(
            "forged deliveries not refused (401/498), or kept",
            forged_let_through,
        ),
        check(
            "rejected rows for no unparseable delivery sent",
            unexplained,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_body_is_planned_and_some_are_resent() {
        let p = plan("t", 5, 2, 1000, &mut Rng::new(7));
        assert_eq!(p.refusals.iter().filter(|r| r.genuine).count(), 5);
        assert_eq!(p.refusals.iter().filter(|r| !r.genuine).count(), 2);
        let gateways: std::collections::HashSet<_> = p
            .refusals
            .iter()
            .filter(|r| r.genuine)
            .map(|r| r.gateway)
            .collect();
        assert_eq!(gateways.len(), 4, "every gateway has an unparseable body");
        assert!(p.refusals.iter().any(|r| r.genuine && r.sends > 1));
        let sends: u32 = p.refusals.iter().map(|r| r.sends).sum();
        assert_eq!(p.schedule.len(), sends as usize);
        assert!(p.schedule.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(p.schedule.iter().all(|(at, _)| (50..950).contains(at)));
    }

    #[test]
    fn bodies_are_distinct_so_each_is_its_own_row() {
        let p = plan("t", 10, 4, 100, &mut Rng::new(1));
        let shas: std::collections::HashSet<_> =
            p.refusals.iter().map(|r| sha256_hex(&r.body)).collect();
        assert_eq!(shas.len(), p.refusals.len());
    }

    #[test]
    fn the_json_ones_are_json_but_not_what_the_gateway_sends() {
        let p = plan("t", 5, 2, 100, &mut Rng::new(1));
        let parsed = |r: &Refusal| serde_json::from_slice::<serde_json::Value>(&r.body);
        // Paystack's is not JSON; Flutterwave's has a duplicate key (serde_json keeps the last).
        assert!(parsed(&p.refusals[1]).is_err());
        let gc = parsed(&p.refusals[0]).unwrap();
        assert!(gc["events"][0].get("resource_type").is_none());
        let payqi = parsed(&p.refusals[2]).unwrap();
        assert!(payqi.get("type").is_none());
        let flutterwave = std::str::from_utf8(&p.refusals[3].body).unwrap();
        assert_eq!(flutterwave.matches(r#""id":"#).count(), 2);
        let long = parsed(&p.refusals[4]).unwrap();
        assert!(long["events"][0]["id"].as_str().unwrap().len() > 255);
        let forged = parsed(&p.refusals[5]).unwrap();
        assert_eq!(forged["events"][0]["resource_type"], "payments");
    }

    #[test]
    fn forged_ones_expect_the_gateways_bad_signature_status() {
        let p = plan("t", 0, 2, 100, &mut Rng::new(1));
        assert_eq!(p.refusals[0].expected().as_u16(), 498);
        assert_eq!(p.refusals[1].expected(), StatusCode::UNAUTHORIZED);
    }
}
