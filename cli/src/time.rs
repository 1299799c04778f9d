//! Times as the store keeps them and as operators write them: the same
//! parsing and formatting as the dashboard's filters.

pub use duroxide_pg_ui::time::{format_ms, now_ms, parse_age, parse_moment};

#[cfg(test)]
pub(crate) mod tests {
    //! Property tests of `purge --completed-before`, read by the CLI as
    //! given on the command line. `PROPTEST_CASES=5000 cargo nextest run
    //! -p duroxide-pg-cli --bin duroxide-pg time::` runs them longer.

    use clap::Parser;
    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    use super::parse_moment;
    use crate::args::{Cli, Command};

    pub(crate) use duroxide_pg_testkit::properties::check;

    /// Seconds per unit of an age.
    pub(crate) fn unit_secs(unit: char) -> u64 {
        match unit {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            _ => 1,
        }
    }

    /// A count: small, or anywhere in u64 (overflow included).
    pub(crate) fn count() -> impl Strategy<Value = u64> {
        prop_oneof![0..10_000u64, any::<u64>()]
    }

    pub(crate) fn unit() -> impl Strategy<Value = char> {
        prop::sample::select(&['d', 'h', 'm', 's'][..])
    }

    /// Text that looks like times and ages, or anything at all.
    pub(crate) fn time_soup() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "2026",
            "1970",
            "-",
            ":",
            "T",
            " ",
            "Z",
            "d",
            "h",
            "m",
            "s",
            "0",
            "1",
            "31",
            "60",
            "+",
            "-",
            "é",
            "٣",
            "18446744073709551615",
        ];
        duroxide_pg_testkit::properties::soup(PIECES)
    }

    /// `--completed-before`'s value as the command line delivers it.
    fn completed_before(value: &str) -> Result<String, TestCaseError> {
        let arg = format!("--completed-before={value}");
        let cli = Cli::try_parse_from(["duroxide-pg", "purge", arg.as_str()])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        match cli.command {
            Command::Purge(args) => Ok(args.completed_before),
            other => Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    /// Whatever follows `--completed-before=`, reading it never panics, and
    /// a moment it accepts is never after now: a purge "before the future"
    /// would delete every finished instance.
    #[test]
    fn purge_moments_never_panic_nor_reach_the_future() {
        check((time_soup(), any::<u64>()), |(text, now)| {
            let value = completed_before(&text)?;
            prop_assert_eq!(&value, &text);
            if let Ok(ms) = parse_moment(&value, now) {
                prop_assert!(ms <= now, "{:?} -> {} after {}", text, ms, now);
            }
            Ok(())
        });
    }

    /// `--completed-before=<n><unit>` is exactly n units before now, and an
    /// age that overflows or reaches back before 1970 is an error, never a
    /// wrapped-around moment.
    #[test]
    fn purge_ages_count_back_from_now() {
        check((count(), unit(), any::<u64>()), |(n, unit, now)| {
            let value = completed_before(&format!("{n}{unit}"))?;
            let expected = n
                .checked_mul(unit_secs(unit))
                .and_then(|s| s.checked_mul(1000))
                .and_then(|ms| now.checked_sub(ms));
            match parse_moment(&value, now) {
                Ok(ms) => prop_assert_eq!(Some(ms), expected),
                Err(e) => {
                    prop_assert_eq!(expected, None);
                    prop_assert!(e.contains(&value), "{}", e);
                }
            }
            Ok(())
        });
    }
}
