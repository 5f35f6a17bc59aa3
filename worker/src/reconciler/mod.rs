//! The reconciler: every `RECONCILE_INTERVAL` one worker of N runs a pass (see [`lock`]):
//!
//! 1. [`event_relay`]: events persisted but never published are published;
//! 2. [`domain_relay`]: the domain outbox is published to `<prefix>.domain`, in order;
//! 3. [`pending`]: payments pending for too long are checked with their gateway;
//! 4. [`prune`]: retention: old raw deliveries, processed events and published domain events
//!    are deleted in small batches;
//! 5. [`bank`]: bank credits still unmatched or ambiguous are tried again.
//!
//! The steps are independent: one failing (the broker is down) does not stop the others.
//! A pass counts `payhook_reconciler_runs_total{outcome="error"}` when a step failed on our
//! side (PostgreSQL, RabbitMQ); a gateway that fails is counted apart
//! (`payhook_reconciler_gateway_errors_total{provider}`) and is not an error of the pass.
//!
//! Gauges: every worker (leader or not) computes `payhook_pending_payments`,
//! `payhook_outbox_oldest_unpublished_seconds` and `payhook_bank_authorizations` on each tick, from cheap indexed queries, so
//! the values never go stale on a worker that lost the lead; alert on their `max()`.
//!
//! `payhook-worker reconcile --once` runs one pass through the same code ([`Reconciler::once`]).

pub mod bank;
pub mod domain_relay;
pub mod event_relay;
pub mod lock;
pub mod pending;
pub mod prune;

use std::sync::Arc;
use std::time::Duration;

use payhook_shared::amqp::Broker;
use payhook_shared::gateway::Gateways;
use payhook_shared::shutdown::CancellationToken;
use sqlx::PgPool;

use crate::settings::ReconcileSettings;
use lock::Locks;

/// How long a relay batch may wait for the broker's confirms.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a pass in progress may go on after shutdown was asked for; then it is dropped
/// (every step is safe to cut: what was not stamped is sent again next time).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often `reconcile --once` looks again whether the pass in progress elsewhere is over.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Events published by the event relay.
    pub events: u64,
    /// Domain events published by the domain relay.
    pub domain_events: u64,
    /// Pending payments checked with their gateway, new events from their answers, and
    /// failed gateway calls.
    pub payments: pending::Checked,
    /// Rows removed by retention.
    pub pruned: prune::Pruned,
    /// Waiting bank credits tried again, and matched.
    pub bank: payhook_shared::domain::bank_matching::Retried,
    /// Steps that failed on our side (PostgreSQL, RabbitMQ).
    pub failed_steps: u32,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "relayed {} event(s), {} domain event(s); checked {} payment(s), changed {}; {} gateway error(s)",
            self.events,
            self.domain_events,
            self.payments.checked,
            self.payments.changed,
            self.payments.gateway_errors
        )?;
        if self.pruned.total() > 0 {
            write!(f, "; pruned {}", self.pruned)?;
        }
        if self.bank.tried > 0 {
            write!(
                f,
                "; bank credits tried {}, matched {}",
                self.bank.tried, self.bank.matched
            )?;
        }
        Ok(())
    }
}

/// Everything a pass needs.
pub struct Reconciler {
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    pub gateways: Gateways,
    pub settings: ReconcileSettings,
    /// Checked between batches and payments: a pass stops early on shutdown.
    pub shutdown: CancellationToken,
}

impl Reconciler {
    /// Runs a pass every `RECONCILE_INTERVAL` while this process holds the leader lock, and
    /// refreshes the gauges on every tick, until `shutdown`. The first tick is at once: a
    /// fleet restarted after an outage relays without waiting an interval.
    pub async fn run(self: Arc<Self>) {
        let mut locks = Locks::new((*self.pool.connect_options()).clone());
        // (tokio's interval refuses a zero period: RECONCILE_INTERVAL=0s means "as often as
        // it can", not a crash.)
        let every = self
            .settings
            .reconcile_interval
            .max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            match locks.lead().await {
                Ok(true) => self.tick_as_leader(&mut locks).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reconciler lock connection failed; trying again next tick")
                }
            }
            if let Err(e) = self.refresh_gauges().await {
                tracing::debug!(error = %e, "reconciler gauges not refreshed");
            }
        }
        locks.close().await;
    }

    async fn tick_as_leader(&self, locks: &mut Locks) {
        match locks.try_begin_pass().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(
                    "a reconcile pass is running elsewhere (reconcile --once); skipping this tick"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciler lock connection failed");
                return;
            }
        }
        let pass = self.pass();
        tokio::pin!(pass);
        let summary = tokio::select! {
            s = &mut pass => Some(s),
            _ = self.shutdown.cancelled() => tokio::time::timeout(SHUTDOWN_GRACE, &mut pass).await.ok(),
        };
        locks.end_pass().await;
        match summary {
            Some(s) if s.failed_steps == 0 => tracing::debug!(summary = %s, "reconcile pass done"),
            Some(s) => {
                tracing::warn!(summary = %s, failed_steps = s.failed_steps, "reconcile pass done with errors")
            }
            None => tracing::info!("reconcile pass cut short by shutdown"),
        }
    }

    /// One pass now, for `reconcile --once`: waits (up to `wait`) for a pass in progress on a
    /// worker to end, then runs. Leadership is not needed and not taken: the workers' periodic
    /// passes go on as before. `Ok(None)` when the wait ran out.
    pub async fn once(&self, wait: Duration) -> anyhow::Result<Option<Summary>> {
        let mut locks = Locks::new((*self.pool.connect_options()).clone());
        let deadline = tokio::time::Instant::now() + wait;
        let mut said = false;
        while !locks.try_begin_pass().await? {
            if tokio::time::Instant::now() >= deadline {
                locks.close().await;
                return Ok(None);
            }
            if !said {
                eprintln!("a reconcile pass is running on a worker; waiting for it to end");
                said = true;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
        let summary = self.pass().await;
        locks.end_pass().await;
        locks.close().await;
        let _ = self.refresh_gauges().await;
        Ok(Some(summary))
    }

    /// The five steps, each on its own; counts the run.
    pub async fn pass(&self) -> Summary {
        let mut s = Summary::default();
        match event_relay::run(self).await {
            Ok(n) => s.events = n,
            Err(e) => {
                s.failed_steps += 1;
                tracing::warn!(error = %e, "event relay failed");
            }
        }
        match domain_relay::run(self).await {
            Ok(n) => s.domain_events = n,
            Err(e) => {
                s.failed_steps += 1;
                tracing::warn!(error = %e, "domain relay failed");
            }
        }
        match pending::run(self).await {
            Ok(c) => s.payments = c,
            Err(e) => {
                s.failed_steps += 1;
                tracing::warn!(error = %e, "pending payment checks failed");
            }
        }
        match prune::run(
            &self.pool,
            &self.settings,
            false,
            &self.shutdown,
            &mut |_, _| {},
        )
        .await
        {
            Ok(p) => s.pruned = p,
            Err(e) => {
                s.failed_steps += 1;
                tracing::warn!(error = %e, "pruning failed");
            }
        }
        match bank::run(&self.pool).await {
            Ok(r) => s.bank = r,
            Err(e) => {
                s.failed_steps += 1;
                tracing::warn!(error = %e, "matching waiting bank credits failed");
            }
        }
        let outcome = if s.failed_steps == 0 { "ok" } else { "error" };
        metrics::counter!("payhook_reconciler_runs_total", "outcome" => outcome).increment(1);
        s
    }

    /// `payhook_pending_payments` and `payhook_outbox_oldest_unpublished_seconds` (0 when
    /// nothing waits).
    pub async fn refresh_gauges(&self) -> Result<(), sqlx::Error> {
        let (pending, oldest): (i64, f64) = sqlx::query_as(
            "SELECT
               (SELECT count(*) FROM payments WHERE status IN ('pending', 'submitted')),
               GREATEST(
                 COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(received_at) FROM webhook_events
                                                      WHERE published_at IS NULL
                                                        AND status = 'received')), 0),
                 COALESCE(EXTRACT(EPOCH FROM now() - (SELECT created_at FROM domain_outbox
                                                      WHERE published_at IS NULL
                                                      ORDER BY id LIMIT 1)), 0),
                 0)::float8",
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!("payhook_pending_payments").set(pending as f64);
        metrics::gauge!("payhook_outbox_oldest_unpublished_seconds").set(oldest);
        bank::refresh_authorizations(&self.pool).await?;
        prune::refresh_table_sizes(&self.pool).await
    }
}

/// Registers the worker's counters at 0, so `/metrics` lists them (and alerts can use them)
/// before the first retry, dead letter or reconciler run.
pub fn register_metrics() {
    metrics::describe_counter!(
        "payhook_reconciler_gateway_errors_total",
        "Gateway API calls of the reconciler that failed, by provider"
    );
    metrics::counter!("payhook_dead_letters_total").increment(0);
    metrics::counter!("payhook_retries_total").increment(0);
    for outcome in ["ok", "error"] {
        metrics::counter!("payhook_reconciler_runs_total", "outcome" => outcome).increment(0);
    }
    metrics::gauge!("payhook_pending_payments").set(0.0);
    metrics::gauge!("payhook_outbox_oldest_unpublished_seconds").set(0.0);
    prune::register_metrics();
    bank::register_metrics();
}
