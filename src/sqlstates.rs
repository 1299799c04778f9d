//! PostgreSQL's SQLSTATEs the provider and its tools act on, named once.
//! Compare them with [`crate::sqlstate`]'s result; the provider's own codes
//! (class `DX`) are [`crate::ProviderSqlState`].
//!
//! A leaf module: it uses nothing else of the crate.

/// `serialization_failure`: a transaction lost a race (retryable).
pub const SERIALIZATION_FAILURE: &str = "40001";
/// `deadlock_detected` (retryable).
pub const DEADLOCK_DETECTED: &str = "40P01";
/// `lock_not_available` (retryable).
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `admin_shutdown`: the server is shutting down or the backend was
/// terminated (retryable).
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `crash_shutdown` (retryable).
pub const CRASH_SHUTDOWN: &str = "57P02";
/// `cannot_connect_now`: starting up, shutting down, in crash recovery
/// (retryable).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// `query_canceled`: a statement ran past its statement timeout
/// (retryable).
pub const QUERY_CANCELED: &str = "57014";
/// `read_only_sql_transaction`: a write reached a standby or a demoted
/// primary (retryable: the next connection looks for the primary).
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// `too_many_connections` (retryable).
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `configuration_limit_exceeded` (retryable).
pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
/// The `connection_exception` class (`08…`, retryable but for
/// [`PROTOCOL_VIOLATION`] behind a pooler).
pub const CONNECTION_EXCEPTION_CLASS: &str = "08";
/// The `invalid_authorization_specification` class (`28…`): a login failed;
/// retryable while a password rotates.
pub const INVALID_AUTHORIZATION_CLASS: &str = "28";
/// `protocol_violation`.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `duplicate_prepared_statement`.
pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
/// `invalid_sql_statement_name`: a prepared statement that does not exist.
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
