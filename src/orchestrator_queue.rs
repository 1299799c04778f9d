//! Orchestrator queue: enqueue, fetch (instance lease), ack, abandon, renew.

use std::collections::HashMap;
use std::time::Duration;

use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, KvEntry, OrchestrationItem, ProviderError,
    ScheduledActivityIdentifier, WorkItem,
};
use duroxide::{Event, EventKind};

use crate::call::read_row;
use crate::clock::now_ms;
use crate::codec::{
    KvOps, OrchestratorRow, WorkerRow, custom_status_change, decode, event_columns, from_stored,
    millis, to_i64, to_stored, to_u64,
};
use crate::codes::Queue;
use crate::lease;
use crate::long_poll::{self, Attempt, Waiter};
use crate::signatures::{AckOrchestrationItem, LeasedTurn, TurnFound};
use crate::store::Store;

/// `[major, minor, patch]` as stored-function arguments.
fn version_triplet(major: u64, minor: u64, patch: u64) -> Vec<i64> {
    [major, minor, patch]
        .iter()
        .map(|v| i64::try_from(*v).unwrap_or(i64::MAX))
        .collect()
}

pub(crate) async fn enqueue(
    p: &Store,
    item: &WorkItem,
    delay: Option<Duration>,
) -> Result<(), ProviderError> {
    const OP: &str = "enqueue_for_orchestrator";
    let row = OrchestratorRow::new(OP, item)?;
    p.call(OP, &p.sql.enqueue_orchestrator_item)
        .bind(row.instance)
        .bind(row.kind)
        .bind(&row.json)
        .bind(now_ms())
        .bind(delay.map_or(0, millis))
        .execute()
        .await?;
    Ok(())
}

pub(crate) async fn fetch(
    p: &Store,
    lock_timeout: Duration,
    poll_timeout: Duration,
    filter: Option<&DispatcherCapabilityFilter>,
) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
    const OP: &str = "fetch_orchestration_item";
    // Only the first range is honoured, as the validation suite specifies.
    let (min, max) = match filter.map(|f| f.supported_duroxide_versions.first()) {
        None => (None, None),
        Some(None) => return Ok(None),
        Some(Some(range)) => (
            Some(version_triplet(
                range.min.major,
                range.min.minor,
                range.min.patch,
            )),
            Some(version_triplet(
                range.max.major,
                range.max.minor,
                range.max.patch,
            )),
        ),
    };
    long_poll::poll(
        p.long_poll.as_ref(),
        Queue::Orchestrator,
        Waiter::Plain,
        poll_timeout,
        || async {
            let row = p
                .call(OP, &p.sql.fetch_orchestration_item)
                .bind(now_ms())
                .bind(millis(lock_timeout))
                .bind(min.as_deref())
                .bind(max.as_deref())
                .fetch_one()
                .await?;
            let found: TurnFound = read_row(OP, &row)?;
            if found.instance_id.is_none() {
                return Ok(Attempt::Empty {
                    wake_at: found.wake_at,
                });
            }
            if found.taken_over == Some(true) {
                crate::metrics::lease_takeover(&p.schema, Queue::Orchestrator);
            }
            leased_item(read_row(OP, &row)?).map(Attempt::Found)
        },
    )
    .await
}

/// Builds the leased item from the fetch row. The lease is held from here on,
/// so undecodable stored data is reported in `history_error` (the runtime
/// abandons and eventually poisons the item), never as `Err`.
fn leased_item(row: LeasedTurn) -> Result<(OrchestrationItem, String, u32), ProviderError> {
    const OP: &str = "fetch_orchestration_item";
    let execution_id = to_u64(OP, "execution_id", row.execution_id)?;

    let mut history_error = None;
    let message_texts = row.messages.0;
    let mut messages = Vec::with_capacity(message_texts.len());
    for text in &message_texts {
        match decode::<WorkItem>(OP, text) {
            Ok(item) => messages.push(item),
            Err(e) => history_error = Some(format!("undecodable queue message: {}", e.message)),
        }
    }
    let history = match row
        .history
        .0
        .iter()
        .map(|t| decode::<Event>(OP, t))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(events) => events,
        Err(e) => {
            history_error = Some(format!("Failed to deserialize history: {}", e.message));
            Vec::new()
        }
    };

    // A new instance has no row yet: its name and version come from its
    // history's start event or from the start message in this batch.
    let (name, version) = match row.orchestration_name {
        Some(name) => (name, row.orchestration_version),
        None => {
            start_identity(&history, &messages).unwrap_or_else(|| ("unknown".to_string(), None))
        }
    };
    let kv_snapshot: HashMap<String, KvEntry> = row
        .kv_keys
        .0
        .into_iter()
        .zip(row.kv_values.0)
        .zip(row.kv_updated_at)
        .map(|((key, value), at)| {
            (
                from_stored(key),
                KvEntry {
                    value: from_stored(value),
                    last_updated_at_ms: u64::try_from(at).unwrap_or(0),
                },
            )
        })
        .collect();

    let item = OrchestrationItem {
        instance: row.instance_id,
        orchestration_name: name,
        execution_id,
        version: version.unwrap_or_else(|| "unknown".to_string()),
        history,
        messages,
        history_error,
        kv_snapshot,
    };
    Ok((
        item,
        row.lock_token,
        u32::try_from(row.attempt_count).unwrap_or(0),
    ))
}

/// Name and version of an instance that has no instance row yet.
fn start_identity(history: &[Event], messages: &[WorkItem]) -> Option<(String, Option<String>)> {
    history
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::OrchestrationStarted { name, version, .. } => {
                Some((name.clone(), Some(version.clone())))
            }
            _ => None,
        })
        .or_else(|| {
            messages.iter().find_map(|m| match m {
                WorkItem::StartOrchestration {
                    orchestration,
                    version,
                    ..
                }
                | WorkItem::ContinueAsNew {
                    orchestration,
                    version,
                    ..
                } => Some((orchestration.clone(), version.clone())),
                _ => None,
            })
        })
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn ack(
    p: &Store,
    lock_token: &str,
    execution_id: u64,
    history_delta: &[Event],
    worker_items: &[WorkItem],
    orchestrator_items: &[WorkItem],
    metadata: &ExecutionMetadata,
    cancelled: &[ScheduledActivityIdentifier],
) -> Result<(), ProviderError> {
    const OP: &str = "ack_orchestration_item";
    let now = now_ms();
    let (event_ids, event_data) = event_columns(OP, history_delta)?;

    let workers = worker_items
        .iter()
        .map(|w| WorkerRow::new(OP, w))
        .collect::<Result<Vec<_>, _>>()?;
    let orchestrators = orchestrator_items
        .iter()
        .map(|o| OrchestratorRow::new(OP, o))
        .collect::<Result<Vec<_>, _>>()?;
    // Timers become visible at their fire time; everything else at once.
    let visible_at: Vec<i64> = orchestrator_items
        .iter()
        .map(|o| match o {
            WorkItem::TimerFired { fire_at_ms, .. } => {
                i64::try_from(*fire_at_ms).unwrap_or(i64::MAX)
            }
            _ => now,
        })
        .collect();
    let (custom_status_action, custom_status) = custom_status_change(history_delta);
    let kv = KvOps::from_delta(OP, history_delta)?;
    let pinned = metadata
        .pinned_duroxide_version
        .as_ref()
        .map(|v| version_triplet(v.major, v.minor, v.patch));
    let cancelled_exec = cancelled
        .iter()
        .map(|c| to_i64(OP, "execution_id", c.execution_id))
        .collect::<Result<Vec<_>, _>>()?;
    let cancelled_act = cancelled
        .iter()
        .map(|c| to_i64(OP, "activity_id", c.activity_id))
        .collect::<Result<Vec<_>, _>>()?;

    let arguments = AckOrchestrationItem {
        lock_token,
        now_ms: now,
        execution_id: to_i64(OP, "execution_id", execution_id)?,
        event_ids,
        event_data,
        w_work_items: workers.iter().map(|w| w.json.as_str()).collect(),
        w_instance_ids: workers.iter().map(|w| w.instance.as_str()).collect(),
        w_execution_ids: workers.iter().map(|w| w.execution_id).collect(),
        w_activity_ids: workers.iter().map(|w| w.activity_id).collect(),
        w_session_ids: workers.iter().map(|w| w.session_id.as_deref()).collect(),
        w_tags: workers.iter().map(|w| w.tag.as_deref()).collect(),
        o_instance_ids: orchestrators.iter().map(|o| o.instance).collect(),
        o_kinds: orchestrators.iter().map(|o| o.kind).collect(),
        o_work_items: orchestrators.iter().map(|o| o.json.as_str()).collect(),
        o_visible_at: visible_at,
        status: metadata.status.as_deref(),
        output: metadata.output.as_deref().map(to_stored),
        orch_name: metadata.orchestration_name.as_deref(),
        orch_version: metadata.orchestration_version.as_deref(),
        parent_instance: metadata.parent_instance_id.as_deref(),
        pinned_version: pinned,
        custom_status_action: custom_status_action as i16,
        custom_status,
        kv_ops: kv.ops,
        kv_keys: kv.keys,
        kv_values: kv.values,
        kv_updated_at: kv.updated_at,
        c_instance_ids: cancelled.iter().map(|c| c.instance.as_str()).collect(),
        c_execution_ids: cancelled_exec,
        c_activity_ids: cancelled_act,
    };
    arguments
        .bind_to(p.call(OP, &p.sql.ack_orchestration_item))
        .execute()
        .await
}

pub(crate) async fn abandon(
    p: &Store,
    lock_token: &str,
    delay: Option<Duration>,
    ignore_attempt: bool,
) -> Result<(), ProviderError> {
    let op = "abandon_orchestration_item";
    lease::abandon(
        p,
        op,
        &p.sql.abandon_orchestration_item,
        lock_token,
        delay,
        ignore_attempt,
    )
    .await
}

pub(crate) async fn renew(
    p: &Store,
    lock_token: &str,
    extend_for: Duration,
) -> Result<(), ProviderError> {
    let op = "renew_orchestration_item_lock";
    lease::renew(
        p,
        op,
        &p.sql.renew_orchestration_item_lock,
        lock_token,
        extend_for,
    )
    .await
}
