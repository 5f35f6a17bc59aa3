//! payhook-ingest: the webhook receiver. Thin on purpose: routes, extractors, the error→HTTP
//! mapping, TLS and the ops endpoints; verification, storage and publishing live in
//! `payhook-shared`.

pub mod error;
pub mod routes;
pub mod startup;
pub mod tls;

pub use startup::{Application, IngestConfig};
