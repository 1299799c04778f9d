//! Benchmark, on demand: how many statements an idle runtime (4 orchestration
//! and 4 worker slots, nothing to do) costs the server, counted by
//! `pg_stat_statements` in a database of its own.
//!
//! `cargo nextest run --test idle_statements --run-ignored only --no-capture`

use duroxide_pg_testkit::harness as common;

use std::sync::Arc;
use std::time::Duration;

use duroxide::OrchestrationRegistry;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide_pg::{PostgresConfig, PostgresProvider};
use sqlx::PgPool;

const WINDOW: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: 60 s idle window"]
async fn idle_runtime_statements_per_second() {
    let url = common::database_url();
    let admin = PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&admin)
        .await
        .unwrap();
    let db = common::fresh_schema_name("idle");
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&admin)
        .await
        .unwrap();
    let db_url = match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("URL without a database: use a URL ending in /dbname"),
    };
    let provider = Arc::new(
        PostgresProvider::connect(PostgresConfig::new(db_url))
            .await
            .unwrap(),
    );
    let options = RuntimeOptions {
        orchestration_concurrency: 4,
        worker_concurrency: 4,
        ..Default::default()
    };
    let rt = Runtime::start_with_options(
        provider.clone(),
        ActivityRegistry::builder().build(),
        OrchestrationRegistry::builder().build(),
        options,
    )
    .await;
    // Let every slot reach its waiting state, then count a clean window.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = $1), 0)",
    )
    .bind(&db)
    .execute(&admin)
    .await
    .unwrap();
    tokio::time::sleep(WINDOW).await;
    let statements: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(s.calls), 0)::BIGINT FROM pg_stat_statements s
         JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
    )
    .bind(&db)
    .fetch_one(&admin)
    .await
    .unwrap();
    rt.shutdown(None).await;
    provider.pool().close().await;
    drop(provider);
    sqlx::query(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();

    let per_second = statements as f64 / WINDOW.as_secs_f64();
    println!("idle runtime (4+4 slots): {statements} statements in {WINDOW:?} = {per_second:.2}/s");
    assert!(
        per_second < 2.0,
        "idle runtime issued {per_second:.2} statements/s"
    );
}
