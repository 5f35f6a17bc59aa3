//! Group commit: the path from a verified delivery to "safe to answer 2xx".
//!
//! Requests hand their delivery to a writer task and wait. The writer takes everything that
//! arrived while the previous batch was in flight, stores it with ONE PostgreSQL statement,
//! and passes it to a publisher task, which hands the new events to the broker and passes
//! the batch on to a settler task, which waits for the broker's confirms (once for the whole
//! batch), stamps the events published and answers. Writing, publishing and confirming
//! overlap: while a batch waits for its confirms, the next ones are written and published. When idle, a lone request goes through at once: there is no
//! timer, only "whatever queued up meanwhile".
//!
//! A delivery is answered `Ok` only once its rows are committed and its events confirmed by
//! the broker (or committed only, with `accept_without_broker`); rows committed but not
//! published stay `received` for the relay, and a duplicate of such an event publishes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::amqp::{Broker, EventMessage, Outgoing, PendingConfirms, PublishError};
use crate::db::OwnConnection;
use crate::providers::NewEvent;

/// A verified, parsed delivery waiting to be stored.
#[derive(Debug)]
pub struct Delivery {
    pub provider: &'static str,
    /// The audit headers (never a secret), as a JSON object.
    pub headers: serde_json::Value,
    /// The body exactly as received.
    pub body: Bytes,
    pub events: Vec<NewEvent>,
}

/// What happened to an accepted delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub delivery_id: i64,
    /// `webhook_events.id` of the events this delivery created.
    pub new_event_ids: Vec<i64>,
    /// How many of its events were already stored (sent before).
    pub duplicates: usize,
    /// True when everything it needed published was confirmed by the broker.
    pub published: bool,
}

/// Why a delivery could not be accepted: always our side, so always a 503 for the gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("database unavailable: {0}")]
    Database(String),
    #[error("broker unavailable: {0}")]
    Broker(String),
    #[error("timed out waiting for the database and broker")]
    Timeout,
    #[error("shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Most deliveries in one transaction.
    pub batch_max: usize,
    /// How long one batch may wait for the broker's confirms.
    pub confirm_timeout: Duration,
    /// Answer Ok once committed even if the broker is down (the relay publishes later).
    pub accept_without_broker: bool,
}

/// Batches handed to the broker whose confirms are still awaited.
const IN_FLIGHT_BATCHES: usize = 4;

struct Job {
    delivery: Delivery,
    reply: oneshot::Sender<Result<Accepted, IntakeError>>,
}

/// A committed batch on its way to the broker.
struct Committed {
    jobs: Vec<(Job, JobRows)>,
    to_publish: Vec<EventMessage>,
}

/// What the transaction did for one delivery.
#[derive(Debug, Default)]
struct JobRows {
    delivery_id: i64,
    new_event_ids: Vec<i64>,
    duplicates: usize,
    /// Whether any event of this delivery must be confirmed before answering.
    needs_broker: bool,
}

/// The handle requests submit through. Dropping every clone stops the tasks once they have
/// answered what is queued.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Job>,
}

impl Intake {
    /// Starts the writer and publisher tasks; the handle resolves when both have drained.
    pub fn start(
        pool: PgPool,
        broker: Arc<Broker>,
        config: IntakeConfig,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>(config.batch_max * 4);
        // Capacity 1: the writer collects its next batch only when the publisher takes the
        // last one, so requests arriving meanwhile join it.
        let (ptx, prx) = mpsc::channel::<Committed>(1);
        // Batches published and waiting for their confirms, at most this many at once.
        let (stx, srx) = mpsc::channel::<Publishing>(IN_FLIGHT_BATCHES);
        let writer = tokio::spawn(writer(pool.clone(), rx, ptx, config.clone()));
        let publisher = tokio::spawn(publisher(broker.clone(), prx, stx, config.clone()));
        let settler = tokio::spawn(settler(pool, broker, srx, config));
        let handle = tokio::spawn(async move {
            let _ = writer.await;
            let _ = publisher.await;
            let _ = settler.await;
        });
        (Self { tx }, handle)
    }

    /// Stores and publishes one delivery; resolves when it may be answered.
    pub async fn submit(
        &self,
        delivery: Delivery,
        timeout: Duration,
    ) -> Result<Accepted, IntakeError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { delivery, reply };
        let wait = async {
            self.tx
                .send(job)
                .await
                .map_err(|_| IntakeError::ShuttingDown)?;
            rx.await.map_err(|_| IntakeError::ShuttingDown)?
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(IntakeError::Timeout),
        }
    }
}

async fn writer(
    pool: PgPool,
    mut rx: mpsc::Receiver<Job>,
    ptx: mpsc::Sender<Committed>,
    config: IntakeConfig,
) {
    // The writer is this connection's only user: no pool acquire, no ping per batch.
    let mut conn = OwnConnection::new(&pool, false);
    while let Some(first) = rx.recv().await {
        // Wait for the publisher BEFORE collecting: requests that arrive meanwhile join this
        // batch instead of freezing into several small ones queued behind the publisher.
        let Ok(permit) = ptx.reserve().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < config.batch_max {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("payhook_ingest_batch_size").record(batch.len() as f64);
        // A request that gave up (timeout) no longer waits; still store its delivery: the
        // gateway will retry and the retry is then a cheap duplicate.
        let started = Instant::now();
        let mut result = persist(&mut conn, &batch).await;
        if result.as_ref().is_err_and(|e| conn.lost(e)) {
            // A connection that lived through a PostgreSQL restart fails on first use: try
            // once more on a fresh one before answering 503. (The statement is atomic: if it
            // did commit, the retry stores duplicates, which are answered as such.)
            result = persist(&mut conn, &batch).await;
        }
        metrics::histogram!("payhook_ingest_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut committed = match result {
            Ok((rows, to_publish)) => vec![(batch, rows, to_publish)],
            // One delivery the database refuses must not fail the others that shared its
            // statement: store them one by one. (When PostgreSQL is down, each fails fast.)
            Err(e) if batch.len() > 1 && e.as_database_error().is_some() => {
                tracing::warn!(error = %e, deliveries = batch.len(), "batch refused; storing its deliveries one by one");
                let mut ok = Vec::new();
                for job in batch {
                    let one = [job];
                    let mut r = persist(&mut conn, &one).await;
                    if r.as_ref().is_err_and(|e| conn.lost(e)) {
                        r = persist(&mut conn, &one).await;
                    }
                    match r {
                        Ok((rows, to_publish)) => ok.push((one.into(), rows, to_publish)),
                        Err(e) => refuse(one.into(), &e),
                    }
                }
                ok
            }
            Err(e) => {
                conn.lost(&e);
                refuse(batch, &e);
                Vec::new()
            }
        }
        .into_iter();
        let send = |(batch, rows, to_publish): (Vec<Job>, Vec<JobRows>, _)| Committed {
            jobs: batch.into_iter().zip(rows).collect(),
            to_publish,
        };
        if let Some(first) = committed.next() {
            permit.send(send(first));
        }
        for rest in committed {
            if ptx.send(send(rest)).await.is_err() {
                return;
            }
        }
    }
}

/// Answers every job of a batch that could not be stored: 503, the gateway retries.
fn refuse(batch: Vec<Job>, e: &sqlx::Error) {
    tracing::error!(error = %e, deliveries = batch.len(), "storing deliveries failed");
    let err = IntakeError::Database(e.to_string());
    for job in batch {
        let _ = job.reply.send(Err(err.clone()));
    }
}

/// Hands each committed batch's messages to the broker and passes the batch on to
/// [`settler`] without waiting for the confirms: the next batch is published while these are
/// being confirmed.
async fn publisher(
    broker: Arc<Broker>,
    mut rx: mpsc::Receiver<Committed>,
    stx: mpsc::Sender<Publishing>,
    config: IntakeConfig,
) {
    while let Some(batch) = rx.recv().await {
        let outgoing: Vec<Outgoing> = batch
            .to_publish
            .iter()
            .map(|m| Outgoing::event(broker.names(), m))
            .collect();
        let started = Instant::now();
        let pending = broker
            .publish_unconfirmed(&outgoing, config.confirm_timeout)
            .await;
        if stx
            .send(Publishing {
                batch,
                pending,
                started,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A batch whose messages are with the broker, waiting for its confirms.
struct Publishing {
    batch: Committed,
    pending: Result<PendingConfirms, PublishError>,
    started: Instant,
}

/// Waits for each batch's confirms (in publishing order), stamps its events published and
/// answers its requests.
async fn settler(
    pool: PgPool,
    broker: Arc<Broker>,
    mut rx: mpsc::Receiver<Publishing>,
    config: IntakeConfig,
) {
    // Marking events published is bookkeeping the relay redoes if it is lost in a crash
    // (a duplicate message, which the worker ignores): it need not wait for a WAL flush.
    let mut marks = OwnConnection::new(&pool, true);
    while let Some(Publishing {
        batch: Committed { jobs, to_publish },
        pending,
        started,
    }) = rx.recv().await
    {
        let result = match pending {
            Ok(pending) => broker.confirmed(pending, config.confirm_timeout).await,
            Err(e) => Err(e),
        };
        metrics::histogram!("payhook_publish_confirm_seconds")
            .record(started.elapsed().as_secs_f64());
        let published = match &result {
            Ok(()) => {
                let ids: Vec<i64> = to_publish.iter().map(|m| m.id).collect();
                // If this fails the events stay `received` and the relay publishes them again:
                // a duplicate message, which the worker ignores, never a lost one.
                let marked = match marks.get().await {
                    Ok(c) => mark_published(c, &ids).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = marked {
                    marks.lost(&e);
                    tracing::warn!(error = %e, "marking events published failed; the relay will redo it");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, events = to_publish.len(), "publishing a batch failed");
                false
            }
        };
        for (job, rows) in jobs {
            let answer = if published || !rows.needs_broker || config.accept_without_broker {
                Ok(Accepted {
                    delivery_id: rows.delivery_id,
                    new_event_ids: rows.new_event_ids,
                    duplicates: rows.duplicates,
                    published: published || !rows.needs_broker,
                })
            } else {
                Err(IntakeError::Broker(
                    result
                        .as_ref()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ))
            };
            let _ = job.reply.send(answer);
        }
    }
}

/// Stores a batch with ONE statement (atomic on its own, so no BEGIN/COMMIT round trips):
/// delivery ids drawn from the sequence first, so each event row points at its delivery
/// without relying on the order of RETURNING; then deliveries and events (duplicates
/// skipped). Only when the batch held duplicates, a second look finds any that were never
/// published.
async fn persist(
    conn: &mut OwnConnection,
    batch: &[Job],
) -> Result<(Vec<JobRows>, Vec<EventMessage>), sqlx::Error> {
    let providers: Vec<&str> = batch.iter().map(|j| j.delivery.provider).collect();
    let headers: Vec<&serde_json::Value> = batch.iter().map(|j| &j.delivery.headers).collect();
    let bodies: Vec<&[u8]> = batch.iter().map(|j| j.delivery.body.as_ref()).collect();
    let mut ev_delivery = Vec::new();
    let mut ev_provider = Vec::new();
    let mut ev_external = Vec::new();
    let mut ev_type = Vec::new();
    let mut ev_resource = Vec::new();
    let mut ev_payload = Vec::new();
    let mut ev_occurred = Vec::new();
    for (ord, job) in (1_i64..).zip(batch) {
        for e in &job.delivery.events {
            ev_delivery.push(ord);
            ev_provider.push(job.delivery.provider);
            ev_external.push(e.external_id.as_str());
            ev_type.push(e.event_type.as_str());
            ev_resource.push(e.resource_id.as_deref());
            ev_payload.push(&e.payload);
            ev_occurred.push(e.occurred_at);
        }
    }
    // Rows: (delivery ordinal, delivery id, NULL, NULL) for each delivery, then
    // (NULL, event id, provider, external_id) for each event actually inserted.
    let query = sqlx::query_as::<_, (Option<i64>, i64, Option<String>, Option<String>)>(
        "WITH ids AS MATERIALIZED (
             SELECT ord, nextval(pg_get_serial_sequence('webhook_deliveries', 'id')) AS id
             FROM generate_series(1::bigint, $1::bigint) AS ord
         ), d AS (
             INSERT INTO webhook_deliveries (id, provider, headers, body) OVERRIDING SYSTEM VALUE
             SELECT ids.id, x.provider, x.headers, x.body
             FROM UNNEST($2::text[], $3::jsonb[], $4::bytea[]) WITH ORDINALITY
                  AS x(provider, headers, body, ord)
             JOIN ids USING (ord)
         ), e AS (
             INSERT INTO webhook_events
                 (delivery_id, provider, external_id, event_type, resource_id, payload, occurred_at)
             SELECT ids.id, x.provider, x.external_id, x.event_type, x.resource_id, x.payload,
                    x.occurred_at
             FROM UNNEST($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[],
                         $10::jsonb[], $11::timestamptz[])
                  AS x(ord, provider, external_id, event_type, resource_id, payload, occurred_at)
             JOIN ids USING (ord)
             ON CONFLICT (provider, external_id) DO NOTHING
             RETURNING id, provider, external_id
         )
         SELECT ord, id, NULL, NULL FROM ids
         UNION ALL
         SELECT NULL, id, provider, external_id FROM e",
    );
    let c = conn.get().await?;
    let rows = query
        .bind(batch.len() as i64)
        .bind(&providers)
        .bind(&headers)
        .bind(&bodies)
        .bind(&ev_delivery)
        .bind(&ev_provider)
        .bind(&ev_external)
        .bind(&ev_type)
        .bind(&ev_resource)
        .bind(&ev_payload)
        .bind(&ev_occurred)
        .fetch_all(&mut *c)
        .await?;

    let mut delivery_ids = vec![0_i64; batch.len()];
    let mut new_ids: HashMap<(String, String), i64> = HashMap::new();
    for (ord, id, provider, external_id) in rows {
        match (ord, provider, external_id) {
            (Some(ord), _, _) => delivery_ids[(ord - 1) as usize] = id,
            (None, Some(p), Some(e)) => {
                new_ids.insert((p, e), id);
            }
            _ => {}
        }
    }

    // Events of the batch that were stored before (by an earlier delivery) and are still
    // `received`: their first publish failed or is in flight; publish them (again) now. Read
    // after the commit: at worst a message more, which the worker ignores.
    let mut unpublished: HashMap<(String, String), i64> = HashMap::new();
    if new_ids.len() < ev_external.len() {
        let query = sqlx::query_as::<_, (i64, String, String)>(
            "SELECT e.id, e.provider, e.external_id FROM webhook_events e
             JOIN UNNEST($1::text[], $2::text[]) AS k(provider, external_id)
               ON e.provider = k.provider AND e.external_id = k.external_id
             WHERE e.status = 'received'",
        );
        let rows = query
            .bind(&ev_provider)
            .bind(&ev_external)
            .fetch_all(&mut *c)
            .await?;
        for (id, p, e) in rows {
            unpublished.insert((p, e), id);
        }
    }

    let mut to_publish = Vec::new();
    let mut rows = Vec::with_capacity(batch.len());
    for (job, delivery_id) in batch.iter().zip(delivery_ids) {
        let mut r = JobRows {
            delivery_id,
            ..Default::default()
        };
        for e in &job.delivery.events {
            let key = (job.delivery.provider.to_owned(), e.external_id.clone());
            // `remove`: the same event twice in one batch is new for the first delivery only.
            if let Some(id) = new_ids.remove(&key) {
                r.new_event_ids.push(id);
                r.needs_broker = true;
                to_publish.push(message(id, job.delivery.provider, e));
            } else {
                r.duplicates += 1;
                if let Some(id) = unpublished.get(&key) {
                    r.needs_broker = true;
                    if !to_publish.iter().any(|m| m.id == *id) {
                        to_publish.push(message(*id, job.delivery.provider, e));
                    }
                }
            }
        }
        rows.push(r);
    }
    Ok((rows, to_publish))
}

fn message(id: i64, provider: &str, e: &NewEvent) -> EventMessage {
    EventMessage {
        id,
        provider: provider.to_owned(),
        external_id: e.external_id.clone(),
        event_type: e.event_type.clone(),
    }
}

/// Stamps events as published. A worker may have finished one already (its confirm raced
/// ours): its status stays, but `published_at` is still recorded once. A row a worker holds
/// locked (it got the message before we got the confirm) is skipped, never waited for:
/// waiting would stall every answer behind that worker's batch, and in the opposite lock
/// order deadlock with it; the worker stamps `published_at` itself when it marks the event.
pub async fn mark_published(db: impl sqlx::PgExecutor<'_>, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE webhook_events e
         SET status = CASE WHEN e.status = 'received' THEN 'published' ELSE e.status END,
             published_at = COALESCE(e.published_at, now())
         FROM (SELECT id FROM webhook_events
               WHERE id = ANY($1) AND (status = 'received' OR published_at IS NULL)
               ORDER BY id FOR UPDATE SKIP LOCKED) l
         WHERE e.id = l.id",
    )
    .bind(ids)
    .execute(db)
    .await?;
    Ok(())
}
