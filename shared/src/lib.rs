//! payhook's library, shared by `payhook-ingest` and `payhook-worker`.
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`config`] | typed settings (flags and env vars) |
//! | [`providers`] | one file per gateway: verify a delivery, split it into events |
//! | [`json`] | strict JSON parsing (duplicate keys refused) |
//! | [`db`] | PostgreSQL pool, database creation, migrations |
//! | [`amqp`] | RabbitMQ topology and a confirmed publisher |
//! | [`amqp_nodes`] | the nodes of a RabbitMQ cluster: connect to one that answers, the next on loss |
//! | [`money`] | decimal amounts to integer minor units, exactly |
//! | [`domain`] | one handler per event type: members, payments, ledger, domain outbox |
//! | [`erasure`] | a member's right to be forgotten: personal fields cleared everywhere they are stored |
//! | [`gateway`] | the gateways' APIs (enrichment, reconciliation) |
//! | `bank_api` | GoCardless's Bank Account Data API (token, pacing): bank transactions by id |
//! | [`bank`] | bank transactions and their matches, for operators (matching: `domain::bank_matching`) |
//! | [`intake`] | group commit: persist deliveries, publish their events, then answer |
//! | [`lookup`] | operator look-ups: search, timelines, counts by status, expected payments |
//! | [`rejected`] | genuine deliveries payhook could not read: kept, listed, reparsed |
//! | [`replay`] | put events back in line and publish them again (CLI and admin API) |
//! | [`telemetry`] | logs and Prometheus metrics |
//! | [`shutdown`] | the one signal passed down for graceful shutdown |
//! | `testing` | test support: a database and AMQP prefix per test, fault-injecting proxy |

pub mod amqp;
pub mod amqp_nodes;
pub mod bank;
pub mod bank_api;
pub mod config;
pub mod db;
pub mod domain;
pub mod erasure;
pub mod gateway;
pub mod intake;
pub mod json;
pub mod lookup;
pub mod money;
pub mod providers;
pub mod rejected;
pub mod replay;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
