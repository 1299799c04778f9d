//! Errors: the construction-time [`Error`] type and the single mapping from
//! `sqlx` failures to duroxide's [`ProviderError`].

use duroxide::providers::ProviderError;

use crate::codes::ProviderSqlState;
use crate::sqlstates::*;

/// Errors raised while building a [`crate::PostgresProvider`]: configuration,
/// connection and migration failures. Provider calls report
/// [`ProviderError`] instead; this type converts into it.
///
/// No variant ever carries the connection password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The schema name cannot be used as a PostgreSQL identifier here.
    #[error("invalid schema name {name:?}: {reason}")]
    InvalidSchemaName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The connection URL could not be parsed (the password is masked).
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The server could not be reached or refused the connection.
    #[error(
        "cannot connect to PostgreSQL at {} as user {user:?}: {reason}",
        endpoint(host, *port)
    )]
    Connect {
        /// Host (or socket directory) from the URL; with several hosts, all
        /// of them as the URL lists them (`db1:5432,db2:5432`).
        host: String,
        /// Port from the URL.
        port: u16,
        /// The user name logging in.
        user: String,
        /// The driver's explanation.
        reason: String,
    },
    /// The schema carries a migration this build does not know: it was
    /// migrated by a newer duroxide-pg, and using it could corrupt data.
    #[error(
        "schema {schema:?} has migration {version} ({name}) which this build of duroxide-pg does not know \
         (latest bundled: {latest_known}); upgrade duroxide-pg before using this database"
    )]
    UnknownMigration {
        /// The schema.
        schema: String,
        /// The unknown version found in the ledger.
        version: i64,
        /// Its recorded name.
        name: String,
        /// The newest version bundled in this build.
        latest_known: i64,
    },
    /// Verify-only mode found migrations that have not been applied.
    #[error(
        "schema {schema:?} is missing migrations {pending:?}; run the migrations (MigrationMode::Apply)"
    )]
    PendingMigrations {
        /// The schema.
        schema: String,
        /// Versions bundled but not applied.
        pending: Vec<i64>,
    },
    /// A migration failed to apply; nothing of it was committed.
    #[error("migration {version} ({name}) failed on schema {schema:?}: {reason}")]
    Migration {
        /// The schema.
        schema: String,
        /// Version of the failing migration.
        version: i64,
        /// Its name.
        name: String,
        /// The server's explanation.
        reason: String,
    },
    /// The server is older than the bundled migrations need
    /// ([`crate::migrations::MIN_SERVER_VERSION_NUM`]); nothing was changed.
    #[error(
        "PostgreSQL {server_version} is too old: duroxide-pg needs PostgreSQL {minimum} or newer \
         (its stored functions use SQL-standard function bodies)"
    )]
    UnsupportedServer {
        /// The server's `server_version`.
        server_version: String,
        /// The oldest major version supported.
        minimum: u32,
    },
    /// The default configuration ([`crate::Pooler::None`]) found a connection
    /// pooler in front of the server that does not keep sessions: using
    /// prepared statements there could run a statement another client
    /// prepared. Nothing was changed.
    #[error(
        "{evidence}: a connection pooler is in front of the server that drops them (PgBouncer \
         with ignore_startup_parameters = options, say) and may move this client between server \
         sessions. Set PostgresConfig::with_pooler(Pooler::Transaction) or {env}=transaction \
         (right for transaction mode, and safe in session mode too)"
    )]
    PoolerDetected {
        /// What showed it.
        evidence: String,
        /// [`crate::env::POOLER_ENV`].
        env: &'static str,
    },
    /// This host's clock differs from the server's by more than
    /// [`crate::PostgresConfig::with_max_clock_skew`] allows. Leases and
    /// timers are judged by the calling runtime's clock: a runtime whose
    /// clock is that far off would take over live leases of the others (or
    /// hold its own too long) and fire timers early or late. Nothing was
    /// changed.
    #[error(
        "this host's clock is {} ms {} the database server's (more than the {max_ms} ms \
         allowed); synchronise the clocks (NTP) or raise PostgresConfig::with_max_clock_skew",
        skew_ms.unsigned_abs(),
        if *skew_ms > 0 { "behind" } else { "ahead of" }
    )]
    ClockSkew {
        /// The server's clock minus this host's, in ms (positive: this host
        /// is behind), less the uncertainty of the measurement.
        skew_ms: i64,
        /// The bound, in ms.
        max_ms: u64,
    },
    /// Any other database failure during construction or maintenance.
    #[error(
        "database error during {operation}: {reason}{}",
        sqlstate.as_deref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default()
    )]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The server's SQLSTATE, when the server reported the failure
        /// (`None` for I/O, TLS and driver errors).
        sqlstate: Option<String>,
        /// The server's or driver's explanation.
        reason: String,
    },
}

impl Error {
    /// [`Error::Database`] for a driver error during `operation`, keeping the
    /// server's SQLSTATE. The one constructor of that variant.
    pub(crate) fn database(operation: &'static str, err: &sqlx::Error) -> Self {
        Error::Database {
            operation,
            sqlstate: match err {
                sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                _ => None,
            },
            reason: err.to_string(),
        }
    }

    /// The server's SQLSTATE behind this error, when the server reported it.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Database { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }
}

/// `host:port`, or the host list as written when the URL names several.
fn endpoint(host: &str, port: u16) -> String {
    if host.contains(',') {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

impl From<Error> for ProviderError {
    fn from(e: Error) -> Self {
        match &e {
            Error::Connect { .. } => ProviderError::retryable("connect", e.to_string()),
            _ => ProviderError::permanent("configure", e.to_string()),
        }
    }
}

/// Whether a PostgreSQL SQLSTATE names a condition worth retrying: the
/// transaction lost a race or the connection/server had a transient problem.
pub(crate) fn is_retryable_sqlstate(code: &str) -> bool {
    if pooler_symptom(code).is_some() {
        return false;
    }
    [
        SERIALIZATION_FAILURE,
        DEADLOCK_DETECTED,
        LOCK_NOT_AVAILABLE,
        ADMIN_SHUTDOWN,
        CRASH_SHUTDOWN,
        CANNOT_CONNECT_NOW,
        QUERY_CANCELED,
        // The server became a standby (a failover demoted it); nothing was
        // written, and the next connection looks for the primary again.
        READ_ONLY_SQL_TRANSACTION,
        TOO_MANY_CONNECTIONS,
        CONFIGURATION_LIMIT_EXCEEDED,
    ]
    .contains(&code)
        || code.starts_with(CONNECTION_EXCEPTION_CLASS)
        // Only raised when a connection logs in; while a password rotates, a
        // login with the old or the new secret can fail for a moment, and
        // the next attempt succeeds.
        || code.starts_with(INVALID_AUTHORIZATION_CLASS)
}

/// What a SQLSTATE means when it is the symptom of a transaction pooler in
/// front of a provider configured without one: prepared statements meeting
/// other clients' statements on a shared server session. Permanent: retrying
/// would run into the same sessions (or, worse, a statement of the same
/// shape).
fn pooler_symptom(code: &str) -> Option<&'static str> {
    match code {
        DUPLICATE_PREPARED_STATEMENT => {
            Some("a prepared statement of that name already exists on the server session")
        }
        INVALID_SQL_STATEMENT_NAME => {
            Some("the prepared statement does not exist on the server session")
        }
        PROTOCOL_VIOLATION => {
            Some("the server session's statement does not match the call (protocol violation)")
        }
        _ => None,
    }
}

/// The SQLSTATE of the database error behind `e` (`"57014"` for a
/// statement timeout, `"DXN01"` for a missing instance, ...), as the
/// provider records it at the end of the server's message; `None` when `e`
/// did not come from the server. The last mark counts: the server's
/// message may quote stored text, which could hold one.
pub fn sqlstate(e: &ProviderError) -> Option<&str> {
    let at = e.message.rfind("(SQLSTATE ")? + "(SQLSTATE ".len();
    let code = e.message.get(at..at + 5)?;
    (e.message[at + 5..].starts_with(')') && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(code)
}

impl ProviderSqlState {
    /// The provider code behind `e`, if its failure was one ([`sqlstate`]
    /// reads the code).
    pub fn of_error(e: &ProviderError) -> Option<ProviderSqlState> {
        sqlstate(e).and_then(Self::of)
    }
}

/// Whether `e` is a database error with SQLSTATE `code` ([`sqlstate`]).
pub(crate) fn has_sqlstate(e: &ProviderError, code: &str) -> bool {
    sqlstate(e) == Some(code)
}

/// Maps a `sqlx` error from provider operation `operation` to a classified
/// [`ProviderError`]. The one place where retryable vs permanent is decided.
pub(crate) fn provider_error(operation: &str, err: sqlx::Error) -> ProviderError {
    let (class, error) = match &err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mut message = format!("{} (SQLSTATE {code})", db.message());
            if let Some(symptom) = pooler_symptom(&code) {
                message.push_str(&format!(
                    ": {symptom}; this is what a connection pooler in transaction mode (PgBouncer) \
                     does to prepared statements: set PostgresConfig::with_pooler(Pooler::Transaction) \
                     or {}=transaction",
                    crate::env::POOLER_ENV
                ));
            }
            let class = code.get(..2).unwrap_or("other").to_owned();
            // Our own stored functions raise class DX for conditions the caller
            // caused (bad token, missing instance, precondition): never retry.
            if ProviderSqlState::of(&code).is_none() && is_retryable_sqlstate(&code) {
                (class, ProviderError::retryable(operation, message))
            } else {
                (class, ProviderError::permanent(operation, message))
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolClosed => (
            error_kind(&err).to_owned(),
            ProviderError::retryable(operation, err.to_string()),
        ),
        // Decode failures mean stored data does not have the expected shape.
        _ => (
            error_kind(&err).to_owned(),
            ProviderError::permanent(operation, err.to_string()),
        ),
    };
    crate::metrics::error(operation, &class, error.is_retryable());
    error
}

/// The `sqlstate_class` label of an error without a SQLSTATE.
fn error_kind(err: &sqlx::Error) -> &'static str {
    match err {
        sqlx::Error::PoolTimedOut => "pool_timeout",
        sqlx::Error::PoolClosed => "pool_closed",
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => "io",
        sqlx::Error::Tls(_) => "tls",
        sqlx::Error::Protocol(_) => "protocol",
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => "decode",
        _ => "other",
    }
}

/// A permanent error for stored data that cannot be decoded (corruption).
pub(crate) fn corrupted(operation: &str, what: impl std::fmt::Display) -> ProviderError {
    ProviderError::permanent(operation, format!("corrupted stored data: {what}"))
}

/// A permanent error for an argument the provider cannot store.
pub(crate) fn invalid_input(operation: &str, what: impl std::fmt::Display) -> ProviderError {
    ProviderError::permanent(operation, format!("invalid input: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_sqlstate_mark_counts() {
        let e =
            ProviderError::permanent("op", "no instance \"x (SQLSTATE 57014)\" (SQLSTATE DXN01)");
        assert_eq!(sqlstate(&e), Some("DXN01"));
        assert!(has_sqlstate(&e, "DXN01") && !has_sqlstate(&e, "57014"));
        let pooled = ProviderError::retryable("op", "gone (SQLSTATE 26000): a pooler symptom");
        assert_eq!(sqlstate(&pooled), Some("26000"));
        assert_eq!(
            sqlstate(&ProviderError::retryable("op", "pool timed out")),
            None
        );
        assert_eq!(
            sqlstate(&ProviderError::retryable("op", "(SQLSTATE 123")),
            None
        );
    }

    #[test]
    fn retryable_sqlstates() {
        for code in [
            "40001", "40P01", "55P03", "57P01", "57P02", "57P03", "57014", "53300", "25006",
            "08000", "08003", "08006", "08001", "08004", "28P01", "28000",
        ] {
            assert!(is_retryable_sqlstate(code), "{code} should be retryable");
        }
    }

    #[test]
    fn permanent_sqlstates() {
        for code in [
            "23505", "23503", "23502", "23514", "22P02", "22001", "22021", "42883", "42P01",
            "DXT01", "DXN01", "XX000", "", "42P05", "26000", "08P01",
        ] {
            assert!(!is_retryable_sqlstate(code), "{code} should be permanent");
        }
    }

    /// What a transaction pooler does to prepared statements, produced for
    /// real: a statement of the name sqlx gives its first one already exists
    /// on the session (as another client left it on a pooled server session).
    /// The error is permanent and names the setting.
    #[tokio::test]
    async fn a_pooler_symptom_is_permanent_and_names_the_setting() {
        use sqlx::Connection;
        let url = duroxide_pg_testkit::local_cluster::database_url().expect("database");
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::Executor::execute(&mut conn, "PREPARE sqlx_s_1 AS SELECT 1")
            .await
            .unwrap();
        let err = sqlx::query("SELECT 2")
            .fetch_one(&mut conn)
            .await
            .expect_err("the name is taken");
        let e = provider_error("fetch_work_item", err);
        assert!(!e.is_retryable(), "{e:?}");
        assert!(e.message.contains("42P05"), "{}", e.message);
        assert!(
            e.message.contains("with_pooler(Pooler::Transaction)")
                && e.message.contains("DUROXIDE_PG_POOLER=transaction"),
            "{}",
            e.message
        );
    }

    /// A construction-time database error keeps the server's SQLSTATE (it
    /// used to keep only the message text).
    #[tokio::test]
    async fn a_database_error_keeps_its_sqlstate() {
        use sqlx::Connection;
        let url = duroxide_pg_testkit::local_cluster::database_url().expect("database");
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let err = sqlx::query("SELECT 1 / 0")
            .execute(&mut conn)
            .await
            .expect_err("division by zero");
        let e = Error::database("migrate", &err);
        assert_eq!(e.sqlstate(), Some("22012"));
        assert!(e.to_string().ends_with("(SQLSTATE 22012)"), "{e}");
        let io = sqlx::Error::Io(std::io::Error::other("reset"));
        assert_eq!(Error::database("migrate", &io).sqlstate(), None);
    }

    #[test]
    fn pool_and_io_errors_are_retryable() {
        assert!(provider_error("op", sqlx::Error::PoolTimedOut).is_retryable());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(provider_error("op", sqlx::Error::Io(io)).is_retryable());
        assert!(provider_error("op", sqlx::Error::WorkerCrashed).is_retryable());
    }

    #[test]
    fn decode_and_not_found_errors_are_permanent() {
        assert!(!provider_error("op", sqlx::Error::RowNotFound).is_retryable());
        let decode = sqlx::Error::Decode("bad bytes".into());
        let e = provider_error("read", decode);
        assert!(!e.is_retryable());
        assert_eq!(e.operation, "read");
    }

    #[test]
    fn construction_errors_convert() {
        let e: ProviderError = Error::InvalidSchemaName {
            name: "a;b".into(),
            reason: "x",
        }
        .into();
        assert!(!e.is_retryable());
        let e: ProviderError = Error::Connect {
            user: "app".into(),
            host: "h".into(),
            port: 1,
            reason: "refused".into(),
        }
        .into();
        assert!(e.is_retryable());
        assert!(e.message.contains("h:1"));
    }
}
