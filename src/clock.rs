//! The one clock: the caller's, in milliseconds since the Unix epoch. Every
//! stored function receives it as `p_now_ms`; the database clock is never
//! consulted, so tests and several processes agree on what "due" means.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 before the epoch, saturating
/// far in the future).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
