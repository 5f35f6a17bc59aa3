//! `payhook-worker replay EVENT_ID…` and `replay --dead`: put events back in line and publish
//! them again, with confirms (the core is [`payhook_shared::replay`], shared with the admin
//! API); this adds the progress bar on stderr.

use std::io::Write;

use payhook_shared::amqp::Broker;
pub use payhook_shared::replay::ReplayReport;
use sqlx::PgPool;

/// Replays the named events (payhook ids or gateway event ids).
pub async fn replay_named(
    pool: &PgPool,
    broker: &Broker,
    names: &[String],
    progress: bool,
) -> anyhow::Result<ReplayReport> {
    let mut bar = Progress::new(progress, "replaying");
    let report =
        payhook_shared::replay::replay_named(pool, broker, names, &mut |d, t| bar.set(d, t)).await;
    bar.finish();
    Ok(report?)
}

/// Replays everything dead: the dead queue's messages and the rows marked `dead`.
pub async fn replay_dead(
    pool: &PgPool,
    broker: &Broker,
    progress: bool,
) -> anyhow::Result<ReplayReport> {
    let mut bar = Progress::new(progress, "replaying");
    let report = payhook_shared::replay::replay_dead(pool, broker, &mut |d, t| bar.set(d, t)).await;
    bar.finish();
    Ok(report?)
}

/// A progress bar on stderr, redrawn in place: `replaying [#######.............] 120/400`;
/// drawn only for more than one item.
pub struct Progress {
    on: bool,
    drawn: bool,
    label: &'static str,
}

impl Progress {
    pub fn new(on: bool, label: &'static str) -> Self {
        Self {
            on,
            drawn: false,
            label,
        }
    }

    pub fn set(&mut self, done: usize, total: usize) {
        if !self.on || total < 2 {
            return;
        }
        const WIDTH: usize = 30;
        let filled = done * WIDTH / total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {done}/{total}",
            self.label,
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
        );
        let _ = err.flush();
        self.drawn = true;
    }

    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}
