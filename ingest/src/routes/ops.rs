//! The ops listener: liveness, readiness and Prometheus metrics (internal network only).

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use payhook_shared::amqp::Broker;
use sqlx::PgPool;

pub struct OpsState {
    pub pool: PgPool,
    pub broker: Arc<Broker>,
    pub metrics: PrometheusHandle,
}

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// PostgreSQL and RabbitMQ are both reachable: webhooks can be accepted.
pub async fn readyz(state: web::Data<OpsState>) -> HttpResponse {
    let (postgres, rabbitmq) =
        tokio::join!(payhook_shared::db::ping(&state.pool), state.broker.ping());
    let body = serde_json::json!({ "postgres": postgres, "rabbitmq": rabbitmq });
    if postgres && rabbitmq {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<OpsState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
