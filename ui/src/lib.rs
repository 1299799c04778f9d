//! # duroxide-pg-ui
//!
//! An operator dashboard for a duroxide-pg store: an overview with queue
//! depths and a live chart, a filtered and paginated instance list, each
//! instance's executions, history, payloads, KV and sub-orchestrations, the
//! retention status, and actions (cancel, raise an event, delete, purge what
//! a filter matches), each behind a confirmation step.
//!
//! It is an axum [`Router`] a service mounts next to its own routes, or the
//! CLI's `duroxide-pg ui --listen ADDR` serves it on its own:
//!
//! ```no_run
//! use std::sync::Arc;
//! use duroxide_pg::{PostgresConfig, PostgresProvider};
//! use duroxide_pg_ui::{Dashboard, DashboardOptions};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // The dashboard's own small provider, every call bounded by a timeout.
//! let config = PostgresConfig::new(std::env::var("DATABASE_URL")?)
//!     .with_schema("orders")
//!     .with_max_connections(4)
//!     .with_statement_timeout(Some(std::time::Duration::from_secs(5)));
//! let provider = Arc::new(PostgresProvider::connect(config).await?);
//! let dashboard = Dashboard::new(provider, DashboardOptions::default().with_base_path("/ops"));
//! let app = axum::Router::new()
//!     .route("/health", axum::routing::get(|| async { "ok" }))
//!     .nest("/ops", dashboard.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! ## Security model
//!
//! - [`serve`] binds where it is told, and refuses an address beyond
//!   loopback unless [`DashboardOptions::with_auth`] set credentials (a
//!   bearer token or basic auth, which [`Auth::from_env`] reads from an
//!   environment variable or a file: never a command-line argument).
//! - Every state change is a POST carrying a CSRF token that must equal
//!   the one in a `SameSite=Strict`, `HttpOnly` cookie; a request from
//!   another origin is refused.
//! - Every response has a Content-Security-Policy without inline script
//!   (the only script is the vendored htmx, served from here),
//!   `X-Frame-Options: DENY` and `nosniff`.
//! - Every stored string (ids, names, outputs, event payloads) is escaped
//!   by the templates; payloads are shown as text, never as markup.
//! - Every list is a bounded page; the dashboard's own queries run under a
//!   5 s statement timeout ([`duroxide_pg::dashboard::OPERATOR_QUERY_TIMEOUT`]).
//! - The database URL and password are never shown.
//! - [`DashboardOptions::read_only`] hides every action and refuses its
//!   requests.

mod actions;
pub mod auth;
mod chart;
mod pages;
mod security;
pub mod time;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use duroxide_pg::PostgresProvider;

pub use auth::Auth;

/// Why the dashboard cannot start.
#[derive(Debug)]
pub enum UiError {
    /// A setting is invalid (the message names it).
    Config(String),
    /// A non-loopback address without credentials.
    Unauthenticated(String),
    /// The address cannot be bound or served.
    Io(std::io::Error),
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UiError::Config(m) | UiError::Unauthenticated(m) => f.write_str(m),
            UiError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UiError {}

/// How the dashboard behaves.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    pub(crate) read_only: bool,
    pub(crate) auth: Option<Auth>,
    pub(crate) base_path: String,
    pub(crate) refresh: Duration,
    pub(crate) page_size: u32,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            read_only: false,
            auth: None,
            base_path: String::new(),
            refresh: Duration::from_secs(5),
            page_size: 50,
        }
    }
}

impl DashboardOptions {
    /// Hides every action and refuses their requests (403).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Credentials every request must carry (default: none, loopback only
    /// when served by [`serve`]).
    pub fn with_auth(mut self, auth: Option<Auth>) -> Self {
        self.auth = auth;
        self
    }

    /// The path the router is nested under (`"/ops"` for
    /// `Router::nest("/ops", ...)`), for the links it renders. Default: none.
    pub fn with_base_path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        let path = path.trim_matches('/');
        self.base_path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        self
    }

    /// How often an open overview refreshes (default 5 s; at least 1 s).
    /// Every viewer shares the figures read in the last half interval, so
    /// the database is asked at most twice per interval whatever the
    /// number of viewers (once for a single viewer).
    pub fn with_refresh(mut self, every: Duration) -> Self {
        self.refresh = every.max(Duration::from_secs(1));
        self
    }

    /// Instances per list page (default 50; 1..=499: a page reads one row
    /// more, to know whether there is a next one).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.clamp(1, duroxide_pg::dashboard::MAX_PAGE_SIZE - 1);
        self
    }

    /// Whether the dashboard refuses every action.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
}

/// What every handler works on.
pub(crate) struct AppState {
    pub(crate) provider: Arc<PostgresProvider>,
    pub(crate) options: DashboardOptions,
    /// The overview's figures and when their reading started, shared by
    /// every viewer; an async lock so that one request refills it while the
    /// others wait for its result.
    pub(crate) overview: tokio::sync::Mutex<Option<(Instant, Arc<pages::overview::Figures>)>>,
}

/// The dashboard over one provider (one schema).
#[derive(Clone)]
pub struct Dashboard {
    state: Arc<AppState>,
}

impl Dashboard {
    /// A dashboard over `provider`. Give it a provider of its own with a
    /// statement timeout (see the crate example): its instance pages also
    /// use the provider's ordinary reads.
    pub fn new(provider: Arc<PostgresProvider>, options: DashboardOptions) -> Self {
        Self {
            state: Arc::new(AppState {
                provider,
                options,
                overview: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The routes, to serve or to nest under [`DashboardOptions::with_base_path`].
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(pages::overview::page))
            .route("/overview/live", get(pages::overview::live))
            .route("/instances", get(pages::instances::page))
            .route("/instance", get(pages::instance::page))
            .route("/instance/raw", get(pages::instance::raw))
            .route("/retention", get(pages::retention::page))
            .route("/assets/{file}", get(pages::asset))
            .merge(actions::routes())
            .layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                security::guard,
            ))
            .with_state(self.state.clone())
    }
}

/// Serves `dashboard` on `addr` until `shutdown` resolves. Refuses an
/// address beyond loopback unless `options` carry credentials.
///
/// # Errors
/// [`UiError::Unauthenticated`] for such an address, [`UiError::Io`] when
/// it cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    provider: Arc<PostgresProvider>,
    options: DashboardOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), UiError> {
    let listener = bind(addr, &options).await?;
    serve_on(listener, provider, options, shutdown).await
}

/// Binds `addr` after the same check as [`serve`] (tests and tools bind
/// port 0 and read the port before serving).
///
/// # Errors
/// As [`serve`].
pub async fn bind(
    addr: SocketAddr,
    options: &DashboardOptions,
) -> Result<tokio::net::TcpListener, UiError> {
    auth::check_listen(addr, options.auth.as_ref())?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(UiError::Io)
}

/// Serves on a listener [`bind`] returned.
///
/// # Errors
/// [`UiError::Io`] when serving fails.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    provider: Arc<PostgresProvider>,
    options: DashboardOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), UiError> {
    let local = listener.local_addr().map_err(UiError::Io)?;
    auth::check_listen(local, options.auth.as_ref())?;
    let app = Dashboard::new(provider, options).router();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(UiError::Io)
}

#[cfg(test)]
mod tests {
    use super::DashboardOptions;

    #[test]
    fn base_paths_are_normalised() {
        for (given, kept) in [
            ("", ""),
            ("/", ""),
            ("ops", "/ops"),
            ("/ops/", "/ops"),
            ("/a/b", "/a/b"),
        ] {
            assert_eq!(
                DashboardOptions::default().with_base_path(given).base_path,
                kept,
                "{given}"
            );
        }
    }

    #[test]
    fn page_sizes_leave_room_for_the_next_page_probe() {
        let max = duroxide_pg::dashboard::MAX_PAGE_SIZE;
        assert_eq!(
            DashboardOptions::default().with_page_size(max).page_size,
            max - 1
        );
        assert_eq!(DashboardOptions::default().with_page_size(0).page_size, 1);
    }
}
