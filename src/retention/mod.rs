//! Retention: deleting finished work by policy.
//!
//! `RetentionPolicy` (in `config`) says what to keep; a provider built with
//! [`crate::PostgresConfig::with_retention`] runs it in the background
//! (`sweeper`), and [`crate::PostgresProvider::run_retention`] runs it once
//! (the CLI's `retention run`, for cron). One sweep at a time per schema,
//! across processes: the sweep lease of `migrations/0013_retention.sql`.
//! The batches, their cursor and their shrinking on a timeout are in
//! `sweep`; what is deleted (and the checks under the locks) is in the
//! stored functions.

mod sweep;
pub(crate) mod sweeper;

use crate::config::RetentionPolicy;
pub(crate) use sweep::{Sweep, owner_name, status};

/// What one sweep deleted, or with `dry_run` would delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
    /// `false` when another sweeper held the sweep lease: nothing was done.
    pub ran: bool,
    /// Instances deleted (roots and sub-orchestrations).
    pub instances: u64,
    /// Executions deleted: those of deleted instances and pruned ones.
    pub executions: u64,
    /// History events deleted.
    pub events: u64,
    /// Executions pruned from continue-as-new chains (part of `executions`).
    pub pruned_executions: u64,
    /// Batches run (each committed on its own).
    pub batches: u64,
    /// Batches that hit the statement timeout (rolled back, then retried
    /// smaller).
    pub timeouts: u64,
    /// The batch size the sweep ended with (smaller than the policy's after
    /// timeouts).
    pub final_batch_size: u32,
    /// Dry run only: every instance that would be deleted (whole trees, root
    /// first, oldest root first). Empty for a real sweep.
    pub instance_ids: Vec<String>,
    /// Dry run only: the chains that would be pruned, with how many
    /// executions each would lose. Empty for a real sweep.
    pub pruned: Vec<(String, u64)>,
}

/// The last sweep that finished, as `retention_state` recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSweep {
    /// Who ran it: `provider:<pid>:<n>` for a background sweeper, `cli:<pid>:<n>`
    /// for the command line, or the name [`crate::PostgresProvider::run_retention`]
    /// was given.
    pub by: String,
    /// The policy it ran.
    pub policy: Option<RetentionPolicy>,
    /// When it started and finished (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// When it finished (ms since the Unix epoch).
    pub finished_at_ms: u64,
    /// Instances it deleted.
    pub instances: u64,
    /// Executions it deleted.
    pub executions: u64,
    /// Events it deleted.
    pub events: u64,
    /// Why it stopped early, if it did (what it deleted before stays deleted).
    pub error: Option<String>,
}

/// What `retention status` shows ([`crate::PostgresProvider::retention_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionStatus {
    /// The policy of the last background sweeper that ran on this schema.
    pub policy: Option<RetentionPolicy>,
    /// Which sweeper stored it, and when (ms since the Unix epoch).
    pub policy_by: Option<(String, u64)>,
    /// The sweeper sweeping right now, and until when its lease runs.
    pub sweeping: Option<(String, u64)>,
    /// The last sweep that finished.
    pub last: Option<LastSweep>,
    /// The oldest completed root instance and when it completed.
    pub oldest_completed: Option<(String, u64)>,
    /// The oldest failed root instance and when it failed.
    pub oldest_failed: Option<(String, u64)>,
}
