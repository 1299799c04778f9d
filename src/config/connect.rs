//! What a configuration describes for connecting: the driver options every
//! connection carries (or, behind a transaction pooler, the settings each
//! call carries instead), the hosts, the pools' settings, and the checks of
//! what the server reports. Opening anything is `provider::establish`'s.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::{Pooler, PostgresConfig, redact_url, scrub};
use crate::connections::{Target, Targets};
use crate::credentials::Credentials;
use crate::env::POOLER_ENV;
use crate::error::Error;
use crate::hosts::TargetSessionAttrs;

/// Idle connections of the sqlx pool [`PostgresConfig::open_pool`] returns
/// close after this: it serves migrations and tools, rarely anything else.
const TOOLS_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

/// PgBouncer refuses a login that carries startup parameters it does not
/// know (`options`, which the default configuration sends): say what to do.
pub(crate) fn with_pooler_hint(reason: String) -> String {
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
    /// The provider's view of the credential source, if there is one.
    pub(crate) fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credential_source.clone().map(Credentials::new)
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
        if skew > super::PostgresConfig::CLOCK_SKEW_WARNING {
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
            check_idle_after: Some(super::PostgresConfig::CHECK_IDLE_AFTER),
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
        // committed meanwhile (the messages held for a leased instance,
        // `fetch_orchestration_item`).
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
