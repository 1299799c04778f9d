//! One module per page; the assets compiled into the binary.

pub(crate) mod instance;
pub(crate) mod instances;
pub(crate) mod overview;
pub(crate) mod retention;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

/// htmx 2.0.4 (npm `htmx.org`, Zero-Clause BSD licence), unmodified.
const HTMX: &str = include_str!("../../assets/htmx.min.js");
const CSS: &str = include_str!("../../assets/app.css");

/// `/assets/{file}`: the two files the pages load. `private`: the
/// response may carry the browser's CSRF cookie, which no shared cache may
/// hand to another browser.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "htmx.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "app.css" => (CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (CONTENT_TYPE, kind),
            (CACHE_CONTROL, "private, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
