//! Worker prefetch: an ack leases the next ready activity for the provider's
//! next fetch. Held items must never be lost or kept from other processes for
//! long: one no fetch takes is released within `PostgresProvider::PREFETCH_HOLD`, `close()`
//! releases them at once, a fetch with other arguments releases them instead
//! of taking one, and the feature can be turned off.

use duroxide_pg_testkit::harness as common;

use std::time::{Duration, Instant};

use common::{activity_item, database_url, fresh_schema_name};
use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_pg::{PollMode, PostgresConfig, PostgresProvider};

const LOCK: Duration = Duration::from_secs(30);

/// Two providers on one fresh schema: `a` acks (and so leases ahead), `b`
/// plays another process.
async fn two_providers(prefix: &str, prefetch: bool) -> (PostgresProvider, PostgresProvider) {
    let config = PostgresConfig::new(database_url())
        .with_schema(fresh_schema_name(prefix))
        .with_poll_mode(PollMode::PollOnly);
    let a = PostgresProvider::connect(config.clone().with_worker_prefetch(prefetch))
        .await
        .unwrap();
    let b = PostgresProvider::connect(config).await.unwrap();
    (a, b)
}

fn activity_id(item: &WorkItem) -> u64 {
    match item {
        WorkItem::ActivityExecute { id, .. } => *id,
        other => panic!("not an activity: {other:?}"),
    }
}

/// `a` fetches activity 1 and acks it while activity 2 waits: the ack leases 2.
async fn ack_with_one_waiting(a: &PostgresProvider) {
    a.enqueue_for_worker(activity_item("held", 1))
        .await
        .unwrap();
    a.enqueue_for_worker(activity_item("held", 2))
        .await
        .unwrap();
    let (item, token, _) = a
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(activity_id(&item), 1);
    a.ack_work_item(&token, None).await.unwrap();
}

async fn fetch_now(p: &PostgresProvider) -> Option<(WorkItem, String, u32)> {
    p.fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn an_item_no_fetch_takes_is_released_with_its_attempt_count_restored() {
    let (a, b) = two_providers("prefetch_hold", true).await;
    ack_with_one_waiting(&a).await;
    assert!(fetch_now(&b).await.is_none(), "activity 2 is leased by a");

    let start = Instant::now();
    let taken = loop {
        if let Some(taken) = fetch_now(&b).await {
            break taken;
        }
        assert!(
            start.elapsed() < PostgresProvider::PREFETCH_HOLD * 10,
            "the held item was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(activity_id(&taken.0), 2);
    assert_eq!(taken.2, 1, "the lease ahead did not count as an attempt");
    b.ack_work_item(&taken.1, None).await.unwrap();
    // a's held entry is gone too: it neither hands it out nor fails.
    assert!(fetch_now(&a).await.is_none());
    a.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn close_releases_held_items_at_once() {
    let (a, b) = two_providers("prefetch_close", true).await;
    ack_with_one_waiting(&a).await;
    a.close().await;
    let (item, _, attempts) = fetch_now(&b).await.expect("released by close");
    assert_eq!((activity_id(&item), attempts), (2, 1));
    b.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn a_fetch_with_other_arguments_releases_held_items_instead_of_taking_them() {
    let (a, b) = two_providers("prefetch_key", true).await;
    ack_with_one_waiting(&a).await;
    // Another tag filter (and another lease length): the held untagged item is
    // not handed to it, and is released so the database can lease it.
    let other = a
        .fetch_work_item(
            Duration::from_secs(5),
            Duration::ZERO,
            None,
            &TagFilter::tags(["gpu"]),
        )
        .await
        .unwrap();
    assert!(other.is_none(), "a tagged fetch got an untagged item");
    let (item, token, attempts) = fetch_now(&b).await.expect("released at once");
    assert_eq!((activity_id(&item), attempts), (2, 1));
    b.ack_work_item(&token, None).await.unwrap();
    assert!(fetch_now(&a).await.is_none());
    a.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn with_prefetch_off_an_ack_leases_nothing() {
    let (a, b) = two_providers("prefetch_off", false).await;
    ack_with_one_waiting(&a).await;
    let (item, _, _) = fetch_now(&b).await.expect("activity 2 is free");
    assert_eq!(activity_id(&item), 2);
    a.cleanup_schema().await.unwrap();
}

#[tokio::test]
async fn a_failed_ack_leases_nothing() {
    let (a, b) = two_providers("prefetch_failed_ack", true).await;
    a.enqueue_for_worker(activity_item("held", 1))
        .await
        .unwrap();
    a.enqueue_for_worker(activity_item("held", 2))
        .await
        .unwrap();
    let (_, token, _) = fetch_now(&a).await.unwrap();
    // b steals nothing; a acks a token that is not held.
    let err = a.ack_work_item("no-such-token", None).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let (item, _, _) = fetch_now(&b).await.expect("activity 2 is free");
    assert_eq!(activity_id(&item), 2);
    a.ack_work_item(&token, None).await.unwrap();
    a.cleanup_schema().await.unwrap();
}
