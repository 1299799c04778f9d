//! Faults of real networks that end nothing: a partition (packets dropped,
//! no RST, then the network recovers) and connections a NAT or load
//! balancer forgot (silent for good while new ones work), injected by the
//! test kit's proxy between the provider and the shared server.
//!
//! Each wait on the network has a bound ([`PostgresConfig::with_silence_timeout`]
//! on top of the statement timeout; the listener's heartbeat): a call on a
//! silent connection fails within it as retryable and the next call works;
//! an ack whose answer was lost is applied once; a silent `LISTEN`
//! connection is replaced and wake-ups work again; and through duroxide's
//! Runtime every orchestration in flight across a 30-second partition, or
//! across forgotten connections, completes exactly once.

use duroxide_pg_testkit::harness as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, ProviderAdmin};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, EventKind, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};
use duroxide_pg::{PollMode, PostgresConfig, PostgresProvider};
use duroxide_pg_testkit::delay_proxy::{self, DelayProxy};

/// The statement timeout of the providers behind the proxy: with the
/// silence timeout, what a call waits at most for an answer.
const STATEMENT: Duration = Duration::from_secs(2);
const SILENCE: Duration = Duration::from_secs(1);
/// How much later than its bound a failing call may return on a busy
/// 2-core machine (scheduling, not the network).
const SLACK: Duration = Duration::from_secs(3);

/// A proxy in front of the test server and the server's URL through it.
async fn proxy() -> (DelayProxy, String) {
    let url = common::database_url();
    let upstream = delay_proxy::upstream_of(&url).await.unwrap();
    let proxy = DelayProxy::start(upstream, Duration::ZERO).await.unwrap();
    let through = delay_proxy::reroute_url(&url, proxy.local_addr()).unwrap();
    (proxy, through)
}

/// Polls `probe` until it yields (a bounded wait: 30 s).
async fn wait_for<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A configuration on `schema` through `url` with the test's bounds.
fn config(url: &str, schema: &str) -> PostgresConfig {
    PostgresConfig::new(url)
        .with_schema(schema)
        .with_statement_timeout(Some(STATEMENT))
        .with_silence_timeout(SILENCE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_silent_connection_fails_within_its_bound_and_the_next_call_works() {
    let (proxy, url) = proxy().await;
    let schema = common::fresh_schema_name("silent_call");
    let p = PostgresProvider::connect(
        config(&url, &schema)
            .with_poll_mode(PollMode::PollOnly)
            .with_min_connections(1)
            .with_max_connections(2),
    )
    .await
    .unwrap();
    p.get_queue_depths().await.unwrap();
    assert_eq!(p.pool_status().open, 1);

    proxy.forget_connections();
    let started = Instant::now();
    let e = p.get_queue_depths().await.unwrap_err();
    let took = started.elapsed();
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.message.contains("no answer within"), "{e:?}");
    let bound = STATEMENT + SILENCE;
    assert!(
        took >= bound - Duration::from_millis(50) && took < bound + SLACK,
        "failed after {took:?}, bound {bound:?}"
    );
    assert_eq!(
        p.pool_status().open,
        0,
        "the silent connection is discarded"
    );

    // New connections work (the network forgot only the old ones).
    let started = Instant::now();
    p.get_queue_depths().await.unwrap();
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    assert_eq!(p.pool_status().open, 1);
    p.cleanup_schema().await.unwrap();
}

/// A partition swallows an ack: the call fails within its bound, and the
/// request, held by the network, may still reach the server after it
/// recovers, as a retransmission would. Retried with the same lock token,
/// the turn is applied exactly once whichever arrives first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_whose_answer_was_lost_is_applied_once() {
    let (proxy, url) = proxy().await;
    let schema = common::fresh_schema_name("lost_ack");
    let p = PostgresProvider::connect(config(&url, &schema).with_poll_mode(PollMode::PollOnly))
        .await
        .unwrap();
    let (item, token, _) = common::enqueue_and_fetch(&p, common::start_item("i1", "Greet"))
        .await
        .expect("the start item");
    assert_eq!(item.instance, "i1");

    proxy.partition();
    let ack = || {
        p.ack_orchestration_item(
            &token,
            1,
            vec![common::started_event("i1", "Greet")],
            vec![],
            vec![],
            common::naming_metadata("Greet"),
            vec![],
        )
    };
    let started = Instant::now();
    let e = ack().await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    assert!(started.elapsed() < STATEMENT + SILENCE + SLACK);
    proxy.heal();
    // The retry either applies the turn or finds it applied by the held
    // request (the lease is gone: a permanent error); never both.
    if let Err(e) = ack().await {
        assert!(!e.is_retryable(), "{e:?}");
    }
    let history = wait_for(|| async {
        let h = p.read("i1").await.unwrap();
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(matches!(
        history[0].kind,
        EventKind::OrchestrationStarted { .. }
    ));
    p.cleanup_schema().await.unwrap();
}

/// A partition swallows worker acks sent together: the first ones go out
/// alone and get no answer; the rest, queued behind them as one batch, then
/// cannot open a connection. Every ack fails within its bound as
/// retryable. Retried after the network recovers, each completion is
/// enqueued exactly once, whether the retry or a held request got there
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_acks_whose_answer_was_lost_are_applied_once() {
    let (proxy, url) = proxy().await;
    let schema = common::fresh_schema_name("lost_acks");
    // The batch goes out once the lone acks have failed, and needs a new
    // connection, which the partition keeps from opening: it fails when the
    // pool gives up waiting for one.
    const ACQUIRE: Duration = Duration::from_secs(4);
    let p = PostgresProvider::connect(
        config(&url, &schema)
            .with_poll_mode(PollMode::PollOnly)
            .with_connect_timeout(Duration::from_secs(2))
            .with_acquire_timeout(ACQUIRE),
    )
    .await
    .unwrap();
    const ACKS: u64 = 8;
    let mut tokens = Vec::new();
    for id in 0..ACKS {
        p.enqueue_for_worker(common::activity_item("i1", id))
            .await
            .unwrap();
        let (_, token, _) = p
            .fetch_work_item(
                Duration::from_secs(60),
                Duration::ZERO,
                None,
                &duroxide::providers::TagFilter::default(),
            )
            .await
            .unwrap()
            .expect("an activity");
        tokens.push((token, id));
    }
    let completion = |id: u64| duroxide::providers::WorkItem::ActivityCompleted {
        instance: "i1".into(),
        execution_id: 1,
        id,
        result: format!("r{id}"),
    };

    proxy.partition();
    let started = Instant::now();
    let results = futures_util::future::join_all(
        tokens
            .iter()
            .map(|(t, id)| p.ack_work_item(t, Some(completion(*id)))),
    )
    .await;
    let took = started.elapsed();
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
    }
    // The lone acks wait for their answer, then the batch behind them for
    // a connection.
    assert!(took < STATEMENT + SILENCE + ACQUIRE + SLACK, "{took:?}");
    proxy.heal();
    for (t, id) in &tokens {
        if let Err(e) = p.ack_work_item(t, Some(completion(*id))).await {
            assert!(!e.is_retryable(), "{e:?}");
        }
    }
    let mut ids: Vec<u64> = wait_for(|| async {
        let admin = sqlx::PgPool::connect(&common::database_url()).await.ok()?;
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT work_item FROM \"{schema}\".orchestrator_queue"
        ))
        .fetch_all(&admin)
        .await
        .ok()?;
        admin.close().await;
        (rows.len() >= tokens.len()).then(|| {
            rows.iter()
                .map(|w| match serde_json::from_str(w).unwrap() {
                    duroxide::providers::WorkItem::ActivityCompleted { id, .. } => id,
                    other => panic!("{other:?}"),
                })
                .collect()
        })
    })
    .await;
    ids.sort_unstable();
    assert_eq!(ids, (0..ACKS).collect::<Vec<_>>(), "each completion once");
    p.cleanup_schema().await.unwrap();
}

/// The `LISTEN` connection goes silent (with every other connection of the
/// provider). Within half the fallback poll the provider notices (its
/// heartbeat is not heard) and listens on a new connection: a waiting
/// fetch is woken by the next hint again, long before the fallback poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_listener_is_replaced_and_wake_ups_work_again() {
    let (proxy, url) = proxy().await;
    let schema = common::fresh_schema_name("silent_listener");
    let fallback = Duration::from_secs(20);
    let p = PostgresProvider::connect(
        config(&url, &schema)
            .with_poll_mode(PollMode::LongPoll)
            .with_fallback_poll(fallback),
    )
    .await
    .unwrap();
    // Another process, on a network that works.
    let other =
        PostgresProvider::connect(PostgresConfig::new(common::database_url()).with_schema(&schema))
            .await
            .unwrap();

    proxy.forget_connections();
    let connections = proxy.connections();
    // The heartbeat goes out after a quarter of the fallback without a hint,
    // the listener is replaced after half of it.
    let replaced = Instant::now() + fallback / 2 + SLACK;
    while proxy.connections() < connections + 1 {
        assert!(
            Instant::now() < replaced,
            "no new connection: the listener was not replaced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the replacement subscribe before the hint is sent.
    tokio::time::sleep_until(replaced.into()).await;

    let waiting = tokio::spawn(async move {
        let got = p
            .fetch_orchestration_item(Duration::from_secs(30), Duration::from_secs(8), None)
            .await;
        (got, Instant::now(), p)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    other
        .enqueue_for_orchestrator(common::start_item("woken", "Greet"), None)
        .await
        .unwrap();
    let (got, at, p) = waiting.await.unwrap();
    let (item, _, _) = got.unwrap().expect("the waiting fetch got the item");
    assert_eq!(item.instance, "woken");
    assert!(
        at.duration_since(sent) < Duration::from_secs(2),
        "woken {:?} after the hint (fallback {fallback:?})",
        at.duration_since(sent)
    );
    drop(p);
    other.cleanup_schema().await.unwrap();
}

/// The server's end of every provider connection probes an idle client and
/// gives up on one that stopped acknowledging (start-up options: no round
/// trip): NAT mappings stay alive, backends of vanished clients end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_side_keepalives_are_set_on_provider_connections() {
    let p = common::fresh_provider("keepalive").await;
    for (setting, expected) in [
        ("tcp_keepalives_idle", "60"),
        ("tcp_keepalives_interval", "10"),
        ("tcp_keepalives_count", "6"),
        ("tcp_user_timeout", "60000"),
    ] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(p.pool())
            .await
            .unwrap();
        assert_eq!(value, expected, "{setting}");
    }
    p.cleanup_schema().await.unwrap();
}

// ------------------------------------------------------------ the runtime

/// "Chain": three 100 ms activities and a 200 ms timer; output `chain-<n>`.
/// Counts activity executions.
fn registries(runs: Arc<AtomicUsize>) -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register("Step", move |_ctx: ActivityContext, input: String| {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
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

fn runtime_options() -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        dispatcher_long_poll_timeout: Duration::from_secs(5),
        orchestration_concurrency: 4,
        worker_concurrency: 4,
        orchestrator_lock_timeout: Duration::from_secs(5),
        worker_lock_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// What the runtime under test runs on and what the test watches it by.
struct World {
    proxy: DelayProxy,
    runtime: Arc<Runtime>,
    /// On the same schema through a network that works.
    observer: Arc<PostgresProvider>,
    client: Client,
    runs: Arc<AtomicUsize>,
}

impl World {
    async fn start(prefix: &str, chains: usize) -> Self {
        let (proxy, url) = proxy().await;
        let schema = common::fresh_schema_name(prefix);
        let provider = Arc::new(
            PostgresProvider::connect(config(&url, &schema))
                .await
                .unwrap(),
        );
        let observer = Arc::new(
            PostgresProvider::connect(
                PostgresConfig::new(common::database_url()).with_schema(&schema),
            )
            .await
            .unwrap(),
        );
        let runs = Arc::new(AtomicUsize::new(0));
        let (activities, orchestrations) = registries(Arc::clone(&runs));
        let runtime =
            Runtime::start_with_options(provider, activities, orchestrations, runtime_options())
                .await;
        let client = Client::new(observer.clone());
        for i in 0..chains {
            client
                .start_orchestration(&format!("chain-{i}"), "Chain", i.to_string())
                .await
                .unwrap();
        }
        Self {
            proxy,
            runtime,
            observer,
            client,
            runs,
        }
    }

    /// Waits until some activities ran: orchestrations are in flight.
    async fn until_in_flight(&self) {
        wait_for(|| async { (self.runs.load(Ordering::SeqCst) >= 4).then_some(()) }).await;
    }

    /// Every chain completed with its output, exactly once: one terminal
    /// event, event ids without gap or repeat.
    async fn assert_all_completed_once(&self, chains: usize, within: Duration) {
        let deadline = Instant::now() + within;
        for i in 0..chains {
            let id = format!("chain-{i}");
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.wait_for_orchestration(&id, left).await {
                Ok(OrchestrationStatus::Completed { output, .. }) => {
                    assert_eq!(output, format!("chain-{i}"))
                }
                other => panic!("{id}: {other:?}"),
            }
            let history = self.observer.read(&id).await.unwrap();
            for (n, e) in history.iter().enumerate() {
                assert_eq!(e.event_id, n as u64 + 1, "{id}: event ids");
            }
            let terminal: Vec<_> = history.iter().filter(|e| e.is_terminal()).collect();
            assert_eq!(terminal.len(), 1, "{id}: one terminal event");
            assert!(matches!(
                terminal[0].kind,
                EventKind::OrchestrationCompleted { .. }
            ));
        }
    }

    async fn finish(self) {
        self.runtime.clone().shutdown(None).await;
        drop(self.proxy);
        self.observer.cleanup_schema().await.unwrap();
    }
}

/// Every connection of the runtime's provider, open and new, silent for 30
/// seconds, then the network recovers: every orchestration in flight
/// completes, none fails, and the runtime is back to work within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrations_in_flight_survive_a_30_second_partition() {
    const CHAINS: usize = 12;
    let world = World::start("partition_rt", CHAINS).await;
    world.until_in_flight().await;
    world.proxy.partition();
    tokio::time::sleep(Duration::from_secs(30)).await;
    world.proxy.heal();
    let healed = Instant::now();
    world
        .assert_all_completed_once(CHAINS, Duration::from_secs(40))
        .await;
    eprintln!(
        "all {CHAINS} completed {:?} after the network recovered",
        healed.elapsed()
    );
    // The runtime's slots are free: a new orchestration runs at once.
    let started = Instant::now();
    world
        .client
        .start_orchestration("after", "Chain", "after".to_string())
        .await
        .unwrap();
    match world
        .client
        .wait_for_orchestration("after", Duration::from_secs(10))
        .await
    {
        Ok(OrchestrationStatus::Completed { output, .. }) => assert_eq!(output, "chain-after"),
        other => panic!("after: {other:?}"),
    }
    eprintln!("a new orchestration took {:?}", started.elapsed());
    world.finish().await;
}

/// Every connection open now is forgotten by the network (new ones work),
/// as the NAT in front of a managed server does after a few idle minutes:
/// the calls waiting on them fail within their bound, the provider opens new
/// connections and every orchestration completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrations_in_flight_survive_forgotten_connections() {
    const CHAINS: usize = 12;
    let world = World::start("forgotten_rt", CHAINS).await;
    world.until_in_flight().await;
    world.proxy.forget_connections();
    let forgotten = Instant::now();
    world
        .assert_all_completed_once(CHAINS, Duration::from_secs(40))
        .await;
    eprintln!(
        "all {CHAINS} completed {:?} after the connections were forgotten",
        forgotten.elapsed()
    );
    world.finish().await;
}

/// As users combine options: two runtimes on one store, the first (direct)
/// running the orchestrations and untagged activities, the second (through
/// the proxy) serving only tag `gpu`, on sessions; the untagged activity
/// fails once and is retried by its policy. The second runtime's network
/// forgets every connection while tagged session work is in flight: every
/// orchestration completes once, every tagged activity ran on the `gpu`
/// runtime, none failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_sessions_and_retries_across_two_runtimes_survive_forgotten_connections() {
    use duroxide::RetryPolicy;
    use duroxide::providers::TagFilter;
    use std::collections::HashSet;
    use std::sync::Mutex;

    const N: usize = 6;
    let (proxy, url) = proxy().await;
    let schema = common::fresh_schema_name("forgotten_tags");
    let direct = Arc::new(
        PostgresProvider::connect(config(&common::database_url(), &schema))
            .await
            .unwrap(),
    );
    let proxied = Arc::new(
        PostgresProvider::connect(config(&url, &schema))
            .await
            .unwrap(),
    );

    // (input, runtime) of every activity run; inputs that already failed once.
    let ran: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let failed_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let activities = |runtime: &'static str| {
        let (ran, failed_once) = (ran.clone(), failed_once.clone());
        ActivityRegistry::builder()
            .register("Work", move |_ctx: ActivityContext, input: String| {
                let (ran, failed_once) = (ran.clone(), failed_once.clone());
                async move {
                    ran.lock().unwrap().push((input.clone(), runtime));
                    if input.ends_with("-flaky")
                        && failed_once.lock().unwrap().insert(input.clone())
                    {
                        return Err(format!("{input}: first attempt fails"));
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok(input)
                }
            })
            .build()
    };
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Mixed",
            |ctx: OrchestrationContext, input: String| async move {
                let mut out = Vec::new();
                for step in 0..3 {
                    let plain = ctx
                        .schedule_activity_with_retry(
                            "Work",
                            format!("{input}-{step}-flaky"),
                            RetryPolicy::new(3).with_backoff(duroxide::BackoffStrategy::None),
                        )
                        .await?;
                    let gpu = ctx
                        .schedule_activity_on_session(
                            "Work",
                            format!("{input}-{step}-gpu"),
                            format!("s-{input}"),
                        )
                        .with_tag("gpu")
                        .await?;
                    out.push(format!("{plain}+{gpu}"));
                }
                Ok(out.join(","))
            },
        )
        .build();
    let plain_rt = Runtime::start_with_options(
        direct.clone(),
        activities("plain"),
        orchestrations,
        runtime_options(),
    )
    .await;
    let gpu_rt = Runtime::start_with_options(
        proxied.clone(),
        activities("gpu"),
        OrchestrationRegistry::builder().build(),
        RuntimeOptions {
            worker_tag_filter: TagFilter::tags(["gpu"]),
            orchestration_concurrency: 1,
            ..runtime_options()
        },
    )
    .await;
    let client = Client::new(direct.clone());
    for i in 0..N {
        client
            .start_orchestration(&format!("mixed-{i}"), "Mixed", i.to_string())
            .await
            .unwrap();
    }
    wait_for(|| async {
        let gpu_runs = ran
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| *r == "gpu")
            .count();
        (gpu_runs >= 2).then_some(())
    })
    .await;
    proxy.forget_connections();
    let forgotten = Instant::now();
    for i in 0..N {
        let id = format!("mixed-{i}");
        let expected = (0..3)
            .map(|step| format!("{i}-{step}-flaky+{i}-{step}-gpu"))
            .collect::<Vec<_>>()
            .join(",");
        match client
            .wait_for_orchestration(&id, Duration::from_secs(40))
            .await
        {
            Ok(OrchestrationStatus::Completed { output, .. }) => assert_eq!(output, expected),
            other => panic!("{id}: {other:?}"),
        }
        let history = direct.read(&id).await.unwrap();
        assert_eq!(
            history.iter().filter(|e| e.is_terminal()).count(),
            1,
            "{id}"
        );
        for (n, e) in history.iter().enumerate() {
            assert_eq!(e.event_id, n as u64 + 1, "{id}: event ids");
        }
    }
    eprintln!(
        "all {N} completed {:?} after the gpu runtime's connections were forgotten",
        forgotten.elapsed()
    );
    let ran = ran.lock().unwrap().clone();
    for (input, runtime) in &ran {
        let expected = if input.ends_with("-gpu") {
            "gpu"
        } else {
            "plain"
        };
        assert_eq!(*runtime, expected, "{input} ran on the {runtime} runtime");
    }
    // Each flaky activity ran twice (its retry), each tagged one at least once.
    for i in 0..N {
        for step in 0..3 {
            let flaky = format!("{i}-{step}-flaky");
            assert_eq!(
                ran.iter().filter(|(x, _)| *x == flaky).count(),
                2,
                "{flaky}"
            );
            let gpu = format!("{i}-{step}-gpu");
            assert!(ran.iter().any(|(x, _)| *x == gpu), "{gpu} never ran");
        }
    }
    gpu_rt.shutdown(None).await;
    plain_rt.shutdown(None).await;
    drop(proxy);
    direct.cleanup_schema().await.unwrap();
}
