//! What a configuration opens: the probe connection, the driver options
//! every connection carries (or, behind a transaction pooler, the settings
//! each call carries instead) and the pools.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::{Pooler, PostgresConfig, redact_url, scrub, validate_schema_name};
use crate::credentials::Credentials;
use crate::env::POOLER_ENV;
use crate::error::Error;

/// Idle connections of the sqlx pool [`PostgresConfig::open_pool`] returns
/// close after this: it serves migrations and tools, rarely anything else.
const TOOLS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The operation [`PostgresConfig::check_session_kept`]'s errors name.
const CHECK_SESSION: &str = "check the connection's session settings";

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
pub(super) fn with_pooler_hint(reason: String) -> String {
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
            .map_err(|e| Error::database(CHECK_SESSION, &e))?;
        let search_path: String =
            sqlx::Row::try_get(&row, 0).map_err(|e| Error::database(CHECK_SESSION, &e))?;
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
