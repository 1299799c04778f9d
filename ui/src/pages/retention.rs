//! `/retention`: the policy a background sweeper stored, the sweep running
//! now, the last sweep and the oldest finished root per status.

use std::sync::Arc;

use axum::extract::State;
use maud::html;

use crate::AppState;
use crate::view::{Failure, PageResult, instance_link, when};

/// `GET /retention`.
pub(crate) async fn page(State(state): State<Arc<AppState>>) -> PageResult {
    let s = state
        .provider
        .retention_status()
        .await
        .map_err(|e| Failure::provider(&state, &e))?;
    let body = html! {
        table #retention {
            tr { th { "policy" } td #policy {
                @match &s.policy {
                    Some(p) => { (p.to_string()) @if let Some((by, at)) = &s.policy_by { span.note { " (stored by " (by) ", " (when(*at)) ")" } } }
                    None => "none stored: no background sweeper has run on this schema (the CLI's retention run stores none)",
                }
            } }
            tr { th { "sweeping now" } td #sweeping {
                @match &s.sweeping { Some((by, until)) => { (by) ", lease until " (when(*until)) } None => "no" }
            } }
            tr { th { "last sweep" } td #last-sweep {
                @match &s.last {
                    Some(l) => {
                        "by " (l.by) ", " (when(l.started_at_ms)) " to " (when(l.finished_at_ms)) ": deleted "
                        (l.instances) " instances, " (l.executions) " executions, " (l.events) " events"
                        @if let Some(e) = &l.error { br; span.error { "stopped early: " (e) } }
                    }
                    None => "none yet",
                }
            } }
            @for (label, oldest) in [("oldest completed root", &s.oldest_completed), ("oldest failed root", &s.oldest_failed)] {
                tr { th { (label) } td {
                    @match oldest {
                        Some((id, at)) => { a href=(instance_link(&state, id)) { (id) } ", " (when(*at)) }
                        None => "none",
                    }
                } }
            }
        }
        p.note { "A policy is configured with PostgresConfig::with_retention, or run from cron with "
                 code { "duroxide-pg retention run" } "." }
    };
    Ok(crate::view::page(&state, "Retention", body))
}
