//! Long polling, behaviour rather than speed: a waiting fetch returns work
//! that arrives during its wait, and work that becomes visible later (a
//! delayed message, a timer), long before the fallback poll would find it.
//! (Latency figures live in BENCHMARKS.md.)

use duroxide_pg_testkit::harness as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, TagFilter};

/// The fallback poll is 10 s: anything found well before that was woken.
const WELL_BEFORE_FALLBACK: Duration = Duration::from_secs(4);
const LOCK: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_fetches_return_new_work() {
    let p = Arc::new(common::fresh_provider("longpoll").await);
    let (po, pw) = (p.clone(), p.clone());
    let orch = tokio::spawn(async move { po.fetch_orchestration_item(LOCK, POLL, None).await });
    let work = tokio::spawn(async move {
        pw.fetch_work_item(LOCK, POLL, None, &TagFilter::DefaultOnly)
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await; // both are waiting by now (or will find the rows)
    let started = Instant::now();
    p.enqueue_for_orchestrator(common::start_item("arrives", "Waited"), None)
        .await
        .unwrap();
    let activity = common::activity_item("arrives", 2);
    p.enqueue_for_worker(activity).await.unwrap();
    let (item, _, _) = orch.await.unwrap().unwrap().expect("orchestration item");
    assert_eq!(item.instance, "arrives");
    work.await.unwrap().unwrap().expect("work item");
    assert!(
        started.elapsed() < WELL_BEFORE_FALLBACK,
        "woken only by the fallback: {:?}",
        started.elapsed()
    );
    p.cleanup_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_fetch_wakes_for_a_delayed_message_at_its_visible_time() {
    let p = Arc::new(common::fresh_provider("longpoll").await);
    let po = p.clone();
    let orch = tokio::spawn(async move { po.fetch_orchestration_item(LOCK, POLL, None).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let delay = Duration::from_millis(500);
    let started = Instant::now();
    p.enqueue_for_orchestrator(common::start_item("delayed", "Waited"), Some(delay))
        .await
        .unwrap();
    let (item, _, _) = orch.await.unwrap().unwrap().expect("the delayed item");
    let waited = started.elapsed();
    assert_eq!(item.instance, "delayed");
    assert!(
        waited >= delay,
        "returned before the item was visible: {waited:?}"
    );
    assert!(
        waited < WELL_BEFORE_FALLBACK,
        "woken only by the fallback: {waited:?}"
    );
    p.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn poll_only_mode_returns_at_once() {
    let p = common::fresh_provider_with("pollonly", duroxide_pg::PollMode::PollOnly).await;
    let started = Instant::now();
    assert!(
        p.fetch_orchestration_item(LOCK, POLL, None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        p.fetch_work_item(LOCK, POLL, None, &TagFilter::DefaultOnly)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        started.elapsed() < POLL / 4,
        "poll-only fetches waited {:?}",
        started.elapsed()
    );
    p.cleanup_schema().await.unwrap();
}

/// Regression (migration 0011): a fetch that found the only ready work held
/// by another transaction for a moment (another fetch looking at it) slept
/// until the next hint, though that transaction did not take it: 10 s stalls
/// in the wake-up benchmark. Now it looks again a millisecond later. Here
/// another connection holds the instance's advisory lock, then lets go
/// without taking anything; no hint follows, the fallback poll and the poll
/// timeout are far away, and the waiting fetch must still lease it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_found_the_work_held_for_a_moment_looks_again() {
    let never = Duration::from_secs(600);
    let p = Arc::new(
        common::fresh_provider_configured("contended", |c| c.with_fallback_poll(never)).await,
    );
    let schema = p.schema_name().to_string();
    common::start_instance(&p, "held", "Held").await;
    let mut other = p.pool().begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT pg_advisory_xact_lock(\"{schema}\".lock_key('instance', 'held'))"
    ))
    .persistent(false)
    .execute(&mut *other)
    .await
    .unwrap();
    p.enqueue_for_orchestrator(
        duroxide::providers::WorkItem::ExternalRaised {
            instance: "held".into(),
            name: "Go".into(),
            data: "{}".into(),
        },
        None,
    )
    .await
    .unwrap();
    // Like a runtime slot: fetch again after every `Ok(None)`.
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            loop {
                if let Some(found) = p.fetch_orchestration_item(LOCK, never, None).await.unwrap() {
                    return found;
                }
            }
        })
    };
    // The waiter has looked (and found the instance held) by now, or looks
    // after the release; either way it must not sleep on it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    other.rollback().await.unwrap();
    let leased = tokio::time::timeout(WELL_BEFORE_FALLBACK, waiter)
        .await
        .expect("the fetch slept on work another transaction held for a moment")
        .unwrap();
    assert_eq!(leased.0.instance, "held");

    // The same for a worker row another transaction holds locked.
    p.enqueue_for_worker(common::activity_item("held", 2))
        .await
        .unwrap();
    let mut other = p.pool().begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT id FROM \"{schema}\".worker_queue WHERE instance_id = 'held' FOR UPDATE"
    ))
    .persistent(false)
    .execute(&mut *other)
    .await
    .unwrap();
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            loop {
                let fetched = p
                    .fetch_work_item(LOCK, never, None, &TagFilter::DefaultOnly)
                    .await
                    .unwrap();
                if fetched.is_some() {
                    return fetched;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    other.rollback().await.unwrap();
    let leased = tokio::time::timeout(WELL_BEFORE_FALLBACK, waiter)
        .await
        .expect("the fetch slept on a row another transaction held for a moment")
        .unwrap();
    assert!(leased.is_some());
    p.cleanup_schema().await.unwrap();
}
