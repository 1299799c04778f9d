//! Event history: reads (latest or a given execution) and raw appends.

use duroxide::Event;
use duroxide::providers::ProviderError;

use crate::codec::{decode_all, event_columns, to_i64};
use crate::store::Store;

/// Reads one execution's events (`None`: the latest execution). Each stored
/// JSON text is parsed exactly once, straight into `Event`. Corrupted rows give
/// a permanent error, never a shortened history.
pub(crate) async fn read(
    p: &Store,
    operation: &str,
    instance: &str,
    execution_id: Option<u64>,
) -> Result<Vec<Event>, ProviderError> {
    let execution_id = execution_id
        .map(|e| to_i64(operation, "execution_id", e))
        .transpose()?;
    let texts: Vec<String> = p
        .call(operation, &p.sql.read_history)
        .bind(instance)
        .bind(execution_id)
        .scalars()
        .await?;
    decode_all(operation, &texts)
}

pub(crate) async fn append(
    p: &Store,
    instance: &str,
    execution_id: u64,
    events: &[Event],
) -> Result<(), ProviderError> {
    const OP: &str = "append_with_execution";
    let (ids, data) = event_columns(OP, events)?;
    p.call(OP, &p.sql.append_history)
        .bind(instance)
        .bind(to_i64(OP, "execution_id", execution_id)?)
        .bind(ids)
        .bind(data)
        .execute()
        .await?;
    Ok(())
}
