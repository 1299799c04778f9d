//! The database's own failures, on private durable clusters made from the
//! local binaries (`fsync=on`): a primary killed with `kill -9` and its
//! streaming standby promoted, with synchronous and with asynchronous
//! replication, and the whole server killed and crash-recovered. A runtime
//! works through a multi-host URL the whole time (the standby listed first,
//! `target_session_attrs=read-write`). Also: which server each
//! `target_session_attrs` value picks. Results and rerun commands:
//! RELIABILITY.md, "Failover and crashes".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, ProviderAdmin};
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, ClientError, EventKind, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};
use duroxide_pg::{PostgresConfig, PostgresProvider};
use duroxide_pg_testkit::local_cluster::PrivateCluster;

/// Orchestrations in flight when the server fails.
const INSTANCES: usize = 200;

/// Orchestrations started just before the failure, after `prepare`.
const LATE: usize = 20;

/// Every instance a run starts: the jobs, the probe started after the
/// failure (`job-200`), the late ones.
fn all_ids() -> impl Iterator<Item = usize> {
    0..=INSTANCES + LATE
}

/// `postgres://postgres@127.0.0.1:p1,127.0.0.1:p2/postgres[?target_session_attrs=..]`.
fn url_of(ports: &[u16], attrs: Option<&str>) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let query = attrs.map_or(String::new(), |a| format!("?target_session_attrs={a}"));
    format!("postgres://postgres@{}/postgres{query}", hosts.join(","))
}

/// What each activity input was executed how often (activities may run
/// again after a failure: at least once, never lost).
type Runs = Arc<Mutex<HashMap<String, usize>>>;

/// "Job": two activities in sequence; output `job-<n>`.
fn registries(runs: Runs) -> (ActivityRegistry, OrchestrationRegistry) {
    let activities = ActivityRegistry::builder()
        .register("Work", move |_ctx: ActivityContext, input: String| {
            let runs = Arc::clone(&runs);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                *runs.lock().unwrap().entry(input.clone()).or_default() += 1;
                Ok(input)
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Job", |ctx: OrchestrationContext, n: String| async move {
            for step in 0..2 {
                ctx.schedule_activity("Work", format!("{n}.{step}")).await?;
            }
            Ok(format!("job-{n}"))
        })
        .build();
    (activities, orchestrations)
}

fn id(i: usize) -> String {
    format!("job-{i}")
}

/// What a run through a failure showed.
#[derive(Debug, Default)]
struct Outcome {
    /// From the failure until a server took writes again (kill, promote or
    /// crash recovery, as the test's `fail` does them).
    server_back_after: Duration,
    /// From the failure until an orchestration completed again.
    recovered_after: Duration,
    /// Orchestrations seen completed before the failure.
    completed_before: usize,
    /// Of those, how many were not completed on the new server (their
    /// completion was lost with the old one).
    completions_lost: usize,
    /// Started before the failure but unknown afterwards (the start was
    /// lost); started again by the test, as their caller would.
    starts_lost: usize,
    /// Activity executions beyond one per activity.
    activity_reruns: usize,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server back after {:.2} s, work flowed again {:.2} s after the failure; \
             {} of {} completed before it, \
             {} of those lost; {} starts lost; {} activity re-runs",
            self.server_back_after.as_secs_f64(),
            self.recovered_after.as_secs_f64(),
            self.completed_before,
            INSTANCES + LATE,
            self.completions_lost,
            self.starts_lost,
            self.activity_reruns
        )
    }
}

/// Starts [`INSTANCES`] jobs through `url`, lets a quarter finish, calls
/// `prepare`, starts [`LATE`] more, notes what has completed, calls `fail`
/// (which breaks the server and brings a new one up), then waits for every
/// job and checks the store.
async fn run_through(url: &str, prepare: impl FnOnce(), fail: impl FnOnce()) -> Outcome {
    let provider = Arc::new(
        PostgresProvider::connect(
            PostgresConfig::new(url)
                .with_schema("failover")
                .with_connect_timeout(Duration::from_secs(2))
                // Wake-ups only: if the listener did not follow the new
                // primary, waiting fetches would sleep for 10 minutes and
                // the jobs would miss their deadline.
                .with_fallback_poll(Duration::from_secs(600)),
        )
        .await
        .expect("provider through the multi-host URL"),
    );
    let runs: Runs = Arc::default();
    let (activities, orchestrations) = registries(Arc::clone(&runs));
    let options = RuntimeOptions {
        orchestration_concurrency: 2,
        worker_concurrency: 2,
        dispatcher_long_poll_timeout: Duration::from_secs(600),
        orchestrator_lock_timeout: Duration::from_secs(5),
        worker_lock_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let rt =
        Runtime::start_with_options(provider.clone(), activities, orchestrations, options).await;
    let client = Client::new(provider.clone());
    for i in 0..INSTANCES {
        client
            .start_orchestration(&id(i), "Job", i.to_string())
            .await
            .unwrap();
    }
    // A quarter done, the rest in flight.
    let deadline = Instant::now() + Duration::from_secs(120);
    let completed = |p: Arc<PostgresProvider>| async move {
        p.list_instances_by_status("Completed")
            .await
            .map(|v| v.len())
    };
    while completed(provider.clone()).await.unwrap() < INSTANCES / 4 {
        assert!(Instant::now() < deadline, "no progress before the failure");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    prepare();
    for i in INSTANCES + 1..=INSTANCES + LATE {
        client
            .start_orchestration(&id(i), "Job", i.to_string())
            .await
            .unwrap();
    }
    let mut acknowledged = HashMap::new();
    for i in (0..INSTANCES).chain(INSTANCES + 1..=INSTANCES + LATE) {
        if let OrchestrationStatus::Completed { output, .. } =
            client.get_orchestration_status(&id(i)).await.unwrap()
        {
            acknowledged.insert(id(i), output);
        }
    }

    let failed_at = Instant::now();
    fail();
    let server_back_after = failed_at.elapsed();
    // Until work flows again: a job started after the failure has completed
    // (errors meanwhile are the failover's: retryable).
    let probe = id(INSTANCES);
    loop {
        match client
            .start_orchestration(&probe, "Job", INSTANCES.to_string())
            .await
        {
            Ok(()) => break,
            Err(ClientError::Provider(e)) if e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("start after the failure: {other:?}"),
        }
        assert!(
            failed_at.elapsed() < Duration::from_secs(120),
            "no recovery"
        );
    }
    wait_completed(&client, &probe).await;
    let recovered_after = failed_at.elapsed();

    let mut outcome = Outcome {
        recovered_after,
        server_back_after,
        completed_before: acknowledged.len(),
        ..Default::default()
    };
    for i in all_ids() {
        if !stored(&provider, &id(i)).await {
            // Lost with the old server: its caller starts it again.
            outcome.starts_lost += 1;
            client
                .start_orchestration(&id(i), "Job", i.to_string())
                .await
                .unwrap();
        }
        wait_completed(&client, &id(i)).await;
    }
    // The wake-up listener followed the new primary: a LISTEN session of
    // the provider runs there. (Without it every waiting fetch would only
    // be woken by the listener's failed reconnections, every few seconds.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name = 'duroxide-pg' AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(provider.pool())
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wake-up listener did not reconnect to the new primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Completions seen before the failure that the new server did not have
    // (they completed again since): only asynchronous replication may lose
    // them. A completion is never replaced by another output.
    for (id, output) in &acknowledged {
        let history = provider.read(id).await.unwrap();
        let completions: Vec<&str> = history
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::OrchestrationCompleted { output } => Some(output.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(completions, vec![output.as_str()], "{id}");
    }
    // Every history: each activity scheduled once and completed once, one
    // completion of the orchestration.
    for i in all_ids() {
        let history = provider.read(&id(i)).await.unwrap();
        let count = |f: fn(&EventKind) -> bool| history.iter().filter(|e| f(&e.kind)).count();
        assert_eq!(
            count(|k| matches!(k, EventKind::ActivityScheduled { .. })),
            2,
            "{}: {history:?}",
            id(i)
        );
        assert_eq!(
            count(|k| matches!(k, EventKind::ActivityCompleted { .. })),
            2,
            "{}",
            id(i)
        );
        assert_eq!(
            count(|k| matches!(k, EventKind::OrchestrationCompleted { .. })),
            1,
            "{}",
            id(i)
        );
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 2 * all_ids().count(), "every activity ran");
    outcome.activity_reruns = runs.values().map(|n| n - 1).sum();
    outcome.completions_lost = acknowledged
        .keys()
        .filter(|id| {
            // Lost completions ran again: their activities show extra runs.
            let n: usize = id.trim_start_matches("job-").parse().unwrap();
            (0..2).any(|s| runs.get(&format!("{n}.{s}")).is_some_and(|r| *r > 1))
        })
        .count();
    rt.shutdown(None).await;
    provider.close().await;
    outcome
}

/// Waits until `id` has completed with output `id`, retrying retryable
/// errors (the failover's).
async fn wait_completed(client: &Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match client
            .wait_for_orchestration(id, Duration::from_secs(120))
            .await
        {
            Ok(OrchestrationStatus::Completed { output, .. }) => {
                assert_eq!(output, id);
                return;
            }
            Err(ClientError::Provider(e)) if e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{id}: {other:?}"),
        }
        assert!(Instant::now() < deadline, "{id} did not complete");
    }
}

/// Whether the store knows `id` at all: an instance row, or a message (its
/// start) in the orchestrator queue. A start acknowledged by a server whose
/// last transactions the new primary never received leaves neither.
async fn stored(provider: &PostgresProvider, id: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM failover.instances WHERE instance_id = $1)
             OR EXISTS (SELECT 1 FROM failover.orchestrator_queue WHERE instance_id = $1)",
    )
    .bind(id)
    .fetch_one(provider.pool())
    .await
    .unwrap()
}

/// Synchronous replication: the primary is killed (`kill -9`) with 150
/// jobs in flight and the standby promoted. The provider, given the standby
/// first in its URL, finds the new primary by itself; every job completes
/// exactly once and every completion acknowledged before the failure is
/// there. Acceptance 2 of the failover issue: with the standby listed
/// first, orchestrations run on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_synchronous_standby_loses_nothing() {
    let primary = PrivateCluster::start_durable().expect("primary");
    let standby = PrivateCluster::standby_of(&primary, true).expect("synchronous standby");
    let url = url_of(&[standby.port(), primary.port()], Some("read-write"));
    let outcome = run_through(
        &url,
        || {},
        || {
            primary.kill_9().expect("kill -9 the primary");
            standby.promote().expect("promote the standby");
        },
    )
    .await;
    eprintln!("synchronous failover: {outcome}");
    assert_eq!(outcome.starts_lost, 0, "{outcome:?}");
    assert_eq!(outcome.completions_lost, 0, "{outcome:?}");
}

/// Asynchronous replication: the same failover may lose what the standby
/// had not received. The store converges: every job completes (lost starts
/// started again by their caller), histories stay whole, activities may run
/// again. What was lost is printed (RELIABILITY.md records it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_an_asynchronous_standby_converges() {
    let primary = PrivateCluster::start_durable().expect("primary");
    let standby = PrivateCluster::standby_of(&primary, false).expect("asynchronous standby");
    let url = url_of(&[standby.port(), primary.port()], None);
    let outcome = run_through(
        &url,
        || {
            // The standby falls behind: what the primary commits from here
            // on never reaches it.
            standby.pause_replication().expect("pause the walreceiver");
            std::thread::sleep(Duration::from_millis(500));
        },
        || {
            primary.kill_9().expect("kill -9 the primary");
            standby
                .drop_paused_replication()
                .expect("drop what the standby had not received");
            standby.promote().expect("promote the standby");
        },
    )
    .await;
    eprintln!("asynchronous failover: {outcome}");
    // What the primary acknowledged while the standby lagged is gone: the
    // late starts (and completions of that time) were lost, and the store
    // converged anyway (checked above).
    assert!(
        outcome.starts_lost > 0 || outcome.completions_lost > 0,
        "nothing was lost, so the test did not test a lagging standby: {outcome}"
    );
}

/// The whole server is killed (`kill -9` of every process, `fsync=on`) in
/// the middle of a run and started again (crash recovery): nothing
/// acknowledged is lost, every job completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_the_whole_server_loses_nothing() {
    let cluster = PrivateCluster::start_durable().expect("durable cluster");
    let url = cluster.url();
    let outcome = run_through(
        &url,
        || {},
        || {
            cluster.kill_9().expect("kill -9 the server");
            cluster.start_again().expect("crash recovery");
        },
    )
    .await;
    eprintln!("crash and recovery: {outcome}");
    assert_eq!(outcome.starts_lost, 0, "{outcome:?}");
    assert_eq!(outcome.completions_lost, 0, "{outcome:?}");
}

/// Which server `PostgresConfig::open_pool` reaches for each
/// `target_session_attrs` value, the hosts in either order, and what a URL
/// whose hosts cannot satisfy it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_target_session_attrs_value_picks_its_server() {
    let primary = PrivateCluster::start().expect("primary");
    let standby = PrivateCluster::standby_of(&primary, false).expect("standby");
    let (p, s) = (primary.port(), standby.port());
    let on = |url: String| async move {
        let pool = PostgresConfig::new(&url)
            .with_schema("attrs")
            .open_pool()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        u16::try_from(port).unwrap()
    };
    let cases: [(&[u16], Option<&str>, u16); 14] = [
        (&[s, p], Some("any"), s),
        (&[p, s], Some("any"), p),
        (&[s, p], Some("read-write"), p),
        (&[p, s], Some("read-write"), p),
        (&[s, p], Some("primary"), p),
        (&[p, s], Some("read-only"), s),
        (&[s, p], Some("read-only"), s),
        (&[p, s], Some("standby"), s),
        (&[p, s], Some("prefer-standby"), s),
        (&[s, p], Some("prefer-standby"), s),
        (&[p], Some("prefer-standby"), p),
        // The default for several hosts is read-write; for one host, any.
        (&[s, p], None, p),
        (&[s], None, s),
        // A host that refuses connections is passed over.
        (&[free_port(), p], None, p),
    ];
    for (ports, attrs, expected) in cases {
        let url = url_of(ports, attrs);
        assert_eq!(on(url.clone()).await, expected, "{url}");
    }

    // Nothing suitable: the error names every host and what it was.
    let url = url_of(&[s, free_port()], Some("read-write"));
    let err = PostgresConfig::new(&url)
        .with_schema("attrs")
        .open_pool()
        .await
        .expect_err("no primary listed")
        .to_string();
    assert!(err.contains("no host gave a read-write session"), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{s}: a standby (in recovery)")),
        "{err}"
    );
    assert!(
        err.contains(&format!("127.0.0.1:{}", url_port(&url, 1))),
        "{err}"
    );

    // A provider on the standby alone refuses to start on a read-only server
    // when asked for read-write, before migrating anything.
    let err = PostgresProvider::connect(
        PostgresConfig::new(url_of(&[s], Some("read-write"))).with_schema("attrs"),
    )
    .await
    .expect_err("standby only")
    .to_string();
    assert!(err.contains("a standby (in recovery)"), "{err}");
}

/// A port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The port of the `i`th host of a URL made by [`url_of`].
fn url_port(url: &str, i: usize) -> u16 {
    let hosts = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    hosts
        .split(',')
        .nth(i)
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
