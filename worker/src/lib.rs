//! payhook-worker: consumes `<prefix>.events`, applies the domain rules (in
//! `payhook_shared::domain`) once per event, routes failures to the delay queues and dead
//! letters, reconciles (one worker at a time), and serves `/metrics`, `/healthz`, `/readyz`.
//! The library holds the whole worker so tests run it in-process; `main.rs` only parses the
//! command line.
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`settings`] | typed settings (flags and env vars) |
//! | [`startup`] | build the worker from its settings, run it until the shutdown signal |
//! | [`consumer`] | the consume loop: prefetch, concurrency, reconnects, graceful stop |
//! | [`routing`] | one delivery: process, then ack, retry through a delay queue, or dead-letter |
//! | [`ops`] | the ops listener |
//! | [`queue_depth`] | the queue-depth gauge, polled |
//! | [`replay`] | the `replay` subcommand |
//! | [`reconciler`] | one worker at a time: relays the unpublished events and domain outbox, checks pending payments; `reconcile --once` |

pub mod consumer;
pub mod ops;
pub mod queue_depth;
pub mod reconciler;
pub mod replay;
pub mod routing;
pub mod settings;
pub mod startup;

pub use settings::{WorkerConfig, WorkerSettings};
pub use startup::Worker;
