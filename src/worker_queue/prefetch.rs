//! Items leased ahead by an ack (`ack_work_item_and_fetch`), waiting for the
//! fetch that the runtime issues right after every ack.
//!
//! Why: duroxide's worker slot runs fetch → read → execute → ack in a loop.
//! Leasing the slot's next item inside the ack's own statement takes the
//! fetch's round trip off every activity. The held item is leased exactly as
//! a fetch would lease it, so nothing changes for other processes except that
//! it is already taken; bounded in count ([`PostgresProvider::PREFETCH_LIMIT`](crate::PostgresProvider::PREFETCH_LIMIT)) and in time
//! ([`PostgresProvider::PREFETCH_HOLD`](crate::PostgresProvider::PREFETCH_HOLD)): an item no fetch takes in time is abandoned with its
//! attempt count restored.
//!
//! Only the worker queue has it (its metric's `queue` label says `worker`). Orchestration
//! turns are not leased ahead: a held instance would carry a history snapshot
//! that changes made meanwhile (admin tools, the validation suite's
//! corruption checks) would not reach, and at 20 ms round trips it measured
//! slower (3.41 vs 4.94 orch/s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duroxide::providers::WorkItem;

use super::FetchKey;
use super::batched_ack::{self, AckMember, AckOutcome};
use crate::call::{Call, Statement};
use crate::clock::now_ms;
use crate::coalesce::Coalescer;
use crate::codes::Queue;
use crate::connections::Connections;
use crate::statements::Statements;

/// Most items one provider holds leased ahead at once.
pub(crate) const LIMIT: usize = 4;

/// How long a leased-ahead item waits for a fetch before it is released.
pub(crate) const HOLD: Duration = Duration::from_millis(200);

/// A fetched activity as the worker fetch returns it: item, lock token,
/// attempts.
pub(crate) type Fetched = (WorkItem, String, u32);

/// A leased-ahead activity, with the fetch arguments it was leased with: a
/// fetch takes it only when it asks for exactly the same.
struct Held {
    key: FetchKey,
    fetched: Fetched,
    leased_at: Instant,
}

struct State {
    /// The fetch arguments of every lease handed out and not yet acked, by
    /// lock token: an ack leases ahead for the fetch that leased its item
    /// (one dispatcher slot: slots differ in their arguments, e.g. the
    /// session owner).
    leased: HashMap<String, FetchKey>,
    held: Vec<Held>,
}

/// Most lease tokens remembered for acks to come. Leases that are never
/// acked (abandoned elsewhere, lost) would otherwise accumulate; past this
/// many the memory is cleared, costing some acks their lease-ahead.
const LEASED_MEMORY: usize = 4096;

/// The provider's leased-ahead activities (see the module doc).
pub(crate) struct WorkerPrefetch {
    enabled: bool,
    state: Arc<Mutex<State>>,
    pool: Connections,
    /// `abandon_work_item`'s call: (token, now, delay, ignore_attempt).
    abandon_sql: Arc<Statement>,
    /// The provider's schema: the `schema` label of the prefetch metric.
    schema: Arc<str>,
    /// The acks that lease ahead, coalesced: the acks of slots that finish
    /// while another ack is on the wire share its next statement.
    pub(crate) acks: Coalescer<Arc<AckMember>, AckOutcome>,
}

impl WorkerPrefetch {
    pub(crate) fn new(enabled: bool, pool: Connections, sql: &Statements, schema: &str) -> Self {
        Self {
            acks: Coalescer::new(
                "ack_work_item",
                schema,
                batched_ack::many(
                    pool.clone(),
                    sql.ack_work_items_and_fetch.clone(),
                    sql.ack_work_item_and_fetch.clone(),
                ),
            ),
            enabled,
            state: Arc::new(Mutex::new(State {
                leased: HashMap::new(),
                held: Vec::new(),
            })),
            pool,
            abandon_sql: Arc::new(sql.abandon_work_item.clone()),
            schema: Arc::from(schema),
        }
    }

    /// Takes a held item leased with exactly `key` and still fresh.
    /// Synchronous on purpose: a fetch future either returns the item in the
    /// poll that takes it or never takes it.
    pub(crate) fn take(&self, key: &FetchKey) -> Option<Fetched> {
        let mut state = self.state.lock().expect("prefetch state");
        let now = Instant::now();
        let i = state
            .held
            .iter()
            .position(|h| &h.key == key && now.duration_since(h.leased_at) < HOLD)?;
        crate::metrics::prefetch(&self.schema, Queue::Worker, "used");
        let fetched = state.held.swap_remove(i).fetched;
        remember(&mut state.leased, &fetched.1, key);
        Some(fetched)
    }

    /// Records that the lease `token` was handed to a fetch with `key` (its
    /// ack will lease ahead for that fetch).
    pub(crate) fn leased(&self, token: &str, key: &FetchKey) {
        if self.enabled {
            remember(
                &mut self.state.lock().expect("prefetch state").leased,
                token,
                key,
            );
        }
    }

    /// Forgets the lease `token` (abandoned: no ack will come).
    pub(crate) fn forget(&self, token: &str) {
        self.state
            .lock()
            .expect("prefetch state")
            .leased
            .remove(token);
    }

    /// Releases every held item that a fetch with `key` could have leased but
    /// will not take (it was leased with other lock timeout or filter), so
    /// that fetch can lease it from the database. Costs a round trip per item,
    /// and only then: a runtime's dispatcher always fetches with the same
    /// arguments. Items held for another slot of the same dispatcher are left
    /// for it.
    pub(crate) async fn release_others(&self, key: &FetchKey) {
        let others: Vec<Held> = {
            let mut state = self.state.lock().expect("prefetch state");
            if state.held.iter().all(|h| h.key.same_items(key)) {
                return;
            }
            let (others, same) = std::mem::take(&mut state.held)
                .into_iter()
                .partition(|h| !h.key.same_items(key));
            state.held = same;
            others
        };
        for h in others {
            release(&self.pool, &self.abandon_sql, &h.fetched.1, &self.schema).await;
        }
    }

    /// The arguments the ack of `token` should lease ahead with (those of
    /// the fetch that leased it), or `None` when it should not (disabled, a
    /// lease this provider did not hand out, or enough held already).
    pub(crate) fn next_key(&self, token: &str) -> Option<FetchKey> {
        if !self.enabled {
            return None;
        }
        let mut state = self.state.lock().expect("prefetch state");
        let key = state.leased.remove(token)?;
        (state.held.len() < LIMIT).then_some(key)
    }

    /// Holds `fetched` for the next fetch and schedules its release should no
    /// fetch take it within [`HOLD`].
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
            tokio::time::sleep(HOLD).await;
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

fn remember(leased: &mut HashMap<String, FetchKey>, token: &str, key: &FetchKey) {
    if leased.len() >= LEASED_MEMORY {
        leased.clear();
    }
    leased.insert(token.to_owned(), key.clone());
}

/// Abandons one held lease, undoing its attempt increment: to the queue it is
/// as if it had never been fetched. A failure leaves the lease to expire.
async fn release(pool: &Connections, abandon_sql: &Statement, token: &str, schema: &str) {
    crate::metrics::prefetch(schema, Queue::Worker, "released");
    let result = Call::new(pool, "release a prefetched item", abandon_sql)
        .bind(token)
        .bind(now_ms())
        .bind(None::<i64>)
        .bind(true)
        .execute()
        .await;
    if let Err(e) = result {
        tracing::debug!(
            target: "duroxide_pg",
            error = %e,
            "releasing a prefetched item failed; its lease will expire"
        );
    }
}
