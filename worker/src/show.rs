//! `payhook-worker show REFERENCE|EVENT_ID`: where is payment X, and why did it fail. Finds the
//! payments and members a text names (reference, gateway payment id, mandate id, email,
//! payhook's event id or the gateway's) through `payhook_shared::lookup`, the same queries as
//! the admin API, and prints them with their events in the order they happened: status,
//! attempts, last error.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use payhook_shared::bank::BankTransaction;
use payhook_shared::lookup::{self, EventRow, MemberRow, PaymentRow, Timeline};
use sqlx::PgPool;

/// Most rows of each kind printed.
const LIMIT: i64 = 200;

/// The report for `query`, or an error when nothing matches.
pub async fn show(pool: &PgPool, query: &str) -> anyhow::Result<String> {
    let query = query.trim();
    let mut timeline = lookup::timeline(pool, query, LIMIT).await?;
    let mut asked: Option<i64> = None;
    // An event id alone: show the payment or member it is about, with all of its events.
    if timeline.payments.is_empty() && timeline.members.is_empty() && timeline.events.len() == 1 {
        let event = &timeline.events[0];
        asked = Some(event.id);
        if let Some(resource) = event.resource_id.clone() {
            let about = lookup::timeline(pool, &resource, LIMIT).await?;
            if !about.payments.is_empty()
                || !about.members.is_empty()
                || !about.bank_transactions.is_empty()
            {
                timeline = about;
            }
        }
    }
    if timeline.is_empty() {
        anyhow::bail!(
            "nothing matches {query:?} (try a payment reference or gateway payment id, a \
             payhook or gateway event id, a mandate id, a member's email or a bank transaction \
             id)"
        );
    }
    Ok(render(&timeline, asked))
}

fn render(t: &Timeline, asked: Option<i64>) -> String {
    let mut out = String::new();
    for p in &t.payments {
        let paid_by = t
            .bank_transactions
            .iter()
            .find(|b| b.payment_id == Some(p.id));
        payment(&mut out, p, paid_by);
    }
    for b in &t.bank_transactions {
        bank_transaction(&mut out, b);
    }
    for m in &t.members {
        member(&mut out, m);
    }
    if t.events.is_empty() {
        out.push_str("no events\n");
    } else {
        let _ = writeln!(out, "events, oldest first ({}):", t.events.len());
        out.push_str(&events_table(&t.events, asked));
        let dead = t.events.iter().filter(|e| e.status == "dead").count();
        if dead > 0 {
            let ids: Vec<String> = t
                .events
                .iter()
                .filter(|e| e.status == "dead")
                .map(|e| e.id.to_string())
                .collect();
            let _ = writeln!(
                out,
                "\n{dead} dead: fix the cause above, then `payhook-worker replay {}`",
                ids.join(" ")
            );
        }
    }
    out
}

fn payment(out: &mut String, p: &PaymentRow, paid_by: Option<&BankTransaction>) {
    let _ = writeln!(
        out,
        "payment {}  {} {}  reference {}",
        p.id,
        p.provider,
        p.external_id,
        p.reference.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "  status {}  amount {}  mandate {}  member {}  updated {}",
        p.status,
        amount(p.amount_minor, p.currency.as_deref()),
        p.mandate_id.as_deref().unwrap_or("-"),
        p.member_id.map_or("-".into(), |m| m.to_string()),
        when(Some(p.updated_at)),
    );
    if let Some(reason) = &p.failure_reason {
        let _ = writeln!(out, "  failure: {reason}");
    }
    if let Some(b) = paid_by {
        let _ = writeln!(
            out,
            "  paid by bank credit {} (bank transaction {}, booked {})",
            b.transaction_id, b.id, b.booked_on
        );
    }
    out.push('\n');
}

fn bank_transaction(out: &mut String, b: &BankTransaction) {
    let _ = writeln!(
        out,
        "bank transaction {}  connection {}  {}  booked {}",
        b.id, b.connection_id, b.transaction_id, b.booked_on
    );
    let _ = write!(
        out,
        "  {}  {}  reference {}",
        amount(Some(b.amount_minor), Some(&b.currency)),
        b.match_status,
        b.reference.as_deref().unwrap_or("-")
    );
    match b.payment_id {
        Some(p) => {
            let _ = writeln!(out, "  → payment {p}  matched {}", when(b.matched_at));
        }
        None if b.match_status == "unmatched" || b.match_status == "ambiguous" => {
            let _ = writeln!(
                out,
                "\n  waiting: register the payment (POST /admin/payments) or match it by hand \
                 (POST /admin/bank-transactions/{}/match)",
                b.id
            );
        }
        None => out.push('\n'),
    }
    out.push('\n');
}

fn member(out: &mut String, m: &MemberRow) {
    let _ = writeln!(
        out,
        "member {}  mandate {}  {}  <{}>",
        m.id,
        m.mandate_id,
        m.name.as_deref().unwrap_or("(no name)"),
        m.email.as_deref().unwrap_or("no email")
    );
    let _ = write!(out, "  status {}  {}", m.status, m.membership_type);
    if let Some(reason) = &m.status_reason {
        let _ = write!(out, "  reason: {reason}");
    }
    if let Some(joined) = m.joined_on {
        let _ = write!(out, "  joined {joined}");
    }
    out.push_str("\n\n");
}

/// `27.50 GBP` from 2750 minor units (the currency's exponent), `2750 XYZ (minor)` when the
/// currency is unknown, `-` when there is no amount.
pub fn amount(minor: Option<i64>, currency: Option<&str>) -> String {
    let (Some(minor), Some(cur)) = (minor, currency) else {
        return "-".into();
    };
    match payhook_shared::money::exponent(cur) {
        Ok(0) => format!("{minor} {cur}"),
        Ok(exp) => {
            let scale = 10_u64.pow(exp);
            let sign = if minor < 0 { "-" } else { "" };
            let abs = minor.unsigned_abs();
            format!(
                "{sign}{}.{:0width$} {cur}",
                abs / scale,
                abs % scale,
                width = exp as usize
            )
        }
        Err(_) => format!("{minor} {cur} (minor units)"),
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
}

fn events_table(events: &[EventRow], asked: Option<i64>) -> String {
    let header = [
        "",
        "ID",
        "WHEN",
        "PROVIDER",
        "TYPE",
        "GATEWAY ID",
        "STATUS",
        "ATTEMPTS",
        "DELIVERY",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 10]> = events
        .iter()
        .map(|e| {
            [
                if asked == Some(e.id) { "→" } else { "" }.to_owned(),
                e.id.to_string(),
                when(e.occurred_at.or(Some(e.received_at))),
                e.provider.clone(),
                e.event_type.clone(),
                e.external_id.clone(),
                e.status.clone(),
                e.attempts.to_string(),
                // What `verify-delivery` takes; none for events the reconciler made.
                e.delivery_id.map_or("-".into(), |d| d.to_string()),
                e.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for r in &rows {
        line(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_in_major_units() {
        assert_eq!(amount(Some(2750), Some("GBP")), "27.50 GBP");
        assert_eq!(amount(Some(-5), Some("GBP")), "-0.05 GBP");
        assert_eq!(amount(Some(500), Some("JPY")), "500 JPY");
        assert_eq!(amount(Some(1), Some("BTC")), "0.00000001 BTC");
        assert_eq!(amount(None, Some("GBP")), "-");
    }
}
