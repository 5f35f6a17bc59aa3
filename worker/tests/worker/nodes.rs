//! A RabbitMQ cluster's nodes in `AMQP_URL` (DESIGN.md, "Scale-out"): a worker connects to the
//! first node that answers and moves to the next when its node is lost, without a restart.
//! Each "node" here is a cuttable proxy to the test broker: losing one is cutting it. (The
//! real three-node cluster, with its leader killed under load, is `scripts/chaos --cluster`.)

use payhook_shared::testing::Proxy;

use crate::support::*;

/// A closed port: a node that is down.
fn down_node() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        l.local_addr().unwrap().port()
    )
}

fn confirmed(ev: &str, pm: &str) -> serde_json::Value {
    gc_payment(ev, "confirmed", pm, "MD1", "1000", "2024-05-02T10:00:00Z")
}

#[tokio::test]
async fn a_worker_skips_a_node_that_is_down_and_moves_to_the_next_when_its_node_is_lost() {
    let mut h = Harness::without_worker().await;
    h.known_member("MD1").await;
    let target = h.env.broker_target();
    let (a, b) = (
        Proxy::start(target.clone()).await,
        Proxy::start(target).await,
    );
    let mut config = h.config();
    config.broker.amqp_url = format!(
        "{},{},{}",
        down_node(),
        h.env.broker_via(&a).amqp_url,
        h.env.broker_via(&b).amqp_url
    );
    h.spawn_worker_with(config).await;

    let first = h
        .deliver("gocardless", &gc_body(vec![confirmed("EV1", "PM1")]))
        .await;
    h.wait_processed(&first).await;

    a.cut(); // the node the worker is on is lost
    let mut later = Vec::new();
    for i in 2..12 {
        later.extend(
            h.deliver(
                "gocardless",
                &gc_body(vec![confirmed(&format!("EV{i}"), &format!("PM{i}"))]),
            )
            .await,
        );
    }
    h.wait_processed(&later).await;
    assert_eq!(
        h.scalar::<i64>("SELECT count(*) FROM transactions").await,
        11,
        "every payment once"
    );
    h.assert_queues_drained().await;
}
