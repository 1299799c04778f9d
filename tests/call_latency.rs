//! Benchmark, on demand: p50/p99 of each hot provider call on an empty store
//! and on the three large stores of the performance issue, in one run:
//!
//! - `timers`: 100,000 timers pending in the future (orchestrator queue);
//! - `locked`: 100,000 messages queued for 100 instances whose leases are held
//!   (stored as an enqueue during a lease stores them: held for the lease);
//! - `delayed`: 200,000 delayed worker rows (visible in an hour).
//!
//! Each sample is one orchestration turn and one activity of a fresh
//! instance, so every fetch has exactly one item it may take.
//!
//! `cargo nextest run --release --test call_latency --run-ignored only --no-capture`

use duroxide_pg_testkit::harness as common;

use std::time::{Duration, Instant};

use duroxide::providers::{Provider, TagFilter, WorkItem};
use duroxide_pg::PostgresProvider;

const SAMPLES: usize = 300;
const LOCK: Duration = Duration::from_secs(30);
const CALLS: [&str; 7] = [
    "enqueue_for_orchestrator",
    "fetch_orchestration_item",
    "ack_orchestration_item",
    "fetch_work_item",
    "ack_work_item",
    "read",
    "enqueue_for_worker",
];

/// Fills the store `kind` with rows no sample can take (SQL straight into the
/// tables: the point is their number, not how they got there).
async fn fill(p: &PostgresProvider, kind: &str) {
    let s = format!("\"{}\"", p.schema_name());
    let hour_ahead = "(extract(epoch FROM now()) * 1000)::bigint + 3600000";
    let sql = match kind {
        "empty" => return,
        "timers" => format!(
            "INSERT INTO {s}.orchestrator_queue (instance_id, kind, work_item, visible_at)
             SELECT 'timer-' || g, 'TimerFired', '{{}}', {hour_ahead}
               FROM generate_series(1, 100000) g"
        ),
        "locked" => format!(
            "INSERT INTO {s}.instance_locks (instance_id, lock_token, locked_until, locked_at)
             SELECT 'busy-' || g, 'held-' || g, {hour_ahead}, 0 FROM generate_series(1, 100) g;
             INSERT INTO {s}.orchestrator_queue (instance_id, kind, work_item, visible_at, lock_token)
             SELECT 'busy-' || (g % 100 + 1), 'ExternalRaised', '{{}}', 0,
                    'held:held-' || (g % 100 + 1)
               FROM generate_series(1, 100000) g"
        ),
        "delayed" => format!(
            "INSERT INTO {s}.worker_queue (work_item, visible_at, instance_id, execution_id, activity_id)
             SELECT '{{}}', {hour_ahead}, 'later-' || g, 1, 1 FROM generate_series(1, 200000) g"
        ),
        other => panic!("unknown store {other}"),
    };
    sqlx::raw_sql(&sql).execute(p.pool()).await.unwrap();
    sqlx::raw_sql(&format!(
        "ANALYZE {s}.orchestrator_queue; ANALYZE {s}.worker_queue; ANALYZE {s}.instance_locks"
    ))
    .execute(p.pool())
    .await
    .unwrap();
}

/// One sample: a turn that schedules one activity, the activity, a read.
async fn sample(p: &PostgresProvider, n: usize, times: &mut [Vec<f64>; 7]) {
    let instance = format!("sample-{n}");
    let mut timed = |i: usize, t: Instant| times[i].push(t.elapsed().as_secs_f64() * 1000.0);

    let t = Instant::now();
    p.enqueue_for_orchestrator(common::start_item(&instance, "Bench"), None)
        .await
        .unwrap();
    timed(0, t);
    let t = Instant::now();
    let (item, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the sample's instance");
    timed(1, t);
    assert_eq!(item.instance, instance);
    let t = Instant::now();
    p.ack_orchestration_item(
        &token,
        1,
        vec![common::started_event(&instance, "Bench")],
        vec![common::activity_item(&instance, 2)],
        vec![],
        common::naming_metadata("Bench"),
        vec![],
    )
    .await
    .unwrap();
    timed(2, t);
    let t = Instant::now();
    let (_, token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
        .expect("the sample's activity");
    timed(3, t);
    let completion = WorkItem::ActivityCompleted {
        instance: instance.clone(),
        execution_id: 1,
        id: 2,
        result: "ok".into(),
    };
    let t = Instant::now();
    p.ack_work_item(&token, Some(completion)).await.unwrap();
    timed(4, t);
    let t = Instant::now();
    assert_eq!(p.read(&instance).await.unwrap().len(), 1);
    timed(5, t);
    // The completion waits in the orchestrator queue; take it out of the way
    // (not timed) so the next sample's fetch sees only its own instance.
    let (_, token, _) = p
        .fetch_orchestration_item(LOCK, Duration::ZERO, None)
        .await
        .unwrap()
        .expect("the completion");
    p.ack_orchestration_item(
        &token,
        1,
        vec![],
        vec![],
        vec![],
        Default::default(),
        vec![],
    )
    .await
    .unwrap();
    let t = Instant::now();
    p.enqueue_for_worker(common::activity_item(&format!("spare-{n}"), 1))
        .await
        .unwrap();
    timed(6, t);
    let (_, token, _) = p
        .fetch_work_item(LOCK, Duration::ZERO, None, &TagFilter::default())
        .await
        .unwrap()
        .expect("the spare activity");
    p.ack_work_item(&token, None).await.unwrap();
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand (see the file header)"]
async fn provider_call_latency_on_empty_and_large_stores() {
    let stores = ["empty", "timers", "locked", "delayed"];
    let mut results: Vec<[(f64, f64); 7]> = Vec::new();
    for store in stores {
        let p = common::fresh_provider(&format!("lat_{store}")).await;
        fill(&p, store).await;
        let mut times: [Vec<f64>; 7] = Default::default();
        for n in 0..20 {
            sample(&p, n, &mut times).await; // warm-up: prepared statements, caches
        }
        times = Default::default();
        for n in 20..20 + SAMPLES {
            sample(&p, n, &mut times).await;
        }
        let mut row = [(0.0, 0.0); 7];
        for (i, mut t) in times.into_iter().enumerate() {
            t.sort_by(f64::total_cmp);
            row[i] = (percentile(&t, 50), percentile(&t, 99));
        }
        results.push(row);
        p.cleanup_schema().await.unwrap();
    }
    println!("\np50 / p99 in ms ({SAMPLES} samples each); ratio = p50 / empty p50");
    println!(
        "{:<26} {:>15} {:>23} {:>23} {:>23}",
        "call", "empty", "timers 100k", "locked 100x1000", "delayed 200k"
    );
    for (i, call) in CALLS.iter().enumerate() {
        let (e50, e99) = results[0][i];
        let mut line = format!("{call:<26} {e50:>6.2} / {e99:>6.2}");
        for r in &results[1..] {
            let (p50, p99) = r[i];
            line.push_str(&format!(" {p50:>6.2} / {p99:>6.2} ({:>4.1}x)", p50 / e50));
        }
        println!("{line}");
    }
}
