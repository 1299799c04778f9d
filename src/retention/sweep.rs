//! One sweep: take the lease, walk each kind of finished work in batches
//! (a cursor in the functions' scan order, a pause between batches, half the
//! batch after a statement timeout), record the sweep, release the lease.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duroxide::providers::ProviderError;
use tracing::Instrument;

use super::{LastSweep, RetentionReport, RetentionStatus};
use crate::clock::now_ms;
use crate::codec::to_u64;
use crate::codes::ProviderSqlState;
use crate::config::RetentionPolicy;
use crate::error::has_sqlstate;
use crate::signatures::{
    RetentionCandidate, RetentionDelete, RetentionDeleted, RetentionFinish,
    RetentionPruneCandidate, RetentionPruned, RetentionState,
};
use crate::sqlstates::QUERY_CANCELED;
use crate::store::Store;

/// A name for a sweeper that no other process or provider uses:
/// `<kind>:<pid>:<n>`.
pub(crate) fn owner_name(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{kind}:{}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// One sweep to run.
pub(crate) struct Sweep<'a> {
    pub(crate) store: &'a Store,
    pub(crate) policy: &'a RetentionPolicy,
    /// Who sweeps (the lease owner and `last_by`).
    pub(crate) owner: String,
    /// A background sweeper stores its policy for `retention status`.
    pub(crate) background: bool,
    /// Only read and count; take no lease, record nothing.
    pub(crate) dry_run: bool,
    /// Set when the provider closes: the sweep ends before its next batch.
    pub(crate) stopping: Option<&'a AtomicBool>,
}

/// What one batch did.
struct Batch<C> {
    /// Roots (or chains) looked at; fewer than asked means the kind is done.
    scanned: u64,
    /// Where the next batch starts (`None`: nothing was looked at).
    cursor: Option<C>,
    instances: u64,
    executions: u64,
    pruned_executions: u64,
    events: u64,
    instance_ids: Vec<String>,
    pruned: Vec<(String, u64)>,
}

// Not derived: a cursor type needs no default of its own.
impl<C> Default for Batch<C> {
    fn default() -> Self {
        Self {
            scanned: 0,
            cursor: None,
            instances: 0,
            executions: 0,
            pruned_executions: 0,
            events: 0,
            instance_ids: Vec::new(),
            pruned: Vec::new(),
        }
    }
}

type BatchFuture<'f, C> =
    Pin<Box<dyn Future<Output = Result<Batch<C>, ProviderError>> + Send + 'f>>;

/// Why a sweep stopped before the end.
enum Stop {
    /// Another sweeper holds the lease now (ours expired): not a failure of
    /// the store, and nothing is recorded (the lease is not ours to release).
    LeaseLost,
    Failed(ProviderError),
}

impl Sweep<'_> {
    /// Runs the sweep. A sweep that cannot take the lease does nothing and
    /// reports `ran: false`.
    pub(crate) async fn run(self) -> Result<RetentionReport, ProviderError> {
        self.policy.validate().map_err(ProviderError::from)?;
        let span = tracing::info_span!(
            "duroxide_pg.retention_sweep",
            schema = %self.store.schema,
            owner = %self.owner,
            dry_run = self.dry_run,
            instances = tracing::field::Empty,
            executions = tracing::field::Empty,
            events = tracing::field::Empty,
            batches = tracing::field::Empty,
            timeouts = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        self.run_in(span.clone()).instrument(span).await
    }

    async fn run_in(self, span: tracing::Span) -> Result<RetentionReport, ProviderError> {
        let schema = self.store.schema.as_str();
        let started_at = now_ms();
        let clock = Instant::now();
        let mut report = RetentionReport {
            dry_run: self.dry_run,
            final_batch_size: self.policy.batch_size,
            ..RetentionReport::default()
        };
        if !self.dry_run && !self.acquire(started_at).await? {
            span.record("outcome", "skipped");
            crate::metrics::retention_sweep(schema, "skipped", None);
            tracing::debug!(target: "duroxide_pg", "another sweeper holds the sweep lease");
            return Ok(report);
        }
        report.ran = true;
        let result = self.all_kinds(started_at, &mut report).await;
        span.record("instances", report.instances);
        span.record("executions", report.executions);
        span.record("events", report.events);
        span.record("batches", report.batches);
        span.record("timeouts", report.timeouts);
        let (outcome, error) = match &result {
            Ok(()) => ("completed", None),
            Err(Stop::LeaseLost) => ("lease_lost", None),
            Err(Stop::Failed(e)) => ("failed", Some(e.to_string())),
        };
        span.record("outcome", outcome);
        if !self.dry_run {
            crate::metrics::retention_deleted(
                schema,
                [report.instances, report.executions, report.events],
            );
            crate::metrics::retention_sweep(schema, outcome, Some(clock.elapsed()));
            if !matches!(result, Err(Stop::LeaseLost)) {
                self.finish(started_at, &report, error.as_deref()).await?;
            }
        }
        match result {
            Ok(()) => {
                // A sweep that found nothing (most of them) is not news.
                if report.instances + report.executions > 0 {
                    tracing::info!(
                        target: "duroxide_pg",
                        instances = report.instances,
                        executions = report.executions,
                        events = report.events,
                        dry_run = self.dry_run,
                        "retention sweep done"
                    );
                } else {
                    tracing::debug!(target: "duroxide_pg", dry_run = self.dry_run, "retention sweep found nothing");
                }
                Ok(report)
            }
            Err(Stop::LeaseLost) => {
                tracing::warn!(
                    target: "duroxide_pg",
                    "retention sweep stopped: its lease expired and another sweeper took over"
                );
                Ok(report)
            }
            Err(Stop::Failed(e)) => {
                tracing::warn!(target: "duroxide_pg", error = %e, "retention sweep failed");
                Err(e)
            }
        }
    }

    /// How long a lease lasts between two renewals: three batches and a
    /// pause, at least a minute.
    fn lease_ms(&self) -> i64 {
        let p = self.policy;
        let ms = p
            .statement_timeout
            .saturating_mul(3)
            .saturating_add(p.pause)
            .max(Duration::from_secs(60));
        i64::try_from(ms.as_millis()).unwrap_or(i64::MAX / 4)
    }

    /// A batch call of `statement`, bounded by the policy's statement
    /// timeout, its first arguments this sweep's lease (owner, now, length).
    fn leased_call<'c>(
        &'c self,
        op: &'c str,
        statement: &'c crate::call::Statement,
    ) -> crate::call::Call<'c> {
        self.store
            .bounded_call(op, statement, self.policy.statement_timeout)
            .bind(self.owner.as_str())
            .bind(now_ms())
            .bind(self.lease_ms())
    }

    async fn acquire(&self, now: i64) -> Result<bool, ProviderError> {
        let policy = self.background.then(|| self.policy.to_json());
        let s = self.store;
        s.call("retention_acquire", &s.sql.retention_acquire)
            .bind(self.owner.as_str())
            .bind(now)
            .bind(self.lease_ms())
            .bind(policy)
            .scalar()
            .await
    }

    async fn finish(
        &self,
        started_at: i64,
        report: &RetentionReport,
        error: Option<&str>,
    ) -> Result<(), ProviderError> {
        let s = self.store;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let _held: bool = RetentionFinish {
            owner: &self.owner,
            now_ms: now_ms(),
            started_at,
            policy: self.policy.to_json(),
            instances: n(report.instances),
            executions: n(report.executions),
            events: n(report.events),
            error,
        }
        .bind_to(s.call("retention_finish", &s.sql.retention_finish))
        .scalar()
        .await?;
        Ok(())
    }

    async fn all_kinds(&self, started_at: i64, report: &mut RetentionReport) -> Result<(), Stop> {
        let p = self.policy;
        for (status, window) in [("Completed", p.completed), ("Failed", p.failed)] {
            let Some(window) = window else { continue };
            let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
            let before = started_at.saturating_sub(window);
            self.batches(report, |cursor: Option<(i64, String)>, limit| {
                Box::pin(self.delete_batch(status, before, cursor, limit))
            })
            .await?;
        }
        if let Some(keep) = p.keep_executions {
            // A dry run deleted nothing: the chains it listed for deletion
            // are not listed for pruning too (a sweep prunes after deleting).
            let deleted: HashSet<String> = report.instance_ids.iter().cloned().collect();
            let deleted = &deleted;
            self.batches(report, |cursor: Option<String>, limit| {
                Box::pin(self.prune_batch(i64::from(keep), deleted, cursor, limit))
            })
            .await?;
        }
        Ok(())
    }

    /// Runs `step` from the start of its scan until a batch looks at fewer
    /// rows than asked. A batch that hits the statement timeout rolled back:
    /// it runs again from the same cursor with half as many; one that times
    /// out at [`RetentionPolicy::MIN_BATCH_SIZE`] ends the sweep.
    async fn batches<'s, C: Clone>(
        &'s self,
        report: &mut RetentionReport,
        mut step: impl FnMut(Option<C>, u32) -> BatchFuture<'s, C>,
    ) -> Result<(), Stop> {
        let mut cursor: Option<C> = None;
        loop {
            if self.stopping.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Ok(());
            }
            let limit = report.final_batch_size;
            match step(cursor.clone(), limit).await {
                Ok(b) => {
                    report.batches += 1;
                    report.instances += b.instances;
                    report.executions += b.executions;
                    report.pruned_executions += b.pruned_executions;
                    report.events += b.events;
                    report.instance_ids.extend(b.instance_ids);
                    report.pruned.extend(b.pruned);
                    if b.scanned < u64::from(limit) {
                        return Ok(());
                    }
                    cursor = b.cursor.or(cursor);
                }
                Err(e) if has_sqlstate(&e, QUERY_CANCELED) => {
                    report.timeouts += 1;
                    crate::metrics::retention_timeout(&self.store.schema);
                    if limit <= RetentionPolicy::MIN_BATCH_SIZE {
                        return Err(Stop::Failed(e));
                    }
                    report.final_batch_size = (limit / 2).max(RetentionPolicy::MIN_BATCH_SIZE);
                    tracing::info!(
                        target: "duroxide_pg",
                        from = limit,
                        to = report.final_batch_size,
                        "retention batch hit its statement timeout; smaller batches from here"
                    );
                }
                Err(e) if has_sqlstate(&e, ProviderSqlState::RetentionLeaseLost.code()) => {
                    return Err(Stop::LeaseLost);
                }
                Err(e) => return Err(Stop::Failed(e)),
            }
            tokio::time::sleep(self.policy.pause).await;
        }
    }

    async fn delete_batch(
        &self,
        status: &'static str,
        before: i64,
        cursor: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Batch<(i64, String)>, ProviderError> {
        let s = self.store;
        let (after_at, after_id) = cursor.unzip();
        let timeout = self.policy.statement_timeout;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        if self.dry_run {
            const OP: &str = "retention_candidates";
            let rows: Vec<RetentionCandidate> = s
                .bounded_call(OP, &s.sql.retention_candidates, timeout)
                .bind(status)
                .bind(before)
                .bind(after_at)
                .bind(after_id)
                .bind(limit)
                .bind(true)
                .all_as()
                .await?;
            return dry_batch(rows, |batch, r| {
                batch.cursor = Some((r.completed_at, r.root_id));
                if r.eligible {
                    // An eligible root always has its tree: NULL is the function's bug.
                    let ids = r.tree_ids.ok_or_else(|| missing(OP, "o_tree_ids"))?.0;
                    batch.instances += ids.len() as u64;
                    batch.executions += counter(OP, "o_executions", r.executions)?;
                    batch.events += counter(OP, "o_events", r.events)?;
                    batch.instance_ids.extend(ids);
                }
                Ok(())
            });
        }
        const OP: &str = "retention_delete";
        let r: RetentionDeleted = RetentionDelete {
            owner: &self.owner,
            now_ms: now_ms(),
            lease_ms: self.lease_ms(),
            status,
            before,
            after_at,
            after_id,
            limit,
        }
        .bind_to(s.bounded_call(OP, &s.sql.retention_delete, timeout))
        .one_as()
        .await?;
        Ok(Batch {
            scanned: counter(OP, "o_roots_scanned", r.roots_scanned)?,
            cursor: r.last_at.zip(r.last_id),
            instances: counter(OP, "o_instances_deleted", r.instances_deleted)?,
            executions: counter(OP, "o_executions_deleted", r.executions_deleted)?,
            events: counter(OP, "o_events_deleted", r.events_deleted)?,
            ..Batch::default()
        })
    }

    async fn prune_batch(
        &self,
        keep: i64,
        deleted: &HashSet<String>,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<Batch<String>, ProviderError> {
        let s = self.store;
        let timeout = self.policy.statement_timeout;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        if self.dry_run {
            const OP: &str = "retention_prune_candidates";
            let rows: Vec<RetentionPruneCandidate> = s
                .bounded_call(OP, &s.sql.retention_prune_candidates, timeout)
                .bind(keep)
                .bind(cursor)
                .bind(limit)
                .all_as()
                .await?;
            return dry_batch(rows, |batch, r| {
                let executions = counter(OP, "o_executions", r.executions)?;
                if executions > 0 && !deleted.contains(&r.instance_id) {
                    batch.executions += executions;
                    batch.pruned_executions += executions;
                    batch.events += counter(OP, "o_events", r.events)?;
                    batch.pruned.push((r.instance_id.clone(), executions));
                }
                batch.cursor = Some(r.instance_id);
                Ok(())
            });
        }
        const OP: &str = "retention_prune";
        let r: RetentionPruned = self
            .leased_call(OP, &s.sql.retention_prune)
            .bind(keep)
            .bind(cursor)
            .bind(limit)
            .one_as()
            .await?;
        let executions = counter(OP, "o_executions_deleted", r.executions_deleted)?;
        Ok(Batch {
            scanned: counter(OP, "o_scanned", r.scanned)?,
            cursor: r.last_id,
            executions,
            pruned_executions: executions,
            events: counter(OP, "o_events_deleted", r.events_deleted)?,
            ..Batch::default()
        })
    }
}

/// A dry run's batch: every row a `*_candidates` function returned, each
/// added to the batch by `add`.
fn dry_batch<C, R>(
    rows: Vec<R>,
    mut add: impl FnMut(&mut Batch<C>, R) -> Result<(), ProviderError>,
) -> Result<Batch<C>, ProviderError> {
    let mut batch = Batch {
        scanned: rows.len() as u64,
        ..Batch::default()
    };
    for r in rows {
        add(&mut batch, r)?;
    }
    Ok(batch)
}

/// The error for a column that must not be NULL in this row.
fn missing(op: &str, column: &str) -> ProviderError {
    crate::error::provider_error(
        op,
        sqlx::Error::ColumnDecode {
            index: format!("{column:?}"),
            source: Box::new(sqlx::error::UnexpectedNullError),
        },
    )
}

/// A non-negative count column (NULL reads as 0).
fn counter(op: &str, column: &str, value: Option<i64>) -> Result<u64, ProviderError> {
    to_u64(op, column, value.unwrap_or(0))
}

/// The retention state and the oldest finished root per status.
pub(crate) async fn status(store: &Store) -> Result<RetentionStatus, ProviderError> {
    const OP: &str = "retention_status";
    let r: RetentionState = store
        .call(OP, &store.sql.retention_status)
        .bind(now_ms())
        .one_as()
        .await?;
    let ms = |column: &str, v: Option<i64>| v.map(|v| to_u64(OP, column, v)).transpose();
    let policy = |json: Option<String>| json.as_deref().and_then(RetentionPolicy::from_json);
    let last = match (r.last_by, ms("o_last_finished_at", r.last_finished_at)?) {
        (Some(by), Some(finished_at_ms)) => Some(LastSweep {
            by,
            policy: policy(r.last_policy),
            started_at_ms: ms("o_last_started_at", r.last_started_at)?.unwrap_or(finished_at_ms),
            finished_at_ms,
            instances: counter(OP, "o_last_instances", r.last_instances)?,
            executions: counter(OP, "o_last_executions", r.last_executions)?,
            events: counter(OP, "o_last_events", r.last_events)?,
            error: r.last_error,
        }),
        _ => None,
    };
    Ok(RetentionStatus {
        policy: policy(r.policy),
        policy_by: r.policy_by.zip(ms("o_policy_at", r.policy_at)?),
        sweeping: r.owner.zip(ms("o_lease_until", r.lease_until)?),
        last,
        oldest_completed: r
            .oldest_completed_id
            .zip(ms("o_oldest_completed_at", r.oldest_completed_at)?),
        oldest_failed: r
            .oldest_failed_id
            .zip(ms("o_oldest_failed_at", r.oldest_failed_at)?),
    })
}
