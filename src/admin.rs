//! Management operations (`ProviderAdmin`): listings, info, metrics, deletion
//! and pruning. Each is one stored-function call.

use duroxide::providers::{
    DeleteInstanceResult, ExecutionInfo, InstanceFilter, InstanceInfo, InstanceTree, ProviderError,
    PruneOptions, PruneResult, QueueDepths, SystemMetrics,
};

use crate::call::Statement;
use crate::clock::now_ms;
use crate::codec::{from_stored, to_i64, to_u64};
use crate::signatures as row;
use crate::store::Store;

/// Default `limit` of the bulk operations when the filter sets none.
const DEFAULT_BULK_LIMIT: u32 = 1000;

async fn ids(
    p: &Store,
    op: &str,
    sql: &Statement,
    arg: Option<&str>,
) -> Result<Vec<String>, ProviderError> {
    p.call(op, sql).bind(arg).scalars().await
}

pub(crate) async fn list_instances(
    p: &Store,
    status: Option<&str>,
) -> Result<Vec<String>, ProviderError> {
    let op = if status.is_some() {
        "list_instances_by_status"
    } else {
        "list_instances"
    };
    ids(p, op, &p.sql.list_instances, status).await
}

pub(crate) async fn list_children(p: &Store, instance: &str) -> Result<Vec<String>, ProviderError> {
    ids(p, "list_children", &p.sql.list_children, Some(instance)).await
}

pub(crate) async fn instance_tree(
    p: &Store,
    instance: &str,
) -> Result<InstanceTree, ProviderError> {
    let all_ids = ids(
        p,
        "get_instance_tree",
        &p.sql.get_instance_tree,
        Some(instance),
    )
    .await?;
    Ok(InstanceTree {
        root_id: instance.to_string(),
        all_ids,
    })
}

pub(crate) async fn list_executions(p: &Store, instance: &str) -> Result<Vec<u64>, ProviderError> {
    const OP: &str = "list_executions";
    let rows: Vec<i64> = p
        .call(OP, &p.sql.list_executions)
        .bind(instance)
        .scalars()
        .await?;
    rows.into_iter()
        .map(|e| to_u64(OP, "execution_id", e))
        .collect()
}

pub(crate) async fn latest_execution_id(p: &Store, instance: &str) -> Result<u64, ProviderError> {
    const OP: &str = "latest_execution_id";
    let id: i64 = p
        .call(OP, &p.sql.latest_execution_id)
        .bind(instance)
        .scalar()
        .await?;
    to_u64(OP, "execution_id", id)
}

pub(crate) async fn instance_info(
    p: &Store,
    instance: &str,
) -> Result<InstanceInfo, ProviderError> {
    const OP: &str = "get_instance_info";
    let r: row::InstanceInfo = p
        .call(OP, &p.sql.get_instance_info)
        .bind(instance)
        .one_as()
        .await?;
    Ok(InstanceInfo {
        instance_id: r.instance_id,
        orchestration_name: r.orchestration_name,
        orchestration_version: r.orchestration_version,
        current_execution_id: to_u64(OP, "execution_id", r.current_execution_id)?,
        status: r.status,
        output: r.output.map(from_stored),
        created_at: to_u64(OP, "created_at", r.created_at)?,
        updated_at: to_u64(OP, "updated_at", r.updated_at)?,
        parent_instance_id: r.parent_instance_id,
    })
}

pub(crate) async fn execution_info(
    p: &Store,
    instance: &str,
    execution_id: u64,
) -> Result<ExecutionInfo, ProviderError> {
    const OP: &str = "get_execution_info";
    let r: row::ExecutionInfo = p
        .call(OP, &p.sql.get_execution_info)
        .bind(instance)
        .bind(to_i64(OP, "execution_id", execution_id)?)
        .one_as()
        .await?;
    execution_info_of(OP, r)
}

/// An execution's details from its row (of `get_execution_info` or
/// `dashboard_executions`), failures reported as `op`'s.
pub(crate) fn execution_info_of(
    op: &str,
    r: row::ExecutionInfo,
) -> Result<ExecutionInfo, ProviderError> {
    Ok(ExecutionInfo {
        execution_id: to_u64(op, "execution_id", r.execution_id)?,
        status: r.status,
        output: r.output.map(from_stored),
        started_at: to_u64(op, "started_at", r.started_at)?,
        completed_at: r
            .completed_at
            .map(|c| to_u64(op, "completed_at", c))
            .transpose()?,
        event_count: usize::try_from(r.event_count).unwrap_or(0),
    })
}

pub(crate) async fn system_metrics(p: &Store) -> Result<SystemMetrics, ProviderError> {
    const OP: &str = "get_system_metrics";
    let r: row::SystemMetrics = p.call(OP, &p.sql.get_system_metrics).one_as().await?;
    Ok(SystemMetrics {
        total_instances: to_u64(OP, "count", r.total_instances)?,
        total_executions: to_u64(OP, "count", r.total_executions)?,
        running_instances: to_u64(OP, "count", r.running_instances)?,
        completed_instances: to_u64(OP, "count", r.completed_instances)?,
        failed_instances: to_u64(OP, "count", r.failed_instances)?,
        total_events: to_u64(OP, "count", r.total_events)?,
    })
}

pub(crate) async fn queue_depths(p: &Store) -> Result<QueueDepths, ProviderError> {
    const OP: &str = "get_queue_depths";
    let r: row::QueueDepths = p
        .call(OP, &p.sql.get_queue_depths)
        .bind(now_ms())
        .one_as()
        .await?;
    Ok(QueueDepths {
        orchestrator_queue: usize::try_from(r.orchestrator_queue).unwrap_or(0),
        worker_queue: usize::try_from(r.worker_queue).unwrap_or(0),
        timer_queue: 0, // timers are orchestrator-queue rows with a future visible_at
    })
}

pub(crate) async fn parent_id(p: &Store, instance: &str) -> Result<Option<String>, ProviderError> {
    const OP: &str = "get_parent_id";
    p.call(OP, &p.sql.get_parent_id)
        .bind(instance)
        .scalar()
        .await
}

/// A counter the delete and prune functions return (never negative).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl From<row::DeleteCounts> for DeleteInstanceResult {
    fn from(r: row::DeleteCounts) -> Self {
        Self {
            instances_deleted: count(r.instances_deleted),
            executions_deleted: count(r.executions_deleted),
            events_deleted: count(r.events_deleted),
            queue_messages_deleted: count(r.queue_messages_deleted),
        }
    }
}

impl From<row::PruneCounts> for PruneResult {
    fn from(r: row::PruneCounts) -> Self {
        Self {
            instances_processed: count(r.instances_processed),
            executions_deleted: count(r.executions_deleted),
            events_deleted: count(r.events_deleted),
        }
    }
}

pub(crate) async fn delete_instances_atomic(
    p: &Store,
    ids: &[String],
    force: bool,
) -> Result<DeleteInstanceResult, ProviderError> {
    const OP: &str = "delete_instances_atomic";
    if ids.is_empty() {
        return Ok(DeleteInstanceResult::default());
    }
    let counts: row::DeleteCounts = p
        .call(OP, &p.sql.delete_instances_atomic)
        .bind(ids)
        .bind(force)
        .one_as()
        .await?;
    Ok(counts.into())
}

pub(crate) async fn delete_instance(
    p: &Store,
    instance: &str,
    force: bool,
) -> Result<DeleteInstanceResult, ProviderError> {
    const OP: &str = "delete_instance";
    let counts: row::DeleteCounts = p
        .call(OP, &p.sql.delete_instance)
        .bind(instance)
        .bind(force)
        .one_as()
        .await?;
    Ok(counts.into())
}

/// `(ids, completed_before, limit)` arguments of the bulk functions.
type FilterArguments = (Option<Vec<String>>, Option<i64>, i64);

/// Builds [`FilterArguments`] from an [`InstanceFilter`].
fn filter_arguments(op: &str, f: &InstanceFilter) -> Result<FilterArguments, ProviderError> {
    Ok((
        f.instance_ids.clone(),
        f.completed_before
            .map(|t| to_i64(op, "completed_before", t))
            .transpose()?,
        i64::from(f.limit.unwrap_or(DEFAULT_BULK_LIMIT)),
    ))
}

/// One queue as an operator sees it (see [`crate::PostgresProvider::queue_overview`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// `orchestrator` (messages other than timers), `timer` or `worker`.
    pub queue: String,
    /// Messages visible now and not held by a live lease.
    pub ready: u64,
    /// Messages not held whose visible time is still in the future.
    pub delayed: u64,
    /// Messages held by a live lease.
    pub locked: u64,
    /// How long the oldest ready message has been visible; `None` when none is ready.
    pub oldest_ready_age: Option<std::time::Duration>,
}

/// [`crate::PostgresProvider::queue_overview`].
pub(crate) async fn queue_overview(p: &Store) -> Result<Vec<QueueStatus>, ProviderError> {
    const OP: &str = "queue_overview";
    let rows: Vec<row::QueueOverview> = p
        .call(OP, &p.sql.queue_overview)
        .bind(now_ms())
        .all_as()
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(QueueStatus {
                queue: r.queue,
                ready: to_u64(OP, "ready", r.ready)?,
                delayed: to_u64(OP, "delayed", r.delayed)?,
                locked: to_u64(OP, "locked", r.locked)?,
                oldest_ready_age: r
                    .oldest_ready_ms
                    .map(|ms| to_u64(OP, "oldest_ready_ms", ms))
                    .transpose()?
                    .map(std::time::Duration::from_millis),
            })
        })
        .collect()
}

/// [`crate::PostgresProvider::bulk_delete_candidates`].
pub(crate) async fn bulk_delete_candidates(
    p: &Store,
    filter: &InstanceFilter,
) -> Result<Vec<String>, ProviderError> {
    const OP: &str = "bulk_delete_roots";
    let (ids, completed_before, limit) = filter_arguments(OP, filter)?;
    p.call(OP, &p.sql.bulk_delete_roots)
        .bind(ids)
        .bind(completed_before)
        .bind(limit)
        .scalars()
        .await
}

pub(crate) async fn delete_instance_bulk(
    p: &Store,
    filter: &InstanceFilter,
) -> Result<DeleteInstanceResult, ProviderError> {
    const OP: &str = "delete_instance_bulk";
    let (ids, completed_before, limit) = filter_arguments(OP, filter)?;
    let counts: row::DeleteCounts = p
        .call(OP, &p.sql.delete_instance_bulk)
        .bind(ids)
        .bind(completed_before)
        .bind(limit)
        .one_as()
        .await?;
    Ok(counts.into())
}

fn prune_arguments(
    op: &str,
    o: &PruneOptions,
) -> Result<(Option<i64>, Option<i64>), ProviderError> {
    Ok((
        o.keep_last.map(i64::from),
        o.completed_before
            .map(|t| to_i64(op, "completed_before", t))
            .transpose()?,
    ))
}

pub(crate) async fn prune_executions(
    p: &Store,
    instance: &str,
    options: &PruneOptions,
) -> Result<PruneResult, ProviderError> {
    const OP: &str = "prune_executions";
    let (keep_last, completed_before) = prune_arguments(OP, options)?;
    let counts: row::PruneCounts = p
        .call(OP, &p.sql.prune_executions)
        .bind(instance)
        .bind(keep_last)
        .bind(completed_before)
        .one_as()
        .await?;
    Ok(counts.into())
}

pub(crate) async fn prune_executions_bulk(
    p: &Store,
    filter: &InstanceFilter,
    options: &PruneOptions,
) -> Result<PruneResult, ProviderError> {
    const OP: &str = "prune_executions_bulk";
    let (ids, filter_before, limit) = filter_arguments(OP, filter)?;
    let (keep_last, completed_before) = prune_arguments(OP, options)?;
    let counts: row::PruneCounts = p
        .call(OP, &p.sql.prune_executions_bulk)
        .bind(ids)
        .bind(filter_before)
        .bind(limit)
        .bind(keep_last)
        .bind(completed_before)
        .one_as()
        .await?;
    Ok(counts.into())
}
