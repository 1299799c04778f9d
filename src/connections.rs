//! The provider's connection pool.
//!
//! Why not `sqlx::PgPool`: sqlx pings every connection when it goes back to
//! its pool (sqlx 0.8 `return_to_pool`), so each call costs a second network
//! round trip that keeps the connection busy; over a 20 ms link that halves
//! what a connection can do. This pool never talks to the server on its own:
//! a call is exactly its one statement.
//!
//! Safety without the ping: a connection goes back to the idle list only when
//! its call finished in a known state (success, or an error the server
//! reported and the protocol completed). A call abandoned half-way (its future
//! dropped) or failed on I/O discards the connection, so the next call never
//! inherits a half-read response.
//!
//! Silence is bounded too. A connection whose server stops answering without
//! an error (a partition, a NAT or load balancer that forgot the mapping:
//! packets vanish, no RST arrives) would keep a call waiting for as long as
//! the kernel retransmits, about 15 minutes. sqlx 0.8 sets no TCP keepalive
//! or `TCP_USER_TIMEOUT` and exposes no socket, so the bound is the pool's:
//!
//! - every exchange has a deadline ([`PoolSettings::response_timeout`]: the
//!   statement timeout plus a grace the server can never legitimately need);
//!   past it the call fails as I/O (retryable), its connection is dropped and
//!   so are the idle ones, which most likely went silent with it;
//! - a connection that sat idle longer than [`PoolSettings::check_idle_after`]
//!   is checked with one protocol-level round trip (a `Sync`, no statement)
//!   bounded by the grace before a call gets it. At load connections never
//!   idle that long, so this costs nothing there.
//!
//! [`Connections`] implements sqlx's `Executor`, so call sites read as with a
//! pool: `query.fetch_one(&p.pool)`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgQueryResult, PgRow, PgStatement, PgTypeInfo,
};
use sqlx::{Connection, Describe, Either, Execute, Executor, Postgres};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::credentials::Credentials;
use crate::hosts::{ServerRole, TargetSessionAttrs};
use crate::sqlstates::{
    CANNOT_CONNECT_NOW, CONNECTION_EXCEPTION_CLASS, READ_ONLY_SQL_TRANSACTION, TOO_MANY_CONNECTIONS,
};

/// One host of the URL: its label for messages and its driver options.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The host as the URL names it (`db1:5432`).
    pub label: String,
    /// Driver options naming only this host.
    pub options: PgConnectOptions,
}

/// Where connections go: the URL's hosts, tried in order, and the server
/// role a connection must find there ([`TargetSessionAttrs`]).
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    /// At least one.
    pub hosts: Vec<Target>,
    /// What the server must be.
    pub attrs: TargetSessionAttrs,
}

impl Targets {
    /// Opens a connection to the first host, in the URL's order, whose
    /// server the attributes accept (libpq's rules; `prefer-standby` makes a
    /// second pass taking any server). Each attempt is bounded by `timeout`.
    /// Returns the host's index with the connection.
    ///
    /// One host and `any`: the driver's own error, unchanged. Otherwise an
    /// I/O error (retryable: a failover may be under way) naming every host
    /// tried and what was wrong with it.
    pub(crate) async fn open(
        &self,
        credentials: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<(usize, PgConnection), sqlx::Error> {
        let mut tried = Vec::new();
        let mut unreachable = vec![false; self.hosts.len()];
        let mut last = None;
        for pass in self.attrs.passes() {
            for (i, target) in self.hosts.iter().enumerate() {
                if unreachable[i] {
                    continue;
                }
                let mut conn = match connect_one(&target.options, credentials, timeout).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        unreachable[i] = true;
                        let why = match &e {
                            sqlx::Error::PoolTimedOut => {
                                format!("no connection within {timeout:?}")
                            }
                            e => e.to_string(),
                        };
                        tried.push(format!("{}: {why}", target.label));
                        last = Some(e);
                        continue;
                    }
                };
                if *pass == TargetSessionAttrs::Any {
                    return Ok((i, conn));
                }
                let role = tokio::time::timeout(timeout, server_role(&mut conn))
                    .await
                    .unwrap_or(Err(sqlx::Error::PoolTimedOut));
                match role {
                    Ok(role) if pass.accepts(role) => return Ok((i, conn)),
                    Ok(role) => {
                        tried.push(format!("{}: {role}", target.label));
                        let _ = conn.close().await;
                    }
                    Err(e) => {
                        tried.push(format!("{}: role check failed: {e}", target.label));
                        last = Some(e);
                    }
                }
            }
        }
        match last {
            Some(e) if self.hosts.len() == 1 && self.attrs == TargetSessionAttrs::Any => Err(e),
            _ => Err(sqlx::Error::Io(std::io::Error::other(format!(
                "no host gave a {} session ({})",
                self.attrs,
                tried.join("; ")
            )))),
        }
    }
}

/// The URL's hosts and the one a pool's new connections last went to: what
/// the sqlx pools of the listener and the tools follow after a failover. A
/// cheap handle that does not keep the pool alive.
#[derive(Debug, Clone)]
pub(crate) struct Hosts {
    targets: Arc<Targets>,
    current: Arc<AtomicUsize>,
}

impl Hosts {
    /// The index of the host new connections last went to.
    pub(crate) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// That host's driver options (without the credential source's
    /// password).
    pub(crate) fn current_options(&self) -> PgConnectOptions {
        self.targets.hosts[self.current()].options.clone()
    }
}

/// Opens one connection to one host: credentials applied, within `timeout`.
async fn connect_one(
    options: &PgConnectOptions,
    credentials: Option<&Credentials>,
    timeout: Duration,
) -> Result<PgConnection, sqlx::Error> {
    let mut options = options.clone();
    if let Some(c) = credentials {
        options = c.apply_for_connect(options).await?;
    }
    tokio::time::timeout(timeout, PgConnection::connect_with(&options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?
}

/// The connected server's role, by one simple query (nothing is prepared,
/// so it also works behind a transaction pooler).
fn server_role(
    conn: &mut PgConnection,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<ServerRole, sqlx::Error>> + Send + '_>>
{
    Box::pin(async move {
        let row = sqlx::Executor::fetch_one(
            &mut *conn,
            "SELECT pg_catalog.pg_is_in_recovery(), \
             pg_catalog.current_setting('default_transaction_read_only') = 'on'",
        )
        .await?;
        Ok(ServerRole {
            in_recovery: sqlx::Row::try_get(&row, 0)?,
            read_only_default: sqlx::Row::try_get(&row, 1)?,
        })
    })
}

/// Sizing and timing of a [`Connections`] pool.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: u32,
    /// Connections kept open however long they idle (opened ahead by
    /// [`Connections::open_idle`]).
    pub min_connections: u32,
    /// How long a call waits for a free connection.
    pub acquire_timeout: Duration,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// Connections older than this are closed instead of reused.
    pub max_lifetime: Option<Duration>,
    /// Connections idle longer than this are closed instead of reused.
    pub idle_timeout: Option<Duration>,
    /// The provider's schema: the `schema` label of the pool's metrics.
    pub schema: String,
    /// Behind a transaction pooler: calls are sent as literal text with this
    /// prefix (the settings a session cannot keep there; see `call.rs`).
    /// `None`: prepared statements.
    pub literal_prefix: Option<String>,
    /// How long a call waits for the server's whole answer before its
    /// connection is taken for lost (`None`: no bound, without a statement
    /// timeout).
    pub response_timeout: Option<Duration>,
    /// What the server can never need beyond a statement timeout to answer:
    /// added to the timeout of a call that sets its own
    /// ([`Connections::fetch_all_within`]), and the bound of the check of a
    /// long-idle connection.
    pub silence_grace: Duration,
    /// An idle connection unused for longer than this is checked before a
    /// call gets it (`None`: never).
    pub check_idle_after: Option<Duration>,
}

struct Idle {
    conn: PgConnection,
    opened: Instant,
    idle_since: Instant,
}

/// A bounded set of PostgreSQL connections, opened on demand, reused LIFO.
/// A cheap handle: clones share the same connections (background tasks of
/// the provider hold one).
#[derive(Clone)]
pub(crate) struct Connections(Arc<Shared>);

/// The state every [`Connections`] handle shares.
pub(crate) struct Shared {
    /// The URL's hosts and the one new connections last went to.
    hosts: Hosts,
    settings: PoolSettings,
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
    open: AtomicUsize,
    closed: AtomicBool,
    /// Where each new connection's password comes from, if not the options.
    credentials: Option<Arc<Credentials>>,
}

impl std::ops::Deref for Connections {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("max_connections", &self.settings.max_connections)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// A pool that opens connections to `targets`; none is opened yet.
    /// `current` is the host the construction probe connected to.
    pub(crate) fn new(
        targets: Targets,
        current: usize,
        settings: PoolSettings,
        credentials: Option<Arc<Credentials>>,
    ) -> Self {
        Self(Arc::new(Shared {
            hosts: Hosts {
                targets: Arc::new(targets),
                current: Arc::new(AtomicUsize::new(current)),
            },
            permits: Semaphore::new(settings.max_connections as usize),
            settings,
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            credentials,
        }))
    }

    /// Takes `conn` (already open, e.g. the construction probe) as an idle
    /// connection, so the first call does not wait for a connection set-up.
    pub(crate) fn adopt(&self, conn: PgConnection) {
        self.open.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.idle.lock().expect("idle list").push(Idle {
            conn,
            opened: now,
            idle_since: now,
        });
    }

    /// The prefix of literal calls, when calls must be sent as literal text
    /// (behind a transaction pooler); `None` for prepared statements.
    pub(crate) fn literal_prefix(&self) -> Option<&str> {
        self.settings.literal_prefix.as_deref()
    }

    /// Opens `n` connections at once and keeps them idle, so the first calls
    /// of a fresh runtime find them ready. Stops at the first failure (the
    /// connections opened so far stay).
    pub(crate) async fn open_idle(&self, n: u32) -> Result<(), sqlx::Error> {
        let opened = futures_util::future::join_all((0..n).map(|_| self.connect())).await;
        let mut first_error = None;
        for conn in opened {
            match conn {
                Ok(conn) => self.adopt(conn),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.report();
        first_error.map_or(Ok(()), Err)
    }

    /// Most connections open at once.
    pub(crate) fn max_connections(&self) -> u32 {
        self.settings.max_connections
    }

    /// Connections open now (in use or idle).
    pub(crate) fn size(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections open and idle now.
    pub(crate) fn num_idle(&self) -> usize {
        self.idle.lock().expect("idle list").len()
    }

    /// Waits (at most the acquire timeout) for a connection: an idle one if
    /// any is still fresh, else a new one.
    pub(crate) async fn acquire(&self) -> Result<Checkout<'_>, sqlx::Error> {
        let started = Instant::now();
        let checkout = self.checkout(started + self.settings.acquire_timeout).await;
        crate::metrics::acquire_wait(&self.settings.schema, started.elapsed());
        self.report();
        checkout
    }

    /// Publishes the in-use and idle counts (metrics).
    fn report(&self) {
        let idle = self.num_idle();
        let in_use = self.size().saturating_sub(idle);
        crate::metrics::pool_connections(&self.settings.schema, in_use, idle);
    }

    /// A connection by `deadline` (the acquire timeout from the call's start).
    async fn checkout(&self, deadline: Instant) -> Result<Checkout<'_>, sqlx::Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let permit = tokio::time::timeout_at(deadline.into(), self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        while let Some(idle) = self.take_idle() {
            if let Some(idle) = self.answering_after_idling(idle).await {
                return Ok(Checkout {
                    pool: self,
                    conn: Some((idle.conn, idle.opened)),
                    _permit: permit,
                });
            }
        }
        let conn = self.connect_until(deadline).await?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Checkout {
            pool: self,
            conn: Some((conn, Instant::now())),
            _permit: permit,
        })
    }

    /// `idle`, if it may serve a call: at once unless it idled longer than
    /// [`PoolSettings::check_idle_after`]; then only if it answers a `Sync`
    /// (one round trip, no statement) within the grace. One that does not is
    /// discarded; when it stayed silent, so is every other idle connection,
    /// which idled through the same network.
    async fn answering_after_idling(&self, mut idle: Idle) -> Option<Idle> {
        if self
            .settings
            .check_idle_after
            .is_none_or(|after| idle.idle_since.elapsed() < after)
        {
            return Some(idle);
        }
        let grace = self.settings.silence_grace;
        match tokio::time::timeout(grace, idle.conn.ping()).await {
            Ok(Ok(())) => return Some(idle),
            Ok(Err(e)) => {
                tracing::debug!(target: "duroxide_pg", error = %e, "an idle connection was closed; discarded");
            }
            Err(_) => {
                tracing::warn!(
                    target: "duroxide_pg",
                    "an idle connection did not answer within {grace:?}; it and the other idle connections are discarded"
                );
                self.retire_idle();
            }
        }
        self.retire(idle.conn, false);
        self.report();
        None
    }

    /// Discards every idle connection without a word to the server (the link
    /// they share is broken or silent).
    fn retire_idle(&self) {
        let stale = std::mem::take(&mut *self.idle.lock().expect("idle list"));
        for idle in stale {
            self.retire(idle.conn, false);
        }
    }

    /// The most recently used idle connection still fresh, after retiring
    /// the stale ones; `None` when none is left.
    fn take_idle(&self) -> Option<Idle> {
        let now = Instant::now();
        // Sweep the whole (small) list, not only its top: with LIFO reuse the
        // bottom entries would otherwise never be checked and never rotate.
        // One lock scope, so no other caller sees the list empty meanwhile
        // (and opens a connection it did not need).
        // The common case (nothing stale) allocates nothing: this runs per call.
        let (taken, stale) = {
            let mut idle = self.idle.lock().expect("idle list");
            // The idle timeout retires only connections above the minimum;
            // the lifetime (and close) retires any.
            let min = self.settings.min_connections as usize;
            let worn_out = |i: &Idle| self.is_stale(i.opened, None, now);
            let idled_out = |i: &Idle| self.is_stale(i.opened, Some(i.idle_since), now);
            let stale =
                if idle.iter().any(worn_out) || (self.size() > min && idle.iter().any(idled_out)) {
                    let mut open = self.size();
                    let mut stale = Vec::new();
                    // Oldest idle first (the bottom of the LIFO list), so the
                    // connections kept are the most recently used.
                    for i in std::mem::take(&mut *idle) {
                        if worn_out(&i) || (open > min && idled_out(&i)) {
                            open -= 1;
                            stale.push(i);
                        } else {
                            idle.push(i);
                        }
                    }
                    stale
                } else {
                    Vec::new()
                };
            (idle.pop(), stale)
        };
        for i in stale {
            self.retire(i.conn, true);
        }
        taken
    }

    /// Opens one new connection on the first suitable host ([`Targets::open`]).
    /// The caller counts it in `open` when it keeps it.
    async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        let (host, conn) = self
            .hosts
            .targets
            .open(self.credentials.as_deref(), self.settings.connect_timeout)
            .await?;
        if self.hosts.current.swap(host, Ordering::Relaxed) != host {
            tracing::info!(
                target: "duroxide_pg",
                host = %self.hosts.targets.hosts[host].label,
                "connections now go to another host"
            );
        }
        crate::metrics::connection_opened(&self.settings.schema);
        Ok(conn)
    }

    /// Opens a connection for a call, waiting out a server that cannot be
    /// reached (down, restarting, in crash recovery, a failover under way:
    /// nothing has been sent yet, so waiting is always safe) until
    /// `deadline`, the call's acquire timeout. Why wait instead of failing at
    /// once: duroxide 0.1.32 retries a failed ack only five times within
    /// about 310 ms and then records the orchestration as *failed* if its
    /// next call gets through; an outage of a second would fail every
    /// orchestration whose turn was being acked.
    async fn connect_until(&self, deadline: Instant) -> Result<PgConnection, sqlx::Error> {
        let mut pause = Duration::from_millis(25);
        loop {
            match self.connect().await {
                Ok(conn) => return Ok(conn),
                Err(e)
                    if server_unavailable(&e)
                        && !self.closed.load(Ordering::Acquire)
                        && Instant::now() + pause < deadline =>
                {
                    tracing::debug!(target: "duroxide_pg", error = %e, "no connection yet; waiting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `query` and returns all it answered. `statement_timeout`: the
    /// timeout the query sets for itself, if it sets one (see
    /// `Call::bounded`); the answer is then awaited that long plus the grace
    /// instead of the pool's [`PoolSettings::response_timeout`].
    pub(crate) async fn fetch_all_within<'q, E>(
        &self,
        query: E,
        statement_timeout: Option<Duration>,
    ) -> Result<Vec<PgRow>, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let limit = match statement_timeout {
            Some(t) => Some(t + self.settings.silence_grace),
            None => self.settings.response_timeout,
        };
        let steps = self.exchange(query, limit).await?;
        Ok(steps
            .into_iter()
            .filter_map(|step| match step {
                Either::Right(row) => Some(row),
                Either::Left(_) => None,
            })
            .collect())
    }

    /// One call on a checked-out connection, its whole answer read within
    /// `limit`.
    async fn exchange<'q, E>(
        &self,
        query: E,
        limit: Option<Duration>,
    ) -> Result<Vec<Either<PgQueryResult, PgRow>>, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        let mut checkout = self.acquire().await?;
        let all = answered_within(limit, checkout.conn().fetch_many(query).try_collect()).await;
        checkout.finish(all)
    }

    /// The URL's hosts and which one new connections last went to.
    pub(crate) fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    fn is_stale(&self, opened: Instant, idle_since: Option<Instant>, now: Instant) -> bool {
        let too_old = self
            .settings
            .max_lifetime
            .is_some_and(|max| now.duration_since(opened) >= max);
        let idle_too_long = match (self.settings.idle_timeout, idle_since) {
            (Some(max), Some(since)) => now.duration_since(since) >= max,
            _ => false,
        };
        too_old || idle_too_long || self.closed.load(Ordering::Acquire)
    }

    /// Closes a connection that will not be reused: politely (Terminate) when
    /// its protocol state is known, by dropping the socket otherwise.
    fn retire(&self, conn: PgConnection, graceful: bool) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if graceful && let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = conn.close().await;
            });
        }
    }

    /// Stops handing out connections and closes the idle ones; connections in
    /// use close when their call ends.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle.lock().expect("idle list"));
        for i in idle {
            self.open.fetch_sub(1, Ordering::Relaxed);
            let _ = i.conn.close().await;
        }
    }
}

/// One connection lent out for one call. Returned to the pool only through
/// [`Checkout::finish`]; dropped any other way, the connection is discarded.
pub(crate) struct Checkout<'a> {
    pool: &'a Connections,
    conn: Option<(PgConnection, Instant)>,
    _permit: SemaphorePermit<'a>,
}

impl Checkout<'_> {
    /// The connection, for the one call this checkout serves.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn.as_mut().expect("checkout holds a connection").0
    }

    /// Ends the call: the connection goes back to the pool when `result`
    /// leaves it in a known protocol state, and is discarded otherwise.
    pub(crate) fn finish<T>(mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        let reusable = match &result {
            Ok(_) => true,
            // The server answered (an error, or rows we could not decode):
            // the exchange completed and the connection is in sync.
            // ...unless the server said it is ending the session (FATAL or
            // PANIC: shutdown, pg_terminate_backend, idle timeouts): then
            // the socket is dead however cleanly the error arrived.
            Err(sqlx::Error::Database(db)) => !session_ended(db.as_ref()),
            Err(
                sqlx::Error::RowNotFound
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::ColumnIndexOutOfBounds { .. }
                | sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::TypeNotFound { .. },
            ) => true,
            Err(_) => false,
        };
        if let Some((conn, opened)) = self.conn.take() {
            let now = Instant::now();
            let link_broke = match &result {
                Err(sqlx::Error::Io(_) | sqlx::Error::Protocol(_)) => true,
                Err(sqlx::Error::Database(db)) => session_ended(db.as_ref()),
                _ => false,
            };
            // The server refused a write: it is a standby now (a demoted
            // primary) or always was. Every connection to it is useless to a
            // provider; new ones look for the primary again.
            let role_lost = matches!(&result, Err(sqlx::Error::Database(db))
                if db.code().as_deref() == Some(READ_ONLY_SQL_TRANSACTION));
            let reusable = reusable && !role_lost;
            if link_broke || role_lost {
                // The link to the server broke (restart, failover, killed
                // backends) or it lost its role: the idle connections most
                // likely went with it, so close them now instead of failing
                // one call on each.
                self.pool.retire_idle();
            }
            let conn = if reusable && !self.pool.is_stale(opened, None, now) {
                let mut idle = self.pool.idle.lock().expect("idle list");
                // Re-checked under the lock: a concurrent close() has emptied
                // the list and must not see a connection pushed afterwards.
                if self.pool.closed.load(Ordering::Acquire) {
                    Some(conn)
                } else {
                    idle.push(Idle {
                        conn,
                        opened,
                        idle_since: now,
                    });
                    None
                }
            } else {
                Some(conn)
            };
            if let Some(conn) = conn {
                self.pool.retire(conn, reusable);
            }
        }
        self.pool.report();
        result
    }
}

/// Whether opening a connection failed because no suitable server answers
/// right now (as opposed to a refused login or a bad configuration): I/O,
/// the connect timeout, no host of the right role, a garbled handshake
/// (the fault schedule soak saw `unexpected response from SSLRequest: 0x00`
/// while the server restarted after a crash), `57P03` (starting up,
/// shutting down, in crash recovery), `53300` (too many connections) and
/// the `08` class. A bad configuration fails the provider's construction
/// first, which does not wait.
fn server_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c == CANNOT_CONNECT_NOW
                || c == TOO_MANY_CONNECTIONS
                || c.starts_with(CONNECTION_EXCEPTION_CLASS)
        }),
        _ => false,
    }
}

/// Whether a server error ended the session (severity FATAL or PANIC).
fn session_ended(db: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::postgres::{PgDatabaseError, PgSeverity};
    db.try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|e| matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic))
}

/// `exchange`'s outcome, or, when the server has not answered all of it
/// within `limit`, an I/O error (`TimedOut`, retryable) saying so: the
/// checkout that ran it then discards the connection and the idle ones.
async fn answered_within<T>(
    limit: Option<Duration>,
    exchange: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let Some(limit) = limit else {
        return exchange.await;
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the server sent no answer within {limit:?}: the connection is taken for lost \
                 (silent network) and closed"
                ),
            )))
        })
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        // Not finished: the call was abandoned mid-way; its state is unknown.
        if let Some((conn, _)) = self.conn.take() {
            self.pool.retire(conn, false);
            self.pool.report();
        }
    }
}

impl<'c> Executor<'c> for &'c Connections {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        // Buffered: our statements return small row sets, and the checkout must
        // be finished once the whole response has been read.
        futures_util::stream::once(self.exchange(query, self.settings.response_timeout))
            .map_ok(|steps| futures_util::stream::iter(steps.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        Box::pin(async move {
            let mut checkout = self.acquire().await?;
            let limit = self.settings.response_timeout;
            let row = answered_within(limit, checkout.conn().fetch_optional(query)).await;
            checkout.finish(row)
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut checkout = self.acquire().await?;
            let limit = self.settings.response_timeout;
            let statement =
                answered_within(limit, checkout.conn().prepare_with(sql, parameters)).await;
            checkout.finish(statement)
        })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut checkout = self.acquire().await?;
            let limit = self.settings.response_timeout;
            let described = answered_within(limit, checkout.conn().describe(sql)).await;
            checkout.finish(described)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn pool(max: u32, settings: impl FnOnce(&mut PoolSettings)) -> Connections {
        let url = duroxide_pg_testkit::local_cluster::database_url().expect("database");
        pool_on(&url, max, settings)
    }

    fn pool_on(url: &str, max: u32, settings: impl FnOnce(&mut PoolSettings)) -> Connections {
        let mut s = PoolSettings {
            max_connections: max,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_lifetime: None,
            idle_timeout: None,
            min_connections: 0,
            schema: "pool_test".into(),
            literal_prefix: None,
            response_timeout: None,
            silence_grace: Duration::from_secs(5),
            check_idle_after: None,
        };
        settings(&mut s);
        let targets = Targets {
            hosts: vec![Target {
                label: "test".into(),
                options: PgConnectOptions::from_str(url).unwrap(),
            }],
            attrs: TargetSessionAttrs::Any,
        };
        Connections::new(targets, 0, s, None)
    }

    async fn backend(p: &Connections) -> Result<i32, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(p)
            .await
    }

    #[tokio::test]
    async fn reuses_a_connection_after_success_and_after_a_server_error() {
        let p = pool(2, |_| {});
        let first = backend(&p).await.unwrap();
        assert_eq!(backend(&p).await.unwrap(), first);
        let err = sqlx::query("SELECT 1/0").execute(&p).await.unwrap_err();
        assert!(matches!(err, sqlx::Error::Database(_)), "{err}");
        assert_eq!(
            backend(&p).await.unwrap(),
            first,
            "a server error keeps the connection"
        );
        assert_eq!((p.size(), p.num_idle()), (1, 1));
        p.close().await;
        assert!(matches!(backend(&p).await, Err(sqlx::Error::PoolClosed)));
    }

    #[tokio::test]
    async fn a_call_abandoned_mid_way_discards_its_connection() {
        let p = pool(1, |_| {});
        let first = backend(&p).await.unwrap();
        let slow = sqlx::query("SELECT pg_sleep(5)").execute(&p);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), slow)
                .await
                .is_err()
        );
        assert_eq!(p.size(), 0, "the interrupted connection must not be reused");
        assert_ne!(backend(&p).await.unwrap(), first);
    }

    /// Regression: a backend terminated during a call reports a FATAL error
    /// (a database error, cleanly read); its connection was put back and the
    /// next call failed on the dead socket.
    #[tokio::test]
    async fn a_session_ended_by_the_server_is_not_reused() {
        let p = pool(1, |_| {});
        let first = backend(&p).await.unwrap();
        let err = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
            .execute(&p)
            .await
            .unwrap_err();
        assert!(matches!(err, sqlx::Error::Database(_)), "{err}");
        assert_eq!(p.size(), 0, "the ended session must be discarded");
        assert_ne!(backend(&p).await.unwrap(), first);
    }

    #[tokio::test]
    async fn waits_at_most_the_acquire_timeout_when_all_are_busy() {
        let p = pool(1, |s| s.acquire_timeout = Duration::from_millis(100));
        let held = p.acquire().await.unwrap();
        assert!(matches!(backend(&p).await, Err(sqlx::Error::PoolTimedOut)));
        drop(held);
        backend(&p).await.unwrap();
    }

    /// The connections up to the minimum (those construction opens ahead)
    /// are kept however long they idle; only those above it go when the idle
    /// timeout passes, the least recently used first.
    #[tokio::test]
    async fn connections_up_to_the_minimum_outlive_the_idle_timeout() {
        let p = pool(4, |s| {
            s.min_connections = 2;
            s.idle_timeout = Some(Duration::from_millis(50));
        });
        let held = [
            p.acquire().await.unwrap(),
            p.acquire().await.unwrap(),
            p.acquire().await.unwrap(),
        ];
        assert_eq!(p.size(), 3);
        for checkout in held {
            checkout.finish(Ok::<(), sqlx::Error>(())).unwrap();
        }
        assert_eq!((p.size(), p.num_idle()), (3, 3));
        tokio::time::sleep(Duration::from_millis(120)).await;
        // The next checkout sweeps: one goes, the minimum stays.
        let again = p.acquire().await.unwrap();
        assert_eq!((p.size(), p.num_idle()), (2, 1));
        again.finish(Ok::<(), sqlx::Error>(())).unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        backend(&p).await.unwrap();
        assert_eq!(p.size(), 2, "at the minimum, idle connections stay");
    }

    /// A connection the network forgot while it sat idle is checked before
    /// a call gets it, and replaced: the call succeeds, without waiting for
    /// its own response timeout.
    #[tokio::test]
    async fn a_long_idle_connection_that_went_silent_is_not_handed_out() {
        use duroxide_pg_testkit::delay_proxy::{self, DelayProxy};
        let url = duroxide_pg_testkit::local_cluster::database_url().expect("database");
        let upstream = delay_proxy::upstream_of(&url).await.unwrap();
        let proxy = DelayProxy::start(upstream, Duration::ZERO).await.unwrap();
        let through = delay_proxy::reroute_url(&url, proxy.local_addr()).unwrap();
        let grace = Duration::from_millis(300);
        let p = pool_on(&through, 2, |s| {
            s.response_timeout = Some(Duration::from_secs(60));
            s.silence_grace = grace;
            s.check_idle_after = Some(Duration::from_millis(100));
        });
        let first = backend(&p).await.unwrap();
        proxy.forget_connections();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        let second = backend(&p).await.unwrap();
        assert_ne!(second, first);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(started.elapsed() >= grace, "the check waited its bound");
        assert_eq!((p.size(), p.num_idle()), (1, 1));
        // Used again at once: not checked (no wait), the same connection.
        let started = Instant::now();
        assert_eq!(backend(&p).await.unwrap(), second);
        assert!(started.elapsed() < grace, "{:?}", started.elapsed());
    }

    /// Regression (fault schedule soak): a server that garbles the start of
    /// a connection (here: answers the SSLRequest with a 0x00 byte) failed
    /// the call at once, and duroxide recorded the orchestration whose ack
    /// it was as failed. Nothing was sent yet: the call now waits for a
    /// good connection within its acquire timeout.
    #[tokio::test]
    async fn a_garbled_handshake_is_retried_within_the_acquire_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = duroxide_pg_testkit::local_cluster::database_url().expect("database");
        let upstream = duroxide_pg_testkit::delay_proxy::upstream_of(&url)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if n < 2 {
                    let mut start = [0u8; 8];
                    let _ = client.read_exact(&mut start).await;
                    let _ = client.write_all(&[0]).await;
                    continue;
                }
                tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        let through = duroxide_pg_testkit::delay_proxy::reroute_url(&url, addr).unwrap();
        let through = if through.contains('?') {
            format!("{through}&sslmode=prefer")
        } else {
            format!("{through}?sslmode=prefer")
        };
        let p = pool_on(&through, 1, |_| {});
        backend(&p).await.expect("the third connection works");
    }

    #[tokio::test]
    async fn connections_past_their_lifetime_are_replaced() {
        let p = pool(1, |s| s.max_lifetime = Some(Duration::from_millis(50)));
        let first = backend(&p).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_ne!(backend(&p).await.unwrap(), first);
    }
}
