//! `payhook-worker reparse ID…|--all`: reads rejected deliveries again with this version
//! (`payhook_shared::rejected`); what now parses goes through ingest's own group commit
//! (stored, published with confirms, deduplicated), so the workers process it as any delivery.
//! Prints one line per delivery; exit 1 when any is still refused (each says why).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use payhook_shared::amqp::Broker;
use payhook_shared::config::{BrokerSettings, DatabaseSettings, ParseSettings};
use payhook_shared::intake::{Intake, IntakeConfig};
use payhook_shared::rejected::{self, Reparsed};
use payhook_worker::replay::Progress;

#[derive(clap::Args, Debug)]
pub struct ReparseArgs {
    /// Rejected delivery ids (rejected_deliveries.id, as the console and the admin API list
    /// them).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    ids: Vec<i64>,
    /// Every rejected delivery not reparsed yet, oldest first.
    #[arg(long)]
    all: bool,
    /// How long one delivery may wait for PostgreSQL and RabbitMQ.
    #[arg(long, env = "INGEST_TIMEOUT", default_value = "10s", value_parser = payhook_shared::config::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    parse: ParseSettings,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
}

pub async fn reparse(args: ReparseArgs) -> anyhow::Result<()> {
    args.parse.apply();
    let pool = payhook_shared::db::connect_and_migrate(&args.database)
        .await
        .context("PostgreSQL")?;
    let ids = if args.all {
        rejected::waiting_ids(&pool).await?
    } else {
        args.ids.clone()
    };
    let broker = Arc::new(Broker::new(&args.broker));
    let (intake, tasks) = Intake::start(
        pool.clone(),
        broker.clone(),
        IntakeConfig {
            batch_max: 32,
            confirm_timeout: args.timeout,
            accept_without_broker: false,
        },
    );
    let mut bar = Progress::new(ids.len() > 20, "reparsing");
    let (mut ingested, mut refused, mut failed) = (0, Vec::new(), Vec::new());
    for (i, id) in ids.iter().enumerate() {
        match rejected::reparse(&pool, &intake, *id, args.timeout).await {
            Ok((
                Reparsed::Ingested {
                    delivery_id,
                    new_event_ids,
                    duplicates,
                },
                row,
            )) => {
                ingested += 1;
                println!(
                    "{id}  {}  ingested: delivery {delivery_id}, {} new event(s), {duplicates} already stored",
                    row.provider,
                    new_event_ids.len()
                );
            }
            Ok((Reparsed::StillRejected { reason }, row)) => {
                println!("{id}  {}  still refused: {reason}", row.provider);
                refused.push(*id);
            }
            Err(e) => {
                println!("{id}  not reparsed: {e}");
                failed.push(*id);
            }
        }
        bar.set(i + 1, ids.len());
    }
    bar.finish();
    drop(intake);
    let _ = tokio::time::timeout(Duration::from_secs(30), tasks).await;
    broker.close().await;
    println!(
        "reparse: {ingested} ingested, {} still refused, {} failed",
        refused.len(),
        failed.len()
    );
    if !failed.is_empty() {
        anyhow::bail!("not reparsed (try again): {failed:?}");
    }
    if !refused.is_empty() {
        anyhow::bail!("still refused by this version: {refused:?}");
    }
    Ok(())
}
