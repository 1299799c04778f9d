//! `/instance?id=…`: one instance (info, actions, custom status,
//! executions, history timeline, KV, sub-orchestrations), and
//! `/instance/raw`: a payload as a download.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use duroxide::Event;
use duroxide::providers::{ExecutionInfo, InstanceInfo, Provider, ProviderAdmin};
use duroxide_pg::dashboard::TreeMember;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::view::{Failure, PageResult, instance_link, link, payload, status, took, when};

/// Events per history page.
const HISTORY_PAGE: u32 = 200;
/// Executions listed (the newest).
const EXECUTIONS_SHOWN: u32 = 50;
/// Members of the sub-orchestration tree listed.
const TREE_SHOWN: u32 = 200;

/// The page's query string.
#[derive(Debug, Deserialize)]
pub(crate) struct InstanceParams {
    id: String,
    execution: Option<String>,
    after_event: Option<String>,
    /// What the last action did (a code, never free text).
    done: Option<String>,
}

fn number(state: &AppState, what: &str, v: Option<&str>) -> Result<Option<u64>, Failure> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                Failure::new(
                    state,
                    StatusCode::BAD_REQUEST,
                    format!("{what} must be a number"),
                )
            })
        })
        .transpose()
}

/// `GET /instance`.
pub(crate) async fn page(
    State(state): State<Arc<AppState>>,
    Query(params): Query<InstanceParams>,
) -> PageResult {
    let view = InstanceView::load(&state, &params).await?;
    let id = params.id.as_str();
    let raw = |field: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![("id", id), ("field", field)];
        pairs.extend_from_slice(extra);
        link(&state, "/instance/raw", &pairs)
    };
    let body = html! {
        @match params.done.as_deref() {
            Some("cancelled") => p.notice #notice { "Cancellation requested: the runtime cancels the instance on its next turn." },
            Some("raised") => p.notice #notice { "Event raised." },
            _ => {}
        }
        (info_table(&state, &view.info))
        h2 { "Output" }
        div #output {
            @match &view.info.output { Some(o) => (payload(o, Some(&raw("output", &[])))), None => p.note { "None yet." } }
        }
        h2 { "Custom status" }
        div #custom-status {
            @match &view.custom_status {
                Some((Some(s), version)) => { (payload(s, Some(&raw("custom_status", &[])))) p.note { "version " (version) } }
                _ => p.note { "None." }
            }
        }
        h2 { "Executions" }
        (executions_table(&state, id, &view))
        h2 { "History of execution " (view.shown) }
        (timeline(&state, id, view.shown, &view.execution, &view.history, view.after_event))
        h2 { "Key/value state" }
        @if view.kv.is_empty() { p.note #kv-empty { "None." } } @else {
            table #kv {
                thead { tr { th { "key" } th { "value" } } }
                tbody { @for (k, v) in &view.kv { tr { td.id { (k) } td { (payload(v, None)) } } } }
            }
        }
        h2 { "Sub-orchestrations" }
        (tree_section(&state, &view.tree))
    };
    Ok(crate::view::page(&state, "Instance", body))
}

/// Everything the instance page shows, read before anything is rendered.
struct InstanceView {
    info: InstanceInfo,
    /// The execution whose history is shown.
    shown: u64,
    after_event: Option<u64>,
    /// How many executions the instance has (the newest
    /// `EXECUTIONS_SHOWN` are in `executions`).
    execution_count: u64,
    executions: Vec<ExecutionInfo>,
    execution: ExecutionInfo,
    history: Vec<duroxide::Event>,
    custom_status: Option<(Option<String>, u64)>,
    kv: BTreeMap<String, String>,
    tree: Vec<TreeMember>,
}

impl InstanceView {
    async fn load(state: &AppState, params: &InstanceParams) -> Result<Self, Failure> {
        let p = &state.provider;
        let id = params.id.as_str();
        let fail = |e| Failure::provider(state, &e);
        let info = p.get_instance_info(id).await.map_err(fail)?;
        let shown = number(state, "execution", params.execution.as_deref())?
            .unwrap_or(info.current_execution_id);
        let after_event = number(state, "after_event", params.after_event.as_deref())?;
        let page = p
            .dashboard_executions(id, EXECUTIONS_SHOWN)
            .await
            .map_err(fail)?;
        let executions = page.newest;
        let Some(execution) = executions.iter().find(|e| e.execution_id == shown).cloned() else {
            return Err(Failure::new(
                state,
                StatusCode::NOT_FOUND,
                format!(
                    "this instance has no execution {shown} among its newest {EXECUTIONS_SHOWN}"
                ),
            ));
        };
        let history = p
            .dashboard_history(id, shown, after_event, HISTORY_PAGE + 1)
            .await
            .map_err(fail)?;
        let custom_status = p.get_custom_status(id, 0).await.map_err(fail)?;
        let kv = p
            .get_kv_all_values(id)
            .await
            .map_err(fail)?
            .into_iter()
            .collect();
        let tree = p.dashboard_tree(id, TREE_SHOWN).await.map_err(fail)?;
        Ok(Self {
            info,
            shown,
            after_event,
            execution_count: page.execution_count,
            executions,
            execution,
            history,
            custom_status,
            kv,
            tree,
        })
    }
}

/// The instance's facts, and the actions an operator may take on it.
fn info_table(state: &AppState, info: &InstanceInfo) -> Markup {
    let id = info.instance_id.as_str();
    let running = info.status == "Running";
    html! {
        table #info {
            tr { th { "instance" } td.id #instance-id { (info.instance_id) } }
            tr { th { "orchestration" } td #orchestration { (info.orchestration_name) " " (info.orchestration_version) } }
            tr { th { "status" } td #status { (status(&info.status)) } }
            tr { th { "current execution" } td { (info.current_execution_id) } }
            tr { th { "created" } td { (when(info.created_at)) } }
            tr { th { "updated" } td { (when(info.updated_at)) } }
            tr { th { "parent" } td.id #parent {
                @if let Some(parent) = &info.parent_instance_id { a href=(instance_link(state, parent)) { (parent) } } @else { "– (a root instance)" }
            } }
        }
        @if !state.options.read_only {
            div.actions #actions {
                @if running {
                    a.button #cancel href=(link(state, "/actions/cancel", &[("id", id)])) { "Cancel…" }
                    a.button #raise-event href=(link(state, "/actions/raise-event", &[("id", id)])) { "Raise event…" }
                }
                @if info.parent_instance_id.is_none() {
                    a.button.danger #delete href=(link(state, "/actions/delete", &[("id", id)])) { "Delete…" }
                }
            }
        }
    }
}

/// The newest executions, each linking to its history.
fn executions_table(state: &AppState, id: &str, view: &InstanceView) -> Markup {
    html! {
        table #executions {
            thead { tr { th.num { "execution" } th { "status" } th { "started" } th { "completed" } th.num { "events" } } }
            tbody {
                @for e in &view.executions {
                    tr {
                        td.num { @if e.execution_id == view.shown { strong { (e.execution_id) } } @else {
                            a href=(link(state, "/instance", &[("id", id), ("execution", &e.execution_id.to_string())])) { (e.execution_id) } } }
                        td { (status(&e.status)) }
                        td { (when(e.started_at)) }
                        td { @if let Some(c) = e.completed_at { (when(c)) } @else { "–" } }
                        td.num { (e.event_count) }
                    }
                }
            }
        }
        @if view.execution_count > u64::from(EXECUTIONS_SHOWN) { p.note { "The newest " (EXECUTIONS_SHOWN) " of " (view.execution_count) " executions." } }
    }
}

/// The instance's descendants (the tree's first member is the instance).
fn tree_section(state: &AppState, tree: &[TreeMember]) -> Markup {
    html! {
        @if tree.len() <= 1 { p.note #tree-empty { "None." } } @else {
            table #tree {
                thead { tr { th { "instance" } th { "orchestration" } th { "status" } } }
                tbody {
                    @for m in tree.iter().skip(1) {
                        tr {
                            td.id class=(match m.depth { 1 => "tree-1", 2 => "tree-2", 3 => "tree-3", _ => "tree-deep" }) {
                                a href=(instance_link(state, &m.instance_id)) { (m.instance_id) }
                            }
                            td { (m.orchestration_name) }
                            td { (status(&m.status)) }
                        }
                    }
                }
            }
            @if tree.len() as u32 >= TREE_SHOWN { p.note { "The first " (TREE_SHOWN) " members." } }
        }
    }
}

/// The history page as a timeline: each event's kind, its time since the
/// execution started, and for a completion how long after its scheduling
/// it came.
fn timeline(
    state: &AppState,
    id: &str,
    execution_id: u64,
    execution: &duroxide::providers::ExecutionInfo,
    events: &[Event],
    after_event: Option<u64>,
) -> Markup {
    let more = events.len() > HISTORY_PAGE as usize;
    let events = &events[..events.len().min(HISTORY_PAGE as usize)];
    let scheduled_at: HashMap<u64, u64> = events
        .iter()
        .map(|e| (e.event_id, e.timestamp_ms))
        .collect();
    let exec = execution_id.to_string();
    html! {
        table #history {
            thead { tr { th.num { "#" } th { "at" } th.num { "+" } th { "kind" } th.num { "after scheduling" } th { "details" } } }
            tbody {
                @for e in events {
                    @let (kind, fields) = duroxide_pg::dashboard::event_kind_and_fields(e);
                    @let event_id = e.event_id.to_string();
                    tr.event data-kind=(kind) {
                        td.num { (e.event_id) }
                        td { (when(e.timestamp_ms)) }
                        td.num { (took(e.timestamp_ms.saturating_sub(execution.started_at))) }
                        td.kind { (kind) }
                        td.num {
                            @if let Some(at) = e.source_event_id.and_then(|s| scheduled_at.get(&s)) {
                                span.latency { (took(e.timestamp_ms.saturating_sub(*at))) }
                            }
                        }
                        td {
                            @if !fields.is_empty() {
                                (payload(&Value::Object(fields).to_string(),
                                    Some(&link(state, "/instance/raw", &[("id", id), ("field", "event"), ("execution", &exec), ("event", &event_id)]))))
                            }
                        }
                    }
                }
            }
        }
        div.pager {
            @if after_event.is_some() { a.button.secondary href=(link(state, "/instance", &[("id", id), ("execution", &exec)])) { "First events" } }
            @if more {
                @let last = events.last().map(|e| e.event_id.to_string()).unwrap_or_default();
                a.button #next-events href=(link(state, "/instance", &[("id", id), ("execution", &exec), ("after_event", &last)])) { "Next events" }
            }
        }
        p.note { (execution.event_count) " events in this execution, " (HISTORY_PAGE) " per page." }
    }
}

/// `/instance/raw`'s query string.
#[derive(Debug, Deserialize)]
pub(crate) struct RawParams {
    id: String,
    field: String,
    execution: Option<String>,
    event: Option<String>,
}

/// `GET /instance/raw`: the output, the custom status or one event, as a
/// plain-text download (never rendered as a page).
pub(crate) async fn raw(
    State(state): State<Arc<AppState>>,
    Query(params): Query<RawParams>,
) -> Result<Response, Failure> {
    let p = &state.provider;
    let id = params.id.as_str();
    let fail = |e| Failure::provider(&state, &e);
    let missing = || Failure::new(&state, StatusCode::NOT_FOUND, "nothing stored there");
    let text = match params.field.as_str() {
        "output" => p
            .get_instance_info(id)
            .await
            .map_err(fail)?
            .output
            .ok_or_else(missing)?,
        "custom_status" => match p.get_custom_status(id, 0).await.map_err(fail)? {
            Some((Some(s), _)) => s,
            _ => return Err(missing()),
        },
        "event" => {
            let execution =
                number(&state, "execution", params.execution.as_deref())?.ok_or_else(missing)?;
            let event = number(&state, "event", params.event.as_deref())?.ok_or_else(missing)?;
            let events = p
                .dashboard_history(id, execution, Some(event.saturating_sub(1)), 1)
                .await
                .map_err(fail)?;
            let e = events
                .into_iter()
                .find(|e| e.event_id == event)
                .ok_or_else(missing)?;
            serde_json::to_string_pretty(&e).map_err(|e| {
                Failure::new(&state, StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            })?
        }
        _ => {
            return Err(Failure::new(
                &state,
                StatusCode::BAD_REQUEST,
                "field must be output, custom_status or event",
            ));
        }
    };
    Ok((
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
            (CONTENT_DISPOSITION, "attachment; filename=\"payload.txt\""),
        ],
        text,
    )
        .into_response())
}
