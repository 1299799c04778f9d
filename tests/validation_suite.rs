//! duroxide 0.1.32's provider validation suite against `PostgresProvider`.
//!
//! Every one of the suite's 233 test functions (20 modules) is wired here as
//! its own test, `test_continue_as_new_transition_delivery` twice (the two
//! version stamps): 234 tests, none ignored. Each test gets fresh schemas from
//! the shared harness (`duroxide_pg_testkit::harness`) and drops them at the end.
//!
//! The short-poll tests run against a provider in poll-only mode; everything
//! else against the default (long-polling) provider.
//!
//! Run: `cargo nextest run --test validation_suite`. The same wiring
//! (`validation/wiring.rs`) runs again through PgBouncer in
//! `pgbouncer_validation_suite.rs`.

use duroxide_pg_testkit::harness as common;

use common::{PgTestFactory, Via};
use duroxide::provider_validations::ProviderFactory;

/// Providers reach the server directly.
const VIA: Via = Via::Direct;

/// Directly, providers long-poll: the long-poll-only tests apply.
macro_rules! long_poll_only {
    ($($test:tt)*) => { $($test)* };
}

include!("validation/wiring.rs");
