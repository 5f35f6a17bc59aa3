//! The verdict's bank-data checks (DESIGN.md "Bank data", read independently of payhook's
//! code): given the bank events that were stored (an acknowledged one must be, see the
//! verdict's first check; one never acknowledged may be absent, and then so is its effect),
//!
//! - each transaction reported is stored once per connection + transaction id, with its
//!   signed amount;
//! - a debit is `ignored`, a credit naming no invoice (or another amount) `unmatched`, and of
//!   the credits paying one invoice exactly one is `matched` (to it), the others `unmatched`;
//! - an invoice (a payment of provider `bank`) some stored credit pays is `completed` with one
//!   ledger row: kind `payment`, its amount, `external_ref` `bank:<the matched credit's id>`;
//!   one no stored credit pays is still `pending` with none;
//! - a connection is `revoked` once its revocation is stored, else `active`; its
//!   authorization is the one of its newest stored update (by the event's `created_at`).

use std::collections::HashMap;

use sqlx::PgPool;

use super::{Check, Stored, Tally};
use crate::workload::{Effect, Target, Workload};

type TransactionRow = (String, String, i64, String, String, Option<i64>);
type LedgerRow = (i64, String, String, i64, String);
type ConnectionRow = (String, String, Option<String>, Option<i64>);

/// The bank checks; `stored[i]`: event `i` of `w` has a `webhook_events` row. Adds the bank
/// rows to `figures`.
pub(super) async fn checks(
    pool: &PgPool,
    w: &Workload,
    stored: &[bool],
    figures: &mut Stored,
) -> anyhow::Result<Vec<Check>> {
    let b = &w.bank;
    // What the stored events say.
    let mut reported = vec![false; b.transactions.len()];
    let mut heard_of = vec![false; b.connections.len()];
    let mut revoked = vec![false; b.connections.len()];
    let mut newest: Vec<Option<(i64, &str, i64)>> = vec![None; b.connections.len()];
    for (i, e) in w.events.iter().enumerate() {
        if !stored[i] {
            continue;
        }
        match (e.target, e.effect) {
            (Target::BankTransaction(t), Effect::BankTransaction) => {
                reported[t] = true;
                heard_of[b.transactions[t].connection] = true;
            }
            (Target::BankConnection(c), Effect::ConnectionRevoked) => {
                heard_of[c] = true;
                revoked[c] = true;
            }
            (
                Target::BankConnection(c),
                Effect::Authorization {
                    status,
                    at,
                    expires_at,
                },
            ) => {
                heard_of[c] = true;
                if newest[c].is_none_or(|(t, _, _)| at > t) {
                    newest[c] = Some((at, status, expires_at));
                }
            }
            _ => {}
        }
    }

    let rows: Vec<TransactionRow> = sqlx::query_as(
        "SELECT connection_id, transaction_id, amount_minor, currency, match_status, payment_id
         FROM bank_transactions",
    )
    .fetch_all(pool)
    .await?;
    figures.bank_transactions = rows.len() as i64;
    figures.bank_credits_matched = rows.iter().filter(|r| r.4 == "matched").count() as i64;
    let mut by_key: HashMap<(&str, &str), Vec<&TransactionRow>> = HashMap::new();
    for r in &rows {
        by_key.entry((&r.0, &r.1)).or_default().push(r);
    }
    let payments: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, external_id, status FROM payments WHERE provider = 'bank'")
            .fetch_all(pool)
            .await?;
    figures.payments += payments.len() as i64;
    let payment_of: HashMap<&str, (i64, &str)> = payments
        .iter()
        .map(|(id, e, s)| (e.as_str(), (*id, s.as_str())))
        .collect();
    let ledger: Vec<LedgerRow> = sqlx::query_as(
        "SELECT t.payment_id, t.kind, t.external_ref, t.amount_minor, t.currency
         FROM transactions t JOIN payments p ON p.id = t.payment_id
         WHERE p.provider = 'bank'",
    )
    .fetch_all(pool)
    .await?;
    figures.ledger_rows += ledger.len() as i64;
    let mut books: HashMap<i64, Vec<&LedgerRow>> = HashMap::new();
    for l in &ledger {
        books.entry(l.0).or_default().push(l);
    }
    let connections: Vec<ConnectionRow> = sqlx::query_as(
        "SELECT connection_id, status, authorization_status,
                extract(epoch FROM authorization_expires_at)::bigint
         FROM bank_connections",
    )
    .fetch_all(pool)
    .await?;
    figures.bank_connections = connections.len() as i64;
    let mut checks = Vec::new();

    // 1. Stored once, with the amount sent.
    let mut once = Tally::default();
    let mut model_keys = std::collections::HashSet::new();
    for (t, tx) in b.transactions.iter().enumerate() {
        let c = &b.connections[tx.connection].id;
        let key = (c.as_str(), tx.transaction_id.as_str());
        model_keys.insert(key);
        let got = by_key.get(&key).map_or(&[][..], Vec::as_slice);
        if !reported[t] {
            if !got.is_empty() {
                once.add(|| format!("{c}/{}: stored, but no event of it was", key.1));
            }
            continue;
        }
        if got.len() != 1 {
            once.add(|| format!("{c}/{}: {} rows", key.1, got.len()));
        } else if (got[0].2, got[0].3.as_str()) != (tx.amount_minor, tx.currency) {
            once.add(|| {
                format!(
                    "{c}/{}: {} {}, sent {} {}",
                    key.1, got[0].2, got[0].3, tx.amount_minor, tx.currency
                )
            });
        }
    }
    for k in by_key.keys().filter(|k| !model_keys.contains(*k)) {
        once.add(|| format!("{}/{} was never sent", k.0, k.1));
    }
    checks.push(Check::new(
        "bank transactions not stored exactly once (per connection + transaction id)",
        once.n,
        0,
        once.examples,
    ));

    // 2. Match statuses. Per invoice, the stored credits paying it and how many are matched.
    let mut wrong_match = Tally::default();
    let mut matched_to: Vec<Vec<&str>> = vec![Vec::new(); b.invoices.len()];
    let mut paid = vec![false; b.invoices.len()];
    for (t, tx) in b.transactions.iter().enumerate() {
        let c = &b.connections[tx.connection].id;
        let Some(row) = by_key
            .get(&(c.as_str(), tx.transaction_id.as_str()))
            .and_then(|r| r.first())
            .filter(|_| reported[t])
        else {
            continue;
        };
        let got = (row.4.as_str(), row.5);
        let ok = match tx.pays {
            _ if tx.amount_minor <= 0 => got == ("ignored", None),
            None => got == ("unmatched", None),
            Some(i) => {
                paid[i] = true;
                let invoice = payment_of
                    .get(b.invoices[i].reference.as_str())
                    .map(|p| p.0);
                if got.0 == "matched" && got.1.is_some() && got.1 == invoice {
                    matched_to[i].push(&tx.transaction_id);
                    true
                } else {
                    got == ("unmatched", None)
                }
            }
        };
        if !ok {
            wrong_match.add(|| {
                format!(
                    "{c}/{} ({} pence, pays {}) is {} (payment {:?})",
                    tx.transaction_id,
                    tx.amount_minor,
                    tx.pays
                        .map_or("nothing", |i| b.invoices[i].reference.as_str()),
                    got.0,
                    got.1
                )
            });
        }
    }
    for (i, inv) in b.invoices.iter().enumerate() {
        if paid[i] && matched_to[i].len() != 1 {
            wrong_match.add(|| {
                format!(
                    "{}: {} credits matched to it, expected one",
                    inv.reference,
                    matched_to[i].len()
                )
            });
        }
    }
    checks.push(Check::new(
        "bank credits whose match_status differs from their events",
        wrong_match.n,
        0,
        wrong_match.examples,
    ));

    // 3. Invoices: completed once by the credit matched to them, or still pending.
    let mut wrong_payment = Tally::default();
    for (i, inv) in b.invoices.iter().enumerate() {
        let r = inv.reference.as_str();
        let Some(&(id, status)) = payment_of.get(r) else {
            wrong_payment.add(|| format!("{r}: the payment is missing"));
            continue;
        };
        let rows = books.get(&id).map_or(&[][..], Vec::as_slice);
        if !paid[i] {
            if status != "pending" || !rows.is_empty() {
                wrong_payment.add(|| {
                    format!(
                        "{r}: {status} with {} ledger rows, but no credit paying it was stored",
                        rows.len()
                    )
                });
            }
            continue;
        }
        let want_ref = matched_to[i].first().map(|t| format!("bank:{t}"));
        let row_ok = |l: &&LedgerRow| {
            l.1 == "payment"
                && Some(&l.2) == want_ref.as_ref()
                && (l.3, l.4.as_str()) == (inv.amount_minor, inv.currency)
        };
        if status != "completed" || rows.len() != 1 || !rows.iter().all(row_ok) {
            wrong_payment.add(|| {
                format!(
                    "{r}: {status}, ledger {:?}; expected completed with one payment row {} {} {}",
                    rows.iter()
                        .map(|l| format!("{} {} {} {}", l.1, l.2, l.3, l.4))
                        .collect::<Vec<_>>(),
                    want_ref.as_deref().unwrap_or("bank:<the matched credit>"),
                    inv.amount_minor,
                    inv.currency
                )
            });
        }
    }
    let invoices: std::collections::HashSet<&str> =
        b.invoices.iter().map(|i| i.reference.as_str()).collect();
    for e in payment_of.keys().filter(|e| !invoices.contains(*e)) {
        wrong_payment.add(|| format!("bank payment {e} was never registered"));
    }
    checks.push(Check::new(
        "bank payments not completed once by their credit (status, one ledger row, amount)",
        wrong_payment.n,
        0,
        wrong_payment.examples,
    ));

    // 4 and 5. Connections: status, and the newest authorization.
    let row_of: HashMap<&str, &ConnectionRow> =
        connections.iter().map(|r| (r.0.as_str(), r)).collect();
    let mut wrong_status = Tally::default();
    let mut wrong_authorization = Tally::default();
    for (c, conn) in b.connections.iter().enumerate() {
        let row = row_of.get(conn.id.as_str());
        if !heard_of[c] {
            if row.is_some() {
                wrong_status.add(|| format!("{}: a row, but no event of it was stored", conn.id));
            }
            continue;
        }
        let Some(row) = row else {
            wrong_status.add(|| format!("{}: missing", conn.id));
            continue;
        };
        let want = if revoked[c] { "revoked" } else { "active" };
        if row.1 != want {
            wrong_status.add(|| format!("{} is {}, its events say {want}", conn.id, row.1));
        }
        let want = newest[c].map(|(_, s, e)| (s, e));
        let got = row.2.as_deref().zip(row.3);
        if got != want || (want.is_none() && (row.2.is_some() || row.3.is_some())) {
            wrong_authorization.add(|| {
                format!(
                    "{}: authorization {:?} expiring {:?}, its newest update says {want:?}",
                    conn.id, row.2, row.3
                )
            });
        }
    }
    let known: std::collections::HashSet<&str> =
        b.connections.iter().map(|c| c.id.as_str()).collect();
    for r in connections.iter().filter(|r| !known.contains(r.0.as_str())) {
        wrong_status.add(|| format!("{} was never sent", r.0));
    }
    checks.push(Check::new(
        "bank connections whose status differs from their events",
        wrong_status.n,
        0,
        wrong_status.examples,
    ));
    checks.push(Check::new(
        "bank authorizations other than their newest update",
        wrong_authorization.n,
        0,
        wrong_authorization.examples,
    ));
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{Connection, PgConnection};

    use super::*;
    use crate::rng::Rng;
    use crate::workload::{bank, Mix, Spec};

    /// A fresh, migrated database on the server of `PAYHOOK_BENCH_PG_URL`.
    async fn fresh(admin: &str, n: usize) -> PgPool {
        let name = format!("payhook_verdict_bank_{}_{n}", std::process::id());
        let mut conn = PgConnection::connect(admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(admin).unwrap().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        let migrations =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"));
        sqlx::migrate::Migrator::new(migrations)
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        pool
    }

    /// What payhook must make of the stored events, written the way the worker would: each
    /// reported transaction once, in order; a credit takes its invoice if still pending.
    async fn write_outcome(pool: &PgPool, w: &Workload, stored: &[bool]) {
        let b = &w.bank;
        bank::seed(pool, b).await.unwrap();
        let mut reported = vec![false; b.transactions.len()];
        // Per connection heard of: revoked, and its newest authorization (at, status, expiry).
        type Newest<'a> = Option<(i64, &'a str, i64)>;
        let mut conns: Vec<Option<(bool, Newest)>> = vec![None; b.connections.len()];
        for (_, e) in w.events.iter().enumerate().filter(|(i, _)| stored[*i]) {
            match (e.target, e.effect) {
                (Target::BankTransaction(t), _) => {
                    reported[t] = true;
                    conns[b.transactions[t].connection].get_or_insert((false, None));
                }
                (Target::BankConnection(c), Effect::ConnectionRevoked) => {
                    conns[c].get_or_insert((false, None)).0 = true;
                }
                (
                    Target::BankConnection(c),
                    Effect::Authorization {
                        status,
                        at,
                        expires_at,
                    },
                ) => {
                    let s = conns[c].get_or_insert((false, None));
                    if s.1.is_none_or(|(t, _, _)| t < at) {
                        s.1 = Some((at, status, expires_at));
                    }
                }
                _ => {}
            }
        }
        for (_, tx) in b
            .transactions
            .iter()
            .enumerate()
            .filter(|(t, _)| reported[*t])
        {
            let c = &b.connections[tx.connection].id;
            let mut status = if tx.amount_minor <= 0 {
                "ignored"
            } else {
                "unmatched"
            };
            let mut payment = None;
            if let (Some(i), true) = (tx.pays, tx.amount_minor > 0) {
                let id: Option<i64> = sqlx::query_scalar(
                    "UPDATE payments SET status = 'completed'
                     WHERE provider = 'bank' AND external_id = $1 AND status = 'pending'
                     RETURNING id",
                )
                .bind(&b.invoices[i].reference)
                .fetch_optional(pool)
                .await
                .unwrap();
                if let Some(id) = id {
                    sqlx::query(
                        "INSERT INTO transactions (payment_id, kind, external_ref, amount_minor, currency)
                         VALUES ($1, 'payment', $2, $3, $4)",
                    )
                    .bind(id)
                    .bind(format!("bank:{}", tx.transaction_id))
                    .bind(tx.amount_minor)
                    .bind(tx.currency)
                    .execute(pool)
                    .await
                    .unwrap();
                    (status, payment) = ("matched", Some(id));
                }
            }
            sqlx::query(
                "INSERT INTO bank_transactions (connection_id, transaction_id, booked_on,
                     amount_minor, currency, match_status, payment_id)
                 VALUES ($1, $2, current_date, $3, $4, $5, $6)",
            )
            .bind(c)
            .bind(&tx.transaction_id)
            .bind(tx.amount_minor)
            .bind(tx.currency)
            .bind(status)
            .bind(payment)
            .execute(pool)
            .await
            .unwrap();
        }
        for (c, s) in conns.iter().enumerate() {
            let Some((revoked, auth)) = s else { continue };
            sqlx::query(
                "INSERT INTO bank_connections (connection_id, status, authorization_status,
                     authorization_expires_at)
                 VALUES ($1, $2, $3, to_timestamp($4))",
            )
            .bind(&b.connections[c].id)
            .bind(if *revoked { "revoked" } else { "active" })
            .bind(auth.map(|a| a.1))
            .bind(auth.map(|a| a.2 as f64))
            .execute(pool)
            .await
            .unwrap();
        }
    }

    async fn failing(pool: &PgPool, w: &Workload, stored: &[bool]) -> Vec<&'static str> {
        let checks = checks(pool, w, stored, &mut Stored::default())
            .await
            .unwrap();
        assert_eq!(checks.len(), 5);
        checks
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    }

    const ONCE: &str =
        "bank transactions not stored exactly once (per connection + transaction id)";
    const MATCH: &str = "bank credits whose match_status differs from their events";
    const PAID: &str =
        "bank payments not completed once by their credit (status, one ledger row, amount)";
    const STATUS: &str = "bank connections whose status differs from their events";
    const AUTH: &str = "bank authorizations other than their newest update";

    /// Needs a PostgreSQL server (a private stack's, never a shared one):
    /// `PAYHOOK_BENCH_PG_URL=postgres://postgres@127.0.0.1:<port>/postgres cargo test -p
    /// payhook-bench -- --ignored bank_checks`.
    #[tokio::test]
    #[ignore = "needs PostgreSQL in PAYHOOK_BENCH_PG_URL"]
    async fn bank_checks_pass_on_the_right_outcome_and_fail_on_each_wrong_one() {
        let admin = std::env::var("PAYHOOK_BENCH_PG_URL").expect("PAYHOOK_BENCH_PG_URL");
        let spec = Spec {
            tag: "v".into(),
            events: 1500,
            duplicates: 0.0,
            poison: 0,
            id_base: 0,
            mix: Mix::Chaos,
        };
        let w = Workload::generate(&spec, &mut Rng::new(11));
        // Some events never stored (deliveries the load gave up on): their effects are absent.
        let stored: Vec<bool> = (0..w.events.len()).map(|i| i % 7 != 3).collect();
        let all = vec![true; w.events.len()];
        let b = &w.bank;
        // An invoice paid twice whose credits were all stored: both matched is wrong.
        let all_stored = |t: usize| {
            w.events
                .iter()
                .enumerate()
                .all(|(i, e)| stored[i] || e.target != Target::BankTransaction(t))
        };
        let (paid_twice, credits) = (0..b.invoices.len())
            .map(|i| {
                let credits: Vec<usize> = (0..b.transactions.len())
                    .filter(|t| b.transactions[*t].pays == Some(i))
                    .collect();
                (i, credits)
            })
            .find(|(_, c)| c.len() == 2 && c.iter().all(|t| all_stored(*t)))
            .expect("an invoice paid twice");
        let (paid_twice, t1, t2) = (
            &b.invoices[paid_twice].reference,
            &b.transactions[credits[0]].transaction_id,
            &b.transactions[credits[1]].transaction_id,
        );
        type Break = (&'static str, &'static [&'static str], String);
        let breaks: Vec<Break> = vec![
            ("nothing", &[], String::new()),
            (
                "a second completion row",
                &[PAID],
                "DROP INDEX transactions_one_completion;
                 INSERT INTO transactions (payment_id, kind, external_ref, amount_minor, currency)
                 SELECT payment_id, kind, external_ref || 'x', amount_minor, currency
                 FROM transactions LIMIT 1"
                    .into(),
            ),
            (
                "a row twice",
                &[ONCE],
                "ALTER TABLE bank_transactions
                     DROP CONSTRAINT bank_transactions_connection_id_transaction_id_key;
                 INSERT INTO bank_transactions (connection_id, transaction_id, booked_on,
                     amount_minor, currency, match_status)
                 SELECT connection_id, transaction_id, booked_on, amount_minor, currency,
                        'ignored'
                 FROM bank_transactions WHERE match_status = 'ignored' LIMIT 1"
                    .into(),
            ),
            (
                "a row lost",
                &[ONCE],
                "DELETE FROM bank_transactions
                 WHERE id = (SELECT min(id) FROM bank_transactions
                             WHERE match_status = 'unmatched')"
                    .into(),
            ),
            (
                "a debit unmatched",
                &[MATCH],
                "UPDATE bank_transactions SET match_status = 'unmatched'
                 WHERE id = (SELECT min(id) FROM bank_transactions WHERE amount_minor < 0)"
                    .into(),
            ),
            (
                "both credits of an invoice paid twice matched",
                &[MATCH],
                format!(
                    "UPDATE bank_transactions SET match_status = 'matched',
                         payment_id = (SELECT id FROM payments WHERE external_id = '{paid_twice}')
                     WHERE transaction_id IN ('{t1}', '{t2}')"
                ),
            ),
            (
                "a matched credit unmatched",
                &[MATCH, PAID],
                "UPDATE bank_transactions SET match_status = 'unmatched', payment_id = NULL
                 WHERE id = (SELECT min(id) FROM bank_transactions WHERE match_status = 'matched')"
                    .into(),
            ),
            (
                "a paid invoice still pending",
                &[PAID],
                "UPDATE payments SET status = 'pending'
                 WHERE id = (SELECT min(payment_id) FROM transactions)"
                    .into(),
            ),
            (
                "a completion of another amount",
                &[PAID],
                "UPDATE transactions SET amount_minor = amount_minor + 1
                 WHERE id = (SELECT min(id) FROM transactions)"
                    .into(),
            ),
            (
                "a revoked connection active",
                &[STATUS],
                "UPDATE bank_connections SET status = 'active'
                 WHERE id = (SELECT min(id) FROM bank_connections WHERE status = 'revoked')"
                    .into(),
            ),
            (
                "an older authorization",
                &[AUTH],
                "UPDATE bank_connections
                 SET authorization_expires_at = authorization_expires_at - interval '1 day'
                 WHERE id = (SELECT min(id) FROM bank_connections
                             WHERE authorization_status IS NOT NULL)"
                    .into(),
            ),
        ];
        let mut n = 0;
        for (stored, which) in [(&all, "all stored"), (&stored, "some never stored")] {
            for (what, want, sql) in &breaks {
                n += 1;
                let pool = fresh(&admin, n).await;
                write_outcome(&pool, &w, stored).await;
                if !sql.is_empty() {
                    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
                }
                let got = failing(&pool, &w, stored).await;
                assert_eq!(&got, want, "{which}, {what}");
                pool.close().await;
            }
        }
        // The outcome of everything stored is not that of a part: the part's effects only.
        let pool = fresh(&admin, 0).await;
        write_outcome(&pool, &w, &all).await;
        let got = failing(&pool, &w, &stored).await;
        assert!(got.contains(&ONCE), "{got:?}");
        pool.close().await;
        let mut conn = PgConnection::connect(&admin).await.unwrap();
        for k in 0..=n {
            let name = format!("payhook_verdict_bank_{}_{k}", std::process::id());
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}
