//! Benchmark, on demand: how fast a waiting fetch returns new work.
//!
//! - enqueue -> waiting `fetch_work_item` / `fetch_orchestration_item` returns
//!   (clock starts before the enqueue call, so it includes that round trip);
//! - a delayed message (a timer) -> the waiting fetch returns, measured from
//!   the moment the message became visible.
//!
//! `cargo nextest run --release --test wake_latency --run-ignored only --no-capture`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{Provider, TagFilter};
use duroxide_pg::PostgresProvider;

const SAMPLES: usize = 200;
const LOCK: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_secs(10);

fn percentile(sorted_ms: &[f64], p: usize) -> f64 {
    sorted_ms[(sorted_ms.len() * p / 100).min(sorted_ms.len() - 1)]
}

fn report(what: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&ms, 50), percentile(&ms, 99));
    println!(
        "{what}: n={} p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        ms.len(),
        ms[ms.len() - 1]
    );
    (p50, p99)
}

/// Starts a waiting fetch, gives it time to park, then runs `enqueue`; returns
/// the time from `enqueue`'s start (plus `offset`) to the fetch's return.
async fn one_sample<F, Fut>(
    p: &Arc<PostgresProvider>,
    worker: bool,
    offset: Duration,
    enqueue: F,
) -> f64
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let waiter = {
        let p = Arc::clone(p);
        tokio::spawn(async move {
            let found = if worker {
                p.fetch_work_item(LOCK, POLL, None, &TagFilter::DefaultOnly)
                    .await
                    .unwrap()
                    .is_some()
            } else {
                p.fetch_orchestration_item(LOCK, POLL, None)
                    .await
                    .unwrap()
                    .is_some()
            };
            (Instant::now(), found)
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t0 = Instant::now();
    enqueue().await;
    let (t1, found) = waiter.await.unwrap();
    assert!(found, "the waiting fetch returned nothing");
    (t1.duration_since(t0 + offset)).as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn wake_up_latency() {
    let p = Arc::new(common::fresh_provider("wake").await);
    let mut worker = Vec::new();
    let mut orchestrator = Vec::new();
    let mut timer = Vec::new();
    for i in 0..SAMPLES {
        worker.push(
            one_sample(&p, true, Duration::ZERO, || async {
                let item = common::activity_item(&format!("w{i}"), 1);
                p.enqueue_for_worker(item).await.unwrap();
            })
            .await,
        );
        orchestrator.push(
            one_sample(&p, false, Duration::ZERO, || async {
                p.enqueue_for_orchestrator(common::start_item(&format!("wake-{i}"), "Wake"), None)
                    .await
                    .unwrap();
            })
            .await,
        );
    }
    let delay = Duration::from_millis(100);
    for i in 0..SAMPLES / 4 {
        timer.push(
            one_sample(&p, false, delay, || async {
                p.enqueue_for_orchestrator(
                    common::start_item(&format!("wake-{}", SAMPLES + i), "Wake"),
                    Some(delay),
                )
                .await
                .unwrap();
            })
            .await,
        );
    }
    let (_, _) = report("enqueue -> waiting fetch_work_item", worker);
    let (o50, o99) = report("enqueue -> waiting fetch_orchestration_item", orchestrator);
    let (_, t99) = report(
        "delayed message visible -> waiting fetch_orchestration_item",
        timer,
    );
    p.cleanup_schema().await.unwrap();
    assert!(
        o50 < 5.0 && o99 < 20.0,
        "wake-up p50 {o50:.2} ms / p99 {o99:.2} ms"
    );
    assert!(t99 < 20.0, "timer pick-up p99 {t99:.2} ms");
}
