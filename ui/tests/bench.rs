//! Benchmark, on demand: how long the dashboard takes to render its pages
//! on a store of 1,000,000 instances, and what an open, refreshing overview
//! costs the database per minute.
//!
//! The store: the scenario's instances (run by a real runtime, so their
//! history decodes) plus 1,000,000 instances written by SQL, created over
//! 30 days (95% completed, 4% failed, 1% running, each with one execution
//! and three events). Each page is rendered through the Router (the whole
//! handler: queries, HTML), interleaved, `SAMPLES` times.
//!
//! `cargo nextest run --release --profile bench -p duroxide-pg-ui --test bench --run-ignored only --no-capture`

use duroxide_pg_testkit::harness as common;

/// The end-to-end helpers reach the server directly.
const VIA: common::Via = common::Via::Direct;

#[path = "../../tests/e2e/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "common/mod.rs"]
mod common_ui;

use std::time::{Duration, Instant};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use common_ui::Scenario;
use duroxide_pg::PostgresProvider;
use duroxide_pg_ui::{Dashboard, DashboardOptions};
use tower::ServiceExt;

const SAMPLES: usize = 200;
const MILLION: u64 = 1_000_000;

async fn fill(p: &PostgresProvider) {
    let s = format!("\"{}\"", p.schema_name());
    let now = "(extract(epoch FROM now()) * 1000)::bigint";
    let sql = format!(
        "INSERT INTO {s}.instances (instance_id, orchestration_name, orchestration_version, created_at, updated_at)
         SELECT 'bulk-' || g, CASE WHEN g % 3 = 0 THEN 'Invoice' ELSE 'Order' END, '1.0.0',
                {now} - 2592000000 + g::bigint * 2592, {now} - 2592000000 + g::bigint * 2592
           FROM generate_series(1, {MILLION}) g;
         INSERT INTO {s}.executions (instance_id, execution_id, status, output, started_at, completed_at)
         SELECT 'bulk-' || g, 1,
                CASE WHEN g % 100 = 0 THEN 'Running' WHEN g % 25 = 0 THEN 'Failed' ELSE 'Completed' END,
                '\"ok\"', {now} - 2592000000 + g::bigint * 2592,
                CASE WHEN g % 100 <> 0 THEN {now} - 2592000000 + g::bigint * 2592 + 500 END
           FROM generate_series(1, {MILLION}) g;
         INSERT INTO {s}.history (instance_id, execution_id, event_id, event_data)
         SELECT 'bulk-' || g, 1, e, repeat('x', 120) FROM generate_series(1, {MILLION}) g, generate_series(1, 3) e;"
    );
    sqlx::raw_sql(&sql).execute(p.pool()).await.unwrap();
    // As autovacuum would leave them: visibility map set, statistics fresh
    // (VACUUM cannot run in the transaction of the statements above).
    for t in ["instances", "executions", "history"] {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {s}.{t}"))
            .execute(p.pool())
            .await
            .unwrap();
    }
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[((sorted.len() - 1) * p) / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand (see the file header)"]
async fn page_render_times_on_a_million_instances() {
    let s = Scenario::new().await;
    let started = Instant::now();
    fill(&s.env.provider).await;
    println!(
        "filled 1,000,000 instances in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The overview is served from its cache between refreshes: its
    // queries are timed on their own below.
    let app = Dashboard::new(s.provider(), DashboardOptions::default()).router();
    // A cursor half way down the list.
    let mid = s
        .provider()
        .dashboard_instances(
            &duroxide_pg::dashboard::InstanceQuery {
                id_prefix: Some("bulk-50000".into()),
                ..Default::default()
            },
            None,
            1,
        )
        .await
        .unwrap()
        .remove(0);
    let deep = format!(
        "/instances?after_created={}&after_id={}",
        mid.created_at, mid.instance_id
    );
    let now = duroxide_pg_ui::time::now_ms();
    let window = format!(
        "/instances?created_from={}&created_to={}",
        duroxide_pg_ui::time::format_ms(now - 15 * 86_400_000),
        duroxide_pg_ui::time::format_ms(now - 15 * 86_400_000 + 3_600_000)
    );
    let pages: Vec<(&str, String)> = vec![
        ("list, first page", "/instances".into()),
        ("list, 950,000 rows down (keyset)", deep),
        ("list, status=Failed", "/instances?status=Failed".into()),
        (
            "list, status=Running, name=Invoice",
            "/instances?status=Running&name=Invoice".into(),
        ),
        (
            "list, id prefix bulk-99999 (newest rows)",
            "/instances?prefix=bulk-99999".into(),
        ),
        (
            "list, id prefix bulk-10000 (oldest rows: worst case)",
            "/instances?prefix=bulk-10000".into(),
        ),
        (
            "list, status=Running, created 29-30 days ago (worst case)",
            "/instances?status=Running&created_to=29d".into(),
        ),
        ("list, created in a 1 h window", window),
        (
            "instance page (runtime-run, 4 events)",
            "/instance?id=greet-01".into(),
        ),
        (
            "instance page (parent with child)",
            "/instance?id=parent-1".into(),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); pages.len()];
    for _ in 0..SAMPLES {
        for (i, (name, uri)) in pages.iter().enumerate() {
            let t = Instant::now();
            let r = app
                .clone()
                .oneshot(Request::get(uri.as_str()).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = r.status();
            let body = to_bytes(r.into_body(), 1 << 24).await.unwrap();
            times[i].push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(
                status,
                StatusCode::OK,
                "{name}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    println!("| page | p50 ms | p99 ms |\n|---|---:|---:|");
    for (i, (name, _)) in pages.iter().enumerate() {
        let t = &mut times[i];
        t.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.2} | {:.2} |",
            percentile(t, 50),
            percentile(t, 99)
        );
    }

    // The overview's database time: one refresh is three reads (counts by
    // status, queues, the chart), shared by every viewer for the refresh
    // interval; time them uncached.
    let p = s.provider();
    let mut refresh = Vec::new();
    let mut parts = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..60 {
        let t = Instant::now();
        p.dashboard_status_counts().await.unwrap();
        let t1 = Instant::now();
        p.queue_overview().await.unwrap();
        let t2 = Instant::now();
        p.dashboard_activity(
            duroxide_pg_ui::time::now_ms() - 3_600_000,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let t3 = Instant::now();
        for (i, d) in [t1 - t, t2 - t1, t3 - t2].into_iter().enumerate() {
            parts[i].push(d.as_secs_f64() * 1000.0);
        }
        refresh.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    for (name, mut t) in ["status counts", "queues", "chart"].into_iter().zip(parts) {
        t.sort_by(f64::total_cmp);
        println!("  {name}: p50 {:.1} ms", percentile(&t, 50));
    }
    refresh.sort_by(f64::total_cmp);
    let p50 = percentile(&refresh, 50);
    println!(
        "overview refresh: p50 {p50:.1} ms, p99 {:.1} ms; at the default 5 s refresh: {:.0} ms of database time per minute, whatever the number of viewers",
        percentile(&refresh, 99),
        p50 * 12.0
    );
    s.finish().await;
}
