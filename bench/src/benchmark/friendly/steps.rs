//! Issue 7's measuring steps: the PostgreSQL floor (pgbench), ingest alone at one load point,
//! and the stored history for the cost-growth step (stored by [`crate::benchmark::history`]).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::report::{FloorRow, IngestRow};
use super::{Bench, SECRET};
use crate::benchmark::common::{checkpoint, say};
use crate::benchmark::history::{self, History};
use crate::load::{self, Fresh, Load, Secrets, Stop};
use crate::procs;

impl Bench {
    pub(super) async fn create_floor_table(&self) -> anyhow::Result<()> {
        // Same columns, defaults, CHECK, identity and indexes as webhook_events (not the
        // foreign key: LIKE never copies those).
        sqlx::query("CREATE TABLE bench_floor (LIKE webhook_events INCLUDING ALL)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// pgbench: one durable INSERT ... ON CONFLICT DO NOTHING per transaction, a random key,
    /// the payload of one of our events.
    pub(super) async fn floor(&mut self, clients: usize) -> anyhow::Result<FloorRow> {
        let event = load::gocardless_event("@@", 0);
        assert!(!event.contains('\''));
        let payload = format!("'{}'", event.replace("@@", "' || :k::text || '"));
        let script = format!(
            "\\set k random(1, 1000000000000000)\n\
             INSERT INTO bench_floor (delivery_id, provider, external_id, event_type, resource_id, payload, occurred_at) \
             VALUES (:k::bigint, 'gocardless', 'EV' || :k::text, 'payments.created', 'PM' || :k::text, ({payload})::jsonb, now()) \
             ON CONFLICT (provider, external_id) DO NOTHING;\n"
        );
        let path = self.log_dir.join("floor.sql");
        std::fs::write(&path, script)?;
        checkpoint(&self.pool).await?;
        say(format!(
            "floor: pgbench, {clients} client(s), {} s",
            self.plan.step.as_secs()
        ));
        let host = self.pg.get_host().to_owned();
        let port = self.pg.get_port().to_string();
        let user = self.pg.get_username().to_owned();
        let mut cmd = tokio::process::Command::new(&self.pgbench);
        cmd.args([
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            &user,
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &self.plan.step.as_secs().to_string(),
            "-f",
        ])
        .arg(&path)
        .arg(&self.db_name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("running {}", self.pgbench.display()))?;
        let pid = child.id().unwrap_or(0);
        let cpu0 = self.probe.sample(Some(self.ingest.pid()), &[], &[pid]);
        let wait = tokio::spawn(child.wait_with_output());
        // Sample while pgbench lives: once it has exited its CPU time is gone from /proc.
        let mut cpu1 = cpu0.clone();
        while !wait.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                cpu1 = self.probe.sample(Some(self.ingest.pid()), &[], &[pid]);
            }
        }
        let out = wait.await??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let field = |prefix: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let tps = field("tps = ").context("pgbench printed no tps")?;
        let row = FloorRow {
            clients,
            seconds: self.plan.step.as_secs_f64(),
            tps,
            latency_avg_ms: field("latency average = ").unwrap_or(f64::NAN),
            failed: field("number of failed transactions: ").unwrap_or(0.0) as u64,
            cpu: cpu0.until(&cpu1),
        };
        say(format!(
            "  {:.0} tps, average latency {:.2} ms",
            row.tps, row.latency_avg_ms
        ));
        Ok(row)
    }

    pub(super) async fn ingest_step(
        &mut self,
        conns: usize,
        events: usize,
        note: &str,
    ) -> anyhow::Result<IngestRow> {
        let tag = self.next_tag();
        checkpoint(&self.pool).await?;
        say(format!(
            "ingest: {conns} connection(s), {events}-event bodies{note}, {} s",
            self.plan.step.as_secs()
        ));
        let metrics0 = procs::get_body(self.ingest.ops, "/metrics")
            .await
            .unwrap_or_default();
        let cpu0 = self.probe.sample(Some(self.ingest.pid()), &[], &[]);
        let r = load::run(
            Load {
                addr: self.ingest_addr,
                connections: conns,
                secrets: Secrets(vec![(load::Gateway::GoCardless, SECRET.into())]),
                stop: Stop::At(Instant::now() + self.plan.step),
                window: None,
            },
            Fresh::new(&tag, events),
        )
        .await;
        let cpu = cpu0.until(&self.probe.sample(Some(self.ingest.pid()), &[], &[]));
        let metrics1 = procs::get_body(self.ingest.ops, "/metrics")
            .await
            .unwrap_or_default();
        // Mean of a histogram over the step, from the difference of its sum and count.
        let mean = |name: &str, scale: f64| {
            let (s0, c0) = procs::histogram_totals(&metrics0, name);
            let (s1, c1) = procs::histogram_totals(&metrics1, name);
            if c1 > c0 {
                (s1 - s0) / (c1 - c0) * scale
            } else {
                f64::NAN
            }
        };
        let batch_mean = mean("payhook_ingest_batch_size", 1.0);
        let commit_ms_mean = mean("payhook_ingest_commit_seconds", 1000.0);
        let confirm_ms_mean = mean("payhook_publish_confirm_seconds", 1000.0);
        self.record(&r);
        let row = IngestRow {
            connections: conns,
            events_per_body: events,
            requests: r.ok,
            seconds: r.elapsed.as_secs_f64(),
            rps: r.rps(),
            events_per_s: r.events_per_s(),
            p50_ms: r.ms(0.5),
            p99_ms: r.ms(0.99),
            p999_ms: r.ms(0.999),
            max_ms: r.hist.max() as f64 / 1000.0,
            errors: r.errors,
            batch_mean,
            commit_ms_mean,
            confirm_ms_mean,
            cpu,
        };
        say(format!(
            "  {:.0} req/s, {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; \
             mean batch {:.1} deliveries, commit {:.2} ms, confirm {:.2} ms{}",
            row.rps,
            row.events_per_s,
            row.p50_ms,
            row.p99_ms,
            row.p999_ms,
            row.batch_mean,
            row.commit_ms_mean,
            row.confirm_ms_mean,
            if r.errors > 0 {
                format!(
                    ", {} ERRORS: {}",
                    r.errors,
                    r.first_error.as_deref().unwrap_or_default()
                )
            } else {
                String::new()
            }
        ));
        Ok(row)
    }

    /// Stores `events` processed events (10 per delivery) with plain SQL, as months of history.
    pub(super) async fn seed(&mut self, events: u64) -> anyhow::Result<()> {
        let stored = history::store(
            &self.pool,
            &History {
                deliveries: events.div_ceil(10),
                events_per_delivery: 10,
                newest_age: Duration::ZERO,
            },
        )
        .await?;
        self.seeded_deliveries += stored.deliveries;
        self.seeded_events += stored.events;
        Ok(())
    }
}
