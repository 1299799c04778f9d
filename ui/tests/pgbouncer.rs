//! The dashboard on a provider behind a real PgBouncer in transaction mode
//! (`Pooler::Transaction`): every page and a purge, through the Router. Its
//! own reads are bounded calls (`SET LOCAL statement_timeout` and the call
//! in one simple query), which a transaction pooler must carry intact.

use duroxide_pg_testkit::harness as common;

/// Providers reach the server through PgBouncer.
const VIA: common::Via = common::Via::PgBouncer;

#[path = "../../tests/e2e/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "common/mod.rs"]
mod common_ui;

use axum::http::StatusCode;
use common_ui::{GREETED, Scenario, csrf_cookie, get, post, send};
use duroxide::providers::ProviderAdmin;
use duroxide_pg_ui::{Dashboard, DashboardOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_a_purge_work_behind_pgbouncer() {
    let s = Scenario::new().await;
    let p = s.provider();
    let app = Dashboard::new(p.clone(), DashboardOptions::default().with_page_size(5)).router();
    for uri in [
        "/",
        "/overview/live",
        "/instances",
        "/instances?status=Completed&prefix=greet-",
        "/instance?id=parent-1",
        "/instance?id=waiter-1",
        "/instance/raw?id=greet-01&field=output",
        "/retention",
        "/actions/purge?prefix=greet-",
    ] {
        let r = get(&app, uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}: {}", r.body);
    }
    let first = get(&app, "/instances?prefix=greet-").await;
    assert!(first.body.contains("next-page"), "no second page");
    let form = get(&app, "/actions/purge?prefix=greet-").await;
    assert!(
        form.body.contains(&format!("data-count=\"{GREETED}\"")),
        "{}",
        form.body
    );
    let token = csrf_cookie(&form);
    let r = send(
        &app,
        post(
            "/actions/purge",
            Some(&token),
            None,
            &format!("csrf={token}&prefix=greet-&expected={GREETED}"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let left = p.list_instances().await.unwrap();
    assert!(!left.iter().any(|id| id.starts_with("greet-")), "{left:?}");
    s.finish().await;
}
