//! Calls per statement of duroxide-pg's coalesced operations during a run,
//! from the provider's `duroxide_pg_batch_members` histogram
//! (`duroxide_pg::metrics::BATCH_MEMBERS`).
//!
//! pg-stress installs [`BatchRecorder`] as the process's metrics recorder.
//! It keeps that one histogram, as counters, and drops every other metric
//! (duroxide's own included) at no cost, so the throughput it runs beside is
//! not disturbed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Upper bounds of the histogram's buckets: statements that carried 1, 2-4,
/// 5-16 and 17-64 calls.
const BUCKETS: [u64; 4] = [1, 4, 16, 64];

/// One operation's statements.
#[derive(Default)]
struct Tally {
    statements: AtomicU64,
    calls: AtomicU64,
    max: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl HistogramFn for Tally {
    fn record(&self, value: f64) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let calls = value.max(0.0) as u64;
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(calls, Ordering::Relaxed);
        self.max.fetch_max(calls, Ordering::Relaxed);
        let bucket = BUCKETS
            .iter()
            .position(|&upper| calls <= upper)
            .unwrap_or(BUCKETS.len() - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// Each operation's tally, by its `operation` label.
type Tallies = Vec<(String, Arc<Tally>)>;

/// The recorder: one [`Tally`] per `operation` label.
#[derive(Clone, Default)]
pub struct BatchRecorder {
    tallies: Arc<Mutex<Tallies>>,
}

/// One coalesced operation's statements during a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BatchSummary {
    /// The operation (`ack_work_item`).
    pub operation: String,
    /// Statements sent.
    pub statements: u64,
    /// Calls they carried.
    pub calls: u64,
    /// Most calls one statement carried.
    pub max: u64,
    /// Statements by calls carried: 1, 2-4, 5-16, 17-64.
    pub histogram: [u64; 4],
}

impl BatchRecorder {
    /// This process's recorder, installed on first use; `None` when the
    /// process had another one already.
    pub fn global() -> Option<&'static Self> {
        static GLOBAL: std::sync::OnceLock<Option<BatchRecorder>> = std::sync::OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let recorder = Self::default();
                metrics::set_global_recorder(recorder.clone()).ok()?;
                Some(recorder)
            })
            .as_ref()
    }

    /// The statements since the last call, per operation, by name; the
    /// tallies start again from zero.
    pub fn drain(&self) -> Vec<BatchSummary> {
        let tallies = self.tallies.lock().expect("batch tallies");
        let mut out: Vec<BatchSummary> = tallies
            .iter()
            .map(|(operation, t)| BatchSummary {
                operation: operation.clone(),
                statements: t.statements.swap(0, Ordering::Relaxed),
                calls: t.calls.swap(0, Ordering::Relaxed),
                max: t.max.swap(0, Ordering::Relaxed),
                histogram: std::array::from_fn(|i| t.buckets[i].swap(0, Ordering::Relaxed)),
            })
            .filter(|s| s.statements > 0)
            .collect();
        out.sort_by(|a, b| a.operation.cmp(&b.operation));
        out
    }
}

impl Recorder for BatchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() != duroxide_pg::metrics::BATCH_MEMBERS {
            return Histogram::noop();
        }
        let Some(operation) = key.labels().find(|l| l.key() == "operation") else {
            return Histogram::noop();
        };
        let mut tallies = self.tallies.lock().expect("batch tallies");
        let tally = match tallies.iter().find(|(op, _)| op == operation.value()) {
            Some((_, t)) => Arc::clone(t),
            None => {
                let t = Arc::new(Tally::default());
                tallies.push((operation.value().to_string(), Arc::clone(&t)));
                t
            }
        };
        Histogram::from_arc(tally)
    }
}

/// The table printed after a run.
pub fn table(summaries: &[BatchSummary]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<16} {:>10} {:>8} {:>10} {:>4} {:>8} {:>8} {:>8} {:>8}\n",
        "coalesced", "statements", "calls", "calls/stmt", "max", "1", "2-4", "5-16", "17-64"
    );
    for s in summaries {
        #[allow(clippy::cast_precision_loss)]
        let per = s.calls as f64 / s.statements.max(1) as f64;
        let [one, few, some, many] = s.histogram;
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>8} {:>10.2} {:>4} {:>8} {:>8} {:>8} {:>8}",
            s.operation, s.statements, s.calls, per, s.max, one, few, some, many
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_tallied_per_operation_and_drained() {
        let r = BatchRecorder::default();
        let key = Key::from_parts(
            duroxide_pg::metrics::BATCH_MEMBERS,
            vec![metrics::Label::new("operation", "ack_work_item")],
        );
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let h = r.register_histogram(&key, &meta);
        for v in [1.0, 1.0, 3.0, 9.0, 64.0] {
            h.record(v);
        }
        // Anything else is dropped.
        r.register_histogram(&Key::from_name("other"), &meta)
            .record(5.0);
        let drained = r.drain();
        assert_eq!(
            drained,
            [BatchSummary {
                operation: "ack_work_item".into(),
                statements: 5,
                calls: 78,
                max: 64,
                histogram: [2, 1, 1, 1],
            }]
        );
        assert!(table(&drained).contains("15.60"));
        assert!(r.drain().is_empty(), "drained");
    }
}
