//! duroxide 0.1.32's provider validation suite again, through a real
//! PgBouncer 1.18 in transaction pooling mode (`local_cluster::pgbouncer_url`),
//! with the provider configured for it (`Pooler::Transaction`): every call a
//! literal simple query, no named prepared statement, poll-only.
//!
//! The wiring is the one of `validation_suite.rs` (`validation/wiring.rs`):
//! the same 234 tests but two. `test_long_poll_waits_for_timeout` and
//! `test_long_poll_work_item_waits_for_timeout` require a fetch that waits
//! for work, which needs `LISTEN` on a session of its own; behind a
//! transaction pooler the provider polls instead, which the short-poll tests
//! (`test_short_poll_*`) check here. Both long-poll tests run in the direct
//! pass.
//!
//! Run: `cargo nextest run --test pgbouncer_validation_suite` (needs the
//! Debian package `pgbouncer`).

use duroxide_pg_testkit::harness as common;

use common::{PgTestFactory, Via};
use duroxide::provider_validations::ProviderFactory;

/// Providers reach the server through PgBouncer.
const VIA: Via = Via::PgBouncer;

/// Behind a transaction pooler nothing long-polls: see the module doc.
macro_rules! long_poll_only {
    ($($test:tt)*) => {};
}

include!("validation/wiring.rs");
