//! The hostile-input cases of `hostile_input.rs` again, through a real
//! PgBouncer in transaction mode with the provider in `Pooler::Transaction`
//! mode. There every argument travels inside the SQL text as a literal, so
//! these cases test its quoting: quotes, backslashes, `$$`, SQL keywords and
//! every other hostile string must round-trip exactly or fail cleanly, as
//! they do with bound parameters.
//!
//! Run: `cargo nextest run --test pgbouncer_hostile_input` (needs the Debian
//! package `pgbouncer`).

use duroxide_pg_testkit::harness as common;

/// Providers reach the server through PgBouncer.
const VIA: common::Via = common::Via::PgBouncer;

#[allow(dead_code)] // this file uses only part of the end-to-end helpers
#[path = "e2e/support.rs"]
mod support;

#[path = "hostile/cases.rs"]
mod cases;
