//! The queue vacuum ([`crate::PostgresConfig::with_queue_vacuum`]): every
//! interval, `VACUUM (SKIP_LOCKED)` on the schema's queue tables that hold
//! at least [`MIN_DEAD_TUPLES`] dead tuples, so they stay small between two
//! visits of autovacuum (which comes once per `autovacuum_naptime`, 1 min by
//! default, however its per-table thresholds are set). Which tables is
//! decided by the stored function `queue_tables_to_vacuum`; VACUUM itself
//! cannot run inside a function.

use std::time::Duration;

use sqlx::Executor;

use crate::background::Periodic;
use crate::migrations::quote_ident;
use crate::store::Store;

/// Dead tuples a queue table must hold before the queue vacuum visits it:
/// below this a visit costs more than the dead tuples do.
pub(crate) const MIN_DEAD_TUPLES: i64 = 1000;

/// Starts vacuuming `store`'s queue tables every `interval`.
pub(crate) fn start(store: Store, interval: Duration) -> Periodic {
    let store = std::sync::Arc::new(store);
    Periodic::start(interval, move |_stopping| {
        let store = std::sync::Arc::clone(&store);
        async move {
            if let Err(e) = vacuum_once(&store).await {
                // A standby after a failover (25006), a pooler that refuses
                // VACUUM, a schema being dropped: the next interval tries again.
                tracing::debug!(target: "duroxide_pg", error = %e, "queue vacuum skipped");
            }
        }
    })
}

/// One visit: the tables that need it, then one VACUUM of them all.
async fn vacuum_once(store: &Store) -> Result<(), duroxide::providers::ProviderError> {
    const OP: &str = "queue_tables_to_vacuum";
    let tables: Vec<String> = store
        .call(OP, &store.sql.queue_tables_to_vacuum)
        .bind(MIN_DEAD_TUPLES)
        .scalars()
        .await?;
    if tables.is_empty() {
        return Ok(());
    }
    let schema = quote_ident(&store.schema);
    let list: Vec<String> = tables
        .iter()
        .map(|t| format!("{schema}.{}", quote_ident(t)))
        .collect();
    // One simple-query message, outside any transaction: VACUUM refuses a
    // transaction block. SKIP_LOCKED: never wait for another vacuum.
    let sql = format!("VACUUM (SKIP_LOCKED) {}", list.join(", "));
    store
        .pool
        .fetch_all(sql.as_str())
        .await
        .map_err(|e| crate::error::provider_error("queue_vacuum", e))?;
    for table in &tables {
        crate::metrics::queue_vacuum(&store.schema, table);
    }
    Ok(())
}
