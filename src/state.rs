//! Instance state visible to clients: custom status, the KV store, statistics.

use std::collections::HashMap;

use duroxide::SystemStats;
use duroxide::providers::ProviderError;
use sqlx::Row;

use crate::codec::{from_stored, to_stored, to_u64};
use crate::error::provider_error;
use crate::store::Store;

pub(crate) async fn custom_status(
    p: &Store,
    instance: &str,
    last_seen_version: u64,
) -> Result<Option<(Option<String>, u64)>, ProviderError> {
    const OP: &str = "get_custom_status";
    let row = p
        .call(OP, &p.sql.get_custom_status)
        .bind(instance)
        .bind(i64::try_from(last_seen_version).unwrap_or(i64::MAX))
        .fetch_optional()
        .await?;
    row.map(|r| {
        let status: Option<String> = r
            .try_get("o_custom_status")
            .map_err(|e| provider_error(OP, e))?;
        let status = status.map(from_stored);
        let version: i64 = r.try_get("o_version").map_err(|e| provider_error(OP, e))?;
        Ok((status, to_u64(OP, "custom_status_version", version)?))
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
    let rows: Vec<(String, String)> = p
        .call(op, &p.sql.get_kv_values)
        .bind(instance)
        .bind(key.map(to_stored))
        .all_as()
        .await?;
    Ok(rows
        .into_iter()
        .map(|(k, v)| (from_stored(k), from_stored(v)))
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
    let row: Option<(i64, i64, i64, i64, i64)> = p
        .call(OP, &p.sql.get_instance_stats)
        .bind(instance)
        .optional_as()
        .await?;
    row.map(|(events, bytes, pending, keys, kv_bytes)| {
        Ok(SystemStats {
            history_event_count: to_u64(OP, "count", events)?,
            history_size_bytes: to_u64(OP, "size", bytes)?,
            queue_pending_count: to_u64(OP, "count", pending)?,
            kv_user_key_count: to_u64(OP, "count", keys)?,
            kv_total_value_bytes: to_u64(OP, "size", kv_bytes)?,
        })
    })
    .transpose()
}
