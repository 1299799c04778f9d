//! Unit tests of the configuration: resolution, validation, redaction.

use super::connect::with_pooler_hint;
use super::redact::percent_decode;
use super::*;

/// Regression: a '%' before a multi-byte character made the decoder
/// slice inside the character and panic, quoting the password.
#[test]
fn percent_before_a_multibyte_character_does_not_panic() {
    assert_eq!(percent_decode("100%€x"), "100%€x");
    assert_eq!(percent_decode("a%41%zz%4"), "aA%zz%4");
    let url = "postgres://u:100%€@h/db";
    assert_eq!(scrub("bad 100%€ here", url), "bad *** here");
}

/// PgBouncer refuses a login that carries `options` unless told to
/// ignore it: the error says what to set.
#[test]
fn a_refused_startup_parameter_names_the_pooler_setting() {
    let hinted = with_pooler_hint("unsupported startup parameter: options".into());
    assert!(
        hinted.contains("with_pooler(Pooler::Transaction)"),
        "{hinted}"
    );
    assert!(
        hinted.contains("DUROXIDE_PG_POOLER=transaction"),
        "{hinted}"
    );
    assert_eq!(
        with_pooler_hint("connection refused".into()),
        "connection refused"
    );
}

#[test]
fn pooler_and_poll_mode_resolution() {
    let c = PostgresConfig::new("postgres://h/db").with_pooler(Pooler::Transaction);
    assert_eq!(c.resolved_poll_mode().unwrap(), PollMode::PollOnly);
    assert!(matches!(
        c.clone()
            .with_poll_mode(PollMode::LongPoll)
            .resolved_poll_mode(),
        Err(Error::InvalidConfig(_))
    ));
    let c = PostgresConfig::new("postgres://h/db").with_pooler(Pooler::None);
    assert_eq!(c.resolved_poll_mode().unwrap(), PollMode::LongPoll);
    // Behind a transaction pooler nothing goes in the startup options,
    // and each call carries the transaction's settings instead.
    let c = PostgresConfig::new("postgres://h/db")
        .with_pooler(Pooler::Transaction)
        .with_statement_timeout(Some(Duration::from_secs(3)));
    assert!(c.driver_options().unwrap().get_options().is_none());
    assert_eq!(
        c.pool_settings().unwrap().literal_prefix.as_deref(),
        Some(
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; \
             SET LOCAL statement_timeout = '3000ms'; "
        )
    );
}

#[test]
fn schema_names() {
    for ok in ["public", "tenant_1", "_x", "a", &"a".repeat(63)] {
        assert!(validate_schema_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "a\"b",
        "a;b",
        "a b",
        "A",
        "1abc",
        "pg_catalog",
        "information_schema",
        "ä",
        &"a".repeat(64),
        "x'y",
        "a-b",
    ] {
        assert!(validate_schema_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn redacts_passwords() {
    assert_eq!(
        redact_url("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(
        redact_url("postgres://h/db?user=u&password=secret&sslmode=require"),
        "postgres://h/db?user=u&password=***&sslmode=require"
    );
    assert_eq!(
        redact_url("postgres://u:p%40ss@h/db"),
        "postgres://u:***@h/db"
    );
}

#[test]
fn scrubs_password_from_messages() {
    let url = "postgres://u:p%40ss@h/db";
    let msg = format!("failed for {url}: bad p@ss and p%40ss");
    let s = scrub(&msg, url);
    assert!(!s.contains("p@ss") && !s.contains("p%40ss"), "{s}");
}

#[test]
fn pool_size_resolution() {
    let c = PostgresConfig::new("postgres://h/db").with_max_connections(3);
    assert_eq!(c.resolved_max_connections().unwrap(), 3);
    let c = PostgresConfig::new("postgres://h/db").with_max_connections(0);
    assert!(c.resolved_max_connections().is_err());
}

#[test]
fn debug_hides_password() {
    let c = PostgresConfig::new("postgres://u:topsecret@h/db");
    assert!(!format!("{c:?}").contains("topsecret"));
}

/// The skew is the server's clock minus this host's, less what the round
/// trip leaves uncertain; beyond the bound the error says which way.
#[test]
fn clock_skew_beyond_the_uncertainty_and_the_bound_is_refused() {
    let c = PostgresConfig::new("postgres://h/db");
    // Read 200 ms apart: ±100 ms cannot be told from no skew.
    c.check_clock(1_100, 900, 1_100).unwrap();
    c.check_clock(900, 900, 1_100).unwrap();
    let e = c.check_clock(10_000, 1_000, 1_200).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ClockSkew {
                skew_ms: 8_800,
                max_ms: 2_000
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("8800 ms behind"), "{e}");
    let e = c.check_clock(-60_000, 0, 0).unwrap_err();
    assert!(e.to_string().contains("60000 ms ahead of"), "{e}");
    // Within the bound, or not checked at all.
    c.check_clock(2_000, 0, 0).unwrap();
    let unchecked = c.with_max_clock_skew(None);
    unchecked.check_clock(i64::MAX / 2, 0, 0).unwrap();
}

/// The silence timeout is checked, and with the statement timeout it sets
/// how long a call waits for an answer (none without a statement timeout).
#[test]
fn the_response_bound_is_the_statement_timeout_plus_the_silence_timeout() {
    let c = PostgresConfig::new("postgres://h/db");
    let s = c.pool_settings().unwrap();
    assert_eq!(
        s.response_timeout,
        Some(PostgresConfig::DEFAULT_STATEMENT_TIMEOUT + PostgresConfig::DEFAULT_SILENCE_TIMEOUT)
    );
    assert_eq!(s.silence_grace, PostgresConfig::DEFAULT_SILENCE_TIMEOUT);
    let s = c
        .clone()
        .with_statement_timeout(Some(Duration::from_secs(3)))
        .with_silence_timeout(Duration::from_millis(250))
        .pool_settings()
        .unwrap();
    assert_eq!(s.response_timeout, Some(Duration::from_millis(3_250)));
    let s = c
        .clone()
        .with_statement_timeout(None)
        .pool_settings()
        .unwrap();
    assert_eq!(s.response_timeout, None);
    for bad in [Duration::ZERO, Duration::from_secs(601)] {
        let e = c
            .clone()
            .with_silence_timeout(bad)
            .pool_settings()
            .unwrap_err();
        assert!(e.to_string().contains("silence_timeout"), "{e}");
    }
}

/// Regression (found by `redacted_urls_never_show_the_password`): with an
/// unencoded '?' in the userinfo's password, the query was looked for from
/// that '?', so a `password` parameter after it was not hidden.
#[test]
fn a_password_parameter_after_a_question_mark_in_the_userinfo_is_hidden() {
    let url = "postgres://u:a?b@h/db?password=topsecret";
    let redacted = redact_url(url);
    assert!(!redacted.contains("topsecret"), "{redacted}");
    assert!(!redacted.contains("a?b"), "{redacted}");
}

/// Regression (found by `config_url_errors_never_show_the_password` with
/// PROPTEST_CASES=5000): a `password` parameter holding an unencoded '@',
/// in a URL without userinfo whose host has a port, made two overlapping
/// ranges (the '@' looked like the end of a userinfo password starting at
/// the port): `redact_url` panicked (range end out of bounds), in the
/// configuration's Debug and in every URL error.
#[test]
fn an_at_sign_in_a_password_parameter_does_not_panic() {
    let url = "postgres://db.example.com:5432/app?user=app&password=s3cr@t";
    let redacted = redact_url(url);
    assert!(!redacted.contains("s3cr"), "{redacted}");
    assert!(!format!("{:?}", PostgresConfig::new(url)).contains("s3cr"));
}

/// Regression (found by `scrubbed_messages_never_show_the_password`): a
/// `password` parameter followed by a fragment was scrubbed only with the
/// fragment attached, so a message quoting the value the driver reads (up
/// to the '#') kept it.
#[test]
fn a_password_parameter_before_a_fragment_is_scrubbed() {
    let url = "postgres://h/db?password=topsecret#x";
    assert_eq!(scrub("bad topsecret", url), "bad ***");
    assert_eq!(redact_url(url), "postgres://h/db?password=***");
}

/// Regression (found by `scrubbed_messages_never_show_the_password` with
/// PROPTEST_CASES=100000): in `postgres://a?password=s3cret::@`, the '@'
/// also looks like the end of a userinfo password `:` (from the first ':'
/// on); scrubbing that lone ':' first cut the real password apart in the
/// message, and it was no longer found.
#[test]
fn a_short_spurious_secret_does_not_shield_the_password() {
    let url = "postgres://a?password=s3cret::@";
    let scrubbed = scrub("auth failed for s3cret::@ (port 5432: refused)", url);
    assert!(!scrubbed.contains("s3cret"), "{scrubbed}");
}

// ---- Property tests: the password stays out of everything printed ----
//
// `PROPTEST_CASES=5000 cargo nextest run -p duroxide-pg --lib config::tests::`
// runs them longer. URLs come from `hosts::tests::url_case`: users,
// passwords (percent-encoded, typed as is, or typed with '/', '?' or '#',
// which makes the URL malformed), host lists, parameters, fragments.

mod properties {
    use proptest::prelude::*;

    use super::super::redact::percent_decode;
    use super::super::{PostgresConfig, redact_url, scrub};
    use crate::hosts::tests::{check, url_case, url_soup};

    /// `redact_url` hides the password wherever the URL carries it (the
    /// userinfo, a `password` parameter in any case, both) and however it
    /// is written, including '@', ':', '/', '?', '#' and '%' typed as is.
    #[test]
    fn redacted_urls_never_show_the_password() {
        check(url_case(Some(true)), |case| {
            let marker = &case.password.as_ref().expect("a password").marker;
            let redacted = redact_url(&case.url);
            prop_assert!(!redacted.contains(marker.as_str()), "{}", redacted);
            Ok(())
        });
    }

    /// A URL without a password comes out of `redact_url` as it went in:
    /// errors and logs keep the host, database and parameters an operator
    /// needs. (An '@' after the host list with a ':' before it, and no
    /// userinfo, may be a password typed with a '/': hidden on purpose.)
    #[test]
    fn urls_without_a_password_are_not_redacted() {
        check(url_case(Some(false)), |case| {
            let url = &case.url;
            let auth_start = url.find("://").expect("a scheme") + 3;
            let auth_end = url[auth_start..]
                .find(['/', '?', '#'])
                .map_or(url.len(), |i| auth_start + i);
            let maybe_password = !url[auth_start..auth_end].contains('@')
                && url[auth_end..]
                    .find('@')
                    .is_some_and(|at| url[auth_start..auth_end + at].contains(':'));
            if !maybe_password {
                prop_assert_eq!(&redact_url(url), url);
            }
            Ok(())
        });
    }

    /// `scrub` removes the password from a message that quotes it as
    /// written in the URL or percent-decoded (as the driver would), among
    /// any other text.
    #[test]
    fn scrubbed_messages_never_show_the_password() {
        let cases = (
            url_case(Some(true)),
            any::<String>(),
            any::<String>(),
            any::<String>(),
        );
        check(cases, |(case, before, middle, after)| {
            let p = case.password.as_ref().expect("a password");
            let written = if case.in_userinfo {
                p.written()
            } else {
                p.written_in_query()
            };
            let decoded = percent_decode(&written);
            let message = format!("{before}{written}{middle}{decoded}{after}");
            let scrubbed = scrub(&message, &case.url);
            prop_assert!(!scrubbed.contains(p.marker.as_str()), "{}", scrubbed);
            Ok(())
        });
    }

    /// Neither `redact_url` nor `scrub` panics on any text (a panic
    /// message could quote the URL), and text without "://", '?' or '&'
    /// has nothing to hide.
    #[test]
    fn redaction_never_panics() {
        check((url_soup(), url_soup()), |(a, b)| {
            let redacted = redact_url(&a);
            let _ = scrub(&b, &a);
            let _ = percent_decode(&a);
            if !a.contains("://") && !a.contains(['?', '&']) {
                prop_assert_eq!(redacted, a);
            }
            Ok(())
        });
    }

    /// The configuration's URL errors (`Error::InvalidUrl`, from the host
    /// list or the driver's parser), printed with Display or Debug, never
    /// contain the password, nor does the configuration's Debug.
    #[test]
    fn config_url_errors_never_show_the_password() {
        check(url_case(Some(true)), |case| {
            let marker = case.password.as_ref().expect("a password").marker.clone();
            let config = PostgresConfig::new(case.url.clone());
            let debug = format!("{config:?}");
            prop_assert!(!debug.contains(&marker), "{}", debug);
            if let Err(e) = config.targets() {
                let (display, debug) = (e.to_string(), format!("{e:?}"));
                prop_assert!(!display.contains(&marker), "{}", display);
                prop_assert!(!debug.contains(&marker), "{}", debug);
            }
            Ok(())
        });
    }
}
