//! The nodes of one RabbitMQ cluster (DESIGN.md, "Scale-out"): `AMQP_URL` lists them,
//! comma-separated. Every connection payhook opens (ingest's publisher, a worker's consumer,
//! the relays, the queue-depth poller) goes through [`Nodes::connect`]: the node that answered
//! last is tried first, then the others in list order, so a process moves to the next node
//! when its node is lost and needs no restart. Any node serves: the topology is declared on
//! whichever answers, and quorum queues are replicated on every node of the cluster.
//!
//! A URL carries the broker's password: only `host:port` is ever logged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

/// How long one node may take to accept a connection before the next is tried.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster's nodes, and which one answered last.
#[derive(Debug)]
pub struct Nodes {
    urls: Vec<String>,
    last: AtomicUsize,
}

impl Nodes {
    /// The nodes of a comma-separated list (blanks around each URL ignored). `AMQP_URL` is
    /// checked when settings are read ([`parse_list`]).
    pub fn new(list: &str) -> Self {
        let urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        Self {
            urls,
            last: AtomicUsize::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// A connection to the first node that answers, starting with the one that answered last.
    /// The error is the last node's.
    pub async fn connect(&self) -> Result<Connection, String> {
        let n = self.urls.len();
        if n == 0 {
            return Err("AMQP_URL lists no node".into());
        }
        let start = self.last.load(Ordering::Relaxed) % n;
        let mut last_error = String::new();
        for i in (0..n).map(|k| (start + k) % n) {
            let url = &self.urls[i];
            let node = host_port(url);
            let attempt = tokio::time::timeout(
                NODE_CONNECT_TIMEOUT,
                Connection::connect(url, ConnectionProperties::default()),
            )
            .await;
            match attempt {
                Ok(Ok(conn)) => {
                    if self.last.swap(i, Ordering::Relaxed) != i && n > 1 {
                        tracing::info!(node = %node, "connected to RabbitMQ node");
                    }
                    return Ok(conn);
                }
                Ok(Err(e)) => last_error = format!("{node}: {e}"),
                Err(_) => last_error = format!("{node}: connect timed out"),
            }
            if n > 1 {
                tracing::warn!(node = %node, error = %last_error, "RabbitMQ node not answering; trying the next");
            }
        }
        Err(last_error)
    }
}

/// `host:port` of an AMQP URL, for logs (never the credentials).
pub fn host_port(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("?"),
            u.port()
                .unwrap_or(if u.scheme() == "amqps" { 5671 } else { 5672 })
        ),
        Err(_) => "?".into(),
    }
}

/// Checks a comma-separated list of AMQP URLs (`AMQP_URL`): at least one, each valid.
pub fn parse_list(s: &str, one: impl Fn(&str) -> Result<String, String>) -> Result<String, String> {
    let nodes = Nodes::new(s);
    if nodes.is_empty() {
        return Err("no AMQP URL given".into());
    }
    for (i, url) in nodes.urls.iter().enumerate() {
        one(url).map_err(|e| format!("node {} of the list: {e}", i + 1))?;
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_on_commas_and_blanks_ignored() {
        let n = Nodes::new("amqp://a:5672/%2f, amqp://b:5673/%2f,,amqp://c/%2f ");
        assert_eq!(
            n.urls,
            ["amqp://a:5672/%2f", "amqp://b:5673/%2f", "amqp://c/%2f"]
        );
    }

    #[test]
    fn logs_name_the_node_never_the_password() {
        assert_eq!(
            host_port("amqp://guest:s3cret@rabbit-2:5673/%2f"),
            "rabbit-2:5673"
        );
        assert_eq!(host_port("amqps://u:p@r/%2f"), "r:5671");
        assert!(!host_port("amqp://guest:s3cret@h/%2f").contains("s3cret"));
    }

    #[tokio::test]
    async fn connect_moves_past_a_node_that_refuses_and_says_which_failed_last() {
        // Two closed ports: both refuse, and the error names the last one tried.
        let closed = |_: ()| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (a, b) = (closed(()), closed(()));
        let nodes = Nodes::new(&format!(
            "amqp://guest:pw@127.0.0.1:{a}/%2f,amqp://guest:pw@127.0.0.1:{b}/%2f"
        ));
        let err = nodes.connect().await.unwrap_err();
        assert!(err.starts_with(&format!("127.0.0.1:{b}")), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }
}
