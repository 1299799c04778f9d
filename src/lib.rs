//! # duroxide-pg
//!
//! A PostgreSQL storage provider for [`duroxide`], the durable orchestration
//! framework. Many runtime processes on many machines can share one store.
//!
//! ```no_run
//! use std::sync::Arc;
//! use duroxide_pg::PostgresProvider;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = Arc::new(
//!     PostgresProvider::new_with_schema("postgres://app:secret@db:5432/app", Some("orders")).await?,
//! );
//! // hand `provider` to duroxide::Runtime::start_with_store and duroxide::Client::new
//! # let _ = provider; Ok(()) }
//! ```
//!
//! ## Construction
//!
//! [`PostgresProvider::new`] (schema `public`) and
//! [`PostgresProvider::new_with_schema`] cover the common cases;
//! [`PostgresProvider::connect`] takes a [`PostgresConfig`]. Construction
//! connects, checks the server (PostgreSQL 14 or newer, no transaction pooler
//! unless configured for one, the host's clock), applies pending migrations
//! and opens the connections a runtime needs at once.
//!
//! ```no_run
//! # async fn example() -> Result<(), duroxide_pg::Error> {
//! use std::time::Duration;
//! use duroxide_pg::{PostgresConfig, PostgresProvider, RetentionPolicy};
//!
//! let provider = PostgresProvider::connect(
//!     PostgresConfig::new("postgres://app@db1:5432,db2:5432/app?sslmode=verify-full")
//!         .with_schema("orders")
//!         .with_max_connections(20)
//!         .with_statement_timeout(Some(Duration::from_secs(10)))
//!         .with_retention(RetentionPolicy::new().keep_completed_for(Duration::from_secs(7 * 86_400))),
//! )
//! .await?;
//! # let _ = provider; Ok(()) }
//! ```
//!
//! The main knobs of [`PostgresConfig`] (every one has a default):
//!
//! - where: [`with_schema`](PostgresConfig::with_schema) (one schema per
//!   provider; tenants and test runs share a database), several hosts in the
//!   URL with [`TargetSessionAttrs`] for failover;
//! - connections: [`with_max_connections`](PostgresConfig::with_max_connections)
//!   (or [`POOL_MAX_ENV`]), [`with_min_connections`](PostgresConfig::with_min_connections),
//!   [`with_acquire_timeout`](PostgresConfig::with_acquire_timeout),
//!   [`with_connect_timeout`](PostgresConfig::with_connect_timeout),
//!   [`with_max_lifetime`](PostgresConfig::with_max_lifetime);
//! - behind PgBouncer in transaction mode: [`with_pooler`](PostgresConfig::with_pooler)
//!   with [`Pooler::Transaction`] (or [`POOLER_ENV`]);
//! - waiting for work: [`with_poll_mode`](PostgresConfig::with_poll_mode)
//!   ([`PollMode::LongPoll`] by default), [`with_fallback_poll`](PostgresConfig::with_fallback_poll);
//! - bounds on every call: [`with_statement_timeout`](PostgresConfig::with_statement_timeout),
//!   [`with_silence_timeout`](PostgresConfig::with_silence_timeout),
//!   [`with_max_clock_skew`](PostgresConfig::with_max_clock_skew);
//! - security: [`with_ssl_mode`](PostgresConfig::with_ssl_mode) ([`SslMode`]),
//!   [`with_ssl_root_cert`](PostgresConfig::with_ssl_root_cert),
//!   [`with_credential_source`](PostgresConfig::with_credential_source)
//!   (see [`credentials`]);
//! - schema changes: [`with_migrations`](PostgresConfig::with_migrations)
//!   ([`MigrationMode::Apply`] or [`MigrationMode::VerifyOnly`]);
//! - housekeeping: [`with_retention`](PostgresConfig::with_retention)
//!   ([`RetentionPolicy`]), [`with_queue_vacuum`](PostgresConfig::with_queue_vacuum).
//!
//! ## Errors
//!
//! Construction and the management calls ([`PostgresProvider::migrate`],
//! [`PostgresProvider::cleanup_schema`]) return [`Error`]: an invalid schema
//! name, URL or configuration, a connection failure naming host, port and
//! user (never the password), [`Error::UnsupportedServer`],
//! [`Error::PoolerDetected`], [`Error::ClockSkew`],
//! [`Error::UnknownMigration`] (a schema written by a newer duroxide-pg), and
//! other migration problems. Provider calls return duroxide's
//! [`ProviderError`](duroxide::providers::ProviderError), retryable (serialization failures, deadlocks, timeouts,
//! lost connections, failed logins while a password rotates, ...) or
//! permanent (constraint violations, bad data, invalid or expired lock
//! tokens, missing instances). [`sqlstate`] gives the server's code behind a
//! `ProviderError`: PostgreSQL's, or one of the provider's own, class `DX`
//! (`DXN01` missing instance, `DXP01` failed precondition, `DXT01`/`DXT02`
//! unknown or expired lock token, `DXR01` lost retention lease).
//!
//! ## Guides
//!
//! The repository's `README.md` starts with what the crate is for and the
//! measured comparisons; the guides, under `docs/` in the repository, cover
//! the rest: `docs/configuration.md` (every setting, limits, migrations,
//! errors, silent networks and clock skew), `docs/cloud.md` (TLS, rotating
//! credentials, pool sizing), `docs/failover.md`, `docs/poolers.md`
//! (PgBouncer), `docs/metrics.md`, `docs/operations.md` (the CLI, the
//! dashboard, retention, bloat and autovacuum), `docs/load-testing.md`,
//! `docs/testing.md` and `docs/layout.md`. `RELIABILITY.md` lists what is
//! proved and how to rerun it, `BENCHMARKS.md` every measurement.
//!
//! ## Public surface (one path each)
//!
//! - At the root: [`PostgresProvider`] and [`PostgresConfig`] with its
//!   enums and defaults, [`TargetSessionAttrs`], [`Error`], [`QueueStatus`] and [`PoolStatus`],
//!   [`RetentionPolicy`] with its report and status types, [`sqlstate`] (the
//!   server's code behind a `ProviderError`), the
//!   environment variables the configuration reads and the URL helpers.
//! - [`credentials`]: passwords and tokens that rotate.
//! - [`dashboard`]: the bounded, paginated reads operator tools page with.
//! - [`metrics`]: the names of the metrics the provider records.
//! - [`migrations`]: the bundled migrations and the runner's report.
//!
//! ## Layout
//!
//! Every provider operation is one stored function in `migrations/*.sql`
//! (the current text of each, with its contract, in `schema/functions/`);
//! the Rust modules marshal arguments, call the function and map errors.
//!
//! | module | concern |
//! |---|---|
//! | `provider` | `PostgresProvider`: accessors and shutdown; `provider::establish` (building one: probe, pools, migrations, listener), `provider::operator` (operator reads and sweeps), `provider::traits` (`Provider` and `ProviderAdmin`) |
//! | `store` | what the operation modules work on (pool, statements, listener): they take a `&Store`, never the provider |
//! | `orchestrator_queue` | instance leases: enqueue, fetch, ack, abandon |
//! | `worker_queue` | activity peek-locks and sessions; `worker_queue::prefetch` holds the next item |
//! | `lease` | renew and abandon, shared by both queues |
//! | `history` | reading history |
//! | `state` | custom status, KV, stats |
//! | `admin` | `ProviderAdmin`: instances, trees, purge, queues |
//! | `retention` | [`RetentionPolicy`]: sweeps in batches (`retention::sweep`), the background sweeper (`retention::sweeper`) |
//! | `queue_vacuum` | `with_queue_vacuum`: vacuums the queue tables between autovacuum's visits |
//! | `background` | the periodic task both run on |
//! | `long_poll` | waiting fetches: `LISTEN`/`NOTIFY` and timers |
//! | `call` | one stored-function call, prepared or (behind a transaction pooler) literal |
//! | `statements` | the call text of every operation, schema-qualified |
//! | `connections` | the provider's own pool (credentials, idle sweep, minimum kept) |
//! | `codec` | duroxide types to and from the functions' arguments and columns |
//! | `codes` | values Rust and SQL share (codes, hint formats, `DX` SQLSTATEs), checked against `schema/` |
//! | `clock` | the caller's clock (`p_now_ms`) |
//! | `config` | the builder and its checks, no I/O; `config::connect`, `config::tls`, `config::redact` |
//! | `env` | environment variables |
//! | `hosts` | multi-host URLs and `target_session_attrs` (libpq's rules) |
//! | `error` | [`Error`] and the one mapping of database errors to `ProviderError` |
//! | `credentials`, `dashboard`, `metrics`, `migrations` | public, see above |
//!
//! Test support (a throwaway cluster, PgBouncer, a delay proxy, the test
//! harness) lives in the workspace crate `duroxide-pg-testkit`, not here.

pub mod credentials;
pub mod dashboard;
pub mod metrics;
pub mod migrations;
pub mod sqlstates;

mod admin;
mod background;
mod call;
mod clock;
mod coalesce;
mod codec;
mod codes;
mod config;
mod connections;
mod env;
mod error;
mod history;
mod hosts;
mod lease;
mod long_poll;
mod orchestrator_queue;
mod provider;
mod queue_vacuum;
mod retention;
mod signatures;
mod state;
mod statements;
mod store;
mod worker_queue;

pub use admin::QueueStatus;
pub use codes::ProviderSqlState;
pub use config::{
    MigrationMode, PollMode, Pooler, PostgresConfig, RetentionPolicy, SslMode, redact_url, scrub,
    validate_schema_name,
};
pub use env::{POOL_MAX_ENV, POOLER_ENV};
pub use error::{Error, sqlstate};
pub use hosts::TargetSessionAttrs;
pub use provider::{PoolStatus, PostgresProvider};
pub use retention::{LastSweep, RetentionReport, RetentionStatus};
