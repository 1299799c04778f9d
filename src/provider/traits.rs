//! duroxide's `Provider` and `ProviderAdmin` for [`PostgresProvider`]: each
//! call delegates to the module of its concern, in a span of its own.

use super::PostgresProvider;
use std::time::Duration;

use duroxide::providers::{
    DeleteInstanceResult, DispatcherCapabilityFilter, ExecutionInfo, ExecutionMetadata,
    InstanceFilter, InstanceInfo, InstanceTree, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, PruneOptions, PruneResult, QueueDepths, ScheduledActivityIdentifier,
    SessionFetchConfig, SystemMetrics, TagFilter, WorkItem,
};
use duroxide::{Event, SystemStats};
use tracing::Instrument;

use crate::{admin, history, orchestrator_queue, state, worker_queue};

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

impl PostgresProvider {
    /// One execution's events (`None`: the latest), for the four trait
    /// methods that read a history, each under its own operation name.
    async fn read_events(
        &self,
        operation: &'static str,
        instance: &str,
        execution_id: Option<u64>,
    ) -> Result<Vec<Event>, ProviderError> {
        history::read(&self.store, operation, instance, execution_id)
            .instrument(call_span(operation, Some(instance)))
            .await
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
        self.read_events("read", instance, None).await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.read_events("read_with_execution", instance, Some(execution_id))
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
        self.read_events(
            "read_history_with_execution_id",
            instance,
            Some(execution_id),
        )
        .await
    }

    async fn read_history(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.read_events("read_history", instance, None).await
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
