//! The provider's own metrics (`duroxide_pg::metrics`), recorded with
//! metrics-util's `DebuggingRecorder` installed for this test's thread only:
//! each metric named in docs/metrics.md moves when its event happens.

use duroxide_pg_testkit::harness as common;

use std::time::Duration;

use duroxide::providers::{Provider, ProviderAdmin, TagFilter};
use duroxide_pg::metrics as m;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

const LEASE: Duration = Duration::from_secs(30);

/// Every recorded value of `name` whose labels include all of `labels`.
fn values(snap: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> Vec<DebugValue> {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, _, _, value)| value)
        .collect()
}

fn counter(snap: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> u64 {
    values(snap, name, labels)
        .into_iter()
        .map(|v| match v {
            DebugValue::Counter(n) => n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn gauge(snap: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> f64 {
    match values(snap, name, labels).as_slice() {
        [DebugValue::Gauge(v)] => v.into_inner(),
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

#[test]
fn each_metric_moves_when_its_event_happens() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Local to this thread; the current-thread runtime polls every task of
    // the provider (listener, prefetch release) on it.
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let p = common::fresh_provider("metrics").await;
            let schema = p.schema_name().to_string();
            let s = schema.as_str();
            let any = TagFilter::default();

            // Construction ran the migrations.
            assert_eq!(
                counter(
                    &snap,
                    m::MIGRATION_RUNS,
                    &[("schema", s), ("outcome", "applied")]
                ),
                1
            );

            // A waiting fetch woken by a notification.
            let (fetched, ()) = tokio::join!(
                p.fetch_work_item(LEASE, Duration::from_secs(5), None, &any),
                async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    p.enqueue_for_worker(common::activity_item("m-1", 1))
                        .await
                        .unwrap();
                }
            );
            let (_, token, _) = fetched.unwrap().expect("woken by the enqueue");
            assert_eq!(
                counter(
                    &snap,
                    m::WAKEUPS,
                    &[
                        ("schema", s),
                        ("queue", "worker"),
                        ("reason", "notification")
                    ]
                ),
                1
            );
            p.ack_work_item(&token, None).await.unwrap();

            // A waiting fetch woken at a delayed item's visible time.
            p.enqueue_for_orchestrator(
                common::start_item("m-timer", "Timed"),
                Some(Duration::from_millis(300)),
            )
            .await
            .unwrap();
            let (_, token, _) = p
                .fetch_orchestration_item(LEASE, Duration::from_secs(5), None)
                .await
                .unwrap()
                .expect("visible after 300 ms");
            assert!(
                counter(
                    &snap,
                    m::WAKEUPS,
                    &[
                        ("schema", s),
                        ("queue", "orchestrator"),
                        ("reason", "timer")
                    ]
                ) >= 1
            );
            p.abandon_orchestration_item(&token, None, true)
                .await
                .unwrap();

            // A failed call, by SQLSTATE class.
            let err = p.ack_work_item("no-such-token", None).await.unwrap_err();
            assert!(!err.is_retryable());
            assert_eq!(
                counter(
                    &snap,
                    m::ERRORS,
                    &[
                        ("operation", "ack_work_item"),
                        ("sqlstate_class", "DX"),
                        ("retryable", "false")
                    ]
                ),
                1
            );

            // Leases taken over after their holder let them expire: worker...
            p.enqueue_for_worker(common::activity_item("m-2", 2))
                .await
                .unwrap();
            let short = Duration::from_millis(200);
            assert!(
                p.fetch_work_item(short, Duration::ZERO, None, &any)
                    .await
                    .unwrap()
                    .is_some()
            );
            assert_eq!(
                counter(
                    &snap,
                    m::LEASE_TAKEOVERS,
                    &[("schema", s), ("queue", "worker")]
                ),
                0
            );
            tokio::time::sleep(Duration::from_millis(400)).await;
            let (_, token, attempts) = p
                .fetch_work_item(LEASE, Duration::ZERO, None, &any)
                .await
                .unwrap()
                .expect("the expired lease");
            assert_eq!(attempts, 2);
            assert_eq!(
                counter(
                    &snap,
                    m::LEASE_TAKEOVERS,
                    &[("schema", s), ("queue", "worker")]
                ),
                1
            );
            p.ack_work_item(&token, None).await.unwrap();
            // ...and orchestrator (the timed instance, fetched and let expire).
            let (_, _, _) = p
                .fetch_orchestration_item(short, Duration::ZERO, None)
                .await
                .unwrap()
                .expect("the timed instance again");
            tokio::time::sleep(Duration::from_millis(400)).await;
            let taken = p
                .fetch_orchestration_item(LEASE, Duration::ZERO, None)
                .await
                .unwrap();
            assert!(taken.is_some());
            assert_eq!(
                counter(
                    &snap,
                    m::LEASE_TAKEOVERS,
                    &[("schema", s), ("queue", "orchestrator")]
                ),
                1
            );

            // Worker prefetch: the ack leases activity 4, the next fetch uses it.
            for id in [3, 4] {
                p.enqueue_for_worker(common::activity_item("m-3", id))
                    .await
                    .unwrap();
            }
            let (_, token, _) = p
                .fetch_work_item(LEASE, Duration::ZERO, None, &any)
                .await
                .unwrap()
                .unwrap();
            p.ack_work_item(&token, None).await.unwrap();
            let (_, token, _) = p
                .fetch_work_item(LEASE, Duration::ZERO, None, &any)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                counter(
                    &snap,
                    m::PREFETCH,
                    &[("schema", s), ("queue", "worker"), ("outcome", "used")]
                ),
                1
            );
            p.ack_work_item(&token, None).await.unwrap();

            // The pool: a provider whose connections last 1 ms must open a new
            // one for each call after a pause (deterministic, unlike racing
            // calls); its gauges show everything idle afterwards.
            let opened_before = counter(&snap, m::POOL_CONNECTIONS_OPENED, &[("schema", s)]);
            let short_lived = duroxide_pg::PostgresProvider::connect(
                duroxide_pg::PostgresConfig::new(common::database_url())
                    .with_schema(s)
                    .with_poll_mode(duroxide_pg::PollMode::PollOnly)
                    .with_max_lifetime(Some(Duration::from_millis(1))),
            )
            .await
            .unwrap();
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                short_lived.list_instances().await.unwrap();
            }
            // (A snapshot drains histograms: read it first.)
            let waits = values(&snap, m::POOL_ACQUIRE_WAIT, &[("schema", s)]);
            assert!(
                matches!(waits.as_slice(), [DebugValue::Histogram(h)] if h.len() >= 3),
                "{waits:?}"
            );
            let opened_after = counter(&snap, m::POOL_CONNECTIONS_OPENED, &[("schema", s)]);
            assert!(
                opened_after >= opened_before + 3,
                "{opened_before} -> {opened_after}"
            );
            let p = short_lived;
            let open = p.pool_status().open as f64;
            assert_eq!(
                gauge(
                    &snap,
                    m::POOL_CONNECTIONS,
                    &[("schema", s), ("state", "in_use")]
                ),
                0.0
            );
            assert_eq!(
                gauge(
                    &snap,
                    m::POOL_CONNECTIONS,
                    &[("schema", s), ("state", "idle")]
                ),
                open
            );

            p.cleanup_schema().await.unwrap();
        });
    });
}

/// Records every span named `.1` (and every later record of any span): its
/// fields as `name=value` text.
#[derive(Clone)]
struct SpanLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>, &'static str);

impl SpanLog {
    fn of(name: &'static str) -> Self {
        Self(Default::default(), name)
    }
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!("{}={} ", field.name(), value));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanLog {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == self.1 {
            let mut text = String::new();
            attrs.record(&mut Fields(&mut text));
            self.0.lock().unwrap().push(text);
        }
    }
    fn on_record(
        &self,
        _: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut text = String::from("recorded ");
        values.record(&mut Fields(&mut text));
        self.0.lock().unwrap().push(text);
    }
}

#[test]
fn each_call_has_a_span_with_its_operation_and_instance() {
    use tracing_subscriber::layer::SubscriberExt;
    let log = SpanLog::of("duroxide_pg.call");
    let subscriber = tracing_subscriber::registry().with(log.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let p = common::fresh_provider("spans").await;
            p.enqueue_for_worker(common::activity_item("span-inst", 1))
                .await
                .unwrap();
            let (_, token, _) = p
                .fetch_work_item(LEASE, Duration::ZERO, None, &TagFilter::default())
                .await
                .unwrap()
                .unwrap();
            p.ack_work_item(&token, None).await.unwrap();
            assert!(p.read("span-inst").await.unwrap().is_empty());
            p.cleanup_schema().await.unwrap();
            let log = log.0.lock().unwrap().clone();
            let text = log.join("\n");
            for expected in [
                "operation=enqueue_for_worker",
                "operation=fetch_work_item",
                "recorded instance=span-inst",
                "operation=ack_work_item",
                "operation=read instance=span-inst",
            ] {
                assert!(text.contains(expected), "{expected} missing in:\n{text}");
            }
            // The lease token is never a field.
            assert!(!text.contains(&token), "{text}");
        });
    });
}

#[test]
fn a_retention_sweep_records_its_metrics_and_span() {
    use tracing_subscriber::layer::SubscriberExt;
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let log = SpanLog::of("duroxide_pg.retention_sweep");
    let subscriber = tracing_subscriber::registry().with(log.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _tracing = tracing::subscriber::set_default(subscriber);
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let p = common::fresh_provider("metrics_retention").await;
            let s = p.schema_name().to_string();
            for id in ["old-a", "old-b"] {
                common::instance_after_first_turn(&p, id, None, Some("Completed")).await;
            }
            common::age_completions(&p, &["old-a", "old-b"], Duration::from_secs(2 * 86_400)).await;
            let policy =
                duroxide_pg::RetentionPolicy::new().keep_completed_for(Duration::from_secs(86_400));

            let r = p
                .run_retention(&policy, Some("metrics"), false)
                .await
                .unwrap();
            assert_eq!(r.instances, 2);
            let deleted = |kind| {
                counter(
                    &snap,
                    m::RETENTION_DELETED,
                    &[("schema", &s), ("kind", kind)],
                )
            };
            assert_eq!(deleted("instances"), 2);
            assert_eq!(deleted("executions"), 2);
            assert_eq!(deleted("events"), r.events);
            let sweeps = |outcome| {
                counter(
                    &snap,
                    m::RETENTION_SWEEPS,
                    &[("schema", &s), ("outcome", outcome)],
                )
            };
            assert_eq!(sweeps("completed"), 1);
            assert_eq!(
                values(&snap, m::RETENTION_SWEEP_DURATION, &[("schema", &s)]).len(),
                1
            );

            // Another sweeper holds the lease: this one skips, and says so.
            let held: bool = sqlx::query_scalar(&format!(
                "SELECT \"{s}\".retention_acquire('elsewhere', \
                 (extract(epoch FROM now()) * 1000)::bigint, 600000, NULL)"
            ))
            .fetch_one(p.pool())
            .await
            .unwrap();
            assert!(held);
            let r = p
                .run_retention(&policy, Some("metrics"), false)
                .await
                .unwrap();
            assert!(!r.ran);
            assert_eq!(sweeps("skipped"), 1);
            // A dry run records nothing.
            p.run_retention(&policy, None, true).await.unwrap();
            assert_eq!(sweeps("completed") + sweeps("skipped"), 2);
            assert_eq!(
                counter(&snap, m::RETENTION_BATCH_TIMEOUTS, &[("schema", &s)]),
                0
            );

            p.cleanup_schema().await.unwrap();
        });
    });
    let text = log.0.lock().unwrap().join("\n");
    for expected in [
        "owner=metrics",
        "dry_run=false",
        "recorded instances=2",
        "outcome=completed",
        "outcome=skipped",
    ] {
        assert!(text.contains(expected), "{expected} missing in:\n{text}");
    }
}
