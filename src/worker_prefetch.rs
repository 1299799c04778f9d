//! Activities leased ahead by an ack (`ack_work_item_and_fetch`), waiting for
//! the worker fetch that the runtime issues right after every ack.
//!
//! Why: duroxide's worker slot runs fetch → read → execute → ack in a loop.
//! Leasing the slot's next item inside the ack's own statement takes the
//! fetch's round trip off every activity. The held item is leased exactly as
//! a fetch would lease it, so nothing changes for other processes except that
//! it is already taken; bounded in count ([`PREFETCH_LIMIT`]) and in time
//! ([`PREFETCH_HOLD`]): an item no fetch takes in time is abandoned with its
//! attempt count restored.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duroxide::providers::WorkItem;

use crate::codec::now_ms;
use crate::connections::Connections;

/// Most items one provider holds leased ahead at once.
pub const PREFETCH_LIMIT: usize = 4;

/// How long a leased-ahead item waits for a fetch before it is released.
pub const PREFETCH_HOLD: Duration = Duration::from_millis(200);

/// The fetch arguments a leased-ahead item was leased with; a fetch takes it
/// only when it asks for exactly the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchKey {
    pub lock_timeout_ms: i64,
    /// The session owner (`None`: session-less items only).
    pub owner_id: Option<String>,
    pub session_lock_ms: i64,
    pub tag_mode: i16,
    pub tags: Vec<String>,
}

/// A fetched item as the worker fetch returns it: item, lock token, attempts.
pub(crate) type Fetched = (WorkItem, String, u32);

struct Held {
    key: FetchKey,
    fetched: Fetched,
    leased_at: Instant,
}

#[derive(Default)]
struct State {
    /// The arguments of the latest worker fetch: what the next ack leases with.
    last_fetch: Option<FetchKey>,
    held: Vec<Held>,
}

/// The provider's leased-ahead activities (see the module doc).
pub(crate) struct WorkerPrefetch {
    enabled: bool,
    state: Arc<Mutex<State>>,
    pool: Connections,
    abandon_sql: Arc<str>,
    /// The provider's schema: the `schema` label of the prefetch metric.
    schema: Arc<str>,
}

impl WorkerPrefetch {
    pub(crate) fn new(enabled: bool, pool: Connections, abandon_sql: &str, schema: &str) -> Self {
        Self {
            enabled,
            state: Arc::default(),
            pool,
            abandon_sql: Arc::from(abandon_sql),
            schema: Arc::from(schema),
        }
    }

    /// Takes a held item leased with `key` and still fresh, remembering `key`
    /// for the next ack either way. Synchronous on purpose: a fetch future
    /// either returns the item in the poll that takes it or never takes it.
    pub(crate) fn take(&self, key: &FetchKey) -> Option<Fetched> {
        let mut state = self.state.lock().expect("prefetch state");
        if state.last_fetch.as_ref() != Some(key) {
            state.last_fetch = Some(key.clone());
        }
        let now = Instant::now();
        let i = state
            .held
            .iter()
            .position(|h| &h.key == key && now.duration_since(h.leased_at) < PREFETCH_HOLD)?;
        crate::metrics::worker_prefetch(&self.schema, "used");
        Some(state.held.swap_remove(i).fetched)
    }

    /// The arguments an ack should lease ahead with, or `None` when it should
    /// not (disabled, no fetch seen yet, or enough held already).
    pub(crate) fn next_key(&self) -> Option<FetchKey> {
        if !self.enabled {
            return None;
        }
        let state = self.state.lock().expect("prefetch state");
        if state.held.len() >= PREFETCH_LIMIT {
            return None;
        }
        state.last_fetch.clone()
    }

    /// Holds `fetched` for the next fetch and schedules its release should no
    /// fetch take it within [`PREFETCH_HOLD`].
    pub(crate) fn hold(&self, key: FetchKey, fetched: Fetched) {
        let token = fetched.1.clone();
        self.state.lock().expect("prefetch state").held.push(Held {
            key,
            fetched,
            leased_at: Instant::now(),
        });
        let state = Arc::clone(&self.state);
        let pool = self.pool.clone();
        let sql = Arc::clone(&self.abandon_sql);
        let schema = Arc::clone(&self.schema);
        tokio::spawn(async move {
            tokio::time::sleep(PREFETCH_HOLD).await;
            let expired = {
                let mut state = state.lock().expect("prefetch state");
                let i = state.held.iter().position(|h| h.fetched.1 == token);
                i.map(|i| state.held.swap_remove(i))
            };
            if let Some(held) = expired {
                release(&pool, &sql, &held.fetched.1, &schema).await;
            }
        });
    }

    /// Releases every held item (the provider is closing).
    pub(crate) async fn release_all(&self) {
        let held = std::mem::take(&mut self.state.lock().expect("prefetch state").held);
        for h in held {
            release(&self.pool, &self.abandon_sql, &h.fetched.1, &self.schema).await;
        }
    }
}

/// Abandons one held lease, undoing its attempt increment: to the queue it is
/// as if it had never been fetched. A failure leaves the lease to expire.
async fn release(pool: &Connections, abandon_sql: &str, token: &str, schema: &str) {
    crate::metrics::worker_prefetch(schema, "released");
    let result = sqlx::query(abandon_sql)
        .bind(token)
        .bind(now_ms())
        .bind(None::<i64>)
        .bind(true)
        .execute(pool)
        .await;
    if let Err(e) = result {
        tracing::debug!(
            target: "duroxide_pg",
            error = %crate::error::provider_error("abandon_work_item", e),
            "releasing a prefetched activity failed; its lease will expire"
        );
    }
}
