//! What every response and every state change goes through: credentials,
//! security headers, and CSRF tokens (a double-submit cookie: the token in
//! a `SameSite=Strict` cookie must equal the one in the form, which another
//! site can neither read nor set).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, HOST, ORIGIN, REFERRER_POLICY, SET_COOKIE,
    WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::same;

/// The cookie holding the CSRF token.
pub(crate) const CSRF_COOKIE: &str = "dxpg_csrf";

/// Scripts and styles from the dashboard's own assets only, nothing inline,
/// no frames, forms posting back here only.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The CSRF token of this request's browser, for forms to carry.
#[derive(Clone, Debug)]
pub(crate) struct CsrfToken(pub String);

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Credentials, CSRF cookie and security headers, around every request.
pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(auth) = &state.options.auth
        && !auth.admits(request.headers())
    {
        let mut r = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"duroxide-pg\", charset=\"UTF-8\""),
        );
        return with_headers(r);
    }
    let existing = cookie(request.headers(), CSRF_COOKIE);
    // Secure when a TLS-terminating proxy says the browser uses https.
    let secure = request
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let token = existing.clone().unwrap_or_else(new_token);
    request.extensions_mut().insert(CsrfToken(token.clone()));
    let mut response = next.run(request).await;
    if existing.is_none() {
        let path = if state.options.base_path.is_empty() {
            "/"
        } else {
            state.options.base_path.as_str()
        };
        let value = format!(
            "{CSRF_COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
    with_headers(response)
}

fn with_headers(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// Why a state change was refused, for the 403 page.
pub(crate) fn refuse_forgery(headers: &HeaderMap, form_token: &str) -> Option<&'static str> {
    let Some(cookie) = cookie(headers, CSRF_COOKIE) else {
        return Some("the request carries no CSRF cookie: reload the page and try again");
    };
    if !same(cookie.as_bytes(), form_token.as_bytes()) {
        return Some("the form's CSRF token does not match: reload the page and try again");
    }
    // A browser says where a request came from. Sec-Fetch-Site is set by
    // the browser itself and survives a proxy that rewrites Host; without
    // it, the Origin must name the host the request was sent to (as the
    // proxy forwarded it, if it says so). "null" (a sandboxed frame, a
    // redirect from elsewhere) is never ours.
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return (site != "same-origin").then_some("the request came from another site");
    }
    if let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        let host = header("x-forwarded-host").or(headers.get(HOST).and_then(|v| v.to_str().ok()));
        if origin == "null" || Some(origin_host) != host {
            return Some("the request came from another site");
        }
    }
    None
}
