//! Builds the worker from its settings and runs it until the shutdown signal.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use payhook_shared::amqp::{Broker, Names};
use payhook_shared::amqp_nodes::Nodes;
use payhook_shared::domain::Context;
use payhook_shared::gateway::Gateways;
use payhook_shared::shutdown::CancellationToken;
use sqlx::PgPool;

use crate::reconciler::{self, Reconciler};
use crate::settings::{ReconcileSettings, WorkerConfig};
use crate::{consumer, ops, queue_depth};

/// What every task of a worker shares.
pub struct Shared {
    pub pool: PgPool,
    /// Publisher (confirm mode) for the retry and dead-letter copies and the reconciler.
    pub broker: Arc<Broker>,
    pub names: Names,
    pub ctx: Context,
    /// The RabbitMQ cluster's nodes (`AMQP_URL`), for the consumer's and the poller's own
    /// connections.
    pub nodes: Arc<Nodes>,
    pub concurrency: usize,
    /// Most events in one transaction (`WORKER_BATCH_MAX`).
    pub batch_max: usize,
    pub prefetch: u16,
    /// True while a consumer is registered on the events queue (for /readyz).
    pub consuming: AtomicBool,
}

/// A built, bound, not yet running worker.
pub struct Worker {
    ops_addr: SocketAddr,
    ops_server: Server,
    shared: Arc<Shared>,
    queue_poll: std::time::Duration,
    reconcile: ReconcileSettings,
}

impl Worker {
    /// Connects to PostgreSQL (migrating it) and binds the ops listener (port 0 picks a free
    /// one). RabbitMQ may still be down: the consumer connects when it can, and /readyz says
    /// so meanwhile.
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let metrics = payhook_shared::telemetry::metrics();
        reconciler::register_metrics();
        let pool = payhook_shared::db::connect_and_migrate(&config.database)
            .await
            .context("PostgreSQL")?;
        let gateways =
            Gateways::from_settings(&config.worker.gateways).map_err(anyhow::Error::msg)?;
        let missing = gateways.missing_tokens();
        if !missing.is_empty() {
            // Most installations start with only their webhook secrets: say once what that
            // means, instead of a surprise per event.
            tracing::warn!(
                missing = %missing.join(", "),
                "gateway APIs without a token: their events are applied from what they carry; \
                 an event that carries only ids retries, then goes dead naming the variable; \
                 those gateways' pending payments are not reconciled"
            );
        }
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            broker: Arc::new(Broker::new(&config.broker)),
            names: Names::new(&config.broker.amqp_prefix),
            ctx: Context {
                gateways,
                gocardless_retry_failed_payments: config.worker.gocardless_retry_failed_payments,
            },
            nodes: Arc::new(Nodes::new(&config.broker.amqp_url)),
            concurrency: usize::from(config.worker.worker_concurrency),
            batch_max: usize::from(config.worker.worker_batch_max),
            // Never fewer messages on hand than tasks to run them.
            prefetch: config
                .worker
                .worker_prefetch
                .max(config.worker.worker_concurrency),
            consuming: AtomicBool::new(false),
        });

        let listener = TcpListener::bind(config.worker.worker_ops_addr).with_context(|| {
            format!("binding WORKER_OPS_ADDR {}", config.worker.worker_ops_addr)
        })?;
        let ops_addr = listener.local_addr()?;
        let state = web::Data::new(ops::OpsState {
            shared: shared.clone(),
            metrics,
        });
        let ops_server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/healthz", web::get().to(ops::healthz))
                .route("/readyz", web::get().to(ops::readyz))
                .route("/metrics", web::get().to(ops::metrics))
                .default_service(web::to(ops::not_found))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();

        Ok(Self {
            ops_addr,
            ops_server,
            shared,
            queue_poll: config.worker.worker_queue_poll,
            reconcile: config.worker.reconcile.clone(),
        })
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Consumes and reconciles until `shutdown` is cancelled, then stops taking messages,
    /// finishes and acks the events in flight, ends (or cuts short) a reconcile pass, and
    /// returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(
            ops = %self.ops_addr,
            queue = %self.shared.names.events_queue(),
            concurrency = self.shared.concurrency,
            "payhook-worker starting"
        );
        let ops_handle = self.ops_server.handle();
        let ops = tokio::spawn(self.ops_server);
        let poller = tokio::spawn(queue_depth::poll(
            self.shared.nodes.clone(),
            self.shared.names.clone(),
            self.queue_poll,
            shutdown.clone(),
        ));

        let reconciler = tokio::spawn(
            Arc::new(Reconciler {
                pool: self.shared.pool.clone(),
                broker: self.shared.broker.clone(),
                gateways: self.shared.ctx.gateways.clone(),
                settings: self.reconcile,
                shutdown: shutdown.clone(),
            })
            .run(),
        );

        consumer::run(self.shared.clone(), shutdown.clone()).await;

        // The queue-depth poller and the reconciler stop on the same token.
        let _ = poller.await;
        let _ = reconciler.await;
        ops_handle.stop(true).await;
        let _ = ops.await;
        self.shared.broker.close().await;
        self.shared.pool.close().await;
        tracing::info!("payhook-worker stopped");
        Ok(())
    }
}
