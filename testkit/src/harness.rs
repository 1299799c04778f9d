//! The one test harness: finds or starts PostgreSQL, hands out fresh schemas,
//! and implements duroxide's `ProviderFactory` for the validation suite.
//!
//! With `DATABASE_URL` set, tests use that server; otherwise they share the
//! throwaway local cluster of [`crate::local_cluster`]. Every provider a
//! test creates lives in its own schema, dropped by `cleanup()`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duroxide::provider_validations::ProviderFactory;
use duroxide::providers::{ExecutionMetadata, OrchestrationItem, Provider, WorkItem};
use duroxide::{Event, EventKind};
use duroxide_pg::{PollMode, Pooler, PostgresConfig, PostgresProvider};

/// Lock timeout the validation suite is told the provider honours.
pub const TEST_LOCK_TIMEOUT: Duration = Duration::from_millis(1000);

/// The server URL for this test run.
pub fn database_url() -> String {
    crate::local_cluster::database_url().unwrap_or_else(|e| panic!("{e}"))
}

/// The throwaway cluster's URL whatever `DATABASE_URL` says: for tests that
/// need what only it has (its password and certificate roles, its test CA,
/// `pg_stat_statements`, a trusted `postgres`), so the suite also passes
/// against any plain server given in `DATABASE_URL`.
pub fn local_url() -> String {
    crate::local_cluster::local_url().unwrap_or_else(|e| panic!("{e}"))
}

/// The real PgBouncer (transaction pooling) in front of the throwaway cluster.
pub fn pgbouncer_url() -> String {
    crate::local_cluster::pgbouncer_url().unwrap_or_else(|e| panic!("{e}"))
}

/// The way a test binary reaches PostgreSQL: the suites that run twice (the
/// validation suite and the end-to-end scenarios) run once directly and once
/// through PgBouncer in transaction mode, each root naming its `Via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// [`database_url`]: `DATABASE_URL` or the throwaway cluster.
    Direct,
    /// [`pgbouncer_url`], with the provider in [`Pooler::Transaction`] mode.
    PgBouncer,
}

impl Via {
    /// The URL providers connect to.
    pub fn url(self) -> String {
        match self {
            Via::Direct => database_url(),
            Via::PgBouncer => pgbouncer_url(),
        }
    }

    /// A configuration for this way in, on `schema`.
    pub fn config(self, schema: impl Into<String>) -> PostgresConfig {
        let config = PostgresConfig::new(self.url()).with_schema(schema);
        match self {
            Via::Direct => config,
            Via::PgBouncer => config.with_pooler(Pooler::Transaction),
        }
    }
}

/// Every schema a test creates starts with this, so
/// `scripts/cleanup_test_schemas` can find the ones a killed run left behind.
pub const TEST_SCHEMA_PREFIX: &str = "dxtest_";

/// A schema name no other test (or test process) uses.
pub fn fresh_schema_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{TEST_SCHEMA_PREFIX}{prefix}_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A provider on a fresh schema (drop it with `cleanup_schema()` when done).
pub async fn fresh_provider(prefix: &str) -> PostgresProvider {
    fresh_provider_with(prefix, PollMode::LongPoll).await
}

/// A provider on a fresh schema with the given poll mode.
pub async fn fresh_provider_with(prefix: &str, mode: PollMode) -> PostgresProvider {
    fresh_provider_configured(prefix, |c| c.with_poll_mode(mode)).await
}

/// A provider on a fresh schema, its configuration adjusted by `configure`
/// (the schema is set before `configure` runs).
pub async fn fresh_provider_configured(
    prefix: &str,
    configure: impl FnOnce(PostgresConfig) -> PostgresConfig,
) -> PostgresProvider {
    fresh_provider_via(Via::Direct, prefix, configure).await
}

/// As [`fresh_provider_configured`], reaching the server `via`.
pub async fn fresh_provider_via(
    via: Via,
    prefix: &str,
    configure: impl FnOnce(PostgresConfig) -> PostgresConfig,
) -> PostgresProvider {
    let config = configure(via.config(fresh_schema_name(prefix)));
    PostgresProvider::connect(config)
        .await
        .expect("provider on a fresh schema")
}

/// A `StartOrchestration` item for `instance` running orchestration `name` 1.0.0.
pub fn start_item(instance: &str, name: &str) -> WorkItem {
    WorkItem::StartOrchestration {
        instance: instance.into(),
        orchestration: name.into(),
        input: "{}".into(),
        version: Some("1.0.0".into()),
        parent_instance: None,
        parent_id: None,
        parent_execution_id: None,
        execution_id: 1,
    }
}

/// An `ActivityExecute` item (execution 1, activity id `id`) for `instance`.
pub fn activity_item(instance: &str, id: u64) -> WorkItem {
    activity_item_in(instance, id, None, None)
}

/// As [`activity_item`], of session `session` and with tag `tag`.
pub fn activity_item_in(
    instance: &str,
    id: u64,
    session: Option<&str>,
    tag: Option<&str>,
) -> WorkItem {
    WorkItem::ActivityExecute {
        instance: instance.into(),
        execution_id: 1,
        id,
        name: "Act".into(),
        input: "x".into(),
        session_id: session.map(str::to_string),
        tag: tag.map(str::to_string),
    }
}

/// The first history event (id 1, execution 1) of `instance` running `name` 1.0.0.
pub fn started_event(instance: &str, name: &str) -> Event {
    Event::with_event_id(
        1,
        instance,
        1,
        None,
        EventKind::OrchestrationStarted {
            name: name.into(),
            version: "1.0.0".into(),
            input: "{}".into(),
            parent_instance: None,
            parent_id: None,
            parent_execution_id: None,
            carry_forward_events: None,
            initial_custom_status: None,
        },
    )
}

/// Lease length the harness's fetches ask for: long enough never to lapse
/// within a test.
pub const TEST_LEASE: Duration = Duration::from_secs(30);

/// Enqueues `item` for the orchestrator (visible at once) and fetches the
/// next orchestration item without waiting, leased for [`TEST_LEASE`]:
/// the first two steps of every manual provider cycle.
pub async fn enqueue_and_fetch(
    p: &PostgresProvider,
    item: WorkItem,
) -> Option<(OrchestrationItem, String, u32)> {
    p.enqueue_for_orchestrator(item, None)
        .await
        .expect("enqueue for the orchestrator");
    fetch_orchestration_now(p).await
}

/// Fetches the next orchestration item without waiting, leased for
/// [`TEST_LEASE`].
pub async fn fetch_orchestration_now(
    p: &PostgresProvider,
) -> Option<(OrchestrationItem, String, u32)> {
    p.fetch_orchestration_item(TEST_LEASE, Duration::ZERO, None)
        .await
        .expect("fetch an orchestration item")
}

/// Acks the first turn of `instance` (lease `token`): its start event and
/// the metadata that creates its instance row for orchestration `name`.
pub async fn ack_first_turn(p: &PostgresProvider, token: &str, instance: &str, name: &str) {
    p.ack_orchestration_item(
        token,
        1,
        vec![started_event(instance, name)],
        vec![],
        vec![],
        naming_metadata(name),
        vec![],
    )
    .await
    .expect("ack the first turn");
}

/// A started instance of orchestration `name` (start enqueued, fetched and
/// its first turn acked), with no lease held.
pub async fn start_instance(p: &PostgresProvider, instance: &str, name: &str) {
    let (_, token, _) = enqueue_and_fetch(p, start_item(instance, name))
        .await
        .expect("the new instance");
    ack_first_turn(p, &token, instance, name).await;
}

/// The server process id of `conn`'s session, to find who waits for it.
pub async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("pg_backend_pid()")
}

/// How many backends wait for a lock that backend `blocker` holds.
pub async fn waiting_for(admin: &sqlx::PgPool, blocker: i32) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))",
    )
    .bind(blocker)
    .fetch_one(admin)
    .await
    .expect("backends waiting for a lock")
}

/// Waits until `done(waiting_for(admin, blocker))` holds, looking every
/// 5 ms; panics with `what` and the last count after 10 s.
pub async fn wait_for_waiters(
    admin: &sqlx::PgPool,
    blocker: i32,
    done: impl Fn(i64) -> bool,
    what: &str,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = waiting_for(admin, blocker).await;
        if done(waiting) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {waiting} backends waited for backend {blocker} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `statements` (a `GRANT`/`REVOKE … ON DATABASE`, say) in one
/// transaction that first takes a cluster-wide advisory lock. Tests run in
/// parallel processes; two that change the same catalog row at once (the
/// database's ACL) make PostgreSQL fail one of them with `tuple concurrently
/// updated` (XX000), so every such change goes through here.
pub async fn serialized_catalog_change(admin: &sqlx::PgPool, statements: &str) {
    /// The lock's key (any constant no provider uses: they hash theirs).
    const CATALOG_CHANGE_LOCK: i64 = 0x6475_726f_7869_6465; // "duroxide"
    let mut tx = admin.begin().await.expect("begin a catalog change");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CATALOG_CHANGE_LOCK)
        .execute(&mut *tx)
        .await
        .expect("the catalog-change lock");
    sqlx::raw_sql(statements)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
    tx.commit().await.expect("commit the catalog change");
}

/// Instance `id` of orchestration "Shape" (a sub-orchestration of `parent`
/// when given), created through the provider's own calls: its start
/// fetched and its first turn acked, leaving it Running (`status` `None`)
/// or finished with `status` (`"Completed"`, `"Failed"`, ...).
pub async fn instance_after_first_turn(
    p: &PostgresProvider,
    id: &str,
    parent: Option<&str>,
    status: Option<&str>,
) {
    let mut item = start_item(id, "Shape");
    if let WorkItem::StartOrchestration {
        parent_instance, ..
    } = &mut item
    {
        *parent_instance = parent.map(str::to_owned);
    }
    let (_, token, _) = enqueue_and_fetch(p, item).await.expect("its start");
    let metadata = ExecutionMetadata {
        status: status.map(str::to_owned),
        output: status.map(|_| "out".to_owned()),
        parent_instance_id: parent.map(str::to_owned),
        ..naming_metadata("Shape")
    };
    p.ack_orchestration_item(
        &token,
        1,
        vec![started_event(id, "Shape")],
        vec![],
        vec![],
        metadata,
        vec![],
    )
    .await
    .expect("ack its first turn");
}

/// Moves the completion time of every execution of `ids` back by `age`
/// (for retention tests: what counts is their age, not how they got it).
pub async fn age_completions(p: &PostgresProvider, ids: &[&str], age: Duration) {
    let sql = format!(
        "UPDATE \"{}\".executions SET completed_at = completed_at - $1 WHERE instance_id = ANY($2)",
        p.schema_name()
    );
    sqlx::query(&sql)
        .bind(i64::try_from(age.as_millis()).expect("an age in range"))
        .bind(ids)
        .execute(p.pool())
        .await
        .expect("age the completions");
}

/// Metadata that creates the instance row for orchestration `name` 1.0.0.
pub fn naming_metadata(name: &str) -> ExecutionMetadata {
    ExecutionMetadata {
        orchestration_name: Some(name.into()),
        orchestration_version: Some("1.0.0".into()),
        ..Default::default()
    }
}

/// `ProviderFactory` for the validation suite: each `create_provider()` gets
/// a new, empty schema; the hooks act on the schemas this factory created.
pub struct PgTestFactory {
    via: Via,
    /// `None`: the mode the configuration resolves to (long polling
    /// directly, poll-only behind PgBouncer).
    mode: Option<PollMode>,
    providers: Mutex<Vec<Arc<PostgresProvider>>>,
}

impl PgTestFactory {
    /// Providers in the default mode, reaching the server directly.
    pub async fn new() -> Self {
        Self::via(Via::Direct).await
    }

    /// Providers in the default mode for `via`.
    pub async fn via(via: Via) -> Self {
        Self {
            via,
            mode: None,
            providers: Mutex::new(Vec::new()),
        }
    }

    /// Providers in poll-only mode, reaching the server directly.
    pub async fn short_poll() -> Self {
        Self::short_poll_via(Via::Direct).await
    }

    /// Providers in poll-only mode for `via`.
    pub async fn short_poll_via(via: Via) -> Self {
        Self {
            via,
            mode: Some(PollMode::PollOnly),
            providers: Mutex::new(Vec::new()),
        }
    }

    fn all(&self) -> Vec<Arc<PostgresProvider>> {
        self.providers.lock().unwrap().clone()
    }

    /// Drops every schema this factory created.
    pub async fn cleanup(&self) {
        for p in self.all() {
            p.cleanup_schema().await.expect("drop test schema");
            p.pool().close().await;
        }
    }
}

#[async_trait::async_trait]
impl ProviderFactory for PgTestFactory {
    async fn create_provider(&self) -> Arc<dyn Provider> {
        let mode = self.mode;
        let provider = Arc::new(
            fresh_provider_via(self.via, "v", |c| match mode {
                Some(mode) => c.with_poll_mode(mode),
                None => c,
            })
            .await,
        );
        self.providers.lock().unwrap().push(provider.clone());
        provider
    }

    fn lock_timeout(&self) -> Duration {
        TEST_LOCK_TIMEOUT
    }

    async fn corrupt_instance_history(&self, instance: &str) {
        for p in self.all() {
            let sql = format!(
                "UPDATE \"{}\".history SET event_data = 'NOT_VALID_JSON{{{{{{' WHERE instance_id = $1",
                p.schema_name()
            );
            // Unnamed, in a transaction: safe behind a transaction pooler too.
            let mut tx = p.pool().begin().await.expect("begin");
            sqlx::query(&sql)
                .persistent(false)
                .bind(instance)
                .execute(&mut *tx)
                .await
                .expect("corrupt history");
            tx.commit().await.expect("commit");
        }
    }

    async fn get_max_attempt_count(&self, instance: &str) -> u32 {
        let mut max = 0;
        for p in self.all() {
            let sql = format!(
                "SELECT COALESCE(MAX(attempt_count), 0) FROM \"{}\".orchestrator_queue WHERE instance_id = $1",
                p.schema_name()
            );
            let mut tx = p.pool().begin().await.expect("begin");
            let n: i32 = sqlx::query_scalar(&sql)
                .persistent(false)
                .bind(instance)
                .fetch_one(&mut *tx)
                .await
                .expect("attempt count");
            tx.commit().await.expect("commit");
            max = max.max(n as u32);
        }
        max
    }
}
