//! The page frame and the small pieces every page uses: links, times,
//! payloads, the error page. Every value goes through maud, which escapes
//! it; nothing here builds markup from strings.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use duroxide::providers::ProviderError;
use duroxide_pg::{ProviderSqlState, sqlstates};
use maud::{DOCTYPE, Markup, html};

use crate::AppState;
use crate::time::format_ms;

/// Payload text shown inline at most; the rest is behind the raw download.
pub(crate) const PAYLOAD_CAP: usize = 16 * 1024;

/// A full page: head, navigation, `body`.
pub(crate) fn page(state: &AppState, title: &str, body: Markup) -> Markup {
    frame(
        &state.options.base_path,
        state.options.read_only,
        title,
        body,
    )
}

fn frame(base: &str, read_only: bool, title: &str, body: Markup) -> Markup {
    // Nested under `base`, the overview is `base` itself: axum's nested "/"
    // does not answer `base/`.
    let home = if base.is_empty() { "/" } else { base };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No inline styles from htmx (the CSP forbids them), no eval.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · duroxide-pg" }
                link rel="stylesheet" href={ (base) "/assets/app.css" };
                script src={ (base) "/assets/htmx.min.js" } defer {}
            }
            body {
                header {
                    a.brand href=(home) { "duroxide-pg" }
                    nav {
                        a href=(home) { "Overview" }
                        a href={ (base) "/instances" } { "Instances" }
                        a href={ (base) "/retention" } { "Retention" }
                    }
                    @if read_only { span.badge #read-only { "read-only" } }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A URL under the dashboard: `base` + `path` + the query pairs (empty
/// values left out), every value percent-encoded.
pub(crate) fn link(state: &AppState, path: &str, pairs: &[(&str, &str)]) -> String {
    let mut url = format!("{}{path}", state.options.base_path);
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
        any = true;
    }
    if any {
        url.push('?');
        url.push_str(&q.finish());
    }
    url
}

/// The link to an instance's page.
pub(crate) fn instance_link(state: &AppState, id: &str) -> String {
    link(state, "/instance", &[("id", id)])
}

/// A stored time, as UTC.
pub(crate) fn when(ms: u64) -> Markup {
    html! { time datetime=(format_ms(ms)) { (format_ms(ms).replace('T', " ")) } }
}

/// A duration in ms, for people: `850 ms`, `12.4 s`, `3 min 5 s`.
pub(crate) fn took(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// A status as a coloured label.
pub(crate) fn status(s: &str) -> Markup {
    let class = match s {
        "Running" => "running",
        "Completed" => "completed",
        "Failed" => "failed",
        _ => "other",
    };
    html! { span class={ "status " (class) } { (s) } }
}

/// A payload: pretty-printed when it is JSON, cut at [`PAYLOAD_CAP`] with
/// the full size and a link to the raw text.
pub(crate) fn payload(text: &str, raw_href: Option<&str>) -> Markup {
    let pretty = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .filter(|v| v.is_object() || v.is_array())
        .and_then(|v| serde_json::to_string_pretty(&v).ok());
    let shown = pretty.as_deref().unwrap_or(text);
    let cut = shown.len() > PAYLOAD_CAP;
    let mut end = PAYLOAD_CAP.min(shown.len());
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    html! {
        pre.payload { (&shown[..end]) @if cut { "…" } }
        @if cut {
            p.note {
                "Shown: the first " (PAYLOAD_CAP / 1024) " KiB of " (text.len()) " bytes. "
                @if let Some(href) = raw_href { a href=(href) { "Download the raw text" } }
            }
        } @else if let Some(href) = raw_href {
            p.note { a href=(href) { "Raw" } }
        }
    }
}

/// A page that could not be shown: its status and a message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub message: String,
    pub base: String,
}

impl Failure {
    pub(crate) fn new(state: &AppState, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            base: state.options.base_path.clone(),
        }
    }

    /// A provider error as the operator should read it.
    pub(crate) fn provider(state: &AppState, e: &ProviderError) -> Self {
        let (status, message) = match (ProviderSqlState::of_error(e), duroxide_pg::sqlstate(e)) {
            (Some(ProviderSqlState::InstanceNotFound), _) => {
                (StatusCode::NOT_FOUND, "no such instance".to_string())
            }
            // A precondition (a running member without force, a child on
            // its own): the provider's message says which.
            (Some(ProviderSqlState::Precondition), _) => (StatusCode::CONFLICT, e.message.clone()),
            (_, Some(sqlstates::QUERY_CANCELED)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the query ran longer than its statement timeout: narrow the filter".to_string(),
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        Self::new(state, status, message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let body = html! { p.error #error { (self.message) } };
        (self.status, frame(&self.base, false, &title, body)).into_response()
    }
}

/// What a handler returns.
pub(crate) type PageResult = Result<Markup, Failure>;
