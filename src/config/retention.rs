//! [`RetentionPolicy`]: what retention sweeps delete and how they pace
//! themselves (`crate::retention` runs it).

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::Error;

/// What a retention sweep deletes, and how it paces itself.
///
/// Retention is off unless configured: deleting data is the application's
/// decision. A policy keeps everything it does not name: with only
/// [`RetentionPolicy::keep_completed_for`] set, failed instances stay for
/// ever. docs/operations.md "Retention" recommends values.
///
/// - A **tree** (a root instance and all its sub-orchestrations) is deleted
///   when its root's current execution finished (Completed or Failed) longer
///   ago than that status's window and every member of the tree has
///   finished. A running sub-orchestration keeps its whole tree.
/// - **Continue-as-new chains** keep their newest
///   [`keep_executions`](RetentionPolicy::keep_executions) executions,
///   running chains included; the current execution is never deleted.
///
/// Cancelled orchestrations are stored as Failed (duroxide 0.1.32 has the
/// statuses Running, Completed, Failed and ContinuedAsNew).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub(crate) completed: Option<Duration>,
    pub(crate) failed: Option<Duration>,
    pub(crate) keep_executions: Option<u32>,
    pub(crate) interval: Duration,
    pub(crate) batch_size: u32,
    pub(crate) pause: Duration,
    pub(crate) statement_timeout: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetentionPolicy {
    /// Smallest batch: a policy's least, and what a sweep shrinks to after
    /// statement timeouts.
    pub const MIN_BATCH_SIZE: u32 = 10;
    /// Largest batch a policy may ask for.
    pub const MAX_BATCH_SIZE: u32 = 10_000;
    /// Default time between the starts of two background sweeps.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
    /// Default root instances (or chains) per batch; each batch commits on
    /// its own.
    pub const DEFAULT_BATCH_SIZE: u32 = 1000;
    /// Default pause between two batches, so a sweep leaves room to the hot
    /// path.
    pub const DEFAULT_PAUSE: Duration = Duration::from_millis(100);
    /// Default statement timeout of one batch; a batch that hits it rolls
    /// back and the sweep goes on with half the batch size.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A policy that deletes nothing yet: name what to delete with the
    /// `keep_*` methods.
    pub fn new() -> Self {
        Self {
            completed: None,
            failed: None,
            keep_executions: None,
            interval: Self::DEFAULT_INTERVAL,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            pause: Self::DEFAULT_PAUSE,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
        }
    }

    /// Deletes trees whose root completed longer than `window` ago.
    pub fn keep_completed_for(mut self, window: Duration) -> Self {
        self.completed = Some(window);
        self
    }

    /// Deletes trees whose root failed (or was cancelled) longer than
    /// `window` ago.
    pub fn keep_failed_for(mut self, window: Duration) -> Self {
        self.failed = Some(window);
        self
    }

    /// Keeps the newest `n` executions (at least 1) of every continue-as-new
    /// chain and deletes the older ones with their history.
    pub fn keep_executions(mut self, n: u32) -> Self {
        self.keep_executions = Some(n);
        self
    }

    /// Time between the starts of two background sweeps (default 5 min).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Root instances (or chains) per batch, from [`Self::MIN_BATCH_SIZE`] to
    /// [`Self::MAX_BATCH_SIZE`] (default 1000).
    pub fn with_batch_size(mut self, n: u32) -> Self {
        self.batch_size = n;
        self
    }

    /// Pause between two batches (default 100 ms).
    pub fn with_batch_pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// Statement timeout of one batch (default 30 s).
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long completed trees are kept, if they are deleted at all.
    pub fn completed_window(&self) -> Option<Duration> {
        self.completed
    }

    /// How long failed trees are kept, if they are deleted at all.
    pub fn failed_window(&self) -> Option<Duration> {
        self.failed
    }

    /// How many executions of a chain are kept, if chains are pruned.
    pub fn executions_kept(&self) -> Option<u32> {
        self.keep_executions
    }

    /// Checks every value; the error names the one out of range.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the policy deletes nothing, a window is
    /// zero, `keep_executions` is 0, the interval, timeout or pause is over
    /// 30 days, the batch size is outside
    /// [`Self::MIN_BATCH_SIZE`]..=[`Self::MAX_BATCH_SIZE`], or the interval or statement
    /// timeout is zero.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |what: String| Err(Error::InvalidConfig(format!("retention policy: {what}")));
        if self.completed.is_none() && self.failed.is_none() && self.keep_executions.is_none() {
            return invalid(
                "deletes nothing: set keep_completed_for, keep_failed_for or keep_executions"
                    .into(),
            );
        }
        for (name, window) in [("completed", self.completed), ("failed", self.failed)] {
            if window.is_some_and(|w| w.as_millis() == 0) {
                return invalid(format!(
                    "the {name} window must be at least 1 ms (it would delete {name} trees the moment they finish)"
                ));
            }
            if window.is_some_and(|w| w.as_millis() > i64::MAX as u128 / 2) {
                return invalid(format!("the {name} window is too long"));
            }
        }
        if self.keep_executions == Some(0) {
            return invalid(
                "keep_executions must be at least 1 (the current execution is always kept)".into(),
            );
        }
        if !(Self::MIN_BATCH_SIZE..=Self::MAX_BATCH_SIZE).contains(&self.batch_size) {
            return invalid(format!(
                "batch size {} is outside {}..={}",
                self.batch_size,
                Self::MIN_BATCH_SIZE,
                Self::MAX_BATCH_SIZE
            ));
        }
        const MAX_PACING: Duration = Duration::from_secs(30 * 86_400);
        for (what, d) in [
            ("the sweep interval", self.interval),
            ("the batch statement timeout", self.statement_timeout),
            ("the batch pause", self.pause),
        ] {
            if d > MAX_PACING {
                return invalid(format!("{what} must be at most 30 days"));
            }
        }
        if self.interval.is_zero() {
            return invalid("the sweep interval must be positive".into());
        }
        if self.statement_timeout.is_zero() {
            return invalid("the batch statement timeout must be positive".into());
        }
        Ok(())
    }

    /// The policy as `retention_state` stores it (JSON, milliseconds).
    pub(crate) fn to_json(&self) -> String {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        json!({
            "completed_ms": ms(self.completed),
            "failed_ms": ms(self.failed),
            "keep_executions": self.keep_executions,
            "interval_ms": self.interval.as_millis() as u64,
            "batch_size": self.batch_size,
            "pause_ms": self.pause.as_millis() as u64,
            "statement_timeout_ms": self.statement_timeout.as_millis() as u64,
        })
        .to_string()
    }

    /// A stored policy read back; `None` when it cannot be read (written by
    /// a later release, say).
    pub(crate) fn from_json(text: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(text).ok()?;
        let ms = |key: &str| {
            v.get(key)
                .and_then(Value::as_u64)
                .map(Duration::from_millis)
        };
        let defaults = Self::new();
        Some(Self {
            completed: ms("completed_ms"),
            failed: ms("failed_ms"),
            keep_executions: v
                .get("keep_executions")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            interval: ms("interval_ms").unwrap_or(defaults.interval),
            batch_size: v
                .get("batch_size")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(defaults.batch_size),
            pause: ms("pause_ms").unwrap_or(defaults.pause),
            statement_timeout: ms("statement_timeout_ms").unwrap_or(defaults.statement_timeout),
        })
    }
}

/// What the policy deletes, in one line: `completed 604800s, failed
/// 2592000s, executions kept 3` (`kept` / `all` where it keeps everything).
impl std::fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = |d: Option<Duration>| d.map_or("kept".to_string(), |d| format!("{}s", d.as_secs()));
        write!(
            f,
            "completed {}, failed {}, executions kept {}",
            w(self.completed_window()),
            w(self.failed_window()),
            self.executions_kept()
                .map_or("all".to_string(), |n| n.to_string())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_reads_back_what_it_stored() {
        let p = RetentionPolicy::new()
            .keep_completed_for(Duration::from_secs(7 * 86_400))
            .keep_executions(3)
            .with_batch_size(250);
        assert_eq!(RetentionPolicy::from_json(&p.to_json()), Some(p));
        assert_eq!(RetentionPolicy::from_json("not json"), None);
    }

    #[test]
    fn bad_policies_are_refused_with_the_value_named() {
        let base = RetentionPolicy::new().keep_completed_for(Duration::from_secs(60));
        assert!(base.validate().is_ok());
        let cases = [
            (RetentionPolicy::new(), "deletes nothing"),
            (
                RetentionPolicy::new().keep_failed_for(Duration::ZERO),
                "failed window",
            ),
            (RetentionPolicy::new().keep_executions(0), "keep_executions"),
            (base.clone().with_batch_size(5), "batch size 5"),
            (base.clone().with_batch_size(10_001), "batch size 10001"),
            (base.clone().with_interval(Duration::ZERO), "interval"),
            (
                base.clone().with_statement_timeout(Duration::ZERO),
                "statement timeout",
            ),
        ];
        for (policy, words) in cases {
            let e = policy.validate().unwrap_err().to_string();
            assert!(e.contains(words), "{e:?} should mention {words:?}");
        }
    }
}
