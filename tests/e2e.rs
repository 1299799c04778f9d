//! End-to-end scenarios: duroxide's real `Runtime` and `Client` running
//! orchestrations against duroxide-pg on a real PostgreSQL server.
//!
//! One test binary (one link) holding every scenario; the scenarios live in
//! `tests/e2e/*.rs`, grouped by feature, and share `tests/e2e/support.rs`.
//! Each test works in a fresh schema of its own (from the one harness,
//! `tests/common`), asserts outputs, statuses and stored history, shuts its
//! runtimes down and drops its schema.

mod common;

/// Providers reach the server directly (`pgbouncer_e2e.rs` runs the same
/// scenarios through PgBouncer).
const VIA: common::Via = common::Via::Direct;

#[path = "e2e/support.rs"]
mod support;

#[path = "e2e/admin.rs"]
mod admin;
#[path = "e2e/basics.rs"]
mod basics;
#[path = "e2e/cancellation.rs"]
mod cancellation;
#[path = "e2e/continue_as_new.rs"]
mod continue_as_new;
#[path = "e2e/errors.rs"]
mod errors;
#[path = "e2e/events.rs"]
mod events;
#[path = "e2e/multi_runtime.rs"]
mod multi_runtime;
#[path = "e2e/observability.rs"]
mod observability;
#[path = "e2e/sessions.rs"]
mod sessions;
#[path = "e2e/sub_orchestrations.rs"]
mod sub_orchestrations;
#[path = "e2e/timers.rs"]
mod timers;
#[path = "e2e/versioning.rs"]
mod versioning;
#[path = "e2e/wakeups.rs"]
mod wakeups;
