//! PostgreSQL-side metrics, through the [`metrics`](https://docs.rs/metrics)
//! facade duroxide itself uses: install any recorder (Prometheus, OTLP, ...)
//! and they appear next to the runtime's. Without a recorder they cost nothing.
//!
//! They complement, not repeat, the runtime's
//! `duroxide_provider_operation_duration_seconds`: what only the provider
//! sees (its pool, its wake-ups, the SQLSTATE of a failure, a lease taken over
//! from a dead holder, migrations). docs/metrics.md lists them all.

use std::time::Duration;

/// Gauge: connections of the provider's call pool, by `state` (`in_use`,
/// `idle`); label `schema`.
pub const POOL_CONNECTIONS: &str = "duroxide_pg_pool_connections";
/// Histogram (seconds): how long a call waited for a connection, opening one
/// included; label `schema`.
pub const POOL_ACQUIRE_WAIT: &str = "duroxide_pg_pool_acquire_wait_seconds";
/// Counter: connections the call pool opened (after the first, each one is a
/// login: credential rotation, max lifetime, failover); label `schema`.
pub const POOL_CONNECTIONS_OPENED: &str = "duroxide_pg_pool_connections_opened_total";
/// Counter: waiting fetches woken, by `queue` (`orchestrator`, `worker`) and
/// `reason`: `notification` (a LISTEN hint), `timer` (a delayed item's
/// visible time), `fallback_poll` (no hint within the fallback interval: a
/// steady rate of these with work flowing means hints are being lost);
/// label `schema`.
pub const WAKEUPS: &str = "duroxide_pg_wakeups_total";
/// Counter: failed provider calls, by `operation`, `sqlstate_class` (the
/// first two characters of the SQLSTATE, e.g. `40`, `08`, `DX`; `io`,
/// `pool_timeout`, `pool_closed`, `tls`, `protocol`, `decode` or `other`
/// without one) and `retryable` (`true`/`false`).
pub const ERRORS: &str = "duroxide_pg_errors_total";
/// Counter: leases whose holder let them expire and that a fetch took over,
/// by `queue`; label `schema`. Each is a crashed, paused or overloaded runtime.
pub const LEASE_TAKEOVERS: &str = "duroxide_pg_lease_takeovers_total";
/// Counter: migration runs at provider construction or `migrate()`, by
/// `outcome` (`applied`: new migrations committed, `up_to_date`, `failed`);
/// label `schema`.
pub const MIGRATION_RUNS: &str = "duroxide_pg_migration_runs_total";
/// Counter: items an ack leased ahead (prefetch), by `queue` and `outcome`:
/// `used` by the next fetch or `released` unused; label `schema`.
pub const PREFETCH: &str = "duroxide_pg_prefetch_total";
/// Counter: rows retention sweeps deleted, by `kind` (`instances`,
/// `executions`, `events`); label `schema`. Dry runs record nothing.
pub const RETENTION_DELETED: &str = "duroxide_pg_retention_deleted_total";
/// Counter: retention sweeps, by `outcome`: `completed`, `failed` (a batch
/// failed; the next interval tries again), `lease_lost` (its lease expired
/// and another sweeper took over), `skipped` (another sweeper held the
/// lease); label `schema`.
pub const RETENTION_SWEEPS: &str = "duroxide_pg_retention_sweeps_total";
/// Histogram (seconds): how long a retention sweep that ran took; label
/// `schema`.
pub const RETENTION_SWEEP_DURATION: &str = "duroxide_pg_retention_sweep_duration_seconds";
/// Counter: retention batches that hit their statement timeout (rolled back
/// and retried with half the batch size); label `schema`.
pub const RETENTION_BATCH_TIMEOUTS: &str = "duroxide_pg_retention_batch_timeouts_total";
/// Counter: queue tables the provider's queue vacuum vacuumed
/// (`with_queue_vacuum`), by `table`; label `schema`.
pub const QUEUE_VACUUMS: &str = "duroxide_pg_queue_vacuums_total";
/// Histogram: calls one statement carried, by `operation` (`ack_work_item`:
/// worker acks that lease ahead); label `schema`. A call that went out alone
/// records 1; calls that arrived while another of theirs was on the wire
/// went out together and record how many they were.
pub const BATCH_MEMBERS: &str = "duroxide_pg_batch_members";

/// The `queue` label value.
pub(crate) fn queue_label(queue: crate::codes::Queue) -> &'static str {
    match queue {
        crate::codes::Queue::Orchestrator => "orchestrator",
        crate::codes::Queue::Worker => "worker",
    }
}

pub(crate) fn pool_connections(schema: &str, in_use: usize, idle: usize) {
    #[allow(clippy::cast_precision_loss)] // connection counts are small
    {
        metrics::gauge!(POOL_CONNECTIONS, "schema" => schema.to_owned(), "state" => "in_use")
            .set(in_use as f64);
        metrics::gauge!(POOL_CONNECTIONS, "schema" => schema.to_owned(), "state" => "idle")
            .set(idle as f64);
    }
}

pub(crate) fn acquire_wait(schema: &str, waited: Duration) {
    metrics::histogram!(POOL_ACQUIRE_WAIT, "schema" => schema.to_owned())
        .record(waited.as_secs_f64());
}

pub(crate) fn connection_opened(schema: &str) {
    metrics::counter!(POOL_CONNECTIONS_OPENED, "schema" => schema.to_owned()).increment(1);
}

pub(crate) fn wakeup(schema: &str, queue: crate::codes::Queue, reason: &'static str) {
    metrics::counter!(WAKEUPS, "schema" => schema.to_owned(), "queue" => queue_label(queue), "reason" => reason)
        .increment(1);
}

pub(crate) fn error(operation: &str, sqlstate_class: &str, retryable: bool) {
    metrics::counter!(
        ERRORS,
        "operation" => operation.to_owned(),
        "sqlstate_class" => sqlstate_class.to_owned(),
        "retryable" => if retryable { "true" } else { "false" }
    )
    .increment(1);
}

pub(crate) fn lease_takeover(schema: &str, queue: crate::codes::Queue) {
    metrics::counter!(LEASE_TAKEOVERS, "schema" => schema.to_owned(), "queue" => queue_label(queue))
        .increment(1);
}

pub(crate) fn migration_run(schema: &str, outcome: &'static str) {
    metrics::counter!(MIGRATION_RUNS, "schema" => schema.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub(crate) fn prefetch(schema: &str, queue: crate::codes::Queue, outcome: &'static str) {
    metrics::counter!(PREFETCH, "schema" => schema.to_owned(), "queue" => queue_label(queue), "outcome" => outcome)
        .increment(1);
}

/// `deleted`: instances, executions and events.
pub(crate) fn retention_deleted(schema: &str, deleted: [u64; 3]) {
    for (kind, n) in ["instances", "executions", "events"]
        .into_iter()
        .zip(deleted)
    {
        metrics::counter!(RETENTION_DELETED, "schema" => schema.to_owned(), "kind" => kind)
            .increment(n);
    }
}

pub(crate) fn retention_sweep(schema: &str, outcome: &'static str, took: Option<Duration>) {
    metrics::counter!(RETENTION_SWEEPS, "schema" => schema.to_owned(), "outcome" => outcome)
        .increment(1);
    if let Some(took) = took {
        metrics::histogram!(RETENTION_SWEEP_DURATION, "schema" => schema.to_owned())
            .record(took.as_secs_f64());
    }
}

pub(crate) fn retention_timeout(schema: &str) {
    metrics::counter!(RETENTION_BATCH_TIMEOUTS, "schema" => schema.to_owned()).increment(1);
}

pub(crate) fn queue_vacuum(schema: &str, table: &str) {
    metrics::counter!(QUEUE_VACUUMS, "schema" => schema.to_owned(), "table" => table.to_owned())
        .increment(1);
}

/// Records how many calls one statement of `operation` carried.
pub(crate) fn batch_members(schema: &str, operation: &'static str, members: usize) {
    #[allow(clippy::cast_precision_loss)] // at most Coalescer::MAX_MEMBERS
    metrics::histogram!(BATCH_MEMBERS, "schema" => schema.to_owned(), "operation" => operation)
        .record(members as f64);
}
