//! Who may use the dashboard: nobody but local users unless credentials are
//! configured. Credentials come from an environment variable or a file,
//! never from a command-line argument (which every local user can read in
//! the process list).

use std::fmt;
use std::net::SocketAddr;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;

use crate::UiError;

/// A bearer token (the whole value).
pub const TOKEN_ENV: &str = "DUROXIDE_PG_UI_TOKEN";
/// A file holding the bearer token (one line).
pub const TOKEN_FILE_ENV: &str = "DUROXIDE_PG_UI_TOKEN_FILE";
/// Basic-auth credentials, `user:password`.
pub const BASIC_AUTH_ENV: &str = "DUROXIDE_PG_UI_BASIC_AUTH";
/// A file holding the basic-auth credentials, `user:password` (one line).
pub const BASIC_AUTH_FILE_ENV: &str = "DUROXIDE_PG_UI_BASIC_AUTH_FILE";

/// The credentials every request must carry.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer TOKEN`. Browsers, which cannot send a bearer
    /// header, may give the token as the basic-auth password (any user).
    Bearer(String),
    /// `Authorization: Basic` with exactly this user and password.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    // Never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Auth::Bearer(<redacted>)"),
            Auth::Basic { user, .. } => {
                write!(f, "Auth::Basic {{ user: {user:?}, password: <redacted> }}")
            }
        }
    }
}

impl Auth {
    /// A bearer token; refused when empty.
    pub fn bearer(token: impl Into<String>) -> Result<Self, UiError> {
        let token = token.into();
        if token.trim().is_empty() {
            return Err(UiError::Config("the bearer token is empty".into()));
        }
        Ok(Auth::Bearer(token))
    }

    /// Basic-auth credentials in the form `user:password`; refused when the
    /// user or the password is empty.
    pub fn basic(credentials: &str) -> Result<Self, UiError> {
        let Some((user, password)) = credentials.split_once(':') else {
            return Err(UiError::Config(
                "basic-auth credentials must be user:password".into(),
            ));
        };
        if user.is_empty() || password.is_empty() {
            return Err(UiError::Config(
                "basic-auth credentials need a user and a password".into(),
            ));
        }
        Ok(Auth::Basic {
            user: user.into(),
            password: password.into(),
        })
    }

    /// The credentials configured in the environment ([`TOKEN_ENV`],
    /// [`TOKEN_FILE_ENV`], [`BASIC_AUTH_ENV`], [`BASIC_AUTH_FILE_ENV`]);
    /// `None` when none is set. More than one set is an error, as is a file
    /// that cannot be read or holds nothing.
    pub fn from_env() -> Result<Option<Self>, UiError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Auth::from_env`] over any lookup (tests pass their own).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, UiError> {
        let set: Vec<(&str, String)> = [
            TOKEN_ENV,
            TOKEN_FILE_ENV,
            BASIC_AUTH_ENV,
            BASIC_AUTH_FILE_ENV,
        ]
        .into_iter()
        .filter_map(|n| get(n).filter(|v| !v.is_empty()).map(|v| (n, v)))
        .collect();
        let (name, value) = match set.as_slice() {
            [] => return Ok(None),
            [one] => one,
            many => {
                let names: Vec<&str> = many.iter().map(|(n, _)| *n).collect();
                return Err(UiError::Config(format!(
                    "set only one of {}",
                    names.join(", ")
                )));
            }
        };
        let from_file = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| UiError::Config(format!("cannot read {name} file {path:?}: {e}")))
        };
        let auth = match *name {
            TOKEN_ENV => Auth::bearer(value.clone()),
            TOKEN_FILE_ENV => Auth::bearer(from_file(value)?),
            BASIC_AUTH_ENV => Auth::basic(value),
            _ => Auth::basic(&from_file(value)?),
        };
        auth.map(Some)
            .map_err(|e| UiError::Config(format!("{name}: {e}")))
    }

    /// Whether `headers` carry these credentials.
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return matches!(self, Auth::Bearer(t) if same(t.as_bytes(), rest.as_bytes()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        match self {
            Auth::Bearer(t) => same(t.as_bytes(), password.as_bytes()),
            Auth::Basic {
                user: u,
                password: p,
            } => same(u.as_bytes(), user.as_bytes()) & same(p.as_bytes(), password.as_bytes()),
        }
    }
}

/// Equal bytes, in time that depends on the lengths only.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses to serve `addr` beyond this machine without credentials.
pub(crate) fn check_listen(addr: SocketAddr, auth: Option<&Auth>) -> Result<(), UiError> {
    if addr.ip().is_loopback() || auth.is_some() {
        return Ok(());
    }
    Err(UiError::Unauthenticated(format!(
        "refusing to listen on {addr} without authentication: anyone who can reach it could \
         cancel and delete orchestrations. Set {TOKEN_ENV} or {BASIC_AUTH_ENV} (or their _FILE \
         forms), or listen on 127.0.0.1"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    }

    #[test]
    fn bearer_admits_the_token_only() {
        let a = Auth::bearer("s3cret").unwrap();
        assert!(a.admits(&headers("Bearer s3cret")));
        assert!(a.admits(&headers(&basic("anyone:s3cret"))));
        assert!(!a.admits(&headers("Bearer s3cre")));
        assert!(!a.admits(&headers("Bearer s3cretx")));
        assert!(!a.admits(&headers(&basic("s3cret:"))));
        assert!(!a.admits(&HeaderMap::new()));
    }

    #[test]
    fn basic_admits_user_and_password_together() {
        let a = Auth::basic("ops:pa:ss").unwrap();
        assert!(a.admits(&headers(&basic("ops:pa:ss"))));
        assert!(!a.admits(&headers(&basic("ops:pa"))));
        assert!(!a.admits(&headers(&basic("other:pa:ss"))));
        assert!(!a.admits(&headers("Bearer pa:ss")));
        assert!(!a.admits(&headers("Basic !!notbase64")));
    }

    #[test]
    fn environment_settings_are_checked() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(Auth::from_lookup(env(&[])).unwrap().is_none());
        assert!(matches!(
            Auth::from_lookup(env(&[(TOKEN_ENV, "t")])).unwrap(),
            Some(Auth::Bearer(_))
        ));
        let two = Auth::from_lookup(env(&[(TOKEN_ENV, "t"), (BASIC_AUTH_ENV, "a:b")])).unwrap_err();
        assert!(two.to_string().contains("set only one of"), "{two}");
        let bad = Auth::from_lookup(env(&[(BASIC_AUTH_ENV, "nopassword")])).unwrap_err();
        assert!(bad.to_string().contains("user:password"), "{bad}");
        let missing =
            Auth::from_lookup(env(&[(TOKEN_FILE_ENV, "/nonexistent/token")])).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!(
            "{:?} {:?}",
            Auth::bearer("tok123").unwrap(),
            Auth::basic("u:pw456").unwrap()
        );
        assert!(
            !shown.contains("tok123") && !shown.contains("pw456"),
            "{shown}"
        );
    }

    #[test]
    fn only_loopback_goes_without_credentials() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let local6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_listen(local, None).is_ok());
        assert!(check_listen(local6, None).is_ok());
        let e = check_listen(any, None).unwrap_err();
        assert!(e.to_string().contains("without authentication"), "{e}");
        assert!(check_listen(any, Some(&Auth::bearer("t").unwrap())).is_ok());
    }
}
