//! End-to-end scenarios: duroxide's real `Runtime` and `Client` running
//! orchestrations against duroxide-pg on a real PostgreSQL server.
//!
//! One test binary (one link) holding every scenario; the scenarios live in
//! `tests/e2e/*.rs`, grouped by feature, and share `tests/e2e/support.rs`.
//! Each test works in a fresh schema of its own (from the one harness,
//! `duroxide_pg_testkit::harness`), asserts outputs, statuses and stored history, shuts its
//! runtimes down and drops its schema.

use duroxide_pg_testkit::harness as common;

/// Providers reach the server directly (`pgbouncer_e2e.rs` runs the same
/// scenarios through PgBouncer).
const VIA: common::Via = common::Via::Direct;

include!("e2e/modules.rs");
