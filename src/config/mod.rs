//! Provider configuration: connection URL, schema, pool and migration behaviour.
//!
//! [`PostgresConfig`] (the builder, here), what it describes for connecting
//! (`connect`: driver options, hosts, pool settings, checks of what the
//! server reports), TLS (`tls`) and keeping passwords out of messages
//! (`redact`), the retention policy (`retention`). Settings and their checks
//! only: opening connections is `provider::establish`'s.

use std::sync::Arc;
use std::time::Duration;

use crate::credentials::CredentialSource;
use crate::env::{POOL_MAX_ENV, POOLER_ENV};
use crate::error::Error;

mod connect;
mod redact;
mod retention;
mod tls;

pub(crate) use connect::with_pooler_hint;
pub use redact::{redact_url, scrub};
pub use retention::RetentionPolicy;
pub use tls::SslMode;
use tls::TlsSettings;

/// Defaults and fixed bounds of the settings below, as constants of the
/// type they configure.
impl PostgresConfig {
    /// Pool size used when neither the configuration nor [`POOL_MAX_ENV`] sets one.
    pub const DEFAULT_POOL_MAX: u32 = 10;
    /// Connections opened in parallel at construction and kept open however long
    /// they idle, unless configured ([`PostgresConfig::with_min_connections`]):
    /// what a runtime with default options needs at once (two orchestration and
    /// two worker slots fetching), capped at the pool size.
    pub const DEFAULT_MIN_CONNECTIONS: u32 = 4;
    /// Schema used when none is given.
    pub const DEFAULT_SCHEMA: &str = "public";
    /// How long a provider call waits for a pooled connection by default.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long building a provider waits for its first connection by default.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Connections older than this are replaced by default, so rotated
    /// credentials and failovers reach every connection within this time.
    pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
    /// Connections idle longer than this are closed instead of reused by default.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

    /// The server-side `statement_timeout` of every provider call unless
    /// configured ([`PostgresConfig::with_statement_timeout`]).
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long beyond its statement timeout a call waits for the server's
    /// answer before its connection is taken for lost, unless configured
    /// ([`PostgresConfig::with_silence_timeout`]).
    pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(5);
    /// A pooled connection that sat idle longer than this is checked (one
    /// round trip, no statement, bounded by the silence timeout) before a call
    /// gets it: the network may have forgotten it meanwhile.
    pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(30);

    /// How far this host's clock may differ from the database server's when a
    /// provider is built, unless configured
    /// ([`PostgresConfig::with_max_clock_skew`]).
    pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);
    /// A difference between this host's clock and the server's above this is
    /// logged (WARN) when a provider is built.
    pub const CLOCK_SKEW_WARNING: Duration = Duration::from_millis(500);

    /// How long a waiting fetch goes without looking at the tables by default,
    /// should a wake-up hint be lost (a listener reconnecting, a pooler).
    pub const DEFAULT_FALLBACK_POLL: Duration = Duration::from_secs(10);

    /// `application_name` of the provider's connections unless configured.
    pub const DEFAULT_APPLICATION_NAME: &str = "duroxide-pg";
}

/// What building a provider does about the schema's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationMode {
    /// Create the schema if needed and apply every pending migration (default).
    #[default]
    Apply,
    /// Change nothing; fail unless every bundled migration is already applied.
    /// For processes whose database role may not run DDL.
    VerifyOnly,
}

/// How the fetch calls wait when there is no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PollMode {
    /// Honour the runtime's `poll_timeout`: wait inside the fetch until work
    /// becomes visible, woken by PostgreSQL `LISTEN`/`NOTIFY` (one listener
    /// connection per provider) and by the fire time of the next delayed item,
    /// with a bounded fallback poll in case a notification is missed (default).
    #[default]
    LongPoll,
    /// Return at once when there is no work and let the runtime poll. For
    /// connection poolers in transaction mode (PgBouncer), where `LISTEN`
    /// does not work.
    PollOnly,
}

/// What sits between the provider and PostgreSQL
/// ([`PostgresConfig::with_pooler`], or [`POOLER_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooler {
    /// Direct connections, or a pooler in session mode: every connection keeps
    /// one server session for its lifetime (default). Calls use prepared
    /// statements; waiting fetches use `LISTEN`/`NOTIFY`.
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`,
    /// including 1.18 and other versions without prepared-statement
    /// tracking): consecutive transactions of one client connection may run on
    /// different server sessions. The provider then keeps nothing in a
    /// session: each call goes out as one simple-query message with its
    /// arguments as literals (no named prepared statement another client could
    /// run or collide with; still one round trip), sends no startup `options`
    /// (the transaction's settings travel with each call), and polls
    /// ([`PollMode::PollOnly`]; `LISTEN` needs a session).
    Transaction,
}

/// Everything needed to build a [`crate::PostgresProvider`]. Build it with
/// [`PostgresConfig::new`] and the `with_*` methods, then call
/// [`crate::PostgresProvider::connect`].
#[derive(Clone)]
pub struct PostgresConfig {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) max_connections: Option<u32>,
    pub(crate) min_connections: Option<u32>,
    pub(crate) acquire_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) migrations: MigrationMode,
    /// `None`: long polling, or poll-only behind a transaction pooler.
    pub(crate) poll_mode: Option<PollMode>,
    /// `None`: from [`POOLER_ENV`], else [`Pooler::None`].
    pub(crate) pooler: Option<Pooler>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) application_name: String,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) silence_timeout: Duration,
    pub(crate) max_clock_skew: Option<Duration>,
    pub(crate) worker_prefetch: bool,
    pub(crate) fallback_poll: Duration,
    pub(crate) credential_source: Option<Arc<dyn CredentialSource>>,
    pub(crate) tls: TlsSettings,
    /// `None`: nothing is ever deleted by policy (the default).
    pub(crate) retention: Option<RetentionPolicy>,
    /// `None`: the queue tables are left to autovacuum (the default).
    pub(crate) queue_vacuum: Option<Duration>,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("migrations", &self.migrations)
            .field("poll_mode", &self.poll_mode)
            .field("pooler", &self.pooler)
            .field("max_lifetime", &self.max_lifetime)
            .field("idle_timeout", &self.idle_timeout)
            .field("application_name", &self.application_name)
            .field("statement_timeout", &self.statement_timeout)
            .field("silence_timeout", &self.silence_timeout)
            .field("max_clock_skew", &self.max_clock_skew)
            .field("worker_prefetch", &self.worker_prefetch)
            .field("fallback_poll", &self.fallback_poll)
            .field("credential_source", &self.credential_source.is_some())
            .field("tls", &self.tls)
            .field("retention", &self.retention)
            .field("queue_vacuum", &self.queue_vacuum)
            .finish()
    }
}

impl PostgresConfig {
    /// A configuration for `url` (`postgres://user:password@host:port/db?...`;
    /// several hosts, `postgres://user@h1:5432,h2:5432/db`, with
    /// `target_session_attrs`: see [`crate::TargetSessionAttrs`]) with the
    /// defaults: schema `public`, pool size from
    /// `DUROXIDE_PG_POOL_MAX` or 10, 30 s acquire timeout, 10 s connect
    /// timeout, migrations applied, long polling.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: Self::DEFAULT_SCHEMA.to_string(),
            max_connections: None,
            min_connections: None,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            migrations: MigrationMode::Apply,
            poll_mode: None,
            pooler: None,
            max_lifetime: Some(Self::DEFAULT_MAX_LIFETIME),
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            application_name: Self::DEFAULT_APPLICATION_NAME.to_string(),
            statement_timeout: Some(Self::DEFAULT_STATEMENT_TIMEOUT),
            silence_timeout: Self::DEFAULT_SILENCE_TIMEOUT,
            max_clock_skew: Some(Self::DEFAULT_MAX_CLOCK_SKEW),
            worker_prefetch: true,
            fallback_poll: Self::DEFAULT_FALLBACK_POLL,
            credential_source: None,
            tls: TlsSettings::default(),
            retention: None,
            queue_vacuum: None,
        }
    }

    /// Use `schema` (validated when the provider is built; see [`validate_schema_name`]).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Pool size; overrides `DUROXIDE_PG_POOL_MAX`.
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Connections opened in parallel while the provider is built and kept
    /// open however long they idle (default [`Self::DEFAULT_MIN_CONNECTIONS`],
    /// capped at the pool size; 0 opens none ahead). A fresh runtime's first
    /// calls then find them ready instead of each paying a connection set-up
    /// (TCP, TLS, authentication). At most the pool size.
    pub fn with_min_connections(mut self, min: u32) -> Self {
        self.min_connections = Some(min);
        self
    }

    /// How long a provider call may wait for a connection: a free one of the
    /// pool, or a new one while the server cannot be reached (restarting, in
    /// crash recovery, a failover under way). Then the call fails with a
    /// retryable error.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long opening one connection to one host may take (the first
    /// connection at construction, and every new one of the pool; with
    /// several hosts in the URL, each host tried gets this long).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Apply migrations (default) or only verify them.
    pub fn with_migrations(mut self, mode: MigrationMode) -> Self {
        self.migrations = mode;
        self
    }

    /// Long polling (default) or poll-only.
    pub fn with_poll_mode(mut self, mode: PollMode) -> Self {
        self.poll_mode = Some(mode);
        self
    }

    /// Declare the connection pooler in front of the server (default: the
    /// [`POOLER_ENV`] environment variable, else [`Pooler::None`]). Behind
    /// PgBouncer or another pooler in transaction mode, set
    /// [`Pooler::Transaction`]; with the default, a pooler that drops the
    /// connection's startup options is detected at construction and refused
    /// ([`crate::Error::PoolerDetected`]).
    pub fn with_pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = Some(pooler);
        self
    }

    /// The pooler this configuration resolves to: the explicit setting, else
    /// [`POOLER_ENV`], else [`Pooler::None`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the variable holds anything but
    /// `transaction` or `none`.
    pub fn resolved_pooler(&self) -> Result<Pooler, Error> {
        if let Some(p) = self.pooler {
            return Ok(p);
        }
        match std::env::var(POOLER_ENV) {
            Err(_) => Ok(Pooler::None),
            Ok(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "" | "none" => Ok(Pooler::None),
                "transaction" => Ok(Pooler::Transaction),
                _ => Err(Error::InvalidConfig(format!(
                    "{POOLER_ENV}={raw:?} is not a pooler mode: use \"transaction\" (PgBouncer and \
                     other poolers in transaction mode) or \"none\""
                ))),
            },
        }
    }

    /// How fetches wait: the explicit setting, else long polling, except
    /// behind a transaction pooler, where only polling works.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for long polling behind a transaction pooler.
    pub fn resolved_poll_mode(&self) -> Result<PollMode, Error> {
        match (self.resolved_pooler()?, self.poll_mode) {
            (Pooler::None, mode) => Ok(mode.unwrap_or_default()),
            (Pooler::Transaction, None | Some(PollMode::PollOnly)) => Ok(PollMode::PollOnly),
            (Pooler::Transaction, Some(PollMode::LongPoll)) => Err(Error::InvalidConfig(
                "long polling needs LISTEN, which a transaction pooler cannot carry: use \
                 PollMode::PollOnly (the default behind Pooler::Transaction)"
                    .into(),
            )),
        }
    }

    /// Replace connections older than `lifetime` (`None`: keep them for
    /// ever). Default 30 minutes.
    pub fn with_max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// Close connections idle longer than `timeout` (`None`: keep them).
    /// Default 10 minutes.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The `application_name` the provider's connections report
    /// (`pg_stat_activity`, server logs). Default `duroxide-pg`.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The server-side `statement_timeout` of every provider call (default
    /// [`Self::DEFAULT_STATEMENT_TIMEOUT`], 30 s; `None`: the server's setting).
    /// Provider calls are short statements; waiting for work happens in the
    /// client, never in a statement, so a timeout of a few seconds is safe. A
    /// timed-out call fails as retryable.
    ///
    /// It also bounds how long the client waits for any call's answer: the
    /// statement timeout plus the [silence timeout](Self::with_silence_timeout).
    /// With `None` a call whose connection went silent waits as long as the
    /// kernel retransmits (about 15 minutes on Linux).
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long beyond its statement timeout a call waits for the server's
    /// answer before its connection is taken for lost (default
    /// [`Self::DEFAULT_SILENCE_TIMEOUT`], 5 s; 1 ms to 10 minutes). Networks fail
    /// silently: a partition, or a NAT or load balancer that forgot an idle
    /// connection, drops packets without an error. Past this bound the call
    /// fails as retryable, and its connection and the idle ones are closed;
    /// the next call opens a new one. The server cancels a statement at its
    /// timeout, so a live server always answers before this. The same bound
    /// applies to checking a connection that idled longer than
    /// [`Self::CHECK_IDLE_AFTER`].
    pub fn with_silence_timeout(mut self, timeout: Duration) -> Self {
        self.silence_timeout = timeout;
        self
    }

    /// How far this host's clock may differ from the database server's
    /// (default [`Self::DEFAULT_MAX_CLOCK_SKEW`], 2 s; `None`: not checked).
    /// Building the provider reads the server's clock in the same round trip
    /// that checks the session, and refuses with [`Error::ClockSkew`] beyond
    /// this bound (a difference above [`Self::CLOCK_SKEW_WARNING`] is logged).
    ///
    /// Why: leases, timers and delays are judged by the calling runtime's
    /// clock (one clock per call, never mixed with the server's). Runtimes
    /// whose clocks differ by δ still complete every orchestration exactly
    /// once, but the one ahead takes over the others' leases δ early
    /// (activities then run twice: at-least-once), and timers fire up to δ
    /// early or late. The measured effects are in RELIABILITY.md.
    pub fn with_max_clock_skew(mut self, max: Option<Duration>) -> Self {
        self.max_clock_skew = max;
        self
    }

    /// Whether acking an activity also leases the next ready one (default
    /// `true`). The runtime's worker slot fetches again right after every
    /// ack; with prefetch that fetch is answered from memory, saving one round
    /// trip per activity. The item leased ahead is the one that fetch would
    /// have leased, with the previous fetch's arguments; at most
    /// [`PostgresProvider::PREFETCH_LIMIT`](crate::PostgresProvider::PREFETCH_LIMIT) are held, one not taken by a fetch within
    /// [`PostgresProvider::PREFETCH_HOLD`](crate::PostgresProvider::PREFETCH_HOLD) is released (its attempt count restored), and
    /// a fetch with other arguments releases them first, so other fetches
    /// never wait long for them. Leases shorter than 2 s are never leased
    /// ahead. Turn it off to make every fetch go to the database.
    pub fn with_worker_prefetch(mut self, enabled: bool) -> Self {
        self.worker_prefetch = enabled;
        self
    }

    /// The longest a waiting fetch goes without looking at the tables
    /// (default [`Self::DEFAULT_FALLBACK_POLL`], 10 s). Work normally wakes a waiting
    /// fetch within milliseconds through `LISTEN`/`NOTIFY` and at the fire time
    /// of delayed items; this interval only bounds the delay when a wake-up is
    /// lost (the listener reconnecting). Each waiting fetch costs one query per
    /// interval when idle. Must be at least 1 ms.
    pub fn with_fallback_poll(mut self, interval: Duration) -> Self {
        self.fallback_poll = interval;
        self
    }

    /// Delete finished work by `policy` in the background (off by default:
    /// nothing is ever deleted unless configured). Every provider with a
    /// policy runs a sweeper; one sweeps a schema at a time, across
    /// processes, and the others skip their turn while it does. The policy
    /// is checked when the provider is built ([`crate::RetentionPolicy::validate`]).
    pub fn with_retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = Some(policy);
        self
    }

    /// Vacuum the schema's queue tables every `interval` (`None`, the
    /// default: leave them to autovacuum). Each visit checks the statistics
    /// and runs `VACUUM (SKIP_LOCKED)` on the queue tables holding 1,000 dead
    /// tuples or more that the provider's role owns: it keeps them small
    /// and their claims fast between autovacuum's visits, which come once
    /// per `autovacuum_naptime` (1 min by default). At least 1 s; 10 s is a
    /// good value for a busy store (docs/operations.md "Bloat and autovacuum").
    pub fn with_queue_vacuum(mut self, interval: Option<Duration>) -> Self {
        self.queue_vacuum = interval;
        self
    }

    /// The queue vacuum interval, checked.
    pub(crate) fn resolved_queue_vacuum(&self) -> Result<Option<Duration>, Error> {
        match self.queue_vacuum {
            Some(i) if i < Duration::from_secs(1) => Err(Error::InvalidConfig(format!(
                "queue vacuum interval {i:?} is shorter than 1 s"
            ))),
            i => Ok(i),
        }
    }

    /// Take the password from `source` (asked at every connection open,
    /// refreshed ahead of expiry; see [`crate::credentials`]) instead of the
    /// URL, `PGPASSWORD` or the password file. The URL's user name is still
    /// used.
    pub fn with_credential_source(mut self, source: impl CredentialSource) -> Self {
        self.credential_source = Some(Arc::new(source));
        self
    }

    /// Use TLS as `mode` says (overrides the URL's `sslmode`).
    pub fn with_ssl_mode(mut self, mode: SslMode) -> Self {
        self.tls.mode = Some(mode);
        self
    }

    /// Check the server's certificate against the PEM root certificate(s) in
    /// `path` (overrides the URL's `sslrootcert`). Cloud providers publish
    /// theirs (Azure: DigiCert Global Root G2; RDS: the region's bundle).
    pub fn with_ssl_root_cert(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.root_cert = Some(path.into());
        self
    }

    /// Log in with a client certificate and its private key, both PEM files
    /// (overrides the URL's `sslcert` / `sslkey`).
    pub fn with_ssl_client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// The schema this configuration names.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// How many connections construction opens and the pool keeps: the
    /// explicit value, else [`Self::DEFAULT_MIN_CONNECTIONS`] capped at the pool size.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when it exceeds the pool size (or that is invalid).
    pub fn resolved_min_connections(&self) -> Result<u32, Error> {
        let max = self.resolved_max_connections()?;
        match self.min_connections {
            None => Ok(Self::DEFAULT_MIN_CONNECTIONS.min(max)),
            Some(min) if min <= max => Ok(min),
            Some(min) => Err(Error::InvalidConfig(format!(
                "min_connections ({min}) exceeds the pool size ({max})"
            ))),
        }
    }

    /// The pool size this configuration resolves to: the explicit value, else
    /// `DUROXIDE_PG_POOL_MAX`, else 10.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the size is 0 or the variable is not a
    /// positive integer.
    pub fn resolved_max_connections(&self) -> Result<u32, Error> {
        let max = match self.max_connections {
            Some(n) => n,
            None => match std::env::var(POOL_MAX_ENV) {
                Ok(raw) => raw.trim().parse::<u32>().map_err(|_| {
                    Error::InvalidConfig(format!(
                        "{POOL_MAX_ENV}={raw:?} is not a positive integer"
                    ))
                })?,
                Err(_) => Self::DEFAULT_POOL_MAX,
            },
        };
        if max == 0 {
            return Err(Error::InvalidConfig(
                "the pool size must be at least 1".into(),
            ));
        }
        Ok(max)
    }
}

/// Checks that `name` can serve as a duroxide-pg schema: 1 to 63 bytes of
/// lowercase ASCII letters, digits and underscores, starting with a letter or
/// underscore, and not one of PostgreSQL's reserved `pg_` names.
///
/// # Errors
/// [`Error::InvalidSchemaName`] saying what is wrong.
pub fn validate_schema_name(name: &str) -> Result<(), Error> {
    let reject = |reason| {
        Err(Error::InvalidSchemaName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return reject("it is empty");
    }
    if name.len() > 63 {
        return reject("it is longer than PostgreSQL's 63-byte identifier limit");
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first == b'_') {
        return reject("it must start with a lowercase letter or an underscore");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return reject("only lowercase ASCII letters, digits and underscores are allowed");
    }
    if name.starts_with("pg_") || name == "information_schema" {
        return reject("names starting with pg_ and information_schema are reserved by PostgreSQL");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
