//! Samples taken while a run goes (`--sample-every`), for soak runs: the
//! throughput of each interval, the process's resident memory, and the size
//! and dead tuples of the store's tables. Flat queue tables and a flat RSS
//! over a long run mean no leak and no bloat.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::progress::Progress;

/// The tables a sample reports, queues first.
pub const SAMPLED_TABLES: [&str; 6] = [
    "orchestrator_queue",
    "worker_queue",
    "instance_locks",
    "instances",
    "executions",
    "history",
];

/// One table's size and tuple counts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStat {
    /// Table name.
    pub table: String,
    /// `pg_total_relation_size` (table, indexes, TOAST), bytes.
    pub bytes: i64,
    /// Live tuples (statistics collector's estimate).
    pub live: i64,
    /// Dead tuples not yet vacuumed.
    pub dead: i64,
}

/// One sample.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub at_secs: f64,
    /// Root orchestrations completed since the previous sample.
    pub completed: u64,
    /// Those per second.
    pub per_sec: f64,
    /// Resident set size of this process, KiB (0 where /proc is unavailable).
    pub rss_kib: u64,
    /// The store's tables.
    pub tables: Vec<TableStat>,
}

/// This process's resident memory in KiB, from /proc/self/status.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

async fn table_stats(pool: &PgPool, schema: &str) -> Vec<TableStat> {
    // Unnamed, inside a transaction: safe behind a transaction pooler too.
    let rows: Vec<(String, i64, i64, i64)> = async {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query_as(
            "SELECT relname::text, pg_total_relation_size(relid), n_live_tup, n_dead_tup
               FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = ANY($2)",
        )
        .persistent(false)
        .bind(schema)
        .bind(&SAMPLED_TABLES[..])
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(rows)
    }
    .await
    .unwrap_or_default();
    SAMPLED_TABLES
        .iter()
        .filter_map(|t| rows.iter().find(|r| r.0 == *t))
        .map(|(table, bytes, live, dead)| TableStat {
            table: table.clone(),
            bytes: *bytes,
            live: *live,
            dead: *dead,
        })
        .collect()
}

/// Samples every `every` until aborted; the samples accumulate in the
/// returned list.
pub fn spawn_sampler(
    pool: PgPool,
    schema: String,
    progress: Arc<Progress>,
    every: Duration,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Sample>>>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&samples);
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut last = 0;
        loop {
            tokio::time::sleep(every).await;
            let (_, completed, _) = progress.snapshot();
            let sample = Sample {
                at_secs: started.elapsed().as_secs_f64(),
                completed: completed - last,
                per_sec: (completed - last) as f64 / every.as_secs_f64(),
                rss_kib: rss_kib(),
                tables: table_stats(&pool, &schema).await,
            };
            last = completed;
            out.lock().expect("samples").push(sample);
        }
    });
    (task, samples)
}

/// The samples as a text table: time, throughput, RSS, then size / dead
/// tuples of each table.
pub fn table(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut header = format!(
        "{:>7} {:>9} {:>9} {:>9}",
        "t (s)", "completed", "orch/s", "RSS MiB"
    );
    for t in SAMPLED_TABLES {
        let _ = write!(header, " {:>22}", format!("{t} kB/dead"));
    }
    let _ = writeln!(out, "{header}");
    for s in samples {
        let mut line = format!(
            "{:>7.0} {:>9} {:>9.2} {:>9.1}",
            s.at_secs,
            s.completed,
            s.per_sec,
            s.rss_kib as f64 / 1024.0
        );
        for t in SAMPLED_TABLES {
            let cell = s
                .tables
                .iter()
                .find(|x| x.table == t)
                .map_or("-".to_string(), |x| {
                    format!("{}/{}", x.bytes / 1024, x.dead)
                });
            let _ = write!(line, " {cell:>22}");
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_rss() {
        assert!(rss_kib() > 0);
    }
}
