//! Shared helpers of the end-to-end scenarios: a per-test environment (fresh
//! schema, client, runtimes started with test-friendly options, cleanup),
//! waiting for observable conditions with a deadline, and reading history.
//!
//! Nothing here sleeps to hide a race: every wait polls an observable
//! condition (status, history, a counter) until it holds or a deadline passes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use duroxide::providers::Provider;
use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions, UnregisteredBackoffConfig};
use duroxide::{
    Client, ErrorDetails, Event, EventKind, OrchestrationRegistry, OrchestrationStatus,
    ProviderAdmin,
};
use duroxide_pg::{PollMode, PostgresConfig, PostgresProvider};

use crate::common;

/// How long any single wait may take before the test fails. Generous: it only
/// matters when something is broken.
pub const WAIT: Duration = Duration::from_secs(30);

/// Runtime options for fast tests: short idle polling, a few dispatcher slots,
/// locks short enough that a crashed runtime's work is picked up again within
/// seconds, yet long enough (renewed at half their length) that a busy
/// machine never loses a lock held by a live runtime.
pub fn fast_options() -> RuntimeOptions {
    RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        dispatcher_long_poll_timeout: Duration::from_secs(5),
        orchestration_concurrency: 4,
        worker_concurrency: 4,
        orchestrator_lock_timeout: Duration::from_secs(5),
        worker_lock_timeout: Duration::from_secs(10),
        activity_cancellation_grace_period: Duration::from_secs(2),
        unregistered_backoff: UnregisteredBackoffConfig {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        ..Default::default()
    }
}

/// One test's world: a provider on a fresh schema, a client on it, and the
/// other providers (other "processes") opened on the same schema.
///
/// [`Env::finish`] drops the schema; if the test fails before that, dropping
/// the `Env` drops the schema instead, so failed runs leave nothing behind.
pub struct Env {
    pub provider: Arc<PostgresProvider>,
    pub client: Client,
    extra: Vec<Arc<PostgresProvider>>,
    finished: bool,
}

impl Env {
    /// A fresh schema, a provider in the default mode for this pass (long
    /// polling directly, poll-only behind PgBouncer) and a client.
    pub async fn new() -> Self {
        Self::with_config(|c| c).await
    }

    /// A fresh schema, a provider in the given poll mode and a client.
    pub async fn with_poll_mode(mode: PollMode) -> Self {
        Self::with_config(|c| c.with_poll_mode(mode)).await
    }

    /// A fresh schema, a provider whose configuration `configure` adjusts,
    /// and a client.
    pub async fn with_config(configure: impl FnOnce(PostgresConfig) -> PostgresConfig) -> Self {
        Self::on(|c| housekeeping(configure(c))).await
    }

    /// A fresh schema, a provider with the default configuration whatever
    /// `DUROXIDE_PG_E2E_HOUSEKEEPING` says (for the retention scenario,
    /// which runs sweepers of its own), and a client.
    pub async fn without_housekeeping() -> Self {
        Self::on(|c| c).await
    }

    async fn on(configure: impl FnOnce(PostgresConfig) -> PostgresConfig) -> Self {
        let provider = Arc::new(common::fresh_provider_via(crate::VIA, "e2e", configure).await);
        let client = Client::new(provider.clone());
        Self {
            provider,
            client,
            extra: Vec::new(),
            finished: false,
        }
    }

    /// The schema of this test.
    pub fn schema(&self) -> &str {
        self.provider.schema_name()
    }

    /// Another provider on the same schema, with its own pool and listener, as a
    /// second process would open it.
    pub async fn another_provider(&mut self) -> Arc<PostgresProvider> {
        self.another_provider_with(|c| c).await
    }

    /// As [`Env::another_provider`], its configuration adjusted by `configure`.
    pub async fn another_provider_with(
        &mut self,
        configure: impl FnOnce(PostgresConfig) -> PostgresConfig,
    ) -> Arc<PostgresProvider> {
        let p = Arc::new(
            PostgresProvider::connect(configure(crate::VIA.config(self.schema())))
                .await
                .expect("second provider on the test schema"),
        );
        self.extra.push(p.clone());
        p
    }

    /// Starts a runtime on this test's provider with [`fast_options`].
    pub async fn start(
        &self,
        activities: ActivityRegistry,
        orchestrations: OrchestrationRegistry,
    ) -> Arc<Runtime> {
        self.start_with(activities, orchestrations, fast_options())
            .await
    }

    /// Starts a runtime on this test's provider with the given options.
    pub async fn start_with(
        &self,
        activities: ActivityRegistry,
        orchestrations: OrchestrationRegistry,
        options: RuntimeOptions,
    ) -> Arc<Runtime> {
        start_on(self.provider.clone(), activities, orchestrations, options).await
    }

    /// The provider's management interface (`ProviderAdmin`).
    pub fn admin(&self) -> &dyn ProviderAdmin {
        self.provider
            .as_management_capability()
            .expect("duroxide-pg implements ProviderAdmin")
    }

    /// History of the instance's current execution.
    pub async fn history(&self, instance: &str) -> Vec<Event> {
        self.provider.read(instance).await.expect("read history")
    }

    /// History of one execution of the instance.
    pub async fn execution_history(&self, instance: &str, execution_id: u64) -> Vec<Event> {
        self.client
            .read_execution_history(instance, execution_id)
            .await
            .expect("read execution history")
    }

    /// Waits for the instance to finish and returns its terminal status.
    pub async fn wait_terminal(&self, instance: &str) -> OrchestrationStatus {
        self.client
            .wait_for_orchestration(instance, WAIT)
            .await
            .unwrap_or_else(|e| panic!("waiting for {instance}: {e}"))
    }

    /// Waits for the instance to complete and returns its output; panics with
    /// the failure details otherwise.
    pub async fn wait_completed(&self, instance: &str) -> String {
        match self.wait_terminal(instance).await {
            OrchestrationStatus::Completed { output, .. } => output,
            other => panic!("{instance} did not complete: {other:?}"),
        }
    }

    /// Waits for the instance to fail and returns the failure details.
    pub async fn wait_failed(&self, instance: &str) -> ErrorDetails {
        match self.wait_terminal(instance).await {
            OrchestrationStatus::Failed { details, .. } => details,
            other => panic!("{instance} did not fail: {other:?}"),
        }
    }

    /// Waits until the instance's current history satisfies `pred`; returns it.
    pub async fn wait_for_history(
        &self,
        instance: &str,
        what: &str,
        pred: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        wait_until(what, || async {
            let hist = self.provider.read(instance).await.unwrap_or_default();
            pred(&hist).then_some(hist)
        })
        .await
    }

    /// Waits until the instance's history holds an event matching `pred`.
    pub async fn wait_for_event(
        &self,
        instance: &str,
        what: &str,
        pred: impl Fn(&EventKind) -> bool,
    ) -> Vec<Event> {
        self.wait_for_history(instance, what, |h| h.iter().any(|e| pred(&e.kind)))
            .await
    }

    /// Waits until the instance has subscribed to external event `name`.
    pub async fn wait_subscribed(&self, instance: &str, name: &'static str) -> Vec<Event> {
        self.wait_for_event(
            instance,
            &format!("a subscription to event {name}"),
            subscribed(name),
        )
        .await
    }

    /// Waits until the instance waits on queue `name`.
    pub async fn wait_queue_subscribed(&self, instance: &str, name: &'static str) -> Vec<Event> {
        self.wait_for_event(
            instance,
            &format!("a subscription to queue {name}"),
            queue_subscribed(name),
        )
        .await
    }

    /// Shuts the runtimes down, drops the schema and closes every pool.
    pub async fn finish(mut self, runtimes: impl IntoIterator<Item = Arc<Runtime>>) {
        for rt in runtimes {
            rt.shutdown(None).await;
        }
        // Background work of the other providers (a retention sweeper) stops
        // before the schema goes.
        for p in &self.extra {
            p.close().await;
        }
        self.provider
            .cleanup_schema()
            .await
            .expect("drop test schema");
        for p in self.extra.iter().chain(std::iter::once(&self.provider)) {
            p.pool().close().await;
        }
        self.finished = true;
    }
}

impl Drop for Env {
    /// A test that did not reach [`Env::finish`] (it panicked): drop its schema
    /// over a connection of its own, on a thread of its own, since the test's
    /// async runtime is unwinding.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let url = crate::VIA.url();
        // One simple query, one transaction (SET LOCAL leaves nothing on a
        // pooled server session).
        let sql = format!(
            "SET LOCAL lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema()
        );
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.schema());
        }
    }
}

/// With `DUROXIDE_PG_E2E_HOUSEKEEPING=1`, every scenario's provider also
/// runs a retention sweeper (a sweep every 200 ms that keeps everything for
/// an hour: it scans, locks nothing it may not delete, deletes nothing the
/// scenario reads) and the queue vacuum every second, so the scenarios show
/// that housekeeping running beside a runtime changes none of its results.
fn housekeeping(config: PostgresConfig) -> PostgresConfig {
    if std::env::var("DUROXIDE_PG_E2E_HOUSEKEEPING").as_deref() != Ok("1") {
        return config;
    }
    let hour = Duration::from_secs(3600);
    config
        .with_retention(
            duroxide_pg::RetentionPolicy::new()
                .keep_completed_for(hour)
                .keep_failed_for(hour)
                .keep_executions(1000)
                .with_interval(Duration::from_millis(200)),
        )
        .with_queue_vacuum(Some(Duration::from_secs(1)))
}

/// Starts a runtime on `provider`.
pub async fn start_on(
    provider: Arc<PostgresProvider>,
    activities: ActivityRegistry,
    orchestrations: OrchestrationRegistry,
    options: RuntimeOptions,
) -> Arc<Runtime> {
    Runtime::start_with_options(provider, activities, orchestrations, options).await
}

/// Polls `probe` until it yields a value or [`WAIT`] passes (then panics,
/// naming `what`).
pub async fn wait_until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `counter` reaches at least `n`.
pub async fn wait_for_count(what: &str, counter: &AtomicUsize, n: usize) {
    wait_until(what, || async {
        (counter.load(Ordering::SeqCst) >= n).then_some(())
    })
    .await
}

/// A shared counter for activity side effects.
pub fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// An activity registry with no activities, for orchestration-only scenarios.
pub fn no_activities() -> ActivityRegistry {
    ActivityRegistry::builder().build()
}

/// Wall-clock milliseconds since the epoch, the clock duroxide stamps events with.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Matches a subscription to external event `name`.
pub fn subscribed(name: &'static str) -> impl Fn(&EventKind) -> bool {
    move |k| matches!(k, EventKind::ExternalSubscribed { name: n } if n == name)
}

/// Matches a subscription to queue `name`.
pub fn queue_subscribed(name: &'static str) -> impl Fn(&EventKind) -> bool {
    move |k| matches!(k, EventKind::QueueSubscribed { name: n } if n == name)
}

/// The events whose kind matches `pred`.
pub fn events_where(hist: &[Event], pred: impl Fn(&EventKind) -> bool) -> Vec<&Event> {
    hist.iter().filter(|e| pred(&e.kind)).collect()
}

/// Number of events whose kind matches `pred`.
pub fn count(hist: &[Event], pred: impl Fn(&EventKind) -> bool) -> usize {
    hist.iter().filter(|e| pred(&e.kind)).count()
}

/// The serialized type name of each event (`"ActivityScheduled"`, ...), for
/// comparing whole histories and for readable failure messages.
pub fn kinds(hist: &[Event]) -> Vec<String> {
    hist.iter()
        .map(|e| {
            serde_json::to_value(&e.kind).expect("event kinds serialize")["type"]
                .as_str()
                .expect("event kinds carry a type tag")
                .to_string()
        })
        .collect()
}

/// Asserts the basic shape every finished execution history has: event ids
/// 1, 2, 3, ... in order, all of the instance and execution, starting with
/// `OrchestrationStarted` and holding exactly one terminal event, followed at
/// most by the cancellation requests the runtime records for work still in
/// flight when the execution ended.
pub fn assert_well_formed(hist: &[Event], instance: &str, execution_id: u64) {
    assert!(!hist.is_empty(), "empty history for {instance}");
    for (i, e) in hist.iter().enumerate() {
        assert_eq!(
            e.event_id,
            i as u64 + 1,
            "event ids of {instance}: {:?}",
            kinds(hist)
        );
        assert_eq!(e.instance_id, instance);
        assert_eq!(e.execution_id, execution_id);
    }
    assert!(
        matches!(hist[0].kind, EventKind::OrchestrationStarted { .. }),
        "history of {instance} starts with {:?}",
        kinds(hist)
    );
    assert_eq!(
        hist.iter().filter(|e| e.is_terminal()).count(),
        1,
        "exactly one terminal event in {instance}: {:?}",
        kinds(hist)
    );
    let terminal = hist.iter().position(Event::is_terminal).unwrap();
    assert!(
        hist[terminal + 1..].iter().all(|e| matches!(
            e.kind,
            EventKind::ActivityCancelRequested { .. }
                | EventKind::SubOrchestrationCancelRequested { .. }
        )),
        "only cancellation requests after the terminal event: {:?}",
        kinds(hist)
    );
}

/// Whether the event is an application failure of the given kind.
pub fn is_app_error(details: &ErrorDetails, kind: &duroxide::AppErrorKind) -> bool {
    matches!(details, ErrorDetails::Application { kind: k, .. } if k == kind)
}
