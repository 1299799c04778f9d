//! Server outages on a private cluster (restarting the shared one would
//! disturb every other test): while a runtime works, the server is stopped
//! and started again (calls fail as retryable meanwhile), restarted with
//! `pg_ctl restart -m fast`, and every provider connection is killed with
//! `pg_terminate_backend`. Errors surface as retryable, the pool reconnects,
//! the wake-up listener re-subscribes, and every orchestration completes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, ProviderAdmin, TagFilter};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, ClientError, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};
use duroxide_pg::{PostgresConfig, PostgresProvider};
use duroxide_pg_testkit::local_cluster::PrivateCluster;

/// "Chain": three 100 ms activities and a 200 ms timer; output `chain-<n>`.
fn registries(done: Arc<AtomicUsize>) -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register("Step", move |_ctx: ActivityContext, input: String| {
            let done = Arc::clone(&done);
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(input)
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Chain", |ctx: OrchestrationContext, n: String| async move {
            for step in 0..3 {
                ctx.schedule_activity("Step", format!("{n}.{step}")).await?;
            }
            ctx.schedule_timer(Duration::from_millis(200)).await;
            Ok(format!("chain-{n}"))
        })
        .build();
    (activities, orchestrations)
}

async fn start_chains(client: &Client, range: std::ops::Range<usize>) {
    for i in range {
        client
            .start_orchestration(&format!("chain-{i}"), "Chain", i.to_string())
            .await
            .unwrap();
    }
}

/// Waits for each chain's completion. A status read that fails with a
/// retryable error (its connection was just killed) is retried, as any
/// caller of a retryable error would; anything else fails the test.
async fn wait_chains(client: &Client, range: std::ops::Range<usize>) {
    for i in range {
        let id = format!("chain-{i}");
        loop {
            match client
                .wait_for_orchestration(&id, Duration::from_secs(120))
                .await
            {
                Ok(OrchestrationStatus::Completed { output, .. }) => {
                    assert_eq!(output, format!("chain-{i}"));
                    break;
                }
                Err(ClientError::Provider(e)) if e.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!("{id}: {other:?}"),
            }
        }
    }
}

async fn wait_for(counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while counter.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_killed_connections_lose_nothing() {
    let cluster = PrivateCluster::start().expect("private cluster");
    let url = cluster.url();
    let provider = Arc::new(
        PostgresProvider::connect(
            PostgresConfig::new(&url)
                .with_schema("outage")
                // A call waits this long for the server to come back before
                // it fails (retryable): short, so the outage below is seen.
                .with_acquire_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap(),
    );
    let done = Arc::new(AtomicUsize::new(0));
    let (activities, orchestrations) = registries(Arc::clone(&done));
    let options = RuntimeOptions {
        orchestration_concurrency: 2,
        worker_concurrency: 2,
        // Long waits: only wake-ups (not the runtime's re-polls) keep it moving.
        dispatcher_long_poll_timeout: Duration::from_secs(30),
        orchestrator_lock_timeout: Duration::from_secs(5),
        worker_lock_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let rt =
        Runtime::start_with_options(provider.clone(), activities, orchestrations, options).await;
    let client = Client::new(provider.clone());

    // 1. The server goes down mid-run and comes back.
    start_chains(&client, 0..10).await;
    wait_for(&done, 5).await;
    cluster.stop().unwrap();
    let read = provider.read("chain-0").await.unwrap_err();
    assert!(read.is_retryable(), "{read:?}");
    let fetch = provider
        .fetch_work_item(
            Duration::from_secs(5),
            Duration::ZERO,
            None,
            &TagFilter::default(),
        )
        .await
        .unwrap_err();
    assert!(fetch.is_retryable(), "{fetch:?}");
    cluster.start_again().unwrap();
    wait_chains(&client, 0..10).await;

    // 1b. `pg_ctl restart -m fast` mid-run.
    let before = done.load(Ordering::SeqCst);
    start_chains(&client, 21..31).await;
    wait_for(&done, before + 5).await;
    cluster.restart().unwrap();
    wait_chains(&client, 21..31).await;

    // 2. Every provider connection (listener included) is killed mid-run.
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let before = done.load(Ordering::SeqCst);
    start_chains(&client, 10..20).await;
    wait_for(&done, before + 5).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'duroxide-pg' AND pid <> pg_backend_pid()) k",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(killed >= 2, "killed {killed} connections");
    wait_chains(&client, 10..20).await;

    // 3. Wake-ups work again: one more chain (six hops) finishes well before
    // a single fallback poll (10 s) would have passed, which only a
    // re-subscribed listener makes possible.
    let started = Instant::now();
    start_chains(&client, 20..21).await;
    wait_chains(&client, 20..21).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "a chain took {took:?}: wake-ups are not arriving"
    );
    eprintln!("after the outages, a six-hop chain took {took:?}");

    assert_eq!(provider.list_instances().await.unwrap().len(), 31);
    rt.shutdown(None).await;
    provider.close().await;
    admin.close().await;
}

/// A call made while the server is down (restarting, in crash recovery, a
/// failover under way) waits for it, within the acquire timeout, instead of
/// failing at once: duroxide 0.1.32 retries a failed ack five times within
/// ~310 ms and then records the orchestration as failed, so failing fast
/// turned a one-second restart into failed orchestrations. Failed before
/// the change (the read returned "connection refused" at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_during_a_short_outage_waits_for_the_server() {
    let cluster = PrivateCluster::start().expect("private cluster");
    let provider = Arc::new(
        PostgresProvider::connect(
            PostgresConfig::new(cluster.url())
                .with_schema("short_outage")
                .with_acquire_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap(),
    );
    // The server goes down: every open connection is gone. The first call
    // meets a dead idle connection and fails (retryable; what it sent may
    // have arrived, so it is not repeated), and the pool drops the others.
    cluster.stop().unwrap();
    let stale = provider
        .read("nobody")
        .await
        .expect_err("a dead connection");
    assert!(stale.is_retryable(), "{stale:?}");
    // The next call needs a new connection: it waits for the server.
    let reader = {
        let provider = provider.clone();
        tokio::spawn(async move { provider.read("nobody").await })
    };
    // The call is still waiting a moment later; then the server comes back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !reader.is_finished(),
        "the call gave up while the server was down"
    );
    cluster.start_again().unwrap();
    let events = reader
        .await
        .unwrap()
        .expect("the call got through once the server was back");
    assert!(events.is_empty());

    // A server that stays down: the call fails, retryable, after its
    // acquire timeout, not later.
    let quick = Arc::new(
        PostgresProvider::connect(
            PostgresConfig::new(cluster.url())
                .with_schema("short_outage")
                .with_acquire_timeout(Duration::from_millis(800)),
        )
        .await
        .unwrap(),
    );
    cluster.stop().unwrap();
    let _ = quick.read("nobody").await; // the dead idle connection
    let started = Instant::now();
    let err = quick.read("nobody").await.expect_err("server down");
    assert!(err.is_retryable(), "{err:?}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "waited {took:?} past its acquire timeout"
    );
    cluster.start_again().unwrap();
    quick.close().await;
    provider.close().await;
}
