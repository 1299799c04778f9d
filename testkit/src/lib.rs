//! # duroxide-pg-testkit
//!
//! What the tests, examples, benchmarks and maintainer tools of duroxide-pg
//! share, kept out of the library (`publish = false`):
//!
//! - [`local_cluster`]: a throwaway PostgreSQL cluster (`fsync=off`, a test
//!   CA, password and certificate roles) and a real PgBouncer in front of it,
//!   or `DATABASE_URL` when set;
//! - [`delay_proxy`]: a TCP proxy that adds latency and counts round trips;
//! - [`harness`]: fresh schemas, providers and work items for tests, and
//!   duroxide's `ProviderFactory` for the validation suite;
//! - `properties` (feature `properties`): the one configuration of the
//!   property tests.
//!
//! The library's integration tests use [`harness`] as `common`
//! (`use duroxide_pg_testkit::harness as common;`).

pub mod delay_proxy;
pub mod harness;
pub mod local_cluster;
#[cfg(feature = "properties")]
pub mod properties;
