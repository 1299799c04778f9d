//! `/instances`: the instance list, filtered, newest first, a page at a time
//! (keyset pagination: "next" carries the last row, never an offset).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use duroxide_pg::dashboard::{InstanceCursor, InstanceQuery};
use maud::{Markup, html};
use serde::Deserialize;

use crate::AppState;
use crate::time::{now_ms, parse_any_moment};
use crate::view::{Failure, PageResult, instance_link, link, status, when};

/// The statuses a filter may name, as duroxide records them.
pub(crate) const STATUSES: [&str; 4] = ["Running", "Completed", "Failed", "ContinuedAsNew"];

/// The filter as the form sends it (every field optional, empty = any).
#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct Filter {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub created_from: String,
    #[serde(default)]
    pub created_to: String,
    #[serde(default)]
    pub completed_from: String,
    #[serde(default)]
    pub completed_to: String,
}

impl Filter {
    /// The filter as query pairs, for links that keep it.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("status", self.status.as_str()),
            ("name", self.name.as_str()),
            ("prefix", self.prefix.as_str()),
            ("created_from", self.created_from.as_str()),
            ("created_to", self.created_to.as_str()),
            ("completed_from", self.completed_from.as_str()),
            ("completed_to", self.completed_to.as_str()),
        ]
    }

    /// The provider's query, or what is wrong with the filter.
    pub(crate) fn to_query(&self) -> Result<InstanceQuery, String> {
        let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let now = now_ms();
        let time = |what: &str, s: &str| {
            text(s)
                .map(|t| parse_any_moment(&t, now).map_err(|e| format!("{what}: {e}")))
                .transpose()
        };
        let status = text(&self.status);
        if let Some(s) = status.as_ref().filter(|s| !STATUSES.contains(&s.as_str())) {
            return Err(format!(
                "status {s:?} is not one of {}",
                STATUSES.join(", ")
            ));
        }
        Ok(InstanceQuery {
            status,
            name: text(&self.name),
            id_prefix: text(&self.prefix),
            created_from: time("created from", &self.created_from)?,
            created_to: time("created to", &self.created_to)?,
            completed_from: time("completed from", &self.completed_from)?,
            completed_to: time("completed to", &self.completed_to)?,
            finished_roots_only: false,
        })
    }

    /// The same filter with every relative time (`2h`) replaced by the UTC
    /// time it means now, so a confirmation and the action after it match
    /// the same instances however long the operator took to confirm.
    pub(crate) fn pinned(&self) -> Result<Filter, String> {
        let q = self.to_query()?;
        let at = |ms: Option<u64>| ms.map(crate::time::format_ms).unwrap_or_default();
        Ok(Filter {
            created_from: at(q.created_from),
            created_to: at(q.created_to),
            completed_from: at(q.completed_from),
            completed_to: at(q.completed_to),
            ..self.clone()
        })
    }

    /// The filter form, filled in.
    pub(crate) fn form(&self, state: &AppState) -> Markup {
        let input = |label: &str, name: &str, value: &str, hint: &str| {
            html! { label { (label) input type="text" name=(name) value=(value) placeholder=(hint); } }
        };
        html! {
            form.filters #filters method="get" action=(link(state, "/instances", &[])) {
                label { "status"
                    select name="status" {
                        option value="" { "any" }
                        @for s in STATUSES { option value=(s) selected[self.status == s] { (s) } }
                    }
                }
                (input("orchestration", "name", &self.name, "exact name"))
                (input("id prefix", "prefix", &self.prefix, "order-"))
                (input("created from", "created_from", &self.created_from, "2026-12-01 or 2h"))
                (input("created to", "created_to", &self.created_to, "UTC time or age"))
                (input("completed from", "completed_from", &self.completed_from, "UTC time or age"))
                (input("completed to", "completed_to", &self.completed_to, "UTC time or age"))
                button type="submit" #apply { "Filter" }
                a.button.secondary href=(link(state, "/instances", &[])) { "Clear" }
            }
        }
    }
}

/// The list's query string: the filter and where the page starts.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    #[serde(flatten)]
    filter: Filter,
    // Strings: serde's flatten hands every value over as text.
    after_created: Option<String>,
    after_id: Option<String>,
    /// What the last action did (a code, never free text).
    done: Option<String>,
    n: Option<String>,
}

/// `GET /instances`.
pub(crate) async fn page(
    State(state): State<Arc<AppState>>,
    Query(params): Query<ListParams>,
) -> PageResult {
    let query = params
        .filter
        .to_query()
        .map_err(|e| Failure::new(&state, StatusCode::BAD_REQUEST, e))?;
    let after = match (params.after_created.as_deref(), params.after_id.as_deref()) {
        (Some(created), Some(id)) => Some(InstanceCursor {
            created_at: created.parse().map_err(|_| {
                Failure::new(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "after_created is not a time in ms",
                )
            })?,
            instance_id: id.to_string(),
        }),
        _ => None,
    };
    let purged: Option<u64> = params.n.as_deref().and_then(|n| n.parse().ok());
    let size = state.options.page_size;
    let mut rows = state
        .provider
        .dashboard_instances(&query, after.as_ref(), size + 1)
        .await
        .map_err(|e| Failure::provider(&state, &e))?;
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    let next = more.then(|| {
        let last = rows.last().expect("a full page").cursor();
        let created = last.created_at.to_string();
        let mut pairs = params.filter.pairs();
        pairs.push(("after_created", &created));
        pairs.push(("after_id", &last.instance_id));
        link(&state, "/instances", &pairs)
    });
    let body = html! {
        @match (params.done.as_deref(), purged) {
            (Some("purged"), Some(n)) => p.notice #notice { "Purged " (n) " instances (sub-orchestrations included)." },
            (Some("deleted"), _) => p.notice #notice { "Instance deleted." },
            _ => {}
        }
        (params.filter.form(&state))
        @if !state.options.read_only {
            div.actions {
                a.button.danger #purge href=(link(&state, "/actions/purge", &params.filter.pairs())) {
                    "Purge finished instances matching this filter…"
                }
            }
        }
        table #instances {
            thead { tr {
                th { "instance" } th { "orchestration" } th { "version" } th { "status" }
                th.num { "execution" } th { "created" } th { "completed" } th { "parent" }
            } }
            tbody {
                @for r in &rows {
                    tr.instance data-id=(r.instance_id) {
                        td.id { a href=(instance_link(&state, &r.instance_id)) { (r.instance_id) } }
                        td { (r.orchestration_name) }
                        td { (r.orchestration_version.as_deref().unwrap_or("–")) }
                        td { (status(&r.status)) }
                        td.num { (r.execution_id) }
                        td { (when(r.created_at)) }
                        td { @if let Some(c) = r.completed_at { (when(c)) } @else { "–" } }
                        td.id { @if let Some(p) = &r.parent_instance_id { a href=(instance_link(&state, p)) { (p) } } @else { "–" } }
                    }
                }
            }
        }
        @if rows.is_empty() { p.note #empty { "No instance matches." } }
        div.pager {
            @if after.is_some() { a.button.secondary #first-page href=(link(&state, "/instances", &params.filter.pairs())) { "First page" } }
            @if let Some(href) = &next { a.button #next-page href=(href) { "Next page" } }
        }
        p.note { "Newest first, " (size) " per page." }
    };
    Ok(crate::view::page(&state, "Instances", body))
}
