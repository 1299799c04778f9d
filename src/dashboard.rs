//! Bounded reads for operator tools (the `duroxide-pg-ui` dashboard and the
//! `duroxide-pg` CLI): a filtered, keyset-paginated instance list, counts by
//! status, completions per minute, an instance's newest executions, one page
//! of a history and a bounded sub-orchestration tree.
//!
//! Every call is one stored function (`schema/functions/dashboard_*.sql`),
//! returns at most a page, and runs under [`OPERATOR_QUERY_TIMEOUT`] whatever the
//! provider's own statement timeout: a page of a store holding millions of
//! instances must never hold the database for long.

use std::time::Duration;

use duroxide::Event;
use duroxide::providers::{ExecutionInfo, ProviderError};

use crate::call::read_row;
use crate::codec::{decode_all, to_i64, to_u64};
use crate::error::invalid_input;
use crate::signatures;
use crate::store::Store;

/// The server-side statement timeout of every dashboard call.
pub const OPERATOR_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most rows one dashboard call returns.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Which instances to list; every `None` matches all. Times are ms since the
/// Unix epoch, ranges are half-open (`from` included, `to` excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceQuery {
    /// The current execution's status (`Running`, `Completed`, `Failed`, `ContinuedAsNew`).
    pub status: Option<String>,
    /// The orchestration name, exactly.
    pub name: Option<String>,
    /// The instance id starts with this (taken literally: no wildcards).
    pub id_prefix: Option<String>,
    /// Created at or after.
    pub created_from: Option<u64>,
    /// Created before.
    pub created_to: Option<u64>,
    /// Current execution completed at or after.
    pub completed_from: Option<u64>,
    /// Current execution completed before.
    pub completed_to: Option<u64>,
    /// Only root instances whose current execution is Completed or Failed:
    /// what a purge ([`duroxide::providers::ProviderAdmin::delete_instance_bulk`]) deletes.
    pub finished_roots_only: bool,
}

/// Where a page ends: pass the last row's cursor to get the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCursor {
    /// The last row's creation time (ms).
    pub created_at: u64,
    /// The last row's id.
    pub instance_id: String,
}

/// One row of [`crate::PostgresProvider::dashboard_instances`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    /// Instance id.
    pub instance_id: String,
    /// Orchestration name.
    pub orchestration_name: String,
    /// Orchestration version, once known.
    pub orchestration_version: Option<String>,
    /// The current execution's status (`Running` before it has a row).
    pub status: String,
    /// The current execution.
    pub execution_id: u64,
    /// Created (ms).
    pub created_at: u64,
    /// Last changed (ms).
    pub updated_at: u64,
    /// When the current execution completed or failed (ms).
    pub completed_at: Option<u64>,
    /// The parent, for a sub-orchestration.
    pub parent_instance_id: Option<String>,
}

impl InstanceRow {
    /// The cursor that continues a listing after this row.
    pub fn cursor(&self) -> InstanceCursor {
        InstanceCursor {
            created_at: self.created_at,
            instance_id: self.instance_id.clone(),
        }
    }
}

/// Completions and failures in one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityBucket {
    /// The bucket's start (ms).
    pub start_ms: u64,
    /// Executions that completed in it.
    pub completed: u64,
    /// Executions that failed in it.
    pub failed: u64,
}

/// An instance's newest executions: [`crate::PostgresProvider::dashboard_executions`].
#[derive(Debug, Clone, Default)]
pub struct ExecutionPage {
    /// How many executions the instance has in all (0: unknown instance).
    pub execution_count: u64,
    /// The newest of them, newest first.
    pub newest: Vec<ExecutionInfo>,
}

/// One member of [`crate::PostgresProvider::dashboard_tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeMember {
    /// Instance id.
    pub instance_id: String,
    /// Its parent (`None` for a root).
    pub parent_instance_id: Option<String>,
    /// 0 for the instance asked for, 1 for its children, ...
    pub depth: u32,
    /// Orchestration name.
    pub orchestration_name: String,
    /// The current execution's status.
    pub status: String,
}

/// An event's kind as stored (`ActivityScheduled`, ...) and its other
/// fields, nulls left out: how operator tools show a history.
pub fn event_kind_and_fields(e: &Event) -> (String, serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    match serde_json::to_value(&e.kind) {
        Ok(Value::Object(mut fields)) => {
            let kind = match fields.remove("type") {
                Some(Value::String(s)) => s,
                _ => "?".into(),
            };
            fields.retain(|_, v| !v.is_null());
            (kind, fields)
        }
        _ => ("?".into(), serde_json::Map::new()),
    }
}

fn page_size(operation: &str, limit: u32) -> Result<i32, ProviderError> {
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(invalid_input(
            operation,
            format!("page size {limit} is not in 1..={MAX_PAGE_SIZE}"),
        ));
    }
    Ok(limit as i32)
}

fn moment(operation: &str, what: &str, ms: Option<u64>) -> Result<Option<i64>, ProviderError> {
    ms.map(|v| to_i64(operation, what, v)).transpose()
}

fn moment_back(operation: &str, what: &str, ms: Option<i64>) -> Result<Option<u64>, ProviderError> {
    ms.map(|v| to_u64(operation, what, v)).transpose()
}

/// The filter's arguments, which the list and the count begin with.
fn filter<'q>(
    op: &str,
    q: &'q InstanceQuery,
) -> Result<signatures::DashboardFilter<'q>, ProviderError> {
    Ok(signatures::DashboardFilter {
        status: q.status.as_deref(),
        name: q.name.as_deref(),
        id_prefix: q.id_prefix.as_deref(),
        created_from: moment(op, "created_from", q.created_from)?,
        created_to: moment(op, "created_to", q.created_to)?,
        completed_from: moment(op, "completed_from", q.completed_from)?,
        completed_to: moment(op, "completed_to", q.completed_to)?,
        finished_roots_only: q.finished_roots_only,
    })
}

/// [`crate::PostgresProvider::dashboard_instances`].
pub(crate) async fn instances(
    p: &Store,
    query: &InstanceQuery,
    after: Option<&InstanceCursor>,
    limit: u32,
) -> Result<Vec<InstanceRow>, ProviderError> {
    const OP: &str = "dashboard_instances";
    let limit = page_size(OP, limit)?;
    let call = p.bounded_call(OP, &p.sql.dashboard_instances, OPERATOR_QUERY_TIMEOUT);
    let rows: Vec<signatures::DashboardInstance> = filter(OP, query)?
        .bind_to(call)
        .bind(moment(OP, "after.created_at", after.map(|c| c.created_at))?)
        .bind(after.map(|c| c.instance_id.as_str()))
        .bind(limit)
        .all_as()
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(InstanceRow {
                instance_id: r.instance_id,
                orchestration_name: r.orchestration_name,
                orchestration_version: r.orchestration_version,
                status: r.status,
                execution_id: to_u64(OP, "execution_id", r.execution_id)?,
                created_at: to_u64(OP, "created_at", r.created_at)?,
                updated_at: to_u64(OP, "updated_at", r.updated_at)?,
                completed_at: moment_back(OP, "completed_at", r.completed_at)?,
                parent_instance_id: r.parent_instance_id,
            })
        })
        .collect()
}

/// [`crate::PostgresProvider::dashboard_count`].
pub(crate) async fn count(
    p: &Store,
    query: &InstanceQuery,
    cap: u32,
) -> Result<u64, ProviderError> {
    const OP: &str = "dashboard_count";
    let cap = i32::try_from(cap).map_err(|_| invalid_input(OP, "cap exceeds i32::MAX"))?;
    let call = p.bounded_call(OP, &p.sql.dashboard_count, OPERATOR_QUERY_TIMEOUT);
    let n: i64 = filter(OP, query)?.bind_to(call).bind(cap).scalar().await?;
    to_u64(OP, "count", n)
}

/// [`crate::PostgresProvider::dashboard_status_counts`].
pub(crate) async fn status_counts(p: &Store) -> Result<Vec<(String, u64)>, ProviderError> {
    const OP: &str = "dashboard_status_counts";
    let rows: Vec<signatures::StatusCount> = p
        .bounded_call(OP, &p.sql.dashboard_status_counts, OPERATOR_QUERY_TIMEOUT)
        .all_as()
        .await?;
    rows.into_iter()
        .map(|r| Ok((r.status, to_u64(OP, "count", r.count)?)))
        .collect()
}

/// [`crate::PostgresProvider::dashboard_activity`].
pub(crate) async fn activity(
    p: &Store,
    since_ms: u64,
    bucket: Duration,
) -> Result<Vec<ActivityBucket>, ProviderError> {
    const OP: &str = "dashboard_activity";
    let bucket_ms = crate::codec::millis(bucket);
    if bucket_ms <= 0 {
        return Err(invalid_input(OP, "the bucket must be at least 1 ms"));
    }
    let rows: Vec<signatures::ActivityBucket> = p
        .bounded_call(OP, &p.sql.dashboard_activity, OPERATOR_QUERY_TIMEOUT)
        .bind(to_i64(OP, "since_ms", since_ms)?)
        .bind(bucket_ms)
        .all_as()
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ActivityBucket {
                start_ms: to_u64(OP, "bucket", r.bucket_ms)?,
                completed: to_u64(OP, "completed", r.completed)?,
                failed: to_u64(OP, "failed", r.failed)?,
            })
        })
        .collect()
}

/// [`crate::PostgresProvider::dashboard_history`].
pub(crate) async fn history(
    p: &Store,
    instance: &str,
    execution_id: u64,
    after_event_id: Option<u64>,
    limit: u32,
) -> Result<Vec<Event>, ProviderError> {
    const OP: &str = "dashboard_history";
    let limit = page_size(OP, limit)?;
    let texts: Vec<String> = p
        .bounded_call(OP, &p.sql.dashboard_history, OPERATOR_QUERY_TIMEOUT)
        .bind(instance)
        .bind(to_i64(OP, "execution_id", execution_id)?)
        .bind(moment(OP, "after_event_id", after_event_id)?)
        .bind(limit)
        .scalars()
        .await?;
    decode_all(OP, &texts)
}

/// [`crate::PostgresProvider::dashboard_executions`].
pub(crate) async fn executions(
    p: &Store,
    instance: &str,
    limit: u32,
) -> Result<ExecutionPage, ProviderError> {
    const OP: &str = "dashboard_executions";
    let limit = page_size(OP, limit)?;
    let rows = p
        .bounded_call(OP, &p.sql.dashboard_executions, OPERATOR_QUERY_TIMEOUT)
        .bind(instance)
        .bind(limit)
        .fetch_all()
        .await?;
    let mut page = ExecutionPage::default();
    for r in &rows {
        let count: signatures::ExecutionCount = read_row(OP, r)?;
        page.execution_count = to_u64(OP, "execution_count", count.execution_count)?;
        page.newest
            .push(crate::admin::execution_info_of(OP, read_row(OP, r)?)?);
    }
    Ok(page)
}

/// [`crate::PostgresProvider::dashboard_tree`].
pub(crate) async fn tree(
    p: &Store,
    instance: &str,
    limit: u32,
) -> Result<Vec<TreeMember>, ProviderError> {
    const OP: &str = "dashboard_tree";
    let limit = page_size(OP, limit)?;
    let rows: Vec<signatures::TreeMember> = p
        .bounded_call(OP, &p.sql.dashboard_tree, OPERATOR_QUERY_TIMEOUT)
        .bind(instance)
        .bind(limit)
        .all_as()
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(TreeMember {
                instance_id: r.instance_id,
                parent_instance_id: r.parent_instance_id,
                depth: u32::try_from(r.depth).unwrap_or(0),
                orchestration_name: r.orchestration_name,
                status: r.status,
            })
        })
        .collect()
}
