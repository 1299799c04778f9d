//! The actions: cancel, raise an event, delete, purge. Each is a GET that
//! shows what will happen and asks for confirmation, then a POST that does
//! it, carrying the CSRF token; both are refused in read-only mode. They go
//! through the paths the CLI uses: `duroxide::Client` for cancel and raise,
//! the provider's `delete_instance` and `delete_instance_bulk` for deletes.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use duroxide::Client;
use duroxide::providers::{InstanceFilter, ProviderAdmin};
use maud::{Markup, html};
use serde::Deserialize;

use crate::AppState;
use crate::pages::instances::Filter;
use crate::security::{CsrfToken, refuse_forgery};
use crate::view::{Failure, instance_link, link, status};

/// The most roots one confirmed purge deletes (and counts): counting walks
/// the tree of every candidate root with children, about 90 µs each, and
/// must stay well inside the 5 s statement timeout. For more, purge again
/// or let retention do it.
pub(crate) const PURGE_CAP: u32 = 20_000;
/// Roots per delete statement of a purge (each commits on its own).
const PURGE_BATCH: u32 = 500;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/actions/cancel", get(cancel_form).post(cancel))
        .route("/actions/raise-event", get(raise_form).post(raise))
        .route("/actions/delete", get(delete_form).post(delete))
        .route("/actions/purge", get(purge_form).post(purge))
}

/// Refuses every action of a read-only dashboard.
fn writable(state: &AppState) -> Result<(), Failure> {
    if state.options.read_only {
        return Err(Failure::new(
            state,
            StatusCode::FORBIDDEN,
            "this dashboard is read-only: actions are disabled",
        ));
    }
    Ok(())
}

/// Refuses a POST that is read-only or forged.
fn allowed(state: &AppState, headers: &HeaderMap, token: &str) -> Result<(), Failure> {
    writable(state)?;
    match refuse_forgery(headers, token) {
        Some(why) => Err(Failure::new(state, StatusCode::FORBIDDEN, why)),
        None => Ok(()),
    }
}

fn confirm(
    state: &AppState,
    title: &str,
    action: &str,
    csrf: &CsrfToken,
    body: Markup,
) -> Response {
    let form = html! {
        form.confirm #confirm method="post" action=(link(state, action, &[])) {
            input type="hidden" name="csrf" value=(csrf.0);
            (body)
        }
    };
    crate::view::page(state, title, form).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct IdParams {
    id: String,
}

/// The instance, if it runs: a message sent to a finished one is dropped.
async fn running_instance(
    state: &AppState,
    id: &str,
    what: &str,
) -> Result<duroxide::providers::InstanceInfo, Failure> {
    let info = state
        .provider
        .get_instance_info(id)
        .await
        .map_err(|e| Failure::provider(state, &e))?;
    if info.status != "Running" {
        return Err(Failure::new(
            state,
            StatusCode::CONFLICT,
            format!(
                "the instance is {}, not Running: {what} would be ignored",
                info.status
            ),
        ));
    }
    Ok(info)
}

fn done(state: &AppState, id: &str, code: &str) -> Response {
    Redirect::to(&link(state, "/instance", &[("id", id), ("done", code)])).into_response()
}

// ---- cancel ----

async fn cancel_form(
    State(state): State<Arc<AppState>>,
    Extension(csrf): Extension<CsrfToken>,
    Query(q): Query<IdParams>,
) -> Result<Response, Failure> {
    writable(&state)?;
    let info = running_instance(&state, &q.id, "a cancellation").await?;
    Ok(confirm(
        &state,
        "Cancel instance",
        "/actions/cancel",
        &csrf,
        html! {
            p { "Cancel " a href=(instance_link(&state, &info.instance_id)) { (info.instance_id) } " (" (info.orchestration_name) ") and its sub-orchestrations?" }
            input type="hidden" name="id" value=(info.instance_id);
            label { "Reason (recorded in the history)" input type="text" name="reason" value="cancelled by operator"; }
            div.actions { button.danger type="submit" #confirm-cancel { "Cancel the instance" }
                          a.button.secondary href=(instance_link(&state, &info.instance_id)) { "Back" } }
        },
    ))
}

#[derive(Debug, Deserialize)]
struct CancelForm {
    #[serde(default)]
    csrf: String,
    id: String,
    #[serde(default)]
    reason: String,
}

async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<CancelForm>,
) -> Result<Response, Failure> {
    allowed(&state, &headers, &f.csrf)?;
    running_instance(&state, &f.id, "a cancellation").await?;
    let reason = if f.reason.trim().is_empty() {
        "cancelled by operator"
    } else {
        f.reason.as_str()
    };
    Client::new(state.provider.clone())
        .cancel_instance(f.id.as_str(), reason)
        .await
        .map_err(|e| Failure::new(&state, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!(instance = %f.id, "dashboard: cancellation requested");
    Ok(done(&state, &f.id, "cancelled"))
}

// ---- raise an event ----

async fn raise_form(
    State(state): State<Arc<AppState>>,
    Extension(csrf): Extension<CsrfToken>,
    Query(q): Query<IdParams>,
) -> Result<Response, Failure> {
    writable(&state)?;
    let info = running_instance(&state, &q.id, "an event").await?;
    Ok(confirm(
        &state,
        "Raise an event",
        "/actions/raise-event",
        &csrf,
        html! {
            p { "Send an event to " a href=(instance_link(&state, &info.instance_id)) { (info.instance_id) } " (" (info.orchestration_name) ")." }
            input type="hidden" name="id" value=(info.instance_id);
            label { "Event name (what the orchestration waits for)" input type="text" name="name" required; }
            label { "Data (passed to the orchestration as is)" textarea name="data" {} }
            div.actions { button type="submit" #confirm-raise { "Raise the event" }
                          a.button.secondary href=(instance_link(&state, &info.instance_id)) { "Back" } }
        },
    ))
}

#[derive(Debug, Deserialize)]
struct RaiseForm {
    #[serde(default)]
    csrf: String,
    id: String,
    name: String,
    #[serde(default)]
    data: String,
}

async fn raise(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<RaiseForm>,
) -> Result<Response, Failure> {
    allowed(&state, &headers, &f.csrf)?;
    if f.name.trim().is_empty() {
        return Err(Failure::new(
            &state,
            StatusCode::BAD_REQUEST,
            "the event needs a name",
        ));
    }
    running_instance(&state, &f.id, "an event").await?;
    Client::new(state.provider.clone())
        .raise_event(f.id.as_str(), f.name.as_str(), f.data.as_str())
        .await
        .map_err(|e| Failure::new(&state, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!(instance = %f.id, event = %f.name, "dashboard: event raised");
    Ok(done(&state, &f.id, "raised"))
}

// ---- delete ----

async fn delete_form(
    State(state): State<Arc<AppState>>,
    Extension(csrf): Extension<CsrfToken>,
    Query(q): Query<IdParams>,
) -> Result<Response, Failure> {
    writable(&state)?;
    let p = &state.provider;
    let info = p
        .get_instance_info(&q.id)
        .await
        .map_err(|e| Failure::provider(&state, &e))?;
    // Bounded: a tree may have many members; the count says "or more".
    let cap = duroxide_pg::dashboard::MAX_PAGE_SIZE;
    let tree = p
        .dashboard_tree(&q.id, cap)
        .await
        .map_err(|e| Failure::provider(&state, &e))?;
    let children = tree.len().saturating_sub(1);
    let more = if tree.len() as u32 >= cap {
        " or more"
    } else {
        ""
    };
    // Force is needed while any member of the tree still runs.
    let running = tree.iter().any(|m| m.status == "Running");
    Ok(confirm(
        &state,
        "Delete instance",
        "/actions/delete",
        &csrf,
        html! {
            p { "Delete " a href=(instance_link(&state, &info.instance_id)) { (info.instance_id) } " (" (status(&info.status)) ") with "
                (children) (more) " sub-orchestrations, their history, state and queued messages? This cannot be undone." }
            input type="hidden" name="id" value=(info.instance_id);
            @if running {
                label { input type="checkbox" name="force" value="true" #force; " Delete it although it (or a sub-orchestration) is still running (force)" }
            }
            div.actions { button.danger type="submit" #confirm-delete { "Delete" }
                          a.button.secondary href=(instance_link(&state, &info.instance_id)) { "Back" } }
        },
    ))
}

#[derive(Debug, Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    id: String,
    #[serde(default)]
    force: Option<String>,
}

async fn delete(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<DeleteForm>,
) -> Result<Response, Failure> {
    allowed(&state, &headers, &f.csrf)?;
    let force = f.force.as_deref() == Some("true");
    let r = state
        .provider
        .delete_instance(&f.id, force)
        .await
        .map_err(|e| Failure::provider(&state, &e))?;
    tracing::info!(instance = %f.id, force, instances = r.instances_deleted, "dashboard: instance deleted");
    Ok(Redirect::to(&link(&state, "/instances", &[("done", "deleted")])).into_response())
}

// ---- purge ----

fn finished_roots(
    state: &AppState,
    filter: &Filter,
) -> Result<duroxide_pg::dashboard::InstanceQuery, Failure> {
    let mut q = filter
        .to_query()
        .map_err(|e| Failure::new(state, StatusCode::BAD_REQUEST, e))?;
    q.finished_roots_only = true;
    Ok(q)
}

async fn purge_form(
    State(state): State<Arc<AppState>>,
    Extension(csrf): Extension<CsrfToken>,
    Query(filter): Query<Filter>,
) -> Result<Response, Failure> {
    writable(&state)?;
    let filter = filter
        .pinned()
        .map_err(|e| Failure::new(&state, StatusCode::BAD_REQUEST, e))?;
    let query = finished_roots(&state, &filter)?;
    let n = state
        .provider
        .dashboard_count(&query, PURGE_CAP)
        .await
        .map_err(|e| Failure::provider(&state, &e))?;
    let back = link(&state, "/instances", &filter.pairs());
    Ok(confirm(
        &state,
        "Purge instances",
        "/actions/purge",
        &csrf,
        html! {
            @if n == 0 {
                p #purge-count data-count="0" { "No finished root instance matches this filter: nothing to purge." }
                a.button.secondary href=(back) { "Back" }
            } @else {
                p #purge-count data-count=(n) {
                    "This deletes " strong { (n) @if n >= u64::from(PURGE_CAP) { " (the most one purge deletes)" } }
                    " finished root instances matching the filter, with their sub-orchestrations, history and state. "
                    "Running instances, trees with a running member and sub-orchestrations on their own are not touched. This cannot be undone."
                }
                @for (k, v) in filter.pairs() { input type="hidden" name=(k) value=(v); }
                input type="hidden" name="expected" value=(n);
                div.actions { button.danger type="submit" #confirm-purge { "Purge " (n) " instances" }
                              a.button.secondary href=(back) { "Back" } }
            }
        },
    ))
}

#[derive(Debug, Deserialize)]
struct PurgeForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    filter: Filter,
    // A string: serde's flatten hands every value over as text.
    #[serde(default)]
    expected: String,
}

async fn purge(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<PurgeForm>,
) -> Result<Response, Failure> {
    allowed(&state, &headers, &f.csrf)?;
    let expected: u32 = f
        .expected
        .parse()
        .ok()
        .filter(|n| (1..=PURGE_CAP).contains(n))
        .ok_or_else(|| {
            Failure::new(
                &state,
                StatusCode::BAD_REQUEST,
                "the confirmed count is missing",
            )
        })?;
    let query = finished_roots(&state, &f.filter)?;
    let p = &state.provider;
    // No more than the operator confirmed, even if more match by now; the
    // delete itself keeps to finished roots whatever the list said.
    let mut deleted = 0u64;
    let mut left = expected;
    while left > 0 {
        let page = p
            .dashboard_instances(&query, None, left.min(PURGE_BATCH))
            .await
            .map_err(|e| Failure::provider(&state, &e))?;
        if page.is_empty() {
            break;
        }
        let ids: Vec<String> = page.into_iter().map(|r| r.instance_id).collect();
        let n = ids.len() as u32;
        let r = p
            .delete_instance_bulk(InstanceFilter {
                instance_ids: Some(ids),
                completed_before: None,
                limit: Some(n),
            })
            .await
            .map_err(|e| {
                Failure::new(
                    &state,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{e} (before this failure the purge had deleted {deleted} instances)"),
                )
            })?;
        if r.instances_deleted == 0 {
            break; // deleted by someone else meanwhile
        }
        deleted += r.instances_deleted;
        // Each batch commits on its own: the log says how far a purge got
        // if its request is dropped.
        tracing::info!(batch = n, deleted, "dashboard: purge batch committed");
        left = left.saturating_sub(n);
    }
    tracing::info!(deleted, "dashboard: purge");
    let mut pairs = f.filter.pairs();
    let n = deleted.to_string();
    pairs.push(("done", "purged"));
    pairs.push(("n", &n));
    Ok(Redirect::to(&link(&state, "/instances", &pairs)).into_response())
}
