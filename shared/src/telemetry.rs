//! Logs (text, or JSON with `LOG_FORMAT=json`) and the Prometheus recorder. Log lines carry
//! ids and outcomes, never a secret, a body, or personal data.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber; a second call (tests) is a no-op.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,amq_protocol=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide Prometheus recorder (installed once; later calls return the same handle).
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("payhook_ingest_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                    )
                })
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "payhook_webhook_requests_total",
        "Webhook requests by provider and outcome"
    );
    describe_histogram!(
        "payhook_webhook_request_seconds",
        Unit::Seconds,
        "Webhook request latency"
    );
    describe_histogram!(
        "payhook_publish_confirm_seconds",
        Unit::Seconds,
        "Time to publish a batch and receive the broker's confirms"
    );
    describe_histogram!(
        "payhook_ingest_commit_seconds",
        Unit::Seconds,
        "Time to commit one ingest batch"
    );
    describe_histogram!(
        "payhook_ingest_batch_size",
        "Deliveries per group-commit batch"
    );
    describe_counter!(
        "payhook_events_processed_total",
        "Events handled by workers, by outcome"
    );
    describe_histogram!(
        "payhook_event_processing_seconds",
        Unit::Seconds,
        "Time to apply one event"
    );
    describe_counter!("payhook_retries_total", "Events sent to a delay queue");
    describe_counter!("payhook_dead_letters_total", "Events that went dead");
    describe_gauge!("payhook_queue_depth", "Messages ready in each queue");
    describe_gauge!(
        "payhook_outbox_oldest_unpublished_seconds",
        "Age of the oldest event or domain event not yet published"
    );
    describe_gauge!(
        "payhook_pending_payments",
        "Payments still pending or submitted"
    );
    describe_counter!(
        "payhook_reconciler_runs_total",
        "Reconciler runs by outcome"
    );
    describe_counter!(
        "payhook_rejected_deliveries_total",
        "Genuinely signed deliveries refused for their content and kept in rejected_deliveries"
    );
}
