//! The end-to-end scenarios of `e2e.rs` again, through a real PgBouncer 1.18
//! in transaction pooling mode (`local_cluster::pgbouncer_url`) with the
//! provider configured for it (`Pooler::Transaction`: literal simple queries,
//! poll-only). Same files, same assertions; only the way in differs.
//!
//! Run: `cargo nextest run --test pgbouncer_e2e` (needs the Debian package
//! `pgbouncer`).

mod common;

/// Providers reach the server through PgBouncer.
const VIA: common::Via = common::Via::PgBouncer;

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
