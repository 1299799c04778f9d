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
//! Layout: every provider operation is one stored function in
//! `migrations/*.sql`; the Rust modules only marshal arguments and map errors:
//! `orchestrator_queue` (instance leases), `worker_queue` (peek-locks and
//! sessions), `history`, `state` (custom status, KV, stats), `admin`
//! (`ProviderAdmin`), `lease` (renew/abandon shared by both queues),
//! `long_poll` (wake-ups), `call` (one stored-function call, prepared or,
//! behind a transaction pooler, with literal arguments), and the public [`config`], [`credentials`]
//! (passwords and tokens that rotate), [`error`],
//! [`migrations`], [`metrics`] (names of the metrics it records), [`local_cluster`] (throwaway PostgreSQL for tests,
//! examples and tools) and [`delay_proxy`] (latency and round-trip counting
//! for tests and benchmarks).

pub mod config;
pub mod credentials;
pub mod delay_proxy;
pub mod error;
pub mod local_cluster;
pub mod metrics;
pub mod migrations;

mod admin;
mod call;
mod codec;
mod connections;
mod history;
mod lease;
mod long_poll;
mod orchestrator_queue;
mod prefetch;
mod provider;
mod state;
mod statements;
mod worker_queue;

pub use admin::QueueStatus;
pub use config::{
    MigrationMode, PollMode, Pooler, PostgresConfig, SslMode, redact_url, scrub,
    validate_schema_name,
};
pub use error::Error;
pub use prefetch::{PREFETCH_HOLD, PREFETCH_LIMIT};
pub use provider::{PoolStatus, PostgresProvider};
