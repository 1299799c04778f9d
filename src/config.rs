//! Provider configuration: connection URL, schema, pool and migration behaviour.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::credentials::{CredentialSource, Credentials};
use crate::error::Error;

/// Idle connections of the sqlx pool [`PostgresConfig::open_pool`] returns
/// close after this: it serves migrations and tools, rarely anything else.
const TOOLS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable that sets the pool size when the configuration does not.
pub const POOL_MAX_ENV: &str = "DUROXIDE_PG_POOL_MAX";
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

/// How long a waiting fetch goes without looking at the tables by default,
/// should a wake-up hint be lost (a listener reconnecting, a pooler).
pub const DEFAULT_FALLBACK_POLL: Duration = Duration::from_secs(10);

/// `application_name` of the provider's connections unless configured.
pub const DEFAULT_APPLICATION_NAME: &str = "duroxide-pg";

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

/// Environment variable naming the connection pooler in front of the server
/// when the configuration does not (`transaction` or `none`): operators can
/// put a process behind PgBouncer without a code change.
pub const POOLER_ENV: &str = "DUROXIDE_PG_POOLER";

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
    pub(crate) worker_prefetch: bool,
    pub(crate) fallback_poll: Duration,
    pub(crate) credential_source: Option<Arc<dyn CredentialSource>>,
    pub(crate) tls: TlsSettings,
}

/// `current_setting('search_path')` by the simple-query protocol. A named,
/// concrete function keeps the caller's future `Send` (as `exec_script` in
/// the migration runner).
fn current_search_path<'c>(
    conn: &'c mut PgConnection,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<sqlx::postgres::PgRow, sqlx::Error>> + Send + 'c>,
> {
    Box::pin(async move {
        // A plain `&str` runs as a simple query: nothing is prepared.
        sqlx::Executor::fetch_one(conn, "SELECT current_setting('search_path')").await
    })
}

/// PgBouncer refuses a login that carries startup parameters it does not
/// know (`options`, which the default configuration sends): say what to do.
fn with_pooler_hint(reason: String) -> String {
    if reason.contains("unsupported startup parameter") {
        format!(
            "{reason} (a connection pooler such as PgBouncer refused the startup options: behind \
             a pooler in transaction mode set PostgresConfig::with_pooler(Pooler::Transaction) or \
             {POOLER_ENV}=transaction)"
        )
    } else {
        reason
    }
}

/// How the provider's connections use TLS: libpq's `sslmode`, settable in the
/// URL (`?sslmode=verify-full`) or with [`PostgresConfig::with_ssl_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate
    /// (the URL default).
    Prefer,
    /// TLS always, without checking the certificate.
    Require,
    /// TLS always; the certificate must chain to the root certificate.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    /// What a managed cloud database should use.
    VerifyFull,
}

/// TLS settings given through the configuration (they override the URL's).
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    mode: Option<SslMode>,
    root_cert: Option<std::path::PathBuf>,
    client: Option<(std::path::PathBuf, std::path::PathBuf)>,
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
            .field("worker_prefetch", &self.worker_prefetch)
            .field("fallback_poll", &self.fallback_poll)
            .field("credential_source", &self.credential_source.is_some())
            .field("tls", &self.tls)
            .finish()
    }
}

impl PostgresConfig {
    /// A configuration for `url` (`postgres://user:password@host:port/db?...`)
    /// with the defaults: schema `public`, pool size from
    /// `DUROXIDE_PG_POOL_MAX` or 10, 30 s acquire timeout, 10 s connect
    /// timeout, migrations applied, long polling.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_string(),
            max_connections: None,
            min_connections: None,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            migrations: MigrationMode::Apply,
            poll_mode: None,
            pooler: None,
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            application_name: DEFAULT_APPLICATION_NAME.to_string(),
            statement_timeout: None,
            worker_prefetch: true,
            fallback_poll: DEFAULT_FALLBACK_POLL,
            credential_source: None,
            tls: TlsSettings::default(),
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
    /// open however long they idle (default [`DEFAULT_MIN_CONNECTIONS`],
    /// capped at the pool size; 0 opens none ahead). A fresh runtime's first
    /// calls then find them ready instead of each paying a connection set-up
    /// (TCP, TLS, authentication). At most the pool size.
    pub fn with_min_connections(mut self, min: u32) -> Self {
        self.min_connections = Some(min);
        self
    }

    /// How long a provider call may wait for a free pooled connection.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long building the provider may wait for its first connection.
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

    /// A server-side `statement_timeout` for every provider call (`None`, the
    /// default: the server's setting). Provider calls are short statements;
    /// waiting for work happens in the client, never in a statement, so a
    /// timeout of a few seconds is safe. A timed-out call fails as retryable.
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Whether acking an activity also leases the next ready one (default
    /// `true`). The runtime's worker slot fetches again right after every
    /// ack; with prefetch that fetch is answered from memory, saving one round
    /// trip per activity. The item leased ahead is the one that fetch would
    /// have leased, with the previous fetch's arguments; at most
    /// [`crate::PREFETCH_LIMIT`] are held, one not taken by a fetch within
    /// [`crate::PREFETCH_HOLD`] is released (its attempt count restored), and
    /// a fetch with other arguments releases them first, so other fetches
    /// never wait long for them. Leases shorter than 2 s are never leased
    /// ahead. Turn it off to make every fetch go to the database.
    pub fn with_worker_prefetch(mut self, enabled: bool) -> Self {
        self.worker_prefetch = enabled;
        self
    }

    /// The longest a waiting fetch goes without looking at the tables
    /// (default [`DEFAULT_FALLBACK_POLL`], 10 s). Work normally wakes a waiting
    /// fetch within milliseconds through `LISTEN`/`NOTIFY` and at the fire time
    /// of delayed items; this interval only bounds the delay when a wake-up is
    /// lost (the listener reconnecting). Each waiting fetch costs one query per
    /// interval when idle. Must be at least 1 ms.
    pub fn with_fallback_poll(mut self, interval: Duration) -> Self {
        self.fallback_poll = interval;
        self
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
    /// explicit value, else [`DEFAULT_MIN_CONNECTIONS`] capped at the pool size.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when it exceeds the pool size (or that is invalid).
    pub fn resolved_min_connections(&self) -> Result<u32, Error> {
        let max = self.resolved_max_connections()?;
        match self.min_connections {
            None => Ok(DEFAULT_MIN_CONNECTIONS.min(max)),
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
                Err(_) => DEFAULT_POOL_MAX,
            },
        };
        if max == 0 {
            return Err(Error::InvalidConfig(
                "the pool size must be at least 1".into(),
            ));
        }
        Ok(max)
    }

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
    pub async fn open_pool(&self) -> Result<PgPool, Error> {
        let credentials = self.credentials();
        let probe = self.probe(credentials.as_deref()).await?;
        let _ = probe.close().await;
        let pool = self.tools_pool()?;
        if let Some(c) = &credentials {
            c.keep_current(&pool, self.driver_options()?);
        }
        Ok(pool)
    }

    /// The provider's view of the credential source, if there is one.
    pub(crate) fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credential_source.clone().map(Credentials::new)
    }

    /// One direct connection, within the connect timeout: fails fast on a
    /// refused connection (a pool would keep retrying until its timeout) and
    /// proves the URL works. Validates the configuration first.
    pub(crate) async fn probe(
        &self,
        credentials: Option<&Credentials>,
    ) -> Result<PgConnection, Error> {
        validate_schema_name(&self.schema)?;
        self.resolved_min_connections()?;
        self.resolved_poll_mode()?;
        if self.fallback_poll < Duration::from_millis(1) {
            return Err(Error::InvalidConfig(format!(
                "the fallback poll interval must be at least 1 ms, got {:?}",
                self.fallback_poll
            )));
        }
        let mut options = self.driver_options()?;
        let (host, port, user) = (
            options.get_host().to_string(),
            options.get_port(),
            options.get_username().to_string(),
        );
        let connect_error = |reason: String| Error::Connect {
            host: host.clone(),
            port,
            user: user.clone(),
            reason: scrub(&reason, &self.url),
        };
        if let Some(c) = credentials {
            options = c
                .apply(options.clone())
                .await
                .map_err(|e| connect_error(format!("the credential source failed: {e}")))?;
        }
        match tokio::time::timeout(self.connect_timeout, PgConnection::connect_with(&options)).await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(connect_error(with_pooler_hint(e.to_string()))),
            Err(_) => Err(connect_error(format!(
                "no connection within the connect timeout of {:?}",
                self.connect_timeout
            ))),
        }
    }

    /// With [`Pooler::None`], proves the server applied this connection's
    /// startup options. A pooler that drops them (PgBouncer with
    /// `ignore_startup_parameters = options`) most likely also moves a
    /// client between server sessions, where a prepared statement's name
    /// could reach another client's statement: refused before any call.
    /// One simple-query round trip (nothing named is prepared for it).
    pub(crate) async fn check_session_kept(&self, conn: &mut PgConnection) -> Result<(), Error> {
        if self.resolved_pooler()? == Pooler::Transaction {
            return Ok(());
        }
        let row = current_search_path(conn)
            .await
            .map_err(|e| Error::Database {
                operation: "check the connection's session settings",
                reason: e.to_string(),
            })?;
        let search_path: String = sqlx::Row::try_get(&row, 0).map_err(|e| Error::Database {
            operation: "check the connection's session settings",
            reason: e.to_string(),
        })?;
        if search_path == self.schema {
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

    /// The lazily connected sqlx pool for migrations and tools.
    pub(crate) fn tools_pool(&self) -> Result<PgPool, Error> {
        Ok(PgPoolOptions::new()
            .max_connections(self.resolved_max_connections()?)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(TOOLS_IDLE_TIMEOUT))
            .max_lifetime(self.max_lifetime)
            .connect_lazy_with(self.driver_options()?))
    }

    /// Settings of the provider's own connection pool.
    pub(crate) fn pool_settings(&self) -> Result<crate::connections::PoolSettings, Error> {
        Ok(crate::connections::PoolSettings {
            max_connections: self.resolved_max_connections()?,
            min_connections: self.resolved_min_connections()?,
            acquire_timeout: self.acquire_timeout,
            connect_timeout: self.connect_timeout,
            max_lifetime: self.max_lifetime,
            idle_timeout: self.idle_timeout,
            schema: self.schema.clone(),
            literal_prefix: match self.resolved_pooler()? {
                Pooler::None => None,
                Pooler::Transaction => Some(self.transaction_settings()?),
            },
        })
    }

    /// Behind a transaction pooler, what the startup options carry otherwise,
    /// as statements that open each call's (implicit) transaction: the
    /// isolation level the stored functions rely on and the statement
    /// timeout. `SET LOCAL` lasts only for that transaction, so nothing is
    /// left on the server session for the pooler's next client.
    fn transaction_settings(&self) -> Result<String, Error> {
        let mut prefix = String::from("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; ");
        if let Some(t) = self.statement_timeout()? {
            prefix.push_str(&format!(
                "SET LOCAL statement_timeout = '{}ms'; ",
                t.as_millis()
            ));
        }
        Ok(prefix)
    }

    /// The configured statement timeout, checked.
    fn statement_timeout(&self) -> Result<Option<Duration>, Error> {
        match self.statement_timeout {
            Some(t) if t.is_zero() => Err(Error::InvalidConfig(
                "statement_timeout must be positive (use None for no timeout)".into(),
            )),
            t => Ok(t),
        }
    }

    /// Driver options for every connection the provider opens. The
    /// `search_path` is pinned to the provider's schema whatever the URL's
    /// `options` say (startup options apply in order, so ours, last, win);
    /// calls are schema-qualified anyway, this covers anything that is not.
    pub(crate) fn driver_options(&self) -> Result<PgConnectOptions, Error> {
        if self.application_name.is_empty() || self.application_name.len() > 63 {
            return Err(Error::InvalidConfig(format!(
                "application_name must be 1 to 63 bytes, got {} bytes",
                self.application_name.len()
            )));
        }
        let options = self
            .connect_options()?
            .application_name(&self.application_name);
        // A transaction pooler keeps no session settings (PgBouncer refuses
        // or drops `options`): they travel with each call instead.
        if self.resolved_pooler()? == Pooler::Transaction {
            self.statement_timeout()?;
            return Ok(options);
        }
        // READ COMMITTED whatever the role or database default: the stored
        // functions rely on a statement that waited for a row lock seeing what
        // committed meanwhile (migration 0009's held messages).
        let mut settings = vec![
            ("search_path".to_string(), self.schema.clone()),
            (
                "default_transaction_isolation".to_string(),
                "read\\ committed".to_string(),
            ),
        ];
        if let Some(t) = self.statement_timeout()? {
            settings.push((
                "statement_timeout".to_string(),
                format!("{}ms", t.as_millis()),
            ));
        }
        Ok(options.options(settings))
    }

    /// Parses the URL into driver options.
    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, Error> {
        let options = PgConnectOptions::from_str(&self.url).map_err(|e| Error::InvalidUrl {
            url: redact_url(&self.url),
            reason: scrub(&e.to_string(), &self.url),
        })?;
        self.tls.apply(options)
    }
}

impl TlsSettings {
    /// `options` with these settings on top. Files are checked here, so a
    /// wrong path is a configuration error, not a connection failure.
    fn apply(&self, mut options: PgConnectOptions) -> Result<PgConnectOptions, Error> {
        use sqlx::postgres::PgSslMode;
        fn readable(what: &str, path: &std::path::Path) -> Result<(), Error> {
            std::fs::File::open(path)
                .map(drop)
                .map_err(|e| Error::InvalidConfig(format!("{what} {}: {e}", path.display())))
        }
        if let Some(mode) = self.mode {
            options = options.ssl_mode(match mode {
                SslMode::Disable => PgSslMode::Disable,
                SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            });
        }
        if let Some(root) = &self.root_cert {
            readable("TLS root certificate", root)?;
            options = options.ssl_root_cert(root);
        }
        if let Some((cert, key)) = &self.client {
            readable("TLS client certificate", cert)?;
            readable("TLS client key", key)?;
            options = options.ssl_client_cert(cert).ssl_client_key(key);
        }
        Ok(options)
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

/// Where the password sits in `url`, as byte ranges (userinfo and/or the
/// `password=` query parameter).
fn password_ranges(url: &str) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let auth_start = scheme_end + 3;
        let auth_end = url[auth_start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| auth_start + i);
        let at = match url[auth_start..auth_end].rfind('@') {
            Some(i) => Some(auth_start + i),
            // No '@' before the first '/', '?' or '#', but one after: a
            // password holding those characters unencoded (the URL is then
            // malformed, and its error must not show it). Hide up to that '@';
            // hiding too much of an odd URL is the safe mistake.
            None => url[auth_end..].find('@').map(|i| auth_end + i),
        };
        if let Some(at) = at
            && let Some(colon) = url[auth_start..at].find(':')
        {
            ranges.push(auth_start + colon + 1..at);
        }
    }
    if let Some(q) = url.find('?') {
        let mut pos = q + 1;
        for pair in url[q + 1..].split('&') {
            if let Some((k, _)) = pair.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                ranges.push(pos + k.len() + 1..pos + pair.len());
            }
            pos += pair.len() + 1;
        }
    }
    ranges
}

/// Returns `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    // Replace from the back so earlier ranges stay valid.
    for range in password_ranges(url).into_iter().rev() {
        out.replace_range(range, "***");
    }
    out
}

/// Removes the URL's password (as written and percent-decoded) from a message.
pub fn scrub(message: &str, url: &str) -> String {
    let mut out = message.to_string();
    for range in password_ranges(url) {
        let raw = &url[range];
        for secret in [raw.to_string(), percent_decode(raw)] {
            if !secret.is_empty() {
                out = out.replace(&secret, "***");
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Checked on bytes: slicing the str at i + 1 could cut a multi-byte
        // character (and the panic message would quote the password).
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a '%' before a multi-byte character made the decoder
    /// slice inside the character and panic, quoting the password.
    #[test]
    fn percent_before_a_multibyte_character_does_not_panic() {
        assert_eq!(percent_decode("100%€x"), "100%€x");
        assert_eq!(percent_decode("a%41%zz%4"), "aA%zz%4");
        let url = "postgres://u:100%€@h/db";
        assert_eq!(scrub("bad 100%€ here", url), "bad *** here");
    }

    /// PgBouncer refuses a login that carries `options` unless told to
    /// ignore it: the error says what to set.
    #[test]
    fn a_refused_startup_parameter_names_the_pooler_setting() {
        let hinted = with_pooler_hint("unsupported startup parameter: options".into());
        assert!(
            hinted.contains("with_pooler(Pooler::Transaction)"),
            "{hinted}"
        );
        assert!(
            hinted.contains("DUROXIDE_PG_POOLER=transaction"),
            "{hinted}"
        );
        assert_eq!(
            with_pooler_hint("connection refused".into()),
            "connection refused"
        );
    }

    #[test]
    fn pooler_and_poll_mode_resolution() {
        let c = PostgresConfig::new("postgres://h/db").with_pooler(Pooler::Transaction);
        assert_eq!(c.resolved_poll_mode().unwrap(), PollMode::PollOnly);
        assert!(matches!(
            c.clone()
                .with_poll_mode(PollMode::LongPoll)
                .resolved_poll_mode(),
            Err(Error::InvalidConfig(_))
        ));
        let c = PostgresConfig::new("postgres://h/db").with_pooler(Pooler::None);
        assert_eq!(c.resolved_poll_mode().unwrap(), PollMode::LongPoll);
        // Behind a transaction pooler nothing goes in the startup options,
        // and each call carries the transaction's settings instead.
        let c = PostgresConfig::new("postgres://h/db")
            .with_pooler(Pooler::Transaction)
            .with_statement_timeout(Some(Duration::from_secs(3)));
        assert!(c.driver_options().unwrap().get_options().is_none());
        assert_eq!(
            c.pool_settings().unwrap().literal_prefix.as_deref(),
            Some(
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; \
                 SET LOCAL statement_timeout = '3000ms'; "
            )
        );
    }

    #[test]
    fn schema_names() {
        for ok in ["public", "tenant_1", "_x", "a", &"a".repeat(63)] {
            assert!(validate_schema_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a\"b",
            "a;b",
            "a b",
            "A",
            "1abc",
            "pg_catalog",
            "information_schema",
            "ä",
            &"a".repeat(64),
            "x'y",
            "a-b",
        ] {
            assert!(validate_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:p%40ss@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn scrubs_password_from_messages() {
        let url = "postgres://u:p%40ss@h/db";
        let msg = format!("failed for {url}: bad p@ss and p%40ss");
        let s = scrub(&msg, url);
        assert!(!s.contains("p@ss") && !s.contains("p%40ss"), "{s}");
    }

    #[test]
    fn pool_size_resolution() {
        let c = PostgresConfig::new("postgres://h/db").with_max_connections(3);
        assert_eq!(c.resolved_max_connections().unwrap(), 3);
        let c = PostgresConfig::new("postgres://h/db").with_max_connections(0);
        assert!(c.resolved_max_connections().is_err());
    }

    #[test]
    fn debug_hides_password() {
        let c = PostgresConfig::new("postgres://u:topsecret@h/db");
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
