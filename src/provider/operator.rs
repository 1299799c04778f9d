//! The reads and sweeps operator tools (the dashboard, the CLI) use,
//! beyond duroxide's `ProviderAdmin`.

use super::PostgresProvider;

use duroxide::providers::{InstanceFilter, ProviderError};

use crate::admin;
use crate::config::RetentionPolicy;
use crate::retention::{RetentionReport, RetentionStatus, Sweep};

impl PostgresProvider {
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

    /// The newest `limit` executions of `instance`, newest first, with their
    /// details (as [`ProviderAdmin::get_execution_info`] gives them) and how
    /// many executions it has in all: one bounded read instead of one call
    /// per execution. Empty, with a count of 0, for an unknown instance.
    ///
    /// # Errors
    /// [`ProviderError`] for a limit out of range or when the server refuses.
    pub async fn dashboard_executions(
        &self,
        instance: &str,
        limit: u32,
    ) -> Result<crate::dashboard::ExecutionPage, ProviderError> {
        crate::dashboard::executions(&self.store, instance, limit).await
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
}
