//! PostgreSQL: creates the database if it is missing, opens the pool, applies the migrations
//! (sqlx's migrator holds an advisory lock, so ingest and workers starting together don't race).

use std::str::FromStr;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::DatabaseSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long a request waits for a free connection before we answer 503: a gateway retries,
/// a stuck request helps nobody.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects (retrying for about half a minute while PostgreSQL starts), creates the database
/// if missing, and migrates.
pub async fn connect_and_migrate(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&settings.database_url)?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    let pool = (|| async {
        create_database_if_missing(&options).await?;
        let pool = pool_options(settings.database_max_connections)
            .connect_with(options.clone())
            .await?;
        anyhow::Ok(pool)
    })
    .retry(startup_backoff())
    .notify(
        |e, after| tracing::warn!(error = %e, retry_in = ?after, "PostgreSQL not reachable yet"),
    )
    .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// The pool settings used everywhere, so tests run what production runs.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // A connection that lived through a PostgreSQL restart is found broken on first use;
        // the test on acquire costs one round trip and spares a 503.
        .test_before_acquire(true)
}

/// Retries for about 30 s: long enough for PostgreSQL or RabbitMQ to finish starting beside us.
pub fn startup_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(10)
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        // Two processes may race here; the loser sees duplicate_database and carries on.
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            let duplicate = e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "42P04" || c == "23505");
            if !duplicate {
                return Err(e.into());
            }
        }
        tracing::info!(database = %name, "created database");
    }
    admin.close().await?;
    Ok(())
}

/// True when PostgreSQL answers a trivial query (for /readyz).
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// One connection owned by one task (ingest's writer and publisher), outside the pool: no
/// acquire and no test round trip per use, which at thousands of batches a second is most of
/// a batch's cost. Reopened on the next use after it broke.
pub struct OwnConnection {
    options: PgConnectOptions,
    conn: Option<PgConnection>,
    /// Whether the connection handed out last had served before (and so may have died
    /// unnoticed, e.g. in a PostgreSQL restart).
    reused: bool,
}

impl OwnConnection {
    /// `asynchronous_commit`: commits on this connection don't wait for the WAL flush; only
    /// for writes that may be lost in a crash (bookkeeping that is redone if missing).
    pub fn new(pool: &PgPool, asynchronous_commit: bool) -> Self {
        let mut options = (*pool.connect_options()).clone();
        if asynchronous_commit {
            options = options.options([("synchronous_commit", "off")]);
        }
        Self {
            options,
            conn: None,
            reused: false,
        }
    }

    /// The connection, opened now if there is none.
    pub async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.reused = self.conn.is_some();
        if self.conn.is_none() {
            let conn =
                tokio::time::timeout(ACQUIRE_TIMEOUT, PgConnection::connect_with(&self.options))
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// Call with the error of a statement run on [`OwnConnection::get`]'s connection. An
    /// error PostgreSQL answered leaves the connection usable; any other drops it. Returns
    /// true when trying again on a new connection is worth it: the old one had served before,
    /// so it may simply have outlived a restart.
    pub fn lost(&mut self, e: &sqlx::Error) -> bool {
        if e.as_database_error().is_some() {
            return false;
        }
        let retry = self.conn.take().is_some() && self.reused;
        self.reused = false;
        retry
    }
}
