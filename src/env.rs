//! Environment variables the provider reads when its configuration leaves a
//! setting open, so operators can change a deployment without a code change.

/// Sets the pool size when the configuration does not
/// ([`crate::PostgresConfig::with_max_connections`]).
pub const POOL_MAX_ENV: &str = "DUROXIDE_PG_POOL_MAX";

/// Names the connection pooler in front of the server when the configuration
/// does not (`transaction` or `none`,
/// [`crate::PostgresConfig::with_pooler`]).
pub const POOLER_ENV: &str = "DUROXIDE_PG_POOLER";
