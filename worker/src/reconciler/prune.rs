//! Retention (DESIGN.md, "Data lifecycle"): raw deliveries older than `RETAIN_DELIVERIES`,
//! `processed` / `ignored` events older than `RETAIN_EVENTS`, and domain events published
//! longer ago than `RETAIN_EVENTS` are deleted. Nothing else is: `dead`, `retrying`,
//! `received` and `published` events, members, payments, the ledger, unpublished domain
//! events. Safe because every business write is keyed by the gateway's id: an event that comes
//! back after its row was pruned is applied again to no effect.
//!
//! Each table is walked in id order (ids grow with time), `PRUNE_BATCH` rows per statement
//! with `PRUNE_PAUSE` between statements, and the walk ends at the first batch that reaches a
//! row younger than the cutoff: every statement is a short index-range delete that never
//! holds a lock ingest waits on for long, and a pass over a table with nothing to prune
//! reads one batch.

use std::time::Duration;

use payhook_shared::shutdown::CancellationToken;
use sqlx::PgPool;

use crate::settings::{ReconcileSettings, Retention};

/// A table the pass prunes: which rows, and after how long.
struct Rule {
    table: &'static str,
    /// The column that says how old a row is.
    age: &'static str,
    /// What else a row must be to go (on the row itself, at delete time).
    only: &'static str,
}

const DELIVERIES: Rule = Rule {
    table: "webhook_deliveries",
    age: "received_at",
    only: "TRUE",
};
const EVENTS: Rule = Rule {
    table: "webhook_events",
    age: "received_at",
    only: "status IN ('processed', 'ignored')",
};
const OUTBOX: Rule = Rule {
    table: "domain_outbox",
    age: "created_at",
    only: "published_at IS NOT NULL",
};

/// Rows removed (or, with `--dry-run`, that would be), per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub events: u64,
    pub outbox: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.deliveries + self.events + self.outbox
    }
}

impl std::fmt::Display for Pruned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "webhook_deliveries {}, webhook_events {}, domain_outbox {}",
            self.deliveries, self.events, self.outbox
        )
    }
}

/// One pruning pass; `dry_run` counts instead of deleting. Stops between statements on
/// `shutdown` (what is left goes next pass). `progress` is told each table's running count.
pub async fn run(
    pool: &PgPool,
    settings: &ReconcileSettings,
    dry_run: bool,
    shutdown: &CancellationToken,
    progress: &mut (dyn FnMut(&'static str, u64) + Send),
) -> Result<Pruned, sqlx::Error> {
    let mut p = Pruned::default();
    let walk = Walk {
        pool,
        batch: i64::from(settings.prune_batch),
        pause: settings.prune_pause,
        dry_run,
        shutdown,
    };
    // Events before deliveries: deleting a delivery sets its events' `delivery_id` to NULL
    // (an UPDATE of each), wasted work for events about to go in the same pass.
    p.events = walk
        .table(&EVENTS, settings.retain_events, progress)
        .await?;
    p.deliveries = walk
        .table(&DELIVERIES, settings.retain_deliveries, progress)
        .await?;
    p.outbox = walk
        .table(&OUTBOX, settings.retain_events, progress)
        .await?;
    Ok(p)
}

struct Walk<'a> {
    pool: &'a PgPool,
    batch: i64,
    pause: Duration,
    dry_run: bool,
    shutdown: &'a CancellationToken,
}

impl Walk<'_> {
    async fn table(
        &self,
        rule: &Rule,
        keep: Retention,
        progress: &mut (dyn FnMut(&'static str, u64) + Send),
    ) -> Result<u64, sqlx::Error> {
        let Some(keep) = keep.0 else {
            return Ok(0);
        };
        let Rule { table, age, only } = rule;
        let (age, only) = (*age, *only);
        // The batch: the next rows by id; `old`: whether each is past the cutoff. The walk
        // goes on only while a whole batch is old.
        let batch = format!(
            "WITH batch AS (SELECT id, {age} < now() - $3::interval AS old FROM {table}
                            WHERE id > $1 ORDER BY id LIMIT $2)"
        );
        let sql = if self.dry_run {
            format!(
                "{batch}
                 SELECT (SELECT count(*) FROM {table} t JOIN batch b ON b.id = t.id
                         WHERE b.old AND {only}),
                        (SELECT max(id) FROM batch), COALESCE((SELECT bool_and(old) FROM batch), false)"
            )
        } else {
            format!(
                "{batch},
                 gone AS (DELETE FROM {table} t USING batch b WHERE t.id = b.id AND b.old AND {only}
                          RETURNING t.id)
                 SELECT (SELECT count(*) FROM gone), (SELECT max(id) FROM batch),
                        COALESCE((SELECT bool_and(old) FROM batch), false)"
            )
        };
        let interval = format!("{} seconds", keep.as_secs());
        let (mut after, mut total) = (0_i64, 0_u64);
        loop {
            let (n, last, all_old): (i64, Option<i64>, bool) = sqlx::query_as(&sql)
                .bind(after)
                .bind(self.batch)
                .bind(&interval)
                .fetch_one(self.pool)
                .await?;
            let n = u64::try_from(n).unwrap_or_default();
            total += n;
            if !self.dry_run && n > 0 {
                metrics::counter!("payhook_pruned_rows_total", "table" => *table).increment(n);
            }
            progress(table, total);
            match last {
                Some(last) if all_old && !self.shutdown.is_cancelled() => after = last,
                _ => break,
            }
            if !self.dry_run {
                tokio::time::sleep(self.pause).await;
            }
        }
        Ok(total)
    }
}

/// `payhook_table_bytes{table}`: the size of the tables retention keeps in check (with their
/// indexes and TOAST), for the dashboard.
pub async fn refresh_table_sizes(pool: &PgPool) -> Result<(), sqlx::Error> {
    let sizes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT t, pg_total_relation_size(t::regclass)
         FROM UNNEST(ARRAY['webhook_deliveries', 'webhook_events', 'domain_outbox',
                           'rejected_deliveries']) AS t",
    )
    .fetch_all(pool)
    .await?;
    for (table, bytes) in sizes {
        metrics::gauge!("payhook_table_bytes", "table" => table).set(bytes as f64);
    }
    Ok(())
}

/// The pruning counters at 0, so `/metrics` lists them before the first prune.
pub fn register_metrics() {
    metrics::describe_counter!(
        "payhook_pruned_rows_total",
        "Rows deleted by retention, by table"
    );
    metrics::describe_gauge!(
        "payhook_table_bytes",
        "Size of the tables retention keeps in check, indexes included"
    );
    for rule in [DELIVERIES, EVENTS, OUTBOX] {
        metrics::counter!("payhook_pruned_rows_total", "table" => rule.table).increment(0);
    }
}
