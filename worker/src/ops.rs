//! The ops listener: liveness, readiness and Prometheus metrics (internal network only).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::startup::Shared;

pub struct OpsState {
    pub shared: Arc<Shared>,
    pub metrics: PrometheusHandle,
}

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// PostgreSQL answers and a consumer is registered on the events queue.
pub async fn readyz(state: web::Data<OpsState>) -> HttpResponse {
    let postgres = payhook_shared::db::ping(&state.shared.pool).await;
    let consuming = state.shared.consuming.load(Ordering::Relaxed);
    let body = serde_json::json!({ "postgres": postgres, "rabbitmq": consuming });
    if postgres && consuming {
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

pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": "not found" }))
}
