//! Long polling: fetches that wait for work instead of returning at once.
//!
//! One dedicated `LISTEN` connection per provider receives the wake-up hints
//! the stored functions send at commit (`notify_work`: queue letter and item
//! count) and wakes that many waiting fetches. A waiting fetch also wakes at
//! the next delayed item's visible time (reported by the fetch function
//! itself) and, in case a hint was lost, after a bounded fallback interval.
//! Hints are never trusted: a woken fetch simply runs its query again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use duroxide::providers::ProviderError;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::codec::now_ms;

/// Longest a waiting fetch goes without re-checking the tables, so a lost
/// notification delays work by at most this much.
pub const FALLBACK_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// How many waiters one hint may wake (bounds the work of a huge batch).
const MAX_WAKE_PER_HINT: u32 = 64;

/// The two queues a fetch can wait on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Queue {
    Orchestrator,
    Worker,
}

/// Outcome of one fetch attempt.
pub(crate) enum Attempt<T> {
    /// Work was leased.
    Found(T),
    /// Nothing ready; something may become visible at this time (ms since epoch).
    Empty { wake_at: Option<i64> },
}

#[derive(Default)]
struct Wakeups {
    orchestrator: Notify,
    worker: Notify,
}

impl Wakeups {
    fn of(&self, queue: Queue) -> &Notify {
        match queue {
            Queue::Orchestrator => &self.orchestrator,
            Queue::Worker => &self.worker,
        }
    }

    fn wake_all(&self) {
        self.orchestrator.notify_waiters();
        self.worker.notify_waiters();
    }

    /// Applies one `notify_work` payload: `o<count>` or `w<count>`.
    fn apply(&self, payload: &str) {
        let queue = match payload.as_bytes().first() {
            Some(b'o') => Queue::Orchestrator,
            Some(b'w') => Queue::Worker,
            _ => return,
        };
        let count = payload[1..]
            .parse::<u32>()
            .unwrap_or(1)
            .clamp(1, MAX_WAKE_PER_HINT);
        for _ in 0..count {
            self.of(queue).notify_one();
        }
    }
}

/// The listener task and the waiters it wakes; stops the task when dropped.
pub(crate) struct LongPoll {
    wakeups: Arc<Wakeups>,
    task: JoinHandle<()>,
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LongPoll {
    /// Opens the listener connection and subscribes to `channel`.
    pub(crate) async fn start(pool: &PgPool, channel: &str) -> Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(channel).await?;
        let wakeups = Arc::new(Wakeups::default());
        let task = tokio::spawn(listen(listener, Arc::clone(&wakeups)));
        Ok(Self { wakeups, task })
    }
}

async fn listen(mut listener: PgListener, wakeups: Arc<Wakeups>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                backoff = Duration::from_millis(100);
                wakeups.apply(notification.payload());
            }
            // The connection dropped; the next call reconnects. Hints may have
            // been lost meanwhile, so every waiter re-checks.
            Ok(None) => {
                tracing::warn!("duroxide-pg wake-up listener lost its connection; reconnecting");
                wakeups.wake_all();
            }
            // The provider's pool was closed: nobody is left to wake.
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "duroxide-pg wake-up listener failed; retrying");
                wakeups.wake_all();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs `attempt` until it finds work or `poll_timeout` has passed. Without a
/// listener (poll-only mode) or with a zero timeout, tries exactly once.
pub(crate) async fn poll<T, F, Fut>(
    long_poll: Option<&LongPoll>,
    queue: Queue,
    poll_timeout: Duration,
    mut attempt: F,
) -> Result<Option<T>, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, ProviderError>>,
{
    let deadline = Instant::now() + poll_timeout;
    loop {
        // Register before querying, so a hint sent after the query's snapshot
        // but before the wait starts is not missed.
        let notified = long_poll.map(|lp| lp.wakeups.of(queue).notified());
        let mut notified = std::pin::pin!(notified);
        if let Some(n) = notified.as_mut().as_pin_mut() {
            n.enable();
        }
        let wake_at = match attempt().await? {
            Attempt::Found(found) => return Ok(Some(found)),
            Attempt::Empty { wake_at } => wake_at,
        };
        let now = Instant::now();
        if long_poll.is_none() || now >= deadline {
            return Ok(None);
        }
        let mut until = deadline.min(now + FALLBACK_POLL_INTERVAL);
        if let Some(at) = wake_at {
            let in_ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
            until = until.min(now + Duration::from_millis(in_ms));
        }
        if let Some(n) = notified.as_mut().as_pin_mut() {
            tokio::select! {
                () = n => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hint_wakes_as_many_waiters_as_items() {
        let w = Wakeups::default();
        let a = w.worker.notified();
        let b = w.worker.notified();
        let mut a = std::pin::pin!(a);
        let mut b = std::pin::pin!(b);
        a.as_mut().enable();
        b.as_mut().enable();
        w.apply("w2");
        tokio::time::timeout(Duration::from_millis(100), a)
            .await
            .expect("first waiter woken");
        tokio::time::timeout(Duration::from_millis(100), b)
            .await
            .expect("second waiter woken");
    }

    #[tokio::test]
    async fn hint_for_one_queue_leaves_the_other_asleep() {
        let w = Wakeups::default();
        let o = w.orchestrator.notified();
        let mut o = std::pin::pin!(o);
        o.as_mut().enable();
        w.apply("w1");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), o)
                .await
                .is_err()
        );
    }

    #[test]
    fn malformed_payloads_are_ignored_or_bounded() {
        let w = Wakeups::default();
        w.apply("");
        w.apply("x5");
        w.apply("o999999"); // clamped, must not spin for long
    }
}
