//! The end-to-end scenarios of `e2e.rs` again, through a real PgBouncer 1.18
//! in transaction pooling mode (`local_cluster::pgbouncer_url`) with the
//! provider configured for it (`Pooler::Transaction`: literal simple queries,
//! poll-only). Same files, same assertions; only the way in differs.
//!
//! Run: `cargo nextest run --test pgbouncer_e2e` (needs the Debian package
//! `pgbouncer`).

use duroxide_pg_testkit::harness as common;

/// Providers reach the server through PgBouncer.
const VIA: common::Via = common::Via::PgBouncer;

include!("e2e/modules.rs");
