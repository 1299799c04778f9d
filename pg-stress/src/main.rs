//! `pg-stress`: load-test duroxide-pg with duroxide's stress scenarios.
//!
//! ```text
//! cargo run --release -p duroxide-pg-stress -- --duration 10 --compare-sqlite
//! ```
//! Without `--database-url` or `DATABASE_URL` it starts the throwaway local
//! PostgreSQL cluster. Exits 1 when any run is below 100 % success, 2 when a
//! run could not be carried out (bad arguments, unreachable server).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use duroxide_pg_stress::report::{self, Environment};
use duroxide_pg_stress::{Preset, RunOptions, Scenario, StressError, run_all};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ScenarioArg {
    Parallel,
    LargePayload,
    All,
}

/// Load-test duroxide-pg with duroxide's stress scenarios over a concurrency matrix.
#[derive(Debug, Parser)]
#[command(name = "pg-stress", version)]
struct Cli {
    /// Seconds to keep launching orchestrations in each run (then it drains).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// PostgreSQL URL; without it (and without DATABASE_URL) a throwaway local cluster is started.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Which scenario to run.
    #[arg(long, value_enum, default_value = "parallel")]
    scenario: ScenarioArg,
    /// A named configuration of BENCHMARKS.md (slots, in flight, activities,
    /// activity time) instead of the four flags below.
    #[arg(long, value_enum, ignore_case = true,
          conflicts_with_all = ["matrix", "max_concurrent", "tasks", "activity_delay_ms"])]
    preset: Option<Preset>,
    /// Concurrency matrix as orch:worker pairs.
    #[arg(long, default_value = "1:1,2:2,4:4")]
    matrix: String,
    /// Orchestrations in flight at once (default: 20 parallel, 5 large-payload).
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Activities per orchestration in the parallel scenario (default 5).
    #[arg(long)]
    tasks: Option<usize>,
    /// Duration of each activity in ms (default: 10 parallel, 5 large-payload).
    #[arg(long)]
    activity_delay_ms: Option<u64>,
    /// Seconds to wait for one orchestration (default: 60 parallel, 120 large-payload).
    #[arg(long)]
    wait_timeout: Option<u64>,
    /// Also run duroxide's SQLite provider (file-backed) and report the ratio.
    #[arg(long)]
    compare_sqlite: bool,
    /// Also run the published duroxide-pg 0.1.38 crate (build with `--features published`).
    #[arg(long)]
    compare_published: bool,
    /// Add this network round-trip time (ms) between the PostgreSQL providers and the
    /// server, through a built-in delay proxy (half each way); 0 = direct.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    rtt_ms: u64,
    /// Every SECS, sample throughput, this process's RSS and the store's table
    /// sizes and dead tuples (PostgreSQL runs; for soak runs).
    #[arg(long, value_name = "SECS")]
    sample_every: Option<u64>,
    /// Run a retention policy on the duroxide-pg store while it runs: keep
    /// completed and failed orchestrations SECS seconds, sweep every
    /// `--retention-interval` seconds (for soak runs: tables level off).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    retention_keep: Option<u64>,
    /// Seconds between the background sweeps of `--retention-keep`.
    #[arg(long, value_name = "SECS", default_value_t = 10, requires = "retention_keep",
          value_parser = clap::value_parser!(u64).range(1..))]
    retention_interval: u64,
    /// Let duroxide-pg vacuum its queue tables every SECS seconds
    /// (`PostgresConfig::with_queue_vacuum`).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    queue_vacuum: Option<u64>,
    /// Time every provider call (p50/p99/total by operation) and a 10 ms tokio
    /// sleep probe, and print the table after each run (also in `--json`).
    #[arg(long)]
    call_stats: bool,
    /// Repetitions of every cell (medians are reported when > 1).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Append this run (date, commit, environment, PostgreSQL version, config, table) to FILE.
    #[arg(long, value_name = "FILE")]
    track: Option<PathBuf>,
    /// Print machine-readable JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Run through a real PgBouncer in transaction mode started in front of
    /// the throwaway local cluster (Debian package `pgbouncer`), with
    /// duroxide-pg configured for it (`DUROXIDE_PG_POOLER=transaction`).
    #[arg(long, conflicts_with_all = ["database_url", "compare_published", "rtt_ms"])]
    via_pgbouncer: bool,
}

async fn run(cli: Cli, command: String) -> Result<bool, StressError> {
    let (matrix, max_concurrent, tasks, activity_delay_ms) = match cli.preset {
        Some(preset) => {
            let (m, in_flight, tasks, ms) = preset.settings();
            (m, Some(in_flight), Some(tasks), Some(ms))
        }
        None => (
            cli.matrix.parse()?,
            cli.max_concurrent,
            cli.tasks,
            cli.activity_delay_ms,
        ),
    };
    if cli.compare_published && !cfg!(feature = "published") {
        return Err(duroxide_pg_stress::runner::published_missing());
    }
    if cli.rtt_ms > 10_000 {
        return Err(StressError::InvalidArgument(
            "--rtt-ms must be at most 10000".into(),
        ));
    }
    if cli.duration == 0 {
        return Err(StressError::InvalidArgument(
            "--duration must be at least 1 second".into(),
        ));
    }
    let url = match cli.database_url.filter(|u| !u.trim().is_empty()) {
        Some(url) => url,
        None if cli.via_pgbouncer => duroxide_pg_testkit::local_cluster::pgbouncer_url()?,
        None => duroxide_pg_testkit::local_cluster::database_url()?,
    };
    let options = RunOptions {
        duration_secs: cli.duration,
        scenarios: match cli.scenario {
            ScenarioArg::Parallel => vec![Scenario::Parallel],
            ScenarioArg::LargePayload => vec![Scenario::LargePayload],
            ScenarioArg::All => vec![Scenario::Parallel, Scenario::LargePayload],
        },
        matrix,
        max_concurrent,
        tasks,
        activity_delay_ms,
        wait_timeout_secs: cli.wait_timeout,
        compare_sqlite: cli.compare_sqlite,
        compare_published: cli.compare_published,
        rtt_ms: cli.rtt_ms,
        repeat: cli.repeat,
        show_progress: !cli.json,
        sample_every_secs: cli.sample_every,
        queue_vacuum: cli.queue_vacuum.map(std::time::Duration::from_secs),
        retention: cli.retention_keep.map(|keep| {
            let keep = std::time::Duration::from_secs(keep);
            duroxide_pg::RetentionPolicy::new()
                .keep_completed_for(keep)
                .keep_failed_for(keep)
                .with_interval(std::time::Duration::from_secs(cli.retention_interval))
        }),
        call_stats: cli.call_stats,
    };

    // Fail fast, with a one-line error, on a wrong URL or unreachable server.
    let probe = duroxide_pg::PostgresProvider::connect(
        duroxide_pg::PostgresConfig::new(&url)
            .with_schema(format!("dxstress_probe_{}", std::process::id())),
    )
    .await?;
    // A simple query (a plain `&str`): nothing is prepared, so it also works
    // behind a transaction pooler (`--via-pgbouncer`).
    let version: String = sqlx::Executor::fetch_one(probe.pool(), "SELECT version()")
        .await
        .and_then(|row| sqlx::Row::try_get(&row, 0))
        .map_err(|e| StressError::Run(format!("query the server version: {e}")))?;
    probe.cleanup_schema().await?;
    let env = Environment::gather(version, &url);
    if !cli.json {
        println!(
            "pg-stress on {} ({}){}",
            env.database_url,
            env.postgres_version,
            if cli.rtt_ms > 0 {
                format!(", +{} ms round trip through a delay proxy", cli.rtt_ms)
            } else {
                String::new()
            }
        );
    }

    let records = run_all(&url, &options).await?;
    if cli.json {
        println!("{}", report::json(&env, &command, &records));
    } else {
        print!("{}", report::table(&records));
    }
    if let Some(path) = cli.track {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StressError::Run(format!("open {}: {e}", path.display())))?;
        f.write_all(report::tracked_section(&env, &command, &records).as_bytes())
            .map_err(|e| StressError::Run(format!("write {}: {e}", path.display())))?;
    }
    Ok(records.iter().all(|r| r.is_clean()))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = std::env::args()
        .map(|a| duroxide_pg::redact_url(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let cli = Cli::parse();
    if cli.via_pgbouncer {
        // The operators' switch, set before any thread exists.
        // SAFETY: single-threaded here; nothing reads the environment concurrently.
        unsafe { std::env::set_var(duroxide_pg::POOLER_ENV, "transaction") };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli, command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: at least one run was below 100 % success");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
