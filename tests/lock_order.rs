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
