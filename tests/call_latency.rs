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
//! A second benchmark puts the same samples on a store holding 1,000,000
//! finished instances (interleaved with an empty store, three rounds), then
//! takes them while a retention sweep deletes those instances, and reports
//! the sweep's throughput.
//!
//! `cargo nextest run --release --profile bench --test call_latency --run-ignored only --no-capture`
//! (the profile allows the sweep benchmark its ~10 minutes)

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

/// `n` finished root instances (Completed, eight days ago), each with one
/// execution and three history events: what months of work leave behind.
async fn fill_finished(p: &PostgresProvider, n: u64) {
    let s = format!("\"{}\"", p.schema_name());
    let old = "(extract(epoch FROM now()) * 1000)::bigint - 8 * 86400000";
    let sql = format!(
        "INSERT INTO {s}.instances (instance_id, orchestration_name, orchestration_version,
                                    created_at, updated_at)
         SELECT 'done-' || g, 'Bench', '1.0.0', {old} - 1000, {old} FROM generate_series(1, {n}) g;
         INSERT INTO {s}.executions (instance_id, execution_id, status, output, started_at, completed_at)
         SELECT 'done-' || g, 1, 'Completed', '\"ok\"', {old} - 1000, {old} + g
           FROM generate_series(1, {n}) g;
         INSERT INTO {s}.history (instance_id, execution_id, event_id, event_data)
         SELECT 'done-' || g, 1, e, repeat('x', 120) FROM generate_series(1, {n}) g, generate_series(1, 3) e;
         ANALYZE {s}.instances; ANALYZE {s}.executions; ANALYZE {s}.history;"
    );
    sqlx::raw_sql(&sql).execute(p.pool()).await.unwrap();
}

/// p50 and p99 of each call's samples.
fn summary(times: [Vec<f64>; 7]) -> [(f64, f64); 7] {
    let mut row = [(0.0, 0.0); 7];
    for (i, mut t) in times.into_iter().enumerate() {
        t.sort_by(f64::total_cmp);
        row[i] = (percentile(&t, 50), percentile(&t, 99));
    }
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand (see the file header)"]
async fn provider_call_latency_with_a_million_finished_instances_and_during_a_sweep() {
    const FINISHED: u64 = 1_000_000;
    let empty = common::fresh_provider("lat_empty").await;
    let full = common::fresh_provider("lat_finished").await;
    let filled = Instant::now();
    fill_finished(&full, FINISHED).await;
    println!(
        "filled {FINISHED} finished instances in {:.0} s",
        filled.elapsed().as_secs_f64()
    );

    // Interleaved: three rounds of an empty block and a full block, 900
    // samples per store (a p99 of 300 moves with two slow samples).
    let mut times: [[Vec<f64>; 7]; 2] = Default::default();
    let mut n = 0;
    for p in [&empty, &full] {
        for _ in 0..20 {
            sample(p, n, &mut [const { Vec::new() }; 7]).await; // warm-up
            n += 1;
        }
    }
    for _round in 0..3 {
        for (store, p) in [&empty, &full].into_iter().enumerate() {
            for _ in 0..SAMPLES {
                sample(p, n, &mut times[store]).await;
                n += 1;
            }
        }
    }
    let [empty_times, full_times] = times;
    let rows = [summary(empty_times), summary(full_times)];

    // The same samples while a sweep deletes the million (default batches
    // and pause), as long as it runs.
    let policy =
        duroxide_pg::RetentionPolicy::new().keep_completed_for(Duration::from_secs(7 * 86_400));
    let full = std::sync::Arc::new(full);
    let sweep = {
        let full = full.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = full.run_retention(&policy, None, false).await.unwrap();
            (r, started.elapsed())
        })
    };
    let mut during: [Vec<f64>; 7] = Default::default();
    while !sweep.is_finished() {
        sample(&full, n, &mut during).await;
        n += 1;
    }
    let (report, took) = sweep.await.unwrap();
    let sampled = during[0].len();
    let during = summary(during);

    println!("\np50 / p99 in ms; ratio = p50 (p99) / empty p50 (p99)");
    println!(
        "{:<26} {:>15} {:>31} {:>31}",
        "call", "empty", "1M finished", "1M finished, sweeping"
    );
    for (i, call) in CALLS.iter().enumerate() {
        let (e50, e99) = rows[0][i];
        let mut line = format!("{call:<26} {e50:>6.2} / {e99:>6.2}");
        for (p50, p99) in [rows[1][i], during[i]] {
            line.push_str(&format!(
                " {p50:>6.2} / {p99:>6.2} ({:>4.2}x / {:>4.2}x)",
                p50 / e50,
                p99 / e99
            ));
        }
        println!("{line}");
    }
    let secs = took.as_secs_f64();
    println!(
        "\nsweep: {} instances, {} executions, {} events in {secs:.1} s ({} batches, {} timeouts): \
         {:.0} instances/s, {:.0} rows/s; {sampled} samples during the sweep",
        report.instances,
        report.executions,
        report.events,
        report.batches,
        report.timeouts,
        report.instances as f64 / secs,
        (report.instances + report.executions + report.events) as f64 / secs,
    );
    assert_eq!(report.instances, FINISHED);
    full.cleanup_schema().await.unwrap();
    empty.cleanup_schema().await.unwrap();
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
