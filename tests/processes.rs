//! Reliability across processes: runtimes in child processes that are
//! killed (SIGKILL), paused past their leases (SIGSTOP/SIGCONT), started 16 at
//! once on an empty database, four of them contending for 1,000 fan-out
//! orchestrations on a private cluster (about 12 s; sessions shared across
//! processes, worker acks sent in batches), and two of them whose
//! clocks differ by 0.5 s, 5 s or 60 s either way (the clock of a debug
//! build's provider is moved by `DUROXIDE_PG_TEST_CLOCK_OFFSET_MS`). On
//! demand, a soak runs a schedule of faults under load and checks the store.
//!
//! A custom harness (libtest-mimic, so nextest runs it like any test file):
//! the same executable is the child process when `DXPG_CHILD` is set.

use duroxide_pg_testkit::harness as common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::ProviderAdmin;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, EventKind, OrchestrationContext, OrchestrationRegistry,
    OrchestrationStatus,
};
use duroxide_pg::{PollMode, PostgresConfig, PostgresProvider};
use libtest_mimic::{Arguments, Failed, Trial};

/// Lease length of the runtime that gets killed or paused: short, so the
/// takeover is quick, but long enough that on a loaded 2-core machine its
/// own renewals never lapse before the fault (which would make it re-run its
/// own activities and blur what the tests count).
const VICTIM_LEASE_MS: u64 = 4000;

/// How long a scenario may wait for its orchestrations before it fails.
const WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- registry

/// "Job": two activities in sequence, a 300 ms timer, and a sub-orchestration
/// running one more activity; output `done-<input>`. "FanOut": five
/// activities in parallel, two of them on a session shared by every eighth
/// orchestration. Each activity records its run (instance, input,
/// process id) in `<schema>.activity_runs` before it sleeps.
fn registries(url: &str, schema: &str) -> (ActivityRegistry, OrchestrationRegistry) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy(url)
        .expect("runs pool");
    let record = format!(
        "INSERT INTO \"{schema}\".activity_runs (instance_id, input, pid) VALUES ($1, $2, $3)"
    );
    let activities = ActivityRegistry::builder()
        .register("Work", move |ctx: ActivityContext, input: String| {
            let pool = pool.clone();
            let record = record.clone();
            async move {
                sqlx::query(&record)
                    .bind(ctx.instance_id())
                    .bind(&input)
                    .bind(std::process::id() as i64)
                    .execute(&pool)
                    .await
                    .map_err(|e| e.to_string())?;
                let ms: u64 = input
                    .rsplit(':')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(format!("ok {input}"))
            }
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register("Job", |ctx: OrchestrationContext, n: String| async move {
            ctx.schedule_activity("Work", format!("{n}/a:300")).await?;
            ctx.schedule_activity("Work", format!("{n}/b:300")).await?;
            ctx.schedule_timer(Duration::from_millis(300)).await;
            ctx.schedule_sub_orchestration("Child", n.clone()).await?;
            Ok(format!("done-{n}"))
        })
        .register("Child", |ctx: OrchestrationContext, n: String| async move {
            ctx.schedule_activity("Work", format!("{n}/c:200")).await
        })
        .register(
            "FanOut",
            |ctx: OrchestrationContext, n: String| async move {
                // Two of the five on a session that eight orchestrations
                // share: acks that touch session rows, batched with acks
                // that do not, from every process at once.
                let session = format!("s{}", n.parse::<u64>().unwrap_or(0) % 8);
                let calls: Vec<_> = (0..5)
                    .map(|i| {
                        let input = format!("{n}/{i}:5");
                        if i >= 3 {
                            ctx.schedule_activity_on_session("Work", input, session.as_str())
                        } else {
                            ctx.schedule_activity("Work", input)
                        }
                    })
                    .collect();
                let results = ctx.join(calls).await;
                Ok(format!(
                    "{n}:{}",
                    results.into_iter().filter(|r| r.is_ok()).count()
                ))
            },
        )
        .build();
    (activities, orchestrations)
}

fn runtime_options(slots: usize, lock: Duration) -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        dispatcher_long_poll_timeout: Duration::from_secs(2),
        orchestration_concurrency: slots,
        worker_concurrency: slots,
        orchestrator_lock_timeout: lock,
        worker_lock_timeout: lock,
        ..Default::default()
    }
}

// ------------------------------------------------------------------ child

/// The child process: a runtime on `DXPG_SCHEMA` until it is killed (or,
/// in "start" mode, one provider construction at `DXPG_START_AT_MS`).
fn child_main(mode: &str) {
    let url = std::env::var("DXPG_URL").expect("DXPG_URL");
    let schema = std::env::var("DXPG_SCHEMA").expect("DXPG_SCHEMA");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        match mode {
            "start" => {
                let at: u64 = std::env::var("DXPG_START_AT_MS").unwrap().parse().unwrap();
                let now = common_now_ms();
                if at > now {
                    tokio::time::sleep(Duration::from_millis(at - now)).await;
                }
                let config = PostgresConfig::new(&url).with_schema(schema);
                match PostgresProvider::connect(config).await {
                    Ok(_) => println!("started"),
                    Err(e) => {
                        eprintln!("child failed: {e}");
                        std::process::exit(1);
                    }
                }
            }
            _ => {
                let slots: usize = std::env::var("DXPG_SLOTS").unwrap().parse().unwrap();
                let lock_ms: u64 = std::env::var("DXPG_LOCK_MS").unwrap().parse().unwrap();
                // A runtime whose clock the test moved must start anyway:
                // what the skew does is what the test measures.
                let allow_skew = std::env::var("DUROXIDE_PG_TEST_CLOCK_OFFSET_MS").is_ok();
                let mut config = PostgresConfig::new(&url)
                    .with_schema(schema.clone())
                    .with_max_clock_skew(
                        (!allow_skew)
                            .then_some(duroxide_pg::PostgresConfig::DEFAULT_MAX_CLOCK_SKEW),
                    );
                if std::env::var("DXPG_POOLER").is_ok() {
                    config = config.with_pooler(duroxide_pg::Pooler::Transaction);
                }
                let provider = Arc::new(
                    PostgresProvider::connect(config)
                        .await
                        .expect("child provider"),
                );
                // The activities record their runs directly: the runtime's
                // URL may name a transaction pooler, where sqlx's prepared
                // statements do not survive.
                let runs_url = std::env::var("DXPG_RUNS_URL").unwrap_or_else(|_| url.clone());
                let (activities, orchestrations) = registries(&runs_url, &schema);
                let _runtime = Runtime::start_with_options(
                    provider,
                    activities,
                    orchestrations,
                    runtime_options(slots, Duration::from_millis(lock_ms)),
                )
                .await;
                // Live until the parent closes our stdin (or kills us): a
                // child must not outlive a parent that died some other way.
                tokio::task::spawn_blocking(|| {
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                })
                .await
                .ok();
            }
        }
    });
}

fn common_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ----------------------------------------------------------------- parent

/// A runtime child process, killed when dropped.
struct RuntimeChild(Child);

impl RuntimeChild {
    fn spawn(url: &str, schema: &str, slots: usize, lock_ms: u64) -> Self {
        Self::spawn_skewed(url, schema, slots, lock_ms, 0)
    }

    /// A runtime whose provider's clock is `offset_ms` ahead (negative:
    /// behind) of this host's.
    fn spawn_skewed(url: &str, schema: &str, slots: usize, lock_ms: u64, offset_ms: i64) -> Self {
        Self::spawn_as(url, schema, slots, lock_ms, offset_ms, None)
    }

    /// As [`RuntimeChild::spawn_skewed`]; with `behind_pooler`, `url`
    /// names a transaction pooler in front of that server: the provider is
    /// set for it, the activities record their runs on the server directly.
    fn spawn_as(
        url: &str,
        schema: &str,
        slots: usize,
        lock_ms: u64,
        offset_ms: i64,
        behind_pooler: Option<&str>,
    ) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        if offset_ms != 0 {
            command.env("DUROXIDE_PG_TEST_CLOCK_OFFSET_MS", offset_ms.to_string());
        }
        if let Some(direct) = behind_pooler {
            command.env("DXPG_POOLER", "transaction");
            command.env("DXPG_RUNS_URL", direct);
        }
        let child = command
            .env("DXPG_CHILD", "runtime")
            .env("DXPG_URL", url)
            .env("DXPG_SCHEMA", schema)
            .env("DXPG_SLOTS", slots.to_string())
            .env("DXPG_LOCK_MS", lock_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child runtime");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {}", self.pid());
    }

    fn kill9(mut self) {
        self.signal("-KILL");
        let _ = self.0.wait();
    }
}

impl Drop for RuntimeChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh schema with the provider's tables and the activity-runs table,
/// and a client-side provider (no runtime) on it.
async fn setup(prefix: &str) -> (String, String, Arc<PostgresProvider>) {
    let url = common::database_url();
    let schema = common::fresh_schema_name(prefix);
    let provider = Arc::new(
        PostgresProvider::connect(
            PostgresConfig::new(&url)
                .with_schema(schema.clone())
                .with_poll_mode(PollMode::PollOnly),
        )
        .await
        .unwrap(),
    );
    create_runs_table(&provider, &schema).await;
    (url, schema, provider)
}

/// The table the "Work" activity records its runs in.
async fn create_runs_table(p: &PostgresProvider, schema: &str) {
    sqlx::query(&format!(
        "CREATE TABLE \"{schema}\".activity_runs (
             id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             instance_id TEXT NOT NULL, input TEXT NOT NULL, pid BIGINT NOT NULL,
             at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"
    ))
    .execute(p.pool())
    .await
    .expect("create the activity_runs table");
}

/// (input, pid) of every activity run so far, in order.
async fn runs(p: &PostgresProvider, schema: &str) -> Vec<(String, i64)> {
    sqlx::query_as(&format!(
        "SELECT input, pid FROM \"{schema}\".activity_runs ORDER BY id"
    ))
    .fetch_all(p.pool())
    .await
    .unwrap()
}

async fn wait_until<F, Fut>(what: &str, mut probe: F) -> Result<(), Failed>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !probe().await {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Every "Job" instance `job-0` .. `job-{n-1}` completed exactly once
/// ([`assert_job_completed_once`]).
async fn assert_jobs_completed(
    client: &Client,
    p: &PostgresProvider,
    n: usize,
) -> Result<(), Failed> {
    for i in 0..n {
        assert_job_completed_once(client, p, i, WAIT).await?;
    }
    Ok(())
}

/// Job `job-{i}` completes within `wait` with its output, and its history
/// and its child's are whole: event ids 1..n, exactly one terminal event,
/// no activity completion recorded twice (a stale owner's ack).
async fn assert_job_completed_once(
    client: &Client,
    p: &PostgresProvider,
    i: usize,
    wait: Duration,
) -> Result<(), Failed> {
    let id = format!("job-{i}");
    match client.wait_for_orchestration(&id, wait).await {
        Ok(OrchestrationStatus::Completed { output, .. }) if output == format!("done-{i}") => {}
        other => return Err(format!("{id}: {other:?}").into()),
    }
    for instance in std::iter::once(id.clone()).chain(p.list_children(&id).await?) {
        let history = p.read_history(&instance).await?;
        if history
            .iter()
            .enumerate()
            .any(|(k, e)| e.event_id != k as u64 + 1)
        {
            return Err(format!("{instance}: event ids are not 1..n").into());
        }
        let terminal = history.iter().filter(|e| e.is_terminal()).count();
        if terminal != 1 {
            return Err(format!("{instance}: {terminal} terminal events").into());
        }
        let mut completed: Vec<u64> = history
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::ActivityCompleted { .. } => e.source_event_id,
                _ => None,
            })
            .collect();
        let all = completed.len();
        completed.sort_unstable();
        completed.dedup();
        if completed.len() != all {
            return Err(format!("{instance}: an activity completion was recorded twice").into());
        }
    }
    Ok(())
}

/// Each activity (3 per job) ran at least once; those that ran more than once
/// were first started by `killed_pid`, at most `slots` of them.
fn assert_runs(
    runs: &[(String, i64)],
    n: usize,
    killed_pid: u32,
    slots: usize,
) -> Result<usize, Failed> {
    let mut duplicates = 0;
    for i in 0..n {
        for (step, ms) in [("a", 300), ("b", 300), ("c", 200)] {
            let input = format!("{i}/{step}:{ms}");
            let of_it: Vec<i64> = runs
                .iter()
                .filter(|(x, _)| *x == input)
                .map(|(_, p)| *p)
                .collect();
            if of_it.is_empty() {
                return Err(format!("activity {input} never ran").into());
            }
            if of_it.len() > 1 {
                duplicates += of_it.len() - 1;
                // A repeat needs the disturbed process among the runners. Not
                // necessarily first: a process paused between leasing an
                // activity and starting it starts it when resumed, after the
                // taker (at-least-once); a killed one can only be first.
                if !of_it.contains(&i64::from(killed_pid)) {
                    return Err(format!("{input} ran twice without a crash: {of_it:?}").into());
                }
            }
        }
    }
    if duplicates > slots {
        return Err(format!(
            "{duplicates} repeated activities, but only {slots} could be in flight"
        )
        .into());
    }
    Ok(duplicates)
}

async fn start_jobs(client: &Client, n: usize) {
    for i in 0..n {
        client
            .start_orchestration(&format!("job-{i}"), "Job", i.to_string())
            .await
            .unwrap();
    }
}

/// A runtime process is SIGKILLed with activities, timers and
/// sub-orchestrations in flight; a new process takes over and finishes all.
async fn process_crash() -> Result<(), Failed> {
    const N: usize = 8;
    const SLOTS: usize = 2;
    let (url, schema, p) = setup("crash").await;
    let client = Client::new(p.clone());
    let first = RuntimeChild::spawn(&url, &schema, SLOTS, VICTIM_LEASE_MS);
    let killed = first.pid();
    start_jobs(&client, N).await;
    // Kill it mid-way: some activities done, most not.
    wait_until("first activities", || async {
        runs(&p, &schema).await.len() >= 5
    })
    .await?;
    first.kill9();
    let at_kill = runs(&p, &schema).await.len();
    if at_kill >= 3 * N {
        return Err("everything finished before the kill; the test proved nothing".into());
    }
    // The survivor's own leases are long: on a loaded machine a late renewal
    // must not make it run its own activities twice, which would blur what
    // this test measures (re-runs caused by the crash).
    let _second = RuntimeChild::spawn(&url, &schema, SLOTS, 15_000);
    assert_jobs_completed(&client, &p, N).await?;
    let repeated = assert_runs(&runs(&p, &schema).await, N, killed, SLOTS)?;
    eprintln!(
        "crash: killed after {at_kill} of {} activity runs; all {N} jobs completed once; \
         {repeated} activities ran again",
        3 * N
    );
    p.cleanup_schema().await?;
    Ok(())
}

/// A runtime process is paused (SIGSTOP) past its leases; another takes over
/// and completes everything; resumed, the stale owner's acks and renewals are
/// refused and leave no trace (no double events).
async fn paused_owner() -> Result<(), Failed> {
    const N: usize = 6;
    const SLOTS: usize = 2;
    let (url, schema, p) = setup("paused").await;
    let client = Client::new(p.clone());
    let stale = RuntimeChild::spawn(&url, &schema, SLOTS, VICTIM_LEASE_MS);
    start_jobs(&client, N).await;
    wait_until("first activities", || async {
        runs(&p, &schema).await.len() >= 3
    })
    .await?;
    stale.signal("-STOP");
    let paused_pid = stale.pid();
    // It must be holding work, or the test would prove nothing: it is the
    // only runtime so far, so every live lease is its own.
    let held: i64 = sqlx::query_scalar(&format!(
        "SELECT (SELECT count(*) FROM \"{schema}\".worker_queue WHERE lock_token IS NOT NULL)
              + (SELECT count(*) FROM \"{schema}\".instance_locks)"
    ))
    .fetch_one(p.pool())
    .await?;
    if held == 0 {
        return Err("the paused runtime held no lease; nothing was tested".into());
    }
    // Long leases for the taker (see process_crash).
    let taker = RuntimeChild::spawn(&url, &schema, SLOTS, 15_000);
    assert_jobs_completed(&client, &p, N).await?;
    drop(taker);
    // Wake the stale owner: whatever it held, its acks must now be refused.
    stale.signal("-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await; // let it try to finish and ack its work
    stale.kill9();
    assert_jobs_completed(&client, &p, N).await?;
    let repeated = assert_runs(&runs(&p, &schema).await, N, paused_pid, SLOTS)?;
    eprintln!(
        "paused owner: it held {held} leases when paused; all {N} jobs completed once after \
         it resumed; {repeated} activities ran again"
    );
    p.cleanup_schema().await?;
    Ok(())
}

/// 16 processes start at the same instant on an empty database: all start,
/// the migrations are applied exactly once.
async fn concurrent_start() -> Result<(), Failed> {
    let url = common::database_url();
    let admin = sqlx::PgPool::connect(&url).await?;
    let db = common::fresh_schema_name("herdproc");
    sqlx::query(&format!("CREATE DATABASE \"{db}\""))
        .execute(&admin)
        .await?;
    let db_url = {
        let (base, _) = url.rsplit_once('/').unwrap();
        format!("{base}/{db}")
    };
    // Spawning 16 processes on a loaded machine can take a while: a generous
    // head start keeps the instant common to all of them.
    let at = common_now_ms() + 3000;
    let children: Vec<Child> = (0..16)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .env("DXPG_CHILD", "start")
                .env("DXPG_URL", &db_url)
                .env("DXPG_SCHEMA", "public")
                .env("DXPG_START_AT_MS", at.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output()?;
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("started") {
            return Err(format!("a child failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
    }
    let db_pool = sqlx::PgPool::connect(&db_url).await?;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM public._duroxide_migrations ORDER BY version")
            .fetch_all(&db_pool)
            .await?;
    let expected: Vec<i64> = duroxide_pg::migrations::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    if versions != expected {
        return Err(format!("ledger {versions:?}, expected {expected:?}").into());
    }
    db_pool.close().await;
    sqlx::query(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .execute(&admin)
        .await?;
    Ok(())
}

/// Four runtime processes with 4:4 slots each run 1,000 fan-out
/// orchestrations on one schema of a private cluster: all complete, none
/// twice, and the server logged no deadlock, while each process sent its
/// worker acks in batches (`ack_work_items_and_fetch`, counted by the
/// server) whose rows and sessions the other processes' batches wanted too.
async fn contention() -> Result<(), Failed> {
    const N: usize = 1000;
    let cluster = duroxide_pg_testkit::local_cluster::PrivateCluster::start()?;
    let url = cluster.url();
    let schema = "contention".to_string();
    let p = Arc::new(
        PostgresProvider::connect(PostgresConfig::new(&url).with_schema(schema.clone())).await?,
    );
    create_runs_table(&p, &schema).await;
    // Counts the stored functions' calls (the children's sessions inherit
    // it): the batches of worker acks the processes sent are read at the end.
    sqlx::query("ALTER DATABASE postgres SET track_functions = 'pl'")
        .execute(p.pool())
        .await?;
    let children: Vec<RuntimeChild> = (0..4)
        .map(|_| RuntimeChild::spawn(&url, &schema, 4, 30_000))
        .collect();
    let client = Client::new(p.clone());
    let started = Instant::now();
    for i in 0..N {
        client
            .start_orchestration(&format!("fan-{i}"), "FanOut", i.to_string())
            .await?;
    }
    for i in 0..N {
        let id = format!("fan-{i}");
        match client
            .wait_for_orchestration(&id, Duration::from_secs(600))
            .await
        {
            Ok(OrchestrationStatus::Completed { output, .. }) if output == format!("{i}:5") => {}
            other => return Err(format!("{id}: {other:?}").into()),
        }
        let completions = p
            .read_history(&id)
            .await?
            .iter()
            .filter(|e| matches!(e.kind, EventKind::OrchestrationCompleted { .. }))
            .count();
        if completions != 1 {
            return Err(format!("{id}: {completions} completions").into());
        }
    }
    let elapsed = started.elapsed();
    // The children's backends report their function calls when they exit.
    drop(children);
    let batch_calls = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_user_functions \
             WHERE funcname = 'ack_work_items_and_fetch'",
        )
        .fetch_one(p.pool())
        .await
        // A failed read is its own failure, not a count of 0 waited on
        // until the bound.
        .expect("read pg_stat_user_functions")
    };
    wait_until("the processes' batched acks to be counted", || async {
        batch_calls().await > 0
    })
    .await?;
    let batches = batch_calls().await;
    let log = std::fs::read_to_string(cluster.log())?;
    let deadlocks = log.matches("deadlock detected").count();
    eprintln!(
        "contention: {N} fan-out orchestrations (5 activities each, 2 on shared sessions) on \
         4 processes x 4:4 in {:.1} s, {batches} batched ack statements, {deadlocks} deadlocks \
         in the server log",
        elapsed.as_secs_f64()
    );
    if deadlocks > 0 {
        return Err(format!("{deadlocks} deadlocks in the server log").into());
    }
    Ok(())
}

/// Two runtime processes share a schema, the second one's clock `offset_ms`
/// ahead (negative: behind): every job completes exactly once whatever the
/// skew (asserted); how many activities ran twice and how long the jobs'
/// 300 ms timers really took are reported (RELIABILITY.md).
async fn clock_skew(offset_ms: i64) -> Result<(), Failed> {
    const N: usize = 8;
    const SLOTS: usize = 2;
    // The runtimes' default-like leases: 5 s, renewed at half.
    const LEASE_MS: u64 = 5000;
    let (url, schema, p) = setup("skew").await;
    let client = Client::new(p.clone());
    let _true_clock = RuntimeChild::spawn(&url, &schema, SLOTS, LEASE_MS);
    let skewed = RuntimeChild::spawn_skewed(&url, &schema, SLOTS, LEASE_MS, offset_ms);
    let started = Instant::now();
    start_jobs(&client, N).await;
    assert_jobs_completed(&client, &p, N).await?;
    let took = started.elapsed();
    let runs = runs(&p, &schema).await;
    let expected = 3 * N;
    let repeated = runs.len() - expected;
    for i in 0..N {
        for (step, ms) in [("a", 300), ("b", 300), ("c", 200)] {
            let input = format!("{i}/{step}:{ms}");
            if !runs.iter().any(|(x, _)| *x == input) {
                return Err(format!("activity {input} never ran").into());
            }
        }
    }
    let by_skewed = runs
        .iter()
        .filter(|(_, pid)| *pid == i64::from(skewed.pid()))
        .count();
    // The real time between the start of step b (300 ms) and of the child's
    // step c: b's 300 ms, the 300 ms timer, the turns in between.
    let timer_spans: Vec<f64> = sqlx::query_scalar(&format!(
        "SELECT extract(epoch FROM min(c.at) - max(b.at))::float8 * 1000
           FROM \"{schema}\".activity_runs b
           JOIN \"{schema}\".activity_runs c
             ON c.input = split_part(b.input, '/', 1) || '/c:200'
          WHERE b.input LIKE '%/b:300'
          GROUP BY split_part(b.input, '/', 1)"
    ))
    .fetch_all(p.pool())
    .await?;
    let shortest = timer_spans.iter().copied().fold(f64::INFINITY, f64::min);
    let longest = timer_spans.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "clock skew {offset_ms:+} ms: all {N} jobs completed once in {:.1} s; {} activity runs for \
         {expected} activities ({repeated} repeated), {by_skewed} by the skewed runtime; \
         b-start to c-start {shortest:.0}-{longest:.0} ms (b 300 ms + timer 300 ms + turns)",
        took.as_secs_f64(),
        runs.len()
    );
    p.cleanup_schema().await?;
    Ok(())
}

/// A process whose clock is 60 s off refuses to build a provider (default
/// bound 2 s), naming the skew; one 0.5 s off starts.
async fn clock_skew_refused() -> Result<(), Failed> {
    let url = common::database_url();
    let schema = common::fresh_schema_name("skewstart");
    let start = |offset_ms: i64| {
        Command::new(std::env::current_exe().unwrap())
            .env("DXPG_CHILD", "start")
            .env("DXPG_URL", &url)
            .env("DXPG_SCHEMA", &schema)
            .env("DXPG_START_AT_MS", "0")
            .env("DUROXIDE_PG_TEST_CLOCK_OFFSET_MS", offset_ms.to_string())
            .output()
            .expect("spawn")
    };
    for (offset, ahead) in [(60_000, "ahead of"), (-60_000, "behind")] {
        let out = start(offset);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(&format!("ms {ahead} the database server's")) {
            return Err(format!("offset {offset}: {} / {stderr}", out.status).into());
        }
    }
    let out = start(500);
    if !out.status.success() {
        return Err(format!("0.5 s off: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let p = PostgresProvider::connect(PostgresConfig::new(&url).with_schema(&schema)).await?;
    p.cleanup_schema().await?;
    Ok(())
}

/// On demand (`--run-ignored only`, about 12 minutes; `DXPG_SOAK_STAGE_S`
/// sets each stage's length, default 90 s): a durable private cluster, two
/// runtime processes (A through the test's proxy, B through a PgBouncer of
/// the cluster's own in transaction mode) and a client starting a "Job"
/// every 200 ms, while a schedule injects one fault per stage: A killed
/// (SIGKILL) and restarted, B paused past its leases, the server killed
/// (fsync on) and restarted, a 30 s silent partition of A's network,
/// PgBouncer restarted, B restarted with its clock 1.5 s ahead. Then the
/// checker reads the store: every started job completed exactly once with
/// its output, no history has a gap or a repeated event id or activity
/// completion, nothing is left locked or queued.
async fn fault_schedule() -> Result<(), Failed> {
    use duroxide_pg_testkit::delay_proxy::{self, DelayProxy};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    const SLOTS: usize = 2;
    const LEASE_MS: u64 = 5000;
    let stage = Duration::from_secs(
        std::env::var("DXPG_SOAK_STAGE_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(90),
    );
    let cluster = duroxide_pg_testkit::local_cluster::PrivateCluster::start_durable()?;
    let bouncer = cluster.pgbouncer()?;
    let direct = cluster.url();
    let proxy = DelayProxy::start(delay_proxy::upstream_of(&direct).await?, Duration::ZERO).await?;
    let via_proxy = delay_proxy::reroute_url(&direct, proxy.local_addr())?;
    let schema = "soak".to_string();
    let p = Arc::new(
        PostgresProvider::connect(
            PostgresConfig::new(&direct)
                .with_schema(schema.clone())
                .with_poll_mode(PollMode::PollOnly),
        )
        .await?,
    );
    create_runs_table(&p, &schema).await;
    let client = Client::new(p.clone());
    let mut a = RuntimeChild::spawn(&via_proxy, &schema, SLOTS, LEASE_MS);
    let mut b = RuntimeChild::spawn_as(&bouncer.url(), &schema, SLOTS, LEASE_MS, 0, Some(&direct));

    // The load: a job every 200 ms. A start that failed may or may not have
    // been stored: it is never retried under the same id (the checker
    // accepts it absent, or completed once).
    let started: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, started, stop) = (client.clone(), started.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let id = format!("job-{i}");
                let certain = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.start_orchestration(&id, "Job", i.to_string()),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                started.lock().unwrap().push((id, certain));
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let soak_started = Instant::now();
    let mut table = Vec::new();
    let completed = || async {
        sqlx::query_scalar::<_, i64>(&format!(
            "SELECT count(*) FROM \"{schema}\".executions WHERE status = 'Completed' \
             AND instance_id LIKE 'job-%'"
        ))
        .fetch_one(p.pool())
        .await
        .unwrap_or(-1)
    };
    // Runs the fault mid-stage, then measures how long until a job
    // completes again after it ended.
    macro_rules! stage {
        ($name:expr, $fault:expr) => {{
            tokio::time::sleep(stage / 2).await;
            let at = Instant::now();
            $fault;
            let ended = Instant::now();
            let before = completed().await.max(0);
            let resumed = loop {
                if completed().await > before {
                    break ended.elapsed();
                }
                if ended.elapsed() > Duration::from_secs(180) {
                    return Err(format!("{}: no job completed for 180 s", $name).into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            eprintln!(
                "soak {:>6.1} s: {} (fault {:.1} s); jobs completing again {:.1} s after it ended",
                soak_started.elapsed().as_secs_f64(),
                $name,
                ended.duration_since(at).as_secs_f64(),
                resumed.as_secs_f64()
            );
            table.push(($name, ended.duration_since(at), resumed));
            tokio::time::sleep(stage / 2).await;
        }};
    }
    stage!("runtime A killed (SIGKILL), restarted after 2 s", {
        a.kill9();
        tokio::time::sleep(Duration::from_secs(2)).await;
        a = RuntimeChild::spawn(&via_proxy, &schema, SLOTS, LEASE_MS);
    });
    stage!("runtime B paused 10 s (leases 5 s)", {
        b.signal("-STOP");
        tokio::time::sleep(Duration::from_secs(10)).await;
        b.signal("-CONT");
    });
    stage!("server killed (SIGKILL, fsync on), restarted after 3 s", {
        cluster.kill_9()?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start_again()?;
    });
    stage!("runtime A's network silent for 30 s (partition, no RST)", {
        proxy.partition();
        tokio::time::sleep(Duration::from_secs(30)).await;
        proxy.heal();
    });
    stage!("PgBouncer restarted (runtime B's pooler)", {
        bouncer.restart()?;
    });
    stage!("runtime B restarted with its clock 1.5 s ahead", {
        b.kill9();
        b = RuntimeChild::spawn_as(
            &bouncer.url(),
            &schema,
            SLOTS,
            LEASE_MS,
            1500,
            Some(&direct),
        );
    });
    stop.store(true, Ordering::SeqCst);
    load.await?;

    // The checker.
    let started = std::mem::take(&mut *started.lock().unwrap());
    let (mut done, mut absent) = (0usize, 0usize);
    for (id, certain) in &started {
        let n: usize = id["job-".len()..].parse()?;
        if !*certain
            && matches!(
                client.get_orchestration_status(id).await?,
                OrchestrationStatus::NotFound
            )
        {
            absent += 1;
            continue;
        }
        assert_job_completed_once(&client, &p, n, Duration::from_secs(300)).await?;
        done += 1;
    }
    let left: i64 = sqlx::query_scalar(&format!(
        "SELECT (SELECT count(*) FROM \"{schema}\".instance_locks)
              + (SELECT count(*) FROM \"{schema}\".worker_queue)
              + (SELECT count(*) FROM \"{schema}\".orchestrator_queue)"
    ))
    .fetch_one(p.pool())
    .await?;
    let runs = runs(&p, &schema).await.len();
    eprintln!(
        "soak: {:.0} s, {} jobs started ({} with an unanswered start), {done} completed exactly \
         once, {absent} never stored, 0 lost; {runs} activity runs for {} activities; {left} rows \
         locked or queued at the end",
        soak_started.elapsed().as_secs_f64(),
        started.len(),
        started.iter().filter(|(_, c)| !c).count(),
        3 * done
    );
    for (name, fault, resumed) in &table {
        eprintln!(
            "| {name} | {:.1} s | {:.1} s |",
            fault.as_secs_f64(),
            resumed.as_secs_f64()
        );
    }
    if left != 0 {
        return Err(format!("{left} rows locked or queued after everything completed").into());
    }
    drop((a, b));
    Ok(())
}

fn trial<F, Fut>(name: &'static str, scenario: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Failed>>,
{
    Trial::test(name, move || {
        tokio::runtime::Runtime::new()
            .expect("tokio")
            .block_on(scenario())
    })
}

fn main() {
    if let Ok(mode) = std::env::var("DXPG_CHILD") {
        child_main(&mode);
        return;
    }
    let args = Arguments::from_args();
    let trials = vec![
        trial("process_crash", process_crash),
        trial("paused_owner", paused_owner),
        trial("concurrent_start", concurrent_start),
        trial("contention_four_processes_1000_fan_outs", contention),
        trial("clock_skew_ahead_500ms", || clock_skew(500)),
        trial("clock_skew_behind_500ms", || clock_skew(-500)),
        trial("clock_skew_ahead_5s", || clock_skew(5_000)),
        trial("clock_skew_behind_5s", || clock_skew(-5_000)),
        trial("clock_skew_ahead_60s", || clock_skew(60_000)),
        trial("clock_skew_behind_60s", || clock_skew(-60_000)),
        trial(
            "clock_skew_beyond_the_bound_is_refused_at_start",
            clock_skew_refused,
        ),
        trial("fault_schedule_soak", fault_schedule).with_ignored_flag(true),
    ];
    libtest_mimic::run(&args, trials).exit();
}
