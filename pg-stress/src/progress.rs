//! Live progress of a stress run, observed at the provider boundary.
//!
//! duroxide's stress runner reports only at the end, so [`ProgressProvider`]
//! wraps the provider under test and counts root orchestrations as the runtime
//! stores them: started (enqueued `StartOrchestration`) and finished (an ack
//! whose metadata marks the execution Completed or Failed). Every call is
//! forwarded unchanged; the counting costs a few atomic increments.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide::{Event, SystemStats};

use crate::call_stats::CallStats;

/// Counters shared between a [`ProgressProvider`] and whoever prints them.
#[derive(Debug, Default)]
pub struct Progress {
    /// Root orchestrations started.
    pub launched: AtomicU64,
    /// Root orchestrations that completed.
    pub completed: AtomicU64,
    /// Root orchestrations that failed.
    pub failed: AtomicU64,
}

impl Progress {
    /// `(launched, completed, failed)` now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.launched.load(Ordering::Relaxed),
            self.completed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Root instances of the stress runner are named `stress-test-<n>`;
/// sub-orchestrations are not counted.
fn is_root(instance: &str) -> bool {
    instance
        .strip_prefix("stress-test-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A provider that forwards every call to `inner` and counts progress.
pub struct ProgressProvider {
    inner: Arc<dyn Provider>,
    progress: Arc<Progress>,
    calls: Option<Arc<CallStats>>,
}

impl ProgressProvider {
    /// Wraps `inner`, counting into `progress`.
    pub fn new(inner: Arc<dyn Provider>, progress: Arc<Progress>) -> Self {
        Self {
            inner,
            progress,
            calls: None,
        }
    }

    /// Also records every call's latency into `calls` (`--call-stats`).
    pub fn with_call_stats(mut self, calls: Arc<CallStats>) -> Self {
        self.calls = Some(calls);
        self
    }

    async fn timed<T>(&self, operation: &'static str, call: impl Future<Output = T>) -> T {
        match &self.calls {
            Some(calls) => calls.time(operation, call).await,
            None => call.await,
        }
    }
}

#[async_trait::async_trait]
impl Provider for ProgressProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        self.timed(
            "fetch_orchestration_item",
            self.inner
                .fetch_orchestration_item(lock_timeout, poll_timeout, filter),
        )
        .await
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
        let instance = history_delta.first().map(|e| e.instance_id.clone());
        let status = metadata.status.clone();
        self.timed(
            "ack_orchestration_item",
            self.inner.ack_orchestration_item(
                lock_token,
                execution_id,
                history_delta,
                worker_items,
                orchestrator_items,
                metadata,
                cancelled_activities,
            ),
        )
        .await?;
        if instance.as_deref().is_some_and(is_root) {
            match status.as_deref() {
                Some("Completed") => self.progress.completed.fetch_add(1, Ordering::Relaxed),
                Some("Failed") => self.progress.failed.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        Ok(())
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.timed(
            "abandon_orchestration_item",
            self.inner
                .abandon_orchestration_item(lock_token, delay, ignore_attempt),
        )
        .await
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.timed("read", self.inner.read(instance)).await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.timed(
            "read_with_execution",
            self.inner.read_with_execution(instance, execution_id),
        )
        .await
    }

    async fn append_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
        new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        self.timed(
            "append_with_execution",
            self.inner
                .append_with_execution(instance, execution_id, new_events),
        )
        .await
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        self.timed("enqueue_for_worker", self.inner.enqueue_for_worker(item))
            .await
    }

    async fn fetch_work_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        self.timed(
            "fetch_work_item",
            self.inner
                .fetch_work_item(lock_timeout, poll_timeout, session, tag_filter),
        )
        .await
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        self.timed("ack_work_item", self.inner.ack_work_item(token, completion))
            .await
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.timed(
            "renew_work_item_lock",
            self.inner.renew_work_item_lock(token, extend_for),
        )
        .await
    }

    async fn renew_session_lock(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.timed(
            "renew_session_lock",
            self.inner
                .renew_session_lock(owner_ids, extend_for, idle_timeout),
        )
        .await
    }

    async fn cleanup_orphaned_sessions(
        &self,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.timed(
            "cleanup_orphaned_sessions",
            self.inner.cleanup_orphaned_sessions(idle_timeout),
        )
        .await
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.timed(
            "abandon_work_item",
            self.inner.abandon_work_item(token, delay, ignore_attempt),
        )
        .await
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.timed(
            "renew_orchestration_item_lock",
            self.inner.renew_orchestration_item_lock(token, extend_for),
        )
        .await
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let root_start =
            matches!(&item, WorkItem::StartOrchestration { instance, .. } if is_root(instance));
        self.timed(
            "enqueue_for_orchestrator",
            self.inner.enqueue_for_orchestrator(item, delay),
        )
        .await?;
        if root_start {
            self.progress.launched.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn as_management_capability(&self) -> Option<&dyn ProviderAdmin> {
        self.inner.as_management_capability()
    }

    async fn get_custom_status(
        &self,
        instance: &str,
        last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        self.timed(
            "get_custom_status",
            self.inner.get_custom_status(instance, last_seen_version),
        )
        .await
    }

    async fn get_kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        self.timed("get_kv_value", self.inner.get_kv_value(instance, key))
            .await
    }

    async fn get_kv_all_values(
        &self,
        instance: &str,
    ) -> Result<HashMap<String, String>, ProviderError> {
        self.timed("get_kv_all_values", self.inner.get_kv_all_values(instance))
            .await
    }

    async fn get_instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<SystemStats>, ProviderError> {
        self.timed(
            "get_instance_stats",
            self.inner.get_instance_stats(instance),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::is_root;

    #[test]
    fn only_runner_roots_count() {
        assert!(is_root("stress-test-0"));
        assert!(is_root("stress-test-123"));
        assert!(!is_root("stress-test-"));
        assert!(!is_root("stress-test-1::sub::0"));
        assert!(!is_root("other-1"));
    }
}
