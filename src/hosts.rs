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
        // An '@' later on: a password with an unencoded '/', '?' or '#'.
        // The driver reports that URL as malformed; leave it to it.
        None if url[auth_end..].contains('@') => return Ok(unchanged()),
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
        Some(p) if !matches!(p.parse::<u16>(), Ok(1..)) => Err(format!(
            "host {entry:?}: the port must be a number from 1 to 65535"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
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
}
