//! Benchmark, on demand: how fast a waiting fetch returns new work.
//!
//! - enqueue -> waiting `fetch_work_item` / `fetch_orchestration_item` returns
//!   (clock starts before the enqueue call, so it includes that round trip);
//! - a delayed message (a timer) -> the waiting fetch returns, measured from
//!   the moment the message became visible;
//! - work that only one of several waiting fetches may take, the one that
//!   can registered last (so the first hint goes to one that cannot), each
//!   measured from the enqueue (or ack) call's start to that fetch's return:
//!   a session owned by another slot, a tag only one waiter serves, an
//!   instance pinned to a version only one waiter's filter accepts, a
//!   message held by another dispatcher's lease (measured from the ack that
//!   ends the lease), and the session cap (a fetch waiting without sessions
//!   returns when a fetch with sessions starts: measured from that call).
//!   The other waiters behave as runtime slots: each `Ok(None)` is followed
//!   by another fetch (waiting at most 100 ms, so a sample can stop them).
//!
//! `cargo nextest run --release --test wake_latency --run-ignored only --no-capture`

use duroxide_pg_testkit::harness as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, Provider, SemverRange, SessionFetchConfig,
    TagFilter, WorkItem,
};
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

/// A waiting fetch as a runtime slot runs it: fetch again after every
/// `Ok(None)` until something is leased; returns when it was, after acking
/// it (so no lease outlives the sample and expires into a later one).
#[derive(Clone)]
enum Slot {
    Worker(Option<SessionFetchConfig>, TagFilter),
    Orchestrator(Option<DispatcherCapabilityFilter>),
}

impl Slot {
    /// Runs the slot until it leases something or, between two fetches,
    /// `stop` is set; each fetch waits at most `poll`. Never aborted: a fetch
    /// dropped half-way may leave a lease behind that expires into a later
    /// sample.
    fn spawn(
        self,
        p: &Arc<PostgresProvider>,
        poll: Duration,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<Instant> {
        let p = Arc::clone(p);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match &self {
                    Slot::Worker(session, tags) => {
                        let got = p.fetch_work_item(LOCK, poll, session.as_ref(), tags).await;
                        if let Some((_, token, _)) = got.unwrap() {
                            let at = Instant::now();
                            p.ack_work_item(&token, None).await.unwrap();
                            return at;
                        }
                    }
                    Slot::Orchestrator(filter) => {
                        let got = p
                            .fetch_orchestration_item(LOCK, poll, filter.as_ref())
                            .await;
                        if let Some((item, token, _)) = got.unwrap() {
                            let at = Instant::now();
                            let metadata = ExecutionMetadata::default();
                            p.ack_orchestration_item(
                                &token,
                                item.execution_id,
                                vec![],
                                vec![],
                                vec![],
                                metadata,
                                vec![],
                            )
                            .await
                            .unwrap();
                            return at;
                        }
                    }
                }
            }
            Instant::now()
        })
    }
}

/// How long the other slots' fetches wait: they are stopped after each
/// sample, which takes up to this long.
const OTHERS_POLL: Duration = Duration::from_millis(100);

/// Parks `others` and then `target` (last, so a first hint goes to one of
/// the others), runs `trigger`, and returns the time from `trigger`'s start
/// to `target`'s lease. The others are stopped afterwards.
async fn targeted_sample<F, Fut>(
    p: &Arc<PostgresProvider>,
    others: &[Slot],
    target: Slot,
    trigger: F,
) -> f64
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let others: Vec<_> = others
        .iter()
        .map(|s| s.clone().spawn(p, OTHERS_POLL, Arc::clone(&stop)))
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let target = target.spawn(p, POLL, Arc::new(std::sync::atomic::AtomicBool::new(false)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t0 = Instant::now();
    trigger().await;
    let t1 = target.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for o in others {
        o.await.unwrap();
    }
    t1.duration_since(t0).as_secs_f64() * 1000.0
}

fn owner(id: &str) -> Option<SessionFetchConfig> {
    Some(SessionFetchConfig {
        owner_id: id.into(),
        lock_timeout: LOCK,
    })
}

fn session_item(instance: &str, id: u64, session: &str, tag: Option<&str>) -> WorkItem {
    common::activity_item_in(instance, id, Some(session), tag)
}

fn event_for(instance: &str) -> WorkItem {
    WorkItem::ExternalRaised {
        instance: instance.into(),
        name: "Go".into(),
        data: "{}".into(),
    }
}

/// Starts `instance`, its execution pinned to this duroxide version.
async fn start_pinned(p: &PostgresProvider, instance: &str) {
    let (_, token, _) = common::enqueue_and_fetch(p, common::start_item(instance, "Wake"))
        .await
        .expect("the new instance");
    p.ack_orchestration_item(
        &token,
        1,
        vec![common::started_event(instance, "Wake")],
        vec![],
        vec![],
        ExecutionMetadata {
            pinned_duroxide_version: Some(semver::Version::new(0, 1, 32)),
            ..common::naming_metadata("Wake")
        },
        vec![],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn wake_up_latency_when_only_one_waiter_may_take_the_work() {
    const N: usize = SAMPLES / 2;
    let p = Arc::new(common::fresh_provider("wake_kinds").await);
    let plain = Slot::Worker(None, TagFilter::DefaultOnly);
    let mut session = Vec::new();
    let mut tag = Vec::new();
    let mut version = Vec::new();
    let mut lease = Vec::new();
    let mut cap = Vec::new();
    let old = DispatcherCapabilityFilter {
        supported_duroxide_versions: vec![SemverRange::new(
            semver::Version::new(0, 0, 1),
            semver::Version::new(0, 0, 9),
        )],
    };
    for i in 0..N {
        // A session owned by slot c (it ran the session's previous activity).
        let s = format!("s{i}");
        p.enqueue_for_worker(session_item("sess", 1, &s, None))
            .await
            .unwrap();
        let (_, t, _) = p
            .fetch_work_item(
                LOCK,
                Duration::ZERO,
                owner("c").as_ref(),
                &TagFilter::DefaultOnly,
            )
            .await
            .unwrap()
            .unwrap();
        p.ack_work_item(&t, None).await.unwrap();
        let slots = [
            Slot::Worker(owner("a"), TagFilter::DefaultOnly),
            Slot::Worker(owner("b"), TagFilter::DefaultOnly),
        ];
        session.push(
            targeted_sample(
                &p,
                &slots,
                Slot::Worker(owner("c"), TagFilter::DefaultOnly),
                || async {
                    p.enqueue_for_worker(session_item("sess", 2, &s, None))
                        .await
                        .unwrap();
                },
            )
            .await,
        );

        // A tag only one waiter serves.
        tag.push(
            targeted_sample(
                &p,
                &[plain.clone(), plain.clone()],
                Slot::Worker(None, TagFilter::tags(["gpu"])),
                || async {
                    let mut item = common::activity_item(&format!("tag{i}"), 1);
                    if let WorkItem::ActivityExecute { tag, .. } = &mut item {
                        *tag = Some("gpu".into());
                    }
                    p.enqueue_for_worker(item).await.unwrap();
                },
            )
            .await,
        );

        // An instance pinned to a version only one waiter's filter accepts.
        let pinned = format!("pinned-{i}");
        start_pinned(&p, &pinned).await;
        let olds = [
            Slot::Orchestrator(Some(old.clone())),
            Slot::Orchestrator(Some(old.clone())),
        ];
        let v = targeted_sample(&p, &olds, Slot::Orchestrator(None), || async {
            p.enqueue_for_orchestrator(event_for(&pinned), None)
                .await
                .unwrap();
        })
        .await;
        version.push(v);

        // A message held by another dispatcher's lease, free when it acks.
        let leased = format!("leased-{i}");
        common::start_instance(&p, &leased, "Wake").await;
        p.enqueue_for_orchestrator(event_for(&leased), None)
            .await
            .unwrap();
        let (_, holder, _) = common::fetch_orchestration_now(&p).await.unwrap();
        p.enqueue_for_orchestrator(event_for(&leased), None)
            .await
            .unwrap();
        lease.push(
            targeted_sample(&p, &[], Slot::Orchestrator(None), || async {
                p.ack_orchestration_item(
                    &holder,
                    1,
                    vec![],
                    vec![],
                    vec![],
                    ExecutionMetadata::default(),
                    vec![],
                )
                .await
                .unwrap();
            })
            .await,
        );

        // The session cap: a fetch waiting without sessions returns when a
        // fetch with sessions starts (the runtime then calls again).
        let waiting = {
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                let got = p
                    .fetch_work_item(LOCK, POLL, None, &TagFilter::DefaultOnly)
                    .await
                    .unwrap();
                (Instant::now(), got.is_none())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        let resumed = p
            .fetch_work_item(
                LOCK,
                Duration::ZERO,
                owner("d").as_ref(),
                &TagFilter::DefaultOnly,
            )
            .await
            .unwrap();
        assert!(resumed.is_none());
        let (t1, returned_empty) = waiting.await.unwrap();
        assert!(returned_empty);
        cap.push(t1.duration_since(t0).as_secs_f64() * 1000.0);
    }
    let mut worst = Vec::new();
    for (what, ms) in [
        ("session owned by the last of 3 waiting slots", session),
        ("tag served by the last of 3 waiters", tag),
        ("version accepted by the last of 3 waiters", version),
        ("message held by a lease -> ack -> waiting fetch", lease),
        (
            "fetch with sessions starts -> waiting fetch without sessions returns",
            cap,
        ),
    ] {
        let (p50, p99) = report(what, ms);
        worst.push((what, p50, p99));
    }
    p.cleanup_schema().await.unwrap();
    for (what, p50, p99) in worst {
        assert!(
            p50 < 5.0 && p99 < 20.0,
            "{what}: p50 {p50:.2} ms / p99 {p99:.2} ms"
        );
    }
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
