//! Who reconciles: two PostgreSQL advisory locks, held on a connection of their own (not the
//! pool's: a session lock must stay with one session, and a pooled connection changes hands).
//!
//! - The LEADER lock is taken with `pg_try_advisory_lock` on a worker's tick and kept for as
//!   long as the session lives: that worker runs every periodic pass, the others only try on
//!   each tick. When the leader dies (even `kill -9`) its session ends, PostgreSQL releases the
//!   lock, and the next worker to tick takes it over.
//! - The PASS lock is held during any pass, the leader's or `reconcile --once`'s, so two
//!   passes never overlap (the domain relay must publish in order, once).
//!
//! Advisory locks are per database: installations on separate databases never meet here.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// The first key of both locks ("payh").
const CLASS: i32 = 0x7061_7968;
const LEADER: i32 = 1;
const PASS: i32 = 2;

/// A stuck connect must not stall the tick loop (and with it, shutdown).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The lock connection and what this process holds on it.
pub struct Locks {
    options: PgConnectOptions,
    conn: Option<PgConnection>,
    leader: bool,
}

impl Locks {
    pub fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            conn: None,
            leader: false,
        }
    }

    /// True when this process leads: it still holds the lock (its session is alive), or it
    /// has just taken it. An error means the lock connection is gone; leadership with it.
    pub async fn lead(&mut self) -> Result<bool, sqlx::Error> {
        if self.leader {
            // The lock lives exactly as long as the session: a session that answers still
            // holds it.
            let alive = sqlx::query("SELECT 1").execute(self.conn().await?).await;
            if let Err(e) = alive {
                self.lost();
                return Err(e);
            }
            return Ok(true);
        }
        let taken = self.try_lock(LEADER).await?;
        self.leader = taken;
        Ok(taken)
    }

    /// Takes the pass lock if no pass is running anywhere.
    pub async fn try_begin_pass(&mut self) -> Result<bool, sqlx::Error> {
        self.try_lock(PASS).await
    }

    /// Releases the pass lock (on a broken connection it is gone already).
    pub async fn end_pass(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(CLASS)
            .bind(PASS)
            .execute(conn)
            .await;
        if unlocked.is_err() {
            self.lost();
        }
    }

    /// Ends the session, releasing every lock now rather than when PostgreSQL notices.
    pub async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    async fn try_lock(&mut self, key: i32) -> Result<bool, sqlx::Error> {
        let conn = self.conn().await?;
        let taken = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(CLASS)
            .bind(key)
            .fetch_one(conn)
            .await;
        if taken.is_err() {
            self.lost();
        }
        taken
    }

    async fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            let connect = self.options.connect();
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// The connection broke: whatever it held, PostgreSQL releases with the session.
    fn lost(&mut self) {
        self.conn = None;
        self.leader = false;
    }
}
