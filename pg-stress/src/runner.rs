//! Runs the matrix: every scenario × concurrency × repetition, each provider
//! in turn (interleaved, so a noisy machine hurts both alike), each run on a
//! fresh store that is removed afterwards.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::provider_stress_tests::StressTestConfig;
use duroxide::provider_stress_tests::large_payload::{
    LargePayloadConfig, run_large_payload_test_with_config,
};
use duroxide::provider_stress_tests::parallel_orchestrations::{
    ProviderStressFactory, run_parallel_orchestrations_test_with_config,
};
use duroxide::providers::Provider;
use duroxide::providers::sqlite::SqliteProvider;

use crate::call_stats::{CallStats, probe_length, spawn_sleep_probe};
use crate::progress::{Progress, ProgressProvider};
use crate::{Concurrency, Matrix, PgStressFactory, ProviderKind, Scenario, StressError};
use duroxide_pg_testkit::delay_proxy::{self, DelayProxy};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seconds of launching per run (then the runner drains).
    pub duration_secs: u64,
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Concurrency pairs, in order.
    pub matrix: Matrix,
    /// Orchestrations in flight at once (scenario default when `None`).
    pub max_concurrent: Option<usize>,
    /// Activities per orchestration (parallel scenario).
    pub tasks: Option<usize>,
    /// Activity duration in ms.
    pub activity_delay_ms: Option<u64>,
    /// How long the runner waits for one orchestration.
    pub wait_timeout_secs: Option<u64>,
    /// Also run duroxide's SQLite provider.
    pub compare_sqlite: bool,
    /// Also run the published duroxide-pg crate (needs the `published` feature).
    pub compare_published: bool,
    /// Added network round-trip time in ms (a delay proxy in front of the
    /// server for both PostgreSQL providers; 0: direct).
    pub rtt_ms: u64,
    /// Repetitions of every cell.
    pub repeat: usize,
    /// Print a progress line to stderr while a run goes.
    pub show_progress: bool,
    /// Sample throughput, RSS and table sizes this often (PostgreSQL runs).
    pub sample_every_secs: Option<u64>,
    /// Time every provider call; print a table per run (with the sleep probe's row).
    pub call_stats: bool,
    /// Sweep duroxide-pg stores by this policy in the background while they
    /// run (soak runs whose tables should level off).
    pub retention: Option<duroxide_pg::RetentionPolicy>,
    /// Vacuum duroxide-pg's queue tables this often (`with_queue_vacuum`).
    pub queue_vacuum: Option<std::time::Duration>,
}

/// One finished run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    /// Scenario run.
    pub scenario: Scenario,
    /// Provider run.
    pub provider: ProviderKind,
    /// Dispatcher slots.
    pub concurrency: Concurrency,
    /// 1-based repetition.
    pub repetition: usize,
    /// The stress configuration used.
    pub config: StressTestConfig,
    /// Orchestrations launched.
    pub launched: usize,
    /// Completed.
    pub completed: usize,
    /// Failed (all causes, including wait timeouts).
    pub failed: usize,
    /// Failed with an infrastructure error (provider, poison).
    pub failed_infrastructure: usize,
    /// Failed with a configuration error.
    pub failed_configuration: usize,
    /// Failed with an application error.
    pub failed_application: usize,
    /// completed / launched, in percent.
    pub success_percent: f64,
    /// Completed orchestrations per second (launch + drain time).
    pub orch_per_sec: f64,
    /// Completed activities per second.
    pub activities_per_sec: f64,
    /// Wall time per completed orchestration, ms (duroxide's "avg latency").
    pub avg_latency_ms: f64,
    /// Launch + drain time, seconds.
    pub total_secs: f64,
    /// Samples taken during the run (`--sample-every`).
    pub samples: Vec<crate::soak::Sample>,
    /// The most orchestrations per second the worker slots allow at this
    /// activity duration ([`crate::slot_ceiling`]); `None` for 0 ms
    /// activities and for the large-payload scenario.
    pub slot_ceiling_orch_per_sec: Option<f64>,
    /// How long a tokio sleep of the activity length took during the run
    /// (the sleep probe's median, ms); `None` when the ceiling is.
    pub measured_activity_ms: Option<f64>,
    /// [`Self::slot_ceiling_orch_per_sec`] at [`Self::measured_activity_ms`]:
    /// what the slots allow with activities as long as they really were.
    pub measured_slot_ceiling_orch_per_sec: Option<f64>,
    /// CPU the PostgreSQL server spent per completed orchestration, ms
    /// (every process of the cluster; `None` for SQLite or a server that is
    /// not on this machine).
    pub server_cpu_ms_per_orch: Option<f64>,
    /// CPU this process (runtime and provider) spent per completed
    /// orchestration, ms.
    pub client_cpu_ms_per_orch: Option<f64>,
    /// Provider call latencies and the sleep probe (`--call-stats`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<crate::call_stats::CallSummary>,
    /// Calls per statement of duroxide-pg's coalesced operations (empty for
    /// the other providers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<crate::batches::BatchSummary>,
}

impl RunRecord {
    /// Whether the run is clean: everything launched completed.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.launched > 0 && self.completed == self.launched
    }
}

/// The stress configuration of one cell, starting from the scenario's defaults.
pub fn cell_config(options: &RunOptions, scenario: Scenario, c: Concurrency) -> StressTestConfig {
    let mut config = match scenario {
        Scenario::Parallel => StressTestConfig::default(),
        Scenario::LargePayload => LargePayloadConfig::default().base,
    };
    config.duration_secs = options.duration_secs;
    config.orch_concurrency = c.orch;
    config.worker_concurrency = c.worker;
    if let Some(v) = options.max_concurrent {
        config.max_concurrent = v;
    }
    if let Some(v) = options.tasks {
        config.tasks_per_instance = v;
    }
    if let Some(v) = options.activity_delay_ms {
        config.activity_delay_ms = v;
    }
    if let Some(v) = options.wait_timeout_secs {
        config.wait_timeout_secs = v;
    }
    config
}

/// Hands the already-built (wrapped) provider to duroxide's scenario runners.
struct Prepared(Arc<dyn Provider>);

#[async_trait::async_trait]
impl ProviderStressFactory for Prepared {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        Arc::clone(&self.0)
    }
}

/// A store for one run, removed by `finish`.
enum Store {
    Postgres(Arc<duroxide_pg::PostgresProvider>),
    #[cfg(feature = "published")]
    Published(Arc<duroxide_pg_published::PostgresProvider>),
    Sqlite(std::path::PathBuf),
}

async fn open_store(
    kind: ProviderKind,
    pg: &PgStressFactory,
    run_id: usize,
) -> Result<(Arc<dyn Provider>, Store), StressError> {
    match kind {
        ProviderKind::Postgres => {
            let p = pg.try_create().await?;
            Ok((Arc::clone(&p) as Arc<dyn Provider>, Store::Postgres(p)))
        }
        #[cfg(feature = "published")]
        ProviderKind::Published => {
            let schema = format!("dxstress_pub_{}_{run_id}", std::process::id());
            let provider =
                duroxide_pg_published::PostgresProvider::new_with_schema(pg.url(), Some(&schema))
                    .await
                    .map_err(|e| {
                        StressError::Run(format!("open published duroxide-pg store: {e}"))
                    })?;
            let provider = Arc::new(provider);
            Ok((
                Arc::clone(&provider) as Arc<dyn Provider>,
                Store::Published(provider),
            ))
        }
        #[cfg(not(feature = "published"))]
        ProviderKind::Published => Err(published_missing()),
        ProviderKind::Sqlite => {
            let path = std::env::temp_dir().join(format!(
                "pg-stress-sqlite-{}-{run_id}.db",
                std::process::id()
            ));
            std::fs::File::create(&path)
                .map_err(|e| StressError::Run(format!("create {}: {e}", path.display())))?;
            let url = format!("sqlite:{}", path.display());
            let provider = SqliteProvider::new(&url, None).await.map_err(|e| {
                StressError::Run(format!("open SQLite store {}: {e}", path.display()))
            })?;
            Ok((Arc::new(provider) as Arc<dyn Provider>, Store::Sqlite(path)))
        }
    }
}

async fn finish(store: Store, pg: &PgStressFactory) -> Result<(), StressError> {
    match store {
        Store::Postgres(_) => pg.cleanup().await.map_err(StressError::from),
        #[cfg(feature = "published")]
        Store::Published(p) => {
            let result = p.cleanup_schema().await;
            p.pool().close().await;
            result.map_err(|e| StressError::Run(format!("drop published store: {e}")))
        }
        Store::Sqlite(path) => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            Ok(())
        }
    }
}

/// The error for `--compare-published` in a build without the feature.
pub fn published_missing() -> StressError {
    StressError::InvalidArgument(
        "--compare-published needs pg-stress built with the `published` feature \
         (cargo run --release -p duroxide-pg-stress --features published -- ...)"
            .into(),
    )
}

/// Prints `label elapsed launched completed failed` to stderr until stopped:
/// rewritten in place every second on a terminal, a new line every 5 s otherwise.
fn spawn_progress_line(label: String, progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_secs(if terminal { 1 } else { 5 });
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let (launched, completed, failed) = progress.snapshot();
            let line = format!(
                "{label} {:>5.1}s  launched {launched:>6}  completed {completed:>6}  failed {failed:>4}",
                started.elapsed().as_secs_f64()
            );
            if terminal {
                eprint!("\r{line}   ");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{line}");
            }
        }
    })
}

/// Runs every cell of `options` on `database_url` (and SQLite when asked).
/// Stops at the first infrastructure error (a store that cannot be built);
/// runs with failed orchestrations are recorded, not errors.
///
/// # Errors
/// [`StressError`] when a store cannot be created or a runner fails outright.
pub async fn run_all(
    database_url: &str,
    options: &RunOptions,
) -> Result<Vec<RunRecord>, StressError> {
    // Both PostgreSQL providers go through the proxy; it lives as long as the runs.
    let proxy = if options.rtt_ms > 0 {
        let upstream = delay_proxy::upstream_of(database_url)
            .await
            .map_err(StressError::Run)?;
        let half = Duration::from_micros(options.rtt_ms * 500);
        Some(
            DelayProxy::start(upstream, half)
                .await
                .map_err(|e| StressError::Run(format!("start the delay proxy: {e}")))?,
        )
    } else {
        None
    };
    let url = match &proxy {
        Some(p) => {
            delay_proxy::reroute_url(database_url, p.local_addr()).map_err(StressError::Run)?
        }
        None => database_url.to_string(),
    };
    // Located on the server itself, not through the proxy.
    let server = crate::cpu::ServerProcesses::locate(database_url).await;
    let pg = PgStressFactory::new(url, "dxstress")
        .with_retention(options.retention.clone())
        .with_queue_vacuum(options.queue_vacuum);
    let mut providers = vec![ProviderKind::Postgres];
    if options.compare_published {
        if !cfg!(feature = "published") {
            return Err(published_missing());
        }
        providers.push(ProviderKind::Published);
    }
    if options.compare_sqlite {
        providers.push(ProviderKind::Sqlite);
    }
    let mut records = Vec::new();
    let mut run_id = 0;
    for &scenario in &options.scenarios {
        for &concurrency in &options.matrix.0 {
            for repetition in 1..=options.repeat.max(1) {
                for &kind in &providers {
                    run_id += 1;
                    let cell = Cell {
                        kind,
                        scenario,
                        concurrency,
                        repetition,
                        run_id,
                    };
                    records.push(run_cell(cell, options, &pg, server).await?);
                }
            }
        }
    }
    Ok(records)
}

/// One cell of the matrix: which provider, scenario, concurrency and
/// repetition, and the run's number (its store's name).
#[derive(Clone, Copy)]
struct Cell {
    kind: ProviderKind,
    scenario: Scenario,
    concurrency: Concurrency,
    repetition: usize,
    run_id: usize,
}

/// Runs one cell on a fresh store: the progress line, the call statistics
/// and the sampler around duroxide's scenario, then the store's cleanup.
async fn run_cell(
    cell: Cell,
    options: &RunOptions,
    pg: &PgStressFactory,
    server: Option<crate::cpu::ServerProcesses>,
) -> Result<RunRecord, StressError> {
    let Cell {
        kind,
        scenario,
        concurrency,
        repetition,
        run_id,
    } = cell;
    let config = cell_config(options, scenario, concurrency);
    let (inner, store) = open_store(kind, pg, run_id).await?;
    let progress = Arc::new(Progress::default());
    let calls = options.call_stats.then(|| Arc::new(CallStats::default()));
    let mut wrapped = ProgressProvider::new(inner, Arc::clone(&progress));
    if let Some(calls) = &calls {
        wrapped = wrapped.with_call_stats(Arc::clone(calls));
    }
    let provider: Arc<dyn Provider> = Arc::new(wrapped);
    // The probe runs in every run (one timer wake-up per activity length): the ceiling
    // a run is compared with is measured, not assumed.
    let probe_stats = calls.clone().unwrap_or_default();
    let probe = spawn_sleep_probe(
        Arc::clone(&probe_stats),
        probe_length(config.activity_delay_ms),
    );
    let label = format!("[{kind} {scenario} {concurrency} #{repetition}]");
    let ticker = options
        .show_progress
        .then(|| spawn_progress_line(label, Arc::clone(&progress)));
    let sampler = match (&store, options.sample_every_secs) {
        (Store::Postgres(p), Some(every)) => Some(crate::soak::spawn_sampler(
            p.pool().clone(),
            p.schema_name().to_string(),
            Arc::clone(&progress),
            Duration::from_secs(every.max(1)),
        )),
        _ => None,
    };
    let factory = Prepared(provider);
    let on_server = !matches!(store, Store::Sqlite(_));
    let server_cpu = || server.filter(|_| on_server).and_then(|s| s.cpu());
    let batches = crate::batches::BatchRecorder::global();
    // Statements of an earlier run (its providers' last acks) are not this one's.
    batches.map(crate::batches::BatchRecorder::drain);
    let cpu_before = (server_cpu(), crate::cpu::own_cpu());
    let outcome = match scenario {
        Scenario::Parallel => {
            run_parallel_orchestrations_test_with_config(&factory, config.clone()).await
        }
        Scenario::LargePayload => {
            let large = LargePayloadConfig {
                base: config.clone(),
                ..LargePayloadConfig::default()
            };
            run_large_payload_test_with_config(&factory, large).await
        }
    }
    .map_err(|e| e.to_string());
    let cpu_after = (server_cpu(), crate::cpu::own_cpu());
    if let Some(t) = ticker {
        t.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    drop(factory);
    probe.abort();
    let calls = calls.map_or_else(Vec::new, |c| {
        eprintln!(
            "{kind} {scenario} {concurrency} #{repetition} calls:\n{}",
            c.table()
        );
        c.summaries()
    });
    let batches = batches.map_or_else(Vec::new, crate::batches::BatchRecorder::drain);
    if !batches.is_empty() {
        eprintln!(
            "{kind} {scenario} {concurrency} #{repetition} calls per statement:\n{}",
            crate::batches::table(&batches)
        );
    }
    let samples = sampler.map_or_else(Vec::new, |(task, samples)| {
        task.abort();
        std::mem::take(&mut *samples.lock().expect("samples"))
    });
    finish(store, pg).await?;
    let r =
        outcome.map_err(|e| StressError::Run(format!("{kind} {scenario} {concurrency}: {e}")))?;
    let per_orch = |before, after| crate::cpu::ms_per_orchestration(before, after, r.completed);
    // Only the parallel scenario's orchestrations are `tasks` activities each.
    let ceiling_at = |activity_ms: f64| match scenario {
        Scenario::Parallel => crate::slot_ceiling(
            config.worker_concurrency,
            config.tasks_per_instance,
            activity_ms,
        ),
        Scenario::LargePayload => None,
    };
    let slot_ceiling_orch_per_sec = ceiling_at(config.activity_delay_ms as f64);
    let measured_activity_ms = slot_ceiling_orch_per_sec
        .and_then(|_| probe_stats.median_ms(crate::call_stats::PROBE_NAME));
    let measured_slot_ceiling_orch_per_sec = measured_activity_ms.and_then(ceiling_at);
    Ok(RunRecord {
        scenario,
        provider: kind,
        concurrency,
        repetition,
        config,
        launched: r.launched,
        completed: r.completed,
        failed: r.failed,
        failed_infrastructure: r.failed_infrastructure,
        failed_configuration: r.failed_configuration,
        failed_application: r.failed_application,
        success_percent: r.success_rate(),
        orch_per_sec: r.orch_throughput,
        activities_per_sec: r.activity_throughput,
        avg_latency_ms: r.avg_latency_ms,
        total_secs: r.total_time.as_secs_f64(),
        samples,
        slot_ceiling_orch_per_sec,
        measured_activity_ms,
        measured_slot_ceiling_orch_per_sec,
        server_cpu_ms_per_orch: per_orch(cpu_before.0, cpu_after.0),
        client_cpu_ms_per_orch: per_orch(cpu_before.1, cpu_after.1),
        calls,
        batches,
    })
}
