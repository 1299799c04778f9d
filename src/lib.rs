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
//! | `provider` | `PostgresProvider`: construction, the `Provider` and `ProviderAdmin` traits, shutdown |
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
//! | `config` | the builder; `config::connect`, `config::tls`, `config::redact` |
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

mod admin;
mod background;
mod call;
mod clock;
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
mod state;
mod statements;
mod store;
mod worker_queue;

pub use admin::QueueStatus;
pub use config::{
    CHECK_IDLE_AFTER, CLOCK_SKEW_WARNING, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_APPLICATION_NAME,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FALLBACK_POLL, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CLOCK_SKEW,
    DEFAULT_MAX_LIFETIME, DEFAULT_MIN_CONNECTIONS, DEFAULT_POOL_MAX, DEFAULT_SCHEMA,
    DEFAULT_SILENCE_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT, MigrationMode, PollMode, Pooler,
    PostgresConfig, RetentionPolicy, SslMode, redact_url, scrub, validate_schema_name,
};
pub use env::{POOL_MAX_ENV, POOLER_ENV};
pub use error::{Error, sqlstate};
pub use hosts::TargetSessionAttrs;
pub use provider::{PoolStatus, PostgresProvider};
pub use retention::{LastSweep, RetentionReport, RetentionStatus};
pub use worker_queue::prefetch::{PREFETCH_HOLD, PREFETCH_LIMIT};
