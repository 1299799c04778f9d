//! pg-stress: duroxide's stress scenarios against duroxide-pg (and, for
//! comparison, duroxide's SQLite provider) over a concurrency matrix.
//!
//! The library holds everything the `pg-stress` binary and the stress tests
//! share: the matrix and scenario types, the provider factories (a fresh
//! schema or file per run), the runner with its progress line, and the report
//! formats (table, JSON, tracked markdown).

pub mod batches;
pub mod call_stats;
pub mod cpu;
pub mod progress;
pub mod report;
pub mod runner;
pub mod soak;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use duroxide::provider_stress_tests::parallel_orchestrations::ProviderStressFactory;
use duroxide::providers::Provider;
use duroxide_pg::{PostgresConfig, PostgresProvider};

pub use runner::{RunOptions, RunRecord, run_all};

/// Why a stress run could not be carried out (not: a run with failures).
#[derive(Debug, thiserror::Error)]
pub enum StressError {
    /// A command-line value is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The provider could not be built (connection, schema, migrations).
    #[error("{0}")]
    Provider(#[from] duroxide_pg::Error),
    /// The local throwaway cluster could not be started.
    #[error("{0}")]
    Cluster(#[from] duroxide_pg_testkit::local_cluster::ClusterError),
    /// Anything else that stopped a run.
    #[error("{0}")]
    Run(String),
}

/// One orchestrator:worker dispatcher-slot pair of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Concurrency {
    /// Orchestration dispatcher slots.
    pub orch: usize,
    /// Worker dispatcher slots.
    pub worker: usize,
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.orch, self.worker)
    }
}

/// The concurrency matrix: `1:1,2:2,4:4` (the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix(pub Vec<Concurrency>);

impl Default for Matrix {
    fn default() -> Self {
        Self(vec![
            Concurrency { orch: 1, worker: 1 },
            Concurrency { orch: 2, worker: 2 },
            Concurrency { orch: 4, worker: 4 },
        ])
    }
}

impl FromStr for Matrix {
    type Err = StressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            StressError::InvalidArgument(format!(
                "invalid matrix {s:?}: {why} (expected orch:worker pairs such as 1:1,2:2,4:4)"
            ))
        };
        let mut entries = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (o, w) = part
                .split_once(':')
                .ok_or_else(|| bad(&format!("{part:?} has no ':'")))?;
            let parse = |v: &str| match v.trim().parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => Ok(n),
                _ => Err(bad(&format!("{v:?} is not a slot count between 1 and 256"))),
            };
            entries.push(Concurrency {
                orch: parse(o)?,
                worker: parse(w)?,
            });
        }
        Ok(Self(entries))
    }
}

/// The named configurations BENCHMARKS.md compares providers on
/// (`--preset`): dispatcher slots, orchestrations in flight, activities
/// per orchestration and each activity's duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// P, provider-bound: 4:4 slots, 100 in flight, 5 activities of 0 ms.
    P,
    /// D, the default-like load: 2:2 slots, 20 in flight, 5 activities of 10 ms.
    D,
    /// W, many worker slots running I/O-bound activities as services do:
    /// 4:64 slots, 300 in flight, 5 activities of 50 ms.
    W,
}

impl Preset {
    /// (matrix, orchestrations in flight, activities each, activity ms).
    pub fn settings(self) -> (Matrix, usize, usize, u64) {
        let slots = |orch, worker| Matrix(vec![Concurrency { orch, worker }]);
        match self {
            Preset::P => (slots(4, 4), 100, 5, 0),
            Preset::D => (slots(2, 2), 20, 5, 10),
            Preset::W => (slots(4, 64), 300, 5, 50),
        }
    }
}

/// The most orchestrations per second the worker slots allow when every
/// activity takes `activity_ms` and nothing else takes any time: slots ×
/// 1000 / activity_ms / activities each. `None` for 0 ms activities (the
/// provider, not the slots, is then the limit). Runs report it twice: at the
/// nominal length and at the length the sleep probe measured
/// ([`call_stats`](crate::call_stats)).
pub fn slot_ceiling(worker_slots: usize, tasks: usize, activity_ms: f64) -> Option<f64> {
    (activity_ms > 0.0 && tasks > 0)
        .then(|| worker_slots as f64 * 1000.0 / activity_ms / tasks as f64)
}

/// Which stress scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scenario {
    /// Fan-out/fan-in orchestrations launched continuously.
    Parallel,
    /// Long sequential chains with 10-100 KB payloads and sub-orchestrations.
    LargePayload,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::Parallel => "parallel",
            Scenario::LargePayload => "large-payload",
        })
    }
}

/// The providers a run compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ProviderKind {
    /// duroxide-pg (this repository).
    Postgres,
    /// The published duroxide-pg 0.1.38 crate from crates.io (feature `published`).
    Published,
    /// duroxide's bundled SQLite provider, file-backed.
    Sqlite,
}

impl ProviderKind {
    /// Every kind, in report order.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Postgres,
        ProviderKind::Published,
        ProviderKind::Sqlite,
    ];
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::Postgres => "postgres",
            ProviderKind::Published => "published",
            ProviderKind::Sqlite => "sqlite",
        })
    }
}

/// `ProviderStressFactory` for PostgreSQL: every provider gets a schema of
/// its own (`<prefix>_<pid>_<n>`), dropped by [`PgStressFactory::cleanup`].
pub struct PgStressFactory {
    url: String,
    prefix: String,
    retention: Option<duroxide_pg::RetentionPolicy>,
    queue_vacuum: Option<std::time::Duration>,
    created: std::sync::Mutex<Vec<Arc<PostgresProvider>>>,
    counter: AtomicU64,
}

impl PgStressFactory {
    /// A factory on `url` whose schemas start with `prefix`.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            retention: None,
            queue_vacuum: None,
            created: Default::default(),
            counter: AtomicU64::new(0),
        }
    }

    /// Providers built from now on sweep their store by `policy` in the
    /// background (`--retention-keep`).
    pub fn with_retention(mut self, policy: Option<duroxide_pg::RetentionPolicy>) -> Self {
        self.retention = policy;
        self
    }

    /// Providers built from now on vacuum their queue tables every
    /// `interval` (`--queue-vacuum`).
    pub fn with_queue_vacuum(mut self, interval: Option<std::time::Duration>) -> Self {
        self.queue_vacuum = interval;
        self
    }

    /// The URL this factory connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Builds a provider on a fresh schema.
    ///
    /// # Errors
    /// The provider's construction error.
    pub async fn try_create(&self) -> Result<Arc<PostgresProvider>, duroxide_pg::Error> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let schema = format!("{}_{}_{n}", self.prefix, std::process::id());
        let mut config = PostgresConfig::new(&self.url)
            .with_schema(schema)
            .with_queue_vacuum(self.queue_vacuum);
        if let Some(policy) = &self.retention {
            config = config.with_retention(policy.clone());
        }
        let provider = Arc::new(PostgresProvider::connect(config).await?);
        self.created
            .lock()
            .expect("factory lock")
            .push(Arc::clone(&provider));
        Ok(provider)
    }

    /// Drops every schema this factory created.
    ///
    /// # Errors
    /// The first failure to drop a schema.
    pub async fn cleanup(&self) -> Result<(), duroxide_pg::Error> {
        let created = std::mem::take(&mut *self.created.lock().expect("factory lock"));
        for p in created {
            p.cleanup_schema().await?;
            p.pool().close().await;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ProviderStressFactory for PgStressFactory {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        // The trait cannot report errors; the binary calls try_create instead.
        self.try_create()
            .await
            .unwrap_or_else(|e| panic!("cannot create a stress provider: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_parses_pairs() {
        let m: Matrix = "1:1, 8:8".parse().unwrap();
        assert_eq!(
            m.0,
            vec![
                Concurrency { orch: 1, worker: 1 },
                Concurrency { orch: 8, worker: 8 }
            ]
        );
        assert_eq!(Matrix::default().0.len(), 3);
    }

    #[test]
    fn presets_and_their_ceilings() {
        let (m, in_flight, tasks, ms) = Preset::W.settings();
        assert_eq!(
            (m.0[0].orch, m.0[0].worker, in_flight, tasks, ms),
            (4, 64, 300, 5, 50)
        );
        assert_eq!(slot_ceiling(64, 5, 50.0), Some(256.0));
        assert_eq!(slot_ceiling(64, 5, 51.2), Some(250.0));
        assert_eq!(slot_ceiling(2, 5, 10.0), Some(40.0));
        assert_eq!(slot_ceiling(4, 5, 0.0), None);
    }

    #[test]
    fn matrix_rejects_garbage() {
        for bad in [
            "", "1", "1:", "a:b", "0:1", "1:1,,2:2", "1:1:1", "1:-2", "999:1",
        ] {
            let e = bad.parse::<Matrix>().unwrap_err().to_string();
            assert!(e.starts_with("invalid matrix"), "{bad}: {e}");
            assert!(!e.contains('\n'));
        }
    }
}
