//! RabbitMQ: the names and declaration of payhook's topology, and a publisher that waits for
//! the broker's confirms. One connection per process, re-opened on the next use after it
//! breaks, so a broker restart costs the requests in flight a 503 and nothing more.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::config::BrokerSettings;

/// The retry delays, in order: attempt N waits `RETRY_DELAYS[N-1]`, then the event is dead.
pub const RETRY_DELAYS: [(&str, Duration); 6] = [
    ("1s", Duration::from_secs(1)),
    ("5s", Duration::from_secs(5)),
    ("30s", Duration::from_secs(30)),
    ("2m", Duration::from_secs(120)),
    ("10m", Duration::from_secs(600)),
    ("1h", Duration::from_secs(3600)),
];

/// The delay attempt number `attempt` (1 for the first failure) waits, or `None` once the
/// delays are used up (the event is then dead).
pub fn retry_delay(attempt: i64) -> Option<&'static (&'static str, Duration)> {
    usize::try_from(attempt.checked_sub(1)?)
        .ok()
        .and_then(|i| RETRY_DELAYS.get(i))
}

/// Redeliveries after which the quorum queue dead-letters a message that keeps crashing
/// workers (a poison message) instead of looping forever.
pub const DELIVERY_LIMIT: i64 = 10;

/// The header on a retried message naming its delay queue (`5s`); the retry exchange is a
/// headers exchange, so the message keeps its original routing key for the way back. No
/// `x-` prefix: a headers exchange ignores such headers when matching, and the copy would
/// then go to EVERY delay queue.
pub const RETRY_HEADER: &str = "payhook-retry";

/// The header name of the first releases, whose bindings [`declare_topology`] removes.
pub const LEGACY_RETRY_HEADER: &str = "x-payhook-retry";

/// Longest a (re)connection may take, topology declared, before the node counts as away.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a clean close may wait for the broker.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every exchange and queue name, behind the prefix (`payhook` → `payhook.events`).
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    /// Topic exchange the ingest publishes to; routing key `<provider>.<event_type>`.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// The quorum queue workers consume.
    pub fn events_queue(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// Headers exchange in front of the delay queues.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }
    pub fn retry_queue(&self, label: &str) -> String {
        format!("{}.retry.{label}", self.prefix)
    }
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// Topic exchange of domain events for downstream systems.
    pub fn domain_exchange(&self) -> String {
        format!("{}.domain", self.prefix)
    }
    /// Every queue, for the queue-depth gauge.
    pub fn all_queues(&self) -> Vec<String> {
        let mut q = vec![self.events_queue(), self.dead_queue()];
        q.extend(RETRY_DELAYS.iter().map(|(l, _)| self.retry_queue(l)));
        q
    }
}

/// The body of a message on the events exchange. The worker reads the payload from
/// PostgreSQL, so the message stays small and the row stays the one source of truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMessage {
    pub id: i64,
    pub provider: String,
    pub external_id: String,
    pub event_type: String,
}

/// The most bytes AMQP carries in a routing key or a `message_id` (a short string). lapin
/// panics on a longer one, and a panic in ingest's publisher task would stop every delivery,
/// so the two are bounded here whatever a gateway's ids (and `PAYHOOK_MAX_ID_BYTES`) allow.
pub const SHORT_STRING_MAX: usize = 255;

impl EventMessage {
    /// `<provider>.<event_type>`, cut to [`SHORT_STRING_MAX`] bytes (topic bindings see a
    /// prefix of an over-long type; payhook's own queue binds `#`).
    pub fn routing_key(&self) -> String {
        let mut key = format!("{}.{}", self.provider, self.event_type);
        if key.len() > SHORT_STRING_MAX {
            let mut cut = SHORT_STRING_MAX;
            while !key.is_char_boundary(cut) {
                cut -= 1;
            }
            key.truncate(cut);
        }
        key
    }

    /// `<provider>:<external_id>`; where that is longer than [`SHORT_STRING_MAX`] bytes,
    /// `<provider>:sha256:<hex of the external id>`, still one id per event.
    pub fn message_id(&self) -> String {
        let id = format!("{}:{}", self.provider, self.external_id);
        if id.len() <= SHORT_STRING_MAX {
            return id;
        }
        use sha2::Digest;
        format!(
            "{}:sha256:{}",
            self.provider,
            hex::encode(sha2::Sha256::digest(self.external_id.as_bytes()))
        )
    }
}

/// A message to publish with confirms: where, what, and its properties.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: String,
    pub body: Vec<u8>,
    pub headers: Option<FieldTable>,
}

impl Outgoing {
    pub fn event(names: &Names, msg: &EventMessage) -> Self {
        Self {
            exchange: names.events_exchange(),
            routing_key: msg.routing_key(),
            message_id: msg.message_id(),
            body: serde_json::to_vec(msg).expect("an EventMessage always serializes"),
            headers: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker refused the message: {0}")]
    Refused(String),
    #[error("no confirm from the broker within {0:?}")]
    Timeout(Duration),
}

/// A lazily (re)connected channel in confirm mode, with the topology declared on it.
pub struct Broker {
    nodes: crate::amqp_nodes::Nodes,
    names: Names,
    state: Mutex<Option<(Connection, Channel)>>,
}

impl Broker {
    pub fn new(settings: &BrokerSettings) -> Self {
        Self {
            nodes: crate::amqp_nodes::Nodes::new(&settings.amqp_url),
            names: Names::new(&settings.amqp_prefix),
            state: Mutex::new(None),
        }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The current channel, connecting (and declaring the topology) if there is none or the
    /// old one broke.
    pub async fn channel(&self) -> Result<Channel, PublishError> {
        let mut state = self.state.lock().await;
        if let Some((conn, ch)) = state.as_ref() {
            if conn.status().connected() && ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        *state = None;
        // Bounded as a whole: a node that accepts the connection but never finishes declaring
        // (restarting, or cut off from its cluster's majority) would otherwise hold this lock,
        // and with it every publish and the shutdown, for ever.
        let (conn, ch) = tokio::time::timeout(SETUP_TIMEOUT, self.open())
            .await
            .map_err(|_| {
                PublishError::Unavailable(format!(
                    "connecting and declaring the topology took over {SETUP_TIMEOUT:?}"
                ))
            })??;
        *state = Some((conn, ch.clone()));
        Ok(ch)
    }

    /// A connection to a node that answers, its channel in confirm mode, the topology declared.
    async fn open(&self) -> Result<(Connection, Channel), PublishError> {
        let conn = self
            .nodes
            .connect()
            .await
            .map_err(PublishError::Unavailable)?;
        let ch = conn.create_channel().await.map_err(unavailable)?;
        declare_topology(&ch, &self.names)
            .await
            .map_err(unavailable)?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        Ok((conn, ch))
    }

    /// Connects now, retrying for about half a minute (for start-up beside the broker).
    pub async fn connect_with_retry(&self) -> Result<(), PublishError> {
        use backon::Retryable;
        (|| async { self.channel().await.map(drop) })
            .retry(crate::db::startup_backoff())
            .notify(|e, after| tracing::warn!(error = %e, retry_in = ?after, "RabbitMQ not reachable yet"))
            .await
    }

    /// Publishes every message (persistent, mandatory) and waits for all their confirms:
    /// `Ok` only when the broker acked each one and routed it to a queue.
    pub async fn publish_confirmed(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
    ) -> Result<(), PublishError> {
        self.publish(messages, timeout, true).await
    }

    /// Like [`Broker::publish_confirmed`], but not `mandatory`: a message no queue is bound
    /// for is dropped by the broker and still counts as published. For the domain exchange,
    /// where downstream systems come and go and nobody listening is not an error.
    pub async fn publish_confirmed_unrouted_ok(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
    ) -> Result<(), PublishError> {
        self.publish(messages, timeout, false).await
    }

    async fn publish(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let pending = self.start_publish(messages, timeout, mandatory).await?;
        self.confirmed(pending, timeout).await
    }

    /// The first half of [`Broker::publish_confirmed`]: hands every message (persistent,
    /// mandatory) to the broker without waiting for its confirms, so a caller can send the
    /// next batch while these are confirmed. Finish with [`Broker::confirmed`].
    pub async fn publish_unconfirmed(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
    ) -> Result<PendingConfirms, PublishError> {
        self.start_publish(messages, timeout, true).await
    }

    async fn start_publish(
        &self,
        messages: &[Outgoing],
        timeout: Duration,
        mandatory: bool,
    ) -> Result<PendingConfirms, PublishError> {
        if messages.is_empty() {
            return Ok(PendingConfirms(Vec::new()));
        }
        let ch = self.channel().await?;
        let result =
            match tokio::time::timeout(timeout, publish_all(&ch, messages, mandatory)).await {
                Ok(r) => r,
                Err(_) => Err(PublishError::Timeout(timeout)),
            };
        self.reset_if_broken(&result).await;
        result.map(PendingConfirms)
    }

    /// Waits for the broker's confirms of messages handed over earlier: `Ok` only when it
    /// acked each one and routed it to a queue.
    pub async fn confirmed(
        &self,
        pending: PendingConfirms,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let result = match tokio::time::timeout(timeout, await_confirms(pending.0)).await {
            Ok(r) => r,
            Err(_) => Err(PublishError::Timeout(timeout)),
        };
        self.reset_if_broken(&result).await;
        result
    }

    async fn reset_if_broken<T>(&self, result: &Result<T, PublishError>) {
        if matches!(
            result,
            Err(PublishError::Unavailable(_) | PublishError::Timeout(_))
        ) {
            self.reset().await;
        }
    }

    /// True when the broker answers a round trip now (for /readyz): a cached "connected"
    /// status alone can lag a dead socket by a heartbeat interval.
    pub async fn ping(&self) -> bool {
        let Ok(ch) = self.channel().await else {
            return false;
        };
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let probe = ch.exchange_declare(
            self.names.events_exchange().as_str().into(),
            ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        );
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(())) => true,
            _ => {
                self.reset().await;
                false
            }
        }
    }

    /// Forgets the connection so the next use opens a new one.
    pub async fn reset(&self) {
        if let Some((conn, _)) = self.state.lock().await.take() {
            // A close waits for the broker's answer, which a half-dead node never sends.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, "reset".into())).await;
        }
    }

    /// Closes the connection cleanly (shutdown).
    pub async fn close(&self) {
        self.reset().await;
    }
}

async fn publish_all(
    ch: &Channel,
    messages: &[Outgoing],
    mandatory: bool,
) -> Result<Vec<lapin::PublisherConfirm>, PublishError> {
    // Every publish is handed to the channel before any is awaited: lapin frames them
    // back to back instead of one wake-up of its I/O loop per message.
    let publishes = messages.iter().map(|m| {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(m.message_id.as_str()));
        if let Some(h) = &m.headers {
            props = props.with_headers(h.clone());
        }
        ch.basic_publish(
            m.exchange.as_str().into(),
            m.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            &m.body,
            props,
        )
    });
    futures::future::try_join_all(publishes)
        .await
        .map_err(unavailable)
}

/// Confirms of published messages not yet awaited (see [`Broker::publish_unconfirmed`]).
pub struct PendingConfirms(Vec<lapin::PublisherConfirm>);

impl PendingConfirms {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

async fn await_confirms(confirms: Vec<lapin::PublisherConfirm>) -> Result<(), PublishError> {
    // Confirms are awaited together: one round trip for the whole batch, not one per message.
    for c in futures::future::join_all(confirms).await {
        match c.map_err(unavailable)? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(returned)) => {
                return Err(PublishError::Refused(format!(
                    "unroutable: {}",
                    returned.reply_text
                )))
            }
            Confirmation::Nack(_) => return Err(PublishError::Refused("nacked".into())),
            Confirmation::NotRequested => {
                return Err(PublishError::Refused("channel not in confirm mode".into()))
            }
        }
    }
    Ok(())
}

fn unavailable(e: lapin::Error) -> PublishError {
    PublishError::Unavailable(e.to_string())
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Declares every exchange, queue and binding; idempotent, run on every (re)connect.
pub async fn declare_topology(ch: &Channel, names: &Names) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let queue_opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let no_args = FieldTable::default;

    for (name, kind) in [
        (names.events_exchange(), ExchangeKind::Topic),
        (names.retry_exchange(), ExchangeKind::Headers),
        (names.dead_letter_exchange(), ExchangeKind::Fanout),
        (names.domain_exchange(), ExchangeKind::Topic),
    ] {
        ch.exchange_declare(name.as_str().into(), kind, durable, no_args())
            .await?;
    }

    let mut events_args = FieldTable::default();
    events_args
        .insert("x-queue-type".into(), long_str("quorum"))
        .insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        )
        .insert(
            "x-dead-letter-exchange".into(),
            long_str(&names.dead_letter_exchange()),
        );
    ch.queue_declare(
        names.events_queue().as_str().into(),
        queue_opts,
        events_args,
    )
    .await?;
    ch.queue_bind(
        names.events_queue().as_str().into(),
        names.events_exchange().as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        no_args(),
    )
    .await?;

    let mut dead_args = FieldTable::default();
    dead_args.insert("x-queue-type".into(), long_str("quorum"));
    ch.queue_declare(names.dead_queue().as_str().into(), queue_opts, dead_args)
        .await?;
    ch.queue_bind(
        names.dead_queue().as_str().into(),
        names.dead_letter_exchange().as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        no_args(),
    )
    .await?;

    for (label, ttl) in RETRY_DELAYS {
        let queue = names.retry_queue(label);
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_str("quorum"))
            .insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(ttl.as_millis() as i64),
            )
            // No dead-letter routing key: the message goes back with the key it was sent with.
            .insert(
                "x-dead-letter-exchange".into(),
                long_str(&names.events_exchange()),
            );
        ch.queue_declare(queue.as_str().into(), queue_opts, args)
            .await?;
        let mut bind = FieldTable::default();
        bind.insert("x-match".into(), long_str("all"))
            .insert(RETRY_HEADER.into(), long_str(label));
        ch.queue_bind(
            queue.as_str().into(),
            names.retry_exchange().as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            bind,
        )
        .await?;
        // Earlier builds bound on `x-payhook-retry`, a header the exchange ignores, so that
        // binding matched every retry: remove it (a no-op where it never existed).
        let mut legacy = FieldTable::default();
        legacy
            .insert("x-match".into(), long_str("all"))
            .insert(LEGACY_RETRY_HEADER.into(), long_str(label));
        ch.queue_unbind(
            queue.as_str().into(),
            names.retry_exchange().as_str().into(),
            "".into(),
            legacy,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod short_string_tests {
    use super::*;

    fn msg(external_id: &str, event_type: &str) -> EventMessage {
        EventMessage {
            id: 1,
            provider: "paystack".into(),
            external_id: external_id.into(),
            event_type: event_type.into(),
        }
    }

    #[test]
    fn ids_and_types_that_fit_are_sent_as_they_are() {
        let m = msg("charge.success:42", "charge.success");
        assert_eq!(m.message_id(), "paystack:charge.success:42");
        assert_eq!(m.routing_key(), "paystack.charge.success");
    }

    #[test]
    fn over_long_ids_and_types_stay_within_what_amqp_carries_and_stay_distinct() {
        let (a, b) = (
            msg(&"é".repeat(300), &"ü".repeat(300)),
            msg(&"e".repeat(300), "x"),
        );
        for m in [&a, &b] {
            assert!(m.message_id().len() <= SHORT_STRING_MAX);
            assert!(m.routing_key().len() <= SHORT_STRING_MAX);
            // lapin's own conversion is what panicked on longer strings.
            let _ = ShortString::from(m.message_id());
            let _ = ShortString::from(m.routing_key());
        }
        assert_ne!(a.message_id(), b.message_id());
        assert!(a.message_id().starts_with("paystack:sha256:"));
    }
}
