//! What a configuration opens: the probe connection, the driver options
//! every connection carries (or, behind a transaction pooler, the settings
//! each call carries instead) and the pools.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::{Pooler, PostgresConfig, redact_url, scrub, validate_schema_name};
use crate::connections::{Target, Targets};
use crate::credentials::Credentials;
use crate::env::POOLER_ENV;
use crate::error::Error;
use crate::hosts::TargetSessionAttrs;

/// Idle connections of the sqlx pool [`PostgresConfig::open_pool`] returns
/// close after this: it serves migrations and tools, rarely anything else.
const TOOLS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// TCP settings of the server's end of every provider connection (start-up
/// options; see `driver_options_for`): a keepalive probe after 60 idle
/// seconds, then every 10 s, the client declared gone after 6 unanswered;
/// data the client has not acknowledged for 60 s ends the connection.
pub(crate) const SERVER_KEEPALIVES: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "60"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "6"),
    ("tcp_user_timeout", "60000"),
];

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

    /// The provider's view of the credential source, if there is one.
    pub(crate) fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credential_source.clone().map(Credentials::new)
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

    /// Compares the server's clock, read between `before` and `after` on
    /// this host's, with this host's: the difference beyond what the round
    /// trip leaves uncertain.
    pub(crate) fn check_clock(&self, server_ms: i64, before: i64, after: i64) -> Result<(), Error> {
        let midpoint = before + (after - before) / 2;
        let uncertainty = (after - before) / 2;
        let raw = server_ms - midpoint;
        let skew_ms = raw.signum() * (raw.abs() - uncertainty).max(0);
        let skew = Duration::from_millis(skew_ms.unsigned_abs());
        if let Some(max) = self.max_clock_skew
            && skew > max
        {
            return Err(Error::ClockSkew {
                skew_ms,
                max_ms: u64::try_from(max.as_millis()).unwrap_or(u64::MAX),
            });
        }
        if skew > super::CLOCK_SKEW_WARNING {
            tracing::warn!(
                target: "duroxide_pg",
                skew_ms,
                "this host's clock differs from the database server's by {skew:?}: leases and timers \
                 are judged by each runtime's own clock (see PostgresConfig::with_max_clock_skew)"
            );
        }
        Ok(())
    }

    /// The lazily connected sqlx pool for migrations and tools, on the host
    /// `options` name.
    pub(crate) fn tools_pool(&self, options: PgConnectOptions) -> Result<PgPool, Error> {
        Ok(PgPoolOptions::new()
            .max_connections(self.resolved_max_connections()?)
            .min_connections(0)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(Some(TOOLS_IDLE_TIMEOUT))
            .max_lifetime(self.max_lifetime)
            .connect_lazy_with(options))
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
            response_timeout: self.statement_timeout()?.map(|t| t + self.silence_timeout),
            silence_grace: self.silence_timeout()?,
            check_idle_after: Some(super::CHECK_IDLE_AFTER),
        })
    }

    /// The configured silence timeout, checked.
    pub(crate) fn silence_timeout(&self) -> Result<Duration, Error> {
        let t = self.silence_timeout;
        if t < Duration::from_millis(1) || t > Duration::from_secs(600) {
            return Err(Error::InvalidConfig(format!(
                "silence_timeout must be between 1 ms and 10 minutes, got {t:?}"
            )));
        }
        Ok(t)
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

    /// Where the provider's connections go: one entry per host of the URL
    /// (in order), each with the driver options of `driver_options_for`,
    /// and the server role they must find (`target_session_attrs`; default
    /// `read-write` for several hosts, `any` for one).
    pub(crate) fn targets(&self) -> Result<Targets, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(&self.url),
            reason: scrub(&reason, &self.url),
        };
        let split = crate::hosts::split(&self.url).map_err(invalid)?;
        let attrs = split.attrs.unwrap_or(if split.urls.len() > 1 {
            TargetSessionAttrs::ReadWrite
        } else {
            TargetSessionAttrs::Any
        });
        let hosts = split
            .urls
            .iter()
            .zip(split.labels)
            .map(|(url, label)| {
                let options = self.driver_options_for(url)?;
                let label = if label.is_empty() {
                    format!("{}:{}", options.get_host(), options.get_port())
                } else {
                    label
                };
                Ok(Target { label, options })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Targets { hosts, attrs })
    }

    /// Driver options of the URL's first host (see [`Self::targets`]).
    #[cfg(test)]
    pub(crate) fn driver_options(&self) -> Result<PgConnectOptions, Error> {
        Ok(self.targets()?.hosts.swap_remove(0).options)
    }

    /// Driver options for every connection the provider opens to the host of
    /// `url` (one host of the configured URL). The `search_path` is pinned
    /// to the provider's schema whatever the URL's `options` say (startup
    /// options apply in order, so ours, last, win); calls are
    /// schema-qualified anyway, this covers anything that is not.
    fn driver_options_for(&self, url: &str) -> Result<PgConnectOptions, Error> {
        if self.application_name.is_empty() || self.application_name.len() > 63 {
            return Err(Error::InvalidConfig(format!(
                "application_name must be 1 to 63 bytes, got {} bytes",
                self.application_name.len()
            )));
        }
        // Checked before anything connects, though only the pool uses it.
        self.silence_timeout()?;
        let options = self
            .connect_options(url)?
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
        // The server's side of silent networks (sqlx sets no keepalive on
        // ours): probes on an idle connection keep a NAT's or load balancer's
        // mapping alive (Azure forgets one after 4 idle minutes), and a
        // backend whose client vanished is ended within minutes instead of
        // the kernel's two hours, so it stops holding a connection slot.
        // Ignored on Unix-domain sockets; free (start-up options).
        settings.extend(SERVER_KEEPALIVES.map(|(name, value)| (name.into(), value.into())));
        Ok(options.options(settings))
    }

    /// Parses `url` (one host of the configured URL) into driver options.
    fn connect_options(&self, url: &str) -> Result<PgConnectOptions, Error> {
        let options = PgConnectOptions::from_str(url).map_err(|e| Error::InvalidUrl {
            url: redact_url(&self.url),
            reason: scrub(&e.to_string(), &self.url),
        })?;
        self.tls.apply(options)
    }
}
