//! payhook's library, shared by `payhook-ingest` and `payhook-worker`.
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`config`] | typed settings (flags and env vars) |
//! | [`providers`] | one file per gateway: verify a delivery, split it into events |
//! | [`json`] | strict JSON parsing (duplicate keys refused) |
//! | [`db`] | PostgreSQL pool, database creation, migrations |
//! | [`amqp`] | RabbitMQ topology and a confirmed publisher |
//! | [`intake`] | group commit: persist deliveries, publish their events, then answer |
//! | [`telemetry`] | logs and Prometheus metrics |
//! | [`shutdown`] | the one signal passed down for graceful shutdown |

pub mod amqp;
pub mod config;
pub mod db;
pub mod intake;
pub mod json;
pub mod providers;
pub mod shutdown;
pub mod telemetry;
