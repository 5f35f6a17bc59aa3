//! Builds the ingest service from its settings and runs it until the shutdown signal.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use payhook_shared::amqp::Broker;
use payhook_shared::config::{BrokerSettings, DatabaseSettings, IngestSettings, ProviderSecrets};
use payhook_shared::intake::{Intake, IntakeConfig};
use payhook_shared::providers::{self, Provider};
use payhook_shared::shutdown::CancellationToken;
use tokio::task::JoinHandle;

use crate::routes::{admin, ops, webhook};
use crate::tls;

/// Everything ingest is configured with.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub ingest: IngestSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub secrets: ProviderSecrets,
    /// `PAYHOOK_ADMIN_TOKEN` (environment only); `None`: the admin API answers 404.
    pub admin_token: Option<String>,
}

/// A built, bound, not yet running ingest service.
pub struct Application {
    webhook_addr: SocketAddr,
    ops_addr: SocketAddr,
    webhook_server: Server,
    ops_server: Server,
    intake_tasks: JoinHandle<()>,
    broker: Arc<Broker>,
}

impl Application {
    /// Connects to PostgreSQL (migrating it), binds both listeners (port 0 picks a free one)
    /// and prepares the servers. RabbitMQ may still be down: requests then get 503 until it
    /// is back, and /readyz says so.
    pub async fn build(config: IngestConfig) -> anyhow::Result<Self> {
        let metrics = payhook_shared::telemetry::metrics();
        let pool = payhook_shared::db::connect_and_migrate(&config.database)
            .await
            .context("PostgreSQL")?;
        let broker = Arc::new(Broker::new(&config.broker));
        if let Err(e) = broker.channel().await {
            tracing::warn!(error = %e, "RabbitMQ not reachable at start; answering 503 until it is");
        }

        let (intake, intake_tasks) = Intake::start(
            pool.clone(),
            broker.clone(),
            IntakeConfig {
                batch_max: config.ingest.ingest_batch_max,
                confirm_timeout: config.ingest.ingest_timeout,
                accept_without_broker: config.ingest.ingest_accept_without_broker,
            },
        );
        let providers = providers::configured(&config.secrets);
        let names: Vec<&str> = providers.iter().map(|p| p.name()).collect();
        tracing::info!(providers = ?names, "webhook routes mounted");
        for name in &names {
            // From zero at start, so the alert's increase() sees the first rejection.
            metrics::counter!("payhook_rejected_deliveries_total", "provider" => *name)
                .increment(0);
        }

        let tls = match (
            &config.ingest.ingest_tls_cert,
            &config.ingest.ingest_tls_key,
        ) {
            (Some(cert), Some(key)) => Some(
                tls::server_config(cert, key, config.ingest.ingest_client_ca.as_deref())
                    .context("TLS")?,
            ),
            _ => None,
        };
        let state = web::Data::new(webhook::WebhookState {
            intake: intake.clone(),
            pool: pool.clone(),
            client_ca_required: config.ingest.ingest_client_ca.is_some(),
            timeout: config.ingest.ingest_timeout,
        });

        let listener = TcpListener::bind(config.ingest.ingest_addr)
            .with_context(|| format!("binding INGEST_ADDR {}", config.ingest.ingest_addr))?;
        let webhook_addr = listener.local_addr()?;
        let verifier = tls.as_ref().and_then(|(_, v)| v.clone());
        let server = HttpServer::new(move || {
            let mut app = App::new().app_data(state.clone());
            for p in &providers {
                let provider = web::Data::new(p.clone() as Arc<dyn Provider>);
                for path in webhook::paths(p.name()) {
                    app = app.service(
                        web::resource(path)
                            .app_data(provider.clone())
                            .route(web::post().to(webhook::receive)),
                    );
                }
            }
            app.default_service(web::to(not_found))
        })
        .on_connect(tls::on_connect(verifier))
        .disable_signals()
        .shutdown_timeout(30);
        let webhook_server = match tls {
            Some((config, _)) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();

        let ops_listener = TcpListener::bind(config.ingest.ingest_ops_addr).with_context(|| {
            format!("binding INGEST_OPS_ADDR {}", config.ingest.ingest_ops_addr)
        })?;
        let ops_addr = ops_listener.local_addr()?;
        let admin_state = web::Data::new(admin::AdminState {
            pool: pool.clone(),
            broker: broker.clone(),
            intake,
            timeout: config.ingest.ingest_timeout,
            token: config.admin_token.clone(),
        });
        if config.admin_token.is_none() {
            tracing::info!("PAYHOOK_ADMIN_TOKEN unset: the admin API is off");
        }
        let ops_state = web::Data::new(ops::OpsState {
            pool,
            broker: broker.clone(),
            metrics,
        });
        let ops_server = HttpServer::new(move || {
            App::new()
                .app_data(ops_state.clone())
                .app_data(admin_state.clone())
                .route("/healthz", web::get().to(ops::healthz))
                .route("/readyz", web::get().to(ops::readyz))
                .route("/metrics", web::get().to(ops::metrics))
                .configure(admin::configure)
                .default_service(web::to(not_found))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(ops_listener)?
        .run();

        Ok(Self {
            webhook_addr,
            ops_addr,
            webhook_server,
            ops_server,
            intake_tasks,
            broker,
        })
    }

    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook_addr
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish (they are answered only after their batch is stored and confirmed) and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(webhooks = %self.webhook_addr, ops = %self.ops_addr, "payhook-ingest listening");
        let webhook_handle = self.webhook_server.handle();
        let ops_handle = self.ops_server.handle();
        let stopper = tokio::spawn(stop_on(shutdown, vec![webhook_handle, ops_handle]));
        let (a, b) = tokio::join!(self.webhook_server, self.ops_server);
        stopper.abort();
        a?;
        b?;
        // The servers are gone, and with them every handle to the intake: its tasks drain.
        if tokio::time::timeout(Duration::from_secs(30), self.intake_tasks)
            .await
            .is_err()
        {
            tracing::warn!("intake did not drain within 30 s");
        }
        self.broker.close().await;
        tracing::info!("payhook-ingest stopped");
        Ok(())
    }
}

async fn stop_on(shutdown: CancellationToken, handles: Vec<ServerHandle>) {
    shutdown.cancelled().await;
    for h in handles {
        h.stop(true).await;
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": "not found" }))
}
