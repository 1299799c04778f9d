//! [`PostgresProvider`]: the type, its accessors and shutdown.
//!
//! - `establish`: building one (probe, pools, migrations, listener);
//! - `operator`: the reads and sweeps operator tools use;
//! - `traits`: the `Provider` and `ProviderAdmin` implementations, which
//!   delegate each call to the module of its concern.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::PgPool;

use crate::background::Periodic;
use crate::config::PostgresConfig;
use crate::error::Error;
use crate::migrations::{self, MigrationReport, quote_ident};
use crate::sqlstates::DEADLOCK_DETECTED;
use crate::store::Store;
use crate::worker_queue::prefetch::WorkerPrefetch;

mod establish;
mod operator;
mod traits;

/// A duroxide storage provider backed by one schema of a PostgreSQL database.
///
/// Cheap to share: wrap it in an `Arc` and hand it to `duroxide::Runtime` and
/// `duroxide::Client`. Every provider call is one statement (one call of one
/// stored function in the schema), so one network round trip.
pub struct PostgresProvider {
    /// What the operation modules work on: call pool, schema, statements,
    /// wake-up listener.
    store: Store,
    /// A small sqlx pool for migrations and tools ([`PostgresProvider::pool`]).
    tools: PgPool,
    /// The host `tools` connects to (an index into the URL's hosts).
    tools_host: AtomicUsize,
    /// The credential source's cache and refresher, if there is a source.
    pub(crate) credentials: Option<std::sync::Arc<crate::credentials::Credentials>>,
    /// Activities leased ahead by acks, for the worker's next fetch.
    pub(crate) worker_prefetch: WorkerPrefetch,
    /// The background retention sweeper, when a policy is configured.
    sweeper: Option<Periodic>,
    /// The queue vacuum, when configured.
    queue_vacuum: Option<Periodic>,
}

/// A snapshot of the provider's call pool ([`PostgresProvider::pool_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open (in use or idle).
    pub open: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// Most connections the pool opens.
    pub max: u32,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("schema", &self.store.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresProvider {
    /// Most activities one provider holds leased ahead at once: an activity
    /// ack leases the slot's next item in the same round trip, and holds it
    /// for the fetch that follows.
    pub const PREFETCH_LIMIT: usize = crate::worker_queue::prefetch::LIMIT;
    /// How long a leased-ahead activity waits for a fetch before its lease
    /// is released (abandoned without counting an attempt).
    pub const PREFETCH_HOLD: Duration = crate::worker_queue::prefetch::HOLD;

    /// Connects to `url` using the `public` schema and applies pending migrations.
    ///
    /// # Errors
    /// See [`PostgresProvider::connect`].
    pub async fn new(url: &str) -> Result<Self, Error> {
        Self::connect(PostgresConfig::new(url)).await
    }

    /// Connects to `url` using `schema` (default `public`), creating the schema
    /// and applying pending migrations.
    ///
    /// # Errors
    /// See [`PostgresProvider::connect`].
    pub async fn new_with_schema(url: &str, schema: Option<&str>) -> Result<Self, Error> {
        let mut config = PostgresConfig::new(url);
        if let Some(schema) = schema {
            config = config.with_schema(schema);
        }
        Self::connect(config).await
    }
    /// A small sqlx pool on the provider's database, for diagnostics and
    /// tools (provider calls use connections of their own; the provider owns
    /// the schema). Its connections close after a minute idle.
    pub fn pool(&self) -> &PgPool {
        // After a failover the call pool found another host: follow it.
        let current = self.store.pool.hosts().current();
        if self.tools_host.swap(current, Ordering::Relaxed) != current {
            let options = self.store.pool.hosts().current_options();
            self.tools.set_connect_options(match &self.credentials {
                Some(c) => c.with_cached_password(options),
                None => options,
            });
        }
        &self.tools
    }

    /// How many connections the provider's call pool holds right now.
    pub fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            open: self.store.pool.size(),
            idle: self.store.pool.num_idle(),
            max: self.store.pool.max_connections(),
        }
    }

    /// Stops the retention sweeper (a sweep in progress ends after its
    /// batch) and the queue vacuum, releases the activities leased ahead for
    /// the next fetch, stops the credential refresher, then closes every
    /// connection the provider holds, the wake-up listener's included (calls
    /// fail afterwards).
    pub async fn close(&self) {
        self.stop_background().await;
        if let Some(lp) = &self.store.long_poll {
            lp.stop();
        }
        if let Some(c) = &self.credentials {
            c.stop();
        }
        self.worker_prefetch.release_all().await;
        self.store.pool.close().await;
        self.tools.close().await;
    }

    /// Stops the retention sweeper and the queue vacuum (each finishes the
    /// step it is in).
    async fn stop_background(&self) {
        for task in [&self.sweeper, &self.queue_vacuum].into_iter().flatten() {
            task.stop().await;
        }
    }

    /// The schema this provider stores everything in.
    pub fn schema_name(&self) -> &str {
        &self.store.schema
    }

    /// Applies any pending migrations again (normally done at construction).
    ///
    /// # Errors
    /// As [`migrations::run`].
    pub async fn migrate(&self) -> Result<MigrationReport, Error> {
        migrations::run(
            &self.tools,
            &self.store.schema,
            crate::config::MigrationMode::Apply,
        )
        .await
    }

    /// Drops everything this provider stored: the whole schema, or, for
    /// `public`, only duroxide-pg's own tables, functions and ledger. Meant for
    /// tests and tools; the provider is unusable afterwards (its retention
    /// sweeper and queue vacuum, if any, are stopped first).
    ///
    /// # Errors
    /// [`Error::Database`] when the server refuses.
    pub async fn cleanup_schema(&self) -> Result<(), Error> {
        // A sweep or a vacuum must not run into the drop.
        self.stop_background().await;
        let schema = quote_ident(&self.store.schema);
        let sql = if self.store.schema != crate::PostgresConfig::DEFAULT_SCHEMA {
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE")
        } else {
            let mut sql = String::new();
            for table in migrations::owned_tables() {
                sql.push_str(&format!("DROP TABLE IF EXISTS {schema}.{table} CASCADE;\n"));
            }
            for function in migrations::owned_functions() {
                sql.push_str(&format!(
                    "DROP FUNCTION IF EXISTS {schema}.{function} CASCADE;\n"
                ));
            }
            sql.push_str(&format!(
                "DROP TABLE IF EXISTS {schema}.{};\n",
                migrations::LEDGER_TABLE
            ));
            sql
        };
        // Dropping takes the objects' locks one by one while calls may still
        // be running (a call its runtime abandoned at shutdown goes on in the
        // server): a call holding one table and asking for one already taken
        // here is a deadlock, and PostgreSQL may end this side of it. Nothing
        // was dropped then (one transaction): do it again once the call is
        // through, as PostgreSQL advises for a deadlock.
        let mut attempt = 1;
        loop {
            match sqlx::raw_sql(&sql).execute(&self.tools).await {
                Ok(_) => return Ok(()),
                Err(sqlx::Error::Database(db))
                    if db.code().as_deref() == Some(DEADLOCK_DETECTED) && attempt < 5 =>
                {
                    tracing::debug!(target: "duroxide_pg", attempt, "cleanup_schema deadlocked; again");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(Error::database("cleanup_schema", &e)),
            }
        }
    }
}
