//! `payhook_queue_depth{queue}`: messages ready in the events, delay and dead queues, read
//! every few seconds with a passive declare on a connection of its own (a failed passive
//! declare closes its channel; it must not take the consumer's with it).

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use std::sync::Arc;

use lapin::Connection;
use payhook_shared::amqp::Names;
use payhook_shared::amqp_nodes::Nodes;
use payhook_shared::shutdown::CancellationToken;

pub async fn poll(nodes: Arc<Nodes>, names: Names, every: Duration, shutdown: CancellationToken) {
    let mut conn: Option<Connection> = None;
    loop {
        if conn.as_ref().is_none_or(|c| !c.status().connected()) {
            conn = connect(&nodes, &names).await.ok();
        }
        if let Some(c) = &conn {
            if let Err(e) = sample(c, &names).await {
                tracing::debug!(error = %e, "queue depth not read");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if let Some(c) = conn {
        let _ = c.close(200, "shutdown".into()).await;
    }
}

/// Connects and declares the topology (idempotent), so a worker that starts before anyone
/// else declared it reads zeros instead of failing its passive declares.
async fn connect(nodes: &Nodes, names: &Names) -> anyhow::Result<Connection> {
    let conn = nodes.connect().await.map_err(anyhow::Error::msg)?;
    let ch = conn.create_channel().await?;
    payhook_shared::amqp::declare_topology(&ch, names).await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(conn)
}

async fn sample(conn: &Connection, names: &Names) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    for queue in names.all_queues() {
        let q = ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        metrics::gauge!("payhook_queue_depth", "queue" => queue).set(f64::from(q.message_count()));
    }
    let _ = ch.close(200, "done".into()).await;
    Ok(())
}
