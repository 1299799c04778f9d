//! `/`: instance counts by status, queue depths, the last hour's
//! completions and failures; the live part refreshes itself through htmx.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use duroxide_pg::QueueStatus;
use duroxide_pg::dashboard::ActivityBucket;
use maud::{Markup, html};

use crate::AppState;
use crate::chart;
use crate::time::now_ms;
use crate::view::{Failure, PageResult, link, took};

const BUCKET: Duration = Duration::from_secs(60);
const BUCKETS: u64 = 60;

/// What the overview shows, read together and shared by every viewer.
pub(crate) struct Figures {
    counts: Vec<(String, u64)>,
    queues: Vec<QueueStatus>,
    activity: Vec<ActivityBucket>,
    since_ms: u64,
    read_at_ms: u64,
}

/// The figures, from the cache while younger than half the refresh
/// interval (so a lone viewer, polling once an interval, always gets fresh
/// ones): the database cost of an open overview does not grow with its
/// viewers. One request refills the cache; the others wait for it.
async fn figures(state: &AppState) -> Result<Arc<Figures>, Failure> {
    let mut cache = state.overview.lock().await;
    if let Some((at, f)) = cache.as_ref()
        && at.elapsed() < state.options.refresh / 2
    {
        return Ok(f.clone());
    }
    let started = Instant::now();
    let p = &state.provider;
    let now = now_ms();
    let bucket_ms = BUCKET.as_millis() as u64;
    // Whole minutes, so a bar does not shift between two refreshes.
    let since_ms = (now / bucket_ms + 1 - BUCKETS) * bucket_ms;
    let fail = |e| Failure::provider(state, &e);
    let f = Arc::new(Figures {
        counts: p.dashboard_status_counts().await.map_err(fail)?,
        queues: p.queue_overview().await.map_err(fail)?,
        activity: p.dashboard_activity(since_ms, BUCKET).await.map_err(fail)?,
        since_ms,
        read_at_ms: now,
    });
    *cache = Some((started, f.clone()));
    Ok(f)
}

fn live_part(state: &AppState, f: &Figures) -> Markup {
    let every = format!("every {}ms", state.options.refresh.as_millis());
    html! {
        div #live hx-get=(link(state, "/overview/live", &[])) hx-trigger=(every) hx-swap="outerHTML" {
            div.cards #status-counts {
                @for (s, n) in &f.counts {
                    a.card href=(link(state, "/instances", &[("status", s)])) data-status=(s) {
                        div.n { (n) }
                        div.k { (s) }
                    }
                }
            }
            h2 { "Queues" }
            table #queues {
                thead { tr { th { "queue" } th.num { "ready" } th.num { "delayed" } th.num { "locked" } th.num { "oldest ready" } } }
                tbody {
                    @for q in &f.queues {
                        tr data-queue=(q.queue) {
                            td { (q.queue) }
                            td.num { (q.ready) }
                            td.num { (q.delayed) }
                            td.num { (q.locked) }
                            td.num { @match q.oldest_ready_age { Some(a) => (took(a.as_millis() as u64)), None => "–" } }
                        }
                    }
                }
            }
            h2 { "Last hour" }
            (chart::activity(&f.activity, f.since_ms, BUCKET.as_millis() as u64, BUCKETS))
            p.note { "Read at " (crate::view::when(f.read_at_ms)) "; refreshes every " (crate::view::took(state.options.refresh.as_millis() as u64)) "." }
        }
    }
}

/// `GET /`.
pub(crate) async fn page(State(state): State<Arc<AppState>>) -> PageResult {
    let f = figures(&state).await?;
    Ok(crate::view::page(&state, "Overview", live_part(&state, &f)))
}

/// `GET /overview/live`: the part that refreshes.
pub(crate) async fn live(State(state): State<Arc<AppState>>) -> PageResult {
    let f = figures(&state).await?;
    Ok(live_part(&state, &f))
}
