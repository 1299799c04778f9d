//! Worker queue and activity sessions: enqueue, peek-lock fetch, ack, renew,
//! abandon, session heartbeats and orphan cleanup.

pub(crate) mod batched_ack;
pub(crate) mod prefetch;

use std::time::Duration;

use duroxide::providers::{ProviderError, SessionFetchConfig, TagFilter, WorkItem};

use crate::call::read_row;
use crate::clock::now_ms;
use crate::codec::{OrchestratorRow, WorkerRow, decode, millis};
use crate::codes::Queue;
use crate::codes::TagMode;
use crate::error::invalid_input;
use crate::lease;
use crate::long_poll::{self, Attempt, Waiter};
use crate::signatures::{ActivityWakeAt, EnqueueWorkerItem};
use crate::store::Store;
use prefetch::{Fetched, WorkerPrefetch};

pub(crate) async fn enqueue(p: &Store, item: &WorkItem) -> Result<(), ProviderError> {
    const OP: &str = "enqueue_for_worker";
    let row = WorkerRow::new(OP, item)?;
    EnqueueWorkerItem {
        work_item: &row.json,
        now_ms: now_ms(),
        instance_id: &row.instance,
        execution_id: row.execution_id,
        activity_id: row.activity_id,
        session_id: row.session_id.as_deref(),
        tag: row.tag.as_deref(),
    }
    .bind_to(p.call(OP, &p.sql.enqueue_worker_item))
    .execute()
    .await
}

/// The arguments of a worker fetch that decide which item it leases: an item
/// leased ahead with other arguments is not handed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchKey {
    lock_timeout_ms: i64,
    /// The session owner (`None`: session-less items only).
    owner_id: Option<String>,
    session_lock_ms: i64,
    tag_mode: i16,
    tags: Vec<String>,
}

/// Shortest lease (ms) an ack leases ahead for: ten times the longest hold.
const MIN_PREFETCH_LEASE_MS: i64 = 10 * prefetch::HOLD.as_millis() as i64;

impl FetchKey {
    /// Whether an item leased for `other` could have been leased for `self`
    /// too. Runtime slots differ only in their session owner, so an item
    /// leased for one slot is one the others could lease too.
    pub(crate) fn same_items(&self, other: &Self) -> bool {
        self.lock_timeout_ms == other.lock_timeout_ms
            && self.tag_mode == other.tag_mode
            && self.tags == other.tags
    }
}

/// The tag filter as `fetch_work_item`'s (mode, tags) arguments; `None` when
/// the filter accepts nothing, so no call is made at all.
fn tag_arguments(filter: &TagFilter) -> Option<(TagMode, Vec<&str>)> {
    fn sorted(set: &std::collections::HashSet<String>) -> Vec<&str> {
        let mut tags: Vec<&str> = set.iter().map(String::as_str).collect();
        tags.sort_unstable();
        tags
    }
    match filter {
        TagFilter::DefaultOnly => Some((TagMode::UntaggedOnly, Vec::new())),
        TagFilter::Tags(set) => Some((TagMode::Tagged, sorted(set))),
        TagFilter::DefaultAnd(set) => Some((TagMode::UntaggedOrTagged, sorted(set))),
        TagFilter::Any => Some((TagMode::Any, Vec::new())),
        TagFilter::None => None,
    }
}

pub(crate) async fn fetch(
    p: &Store,
    prefetch: &WorkerPrefetch,
    lock_timeout: Duration,
    poll_timeout: Duration,
    session: Option<&SessionFetchConfig>,
    tag_filter: &TagFilter,
) -> Result<Option<Fetched>, ProviderError> {
    const OP: &str = "fetch_work_item";
    let Some((tag_mode, tags)) = tag_arguments(tag_filter) else {
        return Ok(None);
    };
    let key = FetchKey {
        lock_timeout_ms: millis(lock_timeout),
        owner_id: session.map(|s| s.owner_id.clone()),
        session_lock_ms: session.map_or(0, |s| millis(s.lock_timeout)),
        tag_mode: tag_mode as i16,
        tags: tags.iter().map(|t| (*t).to_string()).collect(),
    };
    let waiter = match (session, &p.long_poll) {
        (Some(_), Some(lp)) => {
            lp.sessions_resumed();
            Waiter::Plain
        }
        (Some(_), None) => Waiter::Plain,
        (None, _) => Waiter::WithoutSessions,
    };
    if let Some(held) = prefetch.take(&key) {
        return Ok(Some(held));
    }
    prefetch.release_others(&key).await;
    long_poll::poll(
        p.long_poll.as_ref(),
        Queue::Worker,
        waiter,
        poll_timeout,
        || async {
            let row = p
                .call(OP, &p.sql.fetch_work_item)
                .bind(now_ms())
                .bind(key.lock_timeout_ms)
                .bind(key.owner_id.as_deref())
                .bind(key.session_lock_ms)
                .bind(tag_mode as i16)
                .bind(&tags)
                .fetch_one()
                .await?;
            match leased_item(p, OP, batched_ack::leased_of_row(OP, &row)?)? {
                Some(fetched) => {
                    prefetch.leased(&fetched.1, &key);
                    Ok(Attempt::Found(fetched))
                }
                None => Ok(Attempt::Empty {
                    wake_at: read_row::<ActivityWakeAt>(OP, &row)?.wake_at,
                }),
            }
        },
    )
    .await
}

/// The leased item of a `fetch_work_item`-shaped row, decoded; `None` when
/// the row says nothing was ready.
/// An undecodable row stays locked and expires; the error names it.
fn leased_item(
    p: &Store,
    op: &str,
    leased: batched_ack::Leased,
) -> Result<Option<Fetched>, ProviderError> {
    let Some((work_item, token, attempts, taken_over)) = leased else {
        return Ok(None);
    };
    if taken_over == Some(true) {
        crate::metrics::lease_takeover(&p.schema, Queue::Worker);
    }
    let item = decode::<WorkItem>(op, &work_item)?;
    Ok(Some((item, token, u32::try_from(attempts).unwrap_or(0))))
}

pub(crate) async fn ack(
    p: &Store,
    prefetch: &WorkerPrefetch,
    token: &str,
    completion: Option<&WorkItem>,
) -> Result<(), ProviderError> {
    const OP: &str = "ack_work_item";
    let completion = match completion {
        None => None,
        Some(item @ (WorkItem::ActivityCompleted { .. } | WorkItem::ActivityFailed { .. })) => {
            Some(OrchestratorRow::new(OP, item)?)
        }
        Some(_) => {
            return Err(invalid_input(
                OP,
                "a worker ack completes with ActivityCompleted or ActivityFailed only",
            ));
        }
    };
    // Short leases are not leased ahead: the wait in memory (up to
    // PREFETCH_HOLD) would eat a noticeable share of them.
    let next = prefetch.next_key(token);
    let Some(key) = next.filter(|k| k.lock_timeout_ms >= MIN_PREFETCH_LEASE_MS) else {
        p.call(OP, &p.sql.ack_work_item)
            .bind(token)
            .bind(now_ms())
            .bind(completion.as_ref().map(|c| c.instance))
            .bind(completion.as_ref().map(|c| c.kind))
            .bind(completion.as_ref().map(|c| c.json.as_str()))
            .execute()
            .await?;
        return Ok(());
    };
    // Shared, not copied: the coalescer keeps the member while it waits, and
    // a completion's payload can be megabytes.
    let member = std::sync::Arc::new(batched_ack::AckMember {
        token: token.to_string(),
        completion: completion.map(|c| (c.instance.to_string(), c.kind, c.json)),
        key: key.clone(),
    });
    let alone =
        async { Ok(batched_ack::one(&p.pool, &p.sql.ack_work_item_and_fetch, &member).await) };
    let leased = prefetch
        .acks
        .call(std::sync::Arc::clone(&member), alone)
        .await
        .and_then(|outcome| outcome)?;
    // The ack has committed: a problem with the item leased ahead must not
    // fail it. An undecodable item stays leased, expires, and its next fetch
    // reports it.
    match leased_item(p, OP, leased) {
        Ok(Some(fetched)) => prefetch.hold(key, fetched),
        Ok(None) => {}
        Err(e) => tracing::warn!(
            target: "duroxide_pg",
            error = %e,
            "an activity leased ahead by an ack cannot be used"
        ),
    }
    Ok(())
}

pub(crate) async fn renew(
    p: &Store,
    token: &str,
    extend_for: Duration,
) -> Result<(), ProviderError> {
    let op = "renew_work_item_lock";
    lease::renew(p, op, &p.sql.renew_work_item_lock, token, extend_for).await
}

pub(crate) async fn abandon(
    p: &Store,
    prefetch: &WorkerPrefetch,
    token: &str,
    delay: Option<Duration>,
    ignore_attempt: bool,
) -> Result<(), ProviderError> {
    let op = "abandon_work_item";
    prefetch.forget(token);
    lease::abandon(
        p,
        op,
        &p.sql.abandon_work_item,
        token,
        delay,
        ignore_attempt,
    )
    .await
}

pub(crate) async fn renew_sessions(
    p: &Store,
    owner_ids: &[&str],
    extend_for: Duration,
    idle_timeout: Duration,
) -> Result<usize, ProviderError> {
    const OP: &str = "renew_session_lock";
    if owner_ids.is_empty() {
        return Ok(0);
    }
    let count: i64 = p
        .call(OP, &p.sql.renew_session_lock)
        .bind(owner_ids)
        .bind(now_ms())
        .bind(millis(extend_for))
        .bind(millis(idle_timeout))
        .scalar()
        .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}

pub(crate) async fn cleanup_sessions(p: &Store) -> Result<usize, ProviderError> {
    const OP: &str = "cleanup_orphaned_sessions";
    let count: i64 = p
        .call(OP, &p.sql.cleanup_orphaned_sessions)
        .bind(now_ms())
        .scalar()
        .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}
