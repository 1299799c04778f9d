//! Times as the store keeps them (milliseconds since the Unix epoch, UTC) and
//! as operators write them, shared by the dashboard's filters and the CLI.
//! Hand-rolled civil-date arithmetic: no calendar crate for two conversions.

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `ms` as an RFC 3339 UTC time to the second, e.g. `2026-11-23T08:33:37Z`.
pub fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses a past moment: a UTC date (`2026-01-31`), a UTC time
/// (`2026-01-31T12:00:00Z`, seconds and `Z` optional, space allowed for `T`),
/// or an age before `now_ms` (`30d`, `12h`, `15m`, `45s`). A moment after
/// `now_ms` is refused: for a purge it would mean "everything", most likely
/// a typo.
pub fn parse_moment(text: &str, now_ms: u64) -> Result<u64, String> {
    let ms = parse_any_moment(text, now_ms)?;
    if ms > now_ms {
        return Err(format!(
            "{text:?} is in the future ({}); give a past date or an age such as 30d",
            format_ms(ms)
        ));
    }
    Ok(ms)
}

/// Parses an age: a whole number of days, hours, minutes or seconds (`30d`,
/// `12h`, `15m`, `45s`).
pub fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "cannot read {text:?} as an age: use a number and a unit, as in 30d, 12h, 15m or 45s"
        )
    };
    let unit = t
        .chars()
        .last()
        .filter(|c| "dhms".contains(*c))
        .ok_or_else(bad)?;
    let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        _ => 1,
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("{text:?} is too long an age"))?;
    Ok(std::time::Duration::from_secs(secs))
}

/// Parses a moment, past or future: a UTC date or time, or an age before
/// `now_ms`, as [`parse_moment`] reads them (the `datetime-local` form of a
/// browser, `2026-01-31T12:00`, is a UTC time without seconds).
pub fn parse_any_moment(text: &str, now_ms: u64) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "cannot read {text:?} as a time: use a UTC date (2026-01-31), a UTC time \
             (2026-01-31T12:00:00Z) or an age (30d, 12h, 15m, 45s)"
        )
    };
    if t.chars().last().is_some_and(|c| "dhms".contains(c)) {
        let age = parse_age(t).map_err(|_| bad())?;
        return u64::try_from(age.as_millis())
            .ok()
            .and_then(|age| now_ms.checked_sub(age))
            .ok_or_else(|| format!("{text:?} reaches back before 1970"));
    }
    let (date, time) = match t.find(['T', ' ']) {
        Some(i) => (&t[..i], t[i + 1..].trim_end_matches('Z')),
        None => (t, ""),
    };
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let parts: Vec<&str> = date.split('-').collect();
    let [y, mo, d] = parts[..] else {
        return Err(bad());
    };
    let (y, mo, d) = (num(y)?, num(mo)?, num(d)?);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y as i64, mo, d) as u64 * 86_400;
    if !time.is_empty() {
        let hms: Vec<u32> = time.split(':').map(num).collect::<Result<_, _>>()?;
        let (h, mi, s) = match hms[..] {
            [h, mi] => (h, mi, 0),
            [h, mi, s] => (h, mi, s),
            _ => return Err(bad()),
        };
        if h > 23 || mi > 59 || s > 59 {
            return Err(bad());
        }
        secs += u64::from(h * 3600 + mi * 60 + s);
    }
    Ok(secs * 1000)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_ms(1_795_422_817_999), "2026-11-23T08:33:37Z");
    }

    #[test]
    fn parses_dates_times_and_ages() {
        let now = 1_795_422_817_000;
        assert_eq!(parse_moment("2000-02-29", now), Ok(951_782_400_000));
        assert_eq!(parse_moment("2026-11-23T08:33:37Z", now), Ok(now));
        assert_eq!(parse_moment("2026-11-23 08:33", now), Ok(1_795_422_780_000));
        assert_eq!(
            parse_moment("2d", 200_000_000),
            Ok(200_000_000 - 172_800_000)
        );
        assert_eq!(parse_moment("90s", 100_000), Ok(10_000));
    }

    #[test]
    fn parses_ages() {
        assert_eq!(
            parse_age("7d"),
            Ok(std::time::Duration::from_secs(7 * 86_400))
        );
        assert_eq!(parse_age(" 45s "), Ok(std::time::Duration::from_secs(45)));
        assert_eq!(parse_age("0s"), Ok(std::time::Duration::ZERO));
        for bad in ["7", "d", "-1d", "7w", "1.5h", ""] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-1-1x",
            "1969-12-31",
            "2026-01-01T25:00",
            "12x",
            "d",
            "-3d",
            "2026-01-01T10",
        ] {
            assert!(parse_moment(bad, 1_000_000).is_err(), "{bad:?} accepted");
        }
        assert!(parse_moment("5d", 1000).is_err(), "age before the epoch");
        assert!(parse_moment("99999-01-01", 1000).is_err());
        assert!(parse_moment("18446744073709551615d", 1000).is_err());
        let err = parse_moment("2062-01-01", 1_795_422_817_000).unwrap_err();
        assert!(err.contains("is in the future"), "{err}");
    }

    #[test]
    fn round_trips_every_day_for_a_millennium() {
        for day in 0..365_000i64 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    // ---- Property tests ----
    //
    // `PROPTEST_CASES=5000 cargo nextest run -p duroxide-pg-ui --lib time::`
    // runs them longer.

    use proptest::prelude::*;

    pub(crate) use duroxide_pg_testkit::properties::check;

    /// The last second `parse_any_moment` reads: 9999-12-31T23:59:59Z.
    const LAST_MS: u64 = 253_402_300_799_000;

    /// Seconds per unit of an age.
    fn unit_secs(unit: char) -> u64 {
        match unit {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            _ => 1,
        }
    }

    /// Days of a month, by the Gregorian rule (written apart from the
    /// parser's own, as a model).
    fn model_days_in_month(y: u32, m: u32) -> u32 {
        let leap = y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
        [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ][m as usize - 1]
    }

    /// Days from 1970-01-01 to a date, counted by whole years and months
    /// (a model independent of Hinnant's algorithm the parser uses).
    fn model_days(y: u32, m: u32, d: u32) -> u64 {
        let leaps_before = |y: u32| {
            let n = y - 1;
            n / 4 - n / 100 + n / 400
        };
        let years = u64::from(y - 1970) * 365 + u64::from(leaps_before(y) - leaps_before(1970));
        let months: u32 = (1..m).map(|month| model_days_in_month(y, month)).sum();
        years + u64::from(months) + u64::from(d) - 1
    }

    /// Blanks that `trim` removes, or none.
    fn blank() -> impl Strategy<Value = &'static str> {
        prop::sample::select(&["", "", " ", "\t", "  ", "\u{3000}"][..])
    }

    /// A count: small, or anywhere in u64 (overflow included).
    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![0..10_000u64, any::<u64>()]
    }

    /// Text that looks like times and ages: digits, separators, units,
    /// signs and multi-byte characters in any order, or anything at all.
    pub(crate) fn time_soup() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "2026",
            "1970",
            "9999",
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
            "12",
            "31",
            "59",
            "60",
            "+",
            ".",
            "é",
            "٣",
            "€",
            "\u{3000}",
            "18446744073709551615",
        ];
        duroxide_pg_testkit::properties::soup(PIECES)
    }

    /// An age, `<n><unit>` with blanks around it, reads as n whole units,
    /// or is refused as too long when that overflows (never wraps).
    #[test]
    fn ages_read_as_whole_units() {
        let age = (
            blank(),
            count(),
            prop::sample::select(&['d', 'h', 'm', 's'][..]),
            blank(),
        );
        check(age, |(before, n, unit, after)| {
            let text = format!("{before}{n}{unit}{after}");
            match n.checked_mul(unit_secs(unit)) {
                Some(secs) => {
                    prop_assert_eq!(parse_age(&text), Ok(std::time::Duration::from_secs(secs)))
                }
                None => {
                    let e = parse_age(&text).expect_err("overflow");
                    prop_assert!(e.contains("too long"), "{}", e);
                }
            }
            Ok(())
        });
    }

    /// An age as a moment is that long before now, or an error when it
    /// reaches back before 1970 or overflows: never a wrapped-around time.
    #[test]
    fn ages_count_back_from_now() {
        let case = (
            any::<u64>(),
            count(),
            prop::sample::select(&['d', 'h', 'm', 's'][..]),
        );
        check(case, |(now, n, unit)| {
            let text = format!("{n}{unit}");
            let expected = n
                .checked_mul(unit_secs(unit))
                .and_then(|s| s.checked_mul(1000))
                .and_then(|ms| now.checked_sub(ms));
            prop_assert_eq!(parse_any_moment(&text, now).ok(), expected);
            prop_assert_eq!(parse_moment(&text, now).ok(), expected);
            Ok(())
        });
    }

    /// Dates and times in every documented form (`2026-01-31`,
    /// `2026-01-31T12:00`, seconds and `Z` optional, a space for `T`) read
    /// as the instant a day count independent of the parser's gives, and a
    /// day past the month's end is refused.
    #[test]
    fn dates_and_times_read_as_their_instant() {
        let time = (
            0..24u32,
            0..60u32,
            prop::option::of(0..60u32),
            prop::sample::select(&["T", " "][..]),
            prop::sample::select(&["", "Z"][..]),
        );
        let case = (
            1970..=9999u32,
            1..=12u32,
            1..=31u32,
            prop::option::of(time),
            blank(),
        );
        check(case, |(y, m, d, time, pad)| {
            let mut text = format!("{pad}{y:04}-{m:02}-{d:02}");
            let mut secs = 0;
            if let Some((h, mi, s, sep, z)) = time {
                text += &format!("{sep}{h:02}:{mi:02}");
                if let Some(s) = s {
                    text += &format!(":{s:02}");
                }
                text += z;
                secs = u64::from(h * 3600 + mi * 60 + s.unwrap_or(0));
            }
            text += pad;
            let got = parse_any_moment(&text, 0);
            if d <= model_days_in_month(y, m) {
                prop_assert_eq!(
                    got,
                    Ok((model_days(y, m, d) * 86_400 + secs) * 1000),
                    "{:?}",
                    text
                );
            } else {
                prop_assert!(got.is_err(), "{:?} accepted", text);
            }
            Ok(())
        });
    }

    /// A date or time with a field out of range (year before 1970 or past
    /// 9999, month 0 or 13+, day 0, hour 24+, minute or second 60+) is
    /// refused, not carried into the next field.
    #[test]
    fn out_of_range_fields_are_refused() {
        let case = (
            1970..=9999u32,
            1..=12u32,
            1..=28u32,
            0..24u32,
            0..60u32,
            0..60u32,
            0..6usize,
            0..100_000u32,
        );
        check(
            case,
            |(mut y, mut m, mut d, mut h, mut mi, mut s, field, bad)| {
                match field {
                    0 => y = if bad < 1970 { bad } else { 10_000 + bad },
                    1 => m = if bad % 2 == 0 { 0 } else { 13 + bad % 87 },
                    2 => d = 0,
                    3 => h = 24 + bad % 76,
                    4 => mi = 60 + bad % 40,
                    _ => s = 60 + bad % 40,
                }
                let text = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z");
                prop_assert!(
                    parse_any_moment(&text, LAST_MS).is_err(),
                    "{:?} accepted",
                    text
                );
                Ok(())
            },
        );
    }

    /// What `format_ms` prints, `parse_any_moment` reads back as the same
    /// second (the dashboard pins filters this way), and a past moment
    /// passes `parse_moment`.
    #[test]
    fn formatted_times_parse_back() {
        check((0..=LAST_MS + 999, any::<u64>()), |(ms, now)| {
            let text = format_ms(ms);
            let second = ms / 1000 * 1000;
            prop_assert_eq!(parse_any_moment(&text, now), Ok(second));
            prop_assert_eq!(format_ms(second), text.clone());
            prop_assert_eq!(parse_moment(&text, ms), Ok(second));
            Ok(())
        });
    }

    /// No text panics a parser (a panic would end the request, or the
    /// CLI), `parse_moment` never returns a moment after now, and
    /// `parse_any_moment` nothing past 9999 but an age's `now - age`.
    #[test]
    fn time_parsers_never_panic() {
        check((time_soup(), any::<u64>()), |(text, now)| {
            let _ = parse_age(&text);
            if let Ok(ms) = parse_any_moment(&text, now) {
                prop_assert!(ms <= now.max(LAST_MS), "{:?} -> {}", text, ms);
            }
            if let Ok(ms) = parse_moment(&text, now) {
                prop_assert!(ms <= now, "{:?} -> {} after {}", text, ms, now);
            }
            Ok(())
        });
    }
}
