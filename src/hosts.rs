//! Multi-host URLs and `target_session_attrs`, as libpq defines them.
//!
//! sqlx parses one host per URL and ignores `target_session_attrs`. The
//! provider opens its connections itself, so it splits a URL such as
//! `postgres://app@db1:5432,db2:5433/app?target_session_attrs=read-write`
//! into one single-host URL per host (everything else kept as written, so
//! sqlx applies its usual defaults to each), tries the hosts in the order
//! given, and keeps the first connection whose server has the role asked
//! for. A URL with one host and no `target_session_attrs` is left exactly as
//! it is.

use std::str::FromStr;

/// Which server a connection must land on (libpq's `target_session_attrs`).
///
/// Set in the URL (`?target_session_attrs=read-write`). Default: `read-write`
/// when the URL names several hosts (the provider writes on every call, so
/// only a primary will do), `any` for one host (nothing to choose; no check
/// is made, so a connection costs no extra round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// The first server that accepts the connection.
    Any,
    /// A server that accepts writes by default: not in recovery (hot
    /// standby) and `default_transaction_read_only` off.
    ReadWrite,
    /// A server that does not accept writes by default: in recovery or
    /// `default_transaction_read_only` on.
    ReadOnly,
    /// A server not in recovery.
    Primary,
    /// A server in recovery (a hot standby).
    Standby,
    /// A standby if any host is one, otherwise any server.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// Every value, in libpq's order.
    pub const ALL: [TargetSessionAttrs; 6] = [
        TargetSessionAttrs::Any,
        TargetSessionAttrs::ReadWrite,
        TargetSessionAttrs::ReadOnly,
        TargetSessionAttrs::Primary,
        TargetSessionAttrs::Standby,
        TargetSessionAttrs::PreferStandby,
    ];

    /// The URL spelling (`read-write`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::ReadOnly => "read-only",
            TargetSessionAttrs::Primary => "primary",
            TargetSessionAttrs::Standby => "standby",
            TargetSessionAttrs::PreferStandby => "prefer-standby",
        }
    }

    /// The passes over the host list, each with what it accepts: one pass,
    /// except `prefer-standby`, which looks for a standby first and then
    /// takes any server (libpq's order).
    pub(crate) fn passes(self) -> &'static [TargetSessionAttrs] {
        match self {
            TargetSessionAttrs::PreferStandby => {
                &[TargetSessionAttrs::Standby, TargetSessionAttrs::Any]
            }
            TargetSessionAttrs::Any => &[TargetSessionAttrs::Any],
            TargetSessionAttrs::ReadWrite => &[TargetSessionAttrs::ReadWrite],
            TargetSessionAttrs::ReadOnly => &[TargetSessionAttrs::ReadOnly],
            TargetSessionAttrs::Primary => &[TargetSessionAttrs::Primary],
            TargetSessionAttrs::Standby => &[TargetSessionAttrs::Standby],
        }
    }

    /// Whether a server in `role` passes (for one pass of [`Self::passes`]).
    pub(crate) fn accepts(self, role: ServerRole) -> bool {
        match self {
            TargetSessionAttrs::Any | TargetSessionAttrs::PreferStandby => true,
            TargetSessionAttrs::ReadWrite => !role.in_recovery && !role.read_only_default,
            TargetSessionAttrs::ReadOnly => role.in_recovery || role.read_only_default,
            TargetSessionAttrs::Primary => !role.in_recovery,
            TargetSessionAttrs::Standby => role.in_recovery,
        }
    }
}

impl std::fmt::Display for TargetSessionAttrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TargetSessionAttrs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "target_session_attrs={s:?} is not one of {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

/// What a connected server is, as [`TargetSessionAttrs`] judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerRole {
    /// `pg_is_in_recovery()`: a standby (or a server still recovering).
    pub in_recovery: bool,
    /// `default_transaction_read_only` is on.
    pub read_only_default: bool,
}

impl std::fmt::Display for ServerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.in_recovery, self.read_only_default) {
            (true, _) => f.write_str("a standby (in recovery)"),
            (false, true) => f.write_str("a primary with default_transaction_read_only on"),
            (false, false) => f.write_str("a primary accepting writes"),
        }
    }
}

/// A URL split by host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostUrls {
    /// One URL per host, in the order given, each naming only that host.
    pub urls: Vec<String>,
    /// Each host as written (`db1:5432`), for messages.
    pub labels: Vec<String>,
    /// `target_session_attrs`, when the URL sets it.
    pub attrs: Option<TargetSessionAttrs>,
}

/// Splits `url` by host. A URL without `://` is returned as it is (the
/// driver reports what is wrong with it). The error says what is wrong
/// without quoting the URL (the caller redacts and adds it).
pub(crate) fn split(url: &str) -> Result<HostUrls, String> {
    let unchanged = || HostUrls {
        urls: vec![url.to_string()],
        labels: vec![String::new()],
        attrs: None,
    };
    let Some(scheme_end) = url.find("://") else {
        return Ok(unchanged());
    };
    let auth_start = scheme_end + 3;
    let auth_end = url[auth_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| auth_start + i);
    let host_start = match url[auth_start..auth_end].rfind('@') {
        Some(i) => auth_start + i + 1,
        // An '@' later on, with a ':' before it: maybe a password with an
        // unencoded '/', '?' or '#' (whose pieces the host list would
        // quote). The driver reports that URL as malformed; leave it to it.
        // Without a ':' there is no password, only an '@' in the path or
        // query (`?user=alice@example`), and the host list is the authority.
        None if url[auth_end..]
            .find('@')
            .is_some_and(|at| url[auth_start..auth_end + at].contains(':')) =>
        {
            return Ok(unchanged());
        }
        None => auth_start,
    };
    let hostspec = &url[host_start..auth_end];

    // The query, without target_session_attrs (sqlx would warn about it).
    let (path, query, fragment) = {
        let rest = &url[auth_end..];
        let (before_fragment, fragment) = match rest.find('#') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        match before_fragment.find('?') {
            Some(i) => (
                &before_fragment[..i],
                Some(&before_fragment[i + 1..]),
                fragment,
            ),
            None => (before_fragment, None, fragment),
        }
    };
    let mut attrs = None;
    let mut kept = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "target_session_attrs" => attrs = Some(value.parse::<TargetSessionAttrs>()?),
            "host" | "hostaddr" | "port" if value.contains(',') || value.contains("%2C") => {
                return Err(format!(
                    "a list in the {key} parameter is not supported: name the hosts in the URL \
                     itself (postgres://user@host1:5432,host2:5432/db)"
                ));
            }
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };

    let entries: Vec<&str> = hostspec.split(',').collect();
    if entries.len() == 1 && attrs.is_none() {
        return Ok(unchanged());
    }
    let mut urls = Vec::with_capacity(entries.len());
    for entry in &entries {
        check_host(entry, entries.len())?;
        urls.push(format!(
            "{}{entry}{path}{query}{fragment}",
            &url[..host_start]
        ));
    }
    Ok(HostUrls {
        urls,
        labels: entries.iter().map(|e| (*e).to_string()).collect(),
        attrs,
    })
}

/// Checks one entry of the host list: `host`, `host:port`, `[v6]` or
/// `[v6]:port`, the port a number from 1 to 65535.
fn check_host(entry: &str, count: usize) -> Result<(), String> {
    if entry.is_empty() {
        return Err(if count > 1 {
            "the host list has an empty entry (two commas, or one at an end)".to_string()
        } else {
            "no host".to_string()
        });
    }
    let port = if let Some(rest) = entry.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| format!("host {entry:?}: an IPv6 address needs its closing ']'"))?;
        match &rest[close + 1..] {
            "" => None,
            after => Some(after.strip_prefix(':').ok_or_else(|| {
                format!("host {entry:?}: expected ':port' after the IPv6 address")
            })?),
        }
    } else {
        entry.split_once(':').map(|(_, p)| p)
    };
    match port {
        // Digits only: `parse` would also take a sign (`+1`), which the
        // driver's URL parser refuses.
        Some(p)
            if !p.bytes().all(|b| b.is_ascii_digit()) || !matches!(p.parse::<u16>(), Ok(1..)) =>
        {
            Err(format!(
                "host {entry:?}: the port must be a number from 1 to 65535"
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn role(in_recovery: bool, read_only_default: bool) -> ServerRole {
        ServerRole {
            in_recovery,
            read_only_default,
        }
    }

    #[test]
    fn one_host_without_attrs_is_left_alone() {
        for url in [
            "postgres://u:p@h:5432/db?sslmode=require",
            "postgres://u@h/db",
            "postgres:///db?host=/var/run/postgresql",
            "not a url",
            "postgres://u:p/w@h/db",
        ] {
            let s = split(url).unwrap();
            assert_eq!(s.urls, vec![url.to_string()], "{url}");
            assert_eq!(s.attrs, None);
        }
    }

    #[test]
    fn hosts_are_split_in_order_with_their_own_ports() {
        let s = split("postgres://u:p%40ss@h1:5433,h2,[::1]:6000,[fe80::2]/db?sslmode=require#x")
            .unwrap();
        assert_eq!(
            s.urls,
            vec![
                "postgres://u:p%40ss@h1:5433/db?sslmode=require#x",
                "postgres://u:p%40ss@h2/db?sslmode=require#x",
                "postgres://u:p%40ss@[::1]:6000/db?sslmode=require#x",
                "postgres://u:p%40ss@[fe80::2]/db?sslmode=require#x",
            ]
        );
        assert_eq!(s.labels, vec!["h1:5433", "h2", "[::1]:6000", "[fe80::2]"]);
        assert_eq!(s.attrs, None);
        // No user, no path.
        let s = split("postgresql://a,b:1").unwrap();
        assert_eq!(s.urls, vec!["postgresql://a", "postgresql://b:1"]);
    }

    #[test]
    fn every_target_session_attrs_value_parses_and_is_removed_from_the_url() {
        for attrs in TargetSessionAttrs::ALL {
            let url = format!(
                "postgres://u@a:1,b:2/db?sslmode=disable&target_session_attrs={attrs}&application_name=x"
            );
            let s = split(&url).unwrap();
            assert_eq!(s.attrs, Some(attrs));
            assert_eq!(
                s.urls,
                vec![
                    "postgres://u@a:1/db?sslmode=disable&application_name=x",
                    "postgres://u@b:2/db?sslmode=disable&application_name=x",
                ]
            );
            assert_eq!(attrs.as_str().parse::<TargetSessionAttrs>(), Ok(attrs));
        }
        // One host with attrs: split too (the attrs are checked).
        let s = split("postgres://u@a/db?target_session_attrs=primary").unwrap();
        assert_eq!(s.urls, vec!["postgres://u@a/db"]);
        assert_eq!(s.attrs, Some(TargetSessionAttrs::Primary));
    }

    #[test]
    fn bad_host_lists_and_attrs_are_refused_clearly() {
        let cases = [
            ("postgres://u@a,,b/db", "empty entry"),
            ("postgres://u@a,/db", "empty entry"),
            ("postgres://u@a:0,b/db", "port must be a number"),
            ("postgres://u@a:x,b/db", "port must be a number"),
            ("postgres://u@a:70000,b/db", "port must be a number"),
            // Regression (found by `split_matches_its_model`): a signed port
            // passed the check, for the driver to refuse with a vaguer error.
            ("postgres://u@a:+1,b/db", "port must be a number"),
            ("postgres://u@[::1,b/db", "closing ']'"),
            ("postgres://u@[::1]x,b/db", "':port'"),
            ("postgres://u@a/db?host=a,b", "host parameter"),
            ("postgres://u@a/db?port=1,2", "port parameter"),
            (
                "postgres://u@a/db?target_session_attrs=master",
                "is not one of any, read-write",
            ),
        ];
        for (url, fragment) in cases {
            let e = split(url).expect_err(url);
            assert!(e.contains(fragment), "{url}: {e}");
        }
    }

    #[test]
    fn attrs_judge_roles_as_libpq_does() {
        use TargetSessionAttrs::*;
        let primary = role(false, false);
        let read_only_primary = role(false, true);
        let standby = role(true, true);
        let cases = [
            (Any, [true, true, true]),
            (ReadWrite, [true, false, false]),
            (ReadOnly, [false, true, true]),
            (Primary, [true, true, false]),
            (Standby, [false, false, true]),
        ];
        for (attrs, [p, rop, s]) in cases {
            assert_eq!(attrs.accepts(primary), p, "{attrs} on a primary");
            assert_eq!(
                attrs.accepts(read_only_primary),
                rop,
                "{attrs} on a read-only primary"
            );
            assert_eq!(attrs.accepts(standby), s, "{attrs} on a standby");
            assert_eq!(attrs.passes(), &[attrs]);
        }
        assert_eq!(PreferStandby.passes(), &[Standby, Any]);
    }

    /// Regression (found by `split_matches_its_model` with
    /// PROPTEST_CASES=3000): an '@' after the host list (here in the query)
    /// made the split give up and hand `db1,db2` to the driver as one host
    /// name, `target_session_attrs` unchecked. Only an '@' with a ':'
    /// before it can end a password.
    #[test]
    fn an_at_sign_in_the_query_does_not_stop_the_split() {
        let s = split("postgres://db1,db2/app?user=alice@example&target_session_attrs=primary")
            .unwrap();
        assert_eq!(
            s.urls,
            vec![
                "postgres://db1/app?user=alice@example",
                "postgres://db2/app?user=alice@example",
            ]
        );
        assert_eq!(s.attrs, Some(TargetSessionAttrs::Primary));
        // With a ':' before the '@' a password may hide there: left alone.
        let url = "postgres://u:pa/ss@db1,db2/app";
        assert_eq!(split(url).unwrap().urls, vec![url]);
    }

    // ---- Property tests ----
    //
    // `PROPTEST_CASES=5000 cargo nextest run -p duroxide-pg --lib hosts::`
    // runs them longer. `check` and the URL strategies are shared with the
    // properties in `call::tests` and `config::tests`.

    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    pub(crate) use duroxide_pg_testkit::properties::check;

    /// Every byte percent-encoded but RFC 3986's unreserved characters.
    pub(crate) fn pct(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// How a password is written in the URL.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Spelling {
        /// Percent-encoded: any characters.
        Encoded,
        /// As typed, with characters that do not end the authority (`@`,
        /// `:`, `%`, `,`, ...): a well-formed URL all the same.
        Raw,
        /// As typed, with `/`, `?` or `#` (and no `@`): a malformed URL, whose
        /// errors must not show the password either.
        RawDelimiters,
    }

    /// A password around a recognisable marker (`pw` and 8 random
    /// alphanumerics), which no message may contain.
    #[derive(Debug, Clone)]
    pub(crate) struct Password {
        pub marker: String,
        pub plain: String,
        pub spelling: Spelling,
    }

    impl Password {
        /// As it appears in the userinfo.
        pub(crate) fn written(&self) -> String {
            match self.spelling {
                Spelling::Encoded => pct(&self.plain),
                Spelling::Raw | Spelling::RawDelimiters => self.plain.clone(),
            }
        }

        /// As it appears in the `password` parameter: typed as is but for
        /// the characters that would end the parameter or change its
        /// value (`&`, `#`, `+`), or percent-encoded.
        pub(crate) fn written_in_query(&self) -> String {
            match self.spelling {
                Spelling::Raw => self
                    .plain
                    .replace('&', "%26")
                    .replace('#', "%23")
                    .replace('+', "%2B"),
                Spelling::Encoded | Spelling::RawDelimiters => pct(&self.plain),
            }
        }
    }

    const RAW: &[char] = &[
        '@', ':', '%', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', '~', '-', '.', '_',
        '[', ']', '1', 'F',
    ];
    const RAW_DELIMITERS: &[char] = &[
        '/', '?', '#', ':', '%', '!', '$', '&', '+', ',', ';', '=', '~', '.', '_', '1',
    ];

    pub(crate) fn password() -> impl Strategy<Value = Password> {
        let marker = || "[A-Za-z0-9]{8}".prop_map(|s| format!("pw{s}"));
        let raw = |set: &'static [char]| {
            prop::collection::vec(prop::sample::select(set), 0..4).prop_map(String::from_iter)
        };
        let make = |spelling| {
            move |(marker, before, after): (String, String, String)| Password {
                plain: format!("{before}{marker}{after}"),
                marker,
                spelling,
            }
        };
        prop_oneof![
            (marker(), "[^\\x00]{0,4}", "[^\\x00]{0,4}").prop_map(make(Spelling::Encoded)),
            (marker(), raw(RAW), raw(RAW)).prop_map(make(Spelling::Raw)),
            (marker(), raw(RAW_DELIMITERS), raw(RAW_DELIMITERS))
                .prop_map(make(Spelling::RawDelimiters)),
        ]
    }

    /// One entry of a host list, and whether [`check_host`] accepts it.
    fn host_entry() -> impl Strategy<Value = (String, bool)> {
        let host = || {
            prop_oneof![
                "[a-z][a-z0-9-]{0,8}(\\.[a-z0-9]{1,6}){0,2}",
                (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
                    .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
                prop::sample::select(&["[::1]", "[fe80::2]", "[2001:db8::5]"][..])
                    .prop_map(str::to_owned),
            ]
        };
        prop_oneof![
            4 => (host(), prop::option::of(1..=u16::MAX)).prop_map(|(h, port)| {
                (port.map_or(h.clone(), |p| format!("{h}:{p}")), true)
            }),
            1 => (host(), prop::sample::select(&[":0", ":70000", ":x", ":", ":-1", ":65536", ":+1"][..]))
                .prop_map(|(h, p)| (format!("{h}{p}"), false)),
            1 => prop::sample::select(&["", "[::1", "[::1]x", "[::1]:0"][..])
                .prop_map(|e| (e.to_string(), false)),
        ]
    }

    /// One query parameter, as `split` sees it.
    #[derive(Debug, Clone)]
    pub(crate) enum Param {
        /// Kept in every host's URL.
        Plain(String),
        /// `target_session_attrs`: a libpq spelling, or another value.
        Attrs(Result<TargetSessionAttrs, String>),
        /// A list in `host`, `hostaddr` or `port`: refused.
        List(String),
    }

    impl Param {
        fn text(&self) -> String {
            match self {
                Param::Plain(p) | Param::List(p) => p.clone(),
                Param::Attrs(Ok(a)) => format!("target_session_attrs={a}"),
                Param::Attrs(Err(v)) => format!("target_session_attrs={v}"),
            }
        }
    }

    fn param() -> impl Strategy<Value = Param> {
        prop_oneof![
            4 => prop_oneof![
                prop::sample::select(&[
                    "sslmode=disable",
                    "connect_timeout=5",
                    "options=-c%20geqo%3Doff",
                    // An '@' after the authority, unencoded.
                    "user=alice@example",
                    "application_name=ops@corp",
                ][..])
                .prop_map(str::to_owned),
                "[^\\x00]{0,8}".prop_map(|v| format!("application_name={}", pct(&v))),
            ]
            .prop_map(Param::Plain),
            1 => prop::sample::select(&TargetSessionAttrs::ALL[..]).prop_map(|a| Param::Attrs(Ok(a))),
            1 => prop::sample::select(&["master", "READ-WRITE", "", "read%2Dwrite", "any,primary"][..])
                .prop_map(|v| Param::Attrs(Err(v.to_string()))),
            1 => prop::sample::select(&[
                "host=a,b",
                "hostaddr=10.0.0.1,10.0.0.2",
                "port=1,2",
                "port=1%2C2",
                "host=a%2Cb",
            ][..])
            .prop_map(|v| Param::List(v.to_string())),
        ]
    }

    /// A URL built from parts: user, password (in the userinfo, the
    /// `password` parameter or both), host list, path, parameters and
    /// fragment, and what `split` must make of it.
    #[derive(Debug, Clone)]
    pub(crate) struct UrlCase {
        pub url: String,
        pub password: Option<Password>,
        /// The password is written in the userinfo.
        pub in_userinfo: bool,
        scheme: &'static str,
        /// `user@`, `user:password@` or nothing.
        userinfo: String,
        entries: Vec<(String, bool)>,
        /// Path, query and fragment as written.
        rest: String,
        params: Vec<Param>,
    }

    impl UrlCase {
        /// What [`split`] must return (`Err(())` for an error), by the rules
        /// its documentation gives; `None` for a malformed URL
        /// ([`Spelling::RawDelimiters`] in the userinfo), left to the driver.
        pub(crate) fn expected(&self) -> Option<Result<HostUrls, ()>> {
            if self.in_userinfo
                && self
                    .password
                    .as_ref()
                    .is_some_and(|p| p.spelling == Spelling::RawDelimiters)
            {
                return None;
            }
            let unchanged = HostUrls {
                urls: vec![self.url.clone()],
                labels: vec![String::new()],
                attrs: None,
            };
            let hostspec = self
                .entries
                .iter()
                .map(|(e, _)| e.as_str())
                .collect::<Vec<_>>()
                .join(",");
            // No '@' in the authority but one later, a ':' before it: maybe
            // a password with an unencoded '/', '?' or '#'.
            if self.userinfo.is_empty()
                && let Some(at) = self.rest.find('@')
                && format!("{hostspec}{}", &self.rest[..at]).contains(':')
            {
                return Some(Ok(unchanged));
            }
            let mut attrs = None;
            for p in &self.params {
                match p {
                    Param::Attrs(Ok(a)) => attrs = Some(*a),
                    Param::Attrs(Err(_)) | Param::List(_) => return Some(Err(())),
                    Param::Plain(_) => {}
                }
            }
            if self.entries.len() == 1 && attrs.is_none() {
                return Some(Ok(unchanged));
            }
            if self.entries.iter().any(|(_, ok)| !ok) {
                return Some(Err(()));
            }
            let kept: Vec<String> = self
                .params
                .iter()
                .filter(|p| !matches!(p, Param::Attrs(_)))
                .map(Param::text)
                .collect();
            let query = if kept.is_empty() {
                String::new()
            } else {
                format!("?{}", kept.join("&"))
            };
            let (path, fragment) = self.path_and_fragment();
            Some(Ok(HostUrls {
                urls: self
                    .entries
                    .iter()
                    .map(|(e, _)| {
                        format!(
                            "{}://{}{e}{path}{query}{fragment}",
                            self.scheme, self.userinfo
                        )
                    })
                    .collect(),
                labels: self.entries.iter().map(|(e, _)| e.clone()).collect(),
                attrs,
            }))
        }

        fn path_and_fragment(&self) -> (&str, &str) {
            let end = self.rest.find(['?', '#']).unwrap_or(self.rest.len());
            let fragment = self.rest.find('#').map_or("", |i| &self.rest[i..]);
            (&self.rest[..end], fragment)
        }
    }

    /// URLs from parts (see [`UrlCase`]); `with_password`: always, never or
    /// either.
    pub(crate) fn url_case(with_password: Option<bool>) -> impl Strategy<Value = UrlCase> {
        let password = match with_password {
            Some(true) => password().prop_map(Some).boxed(),
            Some(false) => Just(None).boxed(),
            None => prop::option::of(password()).boxed(),
        };
        (
            prop::sample::select(&["postgres", "postgresql"][..]),
            prop::option::of("[a-z][a-z0-9_]{0,6}"),
            password,
            // Where the password goes: userinfo, parameter, both.
            0..3u8,
            prop::sample::select(&["password", "Password", "PASSWORD"][..]),
            prop::collection::vec(host_entry(), 1..5),
            prop::sample::select(&["", "/", "/db", "/my%20db"][..]),
            prop::collection::vec(param(), 0..4),
            any::<bool>(),
            prop::option::of("[a-z]{1,4}"),
        )
            .prop_map(
                |(
                    scheme,
                    user,
                    password,
                    place,
                    key,
                    entries,
                    path,
                    mut params,
                    first,
                    fragment,
                )| {
                    let spelled_raw = password
                        .as_ref()
                        .is_some_and(|p| p.spelling == Spelling::RawDelimiters);
                    // A malformed password only in the userinfo (it is
                    // encoded in a parameter).
                    let in_userinfo = password.is_some() && (place != 1 || spelled_raw);
                    let in_query = password.is_some() && place != 0;
                    let user = user.unwrap_or_default();
                    let userinfo = match &password {
                        Some(p) if in_userinfo => format!("{user}:{}@", p.written()),
                        _ if user.is_empty() => String::new(),
                        _ => format!("{user}@"),
                    };
                    if let Some(p) = password.as_ref().filter(|_| in_query) {
                        let pair = Param::Plain(format!("{key}={}", p.written_in_query()));
                        if first {
                            params.insert(0, pair);
                        } else {
                            params.push(pair);
                        }
                    }
                    let query = params.iter().map(Param::text).collect::<Vec<_>>().join("&");
                    let mut rest = path.to_string();
                    if !query.is_empty() {
                        rest.push('?');
                        rest.push_str(&query);
                    }
                    if let Some(f) = fragment {
                        rest.push('#');
                        rest.push_str(&f);
                    }
                    let hosts = entries
                        .iter()
                        .map(|(e, _)| e.as_str())
                        .collect::<Vec<_>>()
                        .join(",");
                    UrlCase {
                        url: format!("{scheme}://{userinfo}{hosts}{rest}"),
                        password,
                        in_userinfo,
                        scheme,
                        userinfo,
                        entries,
                        rest,
                        params,
                    }
                },
            )
    }

    /// Text that looks like URLs: their delimiters, parameter names and
    /// multi-byte characters next to one another, or anything at all.
    pub(crate) fn url_soup() -> impl Strategy<Value = String> {
        const PIECES: &[&str] = &[
            "postgres://",
            "://",
            "@",
            ":",
            ",",
            "/",
            "?",
            "#",
            "&",
            "=",
            "[",
            "]",
            "%",
            "%2C",
            "%4",
            "target_session_attrs",
            "host",
            "port",
            "password",
            "read-write",
            "5432",
            "h",
            "é",
            "€",
            "😀",
            " ",
            "",
        ];
        prop_oneof![
            any::<String>(),
            prop::collection::vec(prop::sample::select(PIECES), 0..16).prop_map(|p| p.concat()),
        ]
    }

    /// `split` never panics, whatever it is given, and what it returns is
    /// consistent (one label per URL, at least one URL): a URL comes from
    /// an operator's configuration, and a panic there (or one quoting the
    /// URL) would take the service down.
    #[test]
    fn split_never_panics() {
        check(url_soup(), |s| {
            if let Ok(h) = split(&s) {
                prop_assert!(!h.urls.is_empty());
                prop_assert_eq!(h.urls.len(), h.labels.len());
            }
            Ok(())
        });
    }

    /// For URLs built from parts, `split` returns what its rules say:
    /// one URL per host in order with everything else kept as written but
    /// `target_session_attrs`, the attrs parsed, the errors where a host
    /// entry or parameter is bad; and each URL it returns is left alone
    /// when split again (one host, no attrs).
    #[test]
    fn split_matches_its_model() {
        check(url_case(None), |case| {
            let got = split(&case.url);
            if let Some(expected) = case.expected() {
                prop_assert_eq!(got.clone().map_err(|_| ()), expected);
            }
            if let Ok(h) = got {
                for url in &h.urls {
                    let again = split(url).map_err(TestCaseError::fail)?;
                    prop_assert_eq!(&again.urls, &vec![url.clone()]);
                    prop_assert_eq!(again.attrs, None);
                }
            }
            Ok(())
        });
    }

    /// No error of `split`, and no host label (labels name hosts in
    /// connection errors), contains the password, however it is written.
    #[test]
    fn split_never_quotes_the_password() {
        check(url_case(Some(true)), |case| {
            let marker = &case.password.as_ref().expect("a password").marker;
            match split(&case.url) {
                Err(e) => prop_assert!(!e.contains(marker.as_str()), "{}", e),
                Ok(h) => {
                    for label in &h.labels {
                        prop_assert!(!label.contains(marker.as_str()), "{}", label);
                    }
                }
            }
            Ok(())
        });
    }

    /// `target_session_attrs` accepts exactly libpq's spellings (each
    /// printed form parses back to itself) and nothing else.
    #[test]
    fn target_session_attrs_parse_only_libpq_spellings() {
        let value = prop_oneof![
            prop::sample::select(&TargetSessionAttrs::ALL[..]).prop_map(|a| a.to_string()),
            any::<String>(),
            "[a-z-]{0,15}",
        ];
        check(value, |s| {
            let known = TargetSessionAttrs::ALL
                .into_iter()
                .find(|a| a.as_str() == s);
            match s.parse::<TargetSessionAttrs>() {
                Ok(a) => {
                    prop_assert_eq!(Some(a), known);
                    prop_assert_eq!(a.to_string(), s);
                }
                Err(e) => {
                    prop_assert_eq!(known, None);
                    prop_assert!(e.contains("is not one of"), "{}", e);
                }
            }
            Ok(())
        });
    }
}
