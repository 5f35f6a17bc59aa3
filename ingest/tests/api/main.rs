//! Ingest, end to end: real PostgreSQL, real RabbitMQ (started by `scripts/test`), one
//! database and one AMQP prefix per test.

mod admin;
mod bad_input;
mod bank;
mod delivery;
mod group_commit;
mod helpers;
mod legacy_paths;
mod ops;
mod outages;
mod process;
mod rejected;
mod signatures;
mod tls;
