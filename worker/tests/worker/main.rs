//! The worker through RabbitMQ and PostgreSQL (real ones, from `scripts/test`), with a fake
//! gateway API on loopback: events are stored and published exactly as ingest does, a worker
//! consumes them, and each test checks the rows and the broker's queues.

mod arrival_order;
mod bank;
mod batches;
mod cli;
mod delivery;
mod erasure;
mod failures;
mod gocardless_mandates;
mod gocardless_payments;
mod nodes;
mod other_gateways;
mod process;
mod prune;
mod reconciler;
mod support;
