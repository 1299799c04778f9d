//! The one clock: the caller's, in milliseconds since the Unix epoch. Every
//! stored function receives it as `p_now_ms`; the database clock is never
//! consulted, so tests and several processes agree on what "due" means.
//!
//! Hosts' clocks differ, so leases and visibility are judged by whichever
//! runtime calls. What a difference does is measured in RELIABILITY.md
//! (tests/processes.rs, "clock skew"); a provider compares this clock with
//! the server's when it is built ([`crate::PostgresConfig::with_max_clock_skew`]).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 before the epoch, saturating
/// far in the future).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .saturating_add(skew_for_tests_ms())
}

/// The clock-skew tests run a runtime process whose clock is off by
/// `DUROXIDE_PG_TEST_CLOCK_OFFSET_MS`, read once. Debug builds only: a
/// release build has no such switch, and the variable is no public API.
#[cfg(debug_assertions)]
fn skew_for_tests_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("DUROXIDE_PG_TEST_CLOCK_OFFSET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

#[cfg(not(debug_assertions))]
const fn skew_for_tests_ms() -> i64 {
    0
}
