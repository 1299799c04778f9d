//! Lock ordering between provider operations: an operation that races an
//! orchestration ack must wait for it, never deadlock with it.
//!
//! `ack_orchestration_item` locks the instance's lease row first and its
//! instance row second. These tests hold the locks in that order from a raw
//! transaction (as an in-flight ack does), start the competing operation, and
//! check that both sides finish without `deadlock detected` (40P01).

use duroxide_pg_testkit::harness as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, WorkItem};
use duroxide_pg::PostgresProvider;
use sqlx::Connection;

/// Creates the instance and leaves it leased by a second fetch.
async fn leased_instance(p: &PostgresProvider, instance: &str) {
    let lock = Duration::from_secs(30);
    let (_, token, _) = common::enqueue_and_fetch(p, common::start_item(instance, "Locked"))
        .await
        .unwrap();
    let started = common::started_event(instance, "Locked");
    let metadata = common::naming_metadata("Locked");
    p.ack_orchestration_item(&token, 1, vec![started], vec![], vec![], metadata, vec![])
        .await
        .unwrap();
    let raised = WorkItem::ExternalRaised {
        instance: instance.into(),
        name: "go".into(),
        data: "1".into(),
    };
    p.enqueue_for_orchestrator(raised, None).await.unwrap();
    p.fetch_orchestration_item(lock, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("second lease");
}

/// Waits until some other backend of this database waits for a lock.
async fn wait_for_lock_waiter(conn: &mut sqlx::PgConnection) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the competing operation never waited for the lease lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_delete_waits_for_an_in_flight_ack() {
    let provider = Arc::new(common::fresh_provider("lockorder").await);
    let schema = provider.schema_name().to_string();
    leased_instance(&provider, "victim").await;

    // The first half of an ack: the lease row is locked.
    let mut ack = sqlx::PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    let mut tx = ack.begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT 1 FROM \"{schema}\".instance_locks WHERE instance_id = $1 FOR UPDATE"
    ))
    .bind("victim")
    .execute(&mut *tx)
    .await
    .unwrap();

    let deleter = Arc::clone(&provider);
    let delete = tokio::spawn(async move {
        let admin = deleter.as_management_capability().unwrap();
        admin
            .delete_instances_atomic(&["victim".to_string()], true)
            .await
    });
    let mut observer = sqlx::PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    wait_for_lock_waiter(&mut observer).await;

    // The second half of the ack: the instance row. Must not deadlock.
    sqlx::query(&format!(
        "UPDATE \"{schema}\".instances SET updated_at = updated_at + 1 WHERE instance_id = $1"
    ))
    .bind("victim")
    .execute(&mut *tx)
    .await
    .expect("the ack's second lock must not deadlock");
    tx.commit().await.unwrap();

    let deleted = delete
        .await
        .unwrap()
        .expect("the delete must wait, then succeed");
    assert_eq!(deleted.instances_deleted, 1);
    assert!(provider.read("victim").await.unwrap().is_empty());
    provider.cleanup_schema().await.unwrap();
}

/// `cleanup_schema` while another transaction (a call its runtime abandoned
/// at shutdown, still running in the server) holds one of the schema's
/// tables and then asks for one the drop has already taken: PostgreSQL ends
/// the drop as a deadlock (it waited first). Nothing was dropped; the
/// cleanup does it again once the other side is through. Failed before
/// (`drop test schema: … 40P01 deadlock detected`, seen in the suite through
/// PgBouncer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_schema_survives_a_deadlock_with_a_running_call() {
    // PostgreSQL looks for a deadlock once, deadlock_timeout after a session
    // starts waiting, and ends the session whose look finds the cycle. The
    // drop waits first, but with the default second it may look before
    // this side has closed the cycle on a busy machine (it found nothing,
    // this side's own look then ended this side: seen once in CI). So the
    // provider's sessions look after 5 s and this side's after a minute:
    // the drop is always the one ended. (Superuser settings: the throwaway
    // cluster, whatever DATABASE_URL says.)
    let url = common::local_url();
    let looks_late = format!(
        "{url}{}options=-c%20deadlock_timeout%3D5s",
        if url.contains('?') { '&' } else { '?' }
    );
    let p = Arc::new(
        PostgresProvider::connect(
            duroxide_pg::PostgresConfig::new(looks_late)
                .with_schema(common::fresh_schema_name("cleanup_deadlock")),
        )
        .await
        .unwrap(),
    );
    let schema = p.schema_name().to_string();
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("SET deadlock_timeout = '60s'")
        .execute(&mut other)
        .await
        .unwrap();
    // The schema's tables in creation order: the drop takes them in that
    // order, so it holds the others while it waits for the last.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY c.oid",
    )
    .bind(&schema)
    .fetch_all(&mut other)
    .await
    .unwrap();
    let (last, rest) = tables.split_last().expect("tables");
    sqlx::raw_sql(&format!("BEGIN; LOCK TABLE {last} IN ROW EXCLUSIVE MODE"))
        .execute(&mut other)
        .await
        .unwrap();
    let cleanup = {
        let p = Arc::clone(&p);
        tokio::spawn(async move { p.cleanup_schema().await })
    };
    // Until the drop waits for the table held here.
    let watcher = sqlx::PgPool::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query LIKE 'DROP SCHEMA%' AND query LIKE $1",
        )
        .bind(format!("%{schema}%"))
        .fetch_one(&watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the drop never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Now ask for the tables the drop holds: a cycle.
    sqlx::raw_sql(&format!(
        "LOCK TABLE {} IN ACCESS SHARE MODE",
        rest.join(", ")
    ))
    .execute(&mut other)
    .await
    .expect("this side gets the tables once the drop gave up");
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    cleanup
        .await
        .unwrap()
        .expect("the cleanup went through after the deadlock");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&schema)
        .fetch_one(&watcher)
        .await
        .unwrap();
    assert_eq!(left, 0, "the schema is gone");
    watcher.close().await;
}
