// The end-to-end scenario modules, shared by the two roots that run them:
// `e2e.rs` (directly) and `pgbouncer_e2e.rs` (through PgBouncer). A new
// scenario file is added here once. (`#[path]`s resolve from this file's
// folder.)

#[path = "support.rs"]
mod support;

#[path = "admin.rs"]
mod admin;
#[path = "basics.rs"]
mod basics;
#[path = "cancellation.rs"]
mod cancellation;
#[path = "continue_as_new.rs"]
mod continue_as_new;
#[path = "errors.rs"]
mod errors;
#[path = "events.rs"]
mod events;
#[path = "multi_runtime.rs"]
mod multi_runtime;
#[path = "observability.rs"]
mod observability;
#[path = "retention.rs"]
mod retention;
#[path = "sessions.rs"]
mod sessions;
#[path = "sub_orchestrations.rs"]
mod sub_orchestrations;
#[path = "timers.rs"]
mod timers;
#[path = "versioning.rs"]
mod versioning;
#[path = "wakeups.rs"]
mod wakeups;
