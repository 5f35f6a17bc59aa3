//! The worker's transaction: several events applied in ONE PostgreSQL transaction (one commit,
//! one WAL flush for the lot), each behind a savepoint, so a failing event costs only itself.
//!
//! 1. Lock the events' rows with one statement (`FOR UPDATE`, in id order): two workers
//!    handed the same event take turns, and the second sees it done.
//! 2. Take the lock of every mandate they name that has no member yet, sorted, in one
//!    statement ([`members::lock_mandates`]), then apply them in the order of the thing they change
//!    (mandate, else payment): two batches touching the same rows lock them in the same
//!    order and do not deadlock.
//! 3. Each handler runs after a `SAVEPOINT`; an error rolls back to it, and that event alone
//!    is marked `retrying` (attempts + 1, `retry_due`) or `dead` (a permanent error, or the
//!    last retry used up), in the same transaction as the others' `processed`.
//! 4. Mark every event with one statement per kind, commit.
//!
//! Only a failure of the transaction itself (the connection lost, the commit refused) fails
//! the whole batch; the caller then treats every event as failed transiently.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;

use super::events::{truncate, Event, Outcome, Processed, EVENT_COLUMNS};
use super::gocardless_mandates::named_mandate;
use super::{apply, members, Context, DomainError, Handled};
use crate::amqp::retry_delay;

/// Applies the events with these ids; one result per id, in the order given (see the module
/// doc). An id listed twice is done once (`AlreadyDone` the second time).
pub async fn process(
    pool: &PgPool,
    ctx: &Context,
    event_ids: &[i64],
) -> Result<Vec<Processed>, DomainError> {
    let mut tx = pool.begin().await?;
    let mut rows: Vec<Event> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(event_ids)
    .fetch_all(&mut *tx)
    .await?;
    rows.sort_by(|a, b| lock_key(a).cmp(&lock_key(b)).then(a.id.cmp(&b.id)));
    lock_mandates(&mut tx, ctx, &rows).await?;

    let mut outcomes: HashMap<i64, Outcome> = HashMap::with_capacity(rows.len());
    let mut marks = Marks::default();
    for event in rows {
        if event.status == "processed" || event.status == "ignored" {
            outcomes.insert(event.id, Outcome::AlreadyDone);
            continue;
        }
        sqlx::query("SAVEPOINT event").execute(&mut *tx).await?;
        let outcome = match apply(&mut tx, ctx, &event).await {
            Ok(Handled::Applied) => Outcome::Processed,
            Ok(Handled::NoHandler) => Outcome::Ignored,
            Err(e) => {
                // Undoes this event's writes only; a broken connection fails here, and so the
                // batch, which is what it should do.
                sqlx::query("ROLLBACK TO SAVEPOINT event")
                    .execute(&mut *tx)
                    .await?;
                failed(&event, e)
            }
        };
        marks.add(event.id, &outcome);
        outcomes.insert(event.id, outcome);
    }
    marks.write(&mut tx).await?;
    tx.commit().await?;

    let mut seen = HashSet::new();
    Ok(event_ids
        .iter()
        .map(|id| {
            let outcome = if !seen.insert(*id) {
                Outcome::AlreadyDone
            } else {
                outcomes.remove(id).unwrap_or(Outcome::Missing)
            };
            Processed { outcome }
        })
        .collect())
}

/// What an event's failure makes of it: a transient error is retried after the next delay,
/// until the delays are used up; a permanent one goes dead at once.
fn failed(event: &Event, error: DomainError) -> Outcome {
    let attempt = event.attempts.saturating_add(1);
    match error {
        DomainError::Transient(error) => match retry_delay(i64::from(attempt)) {
            Some((delay, _)) => Outcome::Retrying {
                attempt,
                delay,
                error,
            },
            None => Outcome::Dead {
                attempts: attempt,
                error: format!("gave up after {attempt} attempts: {error}"),
            },
        },
        DomainError::Permanent(error) => Outcome::Dead {
            attempts: attempt,
            error,
        },
    }
}

/// The order a batch is applied in: what its handler locks first. GoCardless payment and
/// mandate events lock the mandate; the others their payment (resource id).
fn lock_key(event: &Event) -> (&str, String) {
    let key = named_mandate(event)
        .or_else(|| event.resource_id.clone())
        .unwrap_or_else(|| event.external_id.clone());
    (event.provider.as_str(), key)
}

/// Takes the mandate lock of every mandate the batch's events name, in one statement:
/// exclusive where an event may create the mandate's member (a mandate event, or a confirmed
/// payment whose member is fetched from the API), shared where it only writes payments.
async fn lock_mandates(
    conn: &mut sqlx::PgConnection,
    ctx: &Context,
    rows: &[Event],
) -> Result<(), sqlx::Error> {
    let (mut creating, mut paying) = (Vec::new(), Vec::new());
    for e in rows
        .iter()
        .filter(|e| e.status != "processed" && e.status != "ignored")
    {
        if let Some(m) = named_mandate(e) {
            if may_create_member(ctx, e) {
                creating.push(m);
            } else {
                paying.push(m);
            }
        }
    }
    members::lock_mandates(conn, &creating, &paying).await
}

/// Whether the event's handler may insert its mandate's member (see
/// `gocardless_payments::member_first`).
fn may_create_member(ctx: &Context, event: &Event) -> bool {
    event.event_type.starts_with("mandates.")
        || (event.event_type == "payments.confirmed" && ctx.gateways.gocardless.is_configured())
}

/// The status writes of a batch, gathered so each kind is one statement.
#[derive(Default)]
struct Marks {
    done_ids: Vec<i64>,
    done_status: Vec<&'static str>,
    failed_ids: Vec<i64>,
    failed_status: Vec<&'static str>,
    failed_attempts: Vec<i32>,
    failed_error: Vec<String>,
    /// Seconds until a retry is due (0 for dead ones: not used).
    failed_wait: Vec<f64>,
}

impl Marks {
    fn add(&mut self, id: i64, outcome: &Outcome) {
        let (status, attempts, error, wait) = match outcome {
            Outcome::Processed => return self.done(id, "processed"),
            Outcome::Ignored => return self.done(id, "ignored"),
            Outcome::AlreadyDone | Outcome::Missing => return,
            Outcome::Retrying { attempt, error, .. } => {
                let wait = retry_delay(i64::from(*attempt)).map_or(0.0, |(_, d)| d.as_secs_f64());
                ("retrying", *attempt, error, wait)
            }
            Outcome::Dead { attempts, error } => ("dead", *attempts, error, 0.0),
        };
        self.failed_ids.push(id);
        self.failed_status.push(status);
        self.failed_attempts.push(attempts);
        self.failed_error.push(truncate(error).to_owned());
        self.failed_wait.push(wait);
    }

    fn done(&mut self, id: i64, status: &'static str) {
        self.done_ids.push(id);
        self.done_status.push(status);
    }

    async fn write(&self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        if !self.done_ids.is_empty() {
            // Only status and processed_at change (retry_due only if the event was retried,
            // published_at only if ingest skipped the row while we held it: see
            // `intake::mark_published`): no indexed column, so PostgreSQL updates the row in
            // place (HOT; see the migration `hot_status`).
            sqlx::query(
                "UPDATE webhook_events e SET status = x.status, processed_at = now(), retry_due = NULL,
                     published_at = COALESCE(e.published_at, now())
                 FROM UNNEST($1::bigint[], $2::text[]) AS x(id, status) WHERE e.id = x.id",
            )
            .bind(&self.done_ids)
            .bind(&self.done_status)
            .execute(&mut *conn)
            .await?;
        }
        if !self.failed_ids.is_empty() {
            sqlx::query(
                "UPDATE webhook_events e SET status = x.status, attempts = x.attempts,
                     last_error = x.error, published_at = COALESCE(e.published_at, now()),
                     retry_due = CASE WHEN x.status = 'retrying'
                                      THEN now() + make_interval(secs => x.wait)
                                      ELSE e.retry_due END
                 FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::text[], $5::float8[])
                      AS x(id, status, attempts, error, wait)
                 WHERE e.id = x.id",
            )
            .bind(&self.failed_ids)
            .bind(&self.failed_status)
            .bind(&self.failed_attempts)
            .bind(&self.failed_error)
            .bind(&self.failed_wait)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
