//! Test support (feature `testing`): each test gets its own database and its own AMQP prefix
//! on the real PostgreSQL and RabbitMQ that `scripts/test` starts, a TCP proxy to cut either
//! of them mid-test, and a way to read what was published.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::amqp::Names;
use crate::config::{BrokerSettings, DatabaseSettings};

/// The test stack's defaults (`scripts/services.sh up --stack test`).
pub const TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:55432/payhook";
pub const TEST_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:55672/%2f";

/// A name no other test (in this or another process) uses.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// One test's private database and broker namespace.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
}

impl TestEnv {
    /// A fresh database name and AMQP prefix on the test stack (env `DATABASE_URL` and
    /// `AMQP_URL` point elsewhere if set). The database is created on first connect.
    pub fn new() -> Self {
        let base = std::env::var("DATABASE_URL").unwrap_or_else(|_| TEST_DATABASE_URL.into());
        let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
        url.set_path(&unique_name("payhook_test"));
        Self {
            database: DatabaseSettings {
                database_url: url.to_string(),
                database_max_connections: 8,
            },
            broker: BrokerSettings {
                amqp_url: std::env::var("AMQP_URL").unwrap_or_else(|_| TEST_AMQP_URL.into()),
                amqp_prefix: unique_name("t"),
            },
        }
    }

    pub fn names(&self) -> Names {
        Names::new(&self.broker.amqp_prefix)
    }

    /// A pool on this test's database (migrated).
    pub async fn pool(&self) -> PgPool {
        crate::db::connect_and_migrate(&self.database)
            .await
            .expect("the test database is reachable (run scripts/test)")
    }

    /// The same settings, but reaching PostgreSQL through `proxy`.
    pub fn database_via(&self, proxy: &Proxy) -> DatabaseSettings {
        let mut url = url::Url::parse(&self.database.database_url).unwrap();
        url.set_port(Some(proxy.addr().port())).unwrap();
        DatabaseSettings {
            database_url: url.to_string(),
            ..self.database.clone()
        }
    }

    /// The same settings, but reaching RabbitMQ through `proxy`.
    pub fn broker_via(&self, proxy: &Proxy) -> BrokerSettings {
        let mut url = url::Url::parse(&self.broker.amqp_url).unwrap();
        url.set_port(Some(proxy.addr().port())).unwrap();
        BrokerSettings {
            amqp_url: url.to_string(),
            ..self.broker.clone()
        }
    }

    /// Host and port of the real PostgreSQL.
    pub fn database_target(&self) -> String {
        host_port(&self.database.database_url)
    }

    /// Host and port of the real RabbitMQ.
    pub fn broker_target(&self) -> String {
        host_port(&self.broker.amqp_url)
    }

    /// Deletes this test's queues and exchanges, blocking (for `Drop`): every quorum queue
    /// holds file handles in RabbitMQ, and hundreds left behind exhaust the node.
    pub fn delete_topology_blocking(&self) {
        let env = self.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(env.delete_topology());
        })
        .join();
    }

    async fn delete_topology(&self) {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let Some(conn) = self.connect().await else {
            return;
        };
        let names = self.names();
        if let Ok(ch) = conn.create_channel().await {
            for q in names.all_queues() {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for x in [
                names.events_exchange(),
                names.retry_exchange(),
                names.dead_letter_exchange(),
                names.domain_exchange(),
            ] {
                let _ = ch
                    .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        let _ = conn.close(200, "done".into()).await;
    }

    /// A connection to the test broker, or `None` after 5 s (a test must fail, not hang).
    async fn connect(&self) -> Option<Connection> {
        let connect = Connection::connect(&self.broker.amqp_url, ConnectionProperties::default());
        tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .ok()?
            .ok()
    }

    /// Takes up to `max` messages from `queue`, waiting at most `wait` for each; acks them.
    pub async fn take_messages(&self, queue: &str, max: usize, wait: Duration) -> Vec<Message> {
        let conn = self
            .connect()
            .await
            .expect("RabbitMQ is reachable (run scripts/test)");
        let ch = conn.create_channel().await.unwrap();
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                unique_name("test").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("the queue exists");
        let mut out = Vec::new();
        while out.len() < max {
            match tokio::time::timeout(wait, consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    out.push(Message {
                        routing_key: d.routing_key.to_string(),
                        exchange: d.exchange.to_string(),
                        message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
                        persistent: *d.properties.delivery_mode() == Some(2),
                        body: serde_json::from_slice(&d.data).unwrap_or(serde_json::Value::Null),
                    });
                    d.ack(BasicAckOptions::default()).await.unwrap();
                }
                _ => break,
            }
        }
        let _ = conn.close(200, "done".into()).await;
        out
    }

    /// Messages ready in `queue` (0 if it does not exist).
    pub async fn queue_len(&self, queue: &str) -> u32 {
        let conn = self
            .connect()
            .await
            .expect("RabbitMQ is reachable (run scripts/test)");
        let ch = conn.create_channel().await.unwrap();
        let n = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count())
            .unwrap_or(0);
        let _ = conn.close(200, "done".into()).await;
        n
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// A message read back from RabbitMQ.
#[derive(Debug, Clone)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub persistent: bool,
    pub body: serde_json::Value,
}

fn host_port(u: &str) -> String {
    let url = url::Url::parse(u).unwrap();
    format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap_or(match url.scheme() {
            "amqp" => 5672,
            _ => 5432,
        })
    )
}

/// A loopback TCP proxy in front of PostgreSQL or RabbitMQ. `cut()` drops every open
/// connection and refuses new ones (the server "goes away"); `restore()` lets them through
/// again. The real server keeps running: this tests our side of an outage.
pub struct Proxy {
    addr: SocketAddr,
    up: Arc<Mutex<bool>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(Mutex::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !*u.lock().unwrap() {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Self {
            addr,
            up,
            conns,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        *self.up.lock().unwrap() = false;
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn restore(&self) {
        *self.up.lock().unwrap() = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
