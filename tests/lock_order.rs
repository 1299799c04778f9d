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

/// An ack that leases ahead (`ack_work_item_and_fetch`, one transaction)
/// touches its own session's row, then claims the session of the item it
/// leases next. Another slot's ack, in flight, holds that second session's
/// row (its touch) and is about to claim the first: the claim used to wait
/// for the row, the other ack then waited for ours, and PostgreSQL ended one
/// of them as a deadlock (40P01) after its deadlock timeout. The claim now
/// passes a session row another transaction holds over, like a held item,
/// and leases the next eligible one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_leasing_ahead_never_waits_for_a_session_row_another_ack_holds() {
    let p = Arc::new(
        common::fresh_provider_configured("locksession", |c| {
            c.with_poll_mode(duroxide_pg::PollMode::PollOnly)
        })
        .await,
    );
    let schema = p.schema_name().to_string();
    let lock = Duration::from_secs(30);
    let owner = duroxide::providers::SessionFetchConfig {
        owner_id: "owner".into(),
        lock_timeout: lock,
    };
    let any = duroxide::providers::TagFilter::default();
    // Two leased activities, of sessions s1 and s2 (both claimed by owner),
    // and two waiting: first one of s2, then one of s1.
    let mut tokens = Vec::new();
    for (id, session) in [(1, "s1"), (2, "s2")] {
        p.enqueue_for_worker(common::activity_item_in("i", id, Some(session), None))
            .await
            .unwrap();
        let (_, token, _) = p
            .fetch_work_item(lock, Duration::ZERO, Some(&owner), &any)
            .await
            .unwrap()
            .expect("a session activity");
        tokens.push(token);
    }
    p.enqueue_for_worker(common::activity_item_in("i", 12, Some("s2"), None))
        .await
        .unwrap();
    p.enqueue_for_worker(common::activity_item_in("i", 11, Some("s1"), None))
        .await
        .unwrap();

    // The other ack, in flight: it has touched s2.
    let mut other = sqlx::PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    let other_pid = common::backend_pid(&mut other).await;
    let mut tx = other.begin().await.unwrap();
    let touch = format!(
        "UPDATE \"{schema}\".sessions SET last_activity_at = last_activity_at + 1
          WHERE session_id = $1"
    );
    sqlx::query(&touch)
        .bind("s2")
        .execute(&mut *tx)
        .await
        .unwrap();

    // Ours: acks the s1 activity and leases ahead.
    let acker = Arc::clone(&p);
    let token = tokens[0].clone();
    let ack = tokio::spawn(async move {
        let done = WorkItem::ActivityCompleted {
            instance: "i".into(),
            execution_id: 1,
            id: 1,
            result: "ok".into(),
        };
        acker.ack_work_item(&token, Some(done)).await
    });
    // Until ours has finished, or waits for the other.
    let observer = sqlx::PgPool::connect(&common::database_url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ack.is_finished() {
        if common::waiting_for(&observer, other_pid).await > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ack neither ended nor waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The other ack goes on to claim s1.
    sqlx::query(&touch)
        .bind("s1")
        .execute(&mut *tx)
        .await
        .expect("the other ack's claim of s1 must not deadlock");
    tx.commit().await.unwrap();
    ack.await
        .unwrap()
        .expect("our ack must not deadlock either");

    // Ours passed the s2 activity over and leased the s1 one ahead; the s2
    // one is still there for the next fetch.
    let mut next = Vec::new();
    for _ in 0..2 {
        let (item, _, _) = p
            .fetch_work_item(lock, Duration::ZERO, Some(&owner), &any)
            .await
            .unwrap()
            .expect("both waiting activities");
        let WorkItem::ActivityExecute { id, .. } = item else {
            panic!("not an activity: {item:?}")
        };
        next.push(id);
    }
    assert_eq!(next, [11, 12]);
    p.cleanup_schema().await.unwrap();
}
