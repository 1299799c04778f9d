//! [`PostgresProvider`]: construction, accessors, and the `Provider` /
//! `ProviderAdmin` trait implementations, which delegate each call to the
//! module of its concern.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use duroxide::providers::{
    DeleteInstanceResult, DispatcherCapabilityFilter, ExecutionInfo, ExecutionMetadata,
    InstanceFilter, InstanceInfo, InstanceTree, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, PruneOptions, PruneResult, QueueDepths, ScheduledActivityIdentifier,
    SessionFetchConfig, SystemMetrics, TagFilter, WorkItem,
};
use duroxide::{Event, SystemStats};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tracing::Instrument;

use crate::background::Periodic;
use crate::call::Call;
use crate::config::{PollMode, PostgresConfig, RetentionPolicy};
use crate::connections::{Connections, Hosts};
use crate::credentials::{BaseOptions, Credentials};
use crate::error::Error;
use crate::long_poll::{LongPoll, OpenListener, SendHeartbeat};
use crate::migrations::{self, MigrationReport, quote_ident};
use crate::retention::{RetentionReport, RetentionStatus, Sweep};
use crate::statements::Statements;
use crate::store::Store;
use crate::worker_queue::prefetch::WorkerPrefetch;
use crate::{admin, history, orchestrator_queue, state, worker_queue};

/// A duroxide storage provider backed by one schema of a PostgreSQL database.
///
/// Cheap to share: wrap it in an `Arc` and hand it to `duroxide::Runtime` and
/// `duroxide::Client`. Every provider call is one statement (one call of one
/// stored function in the schema), so one network round trip.
pub struct PostgresProvider {
    /// What the operation modules work on: call pool, schema, statements,
    /// wake-up listener.
    store: Store,
    /// A small sqlx pool for migrations and tools ([`PostgresProvider::pool`]).
    tools: PgPool,
    /// The host `tools` connects to (an index into the URL's hosts).
    tools_host: AtomicUsize,
    /// The credential source's cache and refresher, if there is a source.
    pub(crate) credentials: Option<std::sync::Arc<crate::credentials::Credentials>>,
    /// Activities leased ahead by acks, for the worker's next fetch.
    pub(crate) worker_prefetch: WorkerPrefetch,
    /// The background retention sweeper, when a policy is configured.
    sweeper: Option<Periodic>,
    /// The queue vacuum, when configured.
    queue_vacuum: Option<Periodic>,
}

/// A snapshot of the provider's call pool ([`PostgresProvider::pool_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open (in use or idle).
    pub open: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// Most connections the pool opens.
    pub max: u32,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("schema", &self.store.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresProvider {
    /// Connects to `url` using the `public` schema and applies pending migrations.
    ///
    /// # Errors
    /// See [`PostgresProvider::connect`].
    pub async fn new(url: &str) -> Result<Self, Error> {
        Self::connect(PostgresConfig::new(url)).await
    }

    /// Connects to `url` using `schema` (default `public`), creating the schema
    /// and applying pending migrations.
    ///
    /// # Errors
    /// See [`PostgresProvider::connect`].
    pub async fn new_with_schema(url: &str, schema: Option<&str>) -> Result<Self, Error> {
        let mut config = PostgresConfig::new(url);
        if let Some(schema) = schema {
            config = config.with_schema(schema);
        }
        Self::connect(config).await
    }

    /// Builds a provider from a full configuration.
    ///
    /// Validates the configuration before touching the database, proves the
    /// server is reachable with one direct connection (within the connect
    /// timeout), opens the pool lazily, applies (or verifies) the migrations,
    /// and in long-poll mode starts the wake-up listener.
    ///
    /// # Errors
    /// [`Error::InvalidSchemaName`], [`Error::InvalidUrl`] or
    /// [`Error::InvalidConfig`] for bad input (nothing is created);
    /// [`Error::Connect`] naming host and port when the server cannot be
    /// reached in time; the migration errors of [`migrations::run`].
    pub async fn connect(config: PostgresConfig) -> Result<Self, Error> {
        if let Some(policy) = &config.retention {
            policy.validate()?;
        }
        let queue_vacuum = config.resolved_queue_vacuum()?;
        // The probe connection runs the migrations, then becomes the call
        // pool's first connection. Meanwhile the connections a runtime needs
        // at once (and the listener's) open in parallel: a fresh runtime's
        // first calls find them ready.
        let credentials = config.credentials();
        let probe = config.probe(credentials.as_deref()).await?;
        let mut first = probe.conn;
        config.check_session(&mut first).await?;
        let pool = Connections::new(
            probe.targets,
            probe.host,
            config.pool_settings()?,
            credentials.clone(),
        );
        // The tools' sqlx pool connects where the call pool's new connections
        // last went (it follows it after a failover), and so does each new
        // listener. (A handle on the hosts, not the pool: the credentials keep it.)
        let current: BaseOptions = {
            let hosts = pool.hosts().clone();
            Arc::new(move || hosts.current_options())
        };
        let open_listener = match config.resolved_poll_mode()? {
            PollMode::PollOnly => None,
            PollMode::LongPoll => Some(listener_opener(
                pool.hosts().clone(),
                credentials.clone(),
                config.connect_timeout,
            )),
        };
        let ahead = config.resolved_min_connections()?.saturating_sub(1);
        let (migrated, opened_ahead, listener) = tokio::join!(
            migrations::run_on(&mut first, &config.schema, config.migrations),
            pool.open_idle(ahead),
            async {
                match &open_listener {
                    Some(open) => Some(open().await),
                    None => None,
                }
            },
        );
        migrated?;
        pool.adopt(first);
        if let Err(e) = opened_ahead {
            // Not fatal: the probe proved the server works; they open on demand.
            tracing::warn!(
                target: "duroxide_pg",
                error = %e,
                "opening connections ahead failed; they will open on demand"
            );
        }
        let tools = config.tools_pool(pool.hosts().current_options())?;
        if let Some(c) = &credentials {
            c.keep_current(&tools, Arc::clone(&current));
            c.spawn_refresher();
        }
        let sql = Statements::new(&config.schema);
        let long_poll = match listener {
            Some(listener) => {
                let listen_error = |reason: String| Error::Database {
                    operation: "listen for wake-ups",
                    sqlstate: None,
                    reason,
                };
                let channel: String = Call::new(&pool, "notify_channel", &sql.notify_channel)
                    .scalar()
                    .await
                    .map_err(|e| listen_error(e.message))?;
                let beat = heartbeat_sender(&pool, &sql);
                Some(
                    LongPoll::start(
                        listener.map_err(|e| listen_error(e.to_string()))?,
                        open_listener.expect("a listener was opened"),
                        beat,
                        &channel,
                        &config.schema,
                        config.fallback_poll,
                    )
                    .await
                    .map_err(|e| listen_error(e.to_string()))?,
                )
            }
            None => None,
        };
        let worker_prefetch = WorkerPrefetch::new(
            config.worker_prefetch,
            pool.clone(),
            &sql.abandon_work_item,
            &config.schema,
        );
        // Background tasks get their own view of the store: the same pool,
        // no listener.
        let background_store = || Store {
            pool: pool.clone(),
            schema: config.schema.clone(),
            sql: Statements::new(&config.schema),
            long_poll: None,
        };
        let sweeper = config
            .retention
            .clone()
            .map(|policy| crate::retention::sweeper::start(background_store(), policy));
        let queue_vacuum =
            queue_vacuum.map(|interval| crate::queue_vacuum::start(background_store(), interval));
        Ok(Self {
            sweeper,
            queue_vacuum,
            tools_host: AtomicUsize::new(pool.hosts().current()),
            credentials,
            worker_prefetch,
            store: Store {
                sql,
                schema: config.schema,
                pool,
                long_poll,
            },
            tools,
        })
    }

    /// Ready, delayed and locked counts of the orchestrator, timer and worker
    /// queues, with the age of each queue's oldest ready message. One
    /// read-only statement; takes no locks.
    ///
    /// # Errors
    /// [`ProviderError`] when the server refuses the query.
    pub async fn queue_overview(&self) -> Result<Vec<admin::QueueStatus>, ProviderError> {
        admin::queue_overview(&self.store).await
    }

    /// At most `limit` (1..=[`crate::dashboard::MAX_PAGE_SIZE`]) instances
    /// matching `query`, newest first, starting after `after` (the last
    /// row of the previous page; `None` for the first). A deep page costs
    /// what the first costs. Bounded by
    /// [`crate::dashboard::OPERATOR_QUERY_TIMEOUT`]; reads only.
    ///
    /// # Errors
    /// [`ProviderError`] for a page size out of range, a time above
    /// `i64::MAX`, or when the server refuses or times out the query.
    pub async fn dashboard_instances(
        &self,
        query: &crate::dashboard::InstanceQuery,
        after: Option<&crate::dashboard::InstanceCursor>,
        limit: u32,
    ) -> Result<Vec<crate::dashboard::InstanceRow>, ProviderError> {
        crate::dashboard::instances(&self.store, query, after, limit).await
    }

    /// How many instances [`PostgresProvider::dashboard_instances`] would
    /// list for `query`, counting at most `cap` (a result equal to `cap`
    /// means "`cap` or more"). Bounded like it; reads only.
    ///
    /// # Errors
    /// As [`PostgresProvider::dashboard_instances`].
    pub async fn dashboard_count(
        &self,
        query: &crate::dashboard::InstanceQuery,
        cap: u32,
    ) -> Result<u64, ProviderError> {
        crate::dashboard::count(&self.store, query, cap).await
    }

    /// Instance counts by current status: `Running` (including instances
    /// not started yet), `Completed`, `Failed`, `ContinuedAsNew`, in that
    /// order, from one snapshot. Index-only counts; reads only.
    ///
    /// # Errors
    /// [`ProviderError`] when the server refuses or times out the query.
    pub async fn dashboard_status_counts(&self) -> Result<Vec<(String, u64)>, ProviderError> {
        crate::dashboard::status_counts(&self.store).await
    }

    /// Executions completed and failed since `since_ms` (ms since the Unix
    /// epoch), per `bucket`; only buckets that have any, oldest first.
    ///
    /// # Errors
    /// [`ProviderError`] for a zero bucket or when the server refuses.
    pub async fn dashboard_activity(
        &self,
        since_ms: u64,
        bucket: std::time::Duration,
    ) -> Result<Vec<crate::dashboard::ActivityBucket>, ProviderError> {
        crate::dashboard::activity(&self.store, since_ms, bucket).await
    }

    /// At most `limit` events of one execution after event `after_event_id`
    /// (`None`: from the first), in order: one page of a history that may
    /// be long.
    ///
    /// # Errors
    /// [`ProviderError`] for a page size out of range, a stored event that
    /// cannot be decoded, or when the server refuses.
    pub async fn dashboard_history(
        &self,
        instance: &str,
        execution_id: u64,
        after_event_id: Option<u64>,
        limit: u32,
    ) -> Result<Vec<duroxide::Event>, ProviderError> {
        crate::dashboard::history(&self.store, instance, execution_id, after_event_id, limit).await
    }

    /// `instance` and its descendants with their status, at most `limit`
    /// members, by depth then id; empty for an unknown instance.
    ///
    /// # Errors
    /// [`ProviderError`] for a limit out of range or when the server refuses.
    pub async fn dashboard_tree(
        &self,
        instance: &str,
        limit: u32,
    ) -> Result<Vec<crate::dashboard::TreeMember>, ProviderError> {
        crate::dashboard::tree(&self.store, instance, limit).await
    }

    /// The root instances [`ProviderAdmin::delete_instance_bulk`] would delete
    /// for `filter` right now (each goes with its whole tree), oldest
    /// completion first: a dry run of a purge. Reads only.
    ///
    /// # Errors
    /// [`ProviderError`] for an out-of-range filter or when the server refuses.
    pub async fn bulk_delete_candidates(
        &self,
        filter: &InstanceFilter,
    ) -> Result<Vec<String>, ProviderError> {
        admin::bulk_delete_candidates(&self.store, filter).await
    }

    /// Runs one retention sweep by `policy` now, on this provider's
    /// connections: the same batches, lease and checks as the background
    /// sweeper (and the CLI's `retention run`). `owner` names the sweep in
    /// `retention status` (`None`: `api:<pid>:<n>`).
    ///
    /// With `dry_run` nothing is deleted and no lease is taken: the report
    /// counts and lists what the sweep would delete now
    /// ([`RetentionReport::instance_ids`], [`RetentionReport::pruned`]).
    /// Otherwise, when another sweeper holds the schema's lease, nothing is
    /// done and the report says `ran: false`.
    ///
    /// # Errors
    /// [`ProviderError`] for an invalid policy (nothing done), or when a
    /// batch fails other than by a statement timeout; batches committed
    /// before stay deleted, and the sweep is recorded with its error.
    pub async fn run_retention(
        &self,
        policy: &RetentionPolicy,
        owner: Option<&str>,
        dry_run: bool,
    ) -> Result<RetentionReport, ProviderError> {
        Sweep {
            store: &self.store,
            policy,
            owner: owner.map_or_else(|| crate::retention::owner_name("api"), str::to_owned),
            background: false,
            dry_run,
            stopping: None,
        }
        .run()
        .await
    }

    /// The stored retention policy (of the last background sweeper), the
    /// sweep running now, the last sweep and the oldest finished root
    /// instance per status. Reads only.
    ///
    /// # Errors
    /// [`ProviderError`] when the server refuses the query.
    pub async fn retention_status(&self) -> Result<RetentionStatus, ProviderError> {
        crate::retention::status(&self.store).await
    }

    /// A small sqlx pool on the provider's database, for diagnostics and
    /// tools (provider calls use connections of their own; the provider owns
    /// the schema). Its connections close after a minute idle.
    pub fn pool(&self) -> &PgPool {
        // After a failover the call pool found another host: follow it.
        let current = self.store.pool.hosts().current();
        if self.tools_host.swap(current, Ordering::Relaxed) != current {
            let options = self.store.pool.hosts().current_options();
            self.tools.set_connect_options(match &self.credentials {
                Some(c) => c.with_cached_password(options),
                None => options,
            });
        }
        &self.tools
    }

    /// How many connections the provider's call pool holds right now.
    pub fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            open: self.store.pool.size(),
            idle: self.store.pool.num_idle(),
            max: self.store.pool.max_connections(),
        }
    }

    /// Stops the retention sweeper (a sweep in progress ends after its
    /// batch) and the queue vacuum, releases the activities leased ahead for
    /// the next fetch, stops the credential refresher, then closes every
    /// connection the provider holds, the wake-up listener's included (calls
    /// fail afterwards).
    pub async fn close(&self) {
        self.stop_background().await;
        if let Some(lp) = &self.store.long_poll {
            lp.stop();
        }
        if let Some(c) = &self.credentials {
            c.stop();
        }
        self.worker_prefetch.release_all().await;
        self.store.pool.close().await;
        self.tools.close().await;
    }

    /// Stops the retention sweeper and the queue vacuum (each finishes the
    /// step it is in).
    async fn stop_background(&self) {
        for task in [&self.sweeper, &self.queue_vacuum].into_iter().flatten() {
            task.stop().await;
        }
    }

    /// The schema this provider stores everything in.
    pub fn schema_name(&self) -> &str {
        &self.store.schema
    }

    /// Applies any pending migrations again (normally done at construction).
    ///
    /// # Errors
    /// As [`migrations::run`].
    pub async fn migrate(&self) -> Result<MigrationReport, Error> {
        migrations::run(
            &self.tools,
            &self.store.schema,
            crate::config::MigrationMode::Apply,
        )
        .await
    }

    /// Drops everything this provider stored: the whole schema, or, for
    /// `public`, only duroxide-pg's own tables, functions and ledger. Meant for
    /// tests and tools; the provider is unusable afterwards (its retention
    /// sweeper and queue vacuum, if any, are stopped first).
    ///
    /// # Errors
    /// [`Error::Database`] when the server refuses.
    pub async fn cleanup_schema(&self) -> Result<(), Error> {
        // A sweep or a vacuum must not run into the drop.
        self.stop_background().await;
        let schema = quote_ident(&self.store.schema);
        let sql = if self.store.schema != crate::config::DEFAULT_SCHEMA {
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE")
        } else {
            let mut sql = String::new();
            for table in migrations::owned_tables() {
                sql.push_str(&format!("DROP TABLE IF EXISTS {schema}.{table} CASCADE;\n"));
            }
            for function in migrations::owned_functions() {
                sql.push_str(&format!(
                    "DROP FUNCTION IF EXISTS {schema}.{function} CASCADE;\n"
                ));
            }
            sql.push_str(&format!(
                "DROP TABLE IF EXISTS {schema}.{};\n",
                migrations::LEDGER_TABLE
            ));
            sql
        };
        // Dropping takes the objects' locks one by one while calls may still
        // be running (a call its runtime abandoned at shutdown goes on in the
        // server): a call holding one table and asking for one already taken
        // here is a deadlock, and PostgreSQL may end this side of it. Nothing
        // was dropped then (one transaction): do it again once the call is
        // through, as PostgreSQL advises for a deadlock.
        let mut attempt = 1;
        loop {
            match sqlx::raw_sql(&sql).execute(&self.tools).await {
                Ok(_) => return Ok(()),
                Err(sqlx::Error::Database(db))
                    if db.code().as_deref() == Some(DEADLOCK_DETECTED) && attempt < 5 =>
                {
                    tracing::debug!(target: "duroxide_pg", attempt, "cleanup_schema deadlocked; again");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(Error::database("cleanup_schema", &e)),
            }
        }
    }
}

/// SQLSTATE `deadlock_detected`.
const DEADLOCK_DETECTED: &str = "40P01";

/// Sends the listener's heartbeat (`listener_heartbeat`) through the call
/// pool; a failure shows only in the heartbeat not being heard.
fn heartbeat_sender(pool: &Connections, sql: &Statements) -> SendHeartbeat {
    let (pool, statement) = (pool.clone(), sql.listener_heartbeat.clone());
    Arc::new(move || {
        let (pool, statement) = (pool.clone(), statement.clone());
        Box::pin(async move {
            let sent = Call::new(&pool, "listener_heartbeat", &statement)
                .execute()
                .await;
            if let Err(e) = sent {
                tracing::debug!(target: "duroxide_pg", error = %e.message, "listener heartbeat not sent");
            }
        })
    })
}

/// Opens each listener of the provider: a `PgListener` on a one-connection
/// sqlx pool of its own (so the listener never takes a work connection),
/// to the host the call pool's new connections go to now, with the
/// credential source's current password.
///
/// Why a new pool each time: dropping a listener whose connection went
/// silent leaves sqlx's `UNLISTEN` waiting on it, holding its pool's only
/// connection; a new pool never waits behind it.
fn listener_opener(
    hosts: Hosts,
    credentials: Option<Arc<Credentials>>,
    connect_timeout: Duration,
) -> OpenListener {
    Arc::new(move || {
        let (hosts, credentials) = (hosts.clone(), credentials.clone());
        Box::pin(async move {
            let mut options = hosts.current_options();
            if let Some(c) = &credentials {
                options = c.apply_for_connect(options).await?;
            }
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(connect_timeout)
                .connect_lazy_with(options);
            let mut listener = PgListener::connect_with(&pool).await?;
            // A lost connection is replaced by the listening task, which
            // also looks for the current host first.
            listener.eager_reconnect(false);
            Ok(listener)
        })
    })
}

/// The span of one provider call (level DEBUG, name `duroxide_pg.call`):
/// the operation and, when the call concerns one, the instance id. Nothing
/// secret is ever a field (tokens, payloads and credentials are not).
fn call_span(operation: &'static str, instance: Option<&str>) -> tracing::Span {
    match instance {
        Some(instance) => tracing::debug_span!("duroxide_pg.call", operation, instance),
        None => tracing::debug_span!(
            "duroxide_pg.call",
            operation,
            instance = tracing::field::Empty
        ),
    }
}

#[async_trait::async_trait]
impl Provider for PostgresProvider {
    fn name(&self) -> &str {
        "postgres"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        let span = call_span("fetch_orchestration_item", None);
        let fetched = orchestrator_queue::fetch(&self.store, lock_timeout, poll_timeout, filter)
            .instrument(span.clone())
            .await;
        if let Ok(Some((item, _, _))) = &fetched {
            span.record("instance", item.instance.as_str());
        }
        fetched
    }

    async fn ack_orchestration_item(
        &self,
        lock_token: &str,
        execution_id: u64,
        history_delta: Vec<Event>,
        worker_items: Vec<WorkItem>,
        orchestrator_items: Vec<WorkItem>,
        metadata: ExecutionMetadata,
        cancelled_activities: Vec<ScheduledActivityIdentifier>,
    ) -> Result<(), ProviderError> {
        orchestrator_queue::ack(
            &self.store,
            lock_token,
            execution_id,
            &history_delta,
            &worker_items,
            &orchestrator_items,
            &metadata,
            &cancelled_activities,
        )
        .instrument(call_span("ack_orchestration_item", None))
        .await
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        orchestrator_queue::abandon(&self.store, lock_token, delay, ignore_attempt)
            .instrument(call_span("abandon_orchestration_item", None))
            .await
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        history::read(&self.store, "read", instance, None)
            .instrument(call_span("read", Some(instance)))
            .await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        history::read(
            &self.store,
            "read_with_execution",
            instance,
            Some(execution_id),
        )
        .instrument(call_span("read_with_execution", Some(instance)))
        .await
    }

    async fn append_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
        new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        history::append(&self.store, instance, execution_id, &new_events)
            .instrument(call_span("append_with_execution", Some(instance)))
            .await
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        worker_queue::enqueue(&self.store, &item)
            .instrument(call_span("enqueue_for_worker", None))
            .await
    }

    async fn fetch_work_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        let span = call_span("fetch_work_item", None);
        let fetched = worker_queue::fetch(
            &self.store,
            &self.worker_prefetch,
            lock_timeout,
            poll_timeout,
            session,
            tag_filter,
        )
        .instrument(span.clone())
        .await;
        if let Ok(Some((WorkItem::ActivityExecute { instance, .. }, _, _))) = &fetched {
            span.record("instance", instance.as_str());
        }
        fetched
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        worker_queue::ack(
            &self.store,
            &self.worker_prefetch,
            token,
            completion.as_ref(),
        )
        .instrument(call_span("ack_work_item", None))
        .await
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        worker_queue::renew(&self.store, token, extend_for)
            .instrument(call_span("renew_work_item_lock", None))
            .await
    }

    async fn renew_session_lock(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        worker_queue::renew_sessions(&self.store, owner_ids, extend_for, idle_timeout)
            .instrument(call_span("renew_session_lock", None))
            .await
    }

    async fn cleanup_orphaned_sessions(
        &self,
        _idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        worker_queue::cleanup_sessions(&self.store)
            .instrument(call_span("cleanup_orphaned_sessions", None))
            .await
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        worker_queue::abandon(
            &self.store,
            &self.worker_prefetch,
            token,
            delay,
            ignore_attempt,
        )
        .instrument(call_span("abandon_work_item", None))
        .await
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        orchestrator_queue::renew(&self.store, token, extend_for)
            .instrument(call_span("renew_orchestration_item_lock", None))
            .await
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        orchestrator_queue::enqueue(&self.store, &item, delay)
            .instrument(call_span("enqueue_for_orchestrator", None))
            .await
    }

    fn as_management_capability(&self) -> Option<&dyn ProviderAdmin> {
        Some(self)
    }

    async fn get_custom_status(
        &self,
        instance: &str,
        last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        state::custom_status(&self.store, instance, last_seen_version)
            .instrument(call_span("get_custom_status", Some(instance)))
            .await
    }

    async fn get_kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        state::kv_value(&self.store, instance, key)
            .instrument(call_span("get_kv_value", Some(instance)))
            .await
    }

    async fn get_kv_all_values(
        &self,
        instance: &str,
    ) -> Result<std::collections::HashMap<String, String>, ProviderError> {
        state::kv_all_values(&self.store, instance)
            .instrument(call_span("get_kv_all_values", Some(instance)))
            .await
    }

    async fn get_instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<SystemStats>, ProviderError> {
        state::instance_stats(&self.store, instance)
            .instrument(call_span("get_instance_stats", Some(instance)))
            .await
    }
}

#[async_trait::async_trait]
impl ProviderAdmin for PostgresProvider {
    async fn list_instances(&self) -> Result<Vec<String>, ProviderError> {
        admin::list_instances(&self.store, None)
            .instrument(call_span("list_instances", None))
            .await
    }

    async fn list_instances_by_status(&self, status: &str) -> Result<Vec<String>, ProviderError> {
        admin::list_instances(&self.store, Some(status))
            .instrument(call_span("list_instances_by_status", None))
            .await
    }

    async fn list_executions(&self, instance: &str) -> Result<Vec<u64>, ProviderError> {
        admin::list_executions(&self.store, instance)
            .instrument(call_span("list_executions", Some(instance)))
            .await
    }

    async fn read_history_with_execution_id(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        history::read(
            &self.store,
            "read_history_with_execution_id",
            instance,
            Some(execution_id),
        )
        .instrument(call_span("read_history_with_execution_id", Some(instance)))
        .await
    }

    async fn read_history(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        history::read(&self.store, "read_history", instance, None)
            .instrument(call_span("read_history", Some(instance)))
            .await
    }

    async fn latest_execution_id(&self, instance: &str) -> Result<u64, ProviderError> {
        admin::latest_execution_id(&self.store, instance)
            .instrument(call_span("latest_execution_id", Some(instance)))
            .await
    }

    async fn get_instance_info(&self, instance: &str) -> Result<InstanceInfo, ProviderError> {
        admin::instance_info(&self.store, instance)
            .instrument(call_span("get_instance_info", Some(instance)))
            .await
    }

    async fn get_execution_info(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<ExecutionInfo, ProviderError> {
        admin::execution_info(&self.store, instance, execution_id)
            .instrument(call_span("get_execution_info", Some(instance)))
            .await
    }

    async fn get_system_metrics(&self) -> Result<SystemMetrics, ProviderError> {
        admin::system_metrics(&self.store)
            .instrument(call_span("get_system_metrics", None))
            .await
    }

    async fn get_queue_depths(&self) -> Result<QueueDepths, ProviderError> {
        admin::queue_depths(&self.store)
            .instrument(call_span("get_queue_depths", None))
            .await
    }

    async fn list_children(&self, instance_id: &str) -> Result<Vec<String>, ProviderError> {
        admin::list_children(&self.store, instance_id)
            .instrument(call_span("list_children", Some(instance_id)))
            .await
    }

    async fn get_parent_id(&self, instance_id: &str) -> Result<Option<String>, ProviderError> {
        admin::parent_id(&self.store, instance_id)
            .instrument(call_span("get_parent_id", Some(instance_id)))
            .await
    }

    async fn get_instance_tree(&self, instance_id: &str) -> Result<InstanceTree, ProviderError> {
        admin::instance_tree(&self.store, instance_id)
            .instrument(call_span("get_instance_tree", Some(instance_id)))
            .await
    }

    async fn delete_instances_atomic(
        &self,
        ids: &[String],
        force: bool,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        admin::delete_instances_atomic(&self.store, ids, force)
            .instrument(call_span("delete_instances_atomic", None))
            .await
    }

    async fn delete_instance(
        &self,
        instance_id: &str,
        force: bool,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        admin::delete_instance(&self.store, instance_id, force)
            .instrument(call_span("delete_instance", Some(instance_id)))
            .await
    }

    async fn delete_instance_bulk(
        &self,
        filter: InstanceFilter,
    ) -> Result<DeleteInstanceResult, ProviderError> {
        admin::delete_instance_bulk(&self.store, &filter)
            .instrument(call_span("delete_instance_bulk", None))
            .await
    }

    async fn prune_executions(
        &self,
        instance_id: &str,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        admin::prune_executions(&self.store, instance_id, &options)
            .instrument(call_span("prune_executions", Some(instance_id)))
            .await
    }

    async fn prune_executions_bulk(
        &self,
        filter: InstanceFilter,
        options: PruneOptions,
    ) -> Result<PruneResult, ProviderError> {
        admin::prune_executions_bulk(&self.store, &filter, &options)
            .instrument(call_span("prune_executions_bulk", None))
            .await
    }
}
