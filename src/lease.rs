//! The lease calls both queues share: renew a held lease, abandon it. Each is
//! one stored-function call taking (token, now, duration[, flag]).

use std::time::Duration;

use duroxide::providers::ProviderError;

use crate::call::Statement;
use crate::clock::now_ms;
use crate::codec::millis;
use crate::store::Store;

/// Extends the lease `token` by `extend_for` through `sql`.
pub(crate) async fn renew(
    p: &Store,
    operation: &str,
    sql: &Statement,
    token: &str,
    extend_for: Duration,
) -> Result<(), ProviderError> {
    p.call(operation, sql)
        .bind(token)
        .bind(now_ms())
        .bind(millis(extend_for))
        .execute()
        .await?;
    Ok(())
}

/// Releases the lease `token` through `sql`, optionally delaying the items and
/// undoing the fetch's attempt increment.
pub(crate) async fn abandon(
    p: &Store,
    operation: &str,
    sql: &Statement,
    token: &str,
    delay: Option<Duration>,
    ignore_attempt: bool,
) -> Result<(), ProviderError> {
    p.call(operation, sql)
        .bind(token)
        .bind(now_ms())
        .bind(delay.map(millis))
        .bind(ignore_attempt)
        .execute()
        .await?;
    Ok(())
}
