//! The queue vacuum (`PostgresConfig::with_queue_vacuum`) on a real server:
//! a queue table with many dead tuples is vacuumed by the provider (the
//! server's own `vacuum_count` says so), one with few is left alone, tables
//! the role does not own are never chosen, and a too short interval is
//! refused before anything connects.

use duroxide_pg_testkit::harness as common;

use std::time::{Duration, Instant};

use duroxide_pg::{PostgresConfig, PostgresProvider};

/// (`vacuum_count`, `n_dead_tup`) of `table` in the provider's schema.
async fn vacuum_stats(p: &PostgresProvider, table: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables
          WHERE schemaname = $1 AND relname = $2",
    )
    .bind(p.schema_name())
    .bind(table)
    .fetch_one(p.pool())
    .await
    .unwrap()
}

async fn wait_for(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_queue_table_with_many_dead_tuples_is_vacuumed_by_the_provider() {
    let p = common::fresh_provider_configured("queue_vacuum", |c| {
        c.with_queue_vacuum(Some(Duration::from_secs(1)))
    })
    .await;
    let s = format!("\"{}\"", p.schema_name());
    // 5,000 dead worker rows; 10 dead orchestrator rows. Autovacuum is kept
    // off these tables: only the provider may vacuum them here.
    sqlx::raw_sql(&format!(
        "ALTER TABLE {s}.worker_queue SET (autovacuum_enabled = false);
         ALTER TABLE {s}.orchestrator_queue SET (autovacuum_enabled = false);
         INSERT INTO {s}.worker_queue (work_item, visible_at) SELECT '{{}}', 0 FROM generate_series(1, 5000);
         DELETE FROM {s}.worker_queue;
         INSERT INTO {s}.orchestrator_queue (instance_id, kind, work_item, visible_at)
         SELECT 'x', 'ExternalRaised', '{{}}', 0 FROM generate_series(1, 10);
         DELETE FROM {s}.orchestrator_queue;"
    ))
    .execute(p.pool())
    .await
    .unwrap();

    wait_for("the provider to vacuum worker_queue", async || {
        let (vacuums, dead) = vacuum_stats(&p, "worker_queue").await;
        vacuums >= 1 && dead == 0
    })
    .await;
    let (orchestrator_vacuums, orchestrator_dead) = vacuum_stats(&p, "orchestrator_queue").await;
    assert_eq!(
        orchestrator_vacuums, 0,
        "below the threshold: left to autovacuum"
    );
    assert_eq!(orchestrator_dead, 10);

    p.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn tables_the_role_does_not_own_are_never_chosen() {
    let p = common::fresh_provider("queue_vacuum_role").await;
    let s = p.schema_name().to_string();
    let role = format!("{s}_reader");
    let mut tx = p.pool().begin().await.unwrap();
    for sql in [
        format!("INSERT INTO \"{s}\".worker_queue (work_item, visible_at) VALUES ('{{}}', 0)"),
        format!("DELETE FROM \"{s}\".worker_queue"),
        format!("CREATE ROLE \"{role}\""),
        format!("GRANT USAGE ON SCHEMA \"{s}\" TO \"{role}\""),
    ] {
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
    }
    let choose = format!("SELECT o_table FROM \"{s}\".queue_tables_to_vacuum(0)");
    let owner_sees: Vec<String> = sqlx::query_scalar(&choose)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(
        owner_sees,
        [
            "instance_locks",
            "orchestrator_queue",
            "sessions",
            "worker_queue"
        ]
    );
    sqlx::query(&format!("SET LOCAL ROLE \"{role}\""))
        .execute(&mut *tx)
        .await
        .unwrap();
    let reader_sees: Vec<String> = sqlx::query_scalar(&choose)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert!(reader_sees.is_empty(), "{reader_sees:?}");
    tx.rollback().await.unwrap(); // the role goes with it

    p.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn an_interval_under_a_second_is_refused_before_connecting() {
    let config = PostgresConfig::new("postgres://nobody@127.0.0.1:1/none")
        .with_queue_vacuum(Some(Duration::from_millis(500)));
    let e = PostgresProvider::connect(config).await.unwrap_err();
    assert!(e.to_string().contains("shorter than 1 s"), "{e}");
}
