//! Every provider call is exactly one SQL statement and one network round
//! trip. Statements are counted by the server itself through
//! `pg_stat_statements`, in a database of its own so nothing else is counted
//! (the throwaway cluster preloads the extension; with an external
//! `DATABASE_URL`, that server must preload it too). Round trips are counted
//! on the wire by `duroxide_pg_testkit::delay_proxy` between provider and server.

use duroxide_pg_testkit::harness as common;

use std::time::Duration;

use common::{database_url, fresh_schema_name};
use duroxide::providers::{ExecutionMetadata, Provider, TagFilter, WorkItem};
use duroxide::{Event, EventKind};
use duroxide_pg::{PollMode, Pooler, PostgresConfig, PostgresProvider};
use duroxide_pg_testkit::delay_proxy::{self, DelayProxy};
use sqlx::PgPool;

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let cut = base.rfind('/').expect("URL has a database path");
    format!("{}/{db}{query}", &base[..cut])
}

async fn statement_counts(admin: &PgPool, db: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT s.query, s.calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = $1 ORDER BY s.query",
    )
    .bind(db)
    .fetch_all(admin)
    .await
    .expect("read pg_stat_statements")
}

async fn reset_counts(admin: &PgPool, db: &str) {
    sqlx::query(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = $1), 0)",
    )
    .bind(db)
    .execute(admin)
    .await
    .expect("reset pg_stat_statements");
}

/// A provider on a fresh schema (prefix `prefix`) reaching the server through
/// a zero-delay proxy that counts round trips. One connection and poll-only
/// (no listener), so every counted exchange is a provider call's.
async fn counted_provider(prefix: &str) -> (DelayProxy, PostgresProvider) {
    counted_provider_with(prefix, Pooler::None).await
}

/// As [`counted_provider`], with the given pooler setting (the proxy is no
/// pooler: `Pooler::Transaction` here only changes how calls are sent).
async fn counted_provider_with(prefix: &str, pooler: Pooler) -> (DelayProxy, PostgresProvider) {
    let url = database_url();
    let upstream = delay_proxy::upstream_of(&url).await.unwrap();
    let proxy = DelayProxy::start(upstream, Duration::ZERO).await.unwrap();
    let provider = PostgresProvider::connect(
        PostgresConfig::new(delay_proxy::reroute_url(&url, proxy.local_addr()).unwrap())
            .with_schema(fresh_schema_name(prefix))
            .with_max_connections(1)
            .with_pooler(pooler)
            .with_poll_mode(PollMode::PollOnly),
    )
    .await
    .unwrap();
    (proxy, provider)
}

/// A whole orchestration with one activity: enqueue, two turns (fetch + ack),
/// one activity (fetch + ack) and a read: 8 provider calls. `after(call)`
/// runs after each call, named by its provider method.
async fn one_cycle(p: &PostgresProvider, instance: &str, after: &mut dyn FnMut(&'static str)) {
    let lock = Duration::from_secs(30);
    p.enqueue_for_orchestrator(common::start_item(instance, "Counted"), None)
        .await
        .unwrap();
    after("enqueue_for_orchestrator");
    let (_item, token, _) = p
        .fetch_orchestration_item(lock, Duration::ZERO, None)
        .await
        .unwrap()
        .unwrap();
    after("fetch_orchestration_item");
    let started = common::started_event(instance, "Counted");
    let metadata = common::naming_metadata("Counted");
    p.ack_orchestration_item(
        &token,
        1,
        vec![started],
        vec![common::activity_item(instance, 2)],
        vec![],
        metadata,
        vec![],
    )
    .await
    .unwrap();
    after("ack_orchestration_item");
    let (_w, wtoken, _) = p
        .fetch_work_item(lock, Duration::ZERO, None, &TagFilter::DefaultOnly)
        .await
        .unwrap()
        .unwrap();
    after("fetch_work_item");
    let done = WorkItem::ActivityCompleted {
        instance: instance.into(),
        execution_id: 1,
        id: 2,
        result: "r".into(),
    };
    p.ack_work_item(&wtoken, Some(done)).await.unwrap();
    after("ack_work_item");
    // The completion turn: consumes the activity result and completes.
    let (item, token, _) = p
        .fetch_orchestration_item(lock, Duration::ZERO, None)
        .await
        .unwrap()
        .unwrap();
    after("fetch_orchestration_item");
    assert_eq!(item.instance, instance);
    let completed = Event::with_event_id(
        2,
        instance,
        1,
        None,
        EventKind::OrchestrationCompleted {
            output: "ok".into(),
        },
    );
    let metadata = ExecutionMetadata {
        status: Some("Completed".into()),
        output: Some("ok".into()),
        ..Default::default()
    };
    p.ack_orchestration_item(&token, 1, vec![completed], vec![], vec![], metadata, vec![])
        .await
        .unwrap();
    after("ack_orchestration_item");
    assert_eq!(p.read(instance).await.unwrap().len(), 2);
    after("read");
}

#[tokio::test]
async fn each_provider_call_is_one_statement() {
    // pg_stat_statements: the throwaway cluster preloads it.
    let url = common::local_url();
    let admin = PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&admin)
        .await
        .expect("pg_stat_statements must be available (shared_preload_libraries)");
    let db = fresh_schema_name("stmts");
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&admin)
        .await
        .unwrap();

    // One connection, so the measured calls reuse its prepared statements.
    let provider = PostgresProvider::connect(
        PostgresConfig::new(with_database(&url, &db))
            .with_schema("counted")
            .with_max_connections(1),
    )
    .await
    .unwrap();
    one_cycle(&provider, "warm-up", &mut |_| {}).await;

    reset_counts(&admin, &db).await;
    one_cycle(&provider, "measured", &mut |_| {}).await;
    let counts = statement_counts(&admin, &db).await;

    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let calls = |function: &str| -> i64 {
        counts
            .iter()
            .filter(|(q, _)| q.contains(&format!(".{function}(")))
            .map(|(_, n)| n)
            .sum()
    };
    let expected = [
        ("enqueue_orchestrator_item", 1),
        ("fetch_orchestration_item", 2),
        ("ack_orchestration_item", 2),
        ("fetch_work_item", 1),
        // With worker prefetch (the default) the ack is this variant.
        ("ack_work_item_and_fetch", 1),
        ("read_history", 1),
    ];
    for (function, n) in expected {
        assert_eq!(calls(function), n, "{function}: {counts:#?}");
    }
    assert_eq!(
        total, 8,
        "statements other than the 8 provider calls were issued: {counts:#?}"
    );

    provider.pool().close().await;
    sqlx::query(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn each_provider_call_is_one_round_trip() {
    let (proxy, provider) = counted_provider("rtt").await;
    // The first use of each statement on a connection also prepares it.
    one_cycle(&provider, "warm-up", &mut |_| {}).await;

    let mut per_call: Vec<(&'static str, u64)> = Vec::new();
    proxy.reset();
    one_cycle(&provider, "measured", &mut |call| {
        per_call.push((call, proxy.round_trips()));
        proxy.reset();
    })
    .await;
    assert_eq!(per_call, ONE_EACH, "round trips per call");
    provider.cleanup_schema().await.unwrap();
}

/// The round trips of one cycle, per call, in the order of `one_cycle`.
const ONE_EACH: [(&str, u64); 8] = [
    ("enqueue_for_orchestrator", 1),
    ("fetch_orchestration_item", 1),
    ("ack_orchestration_item", 1),
    ("fetch_work_item", 1),
    ("ack_work_item", 1),
    ("fetch_orchestration_item", 1),
    ("ack_orchestration_item", 1),
    ("read", 1),
];

/// Behind a transaction pooler every call is one simple-query message with
/// literal arguments: one round trip from the very first call, since nothing
/// is prepared (the prepared form pays a Parse round trip per statement and
/// connection first).
#[tokio::test]
async fn each_provider_call_is_one_round_trip_in_pooler_mode() {
    let (proxy, provider) = counted_provider_with("rtt_pooler", Pooler::Transaction).await;
    for instance in ["first-use", "again"] {
        let mut per_call: Vec<(&'static str, u64)> = Vec::new();
        proxy.reset();
        one_cycle(&provider, instance, &mut |call| {
            per_call.push((call, proxy.round_trips()));
            proxy.reset();
        })
        .await;
        assert_eq!(per_call, ONE_EACH, "round trips per call ({instance})");
    }
    provider.cleanup_schema().await.unwrap();
}

/// With worker prefetch (the default) the runtime's worker loop, fetch →
/// ack → fetch, costs one round trip per activity less: the fetch after an
/// ack that found more work is answered from memory.
#[tokio::test]
async fn a_fetch_after_an_ack_that_leased_ahead_costs_no_round_trip() {
    let (proxy, provider) = counted_provider("rtt_prefetch").await;
    let lock = Duration::from_secs(30);
    let filter = TagFilter::default();
    for id in 1..=3 {
        provider
            .enqueue_for_worker(common::activity_item("prefetched", id))
            .await
            .unwrap();
    }
    // Warm: every statement prepared once on the one connection.
    let (_, token, _) = provider
        .fetch_work_item(lock, Duration::ZERO, None, &filter)
        .await
        .unwrap()
        .unwrap();
    provider.ack_work_item(&token, None).await.unwrap();

    let mut round_trips = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        proxy.reset();
        let (item, token, attempts) = provider
            .fetch_work_item(lock, Duration::ZERO, None, &filter)
            .await
            .unwrap()
            .expect("a leased-ahead item");
        round_trips.push(("fetch_work_item", proxy.round_trips()));
        assert_eq!(attempts, 1);
        if let WorkItem::ActivityExecute { id, .. } = item {
            ids.push(id);
        }
        proxy.reset();
        provider.ack_work_item(&token, None).await.unwrap();
        round_trips.push(("ack_work_item", proxy.round_trips()));
    }
    assert_eq!(ids, [2, 3], "FIFO order kept");
    assert_eq!(
        round_trips,
        [
            ("fetch_work_item", 0),
            ("ack_work_item", 1),
            ("fetch_work_item", 0),
            ("ack_work_item", 1),
        ]
    );
    provider.cleanup_schema().await.unwrap();
}

/// The runtime's worker slots fetch with different session owners. An ack
/// must lease ahead for the slot that acked, so each slot's next fetch is
/// free; leasing with another slot's arguments made the fetch release that
/// item and go to the database (2 extra round trips per activity; found
/// measuring at 20 ms, where it cost a third of the throughput).
#[tokio::test]
async fn each_slot_gets_what_its_own_ack_leased_ahead() {
    let (proxy, provider) = counted_provider("rtt_slots").await;
    let lock = Duration::from_secs(30);
    let filter = TagFilter::default();
    let slot = |owner: &str| duroxide::providers::SessionFetchConfig {
        owner_id: owner.to_string(),
        lock_timeout: Duration::from_secs(30),
    };
    let (a, b) = (slot("work-0"), slot("work-1"));
    for id in 1..=8 {
        provider
            .enqueue_for_worker(common::activity_item("slots", id))
            .await
            .unwrap();
    }
    // Both slots hold one activity (these fetches also prepare the statements).
    let (_, mut token_a, _) = provider
        .fetch_work_item(lock, Duration::ZERO, Some(&a), &filter)
        .await
        .unwrap()
        .unwrap();
    let (_, mut token_b, _) = provider
        .fetch_work_item(lock, Duration::ZERO, Some(&b), &filter)
        .await
        .unwrap()
        .unwrap();
    let mut fetch_round_trips = Vec::new();
    for _ in 0..3 {
        for (config, token) in [(&a, &mut token_a), (&b, &mut token_b)] {
            provider.ack_work_item(token, None).await.unwrap();
            proxy.reset();
            let (_, next, _) = provider
                .fetch_work_item(lock, Duration::ZERO, Some(config), &filter)
                .await
                .unwrap()
                .expect("more work");
            fetch_round_trips.push(proxy.round_trips());
            *token = next;
        }
    }
    assert_eq!(fetch_round_trips, [0, 0, 0, 0, 0, 0]);
    provider.cleanup_schema().await.unwrap();
}

#[test]
fn database_swap_in_url() {
    assert_eq!(
        with_database("postgres://u@h:1/postgres", "x"),
        "postgres://u@h:1/x"
    );
    assert_eq!(
        with_database("postgres://u@h/postgres?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
}
