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
        Some(DEFAULT_STATEMENT_TIMEOUT + DEFAULT_SILENCE_TIMEOUT)
    );
    assert_eq!(s.silence_grace, DEFAULT_SILENCE_TIMEOUT);
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
