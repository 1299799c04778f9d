//! The one configuration of the property tests (proptest): `PROPTEST_CASES`
//! cases when set (long runs on demand), else 64 (the default suite), and no
//! failure files written into the repository.

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases when `PROPTEST_CASES` is unset.
pub const DEFAULT_CASES: u32 = 64;

/// The runner's configuration (see the module doc).
pub fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_CASES),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `test` on the configured number of cases drawn from `strategy`; a
/// failure panics with the smallest input found.
pub fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = TestRunner::new(config()).run(&strategy, test) {
        panic!("{e}");
    }
}

/// Text for parsers: anything at all, or up to 9 of `pieces` (the tokens
/// the parser looks for, and ones that trip parsers up) in any order.
pub fn soup(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<String>(),
        prop::collection::vec(prop::sample::select(pieces), 0..10).prop_map(|p| p.concat()),
    ]
}
