//! Where a run's time goes: the latency of every provider call, by operation
//! (enabled by `--call-stats`), and how long a tokio sleep of the run's
//! activity length really takes on the loaded machine (the sleep probe, in
//! every run).
//!
//! Why the probe: duroxide's stress activities are `tokio::time::sleep`, and
//! tokio rounds every deadline up to its next 1 ms tick and wakes the task
//! only when a core is free, so a 50 ms activity takes about 51 ms here. The
//! measured sleep, not the nominal length, is what the worker slots can at
//! best turn into activities per second: the ceiling a run is compared with.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the probe sleeps in a run whose activities take no time (config P):
/// config D's activity length, so the row still shows the timer's overshoot.
pub const PROBE_SLEEP_WITHOUT_ACTIVITY_TIME: Duration = Duration::from_millis(10);

/// The operation name the sleep probe records under.
pub const PROBE_NAME: &str = "(tokio sleep, activity length)";

/// The length the sleep probe sleeps in a run whose activities take
/// `activity_ms`.
pub fn probe_length(activity_ms: u64) -> Duration {
    if activity_ms == 0 {
        PROBE_SLEEP_WITHOUT_ACTIVITY_TIME
    } else {
        Duration::from_millis(activity_ms)
    }
}

/// Call latencies collected during one run, in microseconds per operation.
/// Every sample is kept (8 bytes a call): meant for runs of minutes, not soaks.
#[derive(Debug, Default)]
pub struct CallStats {
    samples: Mutex<BTreeMap<&'static str, Vec<u64>>>,
}

/// One operation's summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CallSummary {
    /// Provider method (or the sleep probe).
    pub operation: &'static str,
    /// Calls made.
    pub calls: usize,
    /// Median latency (nearest rank), ms.
    pub p50_ms: f64,
    /// 99th percentile latency (nearest rank), ms.
    pub p99_ms: f64,
    /// Sum of all latencies, ms (long-polling fetches include their wait).
    pub total_ms: f64,
}

impl CallStats {
    /// Records one call of `operation` that took `elapsed`.
    pub fn record(&self, operation: &'static str, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.samples
            .lock()
            .expect("call stats")
            .entry(operation)
            .or_default()
            .push(micros);
    }

    /// Awaits `call`, recording its latency under `operation`.
    pub async fn time<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        self.record(operation, started.elapsed());
        result
    }

    /// The median latency of `operation`, ms (`None` before its first call).
    pub fn median_ms(&self, operation: &str) -> Option<f64> {
        self.summaries()
            .into_iter()
            .find(|s| s.operation == operation)
            .map(|s| s.p50_ms)
    }

    /// Per-operation summaries, by operation name.
    pub fn summaries(&self) -> Vec<CallSummary> {
        let samples = self.samples.lock().expect("call stats");
        samples
            .iter()
            .map(|(&operation, values)| {
                let mut sorted = values.clone();
                sorted.sort_unstable();
                // Nearest rank: the smallest sample with at least q of all at or below it.
                let at = |q: f64| {
                    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
                    sorted[rank - 1] as f64 / 1000.0
                };
                CallSummary {
                    operation,
                    calls: sorted.len(),
                    p50_ms: at(0.5),
                    p99_ms: at(0.99),
                    total_ms: sorted.iter().sum::<u64>() as f64 / 1000.0,
                }
            })
            .collect()
    }

    /// The summaries as an aligned text table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<28} {:>8} {:>9} {:>9} {:>11}\n",
            "operation", "calls", "p50 ms", "p99 ms", "total ms"
        );
        for s in self.summaries() {
            out.push_str(&format!(
                "{:<28} {:>8} {:>9.3} {:>9.3} {:>11.1}\n",
                s.operation, s.calls, s.p50_ms, s.p99_ms, s.total_ms
            ));
        }
        out
    }
}

/// Sleeps `length` in a loop, recording each real duration under
/// [`PROBE_NAME`], until aborted.
pub fn spawn_sleep_probe(stats: Arc<CallStats>, length: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            stats.time(PROBE_NAME, tokio::time::sleep(length)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_report_count_median_tail_and_total() {
        let stats = CallStats::default();
        for ms in 1..=100 {
            stats.record("read", Duration::from_millis(ms));
        }
        stats.record("ack_work_item", Duration::from_micros(1500));
        let s = stats.summaries();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            CallSummary {
                operation: "ack_work_item",
                calls: 1,
                p50_ms: 1.5,
                p99_ms: 1.5,
                total_ms: 1.5
            }
        );
        assert_eq!(s[1].operation, "read");
        assert_eq!(s[1].calls, 100);
        assert_eq!(s[1].p50_ms, 50.0);
        assert_eq!(s[1].p99_ms, 99.0);
        assert_eq!(s[1].total_ms, 5050.0);
        assert!(stats.table().contains("ack_work_item"));
        assert_eq!(stats.median_ms("read"), Some(50.0));
        assert_eq!(stats.median_ms("fetch_work_item"), None);
    }

    #[tokio::test]
    async fn the_probe_measures_sleeps_of_the_activity_length() {
        assert_eq!(probe_length(0), PROBE_SLEEP_WITHOUT_ACTIVITY_TIME);
        assert_eq!(probe_length(50), Duration::from_millis(50));
        let stats = Arc::new(CallStats::default());
        let probe = spawn_sleep_probe(Arc::clone(&stats), probe_length(20));
        while stats.summaries().first().is_none_or(|s| s.calls < 3) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        probe.abort();
        // A sleep never ends early; how late it ends is what the probe is for.
        let median = stats.median_ms(PROBE_NAME).expect("probe samples");
        assert!(median >= 20.0, "median {median} ms");
    }
}
