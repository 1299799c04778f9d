//! Messages held for a lease (migration 0009) must never outlive it. Driven
//! step by step with explicit transactions, so each interleaving is certain.

use duroxide_pg_testkit::harness as common;

use duroxide::providers::{Provider, ProviderAdmin};
use sqlx::{Connection, PgConnection, PgPool};

/// Waits until some backend waits for a lock held by backend `blocker`.
async fn blocked_by(admin: &PgPool, blocker: i32) {
    common::wait_for_waiters(admin, blocker, |n| n > 0, "a wait for the lock").await;
}

/// A delete that starts before a lease exists, while a message is enqueued
/// (held) for that lease before the delete reaches the leases: the message
/// must go with the instance. Deleting queue rows before lease rows left it
/// held for a lease that no longer existed: no fetch could ever see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_racing_a_new_lease_leaves_no_held_message_behind() {
    let p = std::sync::Arc::new(common::fresh_provider("heldelete").await);
    let schema = p.schema_name().to_string();
    let admin = PgPool::connect(&common::database_url()).await.unwrap();
    let instance = "racing";

    // A started instance (history exists), leased once and released, with a
    // message waiting so a later fetch can lease it.
    common::start_instance(&p, instance, "Race").await;
    p.enqueue_for_orchestrator(
        duroxide::providers::WorkItem::ExternalRaised {
            instance: instance.into(),
            name: "first".into(),
            data: "1".into(),
        },
        None,
    )
    .await
    .unwrap();

    // 1. Stall the delete after it has locked the (then nonexistent) leases:
    //    hold its history rows.
    let mut staller = PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    let staller_pid = common::backend_pid(&mut staller).await;
    let mut stall = staller.begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT 1 FROM \"{schema}\".history WHERE instance_id = $1 FOR UPDATE"
    ))
    .bind(instance)
    .execute(&mut *stall)
    .await
    .unwrap();
    let deleter = {
        let p = p.clone();
        tokio::spawn(async move { p.delete_instance(instance, true).await })
    };
    blocked_by(&admin, staller_pid).await;

    // 2. Meanwhile a fetch leases the instance...
    let (_, _lease, _) = common::fetch_orchestration_now(&p)
        .await
        .expect("the instance");
    // 3. ...and a message arrives for it, held for that lease, not committed yet.
    let mut enqueuer = PgConnection::connect(&common::database_url())
        .await
        .unwrap();
    let enqueuer_pid = common::backend_pid(&mut enqueuer).await;
    let mut enqueue = enqueuer.begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT \"{schema}\".enqueue_orchestrator_item($1, 'ExternalRaised', '{{}}', \
         (extract(epoch FROM now()) * 1000)::bigint, 0)"
    ))
    .bind(instance)
    .execute(&mut *enqueue)
    .await
    .unwrap();
    let held: String = sqlx::query_scalar(&format!(
        "SELECT lock_token FROM \"{schema}\".orchestrator_queue
          WHERE instance_id = $1 ORDER BY id DESC LIMIT 1"
    ))
    .bind(instance)
    .fetch_one(&mut *enqueue)
    .await
    .unwrap();
    assert!(held.starts_with("held:"), "{held}");

    // 4. The delete goes on until it meets the enqueue's lock; then both finish.
    stall.commit().await.unwrap();
    blocked_by(&admin, enqueuer_pid).await;
    enqueue.commit().await.unwrap();
    deleter.await.unwrap().unwrap();

    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\".orchestrator_queue WHERE instance_id = $1"
    ))
    .bind(instance)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(left, 0, "a message outlived its deleted instance and lease");
    p.cleanup_schema().await.unwrap();
}

/// A lease that expired in its holder's hands is taken over with everything
/// it held, even a message whose time lies ahead of the taker's clock (hosts
/// whose clocks disagree): tagged messages are invisible to the fetch's scan,
/// so one left behind would never be seen again.
#[tokio::test]
async fn a_takeover_takes_everything_the_expired_lease_held() {
    let p = common::fresh_provider("heldskew").await;
    let schema = p.schema_name().to_string();
    let admin = PgPool::connect(&common::database_url()).await.unwrap();
    let instance = "skewed";
    common::start_instance(&p, instance, "Skew").await;
    p.enqueue_for_orchestrator(
        duroxide::providers::WorkItem::ExternalRaised {
            instance: instance.into(),
            name: "late".into(),
            data: "1".into(),
        },
        None,
    )
    .await
    .unwrap();
    // As another host left it: its lease expired, the message held for that
    // lease and dated by a clock a minute ahead of ours.
    sqlx::raw_sql(&format!(
        "INSERT INTO \"{schema}\".instance_locks (instance_id, lock_token, locked_until, locked_at)
         VALUES ('{instance}', 'other-host', 1, 0);
         UPDATE \"{schema}\".orchestrator_queue
            SET lock_token = 'held:other-host',
                visible_at = (extract(epoch FROM now()) * 1000)::bigint + 60000
          WHERE instance_id = '{instance}';"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let (item, _, _) = common::fetch_orchestration_now(&p)
        .await
        .expect("the expired lease is taken over with its held message");
    assert_eq!((item.instance.as_str(), item.messages.len()), (instance, 1));
    p.cleanup_schema().await.unwrap();
}
