//! Instance state visible to clients: custom status, the KV store, statistics.

use std::collections::HashMap;

use duroxide::SystemStats;
use duroxide::providers::ProviderError;

use crate::codec::{from_stored, to_stored, to_u64};
use crate::signatures as row;
use crate::store::Store;

pub(crate) async fn custom_status(
    p: &Store,
    instance: &str,
    last_seen_version: u64,
) -> Result<Option<(Option<String>, u64)>, ProviderError> {
    const OP: &str = "get_custom_status";
    let row: Option<row::CustomStatus> = p
        .call(OP, &p.sql.get_custom_status)
        .bind(instance)
        .bind(i64::try_from(last_seen_version).unwrap_or(i64::MAX))
        .optional_as()
        .await?;
    row.map(|r| {
        Ok((
            r.custom_status.map(from_stored),
            to_u64(OP, "custom_status_version", r.version)?,
        ))
    })
    .transpose()
}

/// The merged KV view, all keys or one.
async fn kv_values(
    p: &Store,
    op: &str,
    instance: &str,
    key: Option<&str>,
) -> Result<Vec<(String, String)>, ProviderError> {
    let rows: Vec<row::KvValue> = p
        .call(op, &p.sql.get_kv_values)
        .bind(instance)
        .bind(key.map(to_stored))
        .all_as()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (from_stored(r.key), from_stored(r.value)))
        .collect())
}

pub(crate) async fn kv_value(
    p: &Store,
    instance: &str,
    key: &str,
) -> Result<Option<String>, ProviderError> {
    Ok(kv_values(p, "get_kv_value", instance, Some(key))
        .await?
        .into_iter()
        .next()
        .map(|(_, v)| v))
}

pub(crate) async fn kv_all_values(
    p: &Store,
    instance: &str,
) -> Result<HashMap<String, String>, ProviderError> {
    Ok(kv_values(p, "get_kv_all_values", instance, None)
        .await?
        .into_iter()
        .collect())
}

pub(crate) async fn instance_stats(
    p: &Store,
    instance: &str,
) -> Result<Option<SystemStats>, ProviderError> {
    const OP: &str = "get_instance_stats";
    let row: Option<row::InstanceStats> = p
        .call(OP, &p.sql.get_instance_stats)
        .bind(instance)
        .optional_as()
        .await?;
    row.map(|r| {
        Ok(SystemStats {
            history_event_count: to_u64(OP, "count", r.history_event_count)?,
            history_size_bytes: to_u64(OP, "size", r.history_size_bytes)?,
            queue_pending_count: to_u64(OP, "count", r.queue_pending_count)?,
            kv_user_key_count: to_u64(OP, "count", r.kv_user_key_count)?,
            kv_total_value_bytes: to_u64(OP, "size", r.kv_total_value_bytes)?,
        })
    })
    .transpose()
}
