//! Building a [`PostgresProvider`]: the probe connection, the call pool,
//! migrations, the wake-up listener and the background tasks.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};

use super::PostgresProvider;
use crate::call::Call;
use crate::config::{
    PollMode, Pooler, PostgresConfig, scrub, validate_schema_name, with_pooler_hint,
};
use crate::connections::{Connections, Hosts, Targets};
use crate::credentials::{BaseOptions, Credentials};
use crate::env::POOLER_ENV;
use crate::error::Error;
use crate::long_poll::{LongPoll, OpenListener, SendHeartbeat};
use crate::migrations;
use crate::statements::Statements;
use crate::store::Store;
use crate::worker_queue::prefetch::WorkerPrefetch;

/// What [`PostgresConfig::probe`] found: the connection, the host it went
/// to and every host of the URL.
pub(crate) struct Probe {
    /// The open connection (it becomes the call pool's first).
    pub conn: PgConnection,
    /// Its host, an index into `targets`.
    pub host: usize,
    /// The URL's hosts and the role they must have.
    pub targets: Targets,
}

/// The operation [`PostgresConfig::check_session`]'s errors name.
const CHECK_SESSION: &str = "check the connection's session settings";

/// `current_setting('search_path')` and the server's clock (ms since the
/// epoch), both as text, by the simple-query protocol. A named, concrete
/// function keeps the caller's future `Send` (as `exec_script` in the
/// migration runner).
fn session_facts<'c>(
    conn: &'c mut PgConnection,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<sqlx::postgres::PgRow, sqlx::Error>> + Send + 'c>,
> {
    Box::pin(async move {
        // A plain `&str` runs as a simple query: nothing is prepared.
        sqlx::Executor::fetch_one(
            conn,
            "SELECT current_setting('search_path'), \
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint::text",
        )
        .await
    })
}

impl PostgresConfig {
    /// Opens the connection pool this configuration describes, without
    /// touching the schema: validates the configuration, proves the server is
    /// reachable with one direct connection (within the connect timeout), then
    /// returns a lazily filled pool. [`crate::PostgresProvider::connect`] uses
    /// it; tools that only inspect a schema (the migration ledger, say) can too.
    ///
    /// # Errors
    /// [`Error::InvalidSchemaName`], [`Error::InvalidUrl`] or
    /// [`Error::InvalidConfig`] for bad input; [`Error::Connect`] naming host
    /// and port when the server cannot be reached in time.
    ///
    /// With a credential source, the pool keeps the credential it was opened
    /// with (meant for short-lived tools).
    ///
    /// With several hosts in the URL, the pool connects to the host the
    /// probe chose (see [`crate::TargetSessionAttrs`]) and stays there.
    pub async fn open_pool(&self) -> Result<PgPool, Error> {
        let credentials = self.credentials();
        let probe = self.probe(credentials.as_deref()).await?;
        let _ = probe.conn.close().await;
        let options = probe.targets.hosts[probe.host].options.clone();
        let pool = self.tools_pool(options.clone())?;
        if let Some(c) = &credentials {
            c.keep_current(&pool, Arc::new(move || options.clone()));
        }
        Ok(pool)
    }

    /// One direct connection, within the connect timeout (per host): fails
    /// fast on a refused connection (a pool would keep retrying until its
    /// timeout) and proves the URL works. Validates the configuration first.
    pub(crate) async fn probe(&self, credentials: Option<&Credentials>) -> Result<Probe, Error> {
        validate_schema_name(&self.schema)?;
        self.resolved_min_connections()?;
        self.resolved_poll_mode()?;
        if self.fallback_poll < Duration::from_millis(1) {
            return Err(Error::InvalidConfig(format!(
                "the fallback poll interval must be at least 1 ms, got {:?}",
                self.fallback_poll
            )));
        }
        let targets = self.targets()?;
        let first = &targets.hosts[0].options;
        let host = if targets.hosts.len() > 1 {
            targets
                .hosts
                .iter()
                .map(|t| t.label.as_str())
                .collect::<Vec<_>>()
                .join(",")
        } else {
            first.get_host().to_string()
        };
        let (port, user) = (first.get_port(), first.get_username().to_string());
        match targets.open(credentials, self.connect_timeout).await {
            Ok((host, conn)) => Ok(Probe {
                conn,
                host,
                targets,
            }),
            Err(e) => Err(Error::Connect {
                host,
                port,
                user,
                reason: scrub(
                    &match e {
                        sqlx::Error::PoolTimedOut => format!(
                            "no connection within the connect timeout of {:?}",
                            self.connect_timeout
                        ),
                        e => with_pooler_hint(e.to_string()),
                    },
                    &self.url,
                ),
            }),
        }
    }

    /// Checks the probe connection's session, in one simple-query round trip
    /// (nothing named is prepared for it):
    ///
    /// - with [`Pooler::None`], that the server applied the startup options.
    ///   A pooler that drops them (PgBouncer with `ignore_startup_parameters
    ///   = options`) most likely also moves a client between server
    ///   sessions, where a prepared statement's name could reach another
    ///   client's statement: refused before any call;
    /// - that this host's clock is within
    ///   [`PostgresConfig::with_max_clock_skew`] of the server's.
    pub(crate) async fn check_session(&self, conn: &mut PgConnection) -> Result<(), Error> {
        let before = crate::clock::now_ms();
        let row = session_facts(conn)
            .await
            .map_err(|e| Error::database(CHECK_SESSION, &e))?;
        let after = crate::clock::now_ms();
        let get = |i| -> Result<_, Error> {
            sqlx::Row::try_get::<Option<String>, _>(&row, i)
                .map_err(|e| Error::database(CHECK_SESSION, &e))
        };
        let (search_path, server_ms) = (get(0)?.unwrap_or_default(), get(1)?);
        if let Some(server_ms) = server_ms.and_then(|ms| ms.parse::<i64>().ok()) {
            self.check_clock(server_ms, before, after)?;
        }
        if self.resolved_pooler()? == Pooler::Transaction || search_path == self.schema {
            return Ok(());
        }
        Err(Error::PoolerDetected {
            evidence: format!(
                "the server did not apply the connection's startup options (search_path is \
                 {search_path:?}, not {:?})",
                self.schema
            ),
            env: POOLER_ENV,
        })
    }
}

impl PostgresProvider {
    /// Builds a provider from a full configuration.
    ///
    /// Validates the configuration before touching the database, proves the
    /// server is reachable with one direct connection (within the connect
    /// timeout), opens the pool lazily, applies (or verifies) the migrations,
    /// and in long-poll mode starts the wake-up listener.
    ///
    /// # Errors
    /// [`Error::InvalidSchemaName`], [`Error::InvalidUrl`] or
    /// [`Error::InvalidConfig`] for bad input (nothing is created);
    /// [`Error::Connect`] naming host and port when the server cannot be
    /// reached in time; the migration errors of [`migrations::run`].
    pub async fn connect(config: PostgresConfig) -> Result<Self, Error> {
        if let Some(policy) = &config.retention {
            policy.validate()?;
        }
        let queue_vacuum = config.resolved_queue_vacuum()?;
        // The probe connection runs the migrations, then becomes the call
        // pool's first connection. Meanwhile the connections a runtime needs
        // at once (and the listener's) open in parallel: a fresh runtime's
        // first calls find them ready.
        let credentials = config.credentials();
        let probe = config.probe(credentials.as_deref()).await?;
        let mut first = probe.conn;
        config.check_session(&mut first).await?;
        let pool = Connections::new(
            probe.targets,
            probe.host,
            config.pool_settings()?,
            credentials.clone(),
        );
        // The tools' sqlx pool connects where the call pool's new connections
        // last went (it follows it after a failover), and so does each new
        // listener. (A handle on the hosts, not the pool: the credentials keep it.)
        let current: BaseOptions = {
            let hosts = pool.hosts().clone();
            Arc::new(move || hosts.current_options())
        };
        let open_listener = match config.resolved_poll_mode()? {
            PollMode::PollOnly => None,
            PollMode::LongPoll => Some(listener_opener(
                pool.hosts().clone(),
                credentials.clone(),
                config.connect_timeout,
            )),
        };
        let ahead = config.resolved_min_connections()?.saturating_sub(1);
        let (migrated, opened_ahead, listener) = tokio::join!(
            migrations::run_on(&mut first, &config.schema, config.migrations),
            pool.open_idle(ahead),
            async {
                match &open_listener {
                    Some(open) => Some(open().await),
                    None => None,
                }
            },
        );
        migrated?;
        pool.adopt(first);
        if let Err(e) = opened_ahead {
            // Not fatal: the probe proved the server works; they open on demand.
            tracing::warn!(
                target: "duroxide_pg",
                error = %e,
                "opening connections ahead failed; they will open on demand"
            );
        }
        let tools = config.tools_pool(pool.hosts().current_options())?;
        if let Some(c) = &credentials {
            c.keep_current(&tools, Arc::clone(&current));
            c.spawn_refresher();
        }
        let sql = Statements::new(&config.schema);
        let long_poll = match listener {
            Some(listener) => {
                let listen_error = |reason: String| Error::Database {
                    operation: "listen for wake-ups",
                    sqlstate: None,
                    reason,
                };
                let channel: String = Call::new(&pool, "notify_channel", &sql.notify_channel)
                    .scalar()
                    .await
                    .map_err(|e| listen_error(e.message))?;
                let beat = heartbeat_sender(&pool, &sql);
                Some(
                    LongPoll::start(
                        listener.map_err(|e| listen_error(e.to_string()))?,
                        open_listener.expect("a listener was opened"),
                        beat,
                        &channel,
                        &config.schema,
                        config.fallback_poll,
                    )
                    .await
                    .map_err(|e| listen_error(e.to_string()))?,
                )
            }
            None => None,
        };
        let worker_prefetch =
            WorkerPrefetch::new(config.worker_prefetch, pool.clone(), &sql, &config.schema);
        // Background tasks get their own view of the store: the same pool,
        // no listener.
        let background_store = || Store {
            pool: pool.clone(),
            schema: config.schema.clone(),
            sql: Statements::new(&config.schema),
            long_poll: None,
        };
        let sweeper = config
            .retention
            .clone()
            .map(|policy| crate::retention::sweeper::start(background_store(), policy));
        let queue_vacuum =
            queue_vacuum.map(|interval| crate::queue_vacuum::start(background_store(), interval));
        Ok(Self {
            sweeper,
            queue_vacuum,
            tools_host: AtomicUsize::new(pool.hosts().current()),
            credentials,
            worker_prefetch,
            store: Store {
                sql,
                schema: config.schema,
                pool,
                long_poll,
            },
            tools,
        })
    }
}

/// Sends the listener's heartbeat (`listener_heartbeat`) through the call
/// pool; a failure shows only in the heartbeat not being heard.
fn heartbeat_sender(pool: &Connections, sql: &Statements) -> SendHeartbeat {
    let (pool, statement) = (pool.clone(), sql.listener_heartbeat.clone());
    Arc::new(move || {
        let (pool, statement) = (pool.clone(), statement.clone());
        Box::pin(async move {
            let sent = Call::new(&pool, "listener_heartbeat", &statement)
                .execute()
                .await;
            if let Err(e) = sent {
                tracing::debug!(target: "duroxide_pg", error = %e.message, "listener heartbeat not sent");
            }
        })
    })
}

/// Opens each listener of the provider: a `PgListener` on a one-connection
/// sqlx pool of its own (so the listener never takes a work connection),
/// to the host the call pool's new connections go to now, with the
/// credential source's current password.
///
/// Why a new pool each time: dropping a listener whose connection went
/// silent leaves sqlx's `UNLISTEN` waiting on it, holding its pool's only
/// connection; a new pool never waits behind it.
fn listener_opener(
    hosts: Hosts,
    credentials: Option<Arc<Credentials>>,
    connect_timeout: Duration,
) -> OpenListener {
    Arc::new(move || {
        let (hosts, credentials) = (hosts.clone(), credentials.clone());
        Box::pin(async move {
            let mut options = hosts.current_options();
            if let Some(c) = &credentials {
                options = c.apply_for_connect(options).await?;
            }
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(connect_timeout)
                .connect_lazy_with(options);
            let mut listener = PgListener::connect_with(&pool).await?;
            // A lost connection is replaced by the listening task, which
            // also looks for the current host first.
            listener.eager_reconnect(false);
            Ok(listener)
        })
    })
}
